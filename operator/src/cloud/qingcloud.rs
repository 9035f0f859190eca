//! [`CloudApi`] over the real QingCloud client (`qingcloud` crate): id parsing, error
//! classification and the rate limiter's priorities. DescribeNics' `nic_name` filter is
//! compared exactly here, since the API does not document its matching rule.

use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use qingcloud::wire::{self, JobStatus, NicStatus};
use qingcloud::{Client, InstanceId, JobFilter, JobId, NicChanges, NicFilter, NicId, VxnetId};
use tokio::sync::Notify;

use super::{
    CloudApi, CloudError, CloudErrorKind, CloudResult, CreatedNic, Instance, InstanceNic, Job,
    JobState, Nic, NicQuery, NicState, Priority, Vxnet,
};

/// The real cloud.
#[derive(Debug, Clone)]
pub struct QingCloud {
    client: Client,
}

impl QingCloud {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn at(&self, prio: Priority) -> Client {
        self.client.with_priority(match prio {
            Priority::Urgent => qingcloud::Priority::Urgent,
            Priority::Refill => qingcloud::Priority::Refill,
            Priority::Background => qingcloud::Priority::Background,
        })
    }
}

fn convert(action: &'static str, e: qingcloud::Error) -> CloudError {
    if let qingcloud::Error::Api { code, message, .. } = &e {
        // Classified on the API's own message (2500 is two errors); the full text for logs.
        let kind = CloudError::from_code(action, i64::from(code.0), message.as_str()).kind;
        return CloudError {
            action,
            kind,
            code: Some(i64::from(code.0)),
            message: e.to_string(),
        };
    }
    let kind = if e.is_throttled() {
        CloudErrorKind::Throttled
    } else if e.is_retryable() {
        CloudErrorKind::Transient
    } else {
        CloudErrorKind::Permanent
    };
    CloudError {
        action,
        kind,
        code: None,
        message: e.to_string(),
    }
}

fn bad_id(action: &'static str, what: &str) -> CloudError {
    CloudError {
        action,
        kind: CloudErrorKind::Permanent,
        code: None,
        message: format!("malformed id {what}"),
    }
}

fn nic_ids(action: &'static str, ids: &[String]) -> CloudResult<Vec<NicId>> {
    ids.iter()
        .map(|s| NicId::parse(s).map_err(|_| bad_id(action, s)))
        .collect()
}

fn time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

fn nic(n: wire::Nic) -> Nic {
    let state = match n.status {
        NicStatus::Available => NicState::Available,
        NicStatus::InUse => NicState::InUse,
        // Neither attached nor free as far as we can tell: treat as attached (never deleted
        // while in an unknown state, only detached, which the API refuses if pointless).
        NicStatus::Unknown => NicState::InUse,
    };
    Nic {
        instance: n.attached_to().map(str::to_string),
        id: n.nic_id,
        name: n.nic_name,
        state,
        vxnet: n.vxnet_id,
        private_ip: Some(n.private_ip).filter(|s| !s.is_empty()),
        created: time(&n.create_time),
    }
}

fn job(j: wire::Job) -> Job {
    let state = match j.status {
        JobStatus::Successful => JobState::Succeeded,
        JobStatus::Failed | JobStatus::DoneWithFailure => JobState::Failed,
        JobStatus::Pending | JobStatus::Working | JobStatus::Unknown => JobState::Running,
    };
    Job {
        nics: j.directive_nics(),
        created: time(&j.create_time),
        id: j.job_id,
        action: j.job_action,
        state,
    }
}

impl CloudApi for QingCloud {
    /// The client itself does not watch for lost answers; [`super::metered::Metered`] does.
    fn lost_answers(&self) -> Option<Arc<Notify>> {
        None
    }

