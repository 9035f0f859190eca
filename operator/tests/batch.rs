//! Batched cloud calls against the simulator's realistic batch limit (5 NICs per
//! AttachNics/DetachNics, 1100 beyond): the pool plans one round per node, and a call refused
//! for its size is split, never resent unchanged.

mod common;

use std::time::Duration;

use common::*;
use hostnic_crds::{
    HostNic, HostNicSpec, NIC_FINALIZER, NODE_LABEL, NicRole, POOL_LABEL, ROLE_LABEL, VXNET_LABEL,
};
use kube::ResourceExt;
use kube::api::PostParams;
use qingcloud_sim::{Fault, FaultKind};

const T: Duration = Duration::from_secs(60);
const NODE: &str = "i-node0001";

/// The realistic simulator's limit, and the production reconcile concurrency (32): every NIC of
/// a round waits for its call in a reconcile of its own, and the tests' 16 would cap a call at
/// 16 of the 20.
fn limited() -> Setup {
    let defaults = <hostnic_operator::args::Args as clap::Parser>::parse_from(["x"]).settings();
    let mut settings = test_settings();
    settings.concurrency = defaults.concurrency;
    Setup {
        sim: |c| c.nic_batch_limit = Some(5),
        settings,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_30_fills_with_one_attach_per_five_nics() {
    let mut env = Env::start(limited()).await;
    env.start_operator();
    env.create_pool("big", spec(&[VX_A], 30)).await;
    env.converged("big", &[NODE], 30, T).await;
    let calls = env.sim.calls();
    eprintln!(
        "fill of 30: AttachNics {}, CreateNics {}, DescribeNics {}, DescribeJobs {}",
        calls.action("AttachNics"),
        calls.action("CreateNics"),
        calls.action("DescribeNics"),
        calls.action("DescribeJobs")
    );
    assert_eq!(calls.action("AttachNics"), 6, "30 NICs, 5 per AttachNics");
    env.shutdown().await;
}

/// The NICs a pool pass adds in one vxnet, across nodes, share one CreateNics (count 12), not
/// one each; every node still gets its own, each NIC exactly one HostNic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_3_on_4_nodes_is_created_with_one_create_nics() {
    const NODES: [&str; 4] = ["i-node0001", "i-node0002", "i-node0003", "i-node0004"];
    let mut setup = limited();
    setup.nodes = NODES.iter().map(|n| (*n, VX_A)).collect();
    let mut env = Env::start(setup).await;
    env.start_operator();
    env.create_pool("wide", spec(&[VX_A], 3)).await;
    env.converged("wide", &NODES, 3, T).await;
    let calls = env.sim.calls();
    eprintln!(
        "fill of 4 x 3: CreateNics {}, AttachNics {}, DescribeNics {}, DescribeJobs {}, total {}",
        calls.action("CreateNics"),
        calls.action("AttachNics"),
        calls.action("DescribeNics"),
        calls.action("DescribeJobs"),
        calls.total
    );
    assert_eq!(
        calls.action("CreateNics"),
        1,
        "12 NICs in one vxnet, one batch"
    );
    assert_eq!(calls.action("AttachNics"), 4, "one AttachNics per node");
    env.delete_pool_until_gone("wide", T).await;
    env.assert_invariants().await;
    env.shutdown().await;
}

/// Rounds are the pool's, not a meeting of reconciles: with 6 nodes' rounds and only 2
/// reconcile slots (scaled down from 32 so nodes outnumber slots, as 500 nodes outnumber 32),
/// every node still attaches its 3 NICs in one AttachNics, and detaches and deletes them in one
/// DetachNics and one DeleteNics. A reconcile that awaited its batched call held a slot until
/// the round was complete, while the round's other members queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_outnumbering_reconcile_slots_still_make_one_call_per_node() {
    const NODES: [&str; 6] = [
        "i-node0001",
        "i-node0002",
        "i-node0003",
        "i-node0004",
        "i-node0005",
        "i-node0006",
    ];
    let mut setup = limited();
    setup.settings.concurrency = 2;
    setup.nodes = NODES.iter().map(|n| (*n, VX_A)).collect();
    let mut env = Env::start(setup).await;
    env.start_operator();
    env.create_pool("wide", spec(&[VX_A], 3)).await;
    env.converged("wide", &NODES, 3, T).await;
    let calls = env.sim.calls();
    assert_eq!(calls.action("CreateNics"), 1, "18 NICs in one vxnet");
    assert_eq!(calls.action("AttachNics"), 6, "one AttachNics per node");
    env.delete_pool_until_gone("wide", T).await;
    let calls = env.sim.calls();
    eprintln!(
        "6 x 3 on 2 slots: {} calls, DescribeNics {}, DescribeJobs {}",
        calls.total,
        calls.action("DescribeNics"),
        calls.action("DescribeJobs")
    );
    assert_eq!(calls.action("DetachNics"), 6, "one DetachNics per node");
    assert_eq!(calls.action("DeleteNics"), 6, "one DeleteNics per node");
    assert_eq!(
        calls.action("DescribeJobs"),
        0,
        "attaches and detaches complete by the agent's link reports"
    );
    env.assert_invariants().await;
    env.shutdown().await;
}

