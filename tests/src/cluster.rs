//! A whole hostnic system on one machine, as the demo, the e2e tests, the chaos test and the
//! benchmarks need it: the in-memory API server, the QingCloud simulator hot-plugging NICs into
//! "node" netns, the operator and one agent per node, each a child process that can be killed
//! and restarted. Everything is torn down on drop; [`Cluster::leftovers`] checks that nothing of
//! the system is left in the cloud or the kernel.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::bins::bin;
use crate::interrupt;
use crate::kubectl::Kubectl;
use crate::netns::TestNetns;
use crate::process::{Proc, Spec};
use crate::scratch::{self, Turn};
use crate::sim::Sim;

/// Access key the simulator accepts and the operator signs with (test-only credentials).
/// Name of the operator's cloud config in the cluster's directory.
const CLOUD_CONFIG_FILE: &str = "qingcloud.yaml";
const SIM_KEY_ID: &str = "SIMACCESSKEYID000000";
const SIM_SECRET: &str = "sim-secret-access-key";

/// Shape of the system to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Number of nodes (each a netns with an agent when `agents` is on).
    pub nodes: usize,
    /// Vxnets as `(id, cidr)`.
    pub vxnets: Vec<(String, String)>,
    /// Vxnets only for the instances' primary NICs, filled in turn (a vxnet holds at most 252
    /// NICs); empty puts every primary NIC in the first of `vxnets`.
    pub primary_vxnets: Vec<(String, String)>,
    /// Whether attached NICs become links in the node netns (needs agents to be useful).
    pub hotplug: bool,
    /// Whether to start an agent per node (and make node netns).
    pub agents: bool,
    /// Simulator job latency per phase (pending, working) in milliseconds.
    pub job_latency_ms: (u64, u64),
    /// Seed of the simulator's random generator.
    pub seed: u64,
    /// Cluster name given to the operator (NIC names carry it).
    pub cluster_name: String,
    /// The operator's client-side QingCloud request budget (requests per second). Its default
    /// (0.5/s) fits a new account's quota of about 2000 requests an hour; the simulated account
    /// has no quota, and tests and demos should not wait minutes for a pool of six.
    pub cloud_qps: f64,
    /// The API server's write latency and watch delivery delay in milliseconds. Default
    /// (5, 10): a small real cluster's etcd commit and watch fan-out, so that API round trips
    /// on a critical path (a CNI ADD) show up in every run instead of hiding behind an
    /// instant in-memory store.
    pub api_latency_ms: (u64, u64),
    /// The simulator's profile: `realistic` (default: HTTPS, 5 NICs per Attach/DetachNics,
    /// jobs serialized per instance, VPC/DHCP rules, `available_ip_count` only when verbose, a
    /// long job history; job latency stays `job_latency_ms`) or `default` (lenient).
    pub sim_profile: &'static str,
    /// The operator's timers: the test tempo (default) or the production defaults.
    pub tempo: Tempo,
    /// GC's interval instead of the tempo's, in seconds: (e) runs GC within its window and
    /// scales GC's calls back to the production interval.
    pub gc_interval_s: Option<u64>,
}

/// The operator's timers (lease, job polls, cloud cache, GC, resync, shrink delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tempo {
    /// Scaled down so that tests and demos see restarts, refills and GC passes in seconds.
    Test,
    /// The operator's own defaults, for figures that count what a real cluster would do
    /// over time (idle and churn calls); only the request budget stays `cloud_qps`.
    Production,
}

impl ClusterConfig {
    /// The ids of the pod vxnets, as a NicPool names them.
    pub fn vxnet_ids(&self) -> Vec<&str> {
        self.vxnets.iter().map(|(id, _)| id.as_str()).collect()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 2,
            vxnets: vec![
                ("vxnet-hnone01".into(), "172.30.1.0/24".into()),
                ("vxnet-hntwo02".into(), "172.30.2.0/24".into()),
            ],
            primary_vxnets: Vec::new(),
            hotplug: true,
            agents: true,
            job_latency_ms: (50, 150),
            seed: 1,
            cluster_name: "hntest".into(),
            cloud_qps: 20.0,
            api_latency_ms: (5, 10),
            sim_profile: "realistic",
            tempo: Tempo::Test,
            gc_interval_s: None,
        }
    }
}

