//! Every class of cloud failure, injected by the simulator, ends in a converged pool with no
//! leaked or duplicated NIC.

mod common;

use std::time::Duration;

use common::*;
use hostnic_crds::HostNicPhase;
use qingcloud_sim::{Fault, FaultKind, JobOutcome};

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_cloud_error_class_converges() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 1)).await;
    env.converged("web", &["i-node0001"], 1, T).await;

    let cases: Vec<(&str, Vec<Fault>)> = vec![
        (
            "internal error 5000 on create",
            vec![Fault::error(5000).on("CreateNics").next(3)],
        ),
        (
            "server busy 5100 on attach",
            vec![Fault::error(5100).on("AttachNics").next(4)],
        ),
        (
            "quota 2500 on attach (throttled)",
            vec![Fault::error(2500).on("AttachNics").next(2)],
        ),
        (
            "quota 2500 on create (throttled)",
            vec![Fault::error(2500).on("CreateNics").next(2)],
        ),
        (
            "permission denied 1400 on attach",
            vec![Fault::error(1400).on("AttachNics").next(2)],
        ),
        (
            "auth failure 1200 on create",
            vec![Fault::error(1200).on("CreateNics").next(1)],
        ),
        (
            "HTTP 503 on describes",
            vec![
                Fault::new(FaultKind::HttpStatus(503))
                    .on("DescribeNics")
                    .next(3),
            ],
        ),
        (
            "non-JSON body",
            vec![Fault::new(FaultKind::NonJson).on("DescribeJobs").next(2)],
        ),
        (
            "missing ret_code",
            vec![
                Fault::new(FaultKind::MissingRetCode)
                    .on("DescribeVxnets")
                    .next(1),
            ],
        ),
        (
            "connection reset",
            vec![Fault::new(FaultKind::Reset).on("AttachNics").next(1)],
        ),
        (
            "lost CreateNics response (NIC created, client sees a reset)",
            vec![
                Fault::new(FaultKind::Reset)
                    .on("CreateNics")
                    .next(1)
                    .after_effect(),
            ],
        ),
        (
            "lost response and the new NIC hidden from DescribeNics (duplicate, then GC)",
            vec![
                Fault::new(FaultKind::HideNewNics(3))
                    .on("CreateNics")
                    .next(1),
                Fault::new(FaultKind::Reset)
                    .on("CreateNics")
                    .next(1)
                    .after_effect(),
            ],
        ),
        (
            "attach job fails",
            vec![
                Fault::new(FaultKind::Job(JobOutcome::Failed))
                    .on("AttachNics")
                    .next(2),
            ],
        ),
        (
            "attach job done with failure",
            vec![
                Fault::new(FaultKind::Job(JobOutcome::DoneWithFailure))
                    .on("AttachNics")
                    .next(1),
            ],
        ),
        (
            "slow answers",
            vec![
                Fault::new(FaultKind::DelayMs(1500))
                    .on("AttachNics")
                    .next(1),
            ],
        ),
    ];
    for (what, faults) in cases {
        eprintln!("case: {what}");
        env.patch_pool("web", serde_json::json!({ "size": 1 }))
            .await;
        env.converged("web", &["i-node0001"], 1, T).await;
        for f in faults {
            env.sim.inject(f);
        }
        env.patch_pool("web", serde_json::json!({ "size": 2 }))
            .await;
        env.converged("web", &["i-node0001"], 2, T).await;
        let left = env.sim.faults();
        assert!(left.is_empty(), "{what}: faults never fired: {left:?}");
    }

    // Deletion path: detach and delete fail transiently, or say "not found" for a NIC that
    // still exists (it leaks until GC finds the orphan).
    for (what, f) in [
        ("detach busy", Fault::error(5100).on("DetachNics").next(3)),
        (
            "detach job fails",
            Fault::new(FaultKind::Job(JobOutcome::Failed))
                .on("DetachNics")
                .next(1),
        ),
        (
            "delete internal error",
            Fault::error(5000).on("DeleteNics").next(3),
        ),
        (
            "delete refused",
            Fault::error(1400).on("DeleteNics").next(1),
        ),
        (
            "delete says not found, NIC still there",
            Fault::error(2100).on("DeleteNics").next(1),
        ),
    ] {
        eprintln!("case: {what}");
        env.patch_pool("web", serde_json::json!({ "size": 2 }))
            .await;
        env.converged("web", &["i-node0001"], 2, T).await;
        env.sim.inject(f);
        env.patch_pool("web", serde_json::json!({ "size": 1 }))
            .await;
        env.converged("web", &["i-node0001"], 1, T).await;
        let left = env.sim.faults();
        assert!(left.is_empty(), "{what}: faults never fired: {left:?}");
    }
    let failures = hostnic_operator::metrics::encode(&env.registry);
    assert!(
        failures.contains("cloud_throttled"),
        "throttling is counted: {failures}"
    );
    env.shutdown().await;
}

fn degraded_reason(pool: &hostnic_crds::NicPool) -> Option<String> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map(|c| c.reason.clone())
}

/// The account's NIC quota (a resource 2500, worded apart from the request quota) stops the
/// pool with a QuotaExceeded reason: each HostNic that met it asks once, then nothing loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nic_quota_blocks_the_pool_without_a_create_loop() {
    let mut env = Env::start(Setup {
        // The primary NIC and two pool NICs fit; a third does not.
        configure_sim: Some(|c| c.nic_quota = Some(3)),
        ..Default::default()
    })
    .await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    env.sim.reset_calls();
    env.patch_pool("web", serde_json::json!({ "size": 4 }))
        .await;
    eventually("degraded: quota exceeded", T, || async {
        env.pool("web")
            .await
            .and_then(|p| degraded_reason(&p))
            .as_deref()
            == Some("QuotaExceeded")
    })
    .await;
    // Long enough for dozens of retries at the test back-offs (0.2-1 s) if it looped.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = env.sim.calls();
    let creates = calls.action("CreateNics");
    assert!(
        (1..=2).contains(&creates),
        "one refused CreateNics per missing NIC at most: {calls:?}"
    );
    assert_eq!(
        calls.by_ret_code.get(&2500).copied(),
        Some(creates),
        "{calls:?}"
    );
    assert_eq!(
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await,
        2
    );
    let pool = env.pool("web").await.expect("pool");
    assert_eq!(degraded_reason(&pool).as_deref(), Some("QuotaExceeded"));
    env.shutdown().await;
}

/// The API request quota (2500 "api request quota exceeded") pauses the whole client: while
/// the cooldown runs no request reaches the cloud, whatever the reconcilers want.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_quota_pauses_every_call_for_the_cooldown() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 1)).await;
    env.converged("web", &["i-node0001"], 1, T).await;
    // Refuse everything from now on, as an exhausted hourly quota does.
    env.sim.set_quota(Some(qingcloud_sim::Quota {
        requests: 0,
        window_ms: 3_600_000,
    }));
    env.sim.reset_calls();
    env.patch_pool("web", serde_json::json!({ "size": 3 }))
        .await;
    // 4 s of wanting NICs with the 1 s test cooldown (300 s in production): a handful of
    // probes, not the dozens of per-object retries at the test back-offs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls = env.sim.calls();
    assert!(calls.total >= 1, "the quota was never met: {calls:?}");
    assert!(
        calls.total <= 12,
        "calls kept coming during the cooldown: {calls:?}"
    );
    env.sim.set_quota(None);
    env.converged("web", &["i-node0001"], 3, T).await;
    env.shutdown().await;
}