    fn describe_nics(
        &self,
        query: NicQuery,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Nic>>> {
        Box::pin(async move {
            let a = "DescribeNics";
            let filter = match &query {
                NicQuery::Ids(ids) | NicQuery::Vxnets(ids) if ids.is_empty() => {
                    return Ok(vec![]);
                }
                NicQuery::Ids(ids) => NicFilter {
                    nics: nic_ids(a, ids)?,
                    ..Default::default()
                },
                NicQuery::Name(name) => NicFilter {
                    nic_name: Some(name.clone()),
                    ..Default::default()
                },
                NicQuery::All => NicFilter::default(),
                NicQuery::Vxnets(ids) => NicFilter {
                    // Malformed ids cannot exist: they are simply not found.
                    vxnets: ids.iter().filter_map(|v| VxnetId::parse(v).ok()).collect(),
                    ..Default::default()
                },
            };
            let found = self
                .at(prio)
                .describe_nics(&filter)
                .await
                .map_err(|e| convert(a, e))?;
            Ok(found
                .into_iter()
                .map(nic)
                .filter(|n| match &query {
                    NicQuery::Ids(ids) => ids.contains(&n.id),
                    NicQuery::Name(name) => &n.name == name,
                    NicQuery::Vxnets(ids) => ids.contains(&n.vxnet),
                    NicQuery::All => true,
                })
                .collect())
        })
    }

    fn create_nics(
        &self,
        vxnet: String,
        name: String,
        count: u32,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<CreatedNic>>> {
        Box::pin(async move {
            let a = "CreateNics";
            let vx = VxnetId::parse(&vxnet).map_err(|_| bad_id(a, &vxnet))?;
            let nics = self
                .at(prio)
                .create_nics(&vx, count, Some(&name))
                .await
                .map_err(|e| convert(a, e))?;
            Ok(nics
                .into_iter()
                .map(|n| CreatedNic {
                    id: n.id.as_str().to_string(),
                    private_ip: n.private_ip.map(|ip| ip.to_string()),
                })
                .collect())
        })
    }

    fn attach_nics(
        &self,
        instance: String,
        nics: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<String>> {
        Box::pin(async move {
            let a = "AttachNics";
            let i = InstanceId::parse(&instance).map_err(|_| bad_id(a, &instance))?;
            let job = self
                .at(prio)
                .attach_nics(&i, &nic_ids(a, &nics)?)
                .await
                .map_err(|e| convert(a, e))?;
            Ok(job.as_str().to_string())
        })
    }

    fn detach_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<String>> {
        Box::pin(async move {
            let a = "DetachNics";
            let job = self
                .at(prio)
                .detach_nics(&nic_ids(a, &nics)?)
                .await
                .map_err(|e| convert(a, e))?;
            Ok(job.as_str().to_string())
        })
    }

    fn delete_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            let a = "DeleteNics";
            self.at(prio)
                .delete_nics(&nic_ids(a, &nics)?)
                .await
                .map_err(|e| convert(a, e))
        })
    }

    fn rename_nic(
        &self,
        nic: String,
        name: String,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            let a = "ModifyNicAttributes";
            let id = NicId::parse(&nic).map_err(|_| bad_id(a, &nic))?;
            let changes = NicChanges {
                nic_name: Some(name),
                private_ip: None,
            };
            self.at(prio)
                .modify_nic_attributes(&id, &changes)
                .await
                .map_err(|e| convert(a, e))
        })
    }

    fn describe_jobs(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        Box::pin(async move {
            let a = "DescribeJobs";
            if ids.is_empty() {
                return Ok(vec![]);
            }
            let parsed: Vec<JobId> = ids
                .iter()
                .map(|s| JobId::parse(s).map_err(|_| bad_id(a, s)))
                .collect::<CloudResult<_>>()?;
            let jobs = self
                .at(prio)
                .describe_jobs(&parsed)
                .await
                .map_err(|e| convert(a, e))?;
            Ok(jobs.into_iter().map(job).collect())
        })
    }

    fn running_jobs(&self, prio: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        Box::pin(async move {
            let filter = JobFilter {
                status: vec![JobStatus::Pending, JobStatus::Working],
                ..JobFilter::default()
            };
            let jobs = self
                .at(prio)
                .describe_jobs_filtered(&filter)
                .await
                .map_err(|e| convert("DescribeJobs", e))?;
            Ok(jobs
                .into_iter()
                .map(job)
                .filter(|j| j.state == JobState::Running)
                .collect())
        })
    }

    fn describe_vxnets(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Vxnet>>> {
        Box::pin(async move {
            let a = "DescribeVxnets";
            // Malformed ids cannot exist: they are simply not found.
            let parsed: Vec<VxnetId> = ids.iter().filter_map(|s| VxnetId::parse(s).ok()).collect();
            if parsed.is_empty() {
                return Ok(vec![]);
            }
            let found = self
                .at(prio)
                .describe_vxnets(&parsed)
                .await
                .map_err(|e| convert(a, e))?;
            Ok(found
                .into_iter()
                .filter(|v| ids.contains(&v.vxnet_id))
                .map(|v| Vxnet {
                    available_ips: v.available_ip_count.unwrap_or(0),
                    cidr: v
                        .router
                        .as_ref()
                        .map(|r| r.ip_network.clone())
                        .filter(|s| !s.is_empty()),
                    gateway: v
                        .router
                        .as_ref()
                        .map(|r| r.manager_ip.clone())
                        .filter(|s| !s.is_empty()),
                    id: v.vxnet_id,
                })
                .collect())
        })
    }

    fn describe_instances(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Instance>>> {
        Box::pin(async move {
            let a = "DescribeInstances";
            let parsed: Vec<InstanceId> = ids
                .iter()
                .filter_map(|s| InstanceId::parse(s).ok())
                .collect();
            if parsed.is_empty() {
                return Ok(vec![]);
            }
            let found = self
                .at(prio)
                .describe_instances(&parsed)
                .await
                .map_err(|e| convert(a, e))?;
            Ok(found
                .into_iter()
                .filter(|i| ids.contains(&i.instance_id))
                .map(|i| Instance {
                    running: i.status == wire::InstanceStatus::Running,
                    nics: i
                        .vxnets
                        .into_iter()
                        .map(|v| InstanceNic {
                            nic_id: v.nic_id,
                            vxnet: v.vxnet_id,
                            private_ip: Some(v.private_ip).filter(|s| !s.is_empty()),
                            primary: v.role == Some(1),
                        })
                        .collect(),
                    id: i.instance_id,
                })
                .collect())
        })
    }
}
