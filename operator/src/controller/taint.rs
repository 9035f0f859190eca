//! The startup taint `hostnic.qingcloud.com/not-ready:NoSchedule`: kubelets may register nodes
//! with it (`--register-with-taints`), and the NicPool controller removes it once every pool
//! that gates the node (annotation `hostnic.qingcloud.com/gate-node-readiness: "true"`) has the
//! node's warm NICs, so no pod is scheduled onto a node that cannot give it a NIC yet. The taint
//! is only ever removed, never put back: it is about startup, not about a pool running dry.

use std::sync::Arc;

use hostnic_crds::{NicPool, NodePoolStatus};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::Context;
use crate::error::{Error, Result};
use crate::node;
use crate::plan::pool::NodeDecision;

/// Key of the startup taint.
pub const STARTUP_TAINT: &str = "hostnic.qingcloud.com/not-ready";

/// NicPool annotation: `"true"` makes the pool gate the startup taint of the nodes it selects.
pub const GATE_ANNOTATION: &str = "hostnic.qingcloud.com/gate-node-readiness";

/// Whether `pool` gates its nodes' startup taint.
pub fn gates(pool: &NicPool) -> bool {
    pool.annotations()
        .get(GATE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

fn has_startup_taint(n: &Node) -> bool {
    taints(n).iter().any(|t| t.key == STARTUP_TAINT)
}

fn taints(n: &Node) -> &[Taint] {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Whether `pool` has its warm NICs on `node` according to `counts` (the pool's per-node counts).
fn warm(pool: &NicPool, node: &str, counts: &[NodePoolStatus]) -> bool {
    let want = pool.spec.size.min(pool.spec.max_per_node);
    counts.iter().any(|s| s.node == node && s.available >= want)
}

/// The nodes whose startup taint can go now: tainted nodes `pool` selects, on which every
/// gating pool that selects them is warm: `pool` by its fresh `counts`, the `others` by their
/// published status (a gating pool that has not counted the node yet is not warm there).
pub fn nodes_to_release(
    pool: &NicPool,
    counts: &[NodePoolStatus],
    others: &[Arc<NicPool>],
    nodes: &[Arc<Node>],
) -> Vec<String> {
    if !gates(pool) {
        return Vec::new();
    }
    let name = pool.name_any();
    nodes
        .iter()
        .filter(|n| has_startup_taint(n) && node::selected(&pool.spec.node_selector, n))
        .filter(|n| warm(pool, &n.name_any(), counts))
        .filter(|n| {
            others
                .iter()
                .filter(|o| o.name_any() != name && gates(o))
                .filter(|o| node::selected(&o.spec.node_selector, n))
                .all(|o| {
                    let published = o
                        .status
                        .as_ref()
                        .map(|s| s.node_status.as_slice())
                        .unwrap_or_default();
                    warm(o, &n.name_any(), published)
                })
        })
        .map(|n| n.name_any())
        .collect()
}

/// Removes the startup taint from the nodes [`nodes_to_release`] names. Each patch carries the
/// node's resourceVersion, so a taint another controller changed meanwhile is never written
/// back (a conflict retries the reconcile with a fresh read).
pub async fn release_warm_nodes(
    ctx: &Context,
    pool: &NicPool,
    nodes: &[Arc<Node>],
    decisions: &[(bool, NodeDecision)],
) -> Result<()> {
    let counts: Vec<NodePoolStatus> = decisions.iter().map(|(_, d)| d.status.clone()).collect();
    if nodes_to_release(pool, &counts, &[], nodes).is_empty() {
        return Ok(());
    }
    // The other pools' published counts, from the pool store: a status it has not shown yet
    // only delays the release to that pool's own reconcile, which its status write triggers.
    super::wait_synced(&ctx.pools).await?;
    let others = ctx.pools.state();
    let api: Api<Node> = Api::all(ctx.client.clone());
    for name in nodes_to_release(pool, &counts, &others, nodes) {
        let Some(n) = nodes.iter().find(|n| n.name_any() == name) else {
            continue;
        };
        let kept: Vec<&Taint> = taints(n)
            .iter()
            .filter(|t| t.key != STARTUP_TAINT)
            .collect();
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": n.resource_version()},
            "spec": {"taints": kept},
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("remove the startup taint"))?;
        tracing::info!(node = %name, pool = %pool.name_any(), "warm NICs in place: removed the startup taint");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_crds::{NicPoolSpec, NicPoolStatus};
    use k8s_openapi::api::core::v1::NodeSpec;
    use std::collections::BTreeMap;

    fn pool(name: &str, gate: bool, size: u32, selector: &[(&str, &str)]) -> NicPool {
        let mut p = NicPool::new(
            name,
            NicPoolSpec {
                vxnets: vec!["vxnet-aaaaaaa".into()],
                node_selector: selector
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                size,
                max_per_node: 63,
                routes: vec![],
                reclaim_policy: Default::default(),
                quarantine_seconds: 0,
            },
        );
        if gate {
            p.metadata.annotations = Some(BTreeMap::from([(
                GATE_ANNOTATION.to_owned(),
                "true".to_owned(),
            )]));
        }
        p
    }

    fn node(name: &str, tainted: bool, labels: &[(&str, &str)]) -> Arc<Node> {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let mut taints = vec![Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }];
        if tainted {
            taints.push(Taint {
                key: STARTUP_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
        n.spec = Some(NodeSpec {
            taints: Some(taints),
            ..Default::default()
        });
        Arc::new(n)
    }

    fn counts(node: &str, available: u32) -> NodePoolStatus {
        NodePoolStatus {
            node: node.into(),
            available,
            ..Default::default()
        }
    }

    #[test]
    fn a_gating_pool_releases_its_tainted_nodes_once_they_are_warm() {
        let p = pool("p", true, 2, &[]);
        let nodes = [
            node("a", true, &[]),
            node("b", true, &[]),
            node("c", false, &[]),
        ];
        let c = [counts("a", 2), counts("b", 1), counts("c", 2)];
        assert_eq!(nodes_to_release(&p, &c, &[], &nodes), vec!["a"]);
        // Not gating: nothing, however warm.
        let plain = pool("p", false, 2, &[]);
        assert!(nodes_to_release(&plain, &c, &[], &nodes).is_empty());
    }

    #[test]
    fn every_gating_pool_that_selects_the_node_must_be_warm() {
        let p = pool("p", true, 1, &[]);
        let nodes = [node("a", true, &[("gpu", "yes")]), node("b", true, &[])];
        let c = [counts("a", 1), counts("b", 1)];
        // `gpu` gates the nodes labelled gpu=yes, and has not filled `a` yet.
        let mut gpu = pool("gpu", true, 3, &[("gpu", "yes")]);
        gpu.status = Some(NicPoolStatus {
            node_status: vec![counts("a", 2)],
            ..Default::default()
        });
        assert_eq!(
            nodes_to_release(
                &p,
                &c,
                &[Arc::new(p.clone()), Arc::new(gpu.clone())],
                &nodes
            ),
            vec!["b"]
        );
        gpu.status.as_mut().unwrap().node_status = vec![counts("a", 3)];
        assert_eq!(
            nodes_to_release(&p, &c, &[Arc::new(gpu.clone())], &nodes),
            vec!["a", "b"]
        );
        // A pool that does not gate does not hold a node back.
        let mut idle = pool("idle", false, 5, &[]);
        idle.status = Some(NicPoolStatus::default());
        assert_eq!(
            nodes_to_release(&p, &c, &[Arc::new(idle)], &nodes),
            vec!["a", "b"]
        );
    }

    #[test]
    fn nodes_the_pool_does_not_select_are_left_alone() {
        let p = pool("p", true, 1, &[("pool", "p")]);
        let nodes = [node("a", true, &[("pool", "p")]), node("b", true, &[])];
        let c = [counts("a", 1), counts("b", 1)];
        assert_eq!(nodes_to_release(&p, &c, &[], &nodes), vec!["a"]);
    }
}