/// One node: its Kubernetes name, instance, netns and agent.
#[derive(Debug)]
pub struct Node {
    /// Kubernetes node name.
    pub name: String,
    /// QingCloud instance id.
    pub instance: String,
    /// The netns playing the node VM (None without agents).
    pub netns: Option<TestNetns>,
    /// The node agent.
    pub agent: Option<Proc>,
    /// The agent's unix socket.
    pub socket: PathBuf,
    /// The agent's health and metrics address (a port of its own: agents share this host).
    pub health_addr: SocketAddr,
}

/// The running system.
pub struct Cluster {
    /// Working directory: logs, kubeconfig, configs, sockets.
    pub dir: TempDir,
    /// kubectl against the API server.
    pub kubectl: Kubectl,
    /// The in-memory API server, or None on the scratch cluster (`turn`).
    pub api: Option<Proc>,
    /// The QingCloud simulator.
    pub sim: Sim,
    /// The operator.
    pub operator: Proc,
    /// The in-memory API server's address (plain HTTP, no authentication).
    pub api_addr: Option<SocketAddr>,
    /// The operator's probe and metrics address.
    pub metrics_addr: SocketAddr,
    /// The nodes.
    pub nodes: Vec<Node>,
    config: ClusterConfig,
    /// This cluster's use of the scratch cluster named by `HOSTNIC_TEST_KUBECONFIG`.
    turn: Option<Turn>,
}

impl Cluster {
    /// Starts everything and waits until the API server, the simulator and the operator answer.
    /// `progress` is told about each step.
    pub fn start(config: ClusterConfig, progress: &mut dyn FnMut(&str)) -> Result<Self> {
        // HOSTNIC_KEEP_LOGS=1 keeps the directory (component logs, configs) for a post-mortem.
        let keep = std::env::var_os("HOSTNIC_KEEP_LOGS").is_some();
        let dir = tempfile::Builder::new()
            .prefix("hn-cluster-")
            .disable_cleanup(keep)
            .tempdir()
            .context("create cluster dir")?;
        if keep {
            progress(&format!("logs kept in {}", dir.path().display()));
        } else {
            interrupt::add_dir(dir.path());
        }
        let root = dir.path().to_owned();

        let (kubeconfig, api, api_addr, turn) = match scratch::kubeconfig() {
            Some(path) => {
                progress(&format!("using the scratch cluster of {}", scratch::VAR));
                let turn = Turn::take_blocking(&path)?;
                (path, None, None, Some(turn))
            }
            None => {
                progress("starting the in-memory Kubernetes API server (kube-mem)");
                let kubeconfig = root.join("kubeconfig");
                let api_addr = free_port()?;
                let api = Proc::start(
                    Spec::new("kube-mem", bin("kube-mem"))
                        .arg("--listen")
                        .arg(api_addr.to_string())
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .arg("--write-latency-ms")
                        .arg(config.api_latency_ms.0.to_string())
                        .arg("--watch-delay-ms")
                        .arg(config.api_latency_ms.1.to_string()),
                    &root,
                )?;
                (kubeconfig, Some(api), Some(api_addr), None)
            }
        };
        let kubectl = Kubectl::new(&kubeconfig);
        wait_for("the API server to answer", Duration::from_secs(30), || {
            Ok(kubeconfig.exists() && kubectl.run(&["get", "--raw", "/api"]).is_ok())
        })
        .with_context(|| api.as_ref().map(|a| a.log_tail(20)).unwrap_or_default())?;
        progress("applying the hostnic CRDs with kubectl");
        let mut apply = vec!["apply".to_owned()];
        for f in crd_files()? {
            apply.push("-f".into());
            apply.push(f.display().to_string());
        }
        kubectl.run(&apply.iter().map(String::as_str).collect::<Vec<_>>())?;
        wait_for("the CRDs to be served", Duration::from_secs(30), || {
            Ok(kubectl.run(&["get", "nicpools,hostnics"]).is_ok())
        })?;

        let mut nodes = Vec::new();
        for i in 0..config.nodes {
            let name = format!("node-{i}");
            let instance = format!("i-hnnode{i:02}");
            let netns = config.agents.then(|| TestNetns::new(&format!("n{i}")));
            if let Some(ns) = &netns {
                interrupt::add_netns(ns.name());
            }
            let socket = root.join(format!("{name}.sock"));
            nodes.push(Node {
                name,
                instance,
                netns,
                agent: None,
                socket,
                health_addr: free_port()?,
            });
        }
        progress(&format!("registering {} nodes", nodes.len()));
        // Client-side validation of core kinds needs the server's OpenAPI for them, which the
        // in-memory server does not publish; the server still checks what it stores.
        kubectl.run_with_input(
            &["apply", "--validate=false", "-f", "-"],
            Some(&node_list(&nodes)),
        )?;

        progress("starting the QingCloud simulator (hot-plug into the node netns)");
        let sim = Sim::start(&root, &config, &nodes)?;
        let cloud_config = root.join(CLOUD_CONFIG_FILE);
        std::fs::write(&cloud_config, sim.cloud_config_yaml(SIM_KEY_ID, SIM_SECRET))
            .context("write cloud config")?;

        progress("starting hostnic-operator");
        let metrics_addr = free_port()?;
        let operator = Proc::start(
            operator_spec(&config, &kubeconfig, &cloud_config, metrics_addr),
            &root,
        )?;

        let mut cluster = Self {
            dir,
            kubectl,
            api,
            sim,
            operator,
            api_addr,
            metrics_addr,
            nodes,
            config,
            turn,
        };
        if cluster.config.agents {
            for i in 0..cluster.nodes.len() {
                progress(&format!(
                    "starting hostnic-agent for {}",
                    cluster.nodes[i].name
                ));
                let spec = agent_spec(&cluster.nodes[i], &kubeconfig)?;
                cluster.nodes[i].agent = Some(Proc::start(spec, &root)?);
            }
        }
        Ok(cluster)
    }

