//! The plugin driven by libcni (the library container runtimes use, via the Go driver in
//! `tests/cni-runtime`): ADD/CHECK/DEL of a conflist with hostnic first and Debian's portmap
//! chained after it, ValidateNetworkList, error codes as the runtime sees them, and a benchmark
//! against Debian's bridge + host-local (figures printed, nothing timed is asserted).

mod common;

use std::path::{Path, PathBuf};

use common::{FakeAgent, api_error};
use hostnic_agent_api::{ErrorKind, path};
use hostnic_tests::cni_runtime::{CniRuntime, DEBIAN_PLUGIN_DIR};
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use serde_json::{Value, json};

/// What kubelet's runtime passes (IgnoreUnknown, or Debian's plugins refuse the K8S_ keys).
const POD_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0";

/// Plugin dirs: the directory of the `hostnic` under test and Debian's reference plugins.
fn plugin_dirs() -> Vec<PathBuf> {
    let ours = common::plugin_bin().parent().unwrap().to_path_buf();
    vec![ours, PathBuf::from(DEBIAN_PLUGIN_DIR)]
}

fn hostnic_plugin(agent: &FakeAgent) -> Value {
    json!({"type": "hostnic", "socket": agent.socket(), "timeoutSeconds": 5,
           "ipam": {"routes": [{"dst": "10.96.0.0/12", "gw": "0.0.0.0"}]}})
}

fn write_conflist(agent: &FakeAgent, file: &str, version: &str, plugins: Vec<Value>) -> PathBuf {
    let path = agent.dir().join(file);
    let list = json!({"cniVersion": version, "name": "hostnic-net", "plugins": plugins});
    std::fs::write(&path, list.to_string()).unwrap();
    path
}

fn runtime(agent: &FakeAgent) -> CniRuntime {
    CniRuntime::new(plugin_dirs(), agent.dir().join("cache")).cni_args(POD_ARGS)
}

fn nat_rules(node: &TestNetns) -> String {
    let out = node.exec("iptables", &["-t", "nat", "-S"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// ADD and DEL with portmap after hostnic: portmap DNATs to the address in hostnic's result, so
/// the rule proves prevResult reached it. (CHECK is tested with tuning below: Debian's portmap
/// 1.1.1 fails CHECK on IPv4-only results, containernetworking/plugins#819.)
#[test]
fn add_del_with_portmap_chained_after_hostnic() {
    if !require_root("add_del_with_portmap_chained_after_hostnic") {
        return;
    }
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let agent = FakeAgent::start();
        // portmap writes iptables rules in the caller's netns: run the runtime in one of ours.
        let node = TestNetns::new("cninode");
        let pod = TestNetns::new("cnipod");
        let conflist = write_conflist(
            &agent,
            "chain.conflist",
            version,
            vec![
                hostnic_plugin(&agent),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ],
        );
        let rt = runtime(&agent)
            .in_netns(node.name())
            .capability_args(json!({
                "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]
            }));

        let result = rt.add(&conflist, "ctr1", &pod.path(), "eth0").unwrap();
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["interfaces"][0]["name"], "eth0");
        assert_eq!(result["interfaces"][0]["sandbox"], json!(pod.path()));
        assert_eq!(result["ips"][0]["address"], "172.22.0.9/24");
        assert_eq!(
            result["routes"][1],
            json!({"dst": "10.96.0.0/12", "gw": "172.22.0.2"})
        );
        let rules = nat_rules(&node);
        assert!(rules.contains("172.22.0.9:80"), "{version}: {rules}");

        rt.del(&conflist, "ctr1", &pod.path(), "eth0").unwrap();
        assert!(!nat_rules(&node).contains("172.22.0.9:80"));
        // A second DEL, as containerd sends one after removing the sandbox, also succeeds.
        rt.del(&conflist, "ctr1", Path::new(""), "eth0").unwrap();
        let releases = agent.requests_to(path::RELEASE);
        assert_eq!(releases.len(), 2, "{releases:?}");
        assert_eq!(releases[0].body["netns"], json!(pod.path()));
        assert!(releases[1].body.get("netns").is_none());
        let claims = agent.requests_to(path::CLAIM);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].body["pod"]["name"], "web-0");
    }
}

