//! NicPool behaviour end to end: kube-mem + the QingCloud simulator over HTTP.

mod common;

use std::time::Duration;

use common::*;
use hostnic_crds::HostNicPhase;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_up_and_down() {
    let mut env = Env::start(Setup {
        nodes: vec![("i-node0001", VX_A), ("i-node0002", VX_A)],
        ..Default::default()
    })
    .await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 3)).await;
    env.converged("web", &["i-node0001", "i-node0002"], 3, T)
        .await;

    env.patch_pool("web", serde_json::json!({"size": 5})).await;
    env.converged("web", &["i-node0001", "i-node0002"], 5, T)
        .await;

    // `kubectl scale nicpool web --replicas=1` goes through the scale subresource.
    let scale = serde_json::json!({"spec": {"replicas": 1}});
    env.pools()
        .patch_scale(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&scale),
        )
        .await
        .expect("scale");
    env.converged("web", &["i-node0001", "i-node0002"], 1, T)
        .await;

    // A bound NIC is never taken away by a shrink.
    let free: Vec<String> = env
        .all_hostnics()
        .await
        .into_iter()
        .filter(|h| h.spec.node == "i-node0001")
        .map(|h| kube::ResourceExt::name_any(&h))
        .collect();
    env.bind(&free[0]).await;
    env.patch_pool("web", serde_json::json!({"size": 0})).await;
    env.converged("web", &["i-node0001", "i-node0002"], 0, T)
        .await;
    assert_eq!(env.count("web", "i-node0001", HostNicPhase::Bound).await, 1);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_share_a_node() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("a", spec(&[VX_A], 2)).await;
    env.create_pool("b", spec(&[VX_B], 3)).await;
    env.converged("a", &["i-node0001"], 2, T).await;
    env.converged("b", &["i-node0001"], 3, T).await;
    for h in env.all_hostnics().await {
        let want = if h.spec.pool == "a" { VX_A } else { VX_B };
        assert_eq!(h.spec.vxnet, want);
    }
    env.delete_pool("a").await;
    eventually("pool a gone", T, || async { env.pool("a").await.is_none() }).await;
    env.converged("b", &["i-node0001"], 3, T).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_added_cordoned_and_deleted() {
    let mut env = Env::start(Setup {
        nodes: vec![("i-node0001", VX_A), ("i-node0002", VX_A)],
        ..Default::default()
    })
    .await;
    // Only i-node0001 exists in Kubernetes at first.
    env.nodes()
        .delete("i-node0002", &Default::default())
        .await
        .expect("delete");
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;

    add_node(&env.client, "i-node0002").await;
    env.converged("web", &["i-node0001", "i-node0002"], 2, T)
        .await;

    // Cordoned: not grown.
    let cordon = serde_json::json!({"spec": {"unschedulable": true}});
    env.nodes()
        .patch(
            "i-node0002",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&cordon),
        )
        .await
        .expect("cordon");
    env.patch_pool("web", serde_json::json!({"size": 4})).await;
    eventually("node 1 grows, node 2 does not", T, || async {
        let p = env.phases("web", "i-node0001").await;
        p.get("Available") == Some(&4) && p.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.count("web", "i-node0002", HostNicPhase::Available)
            .await,
        2
    );
    let pool = env.pool("web").await.expect("pool");
    let status = pool.status.expect("status");
    assert_eq!(status.warm_per_node, 2);

    // Deleted: its HostNics and cloud NICs go, bound ones included.
    let on2: Vec<String> = env
        .all_hostnics()
        .await
        .into_iter()
        .filter(|h| h.spec.node == "i-node0002")
        .map(|h| kube::ResourceExt::name_any(&h))
        .collect();
    env.bind(&on2[0]).await;
    env.nodes()
        .delete("i-node0002", &Default::default())
        .await
        .expect("delete");
    eventually("node 2 NICs removed", T, || async {
        env.all_hostnics()
            .await
            .iter()
            .all(|h| h.spec.node != "i-node0002")
    })
    .await;
    env.converged("web", &["i-node0001"], 4, T).await;
    assert_eq!(
        env.pool("web")
            .await
            .and_then(|p| p.status)
            .map(|s| s.nodes),
        Some(1)
    );
    let attached: usize = env
        .sim
        .instances()
        .into_iter()
        .filter(|i| i.instance.instance_id == "i-node0002")
        .map(|i| i.instance.vxnets.len())
        .sum();
    assert_eq!(
        attached, 1,
        "only the primary NIC is left on the deleted node's VM"
    );
    env.shutdown().await;
}

