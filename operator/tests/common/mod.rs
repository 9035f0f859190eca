//! Test environment: the in-memory API server (or the scratch cluster named by
//! `HOSTNIC_TEST_KUBECONFIG`, see `hostnic_tests::scratch`), the QingCloud simulator (over real
//! HTTP, through the real client), a stand-in agent that reports LinkReady once the simulator
//! says a NIC is attached, and the operator as a task that can be stopped or killed and
//! restarted.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hostnic_crds::{
    HostNic, HostNicPhase, HostNicStatus, NicPool, NicPoolSpec, PodRef, ReclaimPolicy,
};
use hostnic_operator::args::Settings;
use hostnic_operator::cloud::CloudApi;
use hostnic_operator::cloud::batch::BatchConfig;
use hostnic_operator::cloud::qingcloud::QingCloud;
use hostnic_operator::controller::Checkpoint;
use hostnic_operator::controller::create_batch::BatchTag;
use hostnic_operator::metrics::Metrics;
use hostnic_operator::run::{LeaseConfig, Operator};
use hostnic_tests::scratch::{self, Turn};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use qingcloud_sim::{InstanceSpec, JobLatency, Latency, SimHandle, Simulator, VxnetSpec};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const PREFIX: &str = "hostnic-test-";
/// Bearer token of the operator's own identity (a service account), so the audit log tells its
/// requests from the test's.
pub const OP_TOKEN: &str = "hostnic-operator-token";
pub const OP_USER: &str = "system:serviceaccount:hostnic-system:hostnic-operator";
pub const VX_A: &str = "vxnet-aaaaaaa";
pub const VX_B: &str = "vxnet-bbbbbbb";

/// What a test environment is made of.
pub struct Setup {
    /// (vxnet id, cidr).
    pub vxnets: Vec<(&'static str, &'static str)>,
    /// (instance id = node name, vxnet of its primary NIC).
    pub nodes: Vec<(&'static str, &'static str)>,
    /// Fixed job latency (pending + working), ms.
    pub job_ms: u64,
    /// Operator settings.
    pub settings: Settings,
    /// Batch config.
    pub batch: BatchConfig,
    /// Further simulator settings (visibility lag, quotas, batch limits...).
    pub sim: fn(&mut qingcloud_sim::SimConfig),
    /// Serve the API over TLS: kubectl sends its bearer token only over TLS.
    pub kube_tls: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            vxnets: vec![(VX_A, "10.10.0.0/24"), (VX_B, "10.20.0.0/24")],
            nodes: vec![("i-node0001", VX_A)],
            job_ms: 200,
            settings: test_settings(),
            batch: BatchConfig {
                window: Duration::from_millis(50),
                max_attach: 5,
                max_detach: 20,
                max_delete: 100,
                round_wait: Duration::from_secs(5),
            },
            sim: |_| {},
            kube_tls: false,
        }
    }
}

pub fn test_settings() -> Settings {
    Settings {
        nic_prefix: PREFIX.into(),
        instance_annotation: "node.beta.kubernetes.io/instance-id".into(),
        instance_label: "hostnic.qingcloud.com/instance-id".into(),
        job_poll: Duration::from_millis(100),
        job_timeout: Duration::from_secs(20),
        // 30 s in production; tests fail and lose attach jobs on purpose (no link is ever
        // reported for those), and waiting the production grace for each would outlast them.
        link_grace: Duration::from_secs(2),
        shrink_delay: Duration::ZERO,
        cloud_cache: Duration::from_secs(1),
        gc_interval: Duration::from_millis(500),
        gc_settle: Duration::from_millis(200),
        gc_grace: Duration::ZERO,
        gc_dry_run: false,
        resync: Duration::from_secs(5),
        concurrency: 16,
        backoff_throttled: Duration::from_millis(500),
        backoff_transient: Duration::from_millis(200),
        backoff_permanent: Duration::from_secs(1),
        backoff_max: Duration::from_secs(5),
        visibility_grace: Duration::from_secs(30),
        max_create_batch: production_settings().max_create_batch,
        pool_triggers: production_settings().pool_triggers,
    }
}

