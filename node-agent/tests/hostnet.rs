//! The Service route's host side against real netns: pods in one vxnet route the Service CIDR
//! through their node's NIC in the vxnet, the node runs the nat rules kube-proxy (iptables
//! mode) writes with `clusterCIDR` = the vxnets' range, and backends are pods of the same vxnet
//! on this and another node and the API server on another node's primary address.
//!
//! Layout: a "sw" netns plays the VPC: bridge `vx` (vxnet 10.77.0.0/24, router .1) and bridge
//! `pri` (the nodes' primary network 192.168.50.0/24, router .1), forwarding between them.
//! Every NIC is a veth whose peer sits on one of the bridges.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hostnic_agent::hostnet::{self, CHAIN};
use hostnic_agent::netns::Netns;
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use ipnet::Ipv4Net;

const SERVICE_CIDR: &str = "10.96.0.0/12";
const CLUSTER_CIDR: &str = "10.77.0.0/16";

/// A service's ClusterIP and port, and its one endpoint.
struct Service {
    name: &'static str,
    cluster_ip: &'static str,
    port: u16,
    backend: &'static str,
    backend_port: u16,
}

const SAME_NODE: Service = Service {
    name: "same-node",
    cluster_ip: "10.96.0.10",
    port: 80,
    backend: "10.77.0.20",
    backend_port: 8080,
};
const OTHER_NODE: Service = Service {
    name: "other-node",
    cluster_ip: "10.96.0.11",
    port: 80,
    backend: "10.77.0.30",
    backend_port: 8080,
};
/// The `kubernetes` Service: the API server on node 2's primary address (hostNetwork).
const KUBERNETES: Service = Service {
    name: "kubernetes",
    cluster_ip: "10.96.0.1",
    port: 443,
    backend: "192.168.50.12",
    backend_port: 6443,
};
/// The client pod's own Service (kube-proxy's hairpin masquerade covers that one already).
const OWN: Service = Service {
    name: "own",
    cluster_ip: "10.96.0.12",
    port: 80,
    backend: "10.77.0.5",
    backend_port: 8080,
};

/// The nat rules kube-proxy v1.3x writes in iptables mode for `services` with
/// `clusterCIDR` = [`CLUSTER_CIDR`]: only sources outside it are marked for masquerade, and an
/// endpoint reaching itself (hairpin).
fn kube_proxy_rules(services: &[&Service]) -> String {
    let mut s = String::from(
        "*nat\n\
         :KUBE-SERVICES - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n\
         :KUBE-MARK-MASQ - [0:0]\n",
    );
    for (i, _) in services.iter().enumerate() {
        s.push_str(&format!(":KUBE-SVC-{i} - [0:0]\n:KUBE-SEP-{i} - [0:0]\n"));
    }
    s.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    for (i, svc) in services.iter().enumerate() {
        let (name, ip, port) = (svc.name, svc.cluster_ip, svc.port);
        let (be, be_port) = (svc.backend, svc.backend_port);
        s.push_str(&format!(
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"default/{name} cluster IP\" -m tcp --dport {port} -j KUBE-SVC-{i}\n\
             -A KUBE-SVC-{i} ! -s {CLUSTER_CIDR} -d {ip}/32 -p tcp -m comment --comment \"default/{name} cluster IP\" -m tcp --dport {port} -j KUBE-MARK-MASQ\n\
             -A KUBE-SVC-{i} -m comment --comment \"default/{name} -> {be}:{be_port}\" -j KUBE-SEP-{i}\n\
             -A KUBE-SEP-{i} -s {be}/32 -m comment --comment default/{name} -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{i} -p tcp -m comment --comment default/{name} -m tcp -j DNAT --to-destination {be}:{be_port}\n"
        ));
    }
    s.push_str("COMMIT\n");
    s
}

