//! The end-to-end flow the local demo shows and the e2e test checks, written once: start the
//! whole system, fill a pool, run pods through libcni, ping, scale with kubectl, delete the pods,
//! tear down and prove nothing is left.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::{Cluster, ClusterConfig, phase};
use crate::pods::{Pod, Pods};

/// Name of the demo's NicPool.
pub const POOL: &str = "demo";

/// Where progress goes: the demo prints it, the test prints it too (shown on failure).
pub trait Progress {
    /// A numbered step starts.
    fn step(&mut self, what: &str);
    /// A detail of the current step.
    fn info(&mut self, what: &str);
}

/// Progress printed on stdout with step numbers and timings.
#[derive(Debug)]
pub struct Printer {
    n: u32,
    start: Instant,
}

impl Default for Printer {
    fn default() -> Self {
        Self {
            n: 0,
            start: Instant::now(),
        }
    }
}

impl Progress for Printer {
    fn step(&mut self, what: &str) {
        self.n += 1;
        println!(
            "\n[{:>2}] {what}  (t={:.1}s)",
            self.n,
            self.start.elapsed().as_secs_f64()
        );
    }

    fn info(&mut self, what: &str) {
        for line in what.lines() {
            println!("     {line}");
        }
    }
}

/// Checks what the flow needs on this machine; returns one message per missing thing.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if !crate::privilege::is_root() {
        missing.push(
            "must run as root: nodes and pods are real network namespaces (try sudo)".to_owned(),
        );
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        (
            "kubectl",
            "kubectl (https://kubernetes.io/docs/tasks/tools/)",
        ),
        (
            "go",
            "golang-go golang-github-appc-cni-dev (the libcni driver is built with it)",
        ),
    ] {
        if !crate::privilege::on_path(tool) {
            missing.push(format!("`{tool}` not found: install {package}"));
        }
    }
    for name in [
        "kube-mem",
        "qingcloud-sim",
        "hostnic-operator",
        "hostnic-agent",
        "hostnic",
    ] {
        let path = crate::bins::target_dir().join(name);
        if !path.is_file() {
            missing.push(format!(
                "{} is not built: run `cargo build --workspace --bins` first",
                path.display()
            ));
        }
    }
    missing
}

/// Runs the whole flow; `Ok` only if every step worked and nothing is left afterwards.
pub fn run(p: &mut dyn Progress) -> Result<()> {
    let mut ours = BTreeSet::new();
    let outcome = run_cluster(p, &mut ours);
    let left: Vec<&String> = ours
        .iter()
        .filter(|n| Path::new("/var/run/netns").join(n).exists())
        .collect();
    if outcome.is_err() && !left.is_empty() {
        eprintln!("network namespaces left behind: {left:?}");
    }
    outcome?;
    p.step("checking the machine: none of the demo's network namespaces is left");
    if !left.is_empty() {
        bail!("network namespaces left behind: {left:?}");
    }
    p.info(&format!(
        "{} namespaces were made (nodes, pods, vxnets); none is left",
        ours.len()
    ));
    Ok(())
}

fn run_cluster(p: &mut dyn Progress, ours: &mut BTreeSet<String>) -> Result<()> {
    p.step("starting the system: kube-mem, QingCloud simulator, operator, 2 node agents");
    let cluster = Cluster::start(ClusterConfig::default(), &mut |s| p.info(s))?;
    ours.extend(cluster.netns_names()?);
    let res = flow(&cluster, p, ours);
    if res.is_err() {
        eprintln!(
            "\n===== component logs (last lines) =====\n{}",
            cluster.logs(30)
        );
    }
    res?;
    p.step("stopping every component");
    drop(cluster);
    p.info("operator, agents, simulator and API server stopped; node netns deleted");
    Ok(())
}