/// The operator's production settings (its flags' defaults).
pub fn production_settings() -> Settings {
    <hostnic_operator::args::Args as clap::Parser>::parse_from(["hostnic-operator"]).settings()
}

/// The simulator client of most tests: no rate limit, short back-offs.
pub fn fast_cloud_settings() -> qingcloud::ClientSettings {
    qingcloud::ClientSettings {
        qps: 10_000.0,
        burst: 10_000,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        retry_budget: Duration::from_secs(1),
        job_poll_interval: Duration::from_millis(100),
        // 300 s in production; 1 s so injected request-quota 2500s cost the error tests a
        // second, not five minutes.
        quota_cooldown: Duration::from_secs(1),
        ..Default::default()
    }
}

pub struct Env {
    /// The test's own kube-mem, or None on the scratch cluster (`turn`).
    pub kube: Option<kube_mem::KubeMemHandle>,
    turn: Option<Turn>,
    /// Kubeconfigs of the test's (admin) and the operator's identity.
    kubeconfig: String,
    operator_kubeconfig: String,
    pub client: kube::Client,
    pub op_client: kube::Client,
    pub sim: Arc<SimHandle>,
    pub qc: qingcloud::Client,
    /// What each operator start builds its own client from, as a process does.
    qc_config: qingcloud::CloudConfig,
    pub setup_settings: Settings,
    pub batch: BatchConfig,
    pub metrics: Arc<Metrics>,
    pub registry: prometheus_client::registry::Registry,
    /// Whether the fake agent reports links (false: it withholds them, as a slow agent).
    pub agent_reports: Arc<AtomicBool>,
    agent: JoinHandle<()>,
    op: Option<RunningOperator>,
}

/// The operator a test started, on a runtime of its own: a kill ends every task it spawned,
/// as kill -9 ends a process. An aborted task would leave its spawned calls, flights and
/// timers running, and acting, after the "kill".
struct RunningOperator {
    runtime: tokio::runtime::Runtime,
    handle: JoinHandle<()>,
    stop: CancellationToken,
}

pub fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

