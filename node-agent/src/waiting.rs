//! ADDs held while a NIC for their empty pool is on its way: the NicPool annotation that tells
//! the operator a pod on this node waits (see `hostnic_crds::waiting_annotation`), and the
//! `WaitingForNic` Warnings that tell the user (on the pod, and on the pool once per episode).
//!
//! The annotation costs two merge patches per episode (first ADD starts waiting, last one ends),
//! not one per ADD, and only when a pool ran dry. The pod's Warning is one per waiting ADD; the
//! runtime's retries of the same pod bump the series of one event object. All of it is best
//! effort: a failed write only costs the news, never the claim.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use tracing::warn;

use crate::kube_io::{self, KubeIo};

/// The reason of the Warnings about an ADD waiting for a NIC.
pub const WAITING_FOR_NIC: &str = "WaitingForNic";

/// How many ADDs wait per pool on this node.
pub struct Waiting {
    kube: KubeIo,
    key: String,
    node: String,
    /// Held across the patch, so the set and the removal of one pool's annotation never cross.
    count: Arc<tokio::sync::Mutex<HashMap<String, usize>>>,
}

impl Waiting {
    /// Waiting ADDs of `node`, announced through `kube`.
    pub fn new(kube: KubeIo, node: &str) -> Self {
        Self {
            kube,
            key: hostnic_crds::waiting_annotation(node),
            node: node.to_owned(),
            count: Arc::default(),
        }
    }

    /// Counts an ADD of `pod` waiting up to `wait` for `pool` until the returned guard drops,
    /// and warns on the pod; the first one of an episode sets the pool's annotation and warns
    /// on the pool.
    pub async fn enter(
        &self,
        pool: &str,
        pod: ObjectReference,
        wait: std::time::Duration,
    ) -> WaitGuard {
        let pod_name = format!(
            "{}/{}",
            pod.namespace.as_deref().unwrap_or_default(),
            pod.name.as_deref().unwrap_or_default()
        );
        self.warn(
            pod,
            format!(
                "waiting up to {}s for a NIC of pool {pool} on node {}: none is free, one is on its way",
                wait.as_secs(),
                self.node
            ),
        );
        let mut count = self.count.lock().await;
        let n = count.entry(pool.to_owned()).or_default();
        *n += 1;
        if *n == 1 {
            self.warn(
                kube_io::pool_ref(pool),
                format!(
                    "pod {pod_name} waits for a NIC on node {}: the pool has none free there",
                    self.node
                ),
            );
            let since = jiff::Timestamp::now().to_string();
            if let Err(error) = self.kube.annotate_pool(pool, &self.key, Some(&since)).await {
                warn!(pool, %error, "could not tell the operator that an ADD waits for a NIC");
            }
        }
        WaitGuard {
            kube: self.kube.clone(),
            key: self.key.clone(),
            count: self.count.clone(),
            pool: pool.to_owned(),
        }
    }

    /// Publishes a `WaitingForNic` Warning off the ADD's path.
    fn warn(&self, regarding: ObjectReference, note: String) {
        let kube = self.kube.clone();
        tokio::spawn(async move {
            kube.event(&regarding, true, WAITING_FOR_NIC, note).await;
        });
    }
}

/// One waiting ADD; dropping it (the ADD answers) removes the annotation after the last one.
pub struct WaitGuard {
    kube: KubeIo,
    key: String,
    count: Arc<tokio::sync::Mutex<HashMap<String, usize>>>,
    pool: String,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (kube, key, count, pool) = (
            self.kube.clone(),
            self.key.clone(),
            self.count.clone(),
            std::mem::take(&mut self.pool),
        );
        // Off the ADD's path: the answer does not wait for this write.
        rt.spawn(async move {
            let mut count = count.lock().await;
            let Some(n) = count.get_mut(&pool) else {
                return;
            };
            *n -= 1;
            if *n == 0 {
                count.remove(&pool);
                if let Err(error) = kube.annotate_pool(&pool, &key, None).await {
                    warn!(%pool, %error, "could not remove the NicPool's waiting annotation");
                }
            }
        });
    }
}
