//! The startup taint against the in-memory API server: a node registered with
//! `hostnic.qingcloud.com/not-ready:NoSchedule` keeps it until every pool that gates it has the
//! node's warm NICs, then loses exactly that taint.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use hostnic_crds::NicPool;
use hostnic_operator::controller::taint::{GATE_ANNOTATION, STARTUP_TAINT};
use kube::api::{Patch, PatchParams, PostParams};

const T: Duration = Duration::from_secs(30);
const NODE: &str = "i-node0001";

async fn taint_keys(env: &Env) -> Vec<String> {
    let node = env.nodes().get(NODE).await.expect("node");
    node.spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect()
}

async fn create_gating_pool(env: &Env, name: &str, vxnet: &str, size: u32) {
    let mut pool = NicPool::new(name, spec(&[vxnet], size));
    pool.metadata.annotations = Some(BTreeMap::from([(
        GATE_ANNOTATION.to_owned(),
        "true".to_owned(),
    )]));
    env.pools()
        .create(&PostParams::default(), &pool)
        .await
        .expect("create pool");
}

/// Available NICs the pool has published for the node (its status is written in the same
/// reconcile that decides about the taint, right before).
async fn published_available(env: &Env, pool: &str) -> u32 {
    env.pool(pool)
        .await
        .and_then(|p| p.status)
        .and_then(|s| s.node_status.into_iter().find(|n| n.node == NODE))
        .map_or(0, |n| n.available)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_startup_taint_goes_once_every_gating_pool_is_warm_on_the_node() {
    let mut setup = Setup::default();
    // GC lists NicPools on every pass (the first one `gc_settle` after the start); this test
    // counts the taint release's lists, so GC does not run within it.
    setup.settings.gc_interval = Duration::from_secs(3600);
    setup.settings.gc_settle = Duration::from_secs(3600);
    let mut env = Env::start(setup).await;
    // The kubelet registered the node with the startup taint; something else taints it too.
    env.nodes()
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"taints": [
                {"key": STARTUP_TAINT, "effect": "NoSchedule"},
                {"key": "example.com/dedicated", "value": "infra", "effect": "NoSchedule"},
            ]}})),
        )
        .await
        .expect("taint the node");
    env.start_operator();
    // Its pool reflector has listed once it watches: every LIST from here on is another one.
    eventually("the operator to watch NicPools", T, || async {
        env.operator_requests(|r| r.verb == "watch" && r.resource == "nicpools")
            .is_none_or(|watches| !watches.is_empty())
    })
    .await;
    env.clear_audit();

    // Two gating pools; `b` names a vxnet that does not exist, so it cannot warm the node.
    create_gating_pool(&env, "a", VX_A, 2).await;
    create_gating_pool(&env, "b", "vxnet-zzzzzzz", 1).await;
    env.converged("a", &[NODE], 2, T).await;
    eventually("pool a to publish its warm NICs", T, || async {
        published_available(&env, "a").await >= 2
    })
    .await;
    assert!(
        taint_keys(&env).await.iter().any(|k| k == STARTUP_TAINT),
        "the taint went while pool b has no NIC on the node"
    );

    // `b` gets a real vxnet; once it is warm too, the startup taint goes, and only it.
    env.patch_pool("b", serde_json::json!({"vxnets": [VX_B]}))
        .await;
    eventually("the startup taint to go", T, || async {
        !taint_keys(&env).await.iter().any(|k| k == STARTUP_TAINT)
    })
    .await;
    assert!(
        env.count("b", NODE, hostnic_crds::HostNicPhase::Available)
            .await
            >= 1
    );
    assert_eq!(taint_keys(&env).await, vec!["example.com/dedicated"]);
    // The other gating pools' counts came from the pool store, not a LIST per release.
    if let Some(lists) = env.operator_requests(|r| r.verb == "list" && r.resource == "nicpools") {
        assert!(lists.is_empty(), "{lists:?}");
    }
    let node = env.nodes().get(NODE).await.expect("node");
    let kept = &node.spec.unwrap().taints.unwrap()[0];
    assert_eq!(kept.value.as_deref(), Some("infra"));
    env.assert_invariants().await;
    env.shutdown().await;
}