/// ADD, CHECK and DEL with tuning after hostnic. tuning requires prevResult on ADD and CHECK and
/// works on the interface in the pod netns, which the test creates in the agent's place.
#[test]
fn add_check_del_with_tuning_chained_after_hostnic() {
    if !require_root("add_check_del_with_tuning_chained_after_hostnic") {
        return;
    }
    let agent = FakeAgent::start();
    let node = TestNetns::new("cninode");
    let pod = TestNetns::new("cnipod");
    pod.add_fake_nic("eth0", "52:54:aa:00:00:01");
    let conflist = write_conflist(
        &agent,
        "tuning.conflist",
        "1.0.0",
        vec![
            hostnic_plugin(&agent),
            json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}),
        ],
    );
    let rt = runtime(&agent).in_netns(node.name());
    let result = rt.add(&conflist, "ctr1", &pod.path(), "eth0").unwrap();
    assert_eq!(result["ips"][0]["address"], "172.22.0.9/24");
    let sysctl = pod.exec("sysctl", &["-n", "net.ipv4.conf.eth0.arp_notify"]);
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "1");

    rt.check(&conflist, "ctr1", &pod.path(), "eth0").unwrap();
    let checks = agent.requests_to(path::CHECK);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].body["container_id"], "ctr1");
    assert_eq!(checks[0].body["netns"], json!(pod.path()));

    // The agent finds the attachment broken: the runtime's CHECK fails with our message.
    agent.set(|_| api_error(409, ErrorKind::CheckFailed, "eth0 lost 172.22.0.9/24"));
    let err = rt
        .check(&conflist, "ctr1", &pod.path(), "eth0")
        .unwrap_err();
    assert_eq!(err.code(), Some(999), "{err}");
    assert!(err.stderr.contains("eth0 lost 172.22.0.9/24"), "{err}");

    agent.set(common::healthy);
    rt.del(&conflist, "ctr1", &pod.path(), "eth0").unwrap();
    assert_eq!(agent.requests_to(path::RELEASE).len(), 1);
}

/// libcni's CHECK hands hostnic the cached ADD result: the agent is asked to verify what that
/// result and the conflist say (MTU, our routes with their resolved next hops), so a NicPool
/// edit after the ADD cannot fail it.
#[test]
fn check_asks_the_agent_for_what_the_cached_result_says() {
    if !require_root("check_asks_the_agent_for_what_the_cached_result_says") {
        return;
    }
    let agent = FakeAgent::start();
    let node = TestNetns::new("cninode");
    let pod = TestNetns::new("cnipod");
    let mut plugin = hostnic_plugin(&agent);
    plugin["mtu"] = json!(1400);
    plugin["ipam"]["routes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"dst": "10.200.0.0/16"}));
    let conflist = write_conflist(&agent, "mtu.conflist", "1.0.0", vec![plugin]);
    let rt = runtime(&agent).in_netns(node.name());
    rt.add(&conflist, "ctr1", &pod.path(), "eth0").unwrap();
    rt.check(&conflist, "ctr1", &pod.path(), "eth0").unwrap();
    let checks = agent.requests_to(path::CHECK);
    assert_eq!(checks.len(), 1);
    assert_eq!(
        checks[0].body["expected"],
        json!({"mac": "52:54:aa:00:00:01", "address": "172.22.0.9/24", "mtu": 1400,
               "routes": [{"dst": "0.0.0.0/0", "gw": "172.22.0.1"},
                          {"dst": "10.96.0.0/12", "gw": "172.22.0.2"},
                          {"dst": "10.200.0.0/16", "gw": "172.22.0.1"}]})
    );
}

#[test]
fn validate_accepts_conflists_naming_hostnic() {
    let agent = FakeAgent::start();
    let rt = runtime(&agent);
    let chain = write_conflist(
        &agent,
        "chain.conflist",
        "1.0.0",
        vec![
            hostnic_plugin(&agent),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ],
    );
    assert_eq!(
        rt.validate(&chain).unwrap(),
        vec!["portMappings".to_owned()]
    );
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let alone = write_conflist(
            &agent,
            "alone.conflist",
            version,
            vec![hostnic_plugin(&agent)],
        );
        rt.validate(&alone).unwrap();
    }
    let too_old = write_conflist(
        &agent,
        "old.conflist",
        "0.2.0",
        vec![hostnic_plugin(&agent)],
    );
    let err = rt.validate(&too_old).unwrap_err();
    assert!(
        err.stderr.contains("does not support config version"),
        "{err}"
    );
}

