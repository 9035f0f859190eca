//! Fencing: a [`CloudApi`] that lets calls through only during this replica's leadership term.
//! Every call races the term's token; once the term ends, calls not yet sent are refused and
//! calls still waiting (in the rate limiter, between retries, in a batch window) are dropped,
//! so a deposed leader makes no cloud call, whichever task or reconcile asked for it.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    CloudApi, CloudError, CloudResult, CreatedNic, Instance, Job, Nic, NicQuery, Priority, Vxnet,
};

/// A [`CloudApi`] fenced by a leadership term.
#[derive(Debug)]
pub struct Gate {
    inner: Arc<dyn CloudApi>,
    term: CancellationToken,
}

impl Gate {
    /// Passes calls to `inner` until `term` is cancelled.
    pub fn new(inner: Arc<dyn CloudApi>, term: CancellationToken) -> Self {
        Self { inner, term }
    }

    fn guard<'a, T: Send + 'a>(
        &'a self,
        action: &'static str,
        call: BoxFuture<'a, CloudResult<T>>,
    ) -> BoxFuture<'a, CloudResult<T>> {
        Box::pin(async move {
            tokio::select! {
                // Checked first, so a call is never started once the term has ended.
                biased;
                () = self.term.cancelled() => Err(fenced(action)),
                r = call => r,
            }
        })
    }
}

/// The call was not made, or was abandoned mid-flight: its outcome is unknown to the caller.
fn fenced(action: &'static str) -> CloudError {
    CloudError::transient(action, "leadership lost: cloud call fenced")
}

impl CloudApi for Gate {
    fn lost_answers(&self) -> Option<Arc<Notify>> {
        self.inner.lost_answers()
    }

    fn describe_nics(
        &self,
        query: NicQuery,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Nic>>> {
        self.guard("DescribeNics", self.inner.describe_nics(query, prio))
    }

    fn create_nics(
        &self,
        vxnet: String,
        name: String,
        count: u32,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<CreatedNic>>> {
        self.guard(
            "CreateNics",
            self.inner.create_nics(vxnet, name, count, prio),
        )
    }

    fn attach_nics(
        &self,
        instance: String,
        nics: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<String>> {
        self.guard("AttachNics", self.inner.attach_nics(instance, nics, prio))
    }

    fn detach_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<String>> {
        self.guard("DetachNics", self.inner.detach_nics(nics, prio))
    }

    fn delete_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<()>> {
        self.guard("DeleteNics", self.inner.delete_nics(nics, prio))
    }

    fn rename_nic(
        &self,
        nic: String,
        name: String,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<()>> {
        self.guard(
            "ModifyNicAttributes",
            self.inner.rename_nic(nic, name, prio),
        )
    }

    fn describe_jobs(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        self.guard("DescribeJobs", self.inner.describe_jobs(ids, prio))
    }

    fn running_jobs(&self, prio: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        self.guard("DescribeJobs", self.inner.running_jobs(prio))
    }

    fn describe_vxnets(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Vxnet>>> {
        self.guard("DescribeVxnets", self.inner.describe_vxnets(ids, prio))
    }

    fn describe_instances(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Instance>>> {
        self.guard(
            "DescribeInstances",
            self.inner.describe_instances(ids, prio),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::cloud::fake::FakeCloud;

    #[tokio::test]
    async fn calls_pass_during_the_term_and_never_reach_the_cloud_after_it() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 10);
        let term = CancellationToken::new();
        let gate = Gate::new(cloud.clone(), term.clone());
        gate.create_nics("vxnet-a".into(), "n0".into(), 1, Priority::Refill)
            .await
            .expect("inside the term");
        term.cancel();
        let after = gate
            .create_nics("vxnet-a".into(), "n1".into(), 1, Priority::Refill)
            .await;
        assert!(after.is_err_and(|e| e.outcome_unknown()));
        let describe = gate.describe_nics(NicQuery::All, Priority::Refill).await;
        assert!(describe.is_err());
        assert_eq!(cloud.calls().get("CreateNics"), Some(&1));
        assert_eq!(cloud.calls().get("DescribeNics"), None);
        assert_eq!(
            cloud.nics().len(),
            1,
            "only the call inside the term took effect"
        );
    }

    /// A call from a detached task (as the batcher spawns them) that waits in the real
    /// client's rate limiter when the term ends never reaches the network.
    #[tokio::test]
    async fn a_call_waiting_in_the_rate_limiter_is_dropped_when_the_term_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            // Every connection is counted and closed: the calls fail, which is fine here.
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        let yaml = format!(
            "qy_access_key_id: 'AKID'\nqy_secret_access_key: 'secret'\nzone: 'pek3'\n\
             host: '127.0.0.1'\nport: {port}\nprotocol: 'http'\nuri: '/iaas'\n"
        );
        let config =
            ::qingcloud::CloudConfig::from_yaml(&yaml, "test.yaml".as_ref()).expect("config");
        // One request per second and no retries: the second call waits about a second.
        let settings = ::qingcloud::ClientSettings {
            qps: 1.0,
            burst: 1,
            retry_budget: Duration::ZERO,
            ..Default::default()
        };
        let client = ::qingcloud::Client::new(config, settings, None).expect("client");
        let term = CancellationToken::new();
        let gate = Arc::new(Gate::new(
            Arc::new(crate::cloud::qingcloud::QingCloud::new(client)),
            term.clone(),
        ));
        let _ = gate
            .describe_vxnets(vec!["vxnet-aaaaaaa".into()], Priority::Refill)
            .await;
        let first = accepted.load(Ordering::SeqCst);
        assert!(first >= 1, "the first call went out");
        let g = gate.clone();
        let waiting = tokio::spawn(async move {
            g.describe_instances(vec!["i-aaaaaaaa".into()], Priority::Refill)
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        term.cancel();
        let r = waiting.await.expect("task");
        assert!(r.is_err_and(|e| e.outcome_unknown()));
        // Past the moment the limiter would have let it through.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            first,
            "the fenced call reached the network"
        );
    }
}
