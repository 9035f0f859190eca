//! The chaos run: concurrent pod churn on every node (several CNI requests in flight per node)
//! while the operator and agents are killed with SIGKILL, the simulator injects faults, pod
//! netns vanish without DEL, CHECK and GC run against live pods and the pool's routes and size
//! are edited; then everything is allowed to converge and the invariants are checked. Each
//! worker's action sequence comes from the seed, so a failing run can be replayed (timing still
//! varies: processes race for real, which is the point).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterConfig, hostnic_ids, phase, wait_for};
use crate::interrupt;
use crate::netns::TestNetns;
use crate::pods::{Pod, Pods};

/// Pool the chaos run churns.
const POOL: &str = "chaos";
/// Warm NICs per node.
const SIZE: usize = 3;
/// Most pods alive at once per node.
const MAX_PODS_PER_NODE: usize = 4;
/// A route the run adds to and removes from the pool while pods run: running pods must keep
/// their NICs across the edit and a later agent restart, and CHECK must keep passing for them.
const EDITED_ROUTE: &str = "192.168.250.0/24";

/// Length, seed and concurrency of a run.
#[derive(Debug, Clone, Copy)]
pub struct ChaosConfig {
    /// Seed of the action sequences.
    pub seed: u64,
    /// How long the churn lasts.
    pub churn: Duration,
    /// CNI workers per node: each runs one request at a time, so this many are in flight.
    pub workers_per_node: usize,
}

impl ChaosConfig {
    /// From `HOSTNIC_CHAOS_SEED` (default 42), `HOSTNIC_CHAOS_SECS` (default 40: the CI
    /// profile; `HOSTNIC_CHAOS_SECS=600` is the long local one, well over 1000 operations) and
    /// `HOSTNIC_CHAOS_WORKERS` (default 3 per node).
    pub fn from_env() -> Self {
        let num = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Self {
            seed: num("HOSTNIC_CHAOS_SEED", 42),
            churn: Duration::from_secs(num("HOSTNIC_CHAOS_SECS", 40)),
            workers_per_node: num("HOSTNIC_CHAOS_WORKERS", 3).max(1) as usize,
        }
    }
}

/// Counters shared by the workers and the monkey.
#[derive(Debug, Default)]
struct Counters {
    adds: AtomicU64,
    adds_refused: AtomicU64,
    dels: AtomicU64,
    abandoned: AtomicU64,
    checks: AtomicU64,
    checks_unavailable: AtomicU64,
    gcs: AtomicU64,
    gcs_failed: AtomicU64,
    /// Requests a kill of their node's agent landed inside, by verb and what happened.
    inside: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn landed(&self, what: String) {
        *self
            .inside
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }
}

/// What happened in a run.
#[derive(Debug, Default)]
pub struct Figures {
    /// Seed used.
    pub seed: u64,
    /// CNI workers per node.
    pub workers_per_node: usize,
    /// CNI ADDs that succeeded.
    pub adds: u64,
    /// CNI ADDs refused (no free NIC, agent down...): allowed, the runtime retries.
    pub adds_refused: u64,
    /// CNI DELs (all must succeed eventually).
    pub dels: u64,
    /// Pods whose netns was destroyed without a DEL.
    pub abandoned: u64,
    /// CHECKs of live pods that passed; those refused because the agent was down.
    pub checks: u64,
    pub checks_unavailable: u64,
    /// GC calls that succeeded; failed (agent down).
    pub gcs: u64,
    pub gcs_failed: u64,
    /// Fault rules installed in the simulator.
    pub faults: u64,
    /// Operator kills.
    pub operator_kills: u64,
    /// Agent kills, and how many landed while a CNI request to that agent was in flight.
    pub agent_kills: u64,
    pub agent_kills_inside_requests: u64,
    /// Requests hit by a kill, by verb and outcome (e.g. `ADD failed, claim recorded`).
    pub inside: BTreeMap<String, u64>,
    /// NicPool edits: route added or removed, size changed.
    pub route_edits: u64,
    pub resizes: u64,
    /// Seconds until converged after the churn.
    pub converge_s: f64,
    /// Invariant violations found.
    pub violations: Vec<String>,
}

impl Figures {
    /// Every CNI request and disturbance of the run.
    pub fn operations(&self) -> u64 {
        self.adds
            + self.adds_refused
            + self.dels
            + self.abandoned
            + self.checks
            + self.checks_unavailable
            + self.gcs
            + self.gcs_failed
            + self.faults
            + self.operator_kills
            + self.agent_kills
            + self.route_edits
            + self.resizes
    }

