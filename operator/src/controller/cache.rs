//! A short-lived cache of cloud facts the pool planner reads on every pass (vxnet free
//! addresses, instance NICs): pool reconciles are frequent, cloud calls are budgeted.

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
        let missing = Self::stale(&self.vxnets, ids, self.ttl);
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
        let missing = Self::stale(&self.instances, ids, self.ttl);
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
