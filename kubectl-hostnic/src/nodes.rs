//! `nodes`: each pool's fill on each node it serves, from its HostNics (current to the last
//! watch event, where the NicPool status may lag) and the agents' waiting annotations.

use std::collections::BTreeSet;
use std::sync::Arc;

use hostnic_crds::{HostNic, NicPool};
use kube::ResourceExt;

use crate::fill::{Fill, waiting_since};
use crate::table;

/// One row: a pool on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub pool: String,
    pub node: String,
    /// The pool's warm size per node.
    pub size: u32,
    pub fill: Fill,
    /// When an ADD on the node began waiting for the pool's NICs.
    pub waiting_since: Option<String>,
}

/// A row for every node the pool's status lists or that has one of its NICs, by pool and node.
pub fn rows(pools: &[Arc<NicPool>], nics: &[Arc<HostNic>]) -> Vec<Row> {
    let mut rows = Vec::new();
    for pool in pools {
        let name = pool.name_any();
        let listed = pool
            .status
            .iter()
            .flat_map(|s| &s.node_status)
            .map(|n| n.node.clone());
        let with_nics = nics
            .iter()
            .filter(|n| n.spec.pool == name)
            .map(|n| n.spec.node.clone());
        let nodes: BTreeSet<String> = listed.chain(with_nics).collect();
        for node in nodes {
            rows.push(Row {
                fill: Fill::of(nics.iter().map(AsRef::as_ref), &name, &node),
                waiting_since: waiting_since(pool, &node).map(str::to_string),
                size: pool.spec.size,
                pool: name.clone(),
                node,
            });
        }
    }
    rows.sort_by(|a, b| (&a.pool, &a.node).cmp(&(&b.pool, &b.node)));
    rows
}

/// The table `kubectl hostnic nodes` prints.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "POOL",
        "NODE",
        "SIZE",
        "AVAILABLE",
        "BOUND",
        "IN-PROGRESS",
        "FAILED",
        "WAITING-SINCE",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.pool.clone(),
                r.node.clone(),
                r.size.to_string(),
                r.fill.available.to_string(),
                r.fill.bound.to_string(),
                r.fill.in_progress.to_string(),
                r.fill.failed.to_string(),
                r.waiting_since.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table::render(&header, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use hostnic_crds::{HostNicPhase::*, NodePoolStatus};

    #[test]
    fn one_row_per_pool_and_node_counted_from_the_hostnics() {
        let mut a = waiting(pool("a", &[], 2), "n2", "2026-12-02T05:00:00Z");
        // Listed by the status though it has no NIC yet.
        if let Some(s) = a.status.as_mut() {
            s.node_status.push(NodePoolStatus {
                node: "n3".into(),
                ..Default::default()
            });
        }
        let pools = vec![Arc::new(a), Arc::new(pool("b", &[], 1))];
        let p = pod("ns", "p", Some("n1"), "Running");
        let mut gateway = nic("gw", "a", "n1", Available, 9);
        gateway.spec.role = hostnic_crds::NicRole::Gateway;
        let nics: Vec<Arc<HostNic>> = [
            nic("a1", "a", "n1", Available, 1),
            bound(nic("a2", "a", "n1", Bound, 2), &p),
            nic("a3", "a", "n1", Released, 3),
            nic("a4", "a", "n2", Failed, 4),
            nic("b1", "b", "n1", Attaching, 5),
            gateway,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let table = render(&rows(&pools, &nics));
        assert_eq!(
            table,
            "POOL   NODE   SIZE   AVAILABLE   BOUND   IN-PROGRESS   FAILED   WAITING-SINCE\n\
             a      n1     2      1           1       1             0        -\n\
             a      n2     2      0           0       0             1        2026-12-02T05:00:00Z\n\
             a      n3     2      0           0       0             0        -\n\
             b      n1     1      0           0       1             0        -\n"
        );
    }
}
