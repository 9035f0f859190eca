//! The next lifecycle step of one HostNic (CONTRACT.md): decided from its status, what the
//! cloud says about its NIC and job, and the clock. The controller records each intent in
//! Kubernetes before the cloud call it announces.

use std::time::Duration;

use hostnic_crds::{HostNicPhase, HostNicStatus, LINK_MISSING, LINK_READY};
use jiff::Timestamp;

use crate::cloud::{CloudError, CloudErrorKind, Job, JobState, Nic, NicState};

/// Where an apply (not deleting) goes next, before any cloud read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyStep {
    /// Pending: record Creating, then CreateNics.
    BeginCreate,
    /// Creating: find a NIC already created under our name (adopt) or create it.
    FindOrCreate,
    /// Attaching: the cloud already said attached and the agent sees the link.
    MarkAvailable,
    /// Attaching with a job recorded, and the agent reports the NIC's link on the node: the
    /// attach is complete (only our instance's node can see the link), no cloud read needed.
    LinkReported,
    /// Attaching with a job that may still run, within the grace of its link report: the
    /// report (a HostNic write) wakes the reconcile; look again after this.
    AwaitLink(Duration),
    /// Attaching with a job that may still run and no link report within the grace: read the
    /// job (the fallback poll).
    PollJob(String),
    /// Attaching: read the NIC.
    CheckNic,
    /// Released and rested long enough: Available again.
    EndQuarantine,
    /// Released and resting: look again after this.
    Quarantine(Duration),
    /// Released and rested, but the agent has not proven the link home since the claim: kept
    /// Released until it does (its next write wakes the reconcile).
    AwaitLinkHome,
    /// Nothing to do in this phase.
    Idle,
}

/// A HostNic's status as the lifecycle needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    /// Phase.
    pub phase: HostNicPhase,
    /// Cloud NIC id.
    pub nic_id: Option<&'a str>,
    /// Last job id and the status recorded for it.
    pub last_job: Option<(&'a str, &'a str)>,
    /// The action of the last job (`AttachNics`, `DetachNics`).
    pub last_action: Option<&'a str>,
    /// Condition Attached is True (the cloud said in-use on our instance).
    pub attached: bool,
    /// Condition LinkReady is True (the agent sees the link).
    pub link_ready: bool,
    /// The agent proved the link on the node since the last claim ([`link_home`]).
    pub link_home: bool,
    /// The agent reports that no link of the NIC is on the node (`LinkReady=False`,
    /// `LinkMissing`; not `InPod`).
    pub link_missing: bool,
    /// A pod is (or was last) recorded as the NIC's holder.
    pub pod: bool,
    /// When the NIC was released (phase Released).
    pub released_at: Option<Timestamp>,
    /// When this operator recorded the last job (None: unknown, e.g. recorded before a
    /// restart, so its link report counts as overdue).
    pub job_started: Option<Timestamp>,
}

/// Whether the agent reports no link of the NIC on the node (not: the link is in its pod).
pub fn link_missing(status: &HostNicStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == LINK_READY && c.status == "False" && c.reason == LINK_MISSING)
}

/// Whether the agent has proven the NIC's link on the node since it was last claimed: the
/// agent's `LinkReady` is True, and (after a release) it turned True no earlier than the
/// release. A claim writes `LinkReady=False` (InPod) with `Bound`, and a release is written
/// with `LinkReady=True` only when the link is back; a True condition older than the release
/// is a report from before the claim, which proves nothing about where the link is now.
pub fn link_home(status: &HostNicStatus) -> bool {
    status.conditions.iter().any(|c| {
        c.type_ == LINK_READY
            && c.status == "True"
            && status
                .released_at
                .as_ref()
                .is_none_or(|r| c.last_transition_time.0 >= r.0)
    })
}

/// Whether a detach or delete of the NIC needs the agent's proof that its link is home: it is
/// (or was) handed to pods, so its link may be in a pod's netns. A NIC on its way in was never
/// claimable (the agent claims only Available NICs), and one on its way out already recorded
/// the intent, which is only written with the proof (or with its node gone).
fn needs_link_proof(f: &Facts<'_>) -> bool {
    !f.phase.is_outgoing()
        && (f.pod
            || matches!(
                f.phase,
                HostNicPhase::Available | HostNicPhase::Bound | HostNicPhase::Released
            ))
}