    /// The figures as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "seed": self.seed,
            "workers_per_node": self.workers_per_node,
            "operations_total": self.operations(),
            "operations": {
                "adds": self.adds, "adds_refused": self.adds_refused, "dels": self.dels,
                "abandoned_without_del": self.abandoned,
                "checks": self.checks, "checks_agent_unavailable": self.checks_unavailable,
                "gcs": self.gcs, "gcs_failed": self.gcs_failed,
                "route_edits": self.route_edits, "resizes": self.resizes,
            },
            "faults": self.faults,
            "kills": {
                "operator": self.operator_kills,
                "agents": self.agent_kills,
                "agents_inside_requests": self.agent_kills_inside_requests,
                "requests_hit": self.inside,
            },
            "converge_s": (self.converge_s * 10.0).round() / 10.0,
            "violations": self.violations,
        })
    }

    fn absorb(&mut self, c: &Counters) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.adds = get(&c.adds);
        self.adds_refused = get(&c.adds_refused);
        self.dels = get(&c.dels);
        self.abandoned = get(&c.abandoned);
        self.checks = get(&c.checks);
        self.checks_unavailable = get(&c.checks_unavailable);
        self.gcs = get(&c.gcs);
        self.gcs_failed = get(&c.gcs_failed);
        self.inside = c.inside.lock().unwrap_or_else(|e| e.into_inner()).clone();
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// Fault rules the run draws from (the simulator's `Fault` JSON). Jobs that never finish are
/// left out: the simulated cloud then keeps their NICs busy for ever, so no operator could
/// converge afterwards (the operator's own tests cover its job timeout).
fn fault_menu() -> Vec<Value> {
    vec![
        json!({"kind": {"api_error": {"code": 5000}}, "trigger": {"next": 3}}),
        json!({"kind": {"api_error": {"code": 5100}}, "trigger": {"next": 5}}),
        json!({"kind": {"api_error": {"code": 2500}}, "trigger": {"next": 4}}),
        json!({"action": "DescribeNics", "kind": {"api_error": {"code": 1400}}, "trigger": {"next": 2}}),
        json!({"kind": {"http_status": 503}, "trigger": {"next": 2}}),
        json!({"kind": {"delay_ms": 1500}, "trigger": {"next": 3}}),
        json!({"action": "AttachNics", "kind": {"job": "failed"}, "trigger": {"next": 1}}),
        json!({"action": "AttachNics", "kind": {"job": "done_with_failure"}, "trigger": {"next": 1}}),
        json!({"action": "DetachNics", "kind": {"job": "failed"}, "trigger": {"next": 1}}),
        json!({"action": "CreateNics", "kind": {"api_error": {"code": 5000}}, "trigger": {"next": 1}, "after": true}),
    ]
}

/// State the workers and the monkey share.
struct Shared<'a> {
    pods: &'a Pods,
    kubectl: &'a crate::kubectl::Kubectl,
    /// Agent sockets by node (GC is run directly, as CRI-O does; libcni 1.1 has no GC).
    sockets: Vec<std::path::PathBuf>,
    live: Mutex<Vec<Pod>>,
    /// Per node: ADDs and DELs hold it shared, GC exclusively, as a runtime never GCs a
    /// sandbox it is still creating.
    gc_gate: Vec<RwLock<()>>,
    /// Per node: bumped by every agent kill, so a request can tell it was hit by one.
    kill_epoch: Vec<AtomicU64>,
    /// Per node: CNI requests in flight.
    in_flight: Vec<AtomicU64>,
    counters: Counters,
    serial: AtomicU64,
    end: Instant,
    log: Mutex<&'a mut (dyn FnMut(&str) + Send)>,
}