/// A deleted pool deletes its free NICs at once and waits for its bound one. Meanwhile it polls
/// the operator's stores, not the API server: no LIST of HostNics or Nodes and no GET of a
/// Node while it waits (each poll of the old cleanup LISTed both).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reclaim_delete_waits_for_bound_nics_reading_no_list() {
    let mut setup = Setup::default();
    // GC lists HostNics itself, every 30 minutes in production: kept out of the window.
    setup.settings.gc_interval = Duration::from_secs(3600);
    let mut env = Env::start(setup).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 3)).await;
    env.converged("web", &["i-node0001"], 3, T).await;
    let first = kube::ResourceExt::name_any(&env.all_hostnics().await[0]);
    env.bind(&first).await;
    env.delete_pool("web").await;
    eventually("free NICs deleted", T, || async {
        env.all_hostnics().await.len() == 1 && env.cloud_nics().len() == 1
    })
    .await;
    env.clear_audit();
    // Several of the cleanup's 2 s polls.
    tokio::time::sleep(Duration::from_secs(5)).await;
    if let Some(reads) = env.operator_requests(|r| {
        (r.verb == "list" && matches!(r.resource.as_str(), "nodes" | "hostnics"))
            || (r.verb == "get" && r.resource == "nodes")
    }) {
        assert!(reads.is_empty(), "{reads:?}");
    }
    assert!(
        env.pool("web").await.is_some(),
        "the pool waits for its bound NIC"
    );
    env.release(&first).await;
    eventually("pool and NICs gone", T, || async {
        env.pool("web").await.is_none() && env.cloud_nics().is_empty()
    })
    .await;
    env.assert_invariants().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reclaim_retain_keeps_cloud_nics() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    let mut s = spec(&[VX_A], 3);
    s.reclaim_policy = hostnic_crds::ReclaimPolicy::Retain;
    env.create_pool("web", s).await;
    env.converged("web", &["i-node0001"], 3, T).await;
    let before: Vec<String> = env.cloud_nics().into_iter().map(|(id, _)| id).collect();
    env.delete_pool("web").await;
    eventually("pool and HostNics gone", T, || async {
        env.pool("web").await.is_none() && env.all_hostnics().await.is_empty()
    })
    .await;
    // Give GC a few passes: retained NICs are renamed out of its reach.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept: Vec<_> = env
        .sim
        .nics()
        .into_iter()
        .filter(|n| before.contains(&n.nic.nic_id))
        .collect();
    assert_eq!(kept.len(), 3, "retained NICs still exist");
    assert!(
        kept.iter()
            .all(|n| n.nic.status == qingcloud_sim::wire::NicStatus::InUse)
    );
    assert!(kept.iter().all(|n| n.nic.nic_name.starts_with("retained-")));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_vxnet_degrades_without_a_hot_loop() {
    // A /29 has 5 usable addresses beyond the gateway; the node's primary NIC takes one.
    let mut env = Env::start(Setup {
        vxnets: vec![(VX_A, "10.10.0.0/24"), (VX_B, "10.20.0.0/29")],
        ..Default::default()
    })
    .await;
    env.start_operator();
    env.create_pool("tiny", spec(&[VX_B], 10)).await;
    eventually("degraded: vxnet exhausted", T, || async {
        env.pool("tiny")
            .await
            .and_then(|p| p.status)
            .is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == "VxnetExhausted"
                })
            })
    })
    .await;
    eventually("what fits is available", T, || async {
        let p = env.phases("tiny", "i-node0001").await;
        p.get("Available").copied().unwrap_or(0) >= 4 && p.keys().all(|k| k == "Available")
    })
    .await;
    let creates = env.sim.calls().action("CreateNics");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let more = env.sim.calls().action("CreateNics") - creates;
    assert!(
        more <= 1,
        "{more} CreateNics calls in 3 s against an exhausted vxnet"
    );
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::all(env.client.clone())
        .list(&Default::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("VxnetExhausted")),
        "an event says why"
    );
    env.assert_invariants().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_specs_change_nothing() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    let mut s = spec(&[VX_A], 10);
    s.max_per_node = 5;
    env.create_pool("big", s).await;
    env.create_pool("ghost", spec(&["vxnet-zzzzzzz"], 1)).await;
    for name in ["big", "ghost"] {
        eventually(&format!("{name} InvalidSpec"), T, || async {
            env.pool(name)
                .await
                .and_then(|p| p.status)
                .is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Degraded" && c.status == "True" && c.reason == "InvalidSpec"
                    })
                })
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.all_hostnics().await.is_empty());
    assert_eq!(env.sim.calls().action("CreateNics"), 0);
    // Fixing the spec converges.
    env.patch_pool("big", serde_json::json!({"size": 2})).await;
    env.converged("big", &["i-node0001"], 2, T).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_reuse_the_primary_or_get_their_own_nic() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    let mut s = spec(&[VX_A, VX_B], 1);
    s.routes = vec![hostnic_crds::Route {
        destination: "10.96.0.0/12".into(),
        gateway: "0.0.0.0".into(),
    }];
    env.create_pool("gw", s).await;
    eventually("gateways published for both vxnets", T, || async {
        env.pool("gw")
            .await
            .and_then(|p| p.status)
            .is_some_and(|s| s.node_status.first().is_some_and(|n| n.gateways.len() == 2))
    })
    .await;
    let status = env.pool("gw").await.and_then(|p| p.status).expect("status");
    let gws = &status.node_status[0].gateways;
    let primary = env
        .sim
        .nics()
        .into_iter()
        .find(|n| n.nic.role == Some(1))
        .expect("primary");
    let a = gws.iter().find(|g| g.vxnet == VX_A).expect("gateway in a");
    assert_eq!(
        a.nic_id, primary.nic.nic_id,
        "the primary NIC serves vxnet a"
    );
    assert!(a.hostnic.is_none());
    let b = gws.iter().find(|g| g.vxnet == VX_B).expect("gateway in b");
    let hn = env
        .hostnics()
        .get(b.hostnic.as_deref().expect("own gateway NIC"))
        .await
        .expect("get");
    assert_eq!(hn.spec.role, hostnic_crds::NicRole::Gateway);
    assert_eq!(
        hn.status.and_then(|s| s.nic_id).as_deref(),
        Some(b.nic_id.as_str())
    );
    env.converged("gw", &["i-node0001"], 1, T).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn released_nics_rest_in_quarantine() {
    // The default shrink delay in proportion to the quarantine (120 s scaled to 2 s): the
    // NIC that comes back is kept for the next pod, not shrunk away.
    let defaults = <hostnic_operator::args::Args as clap::Parser>::parse_from(["x"]).settings();
    let mut settings = test_settings();
    settings.shrink_delay = defaults.shrink_delay / 60;
    let mut env = Env::start(Setup {
        settings,
        ..Default::default()
    })
    .await;
    env.start_operator();
    let mut s = spec(&[VX_A], 2);
    s.quarantine_seconds = 2;
    env.create_pool("web", s).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let name = kube::ResourceExt::name_any(&env.all_hostnics().await[0]);
    env.bind(&name).await;
    // A pod holds one: the pool refills to 2 free.
    env.converged("web", &["i-node0001"], 2, T).await;
    let creates = env.sim.calls().action("CreateNics");
    env.clear_audit();
    env.release(&name).await;
    let released = std::time::Instant::now();
    eventually("back to Available", T, || async {
        env.hostnics()
            .get(&name)
            .await
            .ok()
            .and_then(|h| h.status)
            .is_some_and(|s| {
                s.phase == HostNicPhase::Available && s.pod.is_none() && s.released_at.is_none()
            })
    })
    .await;
    assert!(
        released.elapsed() >= Duration::from_millis(1900),
        "left quarantine after {:?}",
        released.elapsed()
    );
    // Each reconcile of the resting NIC read its pool's quarantine from the pool store.
    if let Some(gets) = env.operator_requests(|r| r.verb == "get" && r.resource == "nicpools") {
        assert!(gets.is_empty(), "{gets:?}");
    }
    // Resting, it counted as supply: nothing was created for it, and back it is kept for the
    // next pod (three free for a size of 2 until the shrink delay).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.sim.calls().action("CreateNics"), creates);
    assert_eq!(env.sim.calls().action("DeleteNics"), 0);
    assert_eq!(
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await,
        3
    );
    env.assert_invariants().await;
    env.shutdown().await;
}