/// Whether a recorded job status word means it may still be running.
fn running(status: &str) -> bool {
    !matches!(
        status,
        "successful" | "failed" | "done with failure" | "unknown"
    )
}

/// The next step of an apply. `link_grace` is how long a running attach job waits for the
/// agent's link report before the job is polled.
pub fn apply_step(
    f: &Facts<'_>,
    quarantine: Duration,
    link_grace: Duration,
    now: Timestamp,
) -> ApplyStep {
    match f.phase {
        HostNicPhase::Pending => ApplyStep::BeginCreate,
        HostNicPhase::Creating => ApplyStep::FindOrCreate,
        HostNicPhase::Attaching if f.nic_id.is_none() => ApplyStep::FindOrCreate,
        HostNicPhase::Attaching if f.attached && f.link_ready => ApplyStep::MarkAvailable,
        HostNicPhase::Attaching if f.attached => ApplyStep::Idle,
        HostNicPhase::Attaching if f.link_ready && f.last_job.is_some() => ApplyStep::LinkReported,
        HostNicPhase::Attaching => match f.last_job {
            Some((id, status)) if running(status) => {
                let waited = f.job_started.map(|t| now.duration_since(t).unsigned_abs());
                match waited {
                    Some(w) if w < link_grace => ApplyStep::AwaitLink(link_grace - w),
                    _ => ApplyStep::PollJob(id.to_string()),
                }
            }
            _ => ApplyStep::CheckNic,
        },
        HostNicPhase::Released => {
            // releasedAt is a metav1.Time, stored to the second: a second more never shortens
            // the quarantine.
            let quarantine = if quarantine.is_zero() {
                quarantine
            } else {
                quarantine + Duration::from_secs(1)
            };
            let since = f.released_at.unwrap_or(now);
            let rested = now.duration_since(since).unsigned_abs();
            if rested < quarantine {
                ApplyStep::Quarantine(quarantine - rested)
            } else if f.link_home {
                ApplyStep::EndQuarantine
            } else {
                ApplyStep::AwaitLinkHome
            }
        }
        _ => ApplyStep::Idle,
    }
}

/// The wait until the next tick of a clock shared by every poll of period `every` (counted
/// from the epoch): polls of jobs started at different times fall due together, and the
/// batcher sends them as one DescribeJobs.
pub fn shared_tick(every: Duration, now: Timestamp) -> Duration {
    let period = i128::try_from(every.as_millis())
        .unwrap_or(i128::MAX)
        .max(1);
    let into = i128::from(now.as_millisecond()).rem_euclid(period);
    Duration::from_millis(u64::try_from(period - into).unwrap_or(u64::MAX))
}

/// Whether a job read from the cloud is done with, or must be waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobVerdict {
    /// Still running and not overdue: poll again later (recording this status).
    Wait(&'static str),
    /// Terminal or unknown: read the NIC (recording this status).
    ReadNic(&'static str),
}

/// Judges a job: a job running longer than `timeout` counts as unknown, never as failed.
pub fn job_verdict(job: Option<&Job>, timeout: Duration, now: Timestamp) -> JobVerdict {
    match job {
        None => JobVerdict::ReadNic("unknown"),
        Some(j) => match j.state {
            JobState::Running => {
                let overdue = j
                    .created
                    .is_some_and(|c| now.duration_since(c).unsigned_abs() > timeout);
                if overdue {
                    JobVerdict::ReadNic("unknown")
                } else {
                    JobVerdict::Wait(j.state.as_str())
                }
            }
            s => JobVerdict::ReadNic(s.as_str()),
        },
    }
}

/// What the NIC's cloud state means for an attaching HostNic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachVerdict {
    /// In use on our instance: record Attached (then wait for the link).
    Attached,
    /// The NIC is gone.
    Vanished,
    /// Attached to another instance: never ours to use.
    Elsewhere(String),
    /// Not attached and no job will attach it: attach (again).
    Attach,
    /// Not visible or not attached yet, but it will be: a job reported success moments ago,
    /// or the NIC is so new that DescribeNics may not show it yet (read-after-write lag).
    Settle,
}

