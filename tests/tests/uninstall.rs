//! The README's uninstall, in its order, begun while one pod still runs (its workload not
//! deleted yet): the agents rolled with `HOSTNIC_CNI_UNINSTALL=true` keep serving DELs, the
//! pools' deletion returns every free NIC at once and waits for the running pod's, whose eth0
//! stays up, and once that pod goes the README's `kubectl wait` and `kubectl delete -k`
//! complete with no cloud NIC, no HostNic, no NicPool (no stuck finalizer) and no link left.

use std::path::PathBuf;
use std::time::Duration;

use hostnic_tests::cluster::{Cluster, ClusterConfig, phase, wait_for};
use hostnic_tests::pods::Pods;
use hostnic_tests::privilege::require_root;

const POOL: &str = "uninstall";
/// Bounds the agents' graceful stop (they exit once their requests in flight are done).
const GRACE: Duration = Duration::from_secs(30);

#[test]
fn the_readme_uninstall_begun_with_a_pod_running_leaves_nothing() {
    if !require_root("the_readme_uninstall_begun_with_a_pod_running_leaves_nothing") {
        return;
    }
    let mut cluster = Cluster::start(
        ClusterConfig {
            nodes: 2,
            ..ClusterConfig::default()
        },
        &mut |_| {},
    )
    .unwrap();
    cluster
        .fill_pool(POOL, 2, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pods = Pods::new(&cluster).unwrap();
    let running = pods.add(0, "still-running").unwrap();
    let leaving = pods.add(1, "leaving").unwrap();

    // 1. The workloads are deleted, all but one.
    pods.del(&leaving).unwrap();
    drop(leaving);
    // 2. `kubectl set env ds/hostnic-agent HOSTNIC_CNI_UNINSTALL=true`: every agent rolls.
    for node in &mut cluster.nodes {
        node.agent
            .as_mut()
            .unwrap()
            .replace_with_env(GRACE, "HOSTNIC_CNI_UNINSTALL", "true")
            .unwrap();
    }
    // 3. The pools are deleted while the operator runs: every NIC but the running pod's goes.
    cluster
        .kubectl
        .run(&["delete", "nicpools", "--all", "--wait=false"])
        .unwrap();
    wait_for("the free NICs to go", Duration::from_secs(120), || {
        Ok(cluster.hostnics()?.len() == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs(30)));
    let kept = cluster.hostnics().unwrap().remove(0);
    assert_eq!(phase(&kept), "Bound", "{kept:#}");
    assert_eq!(kept["status"]["pod"]["name"], "still-running");
    assert!(
        running
            .netns
            .addresses("eth0")
            .iter()
            .any(|a| a.starts_with(&format!("{}/", running.ip))),
        "the running pod lost its address"
    );
    assert!(
        running.netns.ping(&running.gateway, 5),
        "the running pod lost its network"
    );
    assert_eq!(
        cluster.kubectl.list("nicpools").unwrap().len(),
        1,
        "the pool went before its bound NIC"
    );

    // The pod goes: the uninstalled agent serves its DEL, and step 3's wait completes.
    pods.del(&running).unwrap();
    drop(running);
    for what in ["hostnics", "nicpools"] {
        cluster
            .kubectl
            .run(&["wait", "--for=delete", what, "--all", "--timeout=120s"])
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs(30)));
    }
    let left = cluster.leftovers().unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    // 4. Everything else (the stand-in cluster holds only the CRDs of it).
    let manifests = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests"));
    cluster
        .kubectl
        .run(&[
            "delete",
            "-k",
            &manifests.display().to_string(),
            "--ignore-not-found",
        ])
        .unwrap();
    let crds = cluster.kubectl.list("customresourcedefinitions").unwrap();
    assert!(crds.is_empty(), "CRDs left: {crds:#?}");
}
