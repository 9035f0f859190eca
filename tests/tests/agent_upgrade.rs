//! A rolling update of the agents while pods run, the README's upgrade path (`kubectl rollout
//! restart ds/hostnic-agent`: node by node, SIGTERM, the grace period, a new agent), right
//! after an edit of the pool's routes, with pods being added during the rollout: every pod
//! that ran before keeps its eth0 with its address and routes, its HostNic stays Bound to it,
//! pods still reach each other across nodes, and each new agent serves new pods.

use std::collections::BTreeMap;
use std::time::Duration;

use hostnic_tests::cluster::{Cluster, ClusterConfig, phase};
use hostnic_tests::pods::{Pod, Pods};
use hostnic_tests::privilege::require_root;
use serde_json::json;

const POOL: &str = "upgrade";
/// The agent DaemonSet's terminationGracePeriodSeconds is longer; the agent exits as soon as
/// its requests in flight are done, so this only bounds a hang.
const GRACE: Duration = Duration::from_secs(30);

/// What a running pod's network looks like from inside: eth0's addresses and the routes.
fn network_of(pod: &Pod) -> (Vec<String>, String) {
    (
        pod.netns.addresses("eth0"),
        pod.netns.ip(&["route", "show"]),
    )
}

#[test]
fn a_rolling_update_of_the_agents_keeps_every_running_pods_nic() {
    if !require_root("a_rolling_update_of_the_agents_keeps_every_running_pods_nic") {
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
    let cidr = cluster.config().vxnets[0].1.clone();
    cluster
        .fill_pool(POOL, 3, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pods = Pods::new(&cluster).unwrap();
    let timeout = Duration::from_secs(60);
    let running: Vec<Pod> = (0..4)
        .map(|i| {
            pods.add_retrying(i % 2, &format!("run-{i}"), timeout)
                .unwrap()
        })
        .collect();
    let before: BTreeMap<String, _> = running
        .iter()
        .map(|p| (p.name.clone(), network_of(p)))
        .collect();

    // The pool's routes change just before the upgrade (the pods keep what they got).
    let gateway = running[0].gateway.clone();
    let patch =
        json!({"spec": {"routes": [{"destination": "192.168.251.0/24", "gateway": gateway}]}});
    cluster
        .kubectl
        .run(&[
            "patch",
            "nicpool",
            POOL,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
        .unwrap();

    let mut started = Vec::new();
    for node in 0..cluster.nodes.len() {
        let agent = cluster.nodes[node].agent.as_mut().unwrap();
        agent.replace(GRACE).unwrap();
        // The new agent serves: a new pod on its node gets a NIC (retried while it syncs, as
        // kubelet retries a sandbox), with the pool's new route.
        let pod = pods
            .add_retrying(node, &format!("new-{node}"), timeout)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs(30)));
        assert!(
            network_of(&pod).1.contains("192.168.251.0/24"),
            "a pod added after the edit lacks the new route: {}",
            network_of(&pod).1
        );
        started.push(pod);
    }

    let nics = cluster.hostnics().unwrap();
    for pod in &running {
        assert_eq!(
            network_of(pod),
            before[&pod.name],
            "{}'s network changed across the upgrade",
            pod.name
        );
        let nic = nics
            .iter()
            .find(|n| n["status"]["privateIp"] == pod.ip.as_str())
            .unwrap_or_else(|| panic!("no HostNic with {}'s address {}", pod.name, pod.ip));
        assert_eq!(phase(nic), "Bound", "{}'s HostNic: {nic}", pod.name);
        assert_eq!(nic["status"]["pod"]["name"], pod.name.as_str(), "{nic}");
    }
    // Pods still talk across nodes in the vxnet (a pod on node 0 to one on node 1).
    let (a, b) = (&running[0], &running[1]);
    assert!(
        a.netns.ping(&b.ip, 2),
        "{} ({}) cannot reach {} ({}) in {cidr} after the upgrade",
        a.name,
        a.ip,
        b.name,
        b.ip
    );

    for pod in running.iter().chain(&started) {
        pods.del(pod).unwrap();
    }
    cluster
        .delete_pools(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs(30)));
    assert_eq!(cluster.leftovers().unwrap(), Vec::<String>::new());
}