    /// The operator's cloud config file (qingcloud-sdk-go YAML for the simulator).
    pub fn cloud_config_file(&self) -> PathBuf {
        self.dir.path().join(CLOUD_CONFIG_FILE)
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The conflist a runtime on `node` uses: the hostnic plugin talking to that node's agent.
    pub fn conflist(&self, node: usize) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "hostnic",
            "plugins": [{"type": "hostnic", "socket": self.nodes[node].socket}],
        })
        .to_string()
    }

    /// Creates pool `name` of `size` over the first vxnet and waits until every node has it,
    /// failing with the last log lines of the system.
    pub fn fill_pool(&self, name: &str, size: u32, timeout: Duration) -> Result<()> {
        let vxnet = self.config.vxnets[0].0.clone();
        self.apply_pool(name, size, &[&vxnet])?;
        self.wait_converged(name, size as usize, timeout)
            .map(drop)
            .with_context(|| self.logs(30))
    }

    /// Creates (or replaces) a NicPool without quarantine (a released NIC is free at once).
    pub fn apply_pool(&self, name: &str, size: u32, vxnets: &[&str]) -> Result<()> {
        self.apply_pool_quarantined(name, size, vxnets, Some(0))
    }

    /// Creates (or replaces) a NicPool; `quarantine_seconds` None leaves the CRD's default.
    pub fn apply_pool_quarantined(
        &self,
        name: &str,
        size: u32,
        vxnets: &[&str],
        quarantine_seconds: Option<u32>,
    ) -> Result<()> {
        let mut pool = serde_json::json!({
            "apiVersion": "hostnic.qingcloud.com/v1alpha1",
            "kind": "NicPool",
            "metadata": {
                "name": name,
                "annotations": {"hostnic.qingcloud.com/is-default-pool": "true"},
            },
            "spec": {"vxnets": vxnets, "size": size},
        });
        if let Some(q) = quarantine_seconds {
            pool["spec"]["quarantineSeconds"] = q.into();
        }
        self.kubectl.apply(&pool.to_string())?;
        Ok(())
    }

    /// Every HostNic as JSON.
    pub fn hostnics(&self) -> Result<Vec<serde_json::Value>> {
        self.kubectl.list("hostnics")
    }

    /// Waits until every node has `size` Available HostNics of `pool` and no HostNic is on its
    /// way (nor Failed), and the simulator's NICs are exactly the HostNics' NICs.
    pub fn wait_converged(&self, pool: &str, size: usize, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut last = String::new();
        wait_for("the pools to converge", timeout, || {
            let nics = self.hostnics()?;
            let mut ok = true;
            last.clear();
            for node in &self.nodes {
                let mine: Vec<_> = nics
                    .iter()
                    .filter(|n| n["spec"]["node"] == node.name.as_str())
                    .filter(|n| n["spec"]["pool"] == pool)
                    .collect();
                let available = mine.iter().filter(|n| phase(n) == "Available").count();
                let settling = mine
                    .iter()
                    .filter(|n| !matches!(phase(n), "Available" | "Bound"))
                    .count();
                let _ = write!(
                    last,
                    "{}: {available} available, {settling} settling; ",
                    node.name
                );
                ok &= available == size && settling == 0;
            }
            if ok {
                let cloud = self.sim.nic_ids()?;
                let kube = hostnic_ids(&nics);
                if cloud != kube {
                    let _ = write!(last, "cloud NICs {cloud:?} != HostNic NICs {kube:?}");
                    ok = false;
                }
            }
            Ok(ok)
        })
        .with_context(|| format!("last seen: {last}"))?;
        Ok(start.elapsed())
    }

    /// Waits until every node has at least `at_least` Available HostNics of `pool` (whatever
    /// else is still on its way).
    pub fn wait_available(&self, pool: &str, at_least: usize, timeout: Duration) -> Result<()> {
        wait_for("NICs to be Available", timeout, || {
            let nics = self.hostnics()?;
            Ok(self.nodes.iter().all(|node| {
                nics.iter()
                    .filter(|n| n["spec"]["node"] == node.name.as_str())
                    .filter(|n| n["spec"]["pool"] == pool && phase(n) == "Available")
                    .count()
                    >= at_least
            }))
        })
    }

    /// Deletes every NicPool and waits until no HostNic and no cloud NIC of ours is left.
    pub fn delete_pools(&self, timeout: Duration) -> Result<()> {
        self.kubectl
            .run(&["delete", "nicpools", "--all", "--wait=false"])?;
        wait_for("every HostNic and cloud NIC to go", timeout, || {
            Ok(self.hostnics()?.is_empty() && self.sim.nic_ids()?.is_empty())
        })
        .with_context(|| {
            format!(
                "left: {:?} hostnics, cloud {:?}",
                self.hostnics().map(|h| h.len()),
                self.sim.nic_ids()
            )
        })
    }

    /// What is left of the system that should not be: cloud NICs, HostNics, hot-plugged links
    /// in node netns (the VM's own primary NIC is not one). Empty means clean.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let primaries = self.sim.primary_macs()?;
        let mut left = Vec::new();
        for id in self.sim.nic_ids()? {
            left.push(format!("cloud NIC {id}"));
        }
        for n in self.hostnics()? {
            left.push(format!("HostNic {}", n["metadata"]["name"]));
        }
        for node in &self.nodes {
            if let Some(ns) = &node.netns {
                for l in ns.links() {
                    if l.name != "lo" && !primaries.contains(&l.mac) {
                        left.push(format!("link {} ({}) in {}", l.name, l.mac, ns.name()));
                    }
                }
            }
        }
        Ok(left)
    }

    /// Names of every netns the system made: the nodes' and the simulator's vxnet netns.
    pub fn netns_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.netns.as_ref().map(|ns| ns.name().to_owned()))
            .collect();
        names.extend(self.sim.vxnet_netns()?);
        Ok(names)
    }

    /// Tails of every component's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        let procs = self
            .api
            .iter()
            .chain([self.sim.proc(), &self.operator])
            .chain(self.nodes.iter().filter_map(|n| n.agent.as_ref()));
        for p in procs {
            let _ = writeln!(out, "----- {} ({})", p.name(), p.log_path().display());
            let _ = writeln!(out, "{}", p.log_tail(lines));
        }
        out
    }
}

