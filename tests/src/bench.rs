//! The benchmarks behind `hostnic-bench`: figures, never timed assertions. Each returns a JSON
//! object that the binary prints and writes to a file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::bins::bin;
use crate::cluster::{Cluster, ClusterConfig, Tempo, phase, wait_for};
use crate::cni_runtime::{BenchResult, CniRuntime, DEBIAN_PLUGIN_DIR};
use crate::fake_agent::FakeAgents;
use crate::http;
use crate::kubectl::Watch;
use crate::kubelet_status::NodeStatusUpdates;
use crate::netns::TestNetns;
use crate::pods::{Pod, Pods};

/// How big the runs are.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// ADD+DEL pairs per plugin in (a).
    pub cni_iterations: u32,
    /// Concurrent ADDs on one node in (a2).
    pub concurrent_adds: usize,
    /// Pods in the burst of (b).
    pub burst: usize,
    /// Nodes in (d) and (e).
    pub scale_nodes: usize,
    /// How long (e) watches the idle cluster.
    pub idle: Duration,
    /// Nodes of (f).
    pub churn_nodes: usize,
    /// Pod restarts of (f), spread evenly over its nodes.
    pub churn_restarts: usize,
    /// How often each node restarts its pod in (f)'s paced run. A pool of 3 absorbs restarts
    /// every default quarantine / 3 = 40 s without a new NIC; a minute leaves a margin.
    pub churn_interval: Duration,
}

impl Profile {
    /// Short enough for CI.
    pub const CI: Self = Self {
        cni_iterations: 50,
        concurrent_adds: 20,
        burst: 5,
        scale_nodes: 50,
        idle: Duration::from_secs(120),
        churn_nodes: 4,
        churn_restarts: 20,
        churn_interval: Duration::from_secs(60),
    };
    /// What the README's figures come from.
    pub const FULL: Self = Self {
        cni_iterations: 300,
        concurrent_adds: 20,
        burst: 10,
        scale_nodes: 500,
        idle: Duration::from_secs(600),
        churn_nodes: 10,
        churn_restarts: 100,
        churn_interval: Duration::from_secs(60),
    };
}

/// Simulator job latency (pending, working) where a figure is compared with one attach: 1 s.
const ATTACH_JOB_MS: (u64, u64) = (200, 800);

/// One attach job of [`ATTACH_JOB_MS`], in seconds.
fn attach_s() -> f64 {
    (ATTACH_JOB_MS.0 + ATTACH_JOB_MS.1) as f64 / 1000.0
}

fn quiet(_: &str) {}

