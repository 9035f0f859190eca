//! Many-NIC operations split into calls of at most `max_batch` NICs (the per-call limit of
//! AttachNics is unconfirmed; hostnic saw failures above 5).
//!
//! Batches run one after another and stop at the first failure, so quota is not burnt on
//! calls that would fail the same way; the report says exactly which NICs were covered.

use std::future::Future;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::ids::{InstanceId, JobId, NicId};

/// What happened to each NIC of a batched operation.
#[derive(Debug)]
pub struct BatchReport<T> {
    /// Batches that succeeded, with their result (a job id for attach/detach).
    pub done: Vec<(Vec<NicId>, T)>,
    /// The batch that failed, if any, and why.
    pub failed: Option<(Vec<NicId>, Error)>,
    /// NICs not tried because an earlier batch failed.
    pub skipped: Vec<NicId>,
}

impl<T> BatchReport<T> {
    /// True when every batch succeeded.
    pub fn is_complete(&self) -> bool {
        self.failed.is_none()
    }

    /// The error of the failed batch, if any.
    pub fn error(&self) -> Option<&Error> {
        self.failed.as_ref().map(|(_, e)| e)
    }
}

/// Runs `call` on consecutive chunks of at most `max_batch` NICs until one fails.
pub(crate) async fn run_batches<T, F, Fut>(
    nics: &[NicId],
    max_batch: usize,
    mut call: F,
) -> BatchReport<T>
where
    F: FnMut(Vec<NicId>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut report = BatchReport {
        done: Vec::new(),
        failed: None,
        skipped: Vec::new(),
    };
    let mut chunks = nics.chunks(max_batch.max(1));
    for chunk in chunks.by_ref() {
        match call(chunk.to_vec()).await {
            Ok(v) => report.done.push((chunk.to_vec(), v)),
            Err(e) => {
                report.failed = Some((chunk.to_vec(), e));
                break;
            }
        }
    }
    report.skipped = chunks.flatten().cloned().collect();
    report
}

impl Client {
    /// AttachNics in batches of `max_batch`: one job per batch.
    pub async fn attach_nics_batched(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> BatchReport<JobId> {
        run_batches(nics, self.settings().max_batch, |chunk| async move {
            self.attach_nics(instance, &chunk).await
        })
        .await
    }

    /// DetachNics in batches of `max_batch`: one job per batch.
    pub async fn detach_nics_batched(&self, nics: &[NicId]) -> BatchReport<JobId> {
        run_batches(nics, self.settings().max_batch, |chunk| async move {
            self.detach_nics(&chunk).await
        })
        .await
    }

    /// DeleteNics in batches of `max_batch`.
    pub async fn delete_nics_batched(&self, nics: &[NicId]) -> BatchReport<()> {
        run_batches(nics, self.settings().max_batch, |chunk| async move {
            self.delete_nics(&chunk).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Action, RetCode};

    fn nics(n: u8) -> Vec<NicId> {
        (0..n)
            .map(|i| NicId::parse(&format!("52:54:00:00:00:{i:02x}")).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn splits_into_batches_of_max() {
        let all = nics(12);
        let report = run_batches(&all, 5, |chunk| async move { Ok(chunk.len()) }).await;
        let sizes: Vec<usize> = report.done.iter().map(|(_, n)| *n).collect();
        assert_eq!(sizes, vec![5, 5, 2]);
        assert!(report.is_complete());
        assert!(report.skipped.is_empty());
        let covered: Vec<NicId> = report.done.into_iter().flat_map(|(c, _)| c).collect();
        assert_eq!(covered, all);
    }

    #[tokio::test]
    async fn stops_at_the_first_failure() {
        let all = nics(12);
        let mut calls = 0;
        let report = run_batches(&all, 5, |_chunk| {
            calls += 1;
            let n = calls;
            async move {
                if n == 2 {
                    Err(Error::Api {
                        action: Action::AttachNics,
                        code: RetCode::PERMISSION_DENIED,
                        message: "PermissionDenied".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(calls, 2);
        assert_eq!(report.done.len(), 1);
        let (failed, err) = report.failed.as_ref().unwrap();
        assert_eq!(failed, &all[5..10]);
        assert!(err.is_permission_denied());
        assert_eq!(report.skipped, all[10..]);
        assert!(!report.is_complete());
    }

    #[tokio::test]
    async fn empty_input_makes_no_call() {
        let report = run_batches(&[], 5, |_| async { Ok::<_, Error>(()) }).await;
        assert!(report.done.is_empty() && report.is_complete());
    }
}
