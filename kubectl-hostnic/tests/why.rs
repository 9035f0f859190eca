//! `kubectl hostnic why` as a process against kube-mem: one case per blocker, and the fine one.

mod common;

use common::fixtures::*;
use common::{Env, Out};
use hostnic_crds::HostNicPhase::*;

async fn why(w: &World) -> Out {
    let env = Env::start().await;
    env.load(w).await;
    let out = env.plugin(&["why", "p", "-n", "ns"]).await;
    assert!(out.stderr.is_empty(), "{out:?}");
    out
}

/// Asserts `why` exits 1 with a verdict starting `blocked: <start>`.
fn blocked(out: &Out, start: &str) {
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.last_line().starts_with(&format!("blocked: {start}")),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn running_pod_with_a_bound_nic_is_ok() {
    let mut w = World::standard();
    w.pod = pod("ns", "p", Some("n1"), "Running");
    w.add(bound(
        nic("default-n1-a", "default", "n1", Bound, 1),
        &w.pod,
    ));
    let out = why(&w).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.last_line(),
        "ok: pod Running with HostNic default-n1-a Bound"
    );
    assert!(
        out.stdout.contains("cloud   nic 52:54:00:00:00:01"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn unscheduled() {
    let mut w = World::standard();
    w.pod = pod("ns", "p", None, "Pending");
    blocked(&why(&w).await, "the pod is not scheduled");
}

#[tokio::test]
async fn no_pool_selects_the_node() {
    let mut w = World::standard();
    w.node = Some(node("n1", &[("hostnic", "off")]));
    let out = why(&w).await;
    blocked(
        &out,
        "no pool selects node n1: the pod's pool default has nodeSelector",
    );
}

#[tokio::test]
async fn agent_not_ready() {
    let mut w = World::standard();
    w.agents = vec![agent("n1", false)];
    blocked(
        &why(&w).await,
        "the hostnic agent is not ready on node n1: pod hostnic-agent-n1 Ready=False ContainersNotReady",
    );
}

#[tokio::test]
async fn pool_degraded() {
    let mut w = World::standard();
    w.pools = vec![degraded(
        pool("default", &[("hostnic", "on")], 2),
        "VxnetFull",
        "vxnet-abc1234 has no free address",
    )];
    blocked(
        &why(&w).await,
        "pool default is Degraded (VxnetFull): vxnet-abc1234 has no free address",
    );
}

#[tokio::test]
async fn nic_stuck_with_its_cloud_error() {
    let mut w = World::standard();
    w.add(cloud_failed(
        nic("default-n1-a", "default", "n1", Attaching, 1),
        "2100",
        "instance busy",
    ));
    let out = why(&w).await;
    blocked(
        &out,
        "HostNic default-n1-a is stuck in Attaching: 2100: instance busy",
    );
    assert!(
        out.stdout.contains("last job j-attach01 AttachNics failed"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn no_free_nic_and_the_add_waits() {
    let mut w = World::standard();
    let since = "2026-12-02T05:00:00Z";
    w.pools = vec![waiting(
        pool("default", &[("hostnic", "on")], 1),
        "n1",
        since,
    )];
    let other = pod("ns", "q", Some("n1"), "Running");
    w.add(bound(
        nic("default-n1-a", "default", "n1", Bound, 1),
        &other,
    ));
    w.add(nic("default-n1-b", "default", "n1", Creating, 2));
    blocked(
        &why(&w).await,
        &format!(
            "no free NIC of pool default on node n1 (available 0, bound 1, in progress 1, failed 0); an ADD on the node waits for one since {since}"
        ),
    );
}

#[tokio::test]
async fn free_nic_not_claimed() {
    let mut w = World::standard();
    w.add(nic("default-n1-a", "default", "n1", Available, 1));
    blocked(&why(&w).await, "1 free NIC(s) of pool default on node n1");
}