fn flow(cluster: &Cluster, p: &mut dyn Progress, ours: &mut BTreeSet<String>) -> Result<()> {
    let vxnets = cluster.config().vxnet_ids();
    p.step(&format!(
        "creating NicPool {POOL:?}: 3 warm NICs per node over {vxnets:?}"
    ));
    cluster.apply_pool(POOL, 3, &vxnets)?;
    let took = cluster.wait_converged(POOL, 3, Duration::from_secs(90))?;
    p.info(&format!(
        "every node has 3 Available NICs, hot-plugged into its netns ({:.1}s)",
        took.as_secs_f64()
    ));

    p.step("starting 4 pods (2 per node) through libcni with the hostnic conflist");
    let pods = Pods::new(cluster)?;
    let mut running: Vec<Pod> = Vec::new();
    for i in 0..4 {
        let node = i % cluster.nodes.len();
        let pod = pods.add_retrying(node, &format!("pod-{i}"), Duration::from_secs(30))?;
        p.info(&format!(
            "{} on {}: eth0 {} (gateway {}) in netns {}",
            pod.name,
            cluster.nodes[node].name,
            pod.ip,
            pod.gateway,
            pod.netns.name()
        ));
        ours.insert(pod.netns.name().to_owned());
        running.push(pod);
    }
    check_pods_bound(cluster, &running)?;

    p.step("kubectl get nicpools,hostnics");
    status_matches_hostnics(cluster)?;
    let table = cluster
        .kubectl
        .run(&["get", "nicpools,hostnics", "-o", "wide"])?;
    p.info(&table);

    p.step("pinging: every pod to its vxnet gateway, and pod to pod across nodes");
    for pod in &running {
        if !pod.netns.ping(&pod.gateway, 2) {
            bail!(
                "{} ({}) cannot reach its gateway {}",
                pod.name,
                pod.ip,
                pod.gateway
            );
        }
        p.info(&format!("{} -> gateway {}: ok", pod.name, pod.gateway));
    }
    // Pods reach each other across nodes inside one vxnet; NICs come from either vxnet, so
    // add pods on node 1 until two pods on different nodes share one.
    let mut extra = 0;
    while cross_node_pair(&running).is_none() && extra < 3 {
        let pod = pods.add_retrying(1, &format!("pod-extra-{extra}"), Duration::from_secs(30))?;
        ours.insert(pod.netns.name().to_owned());
        running.push(pod);
        extra += 1;
    }
    let (a, b) =
        cross_node_pair(&running).context("no two pods on different nodes share a vxnet")?;
    if !a.netns.ping(&b.ip, 2) {
        bail!("{} ({}) cannot reach {} ({})", a.name, a.ip, b.name, b.ip);
    }
    p.info(&format!(
        "{} ({}) -> {} ({}) at {}: ok",
        a.name, cluster.nodes[a.node].name, b.name, cluster.nodes[b.node].name, b.ip
    ));

    p.step(&format!(
        "kubectl scale nicpool {POOL} --replicas=5, waiting for every node to keep 5 warm"
    ));
    cluster
        .kubectl
        .run(&["scale", "nicpool", POOL, "--replicas=5"])?;
    let took = cluster.wait_converged(POOL, 5, Duration::from_secs(90))?;
    p.info(&format!("converged in {:.1}s", took.as_secs_f64()));
    status_matches_hostnics(cluster)?;
    p.info(&cluster.kubectl.run(&["get", "nicpools"])?);

    p.step(&format!("deleting the {} pods (CNI DEL)", running.len()));
    for pod in running {
        let name = pod.name.clone();
        pods.del(&pod)?;
        p.info(&format!("{name}: released"));
    }
    crate::cluster::wait_for(
        "every NIC to be free again",
        Duration::from_secs(60),
        || {
            let nics = cluster.hostnics()?;
            Ok(nics.iter().all(|n| phase(n) == "Available"))
        },
    )?;
    p.info("no HostNic is Bound any more");

    p.step("deleting the NicPool: the operator detaches and deletes every NIC");
    cluster.delete_pools(Duration::from_secs(90))?;
    let left = cluster.leftovers()?;
    if !left.is_empty() {
        bail!("left behind: {left:?}");
    }
    p.info("no HostNic, no NIC in the simulator, no NIC link in the node netns");
    Ok(())
}

