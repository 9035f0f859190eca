//! Keeps the benchmarks runnable: (a), (a2), (a3), (d), (e) and (f) on a tiny profile, checking
//! only that they produce their figures (never how fast: timings are for `hostnic-bench` to
//! print).

use hostnic_tests::bench::{self, Profile};
use hostnic_tests::privilege::require_root;

const TINY: Profile = Profile {
    cni_iterations: 5,
    concurrent_adds: 2,
    burst: 2,
    scale_nodes: 5,
    idle: std::time::Duration::from_secs(10),
    churn_nodes: 1,
    churn_restarts: 2,
    // Two restarts, fewer than the pool's NICs: the pace changes nothing but the run's length.
    churn_interval: std::time::Duration::from_secs(1),
};

#[test]
#[ignore = "starts whole clusters to check figures exist: run with --ignored, or hostnic-bench"]
fn benchmarks_produce_their_figures() {
    if !require_root("benchmarks_produce_their_figures") {
        return;
    }
    let a = bench::cni_latency(TINY).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{a:#}");
    for plugin in ["hostnic", "bridge_host_local"] {
        assert!(
            a[plugin]["add_del"]["p50_ms"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{a}"
        );
    }
    let d = bench::scale(TINY).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{d:#}");
    assert_eq!(d["nics"], 15, "{d}");
    assert!(d["api_calls"].as_u64().is_some_and(|c| c >= 15), "{d}");
    assert!(
        d["operator_peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0),
        "{d}"
    );
    let a2 = bench::concurrent_adds(TINY).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{a2:#}");
    assert!(
        a2["last_over_single"].as_f64().is_some_and(|r| r > 0.0),
        "{a2}"
    );
    let a3 = bench::empty_pool_add().unwrap_or_else(|e| panic!("{e:#}"));
    println!("{a3:#}");
    assert!(a3["answer_s"].as_f64().is_some_and(|s| s > 0.0), "{a3}");
    let e = bench::idle(TINY).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{e:#}");
    assert_eq!(e["available_nics_at_end"], 15, "{e}");
    assert!(e["node_status_updates"].as_u64().is_some(), "{e}");
    assert!(e["calls_per_hour"].as_f64().is_some(), "{e}");
    let f = bench::churn(TINY).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{f:#}");
    assert_eq!(f["restarts"], 2, "{f}");
    assert!(f["calls"].as_u64().is_some(), "{f}");
    assert!(f["burst"]["floor_calls"].as_u64().is_some(), "{f}");
}
