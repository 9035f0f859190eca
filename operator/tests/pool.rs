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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reclaim_delete_waits_for_bound_nics() {
    let mut env = Env::start(Setup::default()).await;
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
            .all(|n| n.nic.status == qingcloud::wire::NicStatus::InUse)
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
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    let mut s = spec(&[VX_A], 2);
    s.quarantine_seconds = 2;
    env.create_pool("web", s).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let name = kube::ResourceExt::name_any(&env.all_hostnics().await[0]);
    env.bind(&name).await;
    // A pod holds one: the pool refills to 2 free.
    env.converged("web", &["i-node0001"], 2, T).await;
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
    // Three free NICs for a size of 2: the surplus goes (shrink delay 0 in tests).
    env.converged("web", &["i-node0001"], 2, T).await;
    env.shutdown().await;
}