/// A one-node cluster of `config` (its `nodes` ignored) and the id of its first vxnet.
fn one_node(config: ClusterConfig) -> Result<(Cluster, String)> {
    let cluster = Cluster::start(ClusterConfig { nodes: 1, ..config }, &mut quiet)?;
    let vxnet = cluster.config().vxnets[0].0.clone();
    Ok((cluster, vxnet))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// (a) CNI ADD+DEL through libcni: hostnic (through its agent, NICs from a warm pool) versus
/// Debian's bridge + host-local, in the same run and the same driver process, the two conflists
/// taking turns. The driver runs inside the hostnic node's netns: bridge creates its bridge in
/// the caller's netns, which must be one made here.
pub fn cni_latency(profile: Profile) -> Result<Value> {
    let (cluster, vxnet) = one_node(ClusterConfig::default())?;
    // Quarantine 0 and a deep pool: a released NIC is free again while the others serve.
    let size = 20;
    cluster.apply_pool("bench", size, &[&vxnet])?;
    // Only the warm NICs matter here, not whether the last refill has settled.
    cluster.wait_available("bench", 10, Duration::from_secs(180))?;
    let pods = Pods::new(&cluster)?;
    let dir = cluster.dir.path();
    let bridge_conf = dir.join("bridge.conflist");
    std::fs::write(
        &bridge_conf,
        json!({
            "cniVersion": "1.0.0",
            "name": "bench-bridge",
            "plugins": [{
                "type": "bridge", "bridge": "hnbench0", "isGateway": true,
                "ipam": {"type": "host-local", "subnet": "10.88.0.0/16",
                         "dataDir": dir.join("ipam")},
            }],
        })
        .to_string(),
    )?;
    let pod = TestNetns::new("bpod");
    let node = cluster.nodes[0].netns.as_ref().context("node netns")?;
    let runtime = CniRuntime::new(
        [crate::bins::target_dir(), DEBIAN_PLUGIN_DIR.into()],
        dir.join("bench-cache"),
    )
    // As kubelet does: plugins that do not know the pod keys (bridge) must ignore them.
    .cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench-pod")
    .in_netns(node.name());
    let results = runtime
        .bench(
            profile.cni_iterations,
            &pod.path(),
            "eth0",
            &[&pods.conflist(0), &bridge_conf],
        )
        .map_err(|e| anyhow!("{e}"))?;
    drop(pod);
    cluster.delete_pools(Duration::from_secs(180))?;
    let find = |name: &str| {
        results
            .iter()
            .find(|r| r.network == name)
            .with_context(|| format!("no bench result for {name}"))
    };
    let api = api_round_trips(&cluster)?;
    let (h, b) = (find("hostnic")?, find("bench-bridge")?);
    let stats = |r: &BenchResult| {
        json!({
            "add_del": {"p50_ms": r.add_del.p50_ms, "p99_ms": r.add_del.p99_ms, "mean_ms": round2(r.add_del.mean_ms)},
            "add": {"p50_ms": r.add.p50_ms, "p99_ms": r.add.p99_ms},
            "del": {"p50_ms": r.del.p50_ms, "p99_ms": r.del.p99_ms},
        })
    };
    Ok(json!({
        "what": "CNI ADD+DEL through libcni (Go driver), same run, conflists taking turns",
        "iterations": h.iterations,
        "hostnic": stats(h),
        "bridge_host_local": stats(b),
        "hostnic_over_bridge_p50": round2(h.add_del.p50_ms / b.add_del.p50_ms),
        "hostnic_over_bridge_mean": round2(h.add_del.mean_ms / b.add_del.mean_ms),
        // Issue 14's targets: ADD+DEL mean and p99 at most 0.6, ADD alone at most 1.0.
        "hostnic_over_bridge_p99": round2(h.add_del.p99_ms / b.add_del.p99_ms),
        "add_hostnic_over_bridge_mean": round2(h.add.mean_ms / b.add.mean_ms),
        "add_hostnic_over_bridge_p50": round2(h.add.p50_ms / b.add.p50_ms),
        "api_server": api,
    }))
}

/// Proof that the API server's configured latency is in force: the median of a few writes
/// (ConfigMap creates) and reads over plain HTTP, next to what the cluster was started with.
fn api_round_trips(cluster: &Cluster) -> Result<Value> {
    let api = cluster
        .api_addr
        .context("the API round trips are of kube-mem's configured latency")?;
    let path = "/api/v1/namespaces/default/configmaps";
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for i in 0..7 {
        let name = format!("bench-latency-probe-{i}");
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        let t = Instant::now();
        http::send_json(api, "POST", path, &body)?;
        writes.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        http::get_json(api, &format!("{path}/{name}"))?;
        reads.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (write, watch) = cluster.config().api_latency_ms;
    Ok(json!({
        "configured_write_ms": write,
        "configured_watch_delay_ms": watch,
        "measured_write_median_ms": round2(median(&mut writes)),
        "measured_read_median_ms": round2(median(&mut reads)),
    }))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

/// (a2) `concurrent_adds` CNI ADDs on one node at once, from a warm pool deep enough for all
/// of them: when the last one answers, against one ADD alone (the median of three, each on
/// an otherwise idle node).
pub fn concurrent_adds(profile: Profile) -> Result<Value> {
    let (cluster, vxnet) = one_node(ClusterConfig::default())?;
    let n = profile.concurrent_adds;
    cluster.apply_pool("concurrent", n as u32, &[&vxnet])?;
    cluster.wait_converged("concurrent", n, Duration::from_secs(300))?;
    let pods = Pods::new(&cluster)?;
    let mut singles = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let pod = pods.add(0, &format!("single-{i}"))?;
        singles.push(t.elapsed().as_secs_f64());
        pods.del(&pod)?;
    }
    // Back to a full pool (quarantine 0), so that every concurrent ADD finds a warm NIC.
    cluster.wait_converged("concurrent", n, Duration::from_secs(300))?;
    let start = Instant::now();
    let answers: Vec<Result<(Pod, f64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let pods = &pods;
                scope.spawn(move || {
                    let pod = pods.add(0, &format!("concurrent-{i}"))?;
                    Ok((pod, start.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("ADD thread panicked")))
            })
            .collect()
    });
    let mut times = Vec::new();
    let mut running = Vec::new();
    for answer in answers {
        let (pod, t) = answer?;
        times.push(t);
        running.push(pod);
    }
    for pod in &running {
        pods.del(pod)?;
    }
    drop(running);
    cluster.delete_pools(Duration::from_secs(180))?;
    let single = median(&mut singles);
    let last = times.iter().copied().fold(0.0, f64::max);
    Ok(json!({
        "what": "concurrent CNI ADDs on one node, warm pool, through libcni, operator at test tempo",
        "adds": n,
        "single_add_ms": round2(single * 1000.0),
        "first_answer_ms": round2(times.iter().copied().fold(f64::MAX, f64::min) * 1000.0),
        "median_answer_ms": round2(median(&mut times) * 1000.0),
        "last_answer_ms": round2(last * 1000.0),
        // Issue 14's target: at most 3.
        "last_over_single": round2(last / single),
    }))
}

/// (a3) A CNI ADD that arrives while the node's pool is empty (its only warm NIC just taken,
/// the refill's attach job taking 1 s): when it answers and how (a NIC, or error 11 "try
/// again later"), against one attach job.
pub fn empty_pool_add() -> Result<Value> {
    let (cluster, vxnet) = one_node(ClusterConfig {
        job_latency_ms: ATTACH_JOB_MS,
        ..ClusterConfig::default()
    })?;
    cluster.apply_pool("empty", 1, &[&vxnet])?;
    cluster.wait_converged("empty", 1, Duration::from_secs(120))?;
    let pods = Pods::new(&cluster)?;
    let first = pods.add(0, "takes-the-last")?;
    let t = Instant::now();
    let second = pods.try_add(0, "finds-none")?;
    let answer = t.elapsed().as_secs_f64();
    let outcome = match &second {
        Ok(_) => json!({"answered": "nic"}),
        Err(e) => json!({"answered": "error", "cni_error_code": e.code(), "error": e.to_string()}),
    };
    let retried = match second {
        Ok(pod) => pods.del(&pod).map(|()| None)?,
        // As kubelet would: retry until the refill lands, to see when a pod would really start.
        Err(_) => {
            let pod = pods.add_retrying(0, "finds-none", Duration::from_secs(120))?;
            let started = t.elapsed().as_secs_f64();
            pods.del(&pod)?;
            Some(started)
        }
    };
    pods.del(&first)?;
    drop(first);
    cluster.delete_pools(Duration::from_secs(120))?;
    Ok(json!({
        "what": "CNI ADD with the node's pool empty, refill on its way, operator at test tempo (job polls 0.2 s)",
        "attach_job_s": attach_s(),
        "answer_s": round2(answer),
        "outcome": outcome,
        // Issue 14's target: an answer with a NIC within one attach + 1 s.
        "answer_over_attach": round2(answer / attach_s()),
        "started_after_retries_s": retried.map(round2),
    }))
}

/// (b) Pool refill after a burst of pods versus after a single pod, with simulator attach jobs
/// of 1 s, on a warm system (the operator has started and cached its cloud facts); each time
/// runs from the first ADD until the pool is full again.
pub fn refill(profile: Profile) -> Result<Value> {
    let job = ATTACH_JOB_MS;
    let (cluster, vxnet) = one_node(ClusterConfig {
        job_latency_ms: job,
        ..ClusterConfig::default()
    })?;
    let t = Instant::now();
    cluster.apply_pool("refill", 1, &[&vxnet])?;
    cluster.wait_converged("refill", 1, Duration::from_secs(120))?;
    let cold = t.elapsed();
    let pods = Pods::new(&cluster)?;
    // The moment the pool is full again is read from a watch, as each HostNic change
    // arrives; polling the list every 200 ms (what `wait_available` does to know it is over)
    // would add up to 200 ms and a kubectl start to each figure.
    let mut changes = Changes::new(cluster.kubectl.watch(&["hostnics"])?);

    // One pod takes the only warm NIC: the time until the pool has one again.
    let t = Instant::now();
    let pod = pods.add_retrying(0, "single", Duration::from_secs(60))?;
    cluster.wait_available("refill", 1, Duration::from_secs(120))?;
    let single = changes.refilled_at(t, "refill", 1)? - t;
    pods.del(&pod)?;
    drop(pod);
    cluster.wait_converged("refill", 1, Duration::from_secs(120))?;

    // A burst takes the whole warm pool at once.
    let size = profile.burst;
    cluster
        .kubectl
        .run(&["scale", "nicpool", "refill", &format!("--replicas={size}")])?;
    let mut run_burst = || -> Result<(Duration, Duration)> {
        cluster.wait_converged("refill", size, Duration::from_secs(120))?;
        let t = Instant::now();
        let mut running = Vec::new();
        for i in 0..size {
            running.push(pods.add_retrying(0, &format!("burst-{i}"), Duration::from_secs(60))?);
        }
        let adds = t.elapsed();
        cluster.wait_available("refill", size, Duration::from_secs(300))?;
        let refill = changes.refilled_at(t, "refill", size)? - t;
        for pod in &running {
            pods.del(pod)?;
        }
        Ok((adds, refill))
    };
    // The simulator's realistic cloud runs an instance's jobs one at a time (an [U]
    // assumption): the burst's two AttachNics of 5 take two jobs in a row. Then the same
    // burst where a cloud runs them side by side.
    let (burst_add, burst) = run_burst()?;
    cluster.sim.set_instance_jobs("concurrent")?;
    let (_, side_by_side) = run_burst()?;
    cluster.delete_pools(Duration::from_secs(120))?;
    Ok(json!({
        "what": "time until the warm pool is full again after pods took it, operator at test tempo (job polls 0.2 s)",
        "sim_job_latency_ms": job.0 + job.1,
        "cold_start_first_nic_s": round2(cold.as_secs_f64()),
        "single_pod_refill_s": round2(single.as_secs_f64()),
        "burst_pods": size,
        "burst_all_adds_s": round2(burst_add.as_secs_f64()),
        "burst_refill_s": round2(burst.as_secs_f64()),
        "burst_over_single": round2(burst.as_secs_f64() / single.as_secs_f64()),
        // Issue 13's targets: at most 1.3 after one pod, 1.5 after a burst of 10.
        "single_over_attach": round2(single.as_secs_f64() / attach_s()),
        "burst_over_attach": round2(burst.as_secs_f64() / attach_s()),
        "burst_jobs_side_by_side_refill_s": round2(side_by_side.as_secs_f64()),
        "burst_jobs_side_by_side_over_attach": round2(side_by_side.as_secs_f64() / attach_s()),
    }))
}

/// The HostNics as a watch showed them, change by change: when a pool got its free NICs back.
struct Changes {
    watch: Watch,
    /// Each HostNic's latest version, by name.
    nics: BTreeMap<String, Value>,
}

impl Changes {
    fn new(watch: Watch) -> Self {
        Self {
            watch,
            nics: BTreeMap::new(),
        }
    }

    /// The first moment after `since` at which `pool` had `want` Available HostNics on every
    /// node that holds any of its HostNics, after having had fewer (a pod took one). Waits up
    /// to 10 s for the change to arrive; later changes stay for the next call.
    fn refilled_at(&mut self, since: Instant, pool: &str, want: usize) -> Result<Instant> {
        let mut short = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, nic) = self
                .watch
                .events
                .recv_timeout(left)
                .map_err(|_| anyhow!("the watch never showed {pool} refilled to {want}"))?;
            let name = nic["metadata"]["name"].as_str().unwrap_or_default();
            self.nics.insert(name.to_string(), nic);
            if at < since {
                continue;
            }
            let mut free: BTreeMap<&str, usize> = BTreeMap::new();
            for n in self.nics.values().filter(|n| n["spec"]["pool"] == pool) {
                let node = n["spec"]["node"].as_str().unwrap_or_default();
                *free.entry(node).or_default() += usize::from(phase(n) == "Available");
            }
            let full = free.values().all(|&f| f >= want);
            short |= !full;
            if short && full {
                return Ok(at);
            }
        }
    }
}

