//! Every class of cloud failure, injected by the simulator, ends in a converged pool with no
//! leaked or duplicated NIC.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use hostnic_crds::{HostNic, HostNicPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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
        resize_through(&env, what, faults, 1, 2).await;
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
        // Attaches and detaches complete by the agent's link reports: the job is polled only
        // when none comes (here, the agent withholds them).
        (
            "non-JSON body",
            Fault::new(FaultKind::NonJson).on("DescribeJobs").next(2),
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
        if what == "non-JSON body" {
            // Filled first: an attach waits for its link report even after its job is done.
            env.patch_pool("web", serde_json::json!({ "size": 2 }))
                .await;
            env.converged("web", &["i-node0001"], 2, T).await;
            env.agent_reports.store(false, Ordering::SeqCst);
        }
        resize_through(&env, what, vec![f], 2, 1).await;
        env.agent_reports.store(true, Ordering::SeqCst);
    }
    let failures = hostnic_operator::metrics::encode(&env.registry);
    assert!(
        failures.contains("cloud_throttled"),
        "throttling is counted: {failures}"
    );
    env.shutdown().await;
}

/// One case of a fault class: the pool of "web" converged at `from` NICs, `faults` armed, then
/// resized to `to`: it converges there and every fault fired.
async fn resize_through(env: &Env, what: &str, faults: Vec<Fault>, from: u32, to: u32) {
    eprintln!("case: {what}");
    env.patch_pool("web", serde_json::json!({ "size": from }))
        .await;
    env.converged("web", &["i-node0001"], from, T).await;
    // Let the cloud facts expire, so a fault on a Describe meets the resize's describe
    // instead of a cache filled by the previous case.
    tokio::time::sleep(env.setup_settings.cloud_cache + Duration::from_millis(200)).await;
    for f in faults {
        env.sim.inject(f);
    }
    env.patch_pool("web", serde_json::json!({ "size": to }))
        .await;
    env.converged("web", &["i-node0001"], to, T).await;
    // A resize may converge before a fault's call comes: DescribeNics, for one, is GC's
    // listing (every 500 ms here), not a step of a resize. Every fault fires, and the pool
    // stays converged through it.
    eventually(&format!("{what}: every fault fired"), T, || async {
        env.sim.faults().is_empty()
    })
    .await;
    env.converged("web", &["i-node0001"], to, T).await;
}

/// A pool of `size` over a cloud that shows a new NIC to DescribeNics only 3 s after its
/// CreateNics (a realistic read-after-write lag), with GC (another component, which judges
/// "vanished" from listings and would collect a leak later) kept out.
async fn lagging_visibility_env(size: u32) -> Env {
    let mut settings = test_settings();
    settings.gc_interval = Duration::from_secs(3600);
    let mut env = Env::start(Setup {
        settings,
        sim: |c| c.nic_visibility_lag_ms = 3000,
        ..Default::default()
    })
    .await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], size)).await;
    env
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
        sim: |c| c.nic_quota = Some(3),
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

/// AttachNics calls so far.
fn attaches(env: &Env) -> u64 {
    env.sim.calls().action("AttachNics")
}