/// A batch whose CreateNics waits (for the rate budget, or a slow cloud as here: 15 s) holds
/// no reconcile slot: on 2 slots, another pool of the node fills meanwhile. When its members
/// awaited the call, the first held a slot for it and the next the other, waiting for the
/// batch's lock, so nothing else ran until the CreateNics answered (at 500 nodes this made a
/// node's members reach their attach round too far apart to meet).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_waiting_for_its_create_holds_no_reconcile_slot() {
    let mut setup = limited();
    setup.settings.concurrency = 2;
    let mut env = Env::start(setup).await;
    env.start_operator();
    env.sim.inject(
        Fault::new(FaultKind::DelayMs(15_000))
            .on("CreateNics")
            .next(1),
    );
    env.create_pool("slow", spec(&[VX_A], 4)).await;
    eventually("the slow pool's CreateNics is sent", T, || async {
        env.sim.faults().is_empty()
    })
    .await;
    env.create_pool("quick", spec(&[VX_B], 1)).await;
    // Not `converged`, which also waits for the slow pool's NICs (in the cloud at once, their
    // CreateNics answered late) to be recorded.
    eventually("the quick pool's NIC is available", T, || async {
        env.phases("quick", NODE).await.get("Available") == Some(&1)
    })
    .await;
    let slow_with_nic = env
        .all_hostnics()
        .await
        .iter()
        .filter(|h| h.spec.pool == "slow")
        .filter(|h| h.status.as_ref().is_some_and(|s| s.nic_id.is_some()))
        .count();
    assert_eq!(
        slow_with_nic, 0,
        "the other pool filled only after the slow CreateNics answered"
    );
    env.converged("slow", &[NODE], 4, T).await;
    assert_eq!(env.sim.calls().action("CreateNics"), 2, "one per pool");
    env.delete_pool("slow").await;
    env.delete_pool_until_gone("quick", T).await;
    eventually("the slow pool gone", T, || async {
        env.pool("slow").await.is_none()
    })
    .await;
    env.assert_invariants().await;
    env.shutdown().await;
}

/// A HostNic made by an older operator (no create batch) keeps its own NIC, named after its
/// uid, created and adopted as before; the pool counts it and creates nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostnic_without_a_batch_gets_a_nic_of_its_own() {
    let mut env = Env::start(limited()).await;
    let mut old = HostNic::new(
        "old-i-node0001-abcde",
        HostNicSpec {
            pool: "old".into(),
            node: NODE.into(),
            vxnet: VX_A.into(),
            role: NicRole::Pod,
        },
    );
    old.metadata.labels = Some(
        [
            (NODE_LABEL, NODE),
            (POOL_LABEL, "old"),
            (VXNET_LABEL, VX_A),
            (ROLE_LABEL, "Pod"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    old.metadata.finalizers = Some(vec![NIC_FINALIZER.to_string()]);
    let old = env
        .hostnics()
        .create(&PostParams::default(), &old)
        .await
        .expect("create HostNic");
    env.start_operator();
    env.create_pool("old", spec(&[VX_A], 1)).await;
    env.converged("old", &[NODE], 1, T).await;
    let own = format!("{PREFIX}{}", old.uid().expect("uid"));
    let cloud = env.cloud_nics();
    assert_eq!(cloud.len(), 1, "{cloud:?}");
    assert_eq!(cloud[0].1, own);
    assert_eq!(env.sim.calls().action("CreateNics"), 1);
    env.delete_pool_until_gone("old", T).await;
    env.shutdown().await;
}

/// The README's uninstall with `--max-detach-batch=20` (the Setup's batch config) against a
/// cloud that takes 5: refused twice for its size, then detached in fives, within the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_pool_of_20_survives_a_size_refusal() {
    let mut env = Env::start(limited()).await;
    assert_eq!(env.batch.max_detach, 20);
    env.start_operator();
    env.create_pool("big", spec(&[VX_A], 20)).await;
    env.converged("big", &[NODE], 20, T).await;
    env.sim.reset_calls();
    env.delete_pool_until_gone("big", T).await;
    let calls = env.sim.calls();
    eprintln!(
        "delete of 20: DetachNics {}, DeleteNics {}, DescribeNics {}, DescribeJobs {}",
        calls.action("DetachNics"),
        calls.action("DeleteNics"),
        calls.action("DescribeNics"),
        calls.action("DescribeJobs")
    );
    // 20 refused, 10 refused, then four of 5: no refused batch is sent again.
    assert_eq!(calls.action("DetachNics"), 6);
    assert!(
        calls.action("DeleteNics") <= 2,
        "{}",
        calls.action("DeleteNics")
    );
    env.assert_invariants().await;
    env.shutdown().await;
}
