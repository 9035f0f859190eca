//! The kubelet-like path: containerd (CRI) runs the hostnic plugin from a conflist.
//! RunPodSandbox gets a NIC from the warm pool; StopPodSandbox and RemovePodSandbox DEL it (the
//! second time with an empty netns) and the NIC returns to the pool.

use std::time::Duration;

use hostnic_tests::bins::bin;
use hostnic_tests::cluster::{Cluster, ClusterConfig, phase, wait_for};
use hostnic_tests::containerd::{CniSetup, Containerd};
use hostnic_tests::privilege::require_root;

#[test]
fn containerd_sandbox_gets_a_nic_and_gives_it_back() {
    if !require_root("containerd_sandbox_gets_a_nic_and_gives_it_back") {
        return;
    }
    let cluster = Cluster::start(
        ClusterConfig {
            nodes: 1,
            ..ClusterConfig::default()
        },
        &mut |m| println!("{m}"),
    )
    .unwrap();
    cluster
        .fill_pool("ctr", 2, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e:#}"));

    // A wrapper records every call containerd makes, then runs the real plugin.
    let calls = cluster.dir.path().join("cni-calls.log");
    let wrapper = cluster.dir.path().join("hostnic-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$CNI_COMMAND netns=$CNI_NETNS\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            bin("hostnic").display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", &wrapper.display().to_string()])
        .status()
        .unwrap();
    let cni = CniSetup {
        conflist_name: "10-hostnic.conflist".into(),
        conflist: cluster.conflist(0),
        plugins: vec![("hostnic".into(), wrapper)],
    };
    let node_netns = cluster.nodes[0].netns.as_ref().unwrap();
    let mut ctr = Containerd::start(&node_netns.path(), &cni).unwrap();

    let id = ctr
        .run_pod_sandbox("default", "ctr-pod", "uid-ctr-pod")
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", ctr.log(), cluster.logs(30)));
    let sandbox = ctr.sandbox(&id).unwrap();
    let nics = cluster.hostnics().unwrap();
    let nic = nics
        .iter()
        .find(|n| n["status"]["privateIp"] == sandbox.ip.as_str())
        .unwrap_or_else(|| panic!("no HostNic has the sandbox IP {}: {nics:#?}", sandbox.ip));
    assert_eq!(phase(nic), "Bound");
    assert_eq!(nic["status"]["pod"]["name"], "ctr-pod");
    let mac = nic["status"]["nicId"].as_str().unwrap().to_owned();
    let netns_path = sandbox.netns.clone().expect("sandbox netns path");
    let netns_name = netns_path.file_name().unwrap().to_str().unwrap().to_owned();
    let links = TestNetnsView(netns_name.clone()).links();
    assert!(
        links
            .iter()
            .any(|(name, m)| name == "eth0" && m.eq_ignore_ascii_case(&mac)),
        "sandbox netns {netns_name} has no eth0 with {mac}: {links:?}"
    );

    ctr.stop_pod_sandbox(&id).unwrap();
    ctr.remove_pod_sandbox(&id).unwrap();
    let log = std::fs::read_to_string(&calls).unwrap();
    let dels: Vec<&str> = log.lines().filter(|l| l.starts_with("DEL")).collect();
    assert!(dels.len() >= 2, "expected two DELs, got {log}");
    assert_eq!(
        *dels.last().unwrap(),
        "DEL netns=",
        "the last DEL has an empty netns: {log}"
    );
    wait_for(
        "the NIC to be back in the pool",
        Duration::from_secs(30),
        || {
            let nics = cluster.hostnics()?;
            Ok(nics
                .iter()
                .any(|n| n["status"]["nicId"] == mac.as_str() && phase(n) == "Available"))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs(30)));
    drop(ctr);
    cluster.delete_pools(Duration::from_secs(60)).unwrap();
    assert_eq!(cluster.leftovers().unwrap(), Vec::<String>::new());
}

/// Links of a netns the runtime made (read only: containerd owns and deletes it).
struct TestNetnsView(String);

impl TestNetnsView {
    fn links(&self) -> Vec<(String, String)> {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.0, "-j", "link", "show"])
            .output()
            .unwrap();
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.iter()
            .map(|l| {
                (
                    l["ifname"].as_str().unwrap_or("").to_owned(),
                    l["address"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}
