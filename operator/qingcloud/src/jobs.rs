//! Waiting for asynchronous jobs (AttachNics, DetachNics).
//!
//! A job that does not finish in time is "unknown", never "failed": attaches have taken
//! minutes in practice, so the caller must re-read the NIC's state and decide from that.

use std::time::Duration;

use tracing::{debug, warn};

use crate::client::Client;
use crate::error::Result;
use crate::ids::JobId;
use crate::wire::JobStatus;

/// How a job ended, as far as we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// `successful`.
    Succeeded,
    /// `failed` or `done with failure` (carried here).
    Failed(JobStatus),
    /// Still running (or not visible) when the timeout expired: re-read the resources.
    Unknown,
}

/// The outcome a job status settles, or `None` while it is still running.
pub(crate) fn outcome_of(status: JobStatus) -> Option<JobOutcome> {
    match status {
        JobStatus::Successful => Some(JobOutcome::Succeeded),
        JobStatus::Failed | JobStatus::DoneWithFailure => Some(JobOutcome::Failed(status)),
        JobStatus::Pending | JobStatus::Working | JobStatus::Unknown => None,
    }
}

impl Client {
    /// Polls DescribeJobs every `job_poll_interval` (first poll after one interval) until the
    /// job ends or `timeout` passes (then [`JobOutcome::Unknown`]). Transient and throttling
    /// errors while polling are tolerated; other errors (e.g. 1200 auth failure) are returned.
    /// A job missing from DescribeJobs is treated as not yet visible.
    pub async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome> {
        let interval = self.settings().job_poll_interval;
        let poll = async {
            loop {
                tokio::time::sleep(interval).await;
                match self.describe_jobs(std::slice::from_ref(job)).await {
                    Ok(jobs) => {
                        let status = jobs
                            .iter()
                            .find(|j| j.job_id == job.as_str())
                            .map(|j| j.status);
                        debug!(job = %job, ?status, "polled job");
                        if let Some(outcome) = status.and_then(outcome_of) {
                            return Ok(outcome);
                        }
                    }
                    Err(e) if e.is_retryable() || e.is_throttled() => {
                        warn!(job = %job, error = %e, "polling job failed, will retry");
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(timeout, poll).await {
            Ok(result) => result,
            Err(_) => Ok(JobOutcome::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_settle_the_outcome() {
        assert_eq!(
            outcome_of(JobStatus::Successful),
            Some(JobOutcome::Succeeded)
        );
        assert_eq!(
            outcome_of(JobStatus::Failed),
            Some(JobOutcome::Failed(JobStatus::Failed))
        );
        assert_eq!(
            outcome_of(JobStatus::DoneWithFailure),
            Some(JobOutcome::Failed(JobStatus::DoneWithFailure))
        );
        for running in [JobStatus::Pending, JobStatus::Working, JobStatus::Unknown] {
            assert_eq!(outcome_of(running), None);
        }
    }
}
