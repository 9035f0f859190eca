//! Operator events a user can act on, aggregated as Kubernetes does: a NIC that keeps failing
//! gives a Warning with the cloud's ret_code on the HostNic and on its pool, and the pool's
//! repeats are one Event whose `series.count` grows, not one Event per failure.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use qingcloud_sim::Fault;

const T: Duration = Duration::from_secs(40);
/// A ret_code CreateNics answers with that no retry can fix (a permanent refusal).
const REFUSED_CODE: i32 = 1300;

async fn warnings(env: &Env, reason: &str) -> Vec<Event> {
    kube::Api::<Event>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect()
}

fn about<'a>(events: &'a [Event], kind: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some(kind))
        .collect()
}

fn series_count(e: &Event) -> i32 {
    e.series.as_ref().map_or(1, |s| s.count)
}

/// Test settings: the permanent back-off is 1 s instead of 300 s, so a NIC fails, is replaced
/// and fails again several times within the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_nic_warns_with_its_ret_code_once_per_pool_as_a_series() {
    let mut env = Env::start(Setup::default()).await;
    env.sim.inject(Fault::error(REFUSED_CODE).on("CreateNics"));
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 1)).await;

    // The pool's count once it has repeated, then again later: one Event, counting up.
    let pool_series = || async {
        let all = warnings(&env, "CreateRefused").await;
        let pool = about(&all, "NicPool");
        assert!(
            pool.len() <= 1,
            "one Event for the pool's repeats: {pool:?}"
        );
        pool.first().map_or(0, |e| series_count(e))
    };
    let deadline = tokio::time::Instant::now() + T;
    let mut first = 0;
    while first < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool's warning never repeated"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        first = pool_series().await;
    }
    let mut later = first;
    while later <= first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the series stopped at {first}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        later = pool_series().await;
    }
    println!(
        "MEASURE the pool's CreateRefused warning: one Event, series.count {first} then {later}"
    );

    let all = warnings(&env, "CreateRefused").await;
    let code = format!("ret_code {REFUSED_CODE}");
    let pool = about(&all, "NicPool");
    let note = pool[0].note.as_deref().unwrap_or_default();
    assert!(
        note.contains(&code),
        "the pool's warning names the ret_code: {note}"
    );
    assert!(note.contains("i-node0001"), "and the node: {note}");
    let nics = about(&all, "HostNic");
    assert!(!nics.is_empty(), "each failed HostNic warns too");
    for e in &nics {
        let note = e.note.as_deref().unwrap_or_default();
        assert!(
            note.contains(&code),
            "HostNic warning without the ret_code: {note}"
        );
    }
    let normal_per_nic = kube::Api::<Event>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Normal"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("HostNic"))
        .count();
    assert_eq!(normal_per_nic, 0, "no Normal event per NIC");
    env.sim.clear_faults();
    env.converged("web", &["i-node0001"], 1, T).await;
    env.shutdown().await;
}
