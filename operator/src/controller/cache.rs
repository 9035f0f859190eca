//! A cache of cloud facts the pool planner reads on every pass (vxnet free addresses, the
//! instances' state and foreign NICs), valid for minutes and refreshed early when a refusal
//! says it is wrong. Misses are single-flight: concurrent reconciles that miss the same
//! facts wait for one Describe instead of each making their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cloud::{CloudApi, CloudResult, Instance, Priority, Vxnet};

/// Cached vxnets and instances, each entry valid for `ttl`.
pub struct CloudFacts {
    cloud: Arc<dyn CloudApi>,
    ttl: Duration,
    vxnets: Mutex<HashMap<String, (Instant, Option<Vxnet>)>>,
    instances: Mutex<HashMap<String, (Instant, Option<Instance>)>>,
    /// Until when the account's NIC quota is taken to be used up (a CreateNics got 2500).
    quota_hold: Mutex<Option<Instant>>,
    /// Held while vxnets are being described (single flight).
    vxnet_flight: tokio::sync::Mutex<()>,
    /// Held while instances are being described (single flight).
    instance_flight: tokio::sync::Mutex<()>,
}

/// How long pools stop creating NICs after the account's NIC quota refused one: only a
/// person raising the quota or NICs being deleted helps, so one probe per hold is enough.
const QUOTA_HOLD: Duration = Duration::from_secs(300);

impl CloudFacts {
    /// An empty cache.
    pub fn new(cloud: Arc<dyn CloudApi>, ttl: Duration) -> Self {
        Self {
            cloud,
            ttl,
            vxnets: Mutex::new(HashMap::new()),
            instances: Mutex::new(HashMap::new()),
            quota_hold: Mutex::new(None),
            vxnet_flight: tokio::sync::Mutex::new(()),
            instance_flight: tokio::sync::Mutex::new(()),
        }
    }

    fn stale<T>(
        map: &Mutex<HashMap<String, (Instant, T)>>,
        ids: &[String],
        ttl: Duration,
    ) -> Vec<String> {
        let map = map.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = ids
            .iter()
            .filter(|id| map.get(*id).is_none_or(|(at, _)| at.elapsed() > ttl))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The vxnets among `ids` that exist (unknown ids are absent).
    pub async fn vxnets(&self, ids: &[String], prio: Priority) -> CloudResult<Vec<Vxnet>> {
        let mut missing = Self::stale(&self.vxnets, ids, self.ttl);
        let _flight = if missing.is_empty() {
            None
        } else {
            let guard = self.vxnet_flight.lock().await;
            // Whoever held the flight may have fetched them meanwhile.
            missing = Self::stale(&self.vxnets, ids, self.ttl);
            Some(guard)
        };
        if !missing.is_empty() {
            let found = self.cloud.describe_vxnets(missing.clone(), prio).await?;
            let mut map = self.vxnets.lock().unwrap_or_else(|e| e.into_inner());
            for id in missing {
                let v = found.iter().find(|v| v.id == id).cloned();
                map.insert(id, (Instant::now(), v));
            }
        }
        let map = self.vxnets.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ids
            .iter()
            .filter_map(|id| map.get(id).and_then(|(_, v)| v.clone()))
            .collect())
    }