/// The names of the pool's HostNics, sorted.
async fn names(env: &Env) -> Vec<String> {
    let mut n: Vec<String> = env
        .all_hostnics()
        .await
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    n.sort();
    n
}

/// A pod ends while its netns cannot be read: the agent writes the release but has not seen
/// the link come home, and the pool shrinks meanwhile. The NIC rests past its quarantine and is
/// neither made Available nor detached until the agent reports its link on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shrink_never_detaches_a_nic_whose_link_is_not_proven_home() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    let mut s = spec(&[VX_A], 2);
    // 1 s so the test waits past it in seconds (120 s in production).
    s.quarantine_seconds = 1;
    env.create_pool("web", s).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let held = names(&env).await[0].clone();
    env.bind(&held).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    env.release_unproven(&held).await;
    env.patch_pool("web", serde_json::json!({"size": 0})).await;
    eventually("the NICs proven free are gone", T, || async {
        names(&env).await == [held.clone()] && env.cloud_nics().len() == 1
    })
    .await;
    // Well past the quarantine (1 s, plus its second of rounding).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = env.hostnics().get_opt(&held).await.expect("get");
    assert_eq!(
        h.and_then(|h| h.status).map(|s| s.phase),
        Some(HostNicPhase::Released),
        "left quarantine with its link unaccounted for"
    );
    assert!(env.attached_in_cloud(&held).await, "detached from its pod");

    env.report_link_home(&held).await;
    eventually("the proven NIC goes too", T, || async {
        env.all_hostnics().await.is_empty() && env.cloud_nics().is_empty()
    })
    .await;
    env.shutdown().await;
}

