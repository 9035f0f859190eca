//! Pure decisions: given what was observed (Kubernetes objects, cloud facts, the time), what a
//! pool should do on each node and which lifecycle step a HostNic takes next. No I/O here, so
//! every branch is unit-tested.

pub mod conditions;
pub mod nic;
pub mod pool;
pub mod status;

/// Builders shared by the plan's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use hostnic_crds::{NicPoolSpec, ReclaimPolicy};

    /// A pool of `size` NICs per node over `vxnets`, with the CRD's defaults.
    pub fn pool_spec(vxnets: &[&str], size: u32) -> NicPoolSpec {
        NicPoolSpec {
            vxnets: vxnets.iter().map(|v| v.to_string()).collect(),
            node_selector: Default::default(),
            size,
            max_per_node: 63,
            routes: vec![],
            reclaim_policy: ReclaimPolicy::Delete,
            quarantine_seconds: 120,
        }
    }
}