/// Runs `f` on a new thread that joined `ns`'s network namespace.
fn in_netns<T: Send + 'static>(
    ns: &TestNetns,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let file = File::open(ns.path()).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A TCP server in a netns that answers every connection with the peer address it saw.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &TestNetns, addr: &str, port: u16) -> Self {
        let addr = SocketAddrV4::new(addr.parse().unwrap(), port);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let thread = in_netns(ns, move || {
            let listener = TcpListener::bind(addr).expect("bind");
            listener.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.write_all(peer.ip().to_string().as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("listener bound");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `ns` to `addr:port`: the source address the server saw, or the error.
fn connect(ns: &TestNetns, addr: &str, port: u16) -> Result<Ipv4Addr, String> {
    let to = SocketAddr::V4(SocketAddrV4::new(addr.parse().unwrap(), port));
    in_netns(ns, move || {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .map_err(|e| format!("connect {to}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut seen = String::new();
        conn.read_to_string(&mut seen)
            .map_err(|e| format!("read from {to}: {e}"))?;
        seen.parse().map_err(|_| format!("{to} answered {seen:?}"))
    })
    .join()
    .expect("client thread")
}

fn sysctl(ns: &TestNetns, key: &str, value: &str) {
    let out = ns.exec("sysctl", &["-qw", &format!("{key}={value}")]);
    assert!(out.status.success(), "sysctl {key}: {out:?}");
}

fn sysctl_value(ns: &TestNetns, key: &str) -> String {
    let out = ns.exec("sysctl", &["-n", key]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// ICMP redirects the netns sent so far.
fn icmp_redirects_sent(ns: &TestNetns) -> u64 {
    let out = ns.exec("nstat", &["-saz", "IcmpOutRedirects"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("IcmpOutRedirects"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("nstat: {out:?}"))
}

fn iptables_restore(ns: &TestNetns, rules: &str) {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "iptables-restore", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run iptables-restore");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "iptables-restore failed");
}

fn nat_listing(ns: &TestNetns) -> String {
    let out = ns.exec("iptables", &["-t", "nat", "-S"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The VPC: two bridges with their routers, forwarding between them.
struct Lab {
    sw: TestNetns,
    node1: TestNetns,
    node2: TestNetns,
    client: TestNetns,
    same_node_pod: TestNetns,
    other_node_pod: TestNetns,
}

impl Lab {
    fn new() -> Self {
        let sw = TestNetns::new("sw");
        for (br, addr) in [("vx", "10.77.0.1/24"), ("pri", "192.168.50.1/24")] {
            sw.ip(&["link", "add", br, "type", "bridge"]);
            sw.ip(&["addr", "add", addr, "dev", br]);
            sw.ip(&["link", "set", br, "up"]);
        }
        sysctl(&sw, "net.ipv4.ip_forward", "1");
        let lab = Self {
            node1: TestNetns::new("node"),
            node2: TestNetns::new("node"),
            client: TestNetns::new("pod"),
            same_node_pod: TestNetns::new("pod"),
            other_node_pod: TestNetns::new("pod"),
            sw,
        };
        for (node, gw, primary) in [
            (&lab.node1, "10.77.0.254/24", "192.168.50.11/24"),
            (&lab.node2, "10.77.0.253/24", "192.168.50.12/24"),
        ] {
            lab.plug(node, "eth0", "pri", primary);
            lab.plug(node, "gw0", "vx", gw);
            node.ip(&["route", "add", "default", "via", "192.168.50.1"]);
            sysctl(node, "net.ipv4.ip_forward", "1");
        }
        for (pod, addr, node_gw) in [
            (&lab.client, "10.77.0.5/24", "10.77.0.254"),
            (&lab.same_node_pod, "10.77.0.20/24", "10.77.0.254"),
            (&lab.other_node_pod, "10.77.0.30/24", "10.77.0.253"),
        ] {
            lab.plug(pod, "eth0", "vx", addr);
            pod.ip(&["route", "add", "default", "via", "10.77.0.1"]);
            // The pool route with gateway 0.0.0.0, as the agent writes it into the pod.
            pod.ip(&["route", "add", SERVICE_CIDR, "via", node_gw]);
        }
        lab
    }

    /// A NIC `name` with `addr` in `ns`, its peer on bridge `br` of the VPC.
    fn plug(&self, ns: &TestNetns, name: &str, br: &str, addr: &str) {
        let n = PLUGGED.fetch_add(1, Ordering::Relaxed);
        let peer = ns.add_fake_nic(name, &format!("52:54:0a:4e:00:{n:02x}"));
        let port = format!("port{n}");
        ns.ip(&["link", "set", &peer, "netns", self.sw.name(), "name", &port]);
        self.sw.ip(&["link", "set", &port, "master", br, "up"]);
        ns.ip(&["addr", "add", addr, "dev", name]);
        ns.ip(&["link", "set", name, "up"]);
    }
}

/// Numbers the NICs of all labs of this test binary: MACs and bridge port names stay unique.
static PLUGGED: AtomicU32 = AtomicU32::new(0);

fn destinations() -> BTreeSet<Ipv4Net> {
    [SERVICE_CIDR.parse().unwrap()].into()
}

#[tokio::test]
async fn services_backed_in_the_vxnet_answer_only_with_the_agents_masquerade() {
    if !require_root("services_backed_in_the_vxnet_answer_only_with_the_agents_masquerade") {
        return;
    }
    let lab = Lab::new();
    // RHEL's default: strict reverse-path filtering.
    sysctl(&lab.node1, "net.ipv4.conf.all.rp_filter", "1");
    let services = [&SAME_NODE, &OTHER_NODE, &KUBERNETES, &OWN];
    iptables_restore(&lab.node1, &kube_proxy_rules(&services));
    let _servers = [
        Echo::start(
            &lab.same_node_pod,
            SAME_NODE.backend,
            SAME_NODE.backend_port,
        ),
        Echo::start(
            &lab.other_node_pod,
            OTHER_NODE.backend,
            OTHER_NODE.backend_port,
        ),
        Echo::start(&lab.node2, KUBERNETES.backend, KUBERNETES.backend_port),
        Echo::start(&lab.client, OWN.backend, OWN.backend_port),
        // The kubelet / a hostNetwork server on node 1's primary address.
        Echo::start(&lab.node1, "192.168.50.11", 10250),
    ];

    // Today: the backend answers the client directly, from its own address.
    for svc in [&SAME_NODE, &OTHER_NODE, &KUBERNETES] {
        assert!(
            connect(&lab.client, svc.cluster_ip, svc.port).is_err(),
            "{} answered without the agent's rule",
            svc.name
        );
    }
    // A pod reaching its own Service works already (kube-proxy's hairpin masquerade).
    assert!(connect(&lab.client, OWN.cluster_ip, OWN.port).is_ok());
    // Strict RPF on node 1 drops the pod's packets to its primary address: they come in on
    // the primary NIC, and the way back to the pod is the vxnet NIC.
    assert!(connect(&lab.client, "192.168.50.11", 10250).is_err());
    // ARP flux: asked on the vxnet for its primary address, node 1 answers with gw0's MAC (a
    // pod that takes the address as on-link reaches it through gw0).
    lab.same_node_pod
        .ip(&["route", "add", "192.168.50.11/32", "dev", "eth0"]);
    assert!(connect(&lab.same_node_pod, "192.168.50.11", 10250).is_ok());

    let node1 = Arc::new(Netns::open(lab.node1.path()).unwrap());
    let applied = hostnet::ensure(node1.clone(), destinations())
        .await
        .unwrap();
    assert!(applied.nat_changed);
    assert!(
        applied.sysctls.contains(&"all/rp_filter=2".to_owned()),
        "{applied:?}"
    );
    assert_eq!(
        sysctl_value(&lab.node1, "net.ipv4.conf.all.arp_ignore"),
        "1"
    );
    assert_eq!(
        sysctl_value(&lab.node1, "net.ipv4.conf.all.arp_announce"),
        "2"
    );

    let redirects_before = icmp_redirects_sent(&lab.node1);
    // Several connections each, as clients reconnect.
    for svc in [&SAME_NODE, &OTHER_NODE, &KUBERNETES, &OWN] {
        for _ in 0..3 {
            let seen = connect(&lab.client, svc.cluster_ip, svc.port)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", svc.name, nat_listing(&lab.node1)));
            // Masqueraded to the node's address on the way to the backend.
            let node_side: Ipv4Addr = if svc.backend.starts_with("192.168.") {
                "192.168.50.11".parse().unwrap()
            } else {
                "10.77.0.254".parse().unwrap()
            };
            assert_eq!(seen, node_side, "{}", svc.name);
        }
    }
    // Forwarding the DNATed packets back out of gw0 made node 1 send the pod a redirect per
    // connection (10 more here without send_redirects=0); none now.
    assert_eq!(icmp_redirects_sent(&lab.node1), redirects_before);
    assert_eq!(
        connect(&lab.client, "192.168.50.11", 10250),
        Ok("10.77.0.5".parse().unwrap()),
        "pod to its node's primary address with loose RPF"
    );
    // arp_ignore=1: node 1 answers ARP on a NIC only for that NIC's own addresses.
    lab.same_node_pod.ip(&["neigh", "flush", "dev", "eth0"]);
    assert!(connect(&lab.same_node_pod, "192.168.50.11", 10250).is_err());

    // Idempotent: a second pass changes nothing.
    assert_eq!(
        hostnet::ensure(node1.clone(), destinations())
            .await
            .unwrap(),
        hostnet::Applied::default()
    );
    assert_eq!(
        nat_listing(&lab.node1)
            .matches(&format!("-j {CHAIN}"))
            .count(),
        1
    );
}

#[tokio::test]
async fn traffic_that_hits_no_service_keeps_the_pods_source() {
    if !require_root("traffic_that_hits_no_service_keeps_the_pods_source") {
        return;
    }
    let lab = Lab::new();
    iptables_restore(&lab.node1, &kube_proxy_rules(&[&SAME_NODE]));
    let node1 = Arc::new(Netns::open(lab.node1.path()).unwrap());
    hostnet::ensure(node1, destinations()).await.unwrap();
    let _servers = [
        Echo::start(
            &lab.same_node_pod,
            SAME_NODE.backend,
            SAME_NODE.backend_port,
        ),
        Echo::start(&lab.node2, "192.168.50.12", 10250),
    ];
    // Pod to pod in the vxnet.
    assert_eq!(
        connect(&lab.client, SAME_NODE.backend, SAME_NODE.backend_port),
        Ok("10.77.0.5".parse().unwrap())
    );
    // Forwarded by node 1 without a DNAT (a route through the node to another node's
    // address): not masqueraded either.
    lab.client
        .ip(&["route", "add", "192.168.50.12/32", "via", "10.77.0.254"]);
    assert_eq!(
        connect(&lab.client, "192.168.50.12", 10250),
        Ok("10.77.0.5".parse().unwrap())
    );
}

#[tokio::test]
async fn forwarding_is_what_the_node_says() {
    if !require_root("forwarding_is_what_the_node_says") {
        return;
    }
    let node = TestNetns::new("node");
    let ns = Arc::new(Netns::open(node.path()).unwrap());
    // A new netns starts with forwarding off, whatever the host's value.
    assert!(!hostnet::forwarding(ns.clone()).await.unwrap());
    sysctl(&node, "net.ipv4.ip_forward", "1");
    assert!(hostnet::forwarding(ns).await.unwrap());
}

#[tokio::test]
async fn remove_takes_the_chain_and_its_jump_and_leaves_kube_proxys_rules() {
    if !require_root("remove_takes_the_chain_and_its_jump_and_leaves_kube_proxys_rules") {
        return;
    }
    let node = TestNetns::new("node");
    iptables_restore(&node, &kube_proxy_rules(&[&SAME_NODE]));
    let before = nat_listing(&node);
    let ns = Arc::new(Netns::open(node.path()).unwrap());
    hostnet::ensure(ns.clone(), destinations()).await.unwrap();
    let installed = nat_listing(&node);
    let jump = installed
        .lines()
        .position(|l| l == format!("-A POSTROUTING -j {CHAIN}"))
        .expect("jump installed");
    let kube = installed
        .lines()
        .position(|l| l.contains("-j KUBE-POSTROUTING"))
        .unwrap();
    assert!(jump < kube, "the jump goes first:\n{installed}");
    // Repaired at the next pass when someone edits the chain.
    node.exec("iptables", &["-t", "nat", "-F", CHAIN]);
    let again = hostnet::ensure(ns.clone(), destinations()).await.unwrap();
    assert!(again.nat_changed);
    assert_eq!(nat_listing(&node), installed);

    assert!(hostnet::remove(ns.clone()).await.unwrap());
    assert_eq!(nat_listing(&node), before);
    assert!(!hostnet::remove(ns).await.unwrap());
}