/// How soon the pool's status shows a HostNic change (the operator's promise).
const STATUS_LAG: Duration = Duration::from_secs(1);

/// Fails unless the pool's AVAILABLE and BOUND (total and per node) equal what its HostNics
/// say, both read in one `kubectl get`, once the HostNics have stood still for
/// [`STATUS_LAG`] (a refill may still be moving them): the table the demo prints next is true.
fn status_matches_hostnics(cluster: &Cluster) -> Result<()> {
    let start = Instant::now();
    let mut last: Option<(Vec<String>, Instant)> = None;
    loop {
        let items = cluster.kubectl.list("nicpools,hostnics")?;
        let (pools, nics): (Vec<_>, Vec<_>) = items.iter().partition(|o| o["kind"] == "NicPool");
        let pool = pools
            .iter()
            .find(|p| p["metadata"]["name"] == POOL)
            .context("the demo's NicPool is gone")?;
        let mine: Vec<_> = nics
            .into_iter()
            .filter(|n| n["spec"]["pool"] == POOL && n["spec"]["role"] == "Pod")
            .filter(|n| n["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let wrong = status_mismatches(&pool["status"], &mine);
        if wrong.is_empty() {
            return Ok(());
        }
        let now: Vec<String> = mine
            .iter()
            .map(|n| format!("{}={}", n["metadata"]["name"], phase(n)))
            .collect();
        let since = match last.take() {
            Some((before, since)) if before == now => since,
            _ => Instant::now(),
        };
        if since.elapsed() > STATUS_LAG {
            bail!(
                "NicPool {POOL} status is stale {STATUS_LAG:?} after its HostNics last changed: {}",
                wrong.join("; ")
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "the pool's HostNics never stood still: {}",
                wrong.join("; ")
            );
        }
        last = Some((now, since));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where a NicPool `status` differs from the counts of its (live, pod-role) HostNics.
fn status_mismatches(status: &serde_json::Value, nics: &[&serde_json::Value]) -> Vec<String> {
    let count = |node: Option<&str>, want: &str| {
        nics.iter()
            .filter(|n| node.is_none_or(|node| n["spec"]["node"] == node))
            .filter(|n| phase(n) == want)
            .count() as u64
    };
    let mut wrong = Vec::new();
    for (field, want) in [("available", "Available"), ("bound", "Bound")] {
        let (shown, real) = (status[field].as_u64().unwrap_or(0), count(None, want));
        if shown != real {
            wrong.push(format!("{field} {shown}, HostNics {real}"));
        }
        for n in status["nodeStatus"].as_array().into_iter().flatten() {
            let node = n["node"].as_str().unwrap_or_default();
            let (shown, real) = (n[field].as_u64().unwrap_or(0), count(Some(node), want));
            if shown != real {
                wrong.push(format!("{node} {field} {shown}, HostNics {real}"));
            }
        }
    }
    wrong
}

/// Checks that each pod's NIC is Bound to it on its node.
fn check_pods_bound(cluster: &Cluster, pods: &[Pod]) -> Result<()> {
    let nics = cluster.hostnics()?;
    for pod in pods {
        let bound = nics
            .iter()
            .find(|n| n["status"]["privateIp"] == pod.ip.as_str() && phase(n) == "Bound");
        let Some(nic) = bound else {
            bail!("no Bound HostNic with IP {} for {}", pod.ip, pod.name);
        };
        if nic["spec"]["node"] != cluster.nodes[pod.node].name.as_str() {
            bail!("{}'s NIC is on another node: {nic}", pod.name);
        }
    }
    Ok(())
}

fn vxnet_of(pod: &Pod) -> Option<&str> {
    // Pods on the same vxnet share its /24 in the demo's layout.
    pod.gateway.rsplit_once('.').map(|(net, _)| net)
}

fn cross_node_pair(pods: &[Pod]) -> Option<(&Pod, &Pod)> {
    pods.iter().find_map(|a| {
        pods.iter()
            .find(|b| b.node != a.node && vxnet_of(a) == vxnet_of(b))
            .map(|b| (a, b))
    })
}
