//! Keeps the benchmarks runnable: (a) and (d) on a tiny profile, checking only that they produce
//! their figures (never how fast: timings are for `hostnic-bench` to print).

use hostnic_tests::bench::{self, Profile};
use hostnic_tests::privilege::require_root;

const TINY: Profile = Profile {
    cni_iterations: 5,
    burst: 2,
    scale_nodes: 5,
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
}
