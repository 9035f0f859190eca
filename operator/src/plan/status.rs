//! The fast part of NicPool status: per-node counts, totals and `Ready`, a pure function of the
//! pool's spec, the Nodes and the pool's HostNics (no cloud fact), and how it joins what the full
//! reconcile owns (`Progressing`, `Degraded`, instances, gateways) into the status to publish.

use std::collections::{BTreeMap, BTreeSet};

use hostnic_crds::{NicPoolSpec, NicPoolStatus, NodeGateway, NodePoolStatus};
use jiff::Timestamp;

use super::conditions::{self, Cond};
use super::pool::{NicView, Totals, counts};

/// A Node as the counts need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// Whether the pool's selector matches it.
    pub selected: bool,
    /// Schedulable and Ready: an unschedulable node short of NICs does not hold `Ready` back.
    pub can_grow: bool,
}

/// Counts and `Ready`, from Kubernetes objects alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// Pool-wide counts.
    pub totals: Totals,
    /// Counts per node with the pool's NICs or selected by it, by node name, and whether it is
    /// selected (only those are published per node). No instance, no gateways: the reconcile
    /// owns those.
    pub nodes: Vec<(bool, NodePoolStatus)>,
    /// The `Ready` condition.
    pub ready: Cond,
}

/// The `Ready` rule, shared by both writers: True when and only when every counted node has
/// `spec.size` free NICs, unless it is `exempt` (unschedulable: not grown on purpose).
/// `nodes` yields (free NICs, exempt) per counted node.
pub fn ready(spec: &NicPoolSpec, nodes: impl IntoIterator<Item = (u32, bool)>) -> Cond {
    let all_warm = nodes
        .into_iter()
        .all(|(available, exempt)| exempt || available >= spec.size);
    if all_warm {
        Cond::new(
            "Ready",
            true,
            "Warm",
            format!("every node has {} free NICs", spec.size),
        )
    } else {
        Cond::new(
            "Ready",
            false,
            "Filling",
            "some nodes have fewer free NICs than spec.size",
        )
    }
}

/// Counts of a pool whose HostNics are `nics` as (node, HostNic). Totals cover every node with a
/// HostNic of the pool (selected or not, as the reconcile counts them); `nodes`, `warmPerNode`
/// and `Ready` only the selected ones.
pub fn fresh(spec: &NicPoolSpec, nodes: &[NodeFacts], nics: &[(String, NicView)]) -> Fresh {
    let selected: BTreeMap<&str, &NodeFacts> = nodes
        .iter()
        .filter(|n| n.selected)
        .map(|n| (n.name.as_str(), n))
        .collect();
    let names: BTreeSet<&str> = selected
        .keys()
        .copied()
        .chain(nics.iter().map(|(n, _)| n.as_str()))
        .collect();
    let mut totals = Totals::default();
    let mut per_node = Vec::new();
    let mut warm: Option<u32> = None;
    let mut counted = Vec::new();
    for name in names {
        let on_node: Vec<&NicView> = nics
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        let s = NodePoolStatus {
            node: name.to_string(),
            ..counts(&on_node)
        };
        totals.available += s.available;
        totals.bound += s.bound;
        totals.in_progress += s.in_progress;
        totals.failed += s.failed;
        if let Some(facts) = selected.get(name) {
            totals.nodes += 1;
            warm = Some(warm.map_or(s.available, |w| w.min(s.available)));
            counted.push((s.available, !facts.can_grow));
        }
        per_node.push((selected.contains_key(name), s));
    }
    totals.warm_per_node = warm.unwrap_or(0);
    Fresh {
        totals,
        nodes: per_node,
        ready: ready(spec, counted),
    }
}

/// What the last full reconcile of a pool decided for its status, kept for the status writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// The pool generation it was decided for.
    pub generation: Option<i64>,
    /// The spec is invalid: every count is zero and `conds` says why (`Ready` included).
    pub invalid: bool,
    /// `Progressing` and `Degraded` (and `Ready` when invalid).
    pub conds: Vec<Cond>,
    /// Instance and gateways per node.
    pub nodes: BTreeMap<String, (Option<String>, Vec<NodeGateway>)>,
}

impl Owned {
    /// From a reconcile's conditions: `Ready` is the fast path's, unless the spec is invalid.
    pub fn new(
        generation: Option<i64>,
        invalid: bool,
        conds: Vec<Cond>,
        nodes: BTreeMap<String, (Option<String>, Vec<NodeGateway>)>,
    ) -> Self {
        let conds = conds
            .into_iter()
            .filter(|c| invalid || c.type_ != "Ready")
            .collect();
        Self {
            generation,
            invalid,
            conds,
            nodes,
        }
    }
}

/// The status to publish: the fresh counts and `Ready` over what the reconcile owns. Without an
/// `owned` (a new leader before its first reconcile), or for a node it did not decide on, the
/// reconcile's fields stay as published, and an invalid spec stays invalid until the reconcile
/// says otherwise.
pub fn compose(
    current: &NicPoolStatus,
    generation: Option<i64>,
    fresh: &Fresh,
    owned: Option<&Owned>,
    now: Timestamp,
) -> NicPoolStatus {
    let still_invalid = conditions::reason(&current.conditions, "Degraded") == Some("InvalidSpec")
        && current.observed_generation == generation;
    let invalid = owned.map_or(still_invalid, |o| o.invalid);
    let observed_generation = owned.map_or(current.observed_generation, |o| o.generation);
    let mut conds = current.conditions.clone();
    for c in owned.map(|o| o.conds.as_slice()).unwrap_or_default() {
        conds = conditions::set(&conds, c, observed_generation, now);
    }
    if invalid {
        return NicPoolStatus {
            observed_generation,
            conditions: conds,
            ..Default::default()
        };
    }
    conds = conditions::set(&conds, &fresh.ready, generation, now);
    let node_status = fresh
        .nodes
        .iter()
        .filter(|(selected, _)| *selected)
        .map(|(_, n)| {
            // A node the last reconcile did not see yet keeps what was published for it.
            let (instance, gateways) = owned
                .and_then(|o| o.nodes.get(&n.node).cloned())
                .or_else(|| {
                    current
                        .node_status
                        .iter()
                        .find(|c| c.node == n.node)
                        .map(|c| (c.instance.clone(), c.gateways.clone()))
                })
                .unwrap_or_default();
            NodePoolStatus {
                instance,
                gateways,
                ..n.clone()
            }
        })
        .collect();
    let t = fresh.totals;
    NicPoolStatus {
        observed_generation,
        nodes: t.nodes,
        warm_per_node: t.warm_per_node,
        available: t.available,
        bound: t.bound,
        in_progress: t.in_progress,
        failed: t.failed,
        node_status,
        conditions: conds,
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