/// The claim lands after the shrink's delete (the agent's view had the NIC Available), and the
/// release is written before the link is home: the cleanup waits for the pod, then for the
/// agent's proof, and only then detaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cleanup_racing_a_claim_and_a_release_waits_for_the_link() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let victim = names(&env).await[0].clone();
    // The operator is away, so the order is the race's: delete (as a shrink does), claim.
    env.stop_operator().await;
    env.hostnics()
        .delete(&victim, &kube::api::DeleteParams::default())
        .await
        .expect("delete");
    env.bind(&victim).await;
    env.start_operator();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        env.attached_in_cloud(&victim).await,
        "detached from its pod"
    );

    env.release_unproven(&victim).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        env.attached_in_cloud(&victim).await,
        "detached before the link was home"
    );
    assert!(
        env.hostnics()
            .get_opt(&victim)
            .await
            .expect("get")
            .is_some()
    );

    env.report_link_home(&victim).await;
    eventually("the NIC goes once proven home", T, || async {
        env.hostnics()
            .get_opt(&victim)
            .await
            .expect("get")
            .is_none()
    })
    .await;
    env.converged("web", &["i-node0001"], 2, T).await;
    env.assert_invariants().await;
    env.shutdown().await;
}

/// Cloud calls that change NICs so far.
fn nic_churn(env: &Env) -> [u64; 4] {
    let c = env.sim.calls();
    ["CreateNics", "AttachNics", "DetachNics", "DeleteNics"].map(|a| c.action(a))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_churn_is_not_nic_churn() {
    // Production defaults (quarantine 120 s, the operator's shrink delay) scaled by 1/60 so
    // the test takes seconds: quarantine 2 s and the shrink delay in the same proportion.
    const SCALE: u32 = 60;
    let defaults = <hostnic_operator::args::Args as clap::Parser>::parse_from(["x"]).settings();
    let mut settings = test_settings();
    settings.shrink_delay = defaults.shrink_delay / SCALE;
    let mut env = Env::start(Setup {
        settings,
        ..Default::default()
    })
    .await;
    env.start_operator();
    let mut s = spec(&[VX_A], 2);
    s.quarantine_seconds = hostnic_crds::nicpool::DEFAULT_QUARANTINE_SECONDS / SCALE;
    env.create_pool("web", s).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let names: Vec<String> = env
        .all_hostnics()
        .await
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    // The first pod takes a NIC: the pool refills (that is what a warm pool is for).
    env.bind(&names[0]).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let before = nic_churn(&env);

    // The pod restarts: its NIC goes to quarantine, the new pod takes a free one.
    env.release(&names[0]).await;
    let free = env
        .all_hostnics()
        .await
        .into_iter()
        .map(|h| kube::ResourceExt::name_any(&h))
        .find(|n| n != &names[0])
        .expect("a free NIC");
    env.bind(&free).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        nic_churn(&env),
        before,
        "a restart cost NIC calls (create, attach, detach, delete)"
    );
    // The resting NIC comes back and is what the node keeps free, with the untouched one.
    eventually("the released NIC is back", T, || async {
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await
            == 2
    })
    .await;
    // That pod ends too, with nobody taking its place: one NIC more than the size rests,
    // comes back, and stays for the next pod well past its quarantine.
    env.release(&free).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await,
        3
    );
    assert_eq!(nic_churn(&env), before, "releasing cost NIC calls");
    env.assert_invariants().await;
    env.shutdown().await;
}