impl Drop for Cluster {
    /// Agents and operator first (nothing acts on the cloud any more), then the simulator
    /// gracefully (it removes its links and vxnet netns), then the API server; the node netns go
    /// with the fields.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(agent) = node.agent.as_mut() {
                agent.kill9();
            }
        }
        self.operator.kill9();
        self.sim.stop();
        if let Some(api) = self.api.as_mut() {
            api.kill9();
        }
        // The next turn resets the scratch cluster.
        self.turn.take();
        for ns in self.nodes.iter().filter_map(|n| n.netns.as_ref()) {
            interrupt::remove_netns(ns.name());
        }
        interrupt::remove_dir(self.dir.path());
    }
}

/// The phase of a HostNic JSON object ("" when it has none yet).
pub fn phase(nic: &serde_json::Value) -> &str {
    nic["status"]["phase"].as_str().unwrap_or("")
}

/// The set of NIC ids (MACs, lowercase) the HostNics own.
pub fn hostnic_ids(nics: &[serde_json::Value]) -> BTreeSet<String> {
    nics.iter()
        .filter_map(|n| n["status"]["nicId"].as_str())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Polls `check` every 200 ms until it returns true or `timeout` passes. Errors from `check`
/// count as "not yet" until the deadline, when the last one is returned.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let res = check();
        match res {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() > deadline => bail!("timed out waiting for {what}"),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("timed out waiting for {what}")));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: the child binds it right after). The