/// (c) Cloud API calls per NIC over a full pool lifecycle (create, attach, ready, then pool
/// deleted: detach, delete), for pool sizes 3 and 30 on one node, the operator at its
/// production intervals (its request budget at the test's 20/s).
pub fn calls_per_nic() -> Result<Value> {
    let mut out = BTreeMap::new();
    for size in [3usize, 30] {
        // Production timers: the job polls and describes counted are a real cluster's.
        let (cluster, vxnet) = one_node(ClusterConfig {
            tempo: Tempo::Production,
            ..ClusterConfig::default()
        })?;
        let before = cluster.sim.calls()?;
        cluster.apply_pool("calls", size as u32, &[&vxnet])?;
        cluster.wait_converged("calls", size, Duration::from_secs(180))?;
        let up = diff(&cluster.sim.calls()?, &before);
        cluster.delete_pools(Duration::from_secs(180))?;
        let all = diff(&cluster.sim.calls()?, &before);
        let total: u64 = all.values().sum();
        out.insert(
            format!("pool_{size}"),
            json!({
                "nics": size,
                "calls_total": total,
                "calls_per_nic": round2(total as f64 / size as f64),
                "calls_to_fill": up,
                "calls_full_lifecycle": all,
            }),
        );
    }
    Ok(json!({
        "what": "QingCloud API calls per NIC, fill then delete the pool, production intervals",
        "runs": out,
    }))
}

