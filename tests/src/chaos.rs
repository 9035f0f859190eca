//! The chaos run: random pod churn while the operator and agents are killed with SIGKILL and the
//! simulator injects faults; then everything is allowed to converge and the invariants are
//! checked. The action sequence comes from a seed, so a failing run can be replayed (timing still
//! varies: processes race for real).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterConfig, hostnic_ids, phase, wait_for};
use crate::pods::{Pod, Pods};

/// Pool the chaos run churns.
const POOL: &str = "chaos";
/// Warm NICs per node.
const SIZE: usize = 3;
/// Most pods alive at once per node.
const MAX_PODS_PER_NODE: usize = 4;

/// Length and seed of a run.
#[derive(Debug, Clone, Copy)]
pub struct ChaosConfig {
    /// Seed of the action sequence.
    pub seed: u64,
    /// How long the churn lasts.
    pub churn: Duration,
}

impl ChaosConfig {
    /// From `HOSTNIC_CHAOS_SEED` (default 42) and `HOSTNIC_CHAOS_SECS` (default 40: the CI
    /// profile; `HOSTNIC_CHAOS_SECS=600` is the long local one).
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
        }
    }
}

/// What happened in a run.
#[derive(Debug, Default)]
pub struct Figures {
    /// Seed used.
    pub seed: u64,
    /// CNI ADDs that succeeded.
    pub adds: u64,
    /// CNI ADDs refused (no free NIC, agent down...): allowed, the runtime retries.
    pub adds_refused: u64,
    /// CNI DELs (all must succeed eventually).
    pub dels: u64,
    /// Fault rules installed in the simulator.
    pub faults: u64,
    /// Operator kills.
    pub operator_kills: u64,
    /// Agent kills.
    pub agent_kills: u64,
    /// Seconds until converged after the churn.
    pub converge_s: f64,
    /// Invariant violations found.
    pub violations: Vec<String>,
}

impl Figures {
    /// The figures as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "seed": self.seed,
            "operations": {"adds": self.adds, "adds_refused": self.adds_refused, "dels": self.dels},
            "faults": self.faults,
            "kills": {"operator": self.operator_kills, "agents": self.agent_kills},
            "converge_s": (self.converge_s * 10.0).round() / 10.0,
            "violations": self.violations,
        })
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

/// Runs the churn, converges, checks the invariants and tears down. `Err` only for harness
/// failures; violations are in the figures.
pub fn run(config: ChaosConfig, log: &mut dyn FnMut(&str)) -> Result<Figures> {
    let mut fig = Figures {
        seed: config.seed,
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
    let vxnets: Vec<String> = cluster
        .config()
        .vxnets
        .iter()
        .map(|v| v.0.clone())
        .collect();
    let vx: Vec<&str> = vxnets.iter().map(String::as_str).collect();
    cluster.apply_pool(POOL, SIZE as u32, &vx)?;
    cluster
        .wait_converged(POOL, SIZE, Duration::from_secs(120))
        .with_context(|| cluster.logs(20))?;
    let pods = Pods::new(&cluster)?;
    let menu = fault_menu();
    let mut live: Vec<Pod> = Vec::new();
    let mut serial = 0u32;
    let end = Instant::now() + config.churn;
    while Instant::now() < end {
        match rng.random_range(0..100) {
            0..40 => {
                let node = rng.random_range(0..cluster.nodes.len());
                if live.iter().filter(|p| p.node == node).count() < MAX_PODS_PER_NODE {
                    serial += 1;
                    match pods.add(node, &format!("chaos-{serial}")) {
                        Ok(pod) => {
                            fig.adds += 1;
                            log(&format!(
                                "ADD {} on {}: {}",
                                pod.name, cluster.nodes[node].name, pod.ip
                            ));
                            live.push(pod);
                        }
                        Err(e) => {
                            fig.adds_refused += 1;
                            log(&format!("ADD refused: {e:#}"));
                        }
                    }
                }
            }
            40..70 if !live.is_empty() => {
                let pod = live.swap_remove(rng.random_range(0..live.len()));
                log(&format!("DEL {}", pod.name));
                del_until_ok(&pods, pod, &mut fig, log)?;
            }
            70..78 => {
                fig.operator_kills += 1;
                log("kill -9 operator");
                cluster.operator.restart()?;
            }
            78..86 => {
                let n = rng.random_range(0..cluster.nodes.len());
                fig.agent_kills += 1;
                log(&format!("kill -9 agent of {}", cluster.nodes[n].name));
                if let Some(agent) = cluster.nodes[n].agent.as_mut() {
                    agent.restart()?;
                }
            }
            86..96 => {
                let fault = menu[rng.random_range(0..menu.len())].clone();
                log(&format!("fault {fault}"));
                fig.faults += 1;
                cluster.sim.add_faults(&[fault])?;
            }
            _ => cluster.sim.clear_faults()?,
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
    }

    log("churn over: clearing faults and letting the system converge");
    cluster.sim.clear_faults()?;
    let t = Instant::now();
    if let Err(e) = converge(&cluster, &live) {
        fig.violations.push(format!("did not converge: {e:#}"));
        log(&cluster.logs(20));
    }
    fig.converge_s = t.elapsed().as_secs_f64();
    fig.violations.extend(check_invariants(&cluster, &live)?);

    log("deleting the pods and the pool");
    for pod in live {
        del_until_ok(&pods, pod, &mut fig, log)?;
    }
    if let Err(e) = cluster.delete_pools(Duration::from_secs(120)) {
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

/// DEL must succeed (it is idempotent); while an agent restarts it may fail for a moment.
fn del_until_ok(pods: &Pods, pod: Pod, fig: &mut Figures, log: &mut dyn FnMut(&str)) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match pods.del(&pod) {
            Ok(()) => {
                fig.dels += 1;
                return Ok(());
            }
            Err(e) if Instant::now() < deadline => {
                log(&format!("DEL {} failed, retrying: {e:#}", pod.name));
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.context(format!("DEL {} never succeeded", pod.name))),
        }
    }
}

/// Waits until each node has its warm NICs, every live pod's NIC is Bound and the cloud agrees.
fn converge(cluster: &Cluster, live: &[Pod]) -> Result<()> {
    let timeout = Duration::from_secs(180);
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
            "{bound_to_live} HostNics Bound but {} pods alive (a NIC kept by a deleted pod?)",
            live.len()
        ));
    }
    Ok(v)
}
