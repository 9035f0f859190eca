//! The agent's side of CNI GC, CHECK and pool choice as the spec and the runtimes expect them,
//! against the in-memory API server and real network namespaces (veth "NICs" in a node netns),
//! over the agent's socket and through libcni with the `hostnic` plugin.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hostnic_agent::args::Args;
use hostnic_agent::run::{self, Running};
use hostnic_agent_api::{
    ApiError, Attachment, AttachmentKey, ClaimRequest, ErrorKind, GcRequest, GcResponse, PodInfo,
    path,
};
use hostnic_crds::{
    HostNic, HostNicPhase, HostNicSpec, HostNicStatus, NicPool, NicPoolSpec, NicRole,
};
use hostnic_tests::cni_runtime::{CniFailure, CniRuntime};
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

const VXNET: &str = "vxnet-abc";

async fn post<T: serde::Serialize>(socket: &Path, uri: &str, body: &T) -> (StatusCode, Value) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", "hostnic")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn mac(i: usize) -> String {
    format!("52:54:0a:4e:01:{i:02x}")
}

fn ip(i: usize) -> String {
    format!("10.78.0.{}", 10 + i)
}

/// kube-mem, a node netns and an agent's arguments; pools and NICs made as the operator would.
struct Lab {
    client: Client,
    node_name: String,
    node: TestNetns,
    dir: tempfile::TempDir,
    _server: kube_mem::KubeMemHandle,
}

impl Lab {
    async fn new() -> Self {
        let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
        let server = kube_mem::KubeMem::builder()
            .with_crds_from_dir(crds)
            .start()
            .await
            .unwrap();
        let client = server.client().await.unwrap();
        let node = TestNetns::new("node");
        Self {
            client,
            node_name: node.name().to_owned(),
            node,
            dir: tempfile::tempdir().unwrap(),
            _server: server,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/hostnic.sock")
    }

    async fn start_agent(&self) -> Running {
        let args = Args {
            node_name: self.node_name.clone(),
            node_netns: Some(self.node.path()),
            socket: self.socket(),
            health_addr: "127.0.0.1:0".parse().unwrap(),
            sweep_seconds: 3600,
            link_scan_seconds: 1,
            log_format: "text".into(),
            shutdown_grace_seconds: 20,
            uninstall: false,
            wait_for_nic_seconds: 30,
        };
        let running = run::start(&args, self.client.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), running.wait_recovered())
            .await
            .expect("agent recovers");
        running
    }

