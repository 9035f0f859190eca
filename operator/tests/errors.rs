//! Every class of cloud failure, injected by the simulator, ends in a converged pool with no
//! leaked or duplicated NIC.

mod common;

use std::time::Duration;

use common::*;
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
