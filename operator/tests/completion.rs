//! An attach completes when the agent reports the NIC's link on the node: no DescribeJobs and
//! no DescribeNics when the report comes promptly, and the job poll only as the fallback once
//! the grace passed without a report.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);
const NODE: &str = "i-node0001";

/// The default setup with no GC pass during the run (not even the first, `gc_settle` after the
/// start): GC lists NICs on its own schedule, which is not the attach's cost counted here.
fn setup() -> Setup {
    let mut s = Setup::default();
    s.settings.gc_interval = Duration::from_secs(3600);
    s.settings.gc_settle = Duration::from_secs(3600);
    s
}

/// Whether every HostNic of `pool` has the cloud's word (or the link's) that it is attached.
async fn all_attached(env: &Env, per_node: usize) -> bool {
    let all = env.all_hostnics().await;
    all.len() == per_node
        && all.iter().all(|h| {
            h.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Attached" && c.status == "True")
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reported_link_completes_the_attach_without_polling() {
    let mut s = setup();
    // The production grace: the reports must come well within it.
    s.settings.link_grace = production_settings().link_grace;
    let mut env = Env::start(s).await;
    env.start_operator();
    env.sim.reset_calls();
    env.create_pool("p", spec(&[VX_A], 3)).await;
    env.converged("p", &[NODE], 3, T).await;
    let calls = env.sim.calls();
    assert_eq!(calls.action("AttachNics"), 1, "{:?}", calls.by_action);
    assert_eq!(
        calls.action("DescribeJobs"),
        0,
        "the link reports complete the attach: {:?}",
        calls.by_action
    );
    assert_eq!(
        calls.action("DescribeNics"),
        0,
        "nothing disagreed, nothing to re-read: {:?}",
        calls.by_action
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_link_report_the_job_is_polled_after_the_grace() {
    let mut s = setup();
    // Long enough to see that nothing polls within it, short enough for a test.
    let grace = Duration::from_secs(3);
    s.settings.link_grace = grace;
    let mut env = Env::start(s).await;
    env.agent_reports.store(false, Ordering::SeqCst);
    env.start_operator();
    env.sim.reset_calls();
    let start = Instant::now();
    env.create_pool("p", spec(&[VX_A], 3)).await;
    eventually("the attach jobs ran", T, || async {
        let all = env.all_hostnics().await;
        env.sim.calls().action("AttachNics") >= 1
            && all.len() == 3
            && all
                .iter()
                .all(|h| h.status.as_ref().is_some_and(|s| s.last_job.is_some()))
    })
    .await;
    tokio::time::sleep(grace.saturating_sub(start.elapsed() + Duration::from_millis(500))).await;
    assert_eq!(
        env.sim.calls().action("DescribeJobs"),
        0,
        "no poll within the grace"
    );
    eventually("the fallback poll completed the attach", T, || async {
        all_attached(&env, 3).await
    })
    .await;
    assert!(start.elapsed() >= grace, "completed before the grace");
    let polls = env.sim.calls().action("DescribeJobs");
    let attaches = env.sim.calls().action("AttachNics");
    assert!(
        (1..=3).contains(&polls),
        "one shared poll (a few at most) for the {attaches} job(s) of 3 NICs, saw {polls}"
    );
    // The agent catches up: the NICs become Available.
    env.agent_reports.store(true, Ordering::SeqCst);
    env.converged("p", &[NODE], 3, T).await;
    env.shutdown().await;
}