/// Judges an attaching NIC. `job_status` is the status word of the last job (None: no job);
/// `new` says the NIC was created within the visibility grace, so not finding it means
/// "not visible yet", not "gone".
pub fn attach_verdict(
    nic: Option<&Nic>,
    instance: &str,
    job_status: Option<&str>,
    new: bool,
) -> AttachVerdict {
    let Some(nic) = nic else {
        return if new {
            AttachVerdict::Settle
        } else {
            AttachVerdict::Vanished
        };
    };
    match (nic.state, nic.instance.as_deref()) {
        (NicState::InUse, Some(i)) if i == instance => AttachVerdict::Attached,
        (NicState::InUse, other) => AttachVerdict::Elsewhere(other.unwrap_or("?").to_string()),
        (NicState::Available, _) => match job_status {
            Some("successful") => AttachVerdict::Settle,
            _ => AttachVerdict::Attach,
        },
    }
}

/// Whether a failed AttachNics was refused for the instance itself (stopped VM, another VPC,
/// no free slot, unknown instance) rather than for this NIC: a refusal of the right kind that
/// does not name the NIC. Retrying other NICs on that instance would be refused alike.
pub fn refuses_instance(e: &CloudError, nic: &str) -> bool {
    matches!(
        e.kind,
        CloudErrorKind::Refused | CloudErrorKind::NotFound | CloudErrorKind::Capacity
    ) && !e.message.contains(nic)
}

/// Where a cleanup goes next, before any cloud read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupStep {
    /// A pod still holds the NIC on a live node: wait for its release.
    WaitRelease,
    /// The node lives and the agent has not proven the NIC's link home since its last claim:
    /// wait for the agent's next report (a pod may hold the link).
    WaitLinkHome,
    /// Nothing ever reached the cloud: just let the object go.
    Forget,
    /// A create may have happened: look the NIC up by name.
    FindByName,
    /// A detach job may still run: read it.
    PollJob(String),
    /// Read the NIC and detach or delete it.
    CheckNic,
}

/// The first step of a cleanup. `node_exists` is false only when the Node object is gone: no
/// pod runs there any more, so its NICs go without the agent's proof (which no agent is left to
/// give).
pub fn cleanup_step(f: &Facts<'_>, node_exists: bool) -> CleanupStep {
    if f.phase == HostNicPhase::Bound && node_exists {
        return CleanupStep::WaitRelease;
    }
    match (f.phase, f.nic_id) {
        (HostNicPhase::Pending, None) | (HostNicPhase::Failed, None) => CleanupStep::Forget,
        (_, None) => CleanupStep::FindByName,
        (_, Some(_)) if node_exists && needs_link_proof(f) && !f.link_home => {
            CleanupStep::WaitLinkHome
        }
        (_, Some(_)) => match f.last_job {
            // The node saw the link go: the detach is done, whatever the job says yet.
            Some((_, status)) if running(status) && detach_seen_by_node(f) => CleanupStep::CheckNic,
            Some((id, status)) if running(status) && f.phase == HostNicPhase::Detaching => {
                CleanupStep::PollJob(id.to_string())
            }
            _ => CleanupStep::CheckNic,
        },
    }
}

/// What to do with the NIC of a HostNic being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupVerdict {
    /// Nothing left in the cloud.
    Gone,
    /// Attached: record Detaching, DetachNics.
    Detach,
    /// Detached: record Deleting, DeleteNics.
    Delete,
}

/// What a HostNic being deleted knows of its NIC from its own status, so that no DescribeNics
/// is needed: attached when an attach was confirmed (the cloud said in-use, or the agent saw
/// the link) and no detach began since; detached when its detach job succeeded. None: read the
/// NIC. Detached also when the node saw its link go during the detach. A wrong guess costs
/// one refused call (1400: DetachNics of an available NIC, DeleteNics of an attached one),
/// after which the NIC is read.
pub fn known_cleanup_verdict(f: &Facts<'_>) -> Option<CleanupVerdict> {
    match f.phase {
        HostNicPhase::Available | HostNicPhase::Bound | HostNicPhase::Released if f.attached => {
            Some(CleanupVerdict::Detach)
        }
        HostNicPhase::Detaching
            if detach_seen_by_node(f)
                || f.last_action == Some(DETACH)
                    && f.last_job
                        .is_some_and(|(_, s)| s == JobState::Succeeded.as_str()) =>
        {
            Some(CleanupVerdict::Delete)
        }
        _ => None,
    }
}

