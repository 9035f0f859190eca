//! Figures for the report, printed rather than asserted: cloud API calls per NIC over a full
//! lifecycle (fill a pool, then delete it) for 3 and 30 NICs per node, and the time to refill
//! 10 NICs against the simulator's fixed attach latency. Out of the default run (they assert
//! nothing): `cargo test -p hostnic-operator --test measure -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(120);
const JOB_MS: u64 = 1000;

fn setup() -> Setup {
    let mut s = Setup {
        job_ms: JOB_MS,
        ..Default::default()
    };
    // Closer to production than the other tests: no GC pass during the run (GC is measured
    // on its own), cached cloud facts, polls at half the job latency, the production grace of
    // the link report.
    s.settings.gc_interval = Duration::from_secs(3600);
    s.settings.cloud_cache = Duration::from_secs(15);
    s.settings.job_poll = Duration::from_millis(JOB_MS / 2);
    s.settings.link_grace = production_settings().link_grace;
    s
}

async fn calls_per_nic(per_node: u32) {
    let mut env = Env::start(setup()).await;
    env.start_operator();
    env.sim.reset_calls();
    let start = Instant::now();
    env.create_pool("m", spec(&[VX_A], per_node)).await;
    env.converged("m", &["i-node0001"], per_node, T).await;
    let filled = start.elapsed();
    let fill = env.sim.calls();
    env.delete_pool("m").await;
    eventually("pool gone", T, || async {
        env.pool("m").await.is_none() && env.cloud_nics().is_empty()
    })
    .await;
    let all = env.sim.calls();
    println!(
        "MEASURE pool of {per_node}/node: fill {} calls in {:.1}s ({:.2}/NIC), full lifecycle {} calls = {:.2} calls/NIC; by action {:?}; by ret_code {:?}",
        fill.total,
        filled.as_secs_f64(),
        fill.total as f64 / f64::from(per_node),
        all.total,
        all.total as f64 / f64::from(per_node),
        all.by_action,
        all.by_ret_code
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "figures only: run with --ignored --nocapture"]
async fn api_calls_per_nic_pool_of_3() {
    calls_per_nic(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "figures only: run with --ignored --nocapture"]
async fn api_calls_per_nic_pool_of_30() {
    calls_per_nic(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "figures only: run with --ignored --nocapture"]
async fn refill_time_for_10_nics() {
    let mut env = Env::start(setup()).await;
    env.start_operator();
    let start = Instant::now();
    env.create_pool("one", spec(&[VX_A], 1)).await;
    env.converged("one", &["i-node0001"], 1, T).await;
    let one = start.elapsed();
    env.sim.reset_calls();
    let start = Instant::now();
    env.create_pool("ten", spec(&[VX_B], 10)).await;
    env.converged("ten", &["i-node0001"], 10, T).await;
    let ten = start.elapsed();
    let calls = env.sim.calls();
    println!(
        "MEASURE refill: 1 NIC {:.2}s, 10 NICs {:.2}s, one attach job {:.2}s; 10 NICs = {:.1}x one attach latency; {} AttachNics calls, {} calls total",
        one.as_secs_f64(),
        ten.as_secs_f64(),
        JOB_MS as f64 / 1000.0,
        ten.as_secs_f64() / (JOB_MS as f64 / 1000.0),
        calls.action("AttachNics"),
        calls.total
    );
    env.shutdown().await;
}