impl Env {
    pub async fn start(setup: Setup) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (kube, turn, client, op_client, kubeconfig, operator_kubeconfig) =
            match scratch::kubeconfig() {
                Some(path) => {
                    let turn = Turn::take(&path).await.expect("the scratch cluster");
                    let client = turn.client.clone();
                    let yaml = turn.kubeconfig_yaml.clone();
                    // The operator acts with the kubeconfig's identity there.
                    (None, Some(turn), client.clone(), client, yaml.clone(), yaml)
                }
                None => {
                    let operator =
                        kube_mem::Identity::service_account("hostnic-system", "hostnic-operator")
                            .with_group(kube_mem::auth::MASTERS_GROUP);
                    let kube = kube_mem::KubeMem::builder()
                        .with_crds_from_dir(crds_dir())
                        .auth(kube_mem::Auth::new().token(OP_TOKEN, operator))
                        .tls(setup.kube_tls)
                        .start()
                        .await
                        .expect("start kube-mem");
                    let client = kube.client().await.expect("kube client");
                    let op_client = kube.client_for(OP_TOKEN).await.expect("operator client");
                    let (admin, operator) = (
                        kube.kubeconfig_yaml(),
                        kube.kubeconfig_yaml_for(Some(OP_TOKEN)),
                    );
                    (Some(kube), None, client, op_client, admin, operator)
                }
            };
        let mut b = Simulator::builder().job_latency(JobLatency {
            pending: Latency::FixedMs(setup.job_ms / 2),
            working: Latency::FixedMs(setup.job_ms - setup.job_ms / 2),
        });
        b = b.configure(setup.sim);
        for (id, cidr) in &setup.vxnets {
            b = b.vxnet(VxnetSpec::new(id, cidr.parse().expect("cidr")));
        }
        for (id, vx) in &setup.nodes {
            let mut spec = InstanceSpec::new(id);
            spec.vxnet = Some((*vx).to_string());
            b = b.instance(spec);
        }
        let sim = Arc::new(b.start().await.expect("start simulator"));
        let cfg = qingcloud::CloudConfig::from_yaml(&sim.config_yaml(), "sim.yaml".as_ref())
            .expect("sim config");
        let qc = qingcloud::Client::new(cfg.clone(), fast_cloud_settings(), None)
            .expect("qingcloud client");
        for (id, _) in &setup.nodes {
            add_node(&client, id).await;
        }
        let agent_reports = Arc::new(AtomicBool::new(true));
        let agent = tokio::spawn(fake_agent(
            client.clone(),
            sim.clone(),
            agent_reports.clone(),
        ));
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut reg));
        Self {
            kube,
            turn,
            kubeconfig,
            operator_kubeconfig,
            client,
            op_client,
            sim,
            qc,
            qc_config: cfg,
            setup_settings: setup.settings,
            batch: setup.batch,
            metrics,
            registry: reg,
            agent_reports,
            agent,
            op: None,
        }
    }

    /// A cloud client of its own (its own connections, rate budget and request state): an
    /// operator killed with its runtime leaves nothing behind that the next one would share.
    pub fn cloud(&self) -> Arc<dyn CloudApi> {
        let qc = qingcloud::Client::new(self.qc_config.clone(), fast_cloud_settings(), None)
            .expect("qingcloud client");
        Arc::new(QingCloud::new(qc))
    }

    /// A client of the simulator that connects to `addr` (a proxy in front of it).
    pub fn qc_via(
        &self,
        addr: SocketAddr,
        settings: qingcloud::ClientSettings,
    ) -> qingcloud::Client {
        let sim = format!("port: {}\n", self.sim.addr().port());
        let yaml = self
            .sim
            .config_yaml()
            .replace(&sim, &format!("port: {}\n", addr.port()));
        let cfg =
            qingcloud::CloudConfig::from_yaml(&yaml, "sim.yaml".as_ref()).expect("sim config");
        qingcloud::Client::new(cfg, settings, None).expect("qingcloud client")
    }

    /// A kubeconfig with the test's (admin) identity.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig.clone()
    }

    /// A kubeconfig with the operator's identity.
    pub fn operator_kubeconfig(&self) -> String {
        self.operator_kubeconfig.clone()
    }

    /// The API server's address, for a proxy in front of it.
    pub async fn api_addr(&self) -> SocketAddr {
        match &self.kube {
            Some(kube) => kube.addr(),
            None => scratch::server_addr(&self.kubeconfig())
                .await
                .expect("the scratch cluster's address"),
        }
    }

    /// The operator's Kubernetes client, with the operator's production client settings,
    /// connecting to `addr` (a proxy in front of the API server).
    pub async fn op_client_via(&self, addr: SocketAddr) -> kube::Client {
        let kubeconfig = scratch::via(&self.operator_kubeconfig(), addr).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(hostnic_operator::run::kube_config(config)).expect("kube client")
    }

    pub fn operator(
        &self,
        checkpoint: Arc<Checkpoint>,
        lease: Option<LeaseConfig>,
        identity: &str,
    ) -> Operator {
        Operator {
            client: self.op_client.clone(),
            cloud: self.cloud(),
            settings: self.setup_settings.clone(),
            batch: self.batch,
            identity: identity.into(),
            lease,
            checkpoint,
            metrics: self.metrics.clone(),
        }
    }

    /// Starts the operator (no leader election).
    pub fn start_operator(&mut self) {
        self.start_with(Arc::new(Checkpoint::default()));
    }

    pub fn start_with(&mut self, checkpoint: Arc<Checkpoint>) {
        let stop = CancellationToken::new();
        let mut op = self.operator(checkpoint, None, "test-operator");
        let kubeconfig = self.operator_kubeconfig();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("operator runtime");
        let s = stop.clone();
        let handle = runtime.spawn(async move {
            // A client of its own runtime: its connections end with the operator.
            op.client = kube_mem::client_from_yaml(&kubeconfig)
                .await
                .expect("operator client");
            op.run(s).await
        });
        self.op = Some(RunningOperator {
            runtime,
            handle,
            stop,
        });
    }

    /// Kills the operator where it stands, every task it spawned with it (a crash: no
    /// graceful shutdown).
    pub async fn kill_operator(&mut self) {
        if let Some(op) = self.op.take() {
            op.runtime.shutdown_background();
            let _ = op.handle.await;
        }
    }

    pub async fn stop_operator(&mut self) {
        if let Some(op) = self.op.take() {
            op.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), op.handle).await;
            op.runtime.shutdown_background();
        }
    }

    pub fn hostnics(&self) -> Api<HostNic> {
        Api::all(self.client.clone())
    }

    pub fn pools(&self) -> Api<NicPool> {
        Api::all(self.client.clone())
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    pub async fn create_pool(&self, name: &str, spec: NicPoolSpec) {
        self.pools()
            .create(&PostParams::default(), &NicPool::new(name, spec))
            .await
            .expect("create pool");
    }

    pub async fn pool(&self, name: &str) -> Option<NicPool> {
        self.pools().get_opt(name).await.expect("get pool")
    }

    /// Detaches and deletes a HostNic's cloud NIC behind the operator's back, as a person in
    /// the console would.
    pub async fn delete_in_cloud(&self, nic: &HostNic) {
        let id: qingcloud::NicId = nic
            .status
            .as_ref()
            .and_then(|s| s.nic_id.clone())
            .expect("HostNic has a nic id")
            .parse()
            .expect("valid nic id");
        let ids = std::slice::from_ref(&id);
        let job = self.qc.detach_nics(ids).await.expect("detach");
        self.qc
            .wait_job(&job, Duration::from_secs(10))
            .await
            .expect("detach job");
        self.qc.delete_nics(ids).await.expect("delete");
    }

    pub async fn all_hostnics(&self) -> Vec<HostNic> {
        self.hostnics()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
    }

    /// The names of a pool's HostNics, sorted.
    pub async fn names(&self, pool: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .all_hostnics()
            .await
            .into_iter()
            .filter(|h| h.spec.pool == pool)
            .map(|h| kube::ResourceExt::name_any(&h))
            .collect();
        names.sort();
        names
    }

    /// Phases of a pool's pod NICs on a node.
    pub async fn phases(&self, pool: &str, node: &str) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for h in self.all_hostnics().await {
            if h.spec.pool == pool
                && h.spec.node == node
                && h.spec.role == hostnic_crds::NicRole::Pod
            {
                let p = h.status.map(|s| s.phase).unwrap_or_default();
                *m.entry(format!("{p:?}")).or_default() += 1;
            }
        }
        m
    }

    pub async fn count(&self, pool: &str, node: &str, phase: HostNicPhase) -> u32 {
        self.phases(pool, node)
            .await
            .get(&format!("{phase:?}"))
            .copied()
            .unwrap_or(0)
    }

    /// Cloud NICs named with the test cluster's prefix: (id, name).
    pub fn cloud_nics(&self) -> Vec<(String, String)> {
        self.sim
            .nics()
            .into_iter()
            .filter(|n| n.nic.nic_name.starts_with(PREFIX))
            .map(|n| (n.nic.nic_id, n.nic.nic_name))
            .collect()
    }

    /// Whether HostNic `name` still exists with its NIC attached to an instance in the cloud.
    pub async fn attached_in_cloud(&self, name: &str) -> bool {
        let Some(h) = self.hostnics().get_opt(name).await.expect("get") else {
            return false;
        };
        let id = h.status.and_then(|s| s.nic_id).expect("nic id");
        self.sim.nics().into_iter().any(|n| {
            n.nic.nic_id == id
                && n.nic.status == qingcloud_sim::wire::NicStatus::InUse
                && n.nic.attached_to().is_some()
        })
    }

    /// No cloud name has more NICs than its owners asked for (a create was never repeated
    /// blindly): one for a HostNic's own name, its batch's size for a create batch's name.
    pub async fn assert_no_duplicate_names(&self) {
        let hostnics = self.all_hostnics().await;
        assert_names(&self.cloud_nics(), &hostnics);
    }

    /// The invariants: cloud NICs == HostNics' NICs, no duplicates on either side.
    pub async fn assert_invariants(&self) {
        let cloud = self.cloud_nics();
        let cloud_ids: HashSet<String> = cloud.iter().map(|(i, _)| i.clone()).collect();
        let hn = self.all_hostnics().await;
        assert_names(&cloud, &hn);
        let ids: Vec<String> = hn
            .iter()
            .filter_map(|h| h.status.as_ref().and_then(|s| s.nic_id.clone()))
            .collect();
        let id_set: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(id_set.len(), ids.len(), "two HostNics own one NIC: {ids:?}");
        assert_eq!(cloud_ids, id_set, "cloud NICs and HostNics differ");
    }

    /// Waits until a pool reports `per_node` available on each of `nodes` and nothing in
    /// flight, and the invariants hold.
    pub async fn converged(&self, pool: &str, nodes: &[&str], per_node: u32, within: Duration) {
        let start = Instant::now();
        while !self.is_converged(pool, nodes, per_node).await {
            if start.elapsed() > within {
                let mut state = Vec::new();
                for n in nodes {
                    state.push(format!("{n}: {:?}", self.phases(pool, n).await));
                }
                let status = self.pool(pool).await.and_then(|p| p.status);
                panic!(
                    "pool {pool} did not converge to {per_node}/node: {state:?}; status {status:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eventually("cloud matches HostNics", within, || async {
            let cloud: HashSet<String> = self.cloud_nics().into_iter().map(|(i, _)| i).collect();
            let hn: HashSet<String> = self
                .all_hostnics()
                .await
                .into_iter()
                .filter_map(|h| h.status.and_then(|s| s.nic_id))
                .collect();
            cloud == hn
        })
        .await;
        self.assert_invariants().await;
    }

    async fn is_converged(&self, pool: &str, nodes: &[&str], per_node: u32) -> bool {
        for n in nodes {
            let p = self.phases(pool, n).await;
            let avail = p.get("Available").copied().unwrap_or(0);
            let other: u32 = p
                .iter()
                .filter(|(k, _)| *k != "Available" && *k != "Bound")
                .map(|(_, v)| v)
                .sum();
            if avail != per_node || other != 0 {
                return false;
            }
        }
        let Some(pool) = self.pool(pool).await else {
            return false;
        };
        let Some(s) = pool.status else { return false };
        s.observed_generation == pool.metadata.generation
            && s.warm_per_node == per_node
            && s.in_progress == 0
    }

    /// Plays the agent claiming a free NIC for a pod: Bound and `LinkReady=False` (InPod) in
    /// one write with the object's resourceVersion, as the real agent's claim.
    pub async fn bind(&self, name: &str) {
        self.try_bind(name).await.expect("bind");
    }

    /// `bind`, answering the API server's refusal (a 409 when the operator wrote first).
    pub async fn try_bind(&self, name: &str) -> kube::Result<HostNic> {
        let mut h = self.hostnics().get(name).await.expect("get");
        let s = h.status.get_or_insert_with(Default::default);
        assert_eq!(s.phase, HostNicPhase::Available);
        s.phase = HostNicPhase::Bound;
        s.pod = Some(PodRef {
            namespace: "default".into(),
            name: format!("pod-{name}"),
            uid: None,
            container_id: "c0ffee".into(),
            netns: "/var/run/netns/x".into(),
            interface: "eth0".into(),
            network: None,
        });
        set_link_ready(s, false, "InPod");
        self.hostnics()
            .replace_status(name, &PostParams::default(), &h)
            .await
    }

    /// Plays the agent releasing a NIC whose link is back on the node (`LinkReady=True` in the
    /// same write, as the real agent's release).
    pub async fn release(&self, name: &str) {
        self.write_release(name, true).await;
    }

    /// Plays a release written before the link is proven home (the pod's netns is gone or
    /// unreadable and the link has not shown up on the node): `LinkReady` stays as the claim
    /// left it.
    pub async fn release_unproven(&self, name: &str) {
        self.write_release(name, false).await;
    }

    async fn write_release(&self, name: &str, link_home: bool) {
        let mut h = self.hostnics().get(name).await.expect("get");
        let s = h.status.get_or_insert_with(Default::default);
        s.phase = HostNicPhase::Released;
        s.released_at = Some(Time(Timestamp::now()));
        if link_home {
            set_link_ready(s, true, "LinkPresent");
        }
        self.hostnics()
            .replace_status(name, &PostParams::default(), &h)
            .await
            .expect("release");
    }

    /// Plays the agent reporting the NIC's link on the node (its link pass).
    pub async fn report_link_home(&self, name: &str) {
        let mut h = self.hostnics().get(name).await.expect("get");
        set_link_ready(
            h.status.get_or_insert_with(Default::default),
            true,
            "LinkPresent",
        );
        self.hostnics()
            .replace_status(name, &PostParams::default(), &h)
            .await
            .expect("report link");
    }

    pub async fn delete_pool(&self, name: &str) {
        self.pools()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete pool");
    }

    /// Deletes a pool and waits until it and every cloud NIC are gone.
    pub async fn delete_pool_until_gone(&self, name: &str, within: Duration) {
        self.delete_pool(name).await;
        eventually("pool and NICs gone", within, || async {
            self.pool(name).await.is_none() && self.cloud_nics().is_empty()
        })
        .await;
    }

    pub async fn patch_pool(&self, name: &str, spec: serde_json::Value) {
        self.pools()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "spec": spec })),
            )
            .await
            .expect("patch pool");
    }

    /// The operator's requests kube-mem audited that `wanted` picks, as permissions
    /// ("verb group resource (scope)"), for asserting which calls a window made. None on the
    /// scratch cluster, which keeps no audit log for the tests.
    pub fn operator_requests(
        &self,
        wanted: impl Fn(&kube_mem::AuditRecord) -> bool,
    ) -> Option<Vec<String>> {
        let kube = self.kube.as_ref()?;
        Some(
            kube.audit()
                .into_iter()
                .filter(|r| r.user == OP_USER && wanted(r))
                .map(|r| r.permission())
                .collect(),
        )
    }

    /// Starts a window for `operator_requests`.
    pub fn clear_audit(&self) {
        if let Some(kube) = &self.kube {
            kube.clear_audit();
        }
    }

    pub async fn shutdown(mut self) {
        self.stop_operator().await;
        self.agent.abort();
        match (&self.kube, &self.turn) {
            (Some(kube), _) => kube.shutdown().await,
            // Best effort: the next test's turn resets what is left.
            (None, Some(turn)) => {
                if let Err(e) = scratch::reset(&turn.client).await {
                    eprintln!("the scratch cluster is left for the next reset: {e:#}");
                }
            }
            (None, None) => {}
        }
        let _ = self.agent.await;
        if let Ok(sim) = Arc::try_unwrap(self.sim) {
            sim.shutdown().await;
        }
    }
}