/// Runs a pool of 2 against `fault`, always on, with the production back-off scaled by 1/250
/// (first retry 5 s → 20 ms, cap 900 s → 3.6 s; 6 s of test stand for 25 minutes), and checks
/// that the AttachNics it costs grow with the logarithm of time, not linearly.
async fn retry_cost(fault: Fault, calls_per_attempt: u64) -> Env {
    let mut settings = test_settings();
    settings.backoff_transient = Duration::from_millis(20);
    settings.backoff_max = Duration::from_millis(3600);
    // GC's own listings are not part of what a failure costs.
    settings.gc_interval = Duration::from_secs(3600);
    let mut env = Env::start(Setup {
        settings,
        ..Default::default()
    })
    .await;
    env.sim.inject(fault);
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    eventually("first failure", T, || async { attaches(&env) > 0 }).await;
    let start = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early = attaches(&env);
    let early_total = env.sim.calls().total;
    tokio::time::sleep(Duration::from_millis(6000) - start.elapsed()).await;
    let late = attaches(&env);
    let total = env.sim.calls().total;
    eprintln!(
        "AttachNics after 1.5 s: {early}, after 6 s: {late}; all calls {early_total} / {total}: {:?}",
        env.sim.calls().by_action
    );
    // Two NICs, each retried after 10-20, 20-40, 40-80... ms (jitter halves at most), the
    // wait capped at 1.8-3.6 s: by T at most log2(T / 10 ms) + 1 + T / 1.8 s attempts each,
    // about 14 by 6 s, and the last 4.5 s add at most 2 + 4.5 / 1.8 + 1 each. A fixed wait
    // would have made about 300 in 6 s, the old split-on-refusal 3 calls per attempt.
    assert!(late <= 2 * 14, "{late} AttachNics in 6 s");
    assert!(
        late - early <= 2 * 6,
        "4x the time cost {} more AttachNics (from {early})",
        late - early
    );
    assert!(
        total <= calls_per_attempt * late + 12,
        "{total} calls for {late} attaches"
    );
    // Both NICs come from one create batch: a NIC failed and replaced would need another.
    assert_eq!(
        env.sim.calls().action("CreateNics"),
        1,
        "failing NICs wait, they are not failed and recreated"
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_persistent_refusal_costs_calls_logarithmic_in_time() {
    // The VM refuses every NIC for a reason about itself, for good.
    let env = retry_cost(
        Fault::new(FaultKind::ApiError {
            code: 1400,
            message: Some(
                "PermissionDenied, vxnet [vxnet-aaaaaaa] and instance [i-node0001] are not in the same VPC"
                    .into(),
            ),
        })
        .on("AttachNics"),
        // The retry re-reads the NIC; the pool re-describes the instance after refusals.
        2,
    )
    .await;
    let pool = env.pool("web").await.expect("pool");
    let degraded = pool
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
        .expect("Degraded condition");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InstanceRefused"),
        "{degraded:?}"
    );
    assert!(
        env.all_hostnics().await.iter().all(|h| {
            h.status
                .as_ref()
                .is_some_and(|s| s.phase == HostNicPhase::Attaching)
        }),
        "refused NICs wait in Attaching"
    );
    // The VM accepts again: the pool converges (the back-off is capped).
    env.sim.clear_faults();
    env.converged("web", &["i-node0001"], 2, T).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_persistently_failing_attach_job_costs_calls_logarithmic_in_time() {
    // Per attempt: the attach, polls of its 200 ms job (100 ms apart), a re-read of the NIC.
    let env = retry_cost(
        Fault::new(FaultKind::Job(JobOutcome::Failed)).on("AttachNics"),
        6,
    )
    .await;
    env.sim.clear_faults();
    env.converged("web", &["i-node0001"], 2, T).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_nics_not_visible_yet_are_not_failed() {
    let env = lagging_visibility_env(3).await;
    env.converged("web", &["i-node0001"], 3, T).await;
    // The 3 NICs come from one create batch: a NIC failed and replaced would need another.
    assert_eq!(
        env.sim.calls().action("CreateNics"),
        1,
        "no NIC was failed and replaced"
    );
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::all(env.client.clone())
        .list(&Default::default())
        .await
        .expect("events");
    assert!(
        !events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("NicVanished")),
        "a lagging NIC is not vanished"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflicting_write_after_attach_keeps_the_job() {
    // Jobs as slow as real ones (3 s): a retry after the conflict finds the NIC still
    // attaching, which the cloud shows as available.
    let mut env = Env::start(Setup {
        job_ms: 3000,
        ..Default::default()
    })
    .await;
    // The AttachNics answer takes a while; meanwhile someone else writes the status (as the
    // agent's first report on a new NIC does), so the operator's write of the job conflicts.
    env.sim
        .inject(Fault::new(FaultKind::DelayMs(800)).on("AttachNics"));
    let client = env.client.clone();
    let writer = tokio::spawn(async move {
        let api: kube::Api<HostNic> = kube::Api::all(client);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(list) = api.list(&Default::default()).await else {
                continue;
            };
            for mut h in list.items {
                let Some(s) = h.status.as_mut() else { continue };
                if s.phase != HostNicPhase::Attaching
                    || s.last_job.is_some()
                    || s.conditions.iter().any(|c| c.type_ == "AgentSeen")
                {
                    continue;
                }
                s.conditions.push(Condition {
                    type_: "AgentSeen".into(),
                    status: "True".into(),
                    reason: "Watching".into(),
                    message: "the agent watches this NIC".into(),
                    observed_generation: None,
                    last_transition_time: Time(jiff::Timestamp::now()),
                });
                let name = kube::ResourceExt::name_any(&h);
                let _ = api.replace_status(&name, &Default::default(), &h).await;
            }
        }
    });
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 3)).await;
    env.converged("web", &["i-node0001"], 3, T).await;
    writer.abort();
    let seen = env
        .all_hostnics()
        .await
        .iter()
        .filter(|h| {
            h.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "AgentSeen"))
        })
        .count();
    assert!(seen > 0, "the concurrent writer never got in");
    let jobs: Vec<_> = env
        .sim
        .jobs()
        .into_iter()
        .filter(|j| j.job_action == "AttachNics")
        .collect();
    let mut nics: Vec<String> = jobs
        .iter()
        .flat_map(|j| j.resource_ids.split_whitespace().map(str::to_string))
        .filter(|s| !s.starts_with("i-"))
        .collect();
    nics.sort();
    let n = nics.len();
    nics.dedup();
    assert_eq!(n, nics.len(), "a NIC was attached twice: {jobs:?}");
    assert_eq!(
        attaches(&env),
        jobs.len() as u64,
        "one AttachNics per batch, none refused: {:?}",
        env.sim.calls()
    );
    assert_eq!(env.sim.calls().by_ret_code.get(&1400), None);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nic_removed_before_it_is_visible_is_not_leaked() {
    // Nothing may leak in the first place (GC is off).
    let env = lagging_visibility_env(2).await;
    eventually("NICs created", T, || async {
        let all = env.all_hostnics().await;
        all.len() == 2
            && all
                .iter()
                .all(|h| h.status.as_ref().is_some_and(|s| s.nic_id.is_some()))
    })
    .await;
    env.delete_pool("web").await;
    eventually("pool gone", T, || async { env.pool("web").await.is_none() }).await;
    assert!(
        env.cloud_nics().is_empty(),
        "leaked: {:?}",
        env.cloud_nics()
    );
    env.shutdown().await;
}