/// Test settings with no periodic pass (GC, resyncs) inside a test: a pass is then woken by a
/// trigger, or not at all.
fn without_periodic_passes() -> hostnic_operator::args::Settings {
    let mut settings = test_settings();
    settings.gc_interval = Duration::from_secs(3600);
    settings.resync = Duration::from_secs(3600);
    settings
}

/// A Node's status as a kubelet keeps it (about 15 KB), at heartbeat `beat`: the heartbeat,
/// the allocatable memory and the newest image change with it, nothing a pool uses.
fn kubelet_status(beat: u32) -> serde_json::Value {
    let now = jiff::Timestamp::now().to_string();
    let mut s = hostnic_tests::kubelet_status::node_status("2026-01-01T00:00:00Z", &now);
    s["status"]["allocatable"]["memory"] = format!("{}Ki", 7_000_000 + beat).into();
    s["status"]["images"][0]["names"][1] = format!("registry.example/app:v{beat}").into();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_heartbeats_cause_no_cloud_calls() {
    // No periodic passes during the observation; the fact cache is kept shorter than the test
    // (1 s), so any pool pass a heartbeat triggered would describe the instance and vxnet
    // again.
    let mut settings = without_periodic_passes();
    settings.cloud_cache = Duration::from_secs(1);
    let mut env = Env::start(Setup {
        settings,
        ..Default::default()
    })
    .await;
    let nodes = env.nodes();
    let ps = kube::api::PatchParams::default();
    let labels = serde_json::json!({"metadata": {"labels": {"kubernetes.io/hostname": "i-node0001"}}, "spec": {"providerID": "qingcloud://i-node0001"}});
    nodes
        .patch("i-node0001", &ps, &kube::api::Patch::Merge(&labels))
        .await
        .expect("label node");
    nodes
        .patch_status(
            "i-node0001",
            &ps,
            &kube::api::Patch::Merge(&kubelet_status(0)),
        )
        .await
        .expect("node status");
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = env.sim.calls().total;
    for beat in 1..=40 {
        nodes
            .patch_status(
                "i-node0001",
                &ps,
                &kube::api::Patch::Merge(&kubelet_status(beat)),
            )
            .await
            .expect("heartbeat");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = env.sim.calls();
    assert_eq!(
        calls.total - before,
        0,
        "40 heartbeats cost cloud calls: {:?}",
        calls.by_action
    );
    // Changes a pool does use still wake it: nodes_added_cordoned_and_deleted.
    env.shutdown().await;
}

/// An operator with no periodic pass (GC, resyncs), and pool "web" of 2 converged on
/// i-node0001: a pass after this was woken by a trigger (or starved of one).
async fn quiet_pool() -> Env {
    let mut env = Env::start(Setup {
        settings: without_periodic_passes(),
        ..Default::default()
    })
    .await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    env
}

/// The pool's own status writes do not wake its reconcile. The status writer publishes the
/// counts a fraction of a second after every claim; each write woke the pool and restarted
/// its debounce, so every refill began a status round trip late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_writes_do_not_wake_the_pool() {
    let env = quiet_pool().await;
    let labels = hostnic_operator::metrics::ControllerLabels {
        controller: hostnic_operator::controller::nicpool::NAME,
    };
    let reconciles = || env.metrics.reconciles.get_or_create(&labels).get();
    // Quiet: no pool pass for a second (well over the pool's 200 ms debounce).
    let mut seen = reconciles();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = reconciles();
        if now == seen {
            break;
        }
        seen = now;
    }
    // A status-only change, as the status writer makes (it then writes the true counts back).
    let stale = serde_json::json!({"status": {"available": 0, "bound": 7}});
    env.pools()
        .patch_status(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&stale),
        )
        .await
        .expect("status");
    eventually("the status writer's counts back", T, || async {
        env.pool("web")
            .await
            .and_then(|p| p.status)
            .is_some_and(|s| s.available == 2 && s.bound == 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reconciles(), seen, "status writes woke the pool");
    // Its spec still does.
    env.patch_pool("web", serde_json::json!({"size": 3})).await;
    env.converged("web", &["i-node0001"], 3, T).await;
    assert!(reconciles() > seen);
    env.shutdown().await;
}

/// A pool refills while its HostNics keep changing. Every change of one wakes the pool, and
/// kube-runtime's debounce restarts on each: in a busy cluster (pods starting somewhere every
/// fraction of a second) a pool's refills waited for a lull that need not come.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_refills_while_its_hostnics_keep_changing() {
    let env = quiet_pool().await;
    let names = env.names("web").await;
    let (busy, claimed) = (names[0].clone(), names[1].clone());
    // One HostNic changes every 50 ms, as a busy cluster's HostNics do (claims, releases,
    // link reports), for as long as the test runs.
    let api = env.hostnics();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let note =
                    serde_json::json!({"metadata": {"annotations": {"test/churn": i.to_string()}}});
                api.patch(
                    &busy,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&note),
                )
                .await
                .expect("churn");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    env.bind(&claimed).await;
    eventually("the pool refilled under churn", T, || async {
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await
            == 2
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.await.expect("churn task");
    env.assert_invariants().await;
    env.shutdown().await;
}

/// An ADD that waits wakes the pool: the agent's waiting annotation on it is a trigger. The
/// node's only other NIC rests in quarantine (supply while no pod waits), so without the
/// annotation the pool has nothing to do, and with it, it must create a NIC at once: a
/// quarantine lasts minutes, an ADD waits seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_add_wakes_the_pool() {
    // No periodic pass would find the annotation for it.
    let mut env = Env::start(Setup {
        settings: without_periodic_passes(),
        ..Default::default()
    })
    .await;
    env.start_operator();
    // The production quarantine (120 s): far longer than the test.
    let mut s = spec(&[VX_A], 1);
    s.quarantine_seconds = hostnic_crds::nicpool::DEFAULT_QUARANTINE_SECONDS;
    env.create_pool("web", s).await;
    env.converged("web", &["i-node0001"], 1, T).await;
    let first = kube::ResourceExt::name_any(&env.all_hostnics().await[0]);
    env.bind(&first).await;
    env.converged("web", &["i-node0001"], 1, T).await;
    // The pod ends: its NIC rests, and counts as the node's free one.
    env.release(&first).await;
    let second = env
        .all_hostnics()
        .await
        .into_iter()
        .map(|h| kube::ResourceExt::name_any(&h))
        .find(|n| n != &first)
        .expect("the refill");
    env.bind(&second).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.all_hostnics().await.len(), 2, "a resting NIC is supply");
    // A new pod's ADD finds no free NIC and waits, as the agent says on the pool.
    let waiting = serde_json::json!({"metadata": {"annotations": {
        hostnic_crds::waiting_annotation("i-node0001"): jiff::Timestamp::now().to_string()
    }}});
    env.pools()
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&waiting),
        )
        .await
        .expect("waiting annotation");
    eventually("a NIC for the waiting ADD", T, || async {
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await
            == 1
    })
    .await;
    env.assert_invariants().await;
    env.shutdown().await;
}

