//! ADDs held while a NIC for their empty pool is on its way, and the NicPool annotation that
//! tells the operator a pod on this node waits (see `hostnic_crds::waiting_annotation`).
//!
//! The annotation costs two merge patches per episode (first ADD starts waiting, last one ends),
//! not one per ADD, and only when a pool ran dry. It is best effort: a failed patch only costs
//! the urgency, never the claim.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::warn;

use crate::kube_io::KubeIo;

/// How many ADDs wait per pool on this node.
pub struct Waiting {
    kube: KubeIo,
    key: String,
    /// Held across the patch, so the set and the removal of one pool's annotation never cross.
    count: Arc<tokio::sync::Mutex<HashMap<String, usize>>>,
}

impl Waiting {
    /// Waiting ADDs of `node`, announced through `kube`.
    pub fn new(kube: KubeIo, node: &str) -> Self {
        Self {
            kube,
            key: hostnic_crds::waiting_annotation(node),
            count: Arc::default(),
        }
    }

    /// Counts an ADD waiting for `pool` until the returned guard drops; the first one sets the
    /// pool's annotation.
    pub async fn enter(&self, pool: &str) -> WaitGuard {
        let mut count = self.count.lock().await;
        let n = count.entry(pool.to_owned()).or_default();
        *n += 1;
        if *n == 1 {
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
