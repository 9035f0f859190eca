//! The agent against the in-memory API server and real network namespaces: HostNics made by
//! the test as the operator would (Available, with nicId/ip/cidr/gateway), veth "NICs" in a
//! node netns, pods as test netns, requests over the agent's unix socket.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hostnic_agent::args::Args;
use hostnic_agent::run::{self, Running};
use hostnic_agent_api::{
    AgentStatus, ApiError, Attachment, AttachmentKey, ClaimRequest, ErrorKind, GcRequest,
    GcResponse, PodInfo, Released, path,
};
use hostnic_crds::{
    HostNic, HostNicPhase, HostNicSpec, HostNicStatus, NicPool, NicPoolSpec, NicRole,
};
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const POOL: &str = "pool-a";
const VXNET: &str = "vxnet-abc";

// === test client ===

/// Sends one request on the agent socket; returns the status and the JSON body. A connection
/// cut off midway (the agent killed) answers 599 and `null`.
async fn call(socket: &Path, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let cut = (StatusCode::from_u16(599).unwrap(), Value::Null);
    let Ok(stream) = tokio::net::UnixStream::connect(socket).await else {
        return cut;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return cut;
    };
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "hostnic")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let Ok(resp) = sender.send_request(req).await else {
        return cut;
    };
    let status = resp.status();
    let Ok(bytes) = resp.into_body().collect().await else {
        return cut;
    };
    (
        status,
        serde_json::from_slice(&bytes.to_bytes()).unwrap_or(Value::Null),
    )
}

