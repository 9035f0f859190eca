//! The demo's flow as a test: pool filled, pods through libcni, pings, kubectl scale, DEL,
//! teardown with nothing left.

use hostnic_tests::privilege::require_root;
use hostnic_tests::scenario::{self, Printer};

#[test]
fn whole_system_flow_leaves_nothing_behind() {
    if !require_root("whole_system_flow_leaves_nothing_behind") {
        return;
    }
    let missing = scenario::missing_prerequisites();
    assert!(missing.is_empty(), "missing: {missing:?}");
    if let Err(e) = scenario::run(&mut Printer::default()) {
        panic!("{e:#}");
    }
}