    /// The instances among `ids` the cloud knows.
    pub async fn instances(&self, ids: &[String], prio: Priority) -> CloudResult<Vec<Instance>> {
        let mut missing = Self::stale(&self.instances, ids, self.ttl);
        let _flight = if missing.is_empty() {
            None
        } else {
            let guard = self.instance_flight.lock().await;
            missing = Self::stale(&self.instances, ids, self.ttl);
            Some(guard)
        };
        if !missing.is_empty() {
            let found = self.cloud.describe_instances(missing.clone(), prio).await?;
            let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            for id in missing {
                let v = found.iter().find(|v| v.id == id).cloned();
                map.insert(id, (Instant::now(), v));
            }
        }
        let map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ids
            .iter()
            .filter_map(|id| map.get(id).and_then(|(_, v)| v.clone()))
            .collect())
    }

    /// Records that a vxnet refused a NIC for lack of addresses, until the entry expires.
    pub fn mark_exhausted(&self, vxnet: &str) {
        let mut map = self.vxnets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, Some(v))) = map.get_mut(vxnet) {
            v.available_ips = 0;
        }
    }

    /// Records that the account's NIC quota refused a CreateNics: no pool creates NICs for
    /// [`QUOTA_HOLD`].
    pub fn hold_quota(&self) {
        *self.quota_hold.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + QUOTA_HOLD);
    }

    /// Whether pools must not create NICs because the account's NIC quota is used up.
    pub fn quota_exceeded(&self) -> bool {
        self.quota_hold
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Takes one address off a vxnet's cached count (a NIC was planned in it).
    pub fn consume(&self, vxnet: &str) {
        let mut map = self.vxnets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, Some(v))) = map.get_mut(vxnet) {
            v.available_ips = v.available_ips.saturating_sub(1);
        }
    }

    /// Forgets an instance so the next read is fresh (its NICs changed).
    pub fn forget_instance(&self, id: &str) {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::cloud::{CreatedNic, Job, Nic, NicQuery};
    use futures::future::BoxFuture;

    /// The fake with Describe calls that take a while, as real ones do.
    #[derive(Debug)]
    struct Slow(FakeCloud);

    impl Slow {
        async fn pause() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    impl CloudApi for Slow {
        fn lost_answers(&self) -> Option<Arc<tokio::sync::Notify>> {
            None
        }

        fn describe_nics(&self, q: NicQuery, p: Priority) -> BoxFuture<'_, CloudResult<Vec<Nic>>> {
            self.0.describe_nics(q, p)
        }
        fn create_nics(
            &self,
            v: String,
            n: String,
            c: u32,
            p: Priority,
        ) -> BoxFuture<'_, CloudResult<Vec<CreatedNic>>> {
            self.0.create_nics(v, n, c, p)
        }
        fn attach_nics(
            &self,
            i: String,
            n: Vec<String>,
            p: Priority,
        ) -> BoxFuture<'_, CloudResult<String>> {
            self.0.attach_nics(i, n, p)
        }
        fn detach_nics(&self, n: Vec<String>, p: Priority) -> BoxFuture<'_, CloudResult<String>> {
            self.0.detach_nics(n, p)
        }
        fn delete_nics(&self, n: Vec<String>, p: Priority) -> BoxFuture<'_, CloudResult<()>> {
            self.0.delete_nics(n, p)
        }
        fn rename_nic(&self, i: String, n: String, p: Priority) -> BoxFuture<'_, CloudResult<()>> {
            self.0.rename_nic(i, n, p)
        }
        fn describe_jobs(
            &self,
            i: Vec<String>,
            p: Priority,
        ) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
            self.0.describe_jobs(i, p)
        }
        fn running_jobs(&self, p: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
            self.0.running_jobs(p)
        }
        fn describe_vxnets(
            &self,
            i: Vec<String>,
            p: Priority,
        ) -> BoxFuture<'_, CloudResult<Vec<Vxnet>>> {
            Box::pin(async move {
                Self::pause().await;
                self.0.describe_vxnets(i, p).await
            })
        }
        fn describe_instances(
            &self,
            i: Vec<String>,
            p: Priority,
        ) -> BoxFuture<'_, CloudResult<Vec<Instance>>> {
            Box::pin(async move {
                Self::pause().await;
                self.0.describe_instances(i, p).await
            })
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_describe() {
        let fake = FakeCloud::new(Duration::ZERO);
        fake.add_vxnet("vxnet-a", 100);
        fake.add_instance("i-1", "vxnet-a");
        let cloud = Arc::new(Slow(fake));
        let facts = Arc::new(CloudFacts::new(cloud.clone(), Duration::from_secs(300)));
        let ids = vec!["i-1".to_string()];
        let vx = vec!["vxnet-a".to_string()];
        let found = futures::future::join_all((0..10).map(|_| {
            let (f, ids, vx) = (facts.clone(), ids.clone(), vx.clone());
            async move {
                let i = f.instances(&ids, Priority::Refill).await.unwrap();
                let v = f.vxnets(&vx, Priority::Refill).await.unwrap();
                (i.len(), v.len())
            }
        }))
        .await;
        assert!(found.iter().all(|f| *f == (1, 1)));
        assert_eq!(cloud.0.calls()["DescribeInstances"], 1);
        assert_eq!(cloud.0.calls()["DescribeVxnets"], 1);
        facts.forget_instance("i-1");
        facts.instances(&ids, Priority::Refill).await.unwrap();
        assert_eq!(
            cloud.0.calls()["DescribeInstances"],
            2,
            "forgotten: read again"
        );
    }
}
