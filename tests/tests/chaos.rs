//! Chaos: seeded concurrent pod churn (several CNI requests in flight per node) with kill -9 of
//! the operator and agents landing inside requests, simulator faults, pod netns destroyed
//! without DEL, CHECK and GC against live pods and NicPool route and size edits; then the
//! invariants. CI profile by default (40 s of churn); `HOSTNIC_CHAOS_SECS=600
//! HOSTNIC_CHAOS_SEED=<n>` for a long or replayed run.

use hostnic_tests::chaos::{self, ChaosConfig};
use hostnic_tests::privilege::require_root;

#[test]
fn chaos_keeps_the_invariants() {
    if !require_root("chaos_keeps_the_invariants") {
        return;
    }
    let config = ChaosConfig::from_env();
    println!("chaos: {config:?}");
    let figures =
        chaos::run(config, &mut |m| println!("chaos: {m}")).unwrap_or_else(|e| panic!("{e:#}"));
    println!("chaos figures: {figures}");
    assert!(
        figures.violations.is_empty(),
        "{} violations: {:#?}",
        figures.violations.len(),
        figures.violations
    );
    // The run must have reached the dangerous paths it exists for.
    assert!(
        figures.agent_kills_inside_requests > 0,
        "no kill landed inside a request: {figures}"
    );
    assert!(
        figures.abandoned > 0 && figures.checks > 0 && figures.gcs > 0,
        "{figures}"
    );
    assert!(figures.route_edits > 0, "{figures}");
}