/// The spec's error codes survive libcni: the runtime sees 11 and 5 as the plugin meant them.
#[test]
fn error_codes_reach_the_runtime() {
    if !require_root("error_codes_reach_the_runtime") {
        return;
    }
    let agent = FakeAgent::with(|_| api_error(503, ErrorKind::TryAgainLater, "no free NIC"));
    let node = TestNetns::new("cninode");
    let pod = TestNetns::new("cnipod");
    let conflist = write_conflist(&agent, "h.conflist", "1.0.0", vec![hostnic_plugin(&agent)]);
    let rt = runtime(&agent).in_netns(node.name());
    let err = rt.add(&conflist, "ctr1", &pod.path(), "eth0").unwrap_err();
    assert_eq!(err.code(), Some(11), "{err}");
    assert!(err.stderr.contains("no free NIC"), "{err}");

    let down = write_conflist(
        &agent,
        "down.conflist",
        "1.0.0",
        vec![json!({"type": "hostnic", "socket": agent.dir().join("none.sock")})],
    );
    let err = rt.add(&down, "ctr2", &pod.path(), "eth0").unwrap_err();
    assert_eq!(err.code(), Some(5), "{err}");
}

/// ADD+DEL through libcni, hostnic (against the fake agent: the plugin's own cost) versus
/// Debian's bridge + host-local, taking turns in one driver process inside a test netns.
/// `HOSTNIC_BENCH_ITERATIONS` sets the count (default 30).
#[test]
fn bench_hostnic_versus_bridge_host_local() {
    if !require_root("bench_hostnic_versus_bridge_host_local") {
        return;
    }
    let iterations: u32 = std::env::var("HOSTNIC_BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let agent = FakeAgent::start();
    let node = TestNetns::new("cnibench");
    let pod = TestNetns::new("cnibpod");
    let hostnic = write_conflist(
        &agent,
        "hostnic.conflist",
        "1.0.0",
        vec![hostnic_plugin(&agent)],
    );
    let bridge = agent.dir().join("bridge.conflist");
    std::fs::write(
        &bridge,
        json!({"cniVersion": "1.0.0", "name": "bench-bridge", "plugins": [{
            "type": "bridge", "bridge": "hnbench0", "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.88.0.0/16",
                     "dataDir": agent.dir().join("ipam")}}]})
        .to_string(),
    )
    .unwrap();
    let rt = runtime(&agent).in_netns(node.name());
    let results = rt
        .bench(iterations, &pod.path(), "eth0", &[&hostnic, &bridge])
        .unwrap();
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.iterations, u64::from(iterations));
        println!(
            "bench {:<14} n={} ADD+DEL p50={:.2}ms p99={:.2}ms mean={:.2}ms | ADD p50={:.2}ms | DEL p50={:.2}ms",
            r.network,
            r.iterations,
            r.add_del.p50_ms,
            r.add_del.p99_ms,
            r.add_del.mean_ms,
            r.add.p50_ms,
            r.del.p50_ms
        );
    }
    println!(
        "bench ratio hostnic/bridge ADD+DEL p50 = {:.2}",
        results[0].add_del.p50_ms / results[1].add_del.p50_ms
    );
    assert_eq!(agent.requests_to(path::CLAIM).len(), iterations as usize);
    assert_eq!(agent.requests_to(path::RELEASE).len(), iterations as usize);
}
