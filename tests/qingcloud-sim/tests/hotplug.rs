//! Hot-plug into real network namespaces (root): attached NICs become links with their MAC in
//! the node netns, reach the vxnet gateway and each other, vanish on detach, come back to the
//! node when a pod netns holding one dies, and every netns the simulator made goes away.

mod common;

use std::time::Duration;

use common::{Api, Netns, netns_exists, require_root};
use qingcloud_sim::{
    Fault, FaultKind, InstanceSpec, JobLatency, Latency, NicState, SimHandle, Simulator, VxnetSpec,
    link_name,
};

const VX: &str = "vxnet-pods001";
const NODE: &str = "i-node0001";

async fn start(node: InstanceSpec) -> (SimHandle, Api) {
    let sim = Simulator::builder()
        .vxnet(VxnetSpec::new(VX, "172.22.0.0/24".parse().unwrap()))
        .instance(node)
        .instance(InstanceSpec::new("i-unmapped"))
        .hotplug(true)
        .job_latency(JobLatency {
            pending: Latency::FixedMs(10),
            working: Latency::FixedMs(20),
        })
        .configure(|c| c.hotplug_check_ms = 50)
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    (sim, api)
}

/// Waits (generously) until the link with `mac` is present or absent in `ns`.
async fn wait_link(ns: &Netns, mac: &str, present: bool) -> bool {
    for _ in 0..200 {
        if ns.link_by_mac(mac).is_some() == present {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn ip_of(sim: &SimHandle, nic: &str) -> String {
    sim.nics()
        .into_iter()
        .find(|n| n.nic.nic_id == nic)
        .unwrap()
        .nic
        .private_ip
}

#[tokio::test]
async fn attached_nics_reach_the_gateway_and_each_other_and_vanish_on_detach() {
    if !require_root("attached_nics_reach_the_gateway_and_each_other_and_vanish_on_detach") {
        return;
    }
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    // The node given as a path, as a CNI runtime would name it.
    let (sim, api) =
        start(InstanceSpec::new(NODE).node_netns(&format!("/var/run/netns/{}", node.name))).await;
    let vxns = sim.vxnet_netns(VX).expect("vxnet netns");
    assert!(netns_exists(&vxns));

    let nics = api.create(VX, 2).await;
    let other = api.create(VX, 1).await;
    assert!(node.link_by_mac(&nics[0]).is_none());
    let job = api.job("AttachNics", Some(NODE), &nics).await;
    let unmapped = api.job("AttachNics", Some("i-unmapped"), &other).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    assert_eq!(api.wait_job(&unmapped).await, "successful");

    // Present as soon as the job says successful, named as MAC-based naming would.
    let l0 = node.link_by_mac(&nics[0]).expect("NIC 0 link in the node");
    assert_eq!(l0, link_name(&nics[0]));
    let l1 = node.link_by_mac(&nics[1]).expect("NIC 1 link in the node");
    assert!(
        node.link_by_mac(&other[0]).is_none(),
        "unmapped instance gets no link"
    );

    // NIC 0 configured on the node, NIC 1 moved into a pod as eth0.
    let (ip0, ip1) = (ip_of(&sim, &nics[0]), ip_of(&sim, &nics[1]));
    node.ip(&["addr", "add", &format!("{ip0}/24"), "dev", &l0]);
    node.ip(&["link", "set", &l0, "up"]);
    node.ip(&["link", "set", &l1, "netns", &pod.name, "name", "eth0"]);
    pod.ip(&["addr", "add", &format!("{ip1}/24"), "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    assert!(node.ping("172.22.0.1"), "node NIC reaches the gateway");
    assert!(pod.ping("172.22.0.1"), "pod NIC reaches the gateway");
    assert!(
        pod.ping(&ip0),
        "pod reaches the node's NIC through the vxnet"
    );

    // A link-delay fault: the job succeeds first, the link shows up later.
    sim.inject(Fault::new(FaultKind::LinkDelayMs(300)).next(1));
    let late = api.create(VX, 1).await;
    let job = api.job("AttachNics", Some(NODE), &late).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    assert!(node.link_by_mac(&late[0]).is_none(), "not yet");
    assert!(
        wait_link(&node, &late[0], true).await,
        "appears after the delay"
    );

    // Detach removes each link wherever it is now.
    let job = api.job("DetachNics", None, &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    assert!(node.link_by_mac(&nics[0]).is_none());
    assert!(pod.link_by_mac(&nics[1]).is_none());

    sim.shutdown().await;
    assert!(!netns_exists(&vxns), "vxnet netns removed on shutdown");
}

#[tokio::test]
async fn nic_returns_to_its_node_when_the_pod_netns_dies() {
    if !require_root("nic_returns_to_its_node_when_the_pod_netns_dies") {
        return;
    }
    let node = Netns::new("node");
    let (sim, api) = start(InstanceSpec::new(NODE).node_netns(&node.name)).await;
    let nics = api.create(VX, 1).await;
    let job = api.job("AttachNics", Some(NODE), &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    let link = node.link_by_mac(&nics[0]).expect("link");

    {
        let pod = Netns::new("pod");
        node.ip(&["link", "set", &link, "netns", &pod.name, "name", "eth0"]);
        assert!(pod.link_by_mac(&nics[0]).is_some());
        assert!(node.link_by_mac(&nics[0]).is_none());
    } // the pod netns is deleted here, and the veth pair with it

    let mut back = None;
    for _ in 0..200 {
        back = node.link_by_mac(&nics[0]);
        if back.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        back,
        Some(link_name(&nics[0])),
        "NIC back on the node with its MAC"
    );
    let info = sim
        .nics()
        .into_iter()
        .find(|n| n.nic.nic_id == nics[0])
        .unwrap();
    assert_eq!(
        info.state,
        NicState::InUse,
        "still attached as far as the cloud knows"
    );

    // Dropping the handle without shutdown also cleans up.
    let vxns = sim.vxnet_netns(VX).unwrap();
    drop(sim);
    assert!(!netns_exists(&vxns), "vxnet netns removed on drop");
    // The kernel destroys a deleted netns's devices asynchronously.
    assert!(
        wait_link(&node, &nics[0], false).await,
        "the NIC end died with its pair"
    );
}

#[tokio::test]
async fn vxnet_netns_of_a_killed_simulator_are_swept() {
    if !require_root("vxnet_netns_of_a_killed_simulator_are_swept") {
        return;
    }
    // No process can have a pid above the kernel's maximum (4194304).
    let orphan = "hn-vx-99999999-test";
    common::run(&["netns", "add", orphan]);
    let guard = Netns {
        name: orphan.to_owned(),
    };
    let node = Netns::new("node");
    let (sim, _api) = start(InstanceSpec::new(NODE).node_netns(&node.name)).await;
    assert!(!netns_exists(&guard.name), "orphan swept at start");
    let mine = sim.vxnet_netns(VX).unwrap();
    assert!(
        mine.starts_with(&format!("hn-vx-{}-", std::process::id())),
        "{mine}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn deleted_node_leaves_the_nic_attached_and_detachable() {
    if !require_root("deleted_node_leaves_the_nic_attached_and_detachable") {
        return;
    }
    let node = Netns::new("node");
    let (sim, api) = start(InstanceSpec::new(NODE).node_netns(&node.name)).await;
    let nics = api.create(VX, 1).await;
    let job = api.job("AttachNics", Some(NODE), &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    let vxns = sim.vxnet_netns(VX).unwrap();
    drop(node);
    // The pair dies with the node (asynchronously) and is not re-created while checks run.
    let peer = format!("v{}", nics[0].replace(':', ""));
    let has_peer = || common::run(&["-n", &vxns, "-br", "link"]).contains(&peer);
    let mut gone = false;
    for _ in 0..100 {
        gone = !has_peer();
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "pair died with the node");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!has_peer(), "not re-created without a node");
    let job = api.job("DetachNics", None, &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    api.ok("DeleteNics", &[("nics.1", &nics[0])]).await;
    sim.shutdown().await;
}

/// Prints how long one job hot-plugging 16 NICs takes end to end (zero job latency).
#[tokio::test]
async fn figure_hotplug_of_16_nics() {
    if !require_root("figure_hotplug_of_16_nics") {
        return;
    }
    let node = Netns::new("node");
    let (sim, api) = start(InstanceSpec::new(NODE).node_netns(&node.name)).await;
    sim.set_job_latency(JobLatency {
        pending: Latency::FixedMs(0),
        working: Latency::FixedMs(0),
    });
    let nics = api.create(VX, 16).await;
    let t = std::time::Instant::now();
    let job = api.job("AttachNics", Some(NODE), &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    let attach = t.elapsed();
    assert!(nics.iter().all(|n| node.link_by_mac(n).is_some()));
    let t = std::time::Instant::now();
    let job = api.job("DetachNics", None, &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    let detach = t.elapsed();
    assert!(nics.iter().all(|n| node.link_by_mac(n).is_none()));
    eprintln!(
        "hot-plug figure: 16 NICs attached in {attach:?}, detached in {detach:?} (incl. polling)"
    );
    sim.shutdown().await;
}

/// Moves the attached NIC `mac` from `node` into a new pod netns as `eth0`, addressed in its
/// vxnet with a default route through the gateway, as the agent does.
fn into_pod(sim: &SimHandle, node: &Netns, mac: &str, gateway: &str) -> (Netns, String) {
    let pod = Netns::new("pod");
    let link = node.link_by_mac(mac).expect("NIC link in the node");
    node.ip(&["link", "set", &link, "netns", &pod.name, "name", "eth0"]);
    let ip = ip_of(sim, mac);
    pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["route", "add", "default", "via", gateway]);
    (pod, ip)
}

#[tokio::test]
async fn the_vpc_router_joins_vxnets_and_the_nodes_primary_nic() {
    if !require_root("the_vpc_router_joins_vxnets_and_the_nodes_primary_nic") {
        return;
    }
    const VX2: &str = "vxnet-pods002";
    const PRIMARY: &str = "vxnet-nodes01";
    const OUTSIDE: &str = "vxnet-novpc01";
    let node = Netns::new("node");
    let sim = Simulator::builder()
        .vxnet(VxnetSpec::new(VX, "172.22.0.0/24".parse().unwrap()))
        .vxnet(VxnetSpec::new(VX2, "172.23.0.0/24".parse().unwrap()))
        .vxnet(VxnetSpec::new(PRIMARY, "172.21.0.0/24".parse().unwrap()))
        .vxnet(VxnetSpec::new(OUTSIDE, "172.24.0.0/24".parse().unwrap()).outside_vpc())
        .instance(InstanceSpec {
            vxnet: Some(PRIMARY.into()),
            ..InstanceSpec::new(NODE).node_netns(&node.name)
        })
        .hotplug(true)
        .job_latency(JobLatency {
            pending: Latency::FixedMs(10),
            working: Latency::FixedMs(20),
        })
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);

    // The VM's own NIC is there from the start: addressed, default route via its gateway.
    let primary = sim
        .nics()
        .into_iter()
        .find(|n| n.nic.role == Some(1))
        .expect("primary NIC")
        .nic;
    let link = node
        .link_by_mac(&primary.nic_id)
        .expect("primary NIC link in the node");
    assert!(
        node.ip(&["-4", "addr", "show", "dev", &link])
            .contains(&format!("{}/24", primary.private_ip))
    );
    assert!(
        node.ip(&["route", "show", "default"])
            .contains("via 172.21.0.1")
    );

    let mut nics = Vec::new();
    for vx in [VX, VX2, OUTSIDE] {
        nics.extend(api.create(vx, 1).await);
    }
    let job = api.job("AttachNics", Some(NODE), &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    let (a, ip_a) = into_pod(&sim, &node, &nics[0], "172.22.0.1");
    let (b, ip_b) = into_pod(&sim, &node, &nics[1], "172.23.0.1");
    let (out, _) = into_pod(&sim, &node, &nics[2], "172.24.0.1");

    assert!(a.ping(&ip_b), "pod to pod across vxnets of one VPC");
    assert!(b.ping(&ip_a), "and back");
    assert!(
        a.ping(&primary.private_ip),
        "pod to its node's primary address"
    );
    assert!(node.ping(&ip_b), "node to a pod in another vxnet");
    assert!(
        out.ping("172.24.0.1"),
        "a vxnet outside any VPC still has its gateway"
    );
    assert!(!out.ping(&ip_a), "but nothing routes it");

    let router = sim.vxnets()[0]
        .router
        .as_ref()
        .expect("in a VPC")
        .router_id
        .clone();
    let router_ns = sim.router_netns(&router).expect("router netns");
    assert!(netns_exists(&router_ns));
    sim.shutdown().await;
    assert!(
        !netns_exists(&router_ns),
        "the router netns goes with the simulator"
    );
}
