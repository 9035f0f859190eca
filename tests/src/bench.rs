//! The benchmarks behind `hostnic-bench`: figures, never timed assertions. Each returns a JSON
//! object that the binary prints and writes to a file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterConfig, phase, wait_for};
use crate::cni_runtime::{BenchResult, CniRuntime, DEBIAN_PLUGIN_DIR};
use crate::fake_agent::FakeAgents;
use crate::netns::TestNetns;
use crate::pods::Pods;

/// How big the runs are.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// ADD+DEL pairs per plugin in (a).
    pub cni_iterations: u32,
    /// Pods in the burst of (b).
    pub burst: usize,
    /// Nodes in (d).
    pub scale_nodes: usize,
}

impl Profile {
    /// Short enough for CI.
    pub const CI: Self = Self {
        cni_iterations: 50,
        burst: 5,
        scale_nodes: 50,
    };
    /// What the README's figures come from.
    pub const FULL: Self = Self {
        cni_iterations: 300,
        burst: 10,
        scale_nodes: 500,
    };
}

fn quiet(_: &str) {}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// (a) CNI ADD+DEL through libcni: hostnic (through its agent, NICs from a warm pool) versus
/// Debian's bridge + host-local, in the same run and the same driver process, the two conflists
/// taking turns. The driver runs inside the hostnic node's netns: bridge creates its bridge in
/// the caller's netns, which must be one made here.
pub fn cni_latency(profile: Profile) -> Result<Value> {
    let cluster = Cluster::start(
        ClusterConfig {
            nodes: 1,
            ..ClusterConfig::default()
        },
        &mut quiet,
    )?;
    let vxnet = cluster.config().vxnets[0].0.clone();
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
    }))
}

/// (b) Pool refill after a burst of pods versus after a single pod, with fixed simulator job
/// latency, on a warm system (the operator has started and cached its cloud facts).
pub fn refill(profile: Profile) -> Result<Value> {
    let job = (200, 800);
    let cluster = Cluster::start(
        ClusterConfig {
            nodes: 1,
            job_latency_ms: job,
            ..ClusterConfig::default()
        },
        &mut quiet,
    )?;
    let vxnet = cluster.config().vxnets[0].0.clone();
    let t = Instant::now();
    cluster.apply_pool("refill", 1, &[&vxnet])?;
    cluster.wait_converged("refill", 1, Duration::from_secs(120))?;
    let cold = t.elapsed();
    let pods = Pods::new(&cluster)?;

    // One pod takes the only warm NIC: the time until the pool has one again.
    let t = Instant::now();
    let pod = pods.add_retrying(0, "single", Duration::from_secs(60))?;
    cluster.wait_available("refill", 1, Duration::from_secs(120))?;
    let single = t.elapsed();
    pods.del(&pod)?;
    drop(pod);
    cluster.wait_converged("refill", 1, Duration::from_secs(120))?;

    // A burst takes the whole warm pool at once.
    let size = profile.burst;
    cluster
        .kubectl
        .run(&["scale", "nicpool", "refill", &format!("--replicas={size}")])?;
    cluster.wait_converged("refill", size, Duration::from_secs(120))?;
    let t = Instant::now();
    let mut running = Vec::new();
    for i in 0..size {
        running.push(pods.add_retrying(0, &format!("burst-{i}"), Duration::from_secs(60))?);
    }
    let burst_add = t.elapsed();
    cluster.wait_available("refill", size, Duration::from_secs(300))?;
    let burst = t.elapsed();
    for pod in &running {
        pods.del(pod)?;
    }
    drop(running);
    cluster.delete_pools(Duration::from_secs(120))?;
    Ok(json!({
        "what": "time until the warm pool is full again after pods took it",
        "sim_job_latency_ms": job.0 + job.1,
        "cold_start_first_nic_s": round2(cold.as_secs_f64()),
        "single_pod_refill_s": round2(single.as_secs_f64()),
        "burst_pods": size,
        "burst_all_adds_s": round2(burst_add.as_secs_f64()),
        "burst_refill_s": round2(burst.as_secs_f64()),
        "burst_over_single": round2(burst.as_secs_f64() / single.as_secs_f64()),
    }))
}

/// (c) Cloud API calls per NIC over a full pool lifecycle (create, attach, ready, then pool
/// deleted: detach, delete), for pool sizes 3 and 30 on one node.
pub fn calls_per_nic() -> Result<Value> {
    let mut out = BTreeMap::new();
    for size in [3usize, 30] {
        let cluster = Cluster::start(
            ClusterConfig {
                nodes: 1,
                ..ClusterConfig::default()
            },
            &mut quiet,
        )?;
        let vxnet = cluster.config().vxnets[0].0.clone();
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
    Ok(json!({"what": "QingCloud API calls per NIC, fill then delete the pool", "runs": out}))
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

/// (d) The operator at scale: many simulated nodes with 3 NICs each, hot-plug off (a stand-in
/// agent reports the links): time to converge, the operator's peak memory, API calls against
/// the floor (one CreateNics per NIC, since each NIC is named after its HostNic, plus one
/// AttachNics per node).
pub fn scale(profile: Profile) -> Result<Value> {
    let nodes = profile.scale_nodes;
    let size = 3usize;
    let cluster = Cluster::start(
        ClusterConfig {
            nodes,
            hotplug: false,
            agents: false,
            job_latency_ms: (20, 50),
            cloud_qps: SCALE_QPS,
            vxnets: scale_vxnets("vxnet-scpool", 10, nodes * size),
            primary_vxnets: scale_vxnets("vxnet-scnode", 50, nodes),
            ..ClusterConfig::default()
        },
        &mut quiet,
    )?;
    let fake = FakeAgents::start(cluster.kubectl.kubeconfig())?;
    let before = cluster.sim.total_calls()?;
    let t = Instant::now();
    let pool_vxnets: Vec<&str> = cluster
        .config()
        .vxnets
        .iter()
        .map(|v| v.0.as_str())
        .collect();
    cluster.apply_pool("scale", size as u32, &pool_vxnets)?;
    wait_for(
        "every node to have its NICs",
        Duration::from_secs(1800),
        || {
            let nics = cluster.hostnics()?;
            Ok(nics.len() == nodes * size && nics.iter().all(|n| phase(n) == "Available"))
        },
    )
    .with_context(|| cluster.logs(20))?;
    let converge = t.elapsed();
    let calls = cluster.sim.total_calls()? - before;
    let peak_kib = cluster.operator.peak_rss_kib().unwrap_or(0);
    let nics = nodes * size;
    let floor = nics + nodes * size.div_ceil(5);
    let reports = fake.reports();
    drop(fake);
    Ok(json!({
        "what": "operator at scale, hot-plug off",
        "nodes": nodes,
        "nics": nics,
        "operator_cloud_qps": SCALE_QPS,
        "converge_s": round2(converge.as_secs_f64()),
        "operator_peak_rss_mib": round2(peak_kib as f64 / 1024.0),
        "api_calls": calls,
        "api_calls_floor": floor,
        "calls_over_floor": round2(calls as f64 / floor as f64),
        "calls_by_action": cluster.sim.calls()?,
        "links_reported_by_stand_in": reports,
    }))
}
