//! A pool's fill on one node, counted from its HostNics the way the agent sees them.

use hostnic_crds::{HostNic, HostNicPhase, NicPool, NicRole};

/// Counts of one pool's pod NICs on one node (gateway NICs are never handed to pods).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fill {
    /// Free for a pod now: Available with its link on the node (the agent's test).
    pub available: u32,
    /// Held by pods.
    pub bound: u32,
    /// On their way in or out: being created or attached, quarantined after a release,
    /// Available but not yet seen on the node, detaching or deleting.
    pub in_progress: u32,
    /// Failed (the operator replaces them).
    pub failed: u32,
}

impl Fill {
    /// The fill of `pool` on `node` among `nics`.
    pub fn of<'a>(nics: impl IntoIterator<Item = &'a HostNic>, pool: &str, node: &str) -> Fill {
        let mut fill = Fill::default();
        let ours = nics
            .into_iter()
            .filter(|n| n.spec.role == NicRole::Pod && n.spec.pool == pool && n.spec.node == node);
        for nic in ours {
            let phase = nic.status.as_ref().map(|s| s.phase).unwrap_or_default();
            let slot = match phase {
                _ if hostnic_agent::decide::is_free(nic) => &mut fill.available,
                HostNicPhase::Bound => &mut fill.bound,
                HostNicPhase::Failed => &mut fill.failed,
                _ => &mut fill.in_progress,
            };
            *slot += 1;
        }
        fill
    }
}

/// When an ADD on `node` began waiting for one of `pool`'s NICs (the agent's annotation).
pub fn waiting_since<'a>(pool: &'a NicPool, node: &str) -> Option<&'a str> {
    let annotations = pool.metadata.annotations.as_ref()?;
    annotations
        .get(&hostnic_crds::waiting_annotation(node))
        .map(String::as_str)
}
