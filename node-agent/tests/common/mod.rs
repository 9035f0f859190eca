//! The agent's test lab: the in-memory API server, a node netns with veth "NICs", NicPools and
//! HostNics made as the operator would, the agent started in-process, and a client for its
//! unix socket.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::future::{Future, ready};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinHandle;

use hostnic_agent::args::Args;
use hostnic_agent::run::{self, Running};
use hostnic_agent_api::{
    ApiError, Attachment, AttachmentKey, ClaimRequest, ErrorKind, PodInfo, ReleaseRequest, path,
};
use hostnic_crds::{
    HostNic, HostNicPhase, HostNicSpec, HostNicStatus, NicPool, NicPoolSpec, NicRole,
};
use hostnic_tests::cni_runtime::CniRuntime;
use hostnic_tests::netns::TestNetns;
use hostnic_tests::scratch::{self, Turn};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// The default pool of a lab.
pub const POOL: &str = "pool-a";
pub const VXNET: &str = "vxnet-abc";
/// The node's own NIC in the vxnet (its stand-in's name and MAC).
const NODE_NIC: &str = "vxnode";
const NODE_NIC_MAC: &str = "52:54:00:fe:fe:fe";

// === test client ===

/// Sends one request on the agent socket; returns the status and the JSON body. A connection
/// cut off midway (the agent killed) answers 599 and `null`.
pub async fn call(socket: &Path, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
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

pub async fn post<T: serde::Serialize>(socket: &Path, uri: &str, body: &T) -> (StatusCode, Value) {
    call(socket, Method::POST, uri, serde_json::to_vec(body).unwrap()).await
}

/// GETs a path of the agent's health server.
pub async fn health_get(addr: std::net::SocketAddr, uri: &str) -> (StatusCode, String) {
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

pub fn error_kind(body: &Value) -> ErrorKind {
    serde_json::from_value::<ApiError>(body.clone())
        .expect("ApiError body")
        .kind
}

/// A claim for `container` (also the pod's name) as `eth0` in `pod`, on network "hostnic",
/// willing to wait 30 s for a NIC on its way.
pub fn claim_req(pod: &TestNetns, container: &str) -> ClaimRequest {
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
        wait_for_nic_seconds: 30,
        network: Some("hostnic".into()),
        mtu: None,
        routes: vec![],
    }
}

pub fn release_req(container: &str, netns: Option<&TestNetns>) -> ReleaseRequest {
    ReleaseRequest {
        key: AttachmentKey {
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        netns: netns.map(|n| n.path().display().to_string()),
    }
}

pub fn phase(nic: &HostNic) -> HostNicPhase {
    nic.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Runs blocking (libcni) work off the runtime's threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Polls `done` every `every` until it holds; false if it did not within `within`.
pub async fn eventually<F, Fut>(within: Duration, every: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let wait = async {
        while !done().await {
            tokio::time::sleep(every).await;
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

/// Starts the agent and waits (at most 20 s) until it has recovered.
pub async fn start_recovered(args: &Args, client: Client) -> Running {
    let running = run::start(args, client).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), running.wait_recovered())
        .await
        .expect("agent recovers");
    running
}

// === the lab ===

/// NIC `i`'s MAC in the lab whose vxnet is `10.<net>.0.0/24`.
pub fn mac(net: u8, i: usize) -> String {
    format!("52:54:0a:{net:02x}:01:{i:02x}")
}

/// NIC `i`'s address in the lab whose vxnet is `10.<net>.0.0/24`.
pub fn ip(net: u8, i: usize) -> String {
    format!("10.{net}.0.{}", 10 + i)
}

/// kube-mem, a node netns and a temp dir for the agent's socket; NicPools and HostNics made as
/// the operator would, in the vxnet `10.<net>.0.0/24` (each test binary its own).
pub struct Lab {
    /// The lab's own kube-mem, or None on the scratch cluster (`_turn`, held for the lab's life).
    pub server: Option<kube_mem::KubeMemHandle>,
    _turn: Option<Turn>,
    /// The admin kubeconfig of the lab's API server.
    kubeconfig: String,
    pub client: Client,
    pub node_name: String,
    pub node: TestNetns,
    pub dir: tempfile::TempDir,
    /// NIC MAC -> HostNic name.
    pub nics: BTreeMap<String, String>,
    net: u8,
}

impl Lab {
    /// A lab without any NicPool.
    pub async fn new(net: u8) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| "hostnic_agent=debug,kube=warn".into()),
            )
            .try_init();
        let (server, turn, client, kubeconfig) = match scratch::kubeconfig() {
            Some(path) => {
                let turn = Turn::take(&path).await.expect("the scratch cluster");
                let client = turn.client.clone();
                let yaml = turn.kubeconfig_yaml.clone();
                (None, Some(turn), client, yaml)
            }
            None => {
                let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
                let server = kube_mem::KubeMem::builder()
                    .with_crds_from_dir(crds)
                    .start()
                    .await
                    .unwrap();
                let client = server.client().await.unwrap();
                let yaml = server.kubeconfig_yaml();
                (Some(server), None, client, yaml)
            }
        };
        let node = TestNetns::new("node");
        Self {
            server,
            _turn: turn,
            kubeconfig,
            client,
            node_name: node.name().to_owned(),
            node,
            dir: tempfile::tempdir().unwrap(),
            nics: BTreeMap::new(),
            net,
        }
    }

    /// A lab with the default pool [`POOL`]: the Service CIDR routed via the node, whose
    /// address in the vxnet is `.254`.
    pub async fn with_pool(net: u8) -> Self {
        let lab = Self::new(net).await;
        lab.create_pool(POOL, true, &["10.96.0.0/12"], &format!("10.{net}.0.254"))
            .await;
        lab
    }

    pub fn mac(&self, i: usize) -> String {
        mac(self.net, i)
    }

    /// The admin kubeconfig of the lab's API server.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig.clone()
    }

    /// The API server's address, for a proxy in front of it.
    pub async fn api_addr(&self) -> std::net::SocketAddr {
        match &self.server {
            Some(server) => server.addr(),
            None => scratch::server_addr(&self.kubeconfig_yaml())
                .await
                .expect("the scratch cluster's address"),
        }
    }

    /// A client reaching the API server at `addr` (a proxy in front of it).
    pub async fn client_via(&self, addr: std::net::SocketAddr) -> Client {
        let kubeconfig = scratch::via(&self.kubeconfig_yaml(), addr).expect("kubeconfig");
        scratch::client(kubeconfig).await.expect("client")
    }

    pub fn ip(&self, i: usize) -> String {
        ip(self.net, i)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/hostnic.sock")
    }

    pub fn args(&self) -> Args {
        Args {
            node_name: self.node_name.clone(),
            node_netns: Some(self.node.path()),
            socket: self.socket(),
            health_addr: "127.0.0.1:0".parse().unwrap(),
            sweep_seconds: 3600,
            link_scan_seconds: 1,
            shutdown_grace_seconds: 20,
            uninstall: false,
            wait_for_nic_seconds: 30,
            log_format: "text".into(),
        }
    }

    pub async fn start_agent(&self) -> Running {
        start_recovered(&self.args(), self.client.clone()).await
    }

    /// Starts the agent and waits until it offers `n` free NICs.
    pub async fn start_agent_free(&self, n: u32) -> Running {
        let agent = self.start_agent().await;
        self.wait_free(&agent, n).await;
        agent
    }

    pub async fn wait_free(&self, agent: &Running, n: u32) {
        let shown = eventually(Duration::from_secs(20), Duration::from_millis(50), || {
            ready(agent.agent.status().free_nics >= n)
        })
        .await;
        assert!(
            shown,
            "{n} free NICs never showed: {:?}",
            agent.agent.status()
        );
    }

    fn pool_spec(routes: &[&str]) -> NicPoolSpec {
        NicPoolSpec {
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
        }
    }

    /// Creates NicPool `name` with `routes` (gateway `0.0.0.0`); the node's own address in the
    /// vxnet becomes `node_address` (see [`Self::set_node_address`]).
    pub async fn create_pool(
        &self,
        name: &str,
        default: bool,
        routes: &[&str],
        node_address: &str,
    ) {
        let pools: Api<NicPool> = Api::all(self.client.clone());
        let mut pool = NicPool::new(name, Self::pool_spec(routes));
        if default {
            pool.metadata.annotations = Some(
                [(
                    hostnic_crds::DEFAULT_POOL_ANNOTATION.to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            );
        }
        pools.create(&PostParams::default(), &pool).await.unwrap();
        self.set_node_address(Some(node_address));
    }

    /// Replaces NicPool `name`'s routes and the node's address in the vxnet.
    pub async fn update_pool(&self, name: &str, routes: &[&str], node_address: &str) {
        let pools: Api<NicPool> = Api::all(self.client.clone());
        let mut pool = pools.get(name).await.unwrap();
        pool.spec = Self::pool_spec(routes);
        pools
            .replace(name, &PostParams::default(), &pool)
            .await
            .unwrap();
        self.set_node_address(Some(node_address));
    }

    /// Gives the node `address` in the vxnet, as its primary or gateway NIC would carry it (on
    /// a veth stand-in, replacing the address it had; `None` leaves it none): where routes via
    /// `0.0.0.0` go.
    pub fn set_node_address(&self, address: Option<&str>) {
        if self.node.link_by_mac(NODE_NIC_MAC).is_none() {
            self.node.add_fake_nic(NODE_NIC, NODE_NIC_MAC);
            self.node.ip(&["link", "set", NODE_NIC, "up"]);
        }
        self.node.ip(&["addr", "flush", "dev", NODE_NIC]);
        if let Some(address) = address {
            self.node
                .ip(&["addr", "add", &format!("{address}/24"), "dev", NODE_NIC]);
        }
    }

    /// Writes the operator's `Degraded=True` on `name`: the pool cannot grow, nothing is coming.
    /// A merge patch, as the agent's waiting-annotation patches may land meanwhile (a replace
    /// with the resourceVersion read would conflict with them).
    pub async fn set_pool_degraded(&self, name: &str) {
        let degraded = Condition {
            type_: "Degraded".into(),
            status: "True".into(),
            reason: "VxnetExhausted".into(),
            message: "no address left".into(),
            last_transition_time: Time(jiff::Timestamp::now()),
            observed_generation: None,
        };
        Api::<NicPool>::all(self.client.clone())
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": [degraded]}})),
            )
            .await
            .unwrap();
    }

    /// Adds a veth "NIC" to the node netns and an Available HostNic of [`POOL`] for it.
    pub async fn add_nic(&mut self, i: usize) -> String {
        self.add_nic_in(POOL, i).await
    }

    /// Adds a veth "NIC" to the node netns and an Available HostNic of `pool` for it.
    pub async fn add_nic_in(&mut self, pool: &str, i: usize) -> String {
        self.node.add_fake_nic(&format!("hn{i}"), &self.mac(i));
        self.add_hostnic_in(pool, i).await
    }

    /// Adds NICs `1..=n` (see [`Lab::add_nic`]).
    pub async fn add_nics(&mut self, n: usize) {
        for i in 1..=n {
            self.add_nic(i).await;
        }
    }

    /// Adds an Available HostNic of [`POOL`] for NIC `i` without its link on the node.
    pub async fn add_hostnic(&mut self, i: usize) -> String {
        self.add_hostnic_in(POOL, i).await
    }

    async fn add_hostnic_in(&mut self, pool: &str, i: usize) -> String {
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
            nic_id: Some(self.mac(i)),
            private_ip: Some(self.ip(i)),
            vxnet_cidr: Some(format!("10.{}.0.0/24", self.net)),
            vxnet_gateway: Some(format!("10.{}.0.1", self.net)),
            instance: Some("i-test".into()),
            ..Default::default()
        });
        api.replace_status(&name, &PostParams::default(), &created)
            .await
            .unwrap();
        self.nics.insert(self.mac(i), name.clone());
        name
    }

    /// Puts HostNic `name` in `phase`, as the operator does: read again and retried when the
    /// agent wrote it meanwhile (a link report), as the operator's optimistic write is.
    pub async fn set_phase(&self, name: &str, phase: HostNicPhase) {
        let api: Api<HostNic> = Api::all(self.client.clone());
        for _ in 0..10 {
            let mut nic = api.get(name).await.unwrap();
            nic.status.as_mut().unwrap().phase = phase;
            match api.replace_status(name, &PostParams::default(), &nic).await {
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                r => {
                    r.unwrap();
                    return;
                }
            }
        }
        panic!("{name}: 10 conflicting writes in a row");
    }

    /// The NicPool annotation telling the operator an ADD on this node waits.
    pub async fn waiting_annotation(&self) -> Option<String> {
        let pool = Api::<NicPool>::all(self.client.clone())
            .get(POOL)
            .await
            .unwrap();
        pool.annotations()
            .get(&hostnic_crds::waiting_annotation(&self.node_name))
            .cloned()
    }

    /// Waits until the NicPool says an ADD on this node waits.
    pub async fn wait_told(&self) {
        assert!(
            self.says_waiting_within_10s(true).await,
            "the NicPool never said that an ADD waits"
        );
    }

    /// Whether, within 10 s, the NicPool says that an ADD on this node waits (`waits`) or no
    /// longer does.
    pub async fn says_waiting_within_10s(&self, waits: bool) -> bool {
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async move { self.waiting_annotation().await.is_some() == waits },
        )
        .await
    }

    pub async fn hostnics(&self) -> Vec<HostNic> {
        let api: Api<HostNic> = Api::all(self.client.clone());
        api.list(&Default::default()).await.unwrap().items
    }

    pub async fn hostnic(&self, name: &str) -> HostNic {
        Api::<HostNic>::all(self.client.clone())
            .get(name)
            .await
            .unwrap()
    }

    pub async fn create_pod(&self, name: &str) {
        self.create_pod_for(name, None).await;
    }

    /// Creates pod `name`, with `pool` as its pool annotation if given.
    pub async fn create_pod_for(&self, name: &str, pool: Option<&str>) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let annotations = pool
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

    /// POSTs a claim on the lab's socket.
    pub async fn claim(&self, req: &ClaimRequest) -> (StatusCode, Value) {
        post(&self.socket(), path::CLAIM, req).await
    }

    /// A claim that must succeed: its attachment.
    pub async fn claimed(&self, req: &ClaimRequest) -> Attachment {
        let (code, body) = self.claim(req).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// A new pod netns and pod `container` in the API that claimed a NIC: both, and the
    /// attachment.
    pub async fn pod_claimed(&self, container: &str) -> (TestNetns, Attachment) {
        let pod = TestNetns::new("pod");
        self.create_pod(container).await;
        let att = self.claimed(&claim_req(&pod, container)).await;
        (pod, att)
    }

    /// POSTs a claim on the lab's socket from a task of its own, to act while it is held.
    pub fn spawn_claim(&self, req: ClaimRequest) -> JoinHandle<(StatusCode, Value)> {
        let socket = self.socket();
        tokio::spawn(async move { post(&socket, path::CLAIM, &req).await })
    }

    /// A libcni runtime with the `hostnic` plugin under test, passing `cni_args`.
    pub fn runtime(&self, cni_args: &str) -> CniRuntime {
        let plugin_dir = hostnic_tests::bins::bin("hostnic")
            .parent()
            .unwrap()
            .to_path_buf();
        CniRuntime::new([plugin_dir], self.dir.path().join("cache")).cni_args(cni_args)
    }

    /// Writes a conflist `file` with `plugin` as the `hostnic` plugin on the lab's socket.
    pub fn conflist(&self, file: &str, plugin: Value) -> PathBuf {
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