    /// A NicPool with `routes` (gateway `0.0.0.0`) whose status gives this node `gateway` as
    /// its address in the vxnet.
    async fn apply_pool(&self, name: &str, default: bool, routes: &[&str], gateway: &str) {
        let pools: Api<NicPool> = Api::all(self.client.clone());
        let spec = NicPoolSpec {
            vxnets: vec![VXNET.into()],
            node_selector: Default::default(),
            size: 3,
            max_per_node: 10,
            routes: routes
                .iter()
                .map(|d| hostnic_crds::Route {
                    destination: (*d).into(),
                    gateway: "0.0.0.0".into(),
                })
                .collect(),
            reclaim_policy: Default::default(),
            quarantine_seconds: 0,
        };
        let mut stored = match pools.get_opt(name).await.unwrap() {
            Some(mut p) => {
                p.spec = spec;
                pools
                    .replace(name, &PostParams::default(), &p)
                    .await
                    .unwrap()
            }
            None => {
                let mut p = NicPool::new(name, spec);
                if default {
                    p.metadata.annotations = Some(
                        [(
                            hostnic_crds::DEFAULT_POOL_ANNOTATION.to_owned(),
                            "true".to_owned(),
                        )]
                        .into(),
                    );
                }
                pools.create(&PostParams::default(), &p).await.unwrap()
            }
        };
        stored.status = Some(hostnic_crds::NicPoolStatus {
            node_status: vec![hostnic_crds::NodePoolStatus {
                node: self.node_name.clone(),
                gateways: vec![hostnic_crds::NodeGateway {
                    vxnet: VXNET.into(),
                    ip: gateway.into(),
                    nic_id: "52:54:0a:4e:ff:fe".into(),
                    hostnic: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        pools
            .replace_status(name, &PostParams::default(), &stored)
            .await
            .unwrap();
    }

    /// A veth "NIC" on the node and an Available HostNic of `pool` for it.
    async fn add_nic(&self, pool: &str, i: usize) -> String {
        self.node.add_fake_nic(&format!("hn{i}"), &mac(i));
        let api: Api<HostNic> = Api::all(self.client.clone());
        let name = format!("{pool}-{}-{i:05}", self.node_name);
        let mut nic = HostNic::new(
            &name,
            HostNicSpec {
                pool: pool.into(),
                node: self.node_name.clone(),
                vxnet: VXNET.into(),
                role: NicRole::Pod,
            },
        );
        nic.metadata.labels = Some(
            [
                (hostnic_crds::NODE_LABEL.to_owned(), self.node_name.clone()),
                (hostnic_crds::POOL_LABEL.to_owned(), pool.to_owned()),
                (hostnic_crds::VXNET_LABEL.to_owned(), VXNET.to_owned()),
                (hostnic_crds::ROLE_LABEL.to_owned(), "Pod".to_owned()),
            ]
            .into(),
        );
        let mut created = api.create(&PostParams::default(), &nic).await.unwrap();
        created.status = Some(HostNicStatus {
            phase: HostNicPhase::Available,
            nic_id: Some(mac(i)),
            private_ip: Some(ip(i)),
            vxnet_cidr: Some("10.78.0.0/24".into()),
            vxnet_gateway: Some("10.78.0.1".into()),
            instance: Some("i-test".into()),
            ..Default::default()
        });
        api.replace_status(&name, &PostParams::default(), &created)
            .await
            .unwrap();
        name
    }

    async fn hostnic(&self, name: &str) -> HostNic {
        Api::<HostNic>::all(self.client.clone())
            .get(name)
            .await
            .unwrap()
    }

    async fn create_pod(&self, name: &str, pool_annotation: Option<&str>) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let annotations = pool_annotation
            .map(|p| json!({hostnic_crds::POD_POOL_ANNOTATION: p}))
            .unwrap_or(json!({}));
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "pause"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

    async fn wait_free(&self, agent: &Running, n: u32) {
        let wait = async {
            while agent.agent.status().free_nics < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("{n} free NICs never showed: {:?}", agent.agent.status()));
    }

    /// A libcni runtime with the `hostnic` plugin under test, for pod `pod`.
    fn runtime(&self, pod: &str) -> CniRuntime {
        let plugin_dir = hostnic_tests::bins::bin("hostnic")
            .parent()
            .unwrap()
            .to_path_buf();
        CniRuntime::new([plugin_dir], self.dir.path().join("cache"))
            .cni_args(&format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"))
    }

    fn conflist(&self, file: &str, plugin: Value) -> PathBuf {
        let path = self.dir.path().join(file);
        let mut plugin = plugin;
        plugin["type"] = json!("hostnic");
        plugin["socket"] = json!(self.socket());
        // Debian's libcni (1.1.2) converts results up to 1.0.0 only.
        let list = json!({"cniVersion": "1.0.0", "name": "hostnic", "plugins": [plugin]});
        std::fs::write(&path, list.to_string()).unwrap();
        path
    }
}

fn claim_req(pod: &TestNetns, container: &str, network: Option<&str>) -> ClaimRequest {
    ClaimRequest {
        key: AttachmentKey {
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        netns: pod.path().display().to_string(),
        pod: PodInfo {
            namespace: "default".into(),
            name: container.into(),
            uid: None,
        },
        pool: None,
        pod_pool: None,
        pod_annotations: false,
        wait_for_nic_seconds: 0,
        network: network.map(str::to_owned),
        mtu: None,
        routes: vec![],
    }
}

fn phase(nic: &HostNic) -> HostNicPhase {
    nic.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

async fn claimed(socket: &Path, req: &ClaimRequest) -> Attachment {
    let (code, body) = post(socket, path::CLAIM, req).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_value(body).unwrap()
}

/// Runs blocking libcni work off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// libcni's CheckNetworkList for container `ctr1` as `eth0`.
async fn check_via_libcni(
    rt: &Arc<CniRuntime>,
    conflist: &Path,
    netns: &Path,
) -> Result<(), CniFailure> {
    let (rt, conflist, netns) = (rt.clone(), conflist.to_owned(), netns.to_owned());
    blocking(move || rt.check(&conflist, "ctr1", &netns, "eth0")).await
}

/// Two hostnic networks on one node (e.g. Multus' `net1` next to `eth0`) and a claim from
/// before network names were recorded: GC of one network takes only its own stale
/// attachments, and a GC without a network name is refused.
#[tokio::test]
async fn gc_collects_only_its_own_networks_attachments() {
    if !require_root("gc_collects_only_its_own_networks_attachments") {
        return;
    }
    let lab = Lab::new().await;
    lab.apply_pool("pool-a", true, &[], "10.78.0.254").await;
    for i in 1..=4 {
        lab.add_nic("pool-a", i).await;
    }
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 4).await;
    let socket = lab.socket();
    let pods: Vec<TestNetns> = (0..4).map(|_| TestNetns::new("pod")).collect();
    let mut atts = Vec::new();
    for (i, network) in [Some("hostnic"), Some("hostnic"), Some("fast"), None]
        .into_iter()
        .enumerate()
    {
        let c = format!("c{i}");
        lab.create_pod(&c, None).await;
        atts.push(claimed(&socket, &claim_req(&pods[i], &c, network)).await);
    }
    let recorded = lab
        .hostnic(&atts[2].hostnic)
        .await
        .status
        .unwrap()
        .pod
        .unwrap();
    assert_eq!(recorded.network.as_deref(), Some("fast"));

    // An older plugin's GC names no network: refused, nothing released.
    let old = GcRequest {
        network: String::new(),
        valid_attachments: vec![],
    };
    let (code, body) = post(&socket, path::GC, &old).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");

    // "hostnic" knows c0 only: c1 is stale; fast's c2 and the unnamed c3 are not its own.
    let gc = GcRequest {
        network: "hostnic".into(),
        valid_attachments: vec![claim_req(&pods[0], "c0", None).key],
    };
    let (code, body) = post(&socket, path::GC, &gc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let resp: GcResponse = serde_json::from_value(body).unwrap();
    assert_eq!(resp.released, vec![claim_req(&pods[1], "c1", None).key]);
    assert!(resp.failed.is_empty());
    let phases: Vec<_> = phases_of(&lab, &atts).await;
    assert_eq!(
        phases,
        [
            HostNicPhase::Bound,
            HostNicPhase::Released,
            HostNicPhase::Bound,
            HostNicPhase::Bound
        ]
    );
    assert_eq!(pods[2].link_by_mac(&mac(3)).as_deref(), Some("eth0"));
    assert_eq!(pods[3].link_by_mac(&mac(4)).as_deref(), Some("eth0"));
}

async fn phases_of(lab: &Lab, atts: &[Attachment]) -> Vec<HostNicPhase> {
    let mut out = Vec::new();
    for a in atts {
        out.push(phase(&lab.hostnic(&a.hostnic).await));
    }
    out
}

/// A release GC cannot do (the NIC cannot come home: its host name and the fallback name are
/// both taken on the node) is reported back, and GC still releases the others.
#[tokio::test]
async fn gc_reports_release_errors_and_goes_on() {
    if !require_root("gc_reports_release_errors_and_goes_on") {
        return;
    }
    let lab = Lab::new().await;
    lab.apply_pool("pool-a", true, &[], "10.78.0.254").await;
    lab.add_nic("pool-a", 1).await;
    lab.add_nic("pool-a", 2).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 2).await;
    let socket = lab.socket();
    let (p1, p2) = (TestNetns::new("pod"), TestNetns::new("pod"));
    lab.create_pod("c1", None).await;
    lab.create_pod("c2", None).await;
    let a1 = claimed(&socket, &claim_req(&p1, "c1", Some("hostnic"))).await;
    let a2 = claimed(&socket, &claim_req(&p2, "c2", Some("hostnic"))).await;
    assert_eq!(a1.mac, mac(1));
    // Squat both names NIC 1 could come home under.
    lab.node
        .ip(&["link", "add", "hn1", "type", "veth", "peer", "name", "sq1"]);
    let fallback = hostnic_agent::attach::fallback_name(&mac(1));
    lab.node.ip(&[
        "link", "add", &fallback, "type", "veth", "peer", "name", "sq2",
    ]);

    let gc = GcRequest {
        network: "hostnic".into(),
        valid_attachments: vec![],
    };
    let (code, body) = post(&socket, path::GC, &gc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let resp: GcResponse = serde_json::from_value(body).unwrap();
    assert_eq!(resp.released, vec![claim_req(&p2, "c2", None).key]);
    assert_eq!(resp.failed.len(), 1, "{resp:?}");
    assert_eq!(resp.failed[0].key, claim_req(&p1, "c1", None).key);
    assert!(resp.failed[0].error.contains(&a1.hostnic), "{resp:?}");
    assert_eq!(phase(&lab.hostnic(&a1.hostnic).await), HostNicPhase::Bound);
    assert_eq!(
        phase(&lab.hostnic(&a2.hostnic).await),
        HostNicPhase::Released
    );
}

/// CHECK through libcni compares against the cached result and the conflist: a NicPool route
/// added after the claim, or a new node gateway address, does not fail it; a route a later
/// plugin added is fine; a wrong MTU or a missing conflist route is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_follows_the_cached_result_not_todays_pool() {
    if !require_root("check_follows_the_cached_result_not_todays_pool") {
        return;
    }
    let lab = Lab::new().await;
    lab.apply_pool("pool-a", true, &["10.96.0.0/12"], "10.78.0.254")
        .await;
    lab.add_nic("pool-a", 1).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 1).await;
    lab.create_pod("p1", None).await;
    let pod = TestNetns::new("pod");
    let conflist = lab.conflist(
        "hostnic.conflist",
        json!({"mtu": 1400, "ipam": {"routes": [{"dst": "10.200.0.0/16"}]}}),
    );
    let rt = Arc::new(lab.runtime("p1"));
    let netns = pod.path();
    let check = || check_via_libcni(&rt, &conflist, &netns);
    let result = {
        let (rt, conflist, netns) = (rt.clone(), conflist.clone(), netns.clone());
        blocking(move || rt.add(&conflist, "ctr1", &netns, "eth0").expect("ADD")).await
    };
    assert_eq!(
        result["ips"][0]["address"],
        format!("{}/24", ip(1)),
        "{result}"
    );
    assert!(
        pod.ip(&["-j", "link", "show", "eth0"])
            .contains("\"mtu\":1400")
    );
    check().await.expect("CHECK right after ADD");

    // The pool gains a route and the node's gateway NIC is replaced (new address).
    lab.apply_pool(
        "pool-a",
        true,
        &["10.96.0.0/12", "10.100.0.0/16"],
        "10.78.0.253",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check().await.expect("CHECK after the NicPool changed");
    // A later chained plugin's route through eth0.
    pod.ip(&[
        "route",
        "add",
        "10.244.0.0/16",
        "via",
        "10.78.0.9",
        "dev",
        "eth0",
    ]);
    check().await.expect("CHECK with an extra route");

    pod.ip(&["link", "set", "eth0", "mtu", "1500"]);
    let err = check().await.expect_err("CHECK misses a changed MTU");
    assert!(err.stderr.contains("MTU 1500, expected 1400"), "{err}");
    pod.ip(&["link", "set", "eth0", "mtu", "1400"]);
    check().await.expect("CHECK with the MTU restored");

    pod.ip(&["route", "del", "10.200.0.0/16"]);
    let err = check().await.expect_err("CHECK misses a conflist route");
    assert!(err.stderr.contains("10.200.0.0/16"), "{err}");
}

/// The pod's pool annotation beats the conflist's `pool` although the runtime passes no
/// annotations; a named pool that does not exist is a config error naming it; a netns that
/// does not exist is "container unknown".
#[tokio::test]
async fn pool_annotation_wins_and_bad_names_say_what_to_fix() {
    if !require_root("pool_annotation_wins_and_bad_names_say_what_to_fix") {
        return;
    }
    let lab = Lab::new().await;
    lab.apply_pool("pool-a", true, &[], "10.78.0.254").await;
    lab.apply_pool("pool-b", false, &[], "10.78.0.254").await;
    lab.add_nic("pool-a", 1).await;
    lab.add_nic("pool-b", 2).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 2).await;
    let socket = lab.socket();
    let pod = TestNetns::new("pod");

    lab.create_pod("c1", Some("pool-b")).await;
    let mut req = claim_req(&pod, "c1", Some("hostnic"));
    req.pool = Some("pool-a".into());
    let att = claimed(&socket, &req).await;
    assert_eq!(
        att.mac,
        mac(2),
        "the conflist's pool beat the pod annotation"
    );

    let other = TestNetns::new("pod");
    lab.create_pod("c2", Some("pool-typo")).await;
    let mut req = claim_req(&other, "c2", Some("hostnic"));
    req.pool = Some("pool-a".into());
    let (code, body) = post(&socket, path::CLAIM, &req).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let err: ApiError = serde_json::from_value(body).unwrap();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("\"pool-typo\""), "{}", err.message);

    let mut gone = claim_req(&other, "c2", Some("hostnic"));
    gone.netns = "/var/run/netns/hn-no-such-netns".into();
    let (code, body) = post(&socket, path::CLAIM, &gone).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let err: ApiError = serde_json::from_value(body).unwrap();
    assert_eq!(err.kind, ErrorKind::UnknownContainer);
    // Nothing was claimed by either refusal.
    let nic = lab
        .hostnic(&format!("pool-a-{}-00001", lab.node_name))
        .await;
    assert_eq!(phase(&nic), HostNicPhase::Available);
}

/// A NIC whose link left the node after the agent last saw it (unplugged; the link pass runs
/// only after a debounce) does not fail the ADD: the claim is undone and the next free NIC
/// serves the pod.
#[tokio::test]
async fn a_vanished_link_makes_the_claim_take_the_next_free_nic() {
    if !require_root("a_vanished_link_makes_the_claim_take_the_next_free_nic") {
        return;
    }
    let lab = Lab::new().await;
    lab.apply_pool("pool-a", true, &[], "10.78.0.254").await;
    let first = lab.add_nic("pool-a", 1).await;
    lab.add_nic("pool-a", 2).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 2).await;
    let pod = TestNetns::new("pod");
    lab.create_pod("c1", None).await;
    // The claim goes in before the link pass (100 ms after the link event) can report it.
    lab.node.ip(&["link", "del", "hn1"]);
    let att = claimed(&lab.socket(), &claim_req(&pod, "c1", Some("hostnic"))).await;
    assert_eq!(att.mac, mac(2));
    assert_eq!(pod.link_by_mac(&mac(2)).as_deref(), Some("eth0"));
    let nic = lab.hostnic(&first).await;
    assert_ne!(phase(&nic), HostNicPhase::Bound);
    assert_eq!(nic.status.unwrap().pod, None);
}