/// Whether the agent reported the NIC's link gone from the node during its detach. Its link
/// was proven home before the cleanup began (or the node is gone, and nothing reports), so
/// only the detach takes it away.
fn detach_seen_by_node(f: &Facts<'_>) -> bool {
    f.phase == HostNicPhase::Detaching && f.last_action == Some(DETACH) && f.link_missing
}

/// How much longer a detach job this operator started waits for the node's report of its
/// link going before the job is polled (None: poll now). Like an attach's, the job is polled
/// only when no report came within the grace (or its start is unknown, after a restart).
pub fn detach_wait(f: &Facts<'_>, grace: Duration, now: Timestamp) -> Option<Duration> {
    if f.phase != HostNicPhase::Detaching || f.last_action != Some(DETACH) {
        return None;
    }
    let started = f.job_started?;
    let waited = now.duration_since(started).unsigned_abs();
    grace.checked_sub(waited).filter(|rest| !rest.is_zero())
}

/// The action of a detach job as the status records it.
pub const DETACH: &str = "DetachNics";

/// Judges the NIC of a HostNic being deleted.
pub fn cleanup_verdict(nic: Option<&Nic>) -> CleanupVerdict {
    match nic.map(|n| n.state) {
        None => CleanupVerdict::Gone,
        Some(NicState::InUse) => CleanupVerdict::Detach,
        Some(NicState::Available) => CleanupVerdict::Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(phase: HostNicPhase) -> Facts<'static> {
        Facts {
            phase,
            nic_id: Some("52:54:00:00:00:01"),
            last_job: None,
            last_action: None,
            attached: false,
            link_ready: false,
            link_home: false,
            link_missing: false,
            pod: false,
            released_at: None,
            job_started: None,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn nic(state: NicState, instance: Option<&str>) -> Nic {
        Nic {
            id: "52:54:00:00:00:01".into(),
            name: "hostnic-c-uid".into(),
            state,
            instance: instance.map(str::to_string),
            vxnet: "vxnet-a".into(),
            private_ip: Some("10.0.0.5".into()),
            created: None,
        }
    }

    const Q: Duration = Duration::from_secs(120);
    const G: Duration = Duration::from_secs(30);

    #[test]
    fn apply_steps_follow_the_phase() {
        let now = t(1000);
        assert_eq!(
            apply_step(&facts(HostNicPhase::Pending), Q, G, now),
            ApplyStep::BeginCreate
        );
        assert_eq!(
            apply_step(&facts(HostNicPhase::Creating), Q, G, now),
            ApplyStep::FindOrCreate
        );
        let mut f = facts(HostNicPhase::Attaching);
        f.nic_id = None;
        assert_eq!(apply_step(&f, Q, G, now), ApplyStep::FindOrCreate);
        let mut f = facts(HostNicPhase::Attaching);
        assert_eq!(apply_step(&f, Q, G, now), ApplyStep::CheckNic);
        f.last_job = Some(("j-1", "pending"));
        assert_eq!(apply_step(&f, Q, G, now), ApplyStep::PollJob("j-1".into()));
        f.last_job = Some(("j-1", "failed"));
        assert_eq!(apply_step(&f, Q, G, now), ApplyStep::CheckNic);
        f.attached = true;
        assert_eq!(
            apply_step(&f, Q, G, now),
            ApplyStep::Idle,
            "attached, waiting for the agent"
        );
        f.link_ready = true;
        assert_eq!(apply_step(&f, Q, G, now), ApplyStep::MarkAvailable);
        for p in [
            HostNicPhase::Available,
            HostNicPhase::Bound,
            HostNicPhase::Failed,
            HostNicPhase::Detaching,
        ] {
            assert_eq!(apply_step(&facts(p), Q, G, now), ApplyStep::Idle);
        }
    }

    #[test]
    fn link_ready_alone_is_not_enough() {
        let mut f = facts(HostNicPhase::Attaching);
        f.link_ready = true;
        assert_eq!(apply_step(&f, Q, G, t(0)), ApplyStep::CheckNic);
    }

    #[test]
    fn an_attach_completes_by_the_link_report_and_polls_only_past_the_grace() {
        let mut f = facts(HostNicPhase::Attaching);
        f.last_job = Some(("j-1", "pending"));
        f.job_started = Some(t(1000));
        assert_eq!(
            apply_step(&f, Q, G, t(1010)),
            ApplyStep::AwaitLink(Duration::from_secs(20)),
            "within the grace: no DescribeJobs"
        );
        assert_eq!(
            apply_step(&f, Q, G, t(1030)),
            ApplyStep::PollJob("j-1".into()),
            "no report within the grace: the fallback poll"
        );
        f.job_started = None;
        assert_eq!(
            apply_step(&f, Q, G, t(1010)),
            ApplyStep::PollJob("j-1".into()),
            "a job recorded before a restart is polled"
        );
        for word in ["pending", "working", "successful", "failed", "unknown"] {
            f.last_job = Some(("j-1", word));
            f.link_ready = true;
            assert_eq!(
                apply_step(&f, Q, G, t(1010)),
                ApplyStep::LinkReported,
                "{word}: the link on the node proves the attach"
            );
        }
    }

    #[test]
    fn polls_fall_on_a_shared_tick() {
        let every = Duration::from_secs(2);
        let ms = |m| Timestamp::from_millisecond(m).unwrap();
        assert_eq!(shared_tick(every, ms(10_500)), Duration::from_millis(1500));
        assert_eq!(shared_tick(every, ms(11_900)), Duration::from_millis(100));
        assert_eq!(
            shared_tick(every, ms(12_000)),
            every,
            "on a tick, the next one"
        );
    }

    #[test]
    fn quarantine_counts_from_release() {
        let mut f = facts(HostNicPhase::Released);
        f.released_at = Some(t(1000));
        f.link_home = true;
        assert_eq!(
            apply_step(&f, Q, G, t(1100)),
            ApplyStep::Quarantine(Duration::from_secs(21))
        );
        assert_eq!(
            apply_step(&f, Q, G, t(1120)),
            ApplyStep::Quarantine(Duration::from_secs(1))
        );
        assert_eq!(apply_step(&f, Q, G, t(1121)), ApplyStep::EndQuarantine);
        assert_eq!(
            apply_step(&f, Duration::ZERO, G, t(1000)),
            ApplyStep::EndQuarantine
        );
    }

    #[test]
    fn job_timeout_is_unknown_not_failure() {
        let job = |state, created| Job {
            id: "j-1".into(),
            action: "AttachNics".into(),
            state,
            nics: vec![],
            created: Some(t(created)),
        };
        let to = Duration::from_secs(300);
        assert_eq!(
            job_verdict(Some(&job(JobState::Running, 900)), to, t(1000)),
            JobVerdict::Wait("working")
        );
        assert_eq!(
            job_verdict(Some(&job(JobState::Running, 600)), to, t(1000)),
            JobVerdict::ReadNic("unknown")
        );
        assert_eq!(
            job_verdict(Some(&job(JobState::Failed, 900)), to, t(1000)),
            JobVerdict::ReadNic("failed")
        );
        assert_eq!(
            job_verdict(Some(&job(JobState::Succeeded, 900)), to, t(1000)),
            JobVerdict::ReadNic("successful")
        );
        assert_eq!(
            job_verdict(None, to, t(1000)),
            JobVerdict::ReadNic("unknown")
        );
    }

    #[test]
    fn attach_verdicts() {
        assert_eq!(
            attach_verdict(None, "i-1", None, false),
            AttachVerdict::Vanished
        );
        assert_eq!(
            attach_verdict(Some(&nic(NicState::InUse, Some("i-1"))), "i-1", None, false),
            AttachVerdict::Attached
        );
        assert_eq!(
            attach_verdict(Some(&nic(NicState::InUse, Some("i-2"))), "i-1", None, false),
            AttachVerdict::Elsewhere("i-2".into())
        );
        let free = nic(NicState::Available, None);
        assert_eq!(
            attach_verdict(Some(&free), "i-1", None, false),
            AttachVerdict::Attach
        );
        assert_eq!(
            attach_verdict(Some(&free), "i-1", Some("failed"), false),
            AttachVerdict::Attach
        );
        assert_eq!(
            attach_verdict(Some(&free), "i-1", Some("unknown"), false),
            AttachVerdict::Attach
        );
        assert_eq!(
            attach_verdict(Some(&free), "i-1", Some("successful"), false),
            AttachVerdict::Settle
        );
    }

    #[test]
    fn a_new_nic_not_visible_yet_is_pending_not_vanished() {
        assert_eq!(
            attach_verdict(None, "i-1", None, true),
            AttachVerdict::Settle
        );
        assert_eq!(
            attach_verdict(None, "i-1", Some("successful"), true),
            AttachVerdict::Settle
        );
        assert_eq!(
            attach_verdict(None, "i-1", Some("successful"), false),
            AttachVerdict::Vanished,
            "past the grace it is gone"
        );
    }

    #[test]
    fn refusals_about_the_instance_are_told_from_refusals_about_the_nic() {
        let id = "52:54:00:00:00:01";
        let e = |code, msg: &str| CloudError::from_code("AttachNics", code, msg);
        assert!(refuses_instance(
            &e(1400, "PermissionDenied, instance [i-1] is not running"),
            id
        ));
        assert!(refuses_instance(
            &e(
                2100,
                "ResourceNotFound, resource [i-1] of type [instance] not found"
            ),
            id
        ));
        assert!(refuses_instance(
            &e(
                5200,
                "instance [i-1] cannot have more than 63 secondary NICs"
            ),
            id
        ));
        assert!(!refuses_instance(
            &e(
                1400,
                "PermissionDenied, nic [52:54:00:00:00:01] is not available"
            ),
            id
        ));
        assert!(!refuses_instance(
            &e(2100, "resource [52:54:00:00:00:01] not found"),
            id
        ));
        assert!(!refuses_instance(&e(5000, "internal error"), id));
        assert!(!refuses_instance(&e(2500, "quota"), id));
    }

    #[test]
    fn the_status_alone_decides_a_cleanup_only_when_it_is_conclusive() {
        let mut f = facts(HostNicPhase::Available);
        assert_eq!(known_cleanup_verdict(&f), None, "never confirmed attached");
        f.attached = true;
        assert_eq!(known_cleanup_verdict(&f), Some(CleanupVerdict::Detach));
        f.phase = HostNicPhase::Released;
        assert_eq!(known_cleanup_verdict(&f), Some(CleanupVerdict::Detach));
        // Detaching with the attach's job still recorded: the detach's answer was lost.
        f.phase = HostNicPhase::Detaching;
        f.last_job = Some(("j-1", "successful"));
        f.last_action = Some("AttachNics");
        assert_eq!(known_cleanup_verdict(&f), None);
        f.last_job = Some(("j-2", "successful"));
        f.last_action = Some(DETACH);
        assert_eq!(known_cleanup_verdict(&f), Some(CleanupVerdict::Delete));
        f.last_job = Some(("j-2", "failed"));
        assert_eq!(known_cleanup_verdict(&f), None);
        // A delete began: whether it happened is the cloud's to say.
        f.phase = HostNicPhase::Deleting;
        f.last_job = Some(("j-2", "successful"));
        assert_eq!(known_cleanup_verdict(&f), None);
        f.phase = HostNicPhase::Failed;
        assert_eq!(known_cleanup_verdict(&f), None);
    }

    #[test]
    fn a_detach_completes_by_the_nodes_report_and_polls_only_past_the_grace() {
        let mut f = facts(HostNicPhase::Detaching);
        f.last_job = Some(("j-2", "pending"));
        f.last_action = Some(DETACH);
        f.job_started = Some(t(100));
        let grace = Duration::from_secs(30);
        assert_eq!(
            detach_wait(&f, grace, t(110)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(detach_wait(&f, grace, t(130)), None, "past the grace: poll");
        assert_eq!(cleanup_step(&f, true), CleanupStep::PollJob("j-2".into()));
        f.link_missing = true;
        assert_eq!(cleanup_step(&f, true), CleanupStep::CheckNic);
        assert_eq!(known_cleanup_verdict(&f), Some(CleanupVerdict::Delete));
        // Started before a restart: poll at once.
        f.link_missing = false;
        f.job_started = None;
        assert_eq!(detach_wait(&f, grace, t(110)), None);
        // The attach's job, still recorded: no detach is known to run.
        f.last_action = Some("AttachNics");
        f.job_started = Some(t(100));
        f.link_missing = true;
        assert_eq!(detach_wait(&f, grace, t(110)), None);
        assert_eq!(known_cleanup_verdict(&f), None);
    }

    #[test]
    fn cleanup_steps() {
        assert_eq!(
            cleanup_step(&facts(HostNicPhase::Bound), true),
            CleanupStep::WaitRelease
        );
        assert_eq!(
            cleanup_step(&facts(HostNicPhase::Bound), false),
            CleanupStep::CheckNic
        );
        let mut f = facts(HostNicPhase::Pending);
        f.nic_id = None;
        assert_eq!(cleanup_step(&f, true), CleanupStep::Forget);
        f.phase = HostNicPhase::Creating;
        assert_eq!(cleanup_step(&f, true), CleanupStep::FindByName);
        let mut f = facts(HostNicPhase::Detaching);
        f.last_job = Some(("j-2", "working"));
        assert_eq!(cleanup_step(&f, true), CleanupStep::PollJob("j-2".into()));
        f.last_job = Some(("j-2", "successful"));
        assert_eq!(cleanup_step(&f, true), CleanupStep::CheckNic);
        let mut f = facts(HostNicPhase::Available);
        f.link_home = true;
        f.last_job = Some(("j-1", "working"));
        assert_eq!(
            cleanup_step(&f, true),
            CleanupStep::CheckNic,
            "an attach job is not waited for"
        );
    }

    /// A status as the agent writes it: `LinkReady` with its transition time, and the release.
    fn status(link: Option<(&str, i64)>, released_at: Option<i64>) -> HostNicStatus {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        HostNicStatus {
            phase: HostNicPhase::Released,
            released_at: released_at.map(|s| Time(t(s))),
            conditions: link
                .map(|(status, at)| Condition {
                    type_: LINK_READY.into(),
                    status: status.into(),
                    reason: "LinkPresent".into(),
                    message: String::new(),
                    last_transition_time: Time(t(at)),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_link_is_home_only_when_reported_since_the_claim() {
        assert!(
            link_home(&status(Some(("True", 900)), None)),
            "never claimed"
        );
        assert!(
            link_home(&status(Some(("True", 1000)), Some(1000))),
            "the release reported the link back"
        );
        assert!(link_home(&status(Some(("True", 1005)), Some(1000))));
        assert!(
            !link_home(&status(Some(("True", 900)), Some(1000))),
            "a report from before the claim"
        );
        assert!(!link_home(&status(Some(("False", 1005)), Some(1000))));
        assert!(!link_home(&status(None, None)));
    }

    #[test]
    fn quarantine_ends_only_with_the_link_home() {
        let mut f = facts(HostNicPhase::Released);
        f.released_at = Some(t(1000));
        f.pod = true;
        assert_eq!(apply_step(&f, Q, G, t(2000)), ApplyStep::AwaitLinkHome);
        f.link_home = true;
        assert_eq!(apply_step(&f, Q, G, t(2000)), ApplyStep::EndQuarantine);
    }

    #[test]
    fn no_detach_or_delete_without_the_link_home() {
        for p in [
            HostNicPhase::Available,
            HostNicPhase::Released,
            HostNicPhase::Failed,
        ] {
            let mut f = facts(p);
            f.pod = true;
            assert_eq!(cleanup_step(&f, true), CleanupStep::WaitLinkHome, "{p:?}");
            assert_eq!(
                cleanup_step(&f, false),
                CleanupStep::CheckNic,
                "{p:?}: a deleted node runs no pod"
            );
            f.link_home = true;
            assert_eq!(cleanup_step(&f, true), CleanupStep::CheckNic, "{p:?}");
        }
        // Never handed out, or the intent to remove it already recorded: nothing to prove.
        for p in [
            HostNicPhase::Attaching,
            HostNicPhase::Failed,
            HostNicPhase::Detaching,
            HostNicPhase::Deleting,
        ] {
            assert_eq!(
                cleanup_step(&facts(p), true),
                CleanupStep::CheckNic,
                "{p:?}"
            );
        }
    }

    #[test]
    fn cleanup_verdicts() {
        assert_eq!(cleanup_verdict(None), CleanupVerdict::Gone);
        assert_eq!(
            cleanup_verdict(Some(&nic(NicState::InUse, Some("i-1")))),
            CleanupVerdict::Detach
        );
        assert_eq!(
            cleanup_verdict(Some(&nic(NicState::Available, None))),
            CleanupVerdict::Delete
        );
    }
}
