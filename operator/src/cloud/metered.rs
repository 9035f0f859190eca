//! Counts every cloud call (by action and outcome) and every NIC created or deleted, whatever
//! the implementation behind it, and reports side-effecting calls whose answer was lost.
//! The counts are logical calls: the client's `qingcloud_api_requests_total` counts HTTP
//! requests, paging and retries included.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::{
    CloudApi, CloudErrorKind, CloudResult, CreatedNic, Instance, Job, Nic, NicQuery, Priority,
    Vxnet,
};
use crate::metrics::Metrics;

/// A [`CloudApi`] that records metrics around another.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn CloudApi>,
    metrics: Arc<Metrics>,
    lost: Arc<Notify>,
}

impl Metered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CloudApi>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            lost: Arc::new(Notify::new()),
        }
    }

    /// A CreateNics or DeleteNics whose outcome is unknown may have left a NIC nobody owns.
    fn watch_outcome<T>(&self, r: &CloudResult<T>) {
        if r.as_ref().is_err_and(|e| e.outcome_unknown()) {
            self.lost.notify_one();
        }
    }

    fn record<T>(&self, action: &'static str, r: &CloudResult<T>) {
        let result = match r {
            Ok(_) => "ok",
            Err(e) => match e.kind {
                CloudErrorKind::Throttled => "throttled",
                CloudErrorKind::QuotaExceeded => "quota_exceeded",
                CloudErrorKind::Transient => "transient",
                CloudErrorKind::NotFound => "not_found",
                CloudErrorKind::Refused => "refused",
                CloudErrorKind::Capacity => "capacity",
                CloudErrorKind::Permanent => "permanent",
            },
        };
        tracing::debug!(action, result, "cloud call");
        self.metrics.cloud_call(action, result);
    }
}

impl CloudApi for Metered {
    fn describe_nics(
        &self,
        query: NicQuery,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Nic>>> {
        Box::pin(async move {
            tracing::debug!(?query, ?prio, "DescribeNics");
            let r = self.inner.describe_nics(query, prio).await;
            self.record("DescribeNics", &r);
            r
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
            let r = self.inner.create_nics(vxnet, name, count, prio).await;
            self.record("CreateNics", &r);
            self.watch_outcome(&r);
            if let Ok(nics) = &r {
                self.metrics.created(nics.len() as u64);
            }
            r
        })
    }

    fn attach_nics(
        &self,
        instance: String,
        nics: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<String>> {
        Box::pin(async move {
            let r = self.inner.attach_nics(instance, nics, prio).await;
            self.record("AttachNics", &r);
            r
        })
    }

    fn detach_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<String>> {
        Box::pin(async move {
            let r = self.inner.detach_nics(nics, prio).await;
            self.record("DetachNics", &r);
            r
        })
    }

    fn delete_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            let n = nics.len() as u64;
            let r = self.inner.delete_nics(nics, prio).await;
            self.record("DeleteNics", &r);
            self.watch_outcome(&r);
            if r.is_ok() {
                self.metrics.nics_deleted.inc_by(n);
            }
            r
        })
    }

    fn rename_nic(
        &self,
        nic: String,
        name: String,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            let r = self.inner.rename_nic(nic, name, prio).await;
            self.record("ModifyNicAttributes", &r);
            r
        })
    }

    fn describe_jobs(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        Box::pin(async move {
            let r = self.inner.describe_jobs(ids, prio).await;
            self.record("DescribeJobs", &r);
            r
        })
    }

    fn running_jobs(&self, prio: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        Box::pin(async move {
            let r = self.inner.running_jobs(prio).await;
            self.record("DescribeJobs", &r);
            r
        })
    }

    fn describe_vxnets(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Vxnet>>> {
        Box::pin(async move {
            let r = self.inner.describe_vxnets(ids, prio).await;
            self.record("DescribeVxnets", &r);
            r
        })
    }

    fn describe_instances(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Instance>>> {
        Box::pin(async move {
            let r = self.inner.describe_instances(ids, prio).await;
            self.record("DescribeInstances", &r);
            r
        })
    }

    fn lost_answers(&self) -> Option<Arc<Notify>> {
        Some(self.lost.clone())
    }
}
