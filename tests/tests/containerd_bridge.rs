//! The containerd fixture itself, with Debian's bridge plugin: proves the kubelet-like path
//! (RunPodSandbox runs CNI ADD in a sandbox netns; Stop and Remove DEL it) works on this
//! machine before hostnic is put through it.

use hostnic_tests::containerd::{CniSetup, Containerd};
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;

#[test]
fn containerd_runs_a_sandbox_through_the_bridge_plugin() {
    if !require_root("containerd_runs_a_sandbox_through_the_bridge_plugin") {
        return;
    }
    let node = TestNetns::new("ctrnode");
    let ipam_dir = tempfile::tempdir().unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "bridge-test",
        "plugins": [{
            "type": "bridge",
            "bridge": "hnbr0",
            "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": ipam_dir.path()},
        }],
    });
    let cni = CniSetup {
        conflist_name: "10-bridge.conflist".into(),
        conflist: conflist.to_string(),
        plugins: ["bridge", "host-local"]
            .iter()
            .map(|p| (p.to_string(), format!("/usr/lib/cni/{p}").into()))
            .collect(),
    };
    let mut ctr = Containerd::start(&node.path(), &cni).unwrap();
    let id = ctr
        .run_pod_sandbox("default", "bridge-pod", "uid-1")
        .unwrap_or_else(|e| {
            panic!("{e:#}\n{}", ctr.log());
        });
    let sandbox = ctr.sandbox(&id).unwrap();
    assert!(sandbox.ip.starts_with("10.77.0."), "sandbox ip {sandbox:?}");
    // The bridge lives in the node netns, not the host's: containerd runs there.
    assert!(node.links().iter().any(|l| l.name == "hnbr0"));
    assert!(node.ping(&sandbox.ip, 2), "node reaches the sandbox");
    ctr.stop_pod_sandbox(&id).unwrap();
    ctr.remove_pod_sandbox(&id).unwrap();
    assert!(ctr.sandbox_ids().unwrap().is_empty());
}
