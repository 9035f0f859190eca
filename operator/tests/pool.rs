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