/// kernel may offer a just-released port again before its first taker has bound it, so ports
/// handed out by this process are never handed out twice.
pub fn free_port() -> Result<SocketAddr> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
        let addr = l.local_addr().context("local addr")?;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(addr.port()) {
            return Ok(addr);
        }
    }
    bail!("no fresh free port found")
}

/// The generated CRD YAML files of the workspace (`crds/<group>_<plural>.yaml`).
pub fn crd_files() -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hostnic.qingcloud.com_") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn node_list(nodes: &[Node]) -> String {
    let items: Vec<_> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": n.name, "labels": {
                    "kubernetes.io/hostname": n.name,
                    scratch::NODE_LABEL: "true",
                }},
                "spec": {"providerID": format!("qingcloud://{}", n.instance)},
            })
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn operator_spec(
    config: &ClusterConfig,
    kubeconfig: &Path,
    cloud: &Path,
    metrics_addr: SocketAddr,
) -> Spec {
    let spec = Spec::new("operator", bin("hostnic-operator"))
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("HOSTNIC_OPERATOR_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .arg("--cluster-name")
        .arg(&config.cluster_name)
        .arg("--cloud-config")
        .arg(cloud)
        .arg("--metrics-addr")
        .arg(metrics_addr.to_string())
        .arg("--lease-namespace")
        .arg("default")
        .arg("--identity")
        .arg("operator-0")
        .arg("--cloud-qps")
        .arg(config.cloud_qps.to_string());
    let spec = match config.tempo {
        Tempo::Production => spec,
        // Short lease (restarts take over fast), fast job polls and GC passes.
        Tempo::Test => spec
            .arg("--lease-seconds")
            .arg("3")
            .arg("--lease-renew-deadline-seconds")
            .arg("2")
            .arg("--lease-retry-period-seconds")
            .arg("1")
            .arg("--job-poll-seconds")
            .arg("0.2")
            .arg("--shrink-delay-seconds")
            .arg("1")
            .arg("--cloud-cache-seconds")
            .arg("1")
            .arg("--job-timeout-seconds")
            .arg("10")
            .arg("--gc-grace-seconds")
            .arg("2")
            .arg("--resync-seconds")
            .arg("5"),
    };
    let gc_interval_s = match config.tempo {
        Tempo::Production => config.gc_interval_s,
        Tempo::Test => Some(config.gc_interval_s.unwrap_or(2)),
    };
    match gc_interval_s {
        Some(s) => spec.arg("--gc-interval-seconds").arg(s.to_string()),
        None => spec,
    }
}

fn agent_spec(node: &Node, kubeconfig: &Path) -> Result<Spec> {
    let netns = node.netns.as_ref().context("agent needs a node netns")?;
    Ok(
        Spec::new(&format!("agent-{}", node.name), bin("hostnic-agent"))
            .env("KUBECONFIG", kubeconfig)
            .env("NODE_NAME", &node.name)
            .env(
                "RUST_LOG",
                std::env::var("HOSTNIC_AGENT_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .arg("--node-netns")
            .arg(netns.path())
            .arg("--socket")
            .arg(&node.socket)
            .arg("--health-addr")
            .arg(node.health_addr.to_string()),
    )
}
