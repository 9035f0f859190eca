//! Coalesces the single-NIC requests of concurrent reconciles into batched cloud calls:
//! AttachNics per instance, DetachNics, DeleteNics and the Describe calls by id. Each HostNic
//! reconcile asks for its own NIC; requests arriving within a short window share one call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{CloudApi, CloudError, CloudErrorKind, CloudResult, Job, Nic, NicQuery, Priority};

/// Runs one batched call for a key and the distinct items collected under it.
type BatchFn<R> =
    Arc<dyn Fn(String, Vec<String>, Priority) -> BoxFuture<'static, CloudResult<R>> + Send + Sync>;

struct Group<R> {
    id: u64,
    prio: Priority,
    waiters: Vec<(String, tokio::sync::oneshot::Sender<CloudResult<R>>)>,
}

/// Collects items per key for `window` (or until `max` distinct items) and runs one call.
struct Coalescer<R> {
    groups: Mutex<HashMap<String, Group<R>>>,
    next_id: Mutex<u64>,
    window: Duration,
    max: usize,
    run: BatchFn<R>,
    /// Whether a refused batch is retried item by item, so one bad NIC cannot block the others.
    split_on_refusal: bool,
}

impl<R: Clone + Send + 'static> Coalescer<R> {
    fn new(window: Duration, max: usize, split_on_refusal: bool, run: BatchFn<R>) -> Arc<Self> {
        Arc::new(Self {
            groups: Mutex::new(HashMap::new()),
            next_id: Mutex::new(0),
            window,
            max: max.max(1),
            run,
            split_on_refusal,
        })
    }

    async fn submit(self: &Arc<Self>, key: String, item: String, prio: Priority) -> CloudResult<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let full = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            let group = match groups.get_mut(&key) {
                Some(g) => g,
                None => {
                    let id = {
                        let mut n = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
                        *n += 1;
                        *n
                    };
                    let this = Arc::clone(self);
                    let k = key.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(this.window).await;
                        let due = this.take(&k, Some(id));
                        if let Some(group) = due {
                            this.run_group(&k, group).await;
                        }
                    });
                    groups.entry(key.clone()).or_insert(Group {
                        id,
                        prio,
                        waiters: Vec::new(),
                    })
                }
            };
            group.prio = group.prio.min(prio);
            group.waiters.push((item, tx));
            let mut distinct: Vec<&String> = group.waiters.iter().map(|(i, _)| i).collect();
            distinct.sort();
            distinct.dedup();
            // A full group leaves the map at once, so no later request can join it.
            if distinct.len() >= self.max {
                groups.remove(&key)
            } else {
                None
            }
        };
        if let Some(group) = full {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.run_group(&key, group).await });
        }
        rx.await
            .unwrap_or_else(|_| Err(CloudError::transient("batch", "batched call was dropped")))
    }

    /// Removes the group under `key` (only if it is still group `id`, when given).
    fn take(&self, key: &str, id: Option<u64>) -> Option<Group<R>> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        match groups.get(key) {
            Some(g) if id.is_none_or(|id| g.id == id) => groups.remove(key),
            _ => None,
        }
    }

    /// Makes the group's call and answers every waiter. A refusal that names some of the
    /// batch's NICs fails those and retries the others once without them; any other refusal
    /// (about the instance, or naming no NIC) answers every waiter, since retrying the same
    /// NICs one by one would only repeat it.
    async fn run_group(self: &Arc<Self>, key: &str, group: Group<R>) {
        let mut items: Vec<String> = group.waiters.iter().map(|(i, _)| i.clone()).collect();
        items.sort();
        items.dedup();
        let result = (self.run)(key.to_string(), items.clone(), group.prio).await;
        let culprits: Vec<String> = match &result {
            Err(e) if self.split_on_refusal && is_refusal(e) => items
                .iter()
                .filter(|i| e.message.contains(i.as_str()))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if culprits.is_empty() || culprits.len() == items.len() {
            for (_, tx) in group.waiters {
                let _ = tx.send(result.clone());
            }
            return;
        }
        if let Err(error) = &result {
            tracing::debug!(%error, refused = ?culprits, "batch refused for some NICs: retrying the others once");
        }
        let rest: Vec<String> = items
            .into_iter()
            .filter(|i| !culprits.contains(i))
            .collect();
        let retried = (self.run)(key.to_string(), rest, group.prio).await;
        for (item, tx) in group.waiters {
            let r = if culprits.contains(&item) {
                result.clone()
            } else {
                retried.clone()
            };
            let _ = tx.send(r);
        }
    }
}

/// Whether the cloud refused the call for the state of what it names (1400, 2100, 5200).
fn is_refusal(e: &CloudError) -> bool {
    matches!(
        e.kind,
        CloudErrorKind::Refused | CloudErrorKind::NotFound | CloudErrorKind::Capacity
    )
}

/// Batch limits and the coalescing window.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// How long the first request of a batch waits for company.
    pub window: Duration,
    /// Most NICs per AttachNics call.
    pub max_attach: usize,
    /// Most NICs per DetachNics / DeleteNics call.
    pub max_detach: usize,
}