/// A claim after which no more claims can join the node's refill round passes the pool at
/// once instead of waiting for the claims to pause: one that takes the node's last free NIC
/// (no claim can land there before the refill does), or one that leaves a whole attach batch
/// (5) missing, which that early pass creates. A claim that leaves free NICs and less than a
/// batch missing is gathered. The pools' window is stretched from 200 ms quiet / 1 s at most
/// to a minute, so that "gathered" and "at once" differ by far more than the test's
/// scheduling noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_that_nothing_can_join_refills_at_once() {
    let mut settings = without_periodic_passes();
    let minute = Duration::from_secs(60);
    settings.pool_triggers = hostnic_operator::controller::coalesce::Window {
        quiet: minute,
        max: minute,
    };
    let mut env = Env::start(Setup {
        settings,
        ..Default::default()
    })
    .await;
    env.start_operator();
    env.create_pool("last", spec(&[VX_A], 2)).await;
    env.create_pool("batch", spec(&[VX_A], 6)).await;
    env.converged("last", &["i-node0001"], 2, T).await;
    env.converged("batch", &["i-node0001"], 6, T).await;
    let node = "i-node0001";
    let phases = |available: u32, bound: u32| {
        [
            ("Available".to_string(), available),
            ("Bound".to_string(), bound),
        ]
        .into()
    };

    let last = env.names("last").await;
    env.bind(&last[0]).await;
    let batch = env.names("batch").await;
    for name in &batch[..4] {
        env.bind(name).await;
    }
    // A free NIC left on both, and less than a batch missing: gathered, for the minute.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.phases("last", node).await,
        phases(1, 1),
        "refilled at once"
    );
    assert_eq!(
        env.phases("batch", node).await,
        phases(2, 4),
        "refilled at once"
    );

    env.bind(&last[1]).await;
    eventually("the last free NIC replaced at once", T, || async {
        env.count("last", node, HostNicPhase::Available).await == 2
    })
    .await;
    env.bind(&batch[4]).await;
    eventually("a whole batch refilled at once", T, || async {
        env.count("batch", node, HostNicPhase::Available).await == 6
    })
    .await;
    env.assert_invariants().await;
    env.shutdown().await;
}