/// GETs a path of the agent's health server.
async fn health_get(addr: std::net::SocketAddr, uri: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(uri)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn post<T: serde::Serialize>(socket: &Path, uri: &str, body: &T) -> (StatusCode, Value) {
    call(socket, Method::POST, uri, serde_json::to_vec(body).unwrap()).await
}

fn error_kind(body: &Value) -> ErrorKind {
    serde_json::from_value::<ApiError>(body.clone())
        .expect("ApiError body")
        .kind
}

// === the lab ===

struct Lab {
    server: kube_mem::KubeMemHandle,
    client: Client,
    node_name: String,
    node: TestNetns,
    dir: tempfile::TempDir,
    /// NIC MAC -> HostNic name.
    nics: BTreeMap<String, String>,
}

fn mac(i: usize) -> String {
    format!("52:54:0a:4d:01:{i:02x}")
}

fn ip(i: usize) -> String {
    format!("10.77.0.{}", 10 + i)
}

impl Lab {
    async fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| "hostnic_agent=debug,kube=warn".into()),
            )
            .try_init();
        let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
        let server = kube_mem::KubeMem::builder()
            .with_crds_from_dir(crds)
            .start()
            .await
            .unwrap();
        let client = server.client().await.unwrap();
        let node = TestNetns::new("node");
        let node_name = node.name().to_owned();
        let lab = Self {
            server,
            client,
            node_name,
            node,
            dir: tempfile::tempdir().unwrap(),
            nics: BTreeMap::new(),
        };
        lab.create_pool().await;
        lab
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/hostnic.sock")
    }

    fn args(&self) -> Args {
        Args {
            node_name: self.node_name.clone(),
            node_netns: Some(self.node.path()),
            socket: self.socket(),
            health_addr: "127.0.0.1:0".parse().unwrap(),
            sweep_seconds: 3600,
            link_scan_seconds: 1,
            log_format: "text".into(),
        }
    }

    async fn start_agent(&self) -> Running {
        let running = run::start(&self.args(), self.client.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), running.wait_recovered())
            .await
            .expect("agent recovers");
        running
    }

    async fn create_pool(&self) {
        let pools: Api<NicPool> = Api::all(self.client.clone());
        let mut pool = NicPool::new(
            POOL,
            NicPoolSpec {
                vxnets: vec![VXNET.into()],
                node_selector: Default::default(),
                size: 3,
                max_per_node: 10,
                routes: vec![hostnic_crds::Route {
                    destination: "10.96.0.0/12".into(),
                    gateway: "0.0.0.0".into(),
                }],
                reclaim_policy: Default::default(),
                quarantine_seconds: 0,
            },
        );
        pool.metadata.annotations = Some(
            [(
                hostnic_crds::DEFAULT_POOL_ANNOTATION.to_owned(),
                "true".to_owned(),
            )]
            .into(),
        );
        let created = pools.create(&PostParams::default(), &pool).await.unwrap();
        let mut with_status = created.clone();
        with_status.status = Some(hostnic_crds::NicPoolStatus {
            node_status: vec![hostnic_crds::NodePoolStatus {
                node: self.node_name.clone(),
                gateways: vec![hostnic_crds::NodeGateway {
                    vxnet: VXNET.into(),
                    ip: "10.77.0.254".into(),
                    nic_id: "52:54:0a:4d:ff:fe".into(),
                    hostnic: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        pools
            .replace_status(POOL, &PostParams::default(), &with_status)
            .await
            .unwrap();
    }

    /// Adds a veth "NIC" to the node netns and an Available HostNic for it, as the operator would.
    async fn add_nic(&mut self, i: usize) -> String {
        self.node.add_fake_nic(&format!("hn{i}"), &mac(i));
        self.add_hostnic(i).await
    }

    /// Adds an Available HostNic for NIC `i` without its link on the node.
    async fn add_hostnic(&mut self, i: usize) -> String {
        let api: Api<HostNic> = Api::all(self.client.clone());
        let name = format!("{POOL}-{}-{i:05}", self.node_name);
        let mut nic = HostNic::new(
            &name,
            HostNicSpec {
                pool: POOL.into(),
                node: self.node_name.clone(),
                vxnet: VXNET.into(),
                role: NicRole::Pod,
            },
        );
        nic.metadata.labels = Some(
            [
                (hostnic_crds::NODE_LABEL.to_owned(), self.node_name.clone()),
                (hostnic_crds::POOL_LABEL.to_owned(), POOL.to_owned()),
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
            vxnet_cidr: Some("10.77.0.0/24".into()),
            vxnet_gateway: Some("10.77.0.1".into()),
            instance: Some("i-test".into()),
            ..Default::default()
        });
        api.replace_status(&name, &PostParams::default(), &created)
            .await
            .unwrap();
        self.nics.insert(mac(i), name.clone());
        name
    }

    async fn hostnics(&self) -> Vec<HostNic> {
        let api: Api<HostNic> = Api::all(self.client.clone());
        api.list(&Default::default()).await.unwrap().items
    }

    async fn hostnic(&self, name: &str) -> HostNic {
        Api::<HostNic>::all(self.client.clone())
            .get(name)
            .await
            .unwrap()
    }

    async fn create_pod(&self, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
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
}

fn claim_req(pod: &TestNetns, container: &str) -> ClaimRequest {
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
        network: Some("hostnic".into()),
        mtu: None,
        routes: vec![],
    }
}

fn release_req(container: &str, netns: Option<&TestNetns>) -> hostnic_agent_api::ReleaseRequest {
    hostnic_agent_api::ReleaseRequest {
        key: AttachmentKey {
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        netns: netns.map(|n| n.path().display().to_string()),
    }
}

fn phase(nic: &HostNic) -> HostNicPhase {
    nic.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

// === tests ===

#[tokio::test]
async fn claim_check_release_gc_over_the_socket() {
    if !require_root("claim_check_release_gc_over_the_socket") {
        return;
    }
    let mut lab = Lab::new().await;
    for i in 1..=3 {
        lab.add_nic(i).await;
    }
    // NIC 1's wire ends on the vxnet bridge that carries the gateway address.
    let vxnet = TestNetns::new("vx");
    lab.node.ip(&["link", "set", "hn1p", "netns", vxnet.name()]);
    vxnet.ip(&["link", "add", "br0", "type", "bridge"]);
    vxnet.ip(&["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    vxnet.ip(&["link", "set", "br0", "up"]);
    vxnet.ip(&["link", "set", "hn1p", "master", "br0", "up"]);

    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 3).await;
    let socket = lab.socket();
    let (code, status) = call(&socket, Method::GET, path::STATUS, vec![]).await;
    assert_eq!(code, StatusCode::OK);
    let status: AgentStatus = serde_json::from_value(status).unwrap();
    assert!(status.ready && status.synced, "{status:?}");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let pod1 = TestNetns::new("pod");
    lab.create_pod("c1").await;
    let (code, body) = post(&socket, path::CLAIM, &claim_req(&pod1, "c1")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let att: Attachment = serde_json::from_value(body).unwrap();
    // The agent picks NICs in name order: NIC 1 is first.
    assert_eq!(att.mac, mac(1));
    assert_eq!(att.address, format!("{}/24", ip(1)));
    assert_eq!(att.gateway, "10.77.0.1");
    assert!(
        att.routes
            .iter()
            .any(|r| r.dst == "10.96.0.0/12" && r.gw.as_deref() == Some("10.77.0.254"))
    );
    assert_eq!(pod1.link_by_mac(&mac(1)).as_deref(), Some("eth0"));
    assert_eq!(pod1.addresses("eth0"), vec![att.address.clone()]);
    assert!(
        pod1.ping("10.77.0.1", 3),
        "pod cannot reach its vxnet gateway"
    );
    let nic = lab.hostnic(&att.hostnic).await;
    assert_eq!(phase(&nic), HostNicPhase::Bound);
    assert_eq!(
        nic.status
            .as_ref()
            .unwrap()
            .pod
            .as_ref()
            .unwrap()
            .container_id,
        "c1"
    );

    // Repeated ADD: same answer, nothing else claimed.
    let (code, again) = post(&socket, path::CLAIM, &claim_req(&pod1, "c1")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(serde_json::from_value::<Attachment>(again).unwrap(), att);
    assert_eq!(
        lab.hostnics()
            .await
            .iter()
            .filter(|n| phase(n) == HostNicPhase::Bound)
            .count(),
        1
    );

    // CHECK passes, then catches a removed route.
    let check = hostnic_agent_api::CheckRequest {
        key: claim_req(&pod1, "c1").key,
        netns: pod1.path().display().to_string(),
        expected: Some(hostnic_agent_api::Expected {
            mac: att.mac.clone(),
            address: att.address.clone(),
            mtu: None,
            routes: att.routes.clone(),
        }),
    };
    let (code, body) = post(&socket, path::CHECK, &check).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    pod1.ip(&["route", "del", "10.96.0.0/12"]);
    let (code, body) = post(&socket, path::CHECK, &check).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(error_kind(&body), ErrorKind::CheckFailed);
    assert!(
        body["message"].as_str().unwrap().contains("10.96.0.0/12"),
        "{body}"
    );

    // DEL, DEL again, and containerd's second DEL with no netns.
    let (code, body) = post(&socket, path::RELEASE, &release_req("c1", Some(&pod1))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_value::<Released>(body)
            .unwrap()
            .hostnic
            .as_deref(),
        Some(att.hostnic.as_str())
    );
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert!(lab.node.addresses("hn1").is_empty());
    assert_eq!(pod1.link_by_mac(&mac(1)), None);
    let nic = lab.hostnic(&att.hostnic).await;
    assert_eq!(phase(&nic), HostNicPhase::Released);
    assert!(nic.status.as_ref().unwrap().released_at.is_some());
    for req in [
        release_req("c1", Some(&pod1)),
        release_req("c1", None),
        release_req("unknown", None),
    ] {
        let (code, body) = post(&socket, path::RELEASE, &req).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_value::<Released>(body).unwrap().hostnic,
            None
        );
    }

    // GC keeps what the runtime lists and releases the rest.
    let (pod2, pod3) = (TestNetns::new("pod"), TestNetns::new("pod"));
    lab.create_pod("c2").await;
    lab.create_pod("c3").await;
    assert_eq!(
        post(&socket, path::CLAIM, &claim_req(&pod2, "c2")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post(&socket, path::CLAIM, &claim_req(&pod3, "c3")).await.0,
        StatusCode::OK
    );
    let gc = GcRequest {
        network: "hostnic".into(),
        valid_attachments: vec![claim_req(&pod2, "c2").key],
    };
    let (code, body) = post(&socket, path::GC, &gc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let gc: GcResponse = serde_json::from_value(body).unwrap();
    assert_eq!(gc.released, vec![claim_req(&pod3, "c3").key]);
    assert!(pod3.links().iter().all(|l| l.name == "lo"));
    assert_eq!(pod2.links().len(), 2);

    // Health and metrics.
    let health = agent.health_addr.expect("health server runs");
    assert_eq!(health_get(health, "/healthz").await.0, StatusCode::OK);
    assert_eq!(health_get(health, "/readyz").await.0, StatusCode::OK);
    let (code, metrics) = health_get(health, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        metrics.contains("hostnic_agent_claims_total{outcome=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hostnic_agent_releases_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hostnic_agent_claim_duration_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.contains("hostnic_agent_free_nics 0"), "{metrics}");

    // Every Kubernetes call made, test setup (creates, nicpool status) included: the agent's
    // part must stay within the RBAC rules in the report / manifests.
    let agent_rules = [
        "get /pods",
        "get hostnic.qingcloud.com/hostnics",
        "list hostnic.qingcloud.com/hostnics",
        "watch hostnic.qingcloud.com/hostnics",
        "update hostnic.qingcloud.com/hostnics/status",
        "list hostnic.qingcloud.com/nicpools",
        "watch hostnic.qingcloud.com/nicpools",
        "create events.k8s.io/events",
        "patch events.k8s.io/events",
    ];
    let setup = [
        "create /pods",
        "create hostnic.qingcloud.com/hostnics",
        "create hostnic.qingcloud.com/nicpools",
        "update hostnic.qingcloud.com/nicpools/status",
    ];
    for record in lab.server.audit() {
        let perm = record.permission();
        assert!(
            agent_rules.contains(&perm.as_str()) || setup.contains(&perm.as_str()),
            "unexpected API call {perm} ({})",
            record.path
        );
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_and_change_nothing() {
    if !require_root("bad_requests_get_4xx_and_change_nothing") {
        return;
    }
    let mut lab = Lab::new().await;
    lab.add_nic(1).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 1).await;
    let before: Vec<_> = lab
        .hostnics()
        .await
        .iter()
        .map(|n| n.resource_version())
        .collect();
    let socket = lab.socket();
    let pod = TestNetns::new("pod");

    let (code, body) = call(&socket, Method::POST, path::CLAIM, b"{not json".to_vec()).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
    );
    let huge = vec![b' '; hostnic_agent_api::MAX_BODY_BYTES + 1];
    let (code, _) = call(&socket, Method::POST, path::CLAIM, huge).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, body) = call(&socket, Method::POST, "/v1/steal", b"{}".to_vec()).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::NOT_FOUND, ErrorKind::InvalidRequest)
    );
    let (code, body) = post(&socket, "/v2/claim", &claim_req(&pod, "c1")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["message"].as_str().unwrap().contains("version"),
        "{body}"
    );
    let (code, _) = call(&socket, Method::GET, path::CLAIM, vec![]).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let mut bad_if = claim_req(&pod, "c1");
    bad_if.key.ifname = "eth0/../x".into();
    let (code, body) = post(&socket, path::CLAIM, &bad_if).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
    );
    let mut bad_ns = claim_req(&pod, "c1");
    bad_ns.netns = "/proc/self/status".into();
    let (code, body) = post(&socket, path::CLAIM, &bad_ns).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
    );
    let (code, _) = call(
        &socket,
        Method::POST,
        path::CLAIM,
        b"{\"container_id\":\"c\"}".to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<_> = lab
        .hostnics()
        .await
        .iter()
        .map(|n| n.resource_version())
        .collect();
    assert_eq!(before, after, "a bad request changed a HostNic");
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert!(pod.links().iter().all(|l| l.name == "lo"));
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_a_nic_twice() {
    if !require_root("concurrent_claims_never_hand_out_a_nic_twice") {
        return;
    }
    const NICS: usize = 5;
    const PODS: usize = 32;
    let mut lab = Lab::new().await;
    for i in 1..=NICS {
        lab.add_nic(i).await;
    }
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, NICS as u32).await;
    let pods: Vec<Arc<TestNetns>> = (0..PODS).map(|_| Arc::new(TestNetns::new("pod"))).collect();
    for i in 0..PODS {
        lab.create_pod(&format!("c{i}")).await;
    }
    let socket = lab.socket();
    let mut tasks = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let (socket, pod) = (socket.clone(), pod.clone());
        tasks.push(tokio::spawn(async move {
            post(&socket, path::CLAIM, &claim_req(&pod, &format!("c{i}"))).await
        }));
    }
    let mut ok = Vec::new();
    let mut later = 0;
    for t in tasks {
        let (code, body) = t.await.unwrap();
        if code == StatusCode::OK {
            ok.push(serde_json::from_value::<Attachment>(body).unwrap());
        } else {
            assert_eq!(error_kind(&body), ErrorKind::TryAgainLater, "{code} {body}");
            later += 1;
        }
    }
    assert_eq!(ok.len(), NICS);
    assert_eq!(later, PODS - NICS);
    let mut macs: Vec<_> = ok.iter().map(|a| a.mac.clone()).collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), NICS, "a NIC was handed out twice: {ok:?}");
    assert_invariants(&lab, &pods).await;
}

/// Each NIC is in at most one place, each Bound HostNic's link is in its pod under its pod
/// name, and no NIC is Bound twice.
async fn assert_invariants(lab: &Lab, pods: &[Arc<TestNetns>]) {
    let mut places: HashMap<String, Vec<String>> = HashMap::new();
    for l in lab.node.links() {
        places.entry(l.mac.clone()).or_default().push("node".into());
    }
    for p in pods {
        for l in p.links() {
            places
                .entry(l.mac.clone())
                .or_default()
                .push(p.name().to_owned());
        }
    }
    let by_path: HashMap<String, &TestNetns> = pods
        .iter()
        .map(|p| (p.path().display().to_string(), &**p))
        .collect();
    for nic in lab.hostnics().await {
        let st = nic.status.clone().unwrap();
        let m = st.nic_id.clone().unwrap();
        let seen = places.get(&m).cloned().unwrap_or_default();
        assert!(seen.len() <= 1, "NIC {m} is in several netns: {seen:?}");
        if st.phase == HostNicPhase::Bound {
            let pod = st.pod.clone().unwrap();
            let ns = by_path.get(&pod.netns).expect("bound to a test pod");
            assert_eq!(
                ns.link_by_mac(&m).as_deref(),
                Some(pod.interface.as_str()),
                "bound NIC {m} not in its pod"
            );
        } else {
            assert_eq!(
                seen,
                vec!["node".to_owned()],
                "free NIC {m} ({:?}) not on the node",
                st.phase
            );
        }
    }
}

#[tokio::test]
async fn restart_keeps_live_pods_and_releases_half_done_claims() {
    if !require_root("restart_keeps_live_pods_and_releases_half_done_claims") {
        return;
    }
    let mut lab = Lab::new().await;
    for i in 1..=3 {
        lab.add_nic(i).await;
    }
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 3).await;
    let socket = lab.socket();
    let live = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c1").await;
    let (code, body) = post(&socket, path::CLAIM, &claim_req(&live, "c1")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let att: Attachment = serde_json::from_value(body).unwrap();
    drop(agent);

    // A claim recorded on the HostNic whose kernel step never ran (killed in between).
    let half = Arc::new(TestNetns::new("pod"));
    let api: Api<HostNic> = Api::all(lab.client.clone());
    let victim = lab.nics[&mac(2)].clone();
    let mut nic = api.get(&victim).await.unwrap();
    let st = nic.status.as_mut().unwrap();
    st.phase = HostNicPhase::Bound;
    st.pod = Some(hostnic_crds::PodRef {
        namespace: "default".into(),
        name: "c2".into(),
        uid: None,
        container_id: "c2".into(),
        netns: half.path().display().to_string(),
        interface: "eth0".into(),
        network: None,
    });
    api.replace_status(&victim, &PostParams::default(), &nic)
        .await
        .unwrap();
    let live_index = live.ip(&["-j", "link", "show", "eth0"]);

    let agent = lab.start_agent().await;
    assert_eq!(phase(&lab.hostnic(&victim).await), HostNicPhase::Released);
    assert_eq!(phase(&lab.hostnic(&att.hostnic).await), HostNicPhase::Bound);
    assert_eq!(
        live.ip(&["-j", "link", "show", "eth0"]),
        live_index,
        "live pod was touched"
    );
    assert_eq!(live.addresses("eth0"), vec![att.address.clone()]);
    // The repeated ADD after the restart still gets the same answer.
    let (code, body) = post(&socket, path::CLAIM, &claim_req(&live, "c1")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_value::<Attachment>(body).unwrap(), att);
    assert_invariants(&lab, &[live.clone(), half.clone()]).await;
    drop(agent);
}

#[tokio::test]
async fn sweep_releases_nics_of_vanished_pods() {
    if !require_root("sweep_releases_nics_of_vanished_pods") {
        return;
    }
    let mut lab = Lab::new().await;
    lab.add_nic(1).await;
    lab.add_nic(2).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 2).await;
    let socket = lab.socket();
    let (gone_ns, gone_pod) = (TestNetns::new("pod"), TestNetns::new("pod"));
    lab.create_pod("c1").await;
    lab.create_pod("c2").await;
    let (_, a1) = post(&socket, path::CLAIM, &claim_req(&gone_ns, "c1")).await;
    let (_, a2) = post(&socket, path::CLAIM, &claim_req(&gone_pod, "c2")).await;
    let (a1, a2): (Attachment, Attachment) = (
        serde_json::from_value(a1).unwrap(),
        serde_json::from_value(a2).unwrap(),
    );
    assert_eq!(hostnic_agent::hygiene::sweep(&agent.agent).await, 0);

    drop(gone_ns);
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), "default");
    pods.delete("c2", &DeleteParams::default()).await.unwrap();
    assert_eq!(hostnic_agent::hygiene::sweep(&agent.agent).await, 2);
    assert_eq!(
        phase(&lab.hostnic(&a1.hostnic).await),
        HostNicPhase::Released
    );
    assert_eq!(
        phase(&lab.hostnic(&a2.hostnic).await),
        HostNicPhase::Released
    );
    // The pod's netns still exists but its NIC is home again.
    assert!(lab.node.link_by_mac(&mac(2)).is_some());
    assert!(gone_pod.links().iter().all(|l| l.name == "lo"));
}

// === the real binary, killed mid-claim ===

/// The agent binary as a child process; killed with SIGKILL on drop.
struct AgentProcess(std::process::Child);

impl AgentProcess {
    fn spawn(lab: &Lab) -> Self {
        let kubeconfig = lab.dir.path().join("kubeconfig");
        lab.server.write_kubeconfig(&kubeconfig).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hostnic-agent"))
            .env("KUBECONFIG", &kubeconfig)
            .env("NODE_NAME", &lab.node_name)
            .env("RUST_LOG", "hostnic_agent=info")
            .arg("--node-netns")
            .arg(lab.node.path())
            .arg("--socket")
            .arg(lab.socket())
            .args(["--health-addr", "127.0.0.1:0", "--link-scan-seconds", "1"])
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(lab.dir.path().join("agent.log"))
                    .unwrap(),
            )
            .spawn()
            .expect("start hostnic-agent");
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the agent on the lab's socket reports `free` free NICs and has synced.
async fn wait_ready(lab: &Lab, free: u32) {
    let wait = async {
        loop {
            if lab.socket().exists()
                && let Ok(Ok(stream)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::UnixStream::connect(lab.socket()),
                )
                .await
            {
                drop(stream);
                let (code, body) = call(&lab.socket(), Method::GET, path::STATUS, vec![]).await;
                if code == StatusCode::OK
                    && let Ok(s) = serde_json::from_value::<AgentStatus>(body)
                    && s.synced
                    && s.free_nics >= free
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        let log = std::fs::read_to_string(lab.dir.path().join("agent.log")).unwrap_or_default();
        panic!("agent never became ready; its log:\n{log}");
    }
}

/// Ends the quarantine of every Released HostNic, as the operator does.
async fn return_released(lab: &Lab) {
    let api: Api<HostNic> = Api::all(lab.client.clone());
    for mut nic in lab.hostnics().await {
        let st = nic.status.as_mut().unwrap();
        if st.phase == HostNicPhase::Released {
            st.phase = HostNicPhase::Available;
            st.pod = None;
            st.released_at = None;
            api.replace_status(&nic.name_any(), &PostParams::default(), &nic)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_claim_and_restarted_keeps_the_invariants() {
    if !require_root("killed_mid_claim_and_restarted_keeps_the_invariants") {
        return;
    }
    const NICS: usize = 8;
    const PODS: usize = 6;
    let mut lab = Lab::new().await;
    for i in 1..=NICS {
        lab.add_nic(i).await;
    }
    let mut all_pods: Vec<Arc<TestNetns>> = Vec::new();
    let mut agent = AgentProcess::spawn(&lab);
    // Kill points: right after the first answer, and after fixed delays that land mid-claim.
    for (round, kill_after_ms) in [None, Some(5), Some(25)].into_iter().enumerate() {
        wait_ready(&lab, 1).await;
        let pods: Vec<Arc<TestNetns>> =
            (0..PODS).map(|_| Arc::new(TestNetns::new("pod"))).collect();
        for i in 0..PODS {
            lab.create_pod(&format!("r{round}c{i}")).await;
        }
        let socket = lab.socket();
        let tasks: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (socket, pod) = (socket.clone(), pod.clone());
                tokio::spawn(async move {
                    post(
                        &socket,
                        path::CLAIM,
                        &claim_req(&pod, &format!("r{round}c{i}")),
                    )
                    .await
                })
            })
            .collect();
        match kill_after_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => {
                while !tasks.iter().any(|t| t.is_finished()) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        agent.kill();
        let mut answered = 0;
        for t in tasks {
            if matches!(t.await, Ok((StatusCode::OK, _))) {
                answered += 1;
            }
        }
        let bound_before = lab
            .hostnics()
            .await
            .iter()
            .filter(|n| phase(n) == HostNicPhase::Bound)
            .count();
        all_pods.extend(pods);

        agent = AgentProcess::spawn(&lab);
        wait_ready(&lab, 0).await;
        assert_invariants(&lab, &all_pods).await;
        let nics = lab.hostnics().await;
        let count = |p| nics.iter().filter(|n| phase(n) == p).count();
        let (bound, released) = (count(HostNicPhase::Bound), count(HostNicPhase::Released));
        eprintln!(
            "round {round}: killed after {answered} answered claims ({bound_before} recorded); \
             after restart {bound} bound, {released} released"
        );
        assert!(bound >= answered, "an answered claim was lost");
        return_released(&lab).await;
    }
}

// === through libcni and the hostnic plugin ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcni_add_check_del_through_the_plugin() {
    if !require_root("libcni_add_check_del_through_the_plugin") {
        return;
    }
    let mut lab = Lab::new().await;
    lab.add_nic(1).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 1).await;
    lab.create_pod("p1").await;
    let pod = TestNetns::new("pod");
    let conflist = lab.dir.path().join("hostnic.conflist");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "hostnic",
        "plugins": [{"type": "hostnic", "socket": lab.socket()}]
    });
    std::fs::write(&conflist, serde_json::to_vec(&conf).unwrap()).unwrap();
    let plugin_dir = hostnic_tests::bins::bin("hostnic")
        .parent()
        .unwrap()
        .to_path_buf();
    let rt =
        hostnic_tests::cni_runtime::CniRuntime::new([plugin_dir], lab.dir.path().join("cache"))
            .cni_args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID=ctr1");
    let (rt, netns, conflist_path) = (Arc::new(rt), pod.path(), conflist.clone());

    let blocking = |f: Box<dyn FnOnce() -> Value + Send>| tokio::task::spawn_blocking(f);
    let (r, n, c) = (rt.clone(), netns.clone(), conflist_path.clone());
    let result = blocking(Box::new(move || {
        r.add(&c, "ctr1", &n, "eth0").expect("ADD")
    }))
    .await
    .unwrap();
    assert_eq!(result["interfaces"][0]["name"], "eth0", "{result}");
    assert_eq!(
        result["ips"][0]["address"],
        format!("{}/24", ip(1)),
        "{result}"
    );
    assert_eq!(pod.link_by_mac(&mac(1)).as_deref(), Some("eth0"));

    let (r, n, c) = (rt.clone(), netns.clone(), conflist_path.clone());
    blocking(Box::new(move || {
        r.check(&c, "ctr1", &n, "eth0").expect("CHECK");
        Value::Null
    }))
    .await
    .unwrap();
    pod.ip(&["addr", "flush", "dev", "eth0"]);
    let (r, n, c) = (rt.clone(), netns.clone(), conflist_path.clone());
    let failed = blocking(Box::new(move || {
        json!(r.check(&c, "ctr1", &n, "eth0").is_err())
    }))
    .await
    .unwrap();
    assert_eq!(failed, json!(true), "CHECK missed a removed address");

    for netns in [netns.clone(), PathBuf::new()] {
        let (r, c) = (rt.clone(), conflist_path.clone());
        blocking(Box::new(move || {
            r.del(&c, "ctr1", &netns, "eth0").expect("DEL");
            Value::Null
        }))
        .await
        .unwrap();
    }
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert_eq!(
        phase(&lab.hostnic(&lab.nics[&mac(1)]).await),
        HostNicPhase::Released
    );
}

// === gateway NICs and figures ===

#[tokio::test]
async fn gateway_nics_are_configured_on_the_node_and_never_claimed() {
    if !require_root("gateway_nics_are_configured_on_the_node_and_never_claimed") {
        return;
    }
    let mut lab = Lab::new().await;
    let name = lab.add_nic(9).await;
    let api: Api<HostNic> = Api::all(lab.client.clone());
    let mut nic = api.get(&name).await.unwrap();
    nic.spec.role = NicRole::Gateway;
    let nic = api
        .replace(&name, &PostParams::default(), &nic)
        .await
        .unwrap();
    assert_eq!(nic.spec.role, NicRole::Gateway);
    let agent = lab.start_agent().await;
    let wait = async {
        while lab.node.addresses("hn9") != vec![format!("{}/24", ip(9))] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("gateway NIC configured");
    assert!(
        lab.node
            .links()
            .iter()
            .find(|l| l.name == "hn9")
            .unwrap()
            .up
    );
    let status = agent.agent.status();
    assert_eq!((status.free_nics, status.ready), (0, false), "{status:?}");
    let pod = TestNetns::new("pod");
    lab.create_pod("c1").await;
    let (code, body) = post(&lab.socket(), path::CLAIM, &claim_req(&pod, "c1")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_kind(&body), ErrorKind::TryAgainLater);
}

/// Prints claim and release round-trip times over the socket (no timing assertions).
#[tokio::test]
async fn claim_and_release_figures() {
    if !require_root("claim_and_release_figures") {
        return;
    }
    const N: usize = 12;
    let mut lab = Lab::new().await;
    for i in 1..=N {
        lab.add_nic(i).await;
    }
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, N as u32).await;
    let pods: Vec<TestNetns> = (0..N).map(|_| TestNetns::new("pod")).collect();
    for i in 0..N {
        lab.create_pod(&format!("c{i}")).await;
    }
    let socket = lab.socket();
    let (mut claims, mut releases) = (Vec::new(), Vec::new());
    for (i, pod) in pods.iter().enumerate() {
        let t = std::time::Instant::now();
        let (code, body) = post(&socket, path::CLAIM, &claim_req(pod, &format!("c{i}"))).await;
        claims.push(t.elapsed());
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    for (i, pod) in pods.iter().enumerate() {
        let t = std::time::Instant::now();
        let (code, body) = post(
            &socket,
            path::RELEASE,
            &release_req(&format!("c{i}"), Some(pod)),
        )
        .await;
        releases.push(t.elapsed());
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    for (what, mut v) in [("claim", claims), ("release", releases)] {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
            v.len(),
            ms(v[v.len() / 2]),
            ms(v[(v.len() * 99 / 100).min(v.len() - 1)]),
            ms(v[v.len() - 1])
        );
    }
}

#[tokio::test]
async fn a_claim_failing_in_the_kernel_is_undone_and_reported() {
    if !require_root("a_claim_failing_in_the_kernel_is_undone_and_reported") {
        return;
    }
    let mut lab = Lab::new().await;
    let name = lab.add_nic(1).await;
    let agent = lab.start_agent().await;
    lab.wait_free(&agent, 1).await;
    let pod = TestNetns::new("pod");
    lab.create_pod("c1").await;
    let mut req = claim_req(&pod, "c1");
    // The kernel refuses a next hop outside the pod's subnet: the last step fails.
    req.routes.push(hostnic_agent_api::Route {
        dst: "10.200.0.0/16".into(),
        gw: Some("192.168.99.1".into()),
    });
    let (code, body) = post(&lab.socket(), path::CLAIM, &req).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("add route"),
        "{body}"
    );
    let nic = lab.hostnic(&name).await;
    assert_eq!(phase(&nic), HostNicPhase::Available);
    assert_eq!(nic.status.unwrap().pod, None);
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert!(pod.links().iter().all(|l| l.name == "lo"));

    // The NIC is free again and the next claim gets it; both outcomes are events on it.
    let (code, body) = post(&lab.socket(), path::CLAIM, &claim_req(&pod, "c1")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(lab.client.clone(), "default");
    let wait = async {
        loop {
            let reasons: Vec<String> = events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                })
                .filter_map(|e| e.reason)
                .collect();
            if reasons.contains(&"ClaimFailed".to_owned())
                && reasons.contains(&"Claimed".to_owned())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("ClaimFailed and Claimed events");
}

/// The `LinkReady` condition's status of HostNic `name`, if reported.
async fn link_ready(lab: &Lab, name: &str) -> Option<String> {
    lab.hostnic(name)
        .await
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "LinkReady")
        .map(|c| c.status)
}

/// Waits up to `within` for HostNic `name`'s `LinkReady` to become `want`.
async fn wait_link_ready(lab: &Lab, name: &str, want: &str, within: Duration) {
    let wait = async {
        while link_ready(lab, name).await.as_deref() != Some(want) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(within, wait).await.is_err() {
        let status = lab.hostnic(name).await.status;
        panic!("LinkReady of {name} never became {want} within {within:?}: {status:?}");
    }
}

/// With the periodic scan an hour away, a NIC plugged into (or pulled from) the node after
/// its HostNic exists is still reported at once: link events wake the link pass.
#[tokio::test]
async fn hot_plugged_link_is_reported_without_waiting_for_the_scan() {
    if !require_root("hot_plugged_link_is_reported_without_waiting_for_the_scan") {
        return;
    }
    let mut lab = Lab::new().await;
    let name = lab.add_hostnic(5).await;
    let args = Args {
        link_scan_seconds: 3600,
        ..lab.args()
    };
    let agent = run::start(&args, lab.client.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), agent.wait_recovered())
        .await
        .expect("agent recovers");
    wait_link_ready(&lab, &name, "False", Duration::from_secs(10)).await;
    // Let the pass that the agent's own status write triggers go by, so only a link event
    // can wake the next one.
    tokio::time::sleep(Duration::from_secs(1)).await;

    lab.node.add_fake_nic("hn5", &mac(5));
    wait_link_ready(&lab, &name, "True", Duration::from_secs(5)).await;
    let nic = lab.hostnic(&name).await;
    assert_eq!(
        nic.status.and_then(|s| s.host_interface).as_deref(),
        Some("hn5")
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.node.ip(&["link", "del", "hn5"]);
    wait_link_ready(&lab, &name, "False", Duration::from_secs(5)).await;
    drop(agent);
}
