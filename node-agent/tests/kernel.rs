//! Kernel side of claims and releases against real network namespaces: a "node" netns holding
//! veth ends that impersonate cloud NICs, and "pod" netns made by the test.

use std::sync::Arc;

use hostnic_agent::attach::{self, AttachSpec, NodeAction};
use hostnic_agent::netlink::RouteEntry;
use hostnic_agent::netns::Netns;
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;

const MAC: &str = "52:54:0a:4d:00:05";

fn spec(ifname: &str) -> AttachSpec {
    AttachSpec {
        mac: MAC.into(),
        ifname: ifname.into(),
        mtu: Some(1400),
        address: "10.77.0.5/24".parse().unwrap(),
        gateway: "10.77.0.1".parse().unwrap(),
        routes: vec![RouteEntry {
            dst: "10.96.0.0/12".parse().unwrap(),
            gw: Some("10.77.0.254".parse().unwrap()),
        }],
        via_node: Vec::new(),
    }
}

fn open(ns: &TestNetns) -> Arc<Netns> {
    Arc::new(Netns::open(ns.path()).unwrap())
}

fn ifalias(ns: &TestNetns, link: &str) -> Option<String> {
    let json = ns.ip(&["-j", "link", "show", "dev", link]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v[0]["ifalias"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn attach_moves_renames_and_configures_then_detach_restores() {
    if !require_root("attach_moves_renames_and_configures_then_detach_restores") {
        return;
    }
    let (node, pod) = (TestNetns::new("node"), TestNetns::new("pod"));
    node.add_fake_nic("hnic1", MAC);

    let attached = attach::attach(open(&node), open(&pod), spec("eth0"))
        .await
        .unwrap();
    assert_eq!(attached.host_name, "hnic1");
    assert_eq!(attached.mtu, 1400);
    assert_eq!(pod.link_by_mac(MAC).as_deref(), Some("eth0"));
    assert_eq!(node.link_by_mac(MAC), None);
    assert_eq!(pod.addresses("eth0"), vec!["10.77.0.5/24".to_owned()]);
    assert_eq!(ifalias(&pod, "eth0").as_deref(), Some("hnic1"));
    let routes = pod.ip(&["route", "show"]);
    assert!(
        routes.contains("default via 10.77.0.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.96.0.0/12 via 10.77.0.254 dev eth0"),
        "{routes}"
    );
    assert!(
        attach::check(open(&pod), spec("eth0"))
            .await
            .unwrap()
            .is_empty()
    );

    let detached = attach::detach(open(&node), Some(open(&pod)), MAC.into())
        .await
        .unwrap();
    assert_eq!(detached.host_name.as_deref(), Some("hnic1"));
    assert_eq!(pod.link_by_mac(MAC), None);
    assert_eq!(node.link_by_mac(MAC).as_deref(), Some("hnic1"));
    assert!(node.addresses("hnic1").is_empty());
    assert!(!node.links().iter().find(|l| l.name == "hnic1").unwrap().up);
    assert_eq!(ifalias(&node, "hnic1"), None);

    // Releasing again finds the link already home and succeeds.
    let again = attach::detach(open(&node), Some(open(&pod)), MAC.into())
        .await
        .unwrap();
    assert_eq!(again.host_name.as_deref(), Some("hnic1"));
}

#[tokio::test]
async fn check_reports_a_removed_address_and_route() {
    if !require_root("check_reports_a_removed_address_and_route") {
        return;
    }
    let (node, pod) = (TestNetns::new("node"), TestNetns::new("pod"));
    node.add_fake_nic("hnic1", MAC);
    attach::attach(open(&node), open(&pod), spec("eth1"))
        .await
        .unwrap();

    pod.ip(&["route", "del", "10.96.0.0/12"]);
    let problems = attach::check(open(&pod), spec("eth1")).await.unwrap();
    assert_eq!(
        problems,
        vec!["route 10.96.0.0/12 via 10.77.0.254 missing".to_owned()]
    );

    pod.ip(&["addr", "flush", "dev", "eth1"]);
    let problems = attach::check(open(&pod), spec("eth1")).await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("address 10.77.0.5/24 missing")),
        "{problems:?}"
    );

    let problems = attach::check(open(&pod), spec("eth7")).await.unwrap();
    assert_eq!(
        problems,
        vec!["no interface eth7 in the pod netns".to_owned()]
    );
}

#[tokio::test]
async fn a_failing_step_undoes_the_move() {
    if !require_root("a_failing_step_undoes_the_move") {
        return;
    }
    let (node, pod) = (TestNetns::new("node"), TestNetns::new("pod"));
    node.add_fake_nic("hnic1", MAC);
    let mut bad = spec("eth0");
    // Unreachable next hop: the kernel refuses the route after the link was moved and addressed.
    bad.routes.push(RouteEntry {
        dst: "10.200.0.0/16".parse().unwrap(),
        gw: Some("192.168.99.1".parse().unwrap()),
    });
    let err = attach::attach(open(&node), open(&pod), bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("add route"), "{err}");
    assert_eq!(pod.link_by_mac(MAC), None);
    assert_eq!(node.link_by_mac(MAC).as_deref(), Some("hnic1"));
    assert!(node.addresses("hnic1").is_empty());
    assert_eq!(ifalias(&node, "hnic1"), None);
}

#[tokio::test]
async fn detach_after_the_pod_netns_is_gone_tidies_the_returned_nic() {
    if !require_root("detach_after_the_pod_netns_is_gone_tidies_the_returned_nic") {
        return;
    }
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    node.add_fake_nic("hnic1", MAC);
    attach::attach(open(&node), open(&pod), spec("eth0"))
        .await
        .unwrap();
    drop(pod);
    // A real NIC comes home by itself with its pod name and alias; emulate that.
    node.ip(&[
        "link", "add", "eth0", "address", MAC, "type", "veth", "peer", "name", "hnic1p2",
    ]);
    node.ip(&["link", "set", "eth0", "alias", "hnic1"]);
    node.ip(&["addr", "add", "10.77.0.5/24", "dev", "eth0"]);
    node.ip(&["link", "set", "eth0", "up"]);

    let detached = attach::detach(open(&node), None, MAC.into()).await.unwrap();
    assert_eq!(detached.host_name.as_deref(), Some("hnic1"));
    assert_eq!(node.link_by_mac(MAC).as_deref(), Some("hnic1"));
    assert!(node.addresses("hnic1").is_empty());

    // Nothing anywhere: still a success.
    node.ip(&["link", "del", "hnic1"]);
    let detached = attach::detach(open(&node), None, MAC.into()).await.unwrap();
    assert_eq!(detached.host_name, None);
}

#[tokio::test]
async fn pod_reaches_the_vxnet_gateway_and_free_nics_rest() {
    if !require_root("pod_reaches_the_vxnet_gateway_and_free_nics_rest") {
        return;
    }
    let (node, pod, vxnet) = (
        TestNetns::new("node"),
        TestNetns::new("pod"),
        TestNetns::new("vx"),
    );
    let peer = node.add_fake_nic("hnic1", MAC);
    node.ip(&["link", "set", &peer, "netns", vxnet.name()]);
    vxnet.ip(&["link", "add", "br0", "type", "bridge"]);
    vxnet.ip(&["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    vxnet.ip(&["link", "set", "br0", "up"]);
    vxnet.ip(&["link", "set", &peer, "master", "br0", "up"]);

    // A free NIC someone configured is put back to rest.
    node.ip(&["addr", "add", "10.9.9.9/24", "dev", "hnic1"]);
    node.ip(&["link", "set", "hnic1", "up"]);
    let names = attach::on_node(open(&node), vec![(MAC.into(), NodeAction::Rest)])
        .await
        .unwrap();
    assert_eq!(names[0].as_ref().unwrap().as_deref(), Some("hnic1"));
    assert!(node.addresses("hnic1").is_empty());

    attach::attach(open(&node), open(&pod), spec("eth0"))
        .await
        .unwrap();
    assert!(
        pod.ping("10.77.0.1", 3),
        "pod cannot reach its vxnet gateway"
    );
}

#[tokio::test]
async fn gateway_nics_get_their_address_on_the_node() {
    if !require_root("gateway_nics_get_their_address_on_the_node") {
        return;
    }
    let node = TestNetns::new("node");
    node.add_fake_nic("hgw1", MAC);
    let addr = "10.77.0.254/24".parse().unwrap();
    for _ in 0..2 {
        let items = vec![
            (MAC.to_owned(), NodeAction::Gateway(addr)),
            ("52:54:00:00:00:99".to_owned(), NodeAction::Look),
        ];
        let names = attach::on_node(open(&node), items).await.unwrap();
        assert_eq!(names[0].as_ref().unwrap().as_deref(), Some("hgw1"));
        assert_eq!(names[1].as_ref().unwrap(), &None);
    }
    assert_eq!(node.addresses("hgw1"), vec!["10.77.0.254/24".to_owned()]);
    assert!(node.links().iter().find(|l| l.name == "hgw1").unwrap().up);
}

#[tokio::test]
async fn an_attach_whose_name_is_taken_in_the_pod_leaves_the_nic_home_as_it_was() {
    if !require_root("an_attach_whose_name_is_taken_in_the_pod_leaves_the_nic_home_as_it_was") {
        return;
    }
    let (node, pod) = (TestNetns::new("node"), TestNetns::new("pod"));
    node.add_fake_nic("hnic1", MAC);
    let mtu_before = node.ip(&["-j", "link", "show", "dev", "hnic1"]);
    // The kernel moves the link (its own name is free in the pod), then fails the rename.
    pod.add_fake_nic("eth0", "52:54:0a:4d:00:99");
    let err = attach::attach(open(&node), open(&pod), spec("eth0"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("move link"), "{err}");
    assert_eq!(pod.link_by_mac(MAC), None, "the NIC stayed in the pod");
    assert_eq!(node.link_by_mac(MAC).as_deref(), Some("hnic1"));
    assert_eq!(ifalias(&node, "hnic1"), None);
    let mtu =
        |json: &str| serde_json::from_str::<serde_json::Value>(json).unwrap()[0]["mtu"].clone();
    assert_eq!(
        mtu(&node.ip(&["-j", "link", "show", "dev", "hnic1"])),
        mtu(&mtu_before)
    );
    // The pod's own eth0 is untouched.
    assert_eq!(pod.links().iter().filter(|l| l.name == "eth0").count(), 1);
}

#[tokio::test]
async fn a_release_whose_host_name_is_taken_comes_home_under_the_fallback_name() {
    if !require_root("a_release_whose_host_name_is_taken_comes_home_under_the_fallback_name") {
        return;
    }
    let (node, pod) = (TestNetns::new("node"), TestNetns::new("pod"));
    node.add_fake_nic("hnic1", MAC);
    // A second network's interface: its pod name is free on the node.
    attach::attach(open(&node), open(&pod), spec("net1"))
        .await
        .unwrap();
    // Meanwhile the host name went to another link.
    node.ip(&[
        "link", "add", "hnic1", "type", "veth", "peer", "name", "taker",
    ]);
    let detached = attach::detach(open(&node), Some(open(&pod)), MAC.into())
        .await
        .unwrap();
    let fallback = attach::fallback_name(MAC);
    assert_eq!(detached.host_name.as_deref(), Some(fallback.as_str()));
    assert_eq!(pod.link_by_mac(MAC), None);
    assert_eq!(node.link_by_mac(MAC).as_deref(), Some(fallback.as_str()));
    assert_eq!(ifalias(&node, &fallback), None);
    assert!(node.addresses(&fallback).is_empty());
}