/// Node and pool names of any legal length: a Node named like a long cloud hostname (240
/// bytes) and a NicPool named with 205 bytes still give valid labels (shortened with a hash)
/// and HostNic names (the random suffix kept), the pool fills, and deleting it finds its
/// HostNics by the same label and returns every NIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_node_and_pool_names_fill_and_clean_up() {
    let mut env = Env::start(Setup::default()).await;
    let node = (0..12)
        .map(|i| format!("segment{i:02}-abcdefghij"))
        .collect::<Vec<_>>()
        .join(".");
    let pool = format!("{}-pool", "p".repeat(200));
    let nodes = env.nodes();
    nodes
        .delete("i-node0001", &Default::default())
        .await
        .expect("delete the short-named node");
    let long: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": node, "labels": {hostnic_tests::scratch::NODE_LABEL: "true"}},
        "spec": {"providerID": "qingcloud://i-node0001"},
    }))
    .expect("node");
    nodes
        .create(&Default::default(), &long)
        .await
        .expect("create the long-named node");
    env.start_operator();
    env.create_pool(&pool, spec(&[VX_A], 2)).await;
    env.converged(&pool, &[&node], 2, T).await;
    for h in env.all_hostnics().await {
        let name = kube::ResourceExt::name_any(&h);
        assert!(name.len() <= 253, "{name}");
        for (k, v) in kube::ResourceExt::labels(&h) {
            assert!(v.len() <= 63, "label {k}={v}");
        }
    }
    env.delete_pool(&pool).await;
    eventually("every HostNic and cloud NIC gone", T, || async {
        env.all_hostnics().await.is_empty() && env.cloud_nics().is_empty()
    })
    .await;
    env.shutdown().await;
}

/// A converged pool's resyncs describe no VM and list no Node or HostNic: nothing they decide
/// needs a VM (500 idle nodes cost 5 DescribeInstances pages every cache period), and passes
/// read the reflectors (a LIST of 500 Nodes of tens of KB, and of every HostNic, per pass
/// before). A resize that grows reads the VM again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_converged_pool_resyncs_without_describes_or_lists() {
    let mut setup = Setup::default();
    // GC lists HostNics itself, every 30 minutes in production: kept out of the window.
    setup.settings.gc_interval = Duration::from_secs(3600);
    let mut env = Env::start(setup).await;
    env.start_operator();
    env.create_pool("idle", spec(&[VX_A], 2)).await;
    env.converged("idle", &["i-node0001"], 2, T).await;
    env.sim.reset_calls();
    env.clear_audit();
    // Two resyncs (5 s in the tests' settings), each past the cloud cache (1 s).
    let resync = env.setup_settings.resync;
    tokio::time::sleep(resync * 2 + Duration::from_secs(1)).await;
    assert_eq!(env.sim.calls().action("DescribeInstances"), 0);
    if let Some(lists) = env.operator_requests(|r| {
        r.verb == "list" && matches!(r.resource.as_str(), "nodes" | "hostnics")
    }) {
        assert!(lists.is_empty(), "{lists:?}");
    }
    env.patch_pool("idle", serde_json::json!({ "size": 3 }))
        .await;
    env.converged("idle", &["i-node0001"], 3, T).await;
    assert!(env.sim.calls().action("DescribeInstances") >= 1);
    env.delete_pool_until_gone("idle", T).await;
    env.shutdown().await;
}

