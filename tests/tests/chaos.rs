//! Chaos: seeded pod churn with kill -9 of the operator and agents and simulator faults, then
//! the invariants. CI profile by default (40 s of churn); `HOSTNIC_CHAOS_SECS=600
//! HOSTNIC_CHAOS_SEED=<n>` for a long or replayed run.

use hostnic_tests::chaos::{self, ChaosConfig};
use hostnic_tests::privilege::require_root;

#[test]
fn chaos_keeps_the_invariants() {
    if !require_root("chaos_keeps_the_invariants") {
        return;
    }
    let config = ChaosConfig::from_env();
    println!("chaos: seed {} churn {:?}", config.seed, config.churn);
    let figures =
        chaos::run(config, &mut |m| println!("chaos: {m}")).unwrap_or_else(|e| panic!("{e:#}"));
    println!("chaos figures: {figures}");
    assert!(
        figures.violations.is_empty(),
        "{} violations: {:#?}",
        figures.violations.len(),
        figures.violations
    );
}