impl Shared<'_> {
    fn log(&self, m: &str) {
        (self.log.lock().unwrap_or_else(|e| e.into_inner()))(m);
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Pod>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a random live pod of `node` out of the shared list (so no other worker touches it).
    fn take_pod(&self, node: usize, rng: &mut StdRng) -> Option<Pod> {
        let mut live = self.live();
        let mine: Vec<usize> = (0..live.len()).filter(|&i| live[i].node == node).collect();
        if mine.is_empty() {
            return None;
        }
        Some(live.swap_remove(mine[rng.random_range(0..mine.len())]))
    }

    /// Runs a request to `node`'s agent and says whether a kill of that agent landed inside it.
    fn request<T>(&self, node: usize, f: impl FnOnce() -> T) -> (T, bool) {
        let before = self.kill_epoch[node].load(Ordering::SeqCst);
        self.in_flight[node].fetch_add(1, Ordering::SeqCst);
        let out = f();
        self.in_flight[node].fetch_sub(1, Ordering::SeqCst);
        (out, self.kill_epoch[node].load(Ordering::SeqCst) != before)
    }

    /// Whether the HostNics say container `cid` holds a NIC.
    fn claim_recorded(&self, cid: &str) -> bool {
        self.kubectl.list("hostnics").is_ok_and(|nics| {
            nics.iter()
                .any(|n| phase(n) == "Bound" && n["status"]["pod"]["containerId"] == cid)
        })
    }
}

/// One worker: CNI requests against one node, one at a time, until the churn ends.
fn worker(s: &Shared<'_>, node: usize, mut rng: StdRng) {
    while Instant::now() < s.end {
        match rng.random_range(0..100) {
            0..45 => add(s, node),
            45..70 => {
                if let Some(pod) = s.take_pod(node, &mut rng) {
                    del(s, pod);
                }
            }
            70..78 => {
                if let Some(pod) = s.take_pod(node, &mut rng) {
                    // The sandbox dies without a DEL (a crashed runtime, a node reboot): its
                    // netns goes, and a real NIC returns to the node by itself.
                    s.log(&format!("ABANDON {} (netns destroyed, no DEL)", pod.name));
                    Counters::bump(&s.counters.abandoned);
                    drop(pod);
                }
            }
            78..90 => {
                // Out of the live list while checked (so no DEL takes it), but a GC meanwhile
                // must still see it as valid: the gate keeps GC out until it is back.
                let _gate = s.gc_gate[node].read().unwrap_or_else(|e| e.into_inner());
                if let Some(pod) = s.take_pod(node, &mut rng) {
                    check(s, &pod);
                    s.live().push(pod);
                }
            }
            _ => gc(s, node),
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(20..200)));
    }
}

