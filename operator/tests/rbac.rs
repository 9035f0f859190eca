//! Every Kubernetes request the operator makes, from the API server's audit log over a run
//! that exercises all of it (leader election, fill, bind/release and quarantine, shrink, GC of
//! a vanished NIC, events, reclaim Delete and Retain). The set is printed for the RBAC
//! manifests and compared with the grants of manifests/operator-rbac.yaml and events-rbac.yaml.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hostnic_crds::{HostNicPhase, ReclaimPolicy};
use hostnic_operator::controller::Checkpoint;
use hostnic_operator::lease::Timing;
use hostnic_operator::run::LeaseConfig;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_requests_of_the_operator() {
    if hostnic_tests::scratch::skip_without_kube_mem("reads the API server's audit log") {
        return;
    }
    let env = Env::start(Setup::default()).await;
    for name in ["hostnic-system", "default"] {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.into());
        let _ = Api::<Namespace>::all(env.client.clone())
            .create(&PostParams::default(), &ns)
            .await;
    }
    let lease = LeaseConfig {
        namespace: "hostnic-system".into(),
        name: "hostnic-operator".into(),
        // Production's 15 s / 10 s / 2 s scaled by 1/5, for a quick first election.
        timing: Timing::new(
            Duration::from_secs(3),
            Duration::from_secs(2),
            Duration::from_millis(400),
        )
        .expect("lease timing"),
    };
    let op = env.operator(Arc::new(Checkpoint::default()), Some(lease), "op-a");
    let stop = CancellationToken::new();
    let handle = tokio::spawn(op.run(stop.clone()));

    let mut s = spec(&[VX_A], 2);
    s.quarantine_seconds = 1;
    env.create_pool("del", s).await;
    let mut s = spec(&[VX_B], 1);
    s.reclaim_policy = ReclaimPolicy::Retain;
    env.create_pool("ret", s).await;
    env.converged("del", &["i-node0001"], 2, T).await;
    env.converged("ret", &["i-node0001"], 1, T).await;

    // Quarantine: bind and release a NIC; it comes back Available.
    let name = env
        .all_hostnics()
        .await
        .into_iter()
        .find(|h| h.spec.pool == "del")
        .map(|h| h.name_any())
        .expect("nic");
    env.bind(&name).await;
    env.release(&name).await;
    eventually("quarantine over", T, || async {
        env.hostnics()
            .get(&name)
            .await
            .ok()
            .and_then(|h| h.status)
            .is_none_or(|s| s.phase != HostNicPhase::Released)
    })
    .await;
    env.converged("del", &["i-node0001"], 2, T).await;

    // A NIC vanishes behind the operator's back (GC marks its HostNic Failed, an event says so).
    let victim = env
        .all_hostnics()
        .await
        .into_iter()
        .find(|h| h.spec.pool == "del")
        .expect("nic");
    env.delete_in_cloud(&victim).await;
    env.converged("del", &["i-node0001"], 2, T).await;

    env.delete_pool("del").await;
    env.delete_pool("ret").await;
    eventually("pools gone", T, || async {
        env.pool("del").await.is_none() && env.pool("ret").await.is_none()
    })
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;

    let used: BTreeSet<String> = env
        .kube
        .as_ref()
        .expect("kube-mem")
        .audit()
        .into_iter()
        .filter(|r| r.user == OP_USER && !r.resource.is_empty())
        .map(|r| {
            let res = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "cluster".to_string()
            } else {
                format!("ns {}", r.namespace)
            };
            format!(
                "{} {} {} ({scope})",
                r.verb,
                if r.api_group.is_empty() {
                    "core"
                } else {
                    &r.api_group
                },
                res
            )
        })
        .collect();
    println!("KUBERNETES REQUESTS OF THE OPERATOR:");
    for u in &used {
        println!("  {u}");
    }
    // What manifests/operator-rbac.yaml and events-rbac.yaml grant.
    let granted: BTreeSet<&str> = [
        "list hostnic.qingcloud.com nicpools (cluster)",
        "watch hostnic.qingcloud.com nicpools (cluster)",
        "patch hostnic.qingcloud.com nicpools (cluster)",
        "patch hostnic.qingcloud.com nicpools/status (cluster)",
        "get hostnic.qingcloud.com hostnics (cluster)",
        "list hostnic.qingcloud.com hostnics (cluster)",
        "watch hostnic.qingcloud.com hostnics (cluster)",
        "create hostnic.qingcloud.com hostnics (cluster)",
        "patch hostnic.qingcloud.com hostnics (cluster)",
        "delete hostnic.qingcloud.com hostnics (cluster)",
        "update hostnic.qingcloud.com hostnics/status (cluster)",
        "list core nodes (cluster)",
        "watch core nodes (cluster)",
        "patch core nodes (cluster)",
        "create coordination.k8s.io leases (ns hostnic-system)",
        "get coordination.k8s.io leases (ns hostnic-system)",
        "update coordination.k8s.io leases (ns hostnic-system)",
        "create events.k8s.io events (ns default)",
        "patch events.k8s.io events (ns default)",
    ]
    .into_iter()
    .collect();
    let extra: Vec<&String> = used
        .iter()
        .filter(|u| !granted.contains(u.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "requests beyond the RBAC grants: {extra:?}"
    );
    let unused: Vec<&&str> = granted.iter().filter(|g| !used.contains(**g)).collect();
    println!("granted but not used in this run: {unused:?}");
    env.shutdown().await;
}