fn diff(now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The operator's cloud request budget in (d): high enough that the run measures the operator,
/// not the budget (at the default 0.5/s the floor of 2000 calls for 500 nodes alone takes 67
/// minutes).
const SCALE_QPS: f64 = 100.0;

/// Enough vxnets (`<prefix>NN`, `10.<base+NN>.0.0/22`) for `nics` NICs: a vxnet holds at
/// most 252, so 200 each leaves room for the operator's choices.
fn scale_vxnets(prefix: &str, base: usize, nics: usize) -> Vec<(String, String)> {
    (0..nics.div_ceil(200).max(1))
        .map(|i| (format!("{prefix}{i:02}"), format!("10.{}.0.0/22", base + i)))
        .collect()
}

/// The operator's production default of a flag, read from its own `--help` (clap prints
/// `[default: X]` after the flag's text), so the figure follows `operator/src/args.rs`.
fn operator_default<T: std::str::FromStr>(flag: &str) -> Result<T> {
    let out = std::process::Command::new(bin("hostnic-operator"))
        .arg("--help")
        .output()
        .context("run hostnic-operator --help")?;
    let help = String::from_utf8_lossy(&out.stdout);
    let after = help
        .split_once(&format!("--{flag} "))
        .with_context(|| format!("no --{flag} in the operator's help"))?
        .1;
    let value = after
        .split_once("[default: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .with_context(|| format!("no default for --{flag}"))?
        .0;
    value
        .parse()
        .map_err(|_| anyhow!("--{flag}'s default {value:?} is not a number"))
}

/// A cluster of `nodes` simulated nodes, hot-plug off, with a stand-in agent reporting the
/// links: for the figures about the operator alone, at a scale real agents cannot reach here.
fn fake_agent_cluster(
    nodes: usize,
    size: usize,
    tempo: Tempo,
    gc_interval_s: Option<u64>,
) -> Result<(Cluster, FakeAgents)> {
    let cluster = Cluster::start(
        ClusterConfig {
            gc_interval_s,
            nodes,
            hotplug: false,
            agents: false,
            job_latency_ms: (20, 50),
            cloud_qps: SCALE_QPS,
            vxnets: scale_vxnets("vxnet-scpool", 10, nodes * size),
            primary_vxnets: scale_vxnets("vxnet-scnode", 50, nodes),
            tempo,
            ..ClusterConfig::default()
        },
        &mut quiet,
    )?;
    // The figures are call counts; at 500 nodes the realistic profile's 2000 requests an hour
    // would stop the fill itself (seen: 2005 calls, not converged). The time the calls take
    // within the real quota is the projection at the production budget.
    cluster.sim.lift_request_quota()?;
    let fake = FakeAgents::start(cluster.kubectl.kubeconfig())?;
    Ok((cluster, fake))
}

/// Applies a pool of `size` over every vxnet of a [`fake_agent_cluster`] and waits until every
/// node has its NICs Available.
fn fill_fake_agent_cluster(cluster: &Cluster, pool: &str, size: usize) -> Result<()> {
    let want = cluster.nodes.len() * size;
    let pool_vxnets: Vec<&str> = cluster
        .config()
        .vxnets
        .iter()
        .map(|v| v.0.as_str())
        .collect();
    cluster.apply_pool(pool, size as u32, &pool_vxnets)?;
    wait_for(
        "every node to have its NICs",
        Duration::from_secs(3600),
        || {
            let nics = cluster.hostnics()?;
            Ok(nics.len() == want && nics.iter().all(|n| phase(n) == "Available"))
        },
    )
    .with_context(|| cluster.logs(20))
}

/// (d) The operator at scale: many simulated nodes with 3 NICs each, hot-plug off (a stand-in
/// agent reports the links), the operator at its production intervals (job polls, cloud
/// cache; only the request budget raised): time to converge, the operator's peak memory, API calls against
/// issue 13's floor (`nodes * ceil(k/5)` AttachNics plus `ceil(n/252)` CreateNics for the `n`
/// NICs of each vxnet), and the time the same calls take at the production request budget.
pub fn scale(profile: Profile) -> Result<Value> {
    let nodes = profile.scale_nodes;
    let size = 3usize;
    // Production timers: the calls counted are those of the real job polls and cache.
    let (cluster, fake) = fake_agent_cluster(nodes, size, Tempo::Production, None)?;
    let before = cluster.sim.total_calls()?;
    let by_action_before = cluster.sim.calls()?;
    let t = Instant::now();
    fill_fake_agent_cluster(&cluster, "scale", size)?;
    let converge = t.elapsed();
    let calls = cluster.sim.total_calls()? - before;
    let peak_kib = cluster.operator.peak_rss_kib().unwrap_or(0);
    let nics = nodes * size;
    let mut by_vxnet = BTreeMap::<String, usize>::new();
    for nic in cluster.sim.nics()? {
        let vxnet = nic["vxnet_id"].as_str().unwrap_or_default().to_owned();
        *by_vxnet.entry(vxnet).or_default() += 1;
    }
    let creates_floor: usize = by_vxnet.values().map(|n| n.div_ceil(252)).sum();
    let floor = nodes * size.div_ceil(5) + creates_floor;
    let reports = fake.reports();
    drop(fake);
    let default_qps: f64 = operator_default("cloud-qps")?;
    Ok(json!({
        "what": "operator at scale, hot-plug off, production intervals, budget raised",
        "sim_request_quota": "lifted (calls are counted, not refused)",
        "nodes": nodes,
        "nics": nics,
        "operator_cloud_qps": SCALE_QPS,
        "converge_s": round2(converge.as_secs_f64()),
        "operator_peak_rss_mib": round2(peak_kib as f64 / 1024.0),
        "api_calls": calls,
        "nics_by_vxnet": by_vxnet,
        "api_calls_floor": floor,
        // Issue 13's target: at most 1.3.
        "calls_over_floor": round2(calls as f64 / floor as f64),
        "calls_by_action": diff(&cluster.sim.calls()?, &by_action_before),
        "links_reported_by_stand_in": reports,
        "production_default_cloud_qps": default_qps,
        "projected_converge_at_default_budget_s": round2(calls as f64 / default_qps),
    }))
}

/// (e) The converged cluster left alone: every Node posts kubelet status updates (every
/// 10-60 s, heartbeats only), the operator runs at its production intervals (GC, resync,
/// cloud cache, job polls, shrink delay; only its request budget is raised, so the fill
/// before the window does not take hours): the cloud calls of the window, per action, and
/// extrapolated to an hour. GC alone runs twice within the window, not every 30 minutes,
/// and its calls are scaled back to the production interval.
pub fn idle(profile: Profile) -> Result<Value> {
    let nodes = profile.scale_nodes;
    let size = 3usize;
    // GC twice within the window instead of every 30 minutes: its calls in the window are
    // scaled by the ratio of the two intervals in the hourly figure.
    let gc_interval_s = (profile.idle.as_secs() / 2).max(1);
    let production_gc_s: u64 = operator_default("gc-interval-seconds")?;
    let (cluster, fake) = fake_agent_cluster(nodes, size, Tempo::Production, Some(gc_interval_s))?;
    let names = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let kubelets = NodeStatusUpdates::start(cluster.kubectl.kubeconfig(), names)?;
    let t = Instant::now();
    fill_fake_agent_cluster(&cluster, "idle", size)?;
    let fill = t.elapsed();
    let before = cluster.sim.calls()?;
    let total_before = cluster.sim.total_calls()?;
    let posted_before = kubelets.posted();
    std::thread::sleep(profile.idle);
    let calls = cluster.sim.total_calls()? - total_before;
    let posted = kubelets.posted() - posted_before;
    let by_action = diff(&cluster.sim.calls()?, &before);
    let still_available = cluster
        .hostnics()?
        .iter()
        .filter(|n| phase(n) == "Available")
        .count();
    drop(kubelets);
    drop(fake);
    let window = profile.idle.as_secs_f64();
    // At idle only GC lists NICs.
    let gc_calls = by_action.get("DescribeNics").copied().unwrap_or(0);
    let hourly = |n: u64| n as f64 * 3600.0 / window;
    let gc_per_hour = hourly(gc_calls) * gc_interval_s as f64 / production_gc_s as f64;
    Ok(json!({
        "what": "idle converged cluster, kubelet status updates, production intervals",
        "sim_request_quota": "lifted (calls are counted, not refused)",
        "nodes": nodes,
        "nics": nodes * size,
        "operator_cloud_qps": SCALE_QPS,
        "fill_s": round2(fill.as_secs_f64()),
        "window_s": window,
        "window_note": if window < 600.0 {
            "CI profile: shorter than the 10 minutes of issue 13 (run --full)"
        } else {
            "at least 10 minutes, as issue 13 asks"
        },
        "production_gc_interval_s": production_gc_s,
        "bench_gc_interval_s": gc_interval_s,
        "production_resync_s": operator_default::<u64>("resync-seconds")?,
        "production_cloud_cache_s": operator_default::<u64>("cloud-cache-seconds")?,
        "node_status_updates": posted,
        "available_nics_at_end": still_available,
        "calls": calls,
        "calls_by_action": by_action,
        "gc_listing_calls": gc_calls,
        // GC's calls at its production interval, the rest as measured.
        "gc_calls_per_hour": round2(gc_per_hour),
        // Issue 13's target: at most 60.
        "calls_per_hour": round2(hourly(calls - gc_calls) + gc_per_hour),
    }))
}

/// (f) Pod churn: `churn_restarts` pod restarts (DEL of the old sandbox, ADD of the new one)
/// spread over `churn_nodes` nodes with real agents, a pool of 3 with the default quarantine
/// and the operator at its production intervals, twice on one cluster:
/// - paced: each node restarts its pod every `churn_interval` (the nodes' turns staggered
///   over it), slower than a pool of 3 turns over in one quarantine, so the quarantine's NICs
///   come back before they are needed and no pod's NIC has to be replaced;
/// - burst: each node's restarts back to back, faster than the quarantine, so the pools must
///   grow, against the floor that growth needs.
///
/// Each counts the cloud calls from its first restart until the pools are quiet again (no NIC
/// in quarantine or on its way) and reports the NICs beyond the pools then: the production
/// shrink delay (minutes) deletes them later, at a cost not counted here.
pub fn churn(profile: Profile) -> Result<Value> {
    let nodes = profile.churn_nodes;
    let size = 3usize;
    let cluster = Cluster::start(
        ClusterConfig {
            nodes,
            tempo: Tempo::Production,
            ..ClusterConfig::default()
        },
        &mut quiet,
    )?;
    let vxnet = cluster.config().vxnets[0].0.clone();
    cluster.apply_pool_quarantined("churn", size as u32, &[&vxnet], None)?;
    let pool = cluster.kubectl.list("nicpools")?;
    let quarantine = pool
        .first()
        .and_then(|p| p["spec"]["quarantineSeconds"].as_u64())
        .context("the NicPool's defaulted quarantineSeconds")?;
    cluster.wait_converged("churn", size, Duration::from_secs(300))?;
    let pods = Pods::new(&cluster)?;
    // One running pod per node, and its refill done, before the count starts.
    let mut running = Vec::new();
    for node in 0..nodes {
        running.push(pods.add(node, &format!("churn-{node}-0"))?);
    }
    cluster.wait_converged("churn", size, Duration::from_secs(300))?;
    let per_node = profile.churn_restarts.div_ceil(nodes);
    let churn = Churn {
        cluster: &cluster,
        pods: &pods,
        per_node,
        size,
    };
    let interval = profile.churn_interval;
    let (running, paced) = churn.run(running, "paced", Some(interval))?;
    let (running, mut burst) = churn.run(running, "burst", None)?;
    // Each node needs a new NIC for every restart its warm NICs cannot serve, attached in
    // AttachNics of at most 5 and created in CreateNics of at most 252 (issue 13's floor).
    let new_per_node = per_node.saturating_sub(size);
    let floor = nodes * new_per_node.div_ceil(5) + (nodes * new_per_node).div_ceil(252);
    burst["floor_calls"] = json!(floor);
    for pod in &running {
        pods.del(pod)?;
    }
    drop(running);
    Ok(json!({
        "what": "pod restarts, pool of 3, default quarantine, production intervals",
        "nodes": nodes,
        "restarts": per_node * nodes,
        "default_quarantine_s": quarantine,
        "paced_interval_s": interval.as_secs(),
        // Issue 13's target: at most 10.
        "calls": paced["calls"].clone(),
        "paced": paced,
        "burst": burst,
    }))
}

/// One run of (f)'s restarts on its cluster.
struct Churn<'a> {
    cluster: &'a Cluster,
    pods: &'a Pods,
    per_node: usize,
    size: usize,
}

impl Churn<'_> {
    /// Restarts each of `running` (one pod per node) `per_node` times, every `interval` or
    /// back to back, and waits for the pools to be quiet: the new pods and the run's figures.
    fn run(
        &self,
        running: Vec<Pod>,
        label: &str,
        interval: Option<Duration>,
    ) -> Result<(Vec<Pod>, Value)> {
        let Self {
            cluster,
            pods,
            per_node,
            ..
        } = *self;
        let nodes = running.len();
        let before = cluster.sim.calls()?;
        let total_before = cluster.sim.total_calls()?;
        let t = Instant::now();
        let restarted: Vec<Result<(Pod, f64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = running
                .into_iter()
                .enumerate()
                .map(|(turn, mut pod)| {
                    scope.spawn(move || {
                        let mut longest = 0.0f64;
                        for i in 1..=per_node {
                            if let Some(every) = interval {
                                // Node `turn` restarts at its share of each interval.
                                let at = every * (i as u32 - 1)
                                    + every.mul_f64(turn as f64 / nodes as f64);
                                std::thread::sleep(at.saturating_sub(t.elapsed()));
                            }
                            pods.del(&pod)?;
                            let node = pod.node;
                            drop(pod);
                            // A pod whose ADD finds no NIC is retried, as kubelet retries it.
                            let started = Instant::now();
                            pod = pods.add_retrying(
                                node,
                                &format!("churn-{node}-{label}-{i}"),
                                Duration::from_secs(600),
                            )?;
                            longest = longest.max(started.elapsed().as_secs_f64());
                        }
                        Ok((pod, longest))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("restart thread panicked")))
                })
                .collect()
        });
        let restarts_s = t.elapsed();
        let (running, waits): (Vec<Pod>, Vec<f64>) = restarted
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        wait_for("the pools to be quiet", Duration::from_secs(900), || {
            Ok(cluster
                .hostnics()?
                .iter()
                .all(|n| matches!(phase(n), "Available" | "Bound")))
        })
        .with_context(|| cluster.logs(20))?;
        let quiet_s = t.elapsed();
        let calls = cluster.sim.total_calls()? - total_before;
        let surplus = cluster
            .hostnics()?
            .len()
            .saturating_sub(nodes * (self.size + 1));
        Ok((
            running,
            json!({
                "restarts_done_s": round2(restarts_s.as_secs_f64()),
                // How long the slowest new pod waited for a NIC (retrying ADD as kubelet would).
                "longest_pod_start_s": round2(waits.iter().copied().fold(0.0, f64::max)),
                "pools_quiet_s": round2(quiet_s.as_secs_f64()),
                "calls": calls,
                "calls_by_action": diff(&cluster.sim.calls()?, &before),
                "nics_beyond_pools_left_for_shrink": surplus,
            }),
        ))
    }
}