fn add(s: &Shared<'_>, node: usize) {
    if s.live().iter().filter(|p| p.node == node).count() >= MAX_PODS_PER_NODE {
        return;
    }
    let name = format!("chaos-{}", s.serial.fetch_add(1, Ordering::SeqCst) + 1);
    let _gate = s.gc_gate[node].read().unwrap_or_else(|e| e.into_inner());
    let netns = TestNetns::new("pod");
    interrupt::add_netns(netns.name());
    let cid = format!("ctr-{}", netns.name());
    let rt = s.pods.runtime(&name, &cid);
    let conflist = s.pods.conflist(node);
    let (result, hit) = s.request(node, || rt.add(&conflist, &cid, &netns.path(), "eth0"));
    match result
        .map_err(|e| anyhow!("{e}"))
        .and_then(|r| Pod::from_result(&name, node, netns, &cid, r))
    {
        Ok(pod) => {
            if hit {
                s.counters.landed("ADD answered".into());
            }
            Counters::bump(&s.counters.adds);
            s.log(&format!("ADD {name}: {}", pod.ip));
            s.live().push(pod);
        }
        Err(e) => {
            if hit {
                let recorded = if s.claim_recorded(&cid) {
                    "claim recorded"
                } else {
                    "no claim recorded"
                };
                s.counters.landed(format!("ADD failed, {recorded}"));
            }
            Counters::bump(&s.counters.adds_refused);
            s.log(&format!("ADD {name} refused: {e:#}"));
            // What kubelet does after a failed sandbox: StopPodSandbox, i.e. DEL, until it
            // succeeds; the netns goes afterwards.
            let mut tries = 0;
            while rt.del(&conflist, &cid, Path::new(""), "eth0").is_err() && tries < 60 {
                tries += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn del(s: &Shared<'_>, pod: Pod) {
    let _gate = s.gc_gate[pod.node]
        .read()
        .unwrap_or_else(|e| e.into_inner());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (res, hit) = s.request(pod.node, || s.pods.del(&pod));
        if hit {
            s.counters.landed(format!(
                "DEL {}",
                if res.is_ok() { "answered" } else { "failed" }
            ));
        }
        match res {
            Ok(()) => {
                Counters::bump(&s.counters.dels);
                s.log(&format!("DEL {}", pod.name));
                return;
            }
            Err(e) if Instant::now() < deadline => {
                s.log(&format!("DEL {} failed, retrying: {e:#}", pod.name));
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                // Kept for the invariant check: a DEL that never succeeds leaves the pod's
                // NIC Bound while no pod is alive.
                s.log(&format!("DEL {} never succeeded: {e:#}", pod.name));
                return;
            }
        }
    }
}

/// CHECK must pass for a running pod; "try again" (agent restarting) is allowed, any other
/// failure says the runtime would tear a healthy pod down.
fn check(s: &Shared<'_>, pod: &Pod) {
    let rt = s.pods.runtime(&pod.name, &pod.container_id);
    let conflist = s.pods.conflist(pod.node);
    let (res, _) = s.request(pod.node, || {
        rt.check(&conflist, &pod.container_id, &pod.netns.path(), "eth0")
    });
    match res {
        Ok(()) => Counters::bump(&s.counters.checks),
        Err(e) if matches!(e.code(), Some(5 | 11)) => {
            Counters::bump(&s.counters.checks_unavailable)
        }
        Err(e) => {
            s.log(&format!("CHECK {} failed: {e}", pod.name));
            s.counters
                .landed(format!("CHECK failed for a running pod: {e}"));
        }
    }
}

/// CNI GC with every live attachment of the node as valid, run directly as CRI-O does.
fn gc(s: &Shared<'_>, node: usize) {
    let _gate = s.gc_gate[node].write().unwrap_or_else(|e| e.into_inner());
    let valid: Vec<Value> = s
        .live()
        .iter()
        .filter(|p| p.node == node)
        .map(|p| json!({"containerID": p.container_id, "ifname": "eth0"}))
        .collect();
    let config = json!({
        "cniVersion": "1.1.0",
        "name": "hostnic",
        "type": "hostnic",
        "socket": s.sockets[node],
        "cni.dev/valid-attachments": valid,
    });
    let (res, _) = s.request(node, || exec_plugin("GC", &config));
    match res {
        Ok(()) => Counters::bump(&s.counters.gcs),
        Err(e) => {
            Counters::bump(&s.counters.gcs_failed);
            s.log(&format!("GC on node {node} failed: {e:#}"));
        }
    }
}

/// Runs the hostnic plugin directly with `command` and `config` on stdin.
fn exec_plugin(command: &str, config: &Value) -> Result<()> {
    use std::io::Write;
    let bin = crate::bins::target_dir();
    let mut child = Command::new(bin.join("hostnic"))
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", &bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run hostnic")?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(config.to_string().as_bytes())
        .context("write plugin stdin")?;
    let out = child.wait_with_output().context("wait for hostnic")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(anyhow!(
            "{command} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Sets the pool's routes: none, or [`EDITED_ROUTE`] through the pod's vxnet gateway.
fn set_route(kubectl: &crate::kubectl::Kubectl, gateway: &str, on: bool) -> Result<()> {
    let routes = if on {
        json!([{"destination": EDITED_ROUTE, "gateway": gateway}])
    } else {
        json!([])
    };
    let patch = json!({"spec": {"routes": routes}}).to_string();
    kubectl.run(&["patch", "nicpool", POOL, "--type=merge", "-p", &patch])?;
    Ok(())
}

/// Runs the churn, converges, checks the invariants and tears down. `Err` only for harness
/// failures; violations are in the figures.
pub fn run(config: ChaosConfig, log: &mut (dyn FnMut(&str) + Send)) -> Result<Figures> {
    let mut fig = Figures {
        seed: config.seed,
        workers_per_node: config.workers_per_node,
        ..Figures::default()
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut cluster = Cluster::start(
        ClusterConfig {
            seed: config.seed,
            ..ClusterConfig::default()
        },
        log,
    )?;
    // One vxnet, so that a route through its gateway is valid for every pod.
    let (vxnet, cidr) = cluster.config().vxnets[0].clone();
    let gateway = vxnet_gateway(&cidr)?;
    cluster.apply_pool(POOL, SIZE as u32, &[&vxnet])?;
    cluster
        .wait_converged(POOL, SIZE, Duration::from_secs(120))
        .with_context(|| cluster.logs(20))?;
    let pods = Pods::new(&cluster)?;
    let nodes = cluster.nodes.len();
    let menu = fault_menu();
    let kubectl = crate::kubectl::Kubectl::new(cluster.kubectl.kubeconfig());
    let shared = Shared {
        pods: &pods,
        kubectl: &kubectl,
        sockets: cluster.nodes.iter().map(|n| n.socket.clone()).collect(),
        live: Mutex::new(Vec::new()),
        gc_gate: (0..nodes).map(|_| RwLock::new(())).collect(),
        kill_epoch: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        in_flight: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        counters: Counters::default(),
        serial: AtomicU64::new(0),
        end: Instant::now() + config.churn,
        log: Mutex::new(log),
    };
    let mut route_on = false;
    std::thread::scope(|scope| -> Result<()> {
        for w in 0..nodes * config.workers_per_node {
            let worker_rng =
                StdRng::seed_from_u64(config.seed.wrapping_mul(1000).wrapping_add(w as u64));
            let s = &shared;
            scope.spawn(move || worker(s, w % nodes, worker_rng));
        }
        // The monkey: kills, faults and pool edits while the workers' requests are in flight.
        while Instant::now() < shared.end {
            match rng.random_range(0..100) {
                0..12 => {
                    fig.operator_kills += 1;
                    shared.log("kill -9 operator");
                    cluster.operator.restart()?;
                }
                12..30 => {
                    let n = rng.random_range(0..nodes);
                    fig.agent_kills += 1;
                    if shared.in_flight[n].load(Ordering::SeqCst) > 0 {
                        fig.agent_kills_inside_requests += 1;
                    }
                    shared.kill_epoch[n].fetch_add(1, Ordering::SeqCst);
                    shared.log(&format!("kill -9 agent of {}", cluster.nodes[n].name));
                    if let Some(agent) = cluster.nodes[n].agent.as_mut() {
                        agent.restart()?;
                    }
                }
                30..50 => {
                    let fault = menu[rng.random_range(0..menu.len())].clone();
                    shared.log(&format!("fault {fault}"));
                    fig.faults += 1;
                    cluster.sim.add_faults(&[fault])?;
                }
                50..60 => {
                    route_on = !route_on;
                    fig.route_edits += 1;
                    shared.log(&format!(
                        "pool routes: {EDITED_ROUTE} {}",
                        if route_on { "added" } else { "removed" }
                    ));
                    set_route(&kubectl, &gateway, route_on)?;
                }
                60..66 => {
                    let size = if rng.random_bool(0.5) { SIZE + 1 } else { SIZE };
                    fig.resizes += 1;
                    shared.log(&format!("kubectl scale nicpool --replicas={size}"));
                    kubectl.run(&["scale", "nicpool", POOL, &format!("--replicas={size}")])?;
                }
                66..72 => cluster.sim.clear_faults()?,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        }
        Ok(())
    })?;
    fig.absorb(&shared.counters);
    let live = std::mem::take(&mut *shared.live());
    let log = shared.log.into_inner().unwrap_or_else(|e| e.into_inner());
    for (what, n) in &fig.inside {
        if what.starts_with("CHECK failed") {
            fig.violations.push(format!("{n} x {what}"));
        }
    }

    log("churn over: clearing faults, restoring the pool's size and letting the system converge");
    cluster.sim.clear_faults()?;
    kubectl.run(&["scale", "nicpool", POOL, &format!("--replicas={SIZE}")])?;
    // A last agent restart with the routes as they are now: the running pods, claimed under
    // other routes, must keep their NICs.
    for node in &mut cluster.nodes {
        if let Some(agent) = node.agent.as_mut() {
            agent.restart()?;
        }
    }
    let t = Instant::now();
    if let Err(e) = converge(&cluster, &live) {
        fig.violations.push(format!("did not converge: {e:#}"));
        log(&cluster.logs(20));
    }
    fig.converge_s = t.elapsed().as_secs_f64();
    fig.violations.extend(check_invariants(&cluster, &live)?);

    log("deleting the pods and the pool");
    for pod in live {
        pods.del(&pod)
            .or_else(|_| {
                std::thread::sleep(Duration::from_secs(1));
                pods.del(&pod)
            })
            .with_context(|| format!("DEL {} at teardown", pod.name))?;
        fig.dels += 1;
    }
    if let Err(e) = cluster.delete_pools(Duration::from_secs(180)) {
        fig.violations
            .push(format!("pool deletion did not finish: {e:#}"));
    }
    for left in cluster.leftovers()? {
        fig.violations.push(format!("left after teardown: {left}"));
    }
    for node in &mut cluster.nodes {
        node.agent = None;
    }
    Ok(fig)
}

/// The first address of a vxnet's CIDR: the gateway the simulator puts on its bridge.
fn vxnet_gateway(cidr: &str) -> Result<String> {
    let bad = || anyhow!("vxnet CIDR {cidr}");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok(std::net::Ipv4Addr::from((u32::from(addr) & mask) + 1).to_string())
}

/// Waits until each node has its warm NICs, every live pod's NIC is Bound and the cloud agrees.
fn converge(cluster: &Cluster, live: &[Pod]) -> Result<()> {
    let timeout = Duration::from_secs(240);
    wait_for("live pods' NICs to be Bound", timeout, || {
        let nics = cluster.hostnics()?;
        Ok(live.iter().all(|p| {
            nics.iter()
                .any(|n| phase(n) == "Bound" && n["status"]["privateIp"] == p.ip.as_str())
        }))
    })?;
    cluster.wait_converged(POOL, SIZE, timeout)?;
    Ok(())
}

/// The invariants: cloud NICs == HostNics, no NIC in two pods, every live pod's NIC configured.
fn check_invariants(cluster: &Cluster, live: &[Pod]) -> Result<Vec<String>> {
    let mut v = Vec::new();
    let nics = cluster.hostnics()?;
    let cloud = cluster.sim.nic_ids()?;
    let kube = hostnic_ids(&nics);
    for id in cloud.difference(&kube) {
        v.push(format!("cloud NIC {id} has no HostNic (leak)"));
    }
    for id in kube.difference(&cloud) {
        v.push(format!("HostNic NIC {id} does not exist in the cloud"));
    }
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &nics {
        if let Some(id) = n["status"]["nicId"].as_str() {
            owners
                .entry(id.to_ascii_lowercase())
                .or_default()
                .push(n["metadata"]["name"].as_str().unwrap_or("").to_owned());
        }
    }
    for (id, names) in &owners {
        if names.len() > 1 {
            v.push(format!("NIC {id} owned by several HostNics: {names:?}"));
        }
    }
    let mut macs_in_pods: BTreeMap<String, String> = BTreeMap::new();
    let mut ips = BTreeSet::new();
    for pod in live {
        if !ips.insert(pod.ip.clone()) {
            v.push(format!("IP {} given to two live pods", pod.ip));
        }
        let links: Vec<_> = pod
            .netns
            .links()
            .into_iter()
            .filter(|l| l.name != "lo")
            .collect();
        let Some(eth0) = links.iter().find(|l| l.name == "eth0") else {
            v.push(format!("{}: no eth0 (links {links:?})", pod.name));
            continue;
        };
        if let Some(other) = macs_in_pods.insert(eth0.mac.clone(), pod.name.clone()) {
            v.push(format!(
                "NIC {} in two pods: {other} and {}",
                eth0.mac, pod.name
            ));
        }
        let addrs = pod.netns.addresses("eth0");
        if !addrs.iter().any(|a| a.starts_with(&format!("{}/", pod.ip))) {
            v.push(format!(
                "{}: eth0 lacks {} (has {addrs:?})",
                pod.name, pod.ip
            ));
        }
        let nic = nics.iter().find(|n| {
            n["status"]["nicId"].as_str().map(str::to_ascii_lowercase) == Some(eth0.mac.clone())
        });
        match nic {
            None => v.push(format!(
                "{}: eth0 {} matches no HostNic",
                pod.name, eth0.mac
            )),
            Some(n) if phase(n) != "Bound" => v.push(format!(
                "{}: its HostNic is {}, not Bound",
                pod.name,
                phase(n)
            )),
            Some(n) if n["status"]["pod"]["containerId"] != pod.container_id.as_str() => {
                v.push(format!(
                    "{}: its HostNic names another pod: {}",
                    pod.name, n["status"]["pod"]
                ))
            }
            Some(_) => {}
        }
        if !pod.netns.ping(&pod.gateway, 2) {
            v.push(format!(
                "{}: cannot reach its gateway {}",
                pod.name, pod.gateway
            ));
        }
    }
    let bound_to_live: usize = nics.iter().filter(|n| phase(n) == "Bound").count();
    if bound_to_live != live.len() {
        v.push(format!(
            "{bound_to_live} HostNics Bound but {} pods alive (a NIC kept by a deleted or \
             abandoned pod?)",
            live.len()
        ));
    }
    Ok(v)
}