/// Passes read the HostNic store, which lags their own creates by the watch: with watch
/// events 1.5 s late and a pass every 0.3 s, the passes before the store shows the first
/// pass's HostNics still see them (laid over the store), so the pool creates its 3 NICs
/// once, not once per pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_ahead_of_the_watch_create_nothing_twice() {
    if hostnic_tests::scratch::skip_without_kube_mem("delays watch events and audits the creates") {
        return;
    }
    let mut setup = Setup::default();
    // Scaled from 300 s so that several passes fall within one watch delay.
    setup.settings.resync = Duration::from_millis(300);
    let mut env = Env::start(setup).await;
    env.kube
        .as_ref()
        .expect("kube-mem")
        .set_realism(kube_mem::Realism {
            write_latency: Duration::from_millis(5),
            watch_delay: Duration::from_millis(1500),
        });
    env.start_operator();
    env.clear_audit();
    env.create_pool("lag", spec(&[VX_A], 3)).await;
    env.converged("lag", &["i-node0001"], 3, Duration::from_secs(60))
        .await;
    let creates = env
        .operator_requests(|r| r.verb == "create" && r.resource == "hostnics")
        .map(|c| c.len());
    assert_eq!(creates, Some(3), "one HostNic per NIC of the pool");
    assert_eq!(env.sim.calls().action("CreateNics"), 1);
    env.kube
        .as_ref()
        .expect("kube-mem")
        .set_realism(kube_mem::Realism::default());
    env.delete_pool_until_gone("lag", T).await;
    env.shutdown().await;
}

/// Every HostNic names its pool as controller (uid included), and one whose reference is gone
/// (made by an operator before pools owned their HostNics) is adopted by the next pool pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostnics_are_owned_by_their_pool_and_adopted_when_not() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("p", spec(&[VX_A], 2)).await;
    env.converged("p", &["i-node0001"], 2, T).await;
    let pool = env.pool("p").await.expect("pool");
    let uid = pool.metadata.uid.clone().expect("uid");
    let owned = |h: &hostnic_crds::HostNic| {
        let refs = kube::ResourceExt::owner_references(h);
        refs.len() == 1
            && refs[0].kind == "NicPool"
            && refs[0].name == "p"
            && refs[0].uid == uid
            && refs[0].controller == Some(true)
    };
    let nics = env.all_hostnics().await;
    assert!(
        nics.iter().all(owned),
        "{:?}",
        nics.iter()
            .map(|h| &h.metadata.owner_references)
            .collect::<Vec<_>>()
    );

    let orphan = kube::ResourceExt::name_any(&nics[0]);
    let strip = serde_json::json!({"metadata": {"ownerReferences": null}});
    env.hostnics()
        .patch(
            &orphan,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&strip),
        )
        .await
        .expect("strip the owner");
    eventually("the orphan adopted", T, || async {
        env.hostnics().get(&orphan).await.is_ok_and(|h| owned(&h))
    })
    .await;
    env.shutdown().await;
}

/// The pool status is written by server-side apply under the operator's field manager, so
/// fields it stops sending go (a merge patch kept whatever it omitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_status_is_applied_by_the_operators_field_manager() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("p", spec(&[VX_A], 1)).await;
    env.converged("p", &["i-node0001"], 1, T).await;
    let pool = env.pool("p").await.expect("pool");
    let status_managers: Vec<(String, String)> = pool
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        status_managers,
        vec![("hostnic-operator".to_string(), "Apply".to_string())]
    );
    env.shutdown().await;
}