/// Asserts that no cloud name (of `cloud`: id, name) has more NICs than asked for by its
/// owners among `hostnics`: one per HostNic name, the batch's size per create batch name.
fn assert_names(cloud: &[(String, String)], hostnics: &[HostNic]) {
    let mut allowed: BTreeMap<String, u32> = BTreeMap::new();
    for h in hostnics {
        match BatchTag::of(h) {
            Some(tag) => {
                allowed.insert(tag.nic_name(PREFIX), tag.size.max(1));
            }
            None => {
                allowed.insert(format!("{PREFIX}{}", h.uid().unwrap_or_default()), 1);
            }
        }
    }
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, name) in cloud {
        *seen.entry(name.as_str()).or_default() += 1;
    }
    for (name, n) in seen {
        let max = allowed.get(name).copied().unwrap_or(1);
        assert!(
            n <= max,
            "{n} cloud NICs share the name {name} (at most {max}): {cloud:?}"
        );
    }
}

pub fn spec(vxnets: &[&str], size: u32) -> NicPoolSpec {
    NicPoolSpec {
        vxnets: vxnets.iter().map(|s| s.to_string()).collect(),
        node_selector: Default::default(),
        size,
        max_per_node: 63,
        routes: vec![],
        reclaim_policy: ReclaimPolicy::Delete,
        quarantine_seconds: 0,
    }
}