/// Single-NIC front of a [`CloudApi`] that batches concurrent requests.
pub struct Batcher {
    attach: Arc<Coalescer<String>>,
    detach: Arc<Coalescer<String>>,
    delete: Arc<Coalescer<()>>,
    nics: Arc<Coalescer<Arc<Vec<Nic>>>>,
    jobs: Arc<Coalescer<Arc<Vec<Job>>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Describe calls page at 100 rows.
const DESCRIBE_BATCH: usize = 100;

impl Batcher {
    /// Batches calls to `cloud`.
    pub fn new(cloud: Arc<dyn CloudApi>, cfg: BatchConfig) -> Self {
        let c = cloud.clone();
        let attach = Coalescer::new(
            cfg.window,
            cfg.max_attach,
            true,
            Arc::new(move |instance, nics, prio| {
                let c = c.clone();
                Box::pin(async move { c.attach_nics(instance, nics, prio).await })
            }),
        );
        let c = cloud.clone();
        let detach = Coalescer::new(
            cfg.window,
            cfg.max_detach,
            true,
            Arc::new(move |_, nics, prio| {
                let c = c.clone();
                Box::pin(async move { c.detach_nics(nics, prio).await })
            }),
        );
        let c = cloud.clone();
        let delete = Coalescer::new(
            cfg.window,
            cfg.max_detach,
            true,
            Arc::new(move |_, nics, prio| {
                let c = c.clone();
                Box::pin(async move { c.delete_nics(nics, prio).await })
            }),
        );
        let c = cloud.clone();
        let nics = Coalescer::new(
            cfg.window,
            DESCRIBE_BATCH,
            false,
            Arc::new(move |_, ids, prio| {
                let c = c.clone();
                Box::pin(async move {
                    c.describe_nics(NicQuery::Ids(ids), prio)
                        .await
                        .map(Arc::new)
                })
            }),
        );
        let c = cloud;
        let jobs = Coalescer::new(
            cfg.window,
            DESCRIBE_BATCH,
            false,
            Arc::new(move |_, ids, prio| {
                let c = c.clone();
                Box::pin(async move { c.describe_jobs(ids, prio).await.map(Arc::new) })
            }),
        );
        Self {
            attach,
            detach,
            delete,
            nics,
            jobs,
        }
    }

    /// Attaches `nic` to `instance` together with other NICs bound for the same instance.
    pub async fn attach(&self, instance: &str, nic: &str, prio: Priority) -> CloudResult<String> {
        self.attach
            .submit(instance.to_string(), nic.to_string(), prio)
            .await
    }

    /// Detaches `nic` in a batch.
    pub async fn detach(&self, nic: &str, prio: Priority) -> CloudResult<String> {
        self.detach
            .submit(String::new(), nic.to_string(), prio)
            .await
    }

    /// Deletes `nic` in a batch.
    pub async fn delete(&self, nic: &str, prio: Priority) -> CloudResult<()> {
        self.delete
            .submit(String::new(), nic.to_string(), prio)
            .await
    }

    /// Reads one NIC (None: it does not exist).
    pub async fn nic(&self, id: &str, prio: Priority) -> CloudResult<Option<Nic>> {
        let all = self
            .nics
            .submit(String::new(), id.to_string(), prio)
            .await?;
        Ok(all.iter().find(|n| n.id == id).cloned())
    }

    /// Reads one job (None: the cloud does not know it).
    pub async fn job(&self, id: &str, prio: Priority) -> CloudResult<Option<Job>> {
        let all = self
            .jobs
            .submit(String::new(), id.to_string(), prio)
            .await?;
        Ok(all.iter().find(|j| j.id == id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::cloud::{CloudApi, NicState};

    fn cfg() -> BatchConfig {
        BatchConfig {
            window: Duration::from_millis(30),
            max_attach: 3,
            max_detach: 10,
        }
    }

    async fn nics(cloud: &FakeCloud, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..n {
            let c = cloud
                .create_nic("vxnet-a".into(), format!("n{i}"), Priority::Refill)
                .await
                .unwrap();
            out.push(c.id);
        }
        out
    }

    #[tokio::test]
    async fn concurrent_attaches_share_calls_up_to_the_batch_limit() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let ids = nics(&cloud, 7).await;
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let jobs = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.attach("i-1", &id, Priority::Refill).await.unwrap() }
        }))
        .await;
        assert_eq!(
            cloud.calls()["AttachNics"],
            3,
            "7 NICs in batches of at most 3"
        );
        let mut distinct = jobs.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        assert!(cloud.nics().iter().all(|n| n.state == NicState::InUse));
    }

    #[tokio::test]
    async fn a_refusal_naming_a_nic_fails_it_and_retries_the_rest_once() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let mut ids = nics(&cloud, 2).await;
        ids.push("52:54:ff:ff:ff:ff".into());
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let results = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.attach("i-1", &id, Priority::Refill).await }
        }))
        .await;
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(results[2].as_ref().is_err_and(CloudError::is_not_found));
        assert_eq!(
            cloud.calls()["AttachNics"],
            2,
            "one refused batch, then one retry without the missing NIC"
        );
    }

    #[tokio::test]
    async fn a_refusal_about_the_instance_is_not_split() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let ids = nics(&cloud, 3).await;
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let results = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.attach("i-404", &id, Priority::Refill).await }
        }))
        .await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_err_and(CloudError::is_not_found))
        );
        assert_eq!(
            cloud.calls()["AttachNics"],
            1,
            "an unknown instance refuses every NIC alike: no NIC-by-NIC retries"
        );
    }

    #[tokio::test]
    async fn describes_are_shared_and_errors_reach_every_waiter() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        let ids = nics(&cloud, 4).await;
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let seen = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.nic(&id, Priority::Refill).await.unwrap().map(|n| n.id) }
        }))
        .await;
        assert_eq!(seen.into_iter().flatten().collect::<Vec<_>>(), ids);
        assert_eq!(cloud.calls()["DescribeNics"], 1);
        cloud.inject("DescribeNics", &[5100]);
        let r = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.nic(&id, Priority::Refill).await }
        }))
        .await;
        assert!(r.iter().all(|r| {
            r.as_ref()
                .is_err_and(|e| e.kind == CloudErrorKind::Throttled)
        }));
    }
}