pub async fn add_node(client: &kube::Client, name: &str) {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some([(scratch::NODE_LABEL.to_owned(), "true".to_owned())].into());
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
}

/// Replaces the `LinkReady` condition, transition time now.
fn set_link_ready(s: &mut hostnic_crds::HostNicStatus, ready: bool, reason: &str) {
    s.conditions.retain(|c| c.type_ != "LinkReady");
    s.conditions.push(Condition {
        type_: "LinkReady".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: None,
        last_transition_time: Time(Timestamp::now()),
    });
}

/// Polls `f` until it is true, panicking with `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(start.elapsed() < within, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent's part of the contract, enough for the operator: once the cloud says a NIC is
/// attached, report LinkReady=True (the real agent sees the hot-plugged link), and once a
/// detaching NIC's detach is done, report LinkReady=False (LinkMissing: the link went),
/// unless `reports` is off.
async fn fake_agent(client: kube::Client, sim: Arc<SimHandle>, reports: Arc<AtomicBool>) {
    let api: Api<HostNic> = Api::all(client);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !reports.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        let link = |s: &HostNicStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "LinkReady")
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let waiting: Vec<HostNic> = list
            .items
            .into_iter()
            .filter(|h| {
                h.status.as_ref().is_some_and(|s| {
                    s.nic_id.is_some()
                        && match s.phase {
                            HostNicPhase::Attaching => {
                                link(s).is_none_or(|(status, _)| status != "True")
                            }
                            HostNicPhase::Detaching => {
                                link(s).is_none_or(|(_, reason)| reason != "LinkMissing")
                            }
                            _ => false,
                        }
                })
            })
            .collect();
        if waiting.is_empty() {
            continue;
        }
        // The simulator's inspection view, not the API: the agent's looks must not count as
        // the operator's cloud calls.
        let nics: Vec<qingcloud_sim::wire::Nic> = sim.nics().into_iter().map(|n| n.nic).collect();
        for mut h in waiting {
            let s = h.status.as_mut().expect("status");
            let attached = nics.iter().any(|n| {
                Some(n.nic_id.as_str()) == s.nic_id.as_deref()
                    && n.status == qingcloud_sim::wire::NicStatus::InUse
                    && n.attached_to() == s.instance.as_deref()
            });
            let (status, reason) = match (s.phase, attached) {
                (HostNicPhase::Attaching, true) => ("True", "LinkFound"),
                (HostNicPhase::Detaching, false) => ("False", "LinkMissing"),
                _ => continue,
            };
            s.host_interface = attached.then(|| "eth9".into());
            s.conditions.retain(|c| c.type_ != "LinkReady");
            s.conditions.push(Condition {
                type_: "LinkReady".into(),
                status: status.into(),
                reason: reason.into(),
                message: "eth9".into(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::now()),
            });
            let _ = api
                .replace_status(&h.name_any(), &PostParams::default(), &h)
                .await;
        }
    }
}
