//! The HostNic controller: drives one HostNic's cloud NIC through its lifecycle (CONTRACT.md).
//! Every step records its intent in the HostNic status before the cloud call it announces, so
//! a crash anywhere leaves a state the next reconcile can finish: a NIC created just before a
//! crash is found by its name and adopted, never duplicated. A HostNic of a create batch gets
//! its NIC from the batch (`hostnic-<cluster>-<batch>`, see [`super::create_batch`]); one
//! without (made by an older operator) has a NIC of its own, `hostnic-<cluster>-<uid>`.

use std::sync::Arc;

use hostnic_crds::{CloudJob, HostNic, HostNicPhase, HostNicStatus, LINK_READY, NIC_FINALIZER};
use jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};
use std::time::Duration;

use super::create_batch::{self, BatchTag, Claim, Want};
use super::handoff::Call;
use super::{Context, RETAIN_ANNOTATION};
use crate::cloud::{
    CloudError, CloudErrorKind, CloudResult, JobState, Nic, NicQuery, NicState, Priority,
};
use crate::error::{Error, Result};
use crate::plan::conditions::{self, Cond};
use crate::plan::nic::{
    ApplyStep, AttachVerdict, CleanupStep, CleanupVerdict, DETACH, Facts, JobVerdict, apply_step,
    attach_verdict, cleanup_step, cleanup_verdict, detach_wait, job_verdict, known_cleanup_verdict,
    link_home, link_missing, refuses_instance, shared_tick,
};

/// Controller name in metrics and logs.
pub const NAME: &str = "hostnic";

/// Most lifecycle steps one reconcile takes before yielding.
const MAX_STEPS: usize = 12;

/// Reconciles one HostNic: the finalizer is the only top-level action.
#[tracing::instrument(skip_all, fields(hostnic = %nic.name_any()))]
pub async fn reconcile(nic: Arc<HostNic>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(NAME);
    let api: Api<HostNic> = Api::all(ctx.client.clone());
    let obj = nic.clone();
    super::with_backoff(NAME, obj.as_ref(), &ctx, async {
        finalizer(&api, NIC_FINALIZER, nic, |event| async {
            match event {
                Event::Apply(nic) => apply(&nic, &ctx).await,
                Event::Cleanup(nic) => {
                    let done = cleanup(&nic, &ctx).await;
                    if done.is_ok() {
                        // Its finalizer goes: whatever its round still expected, it is not coming.
                        ctx.batch.forget(&nic.name_any());
                        ctx.link_wait.done(&nic.name_any());
                        ctx.forget_calls(&nic.name_any());
                        if let Some(tag) = BatchTag::of(&nic) {
                            ctx.create_batches.settle(&tag, &nic.name_any()).await;
                        }
                    }
                    done
                }
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

/// The error policy of this controller.
pub fn error_policy(nic: Arc<HostNic>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy(NAME, nic.as_ref(), error, &ctx)
}

/// Cloud name of the NIC of a HostNic without a create batch (and of a retained NIC).
pub fn nic_name(ctx: &Context, nic: &HostNic) -> String {
    format!(
        "{}{}",
        ctx.settings.nic_prefix,
        nic.uid().unwrap_or_default()
    )
}

/// The lifecycle's facts of `status`; `job_started`: when this operator recorded its last job.
fn facts(status: &HostNicStatus, job_started: Option<Timestamp>) -> Facts<'_> {
    Facts {
        phase: status.phase,
        nic_id: status.nic_id.as_deref(),
        last_job: status
            .last_job
            .as_ref()
            .map(|j| (j.id.as_str(), j.status.as_str())),
        last_action: status.last_job.as_ref().map(|j| j.action.as_str()),
        attached: conditions::is_true(&status.conditions, "Attached"),
        link_ready: conditions::is_true(&status.conditions, LINK_READY),
        link_home: link_home(status),
        link_missing: link_missing(status),
        pod: status.pod.is_some(),
        released_at: status.released_at.as_ref().map(|t| t.0),
        job_started,
    }
}

/// Writes the status of `cur` changed by `f`, optimistically (the object's resourceVersion).
async fn write(
    ctx: &Context,
    cur: &HostNic,
    f: impl FnOnce(&mut HostNicStatus),
) -> Result<HostNic> {
    ctx.checkpoint.step("write HostNic status").await;
    let mut next = cur.clone();
    let mut status = next.status.take().unwrap_or_default();
    f(&mut status);
    next.status = Some(status);
    let api: Api<HostNic> = Api::all(ctx.client.clone());
    api.replace_status(&cur.name_any(), &PostParams::default(), &next)
        .await
        .map_err(Error::kube("write HostNic status"))
}

/// Records what a cloud call with side effects returned (a NIC id, a job id). A 409 there
/// means only that someone else wrote meanwhile (the agent's first report, GC, the pool):
/// the object is read again and the same change applied to it, because losing the result
/// would make the next reconcile repeat the call (a second AttachNics, refused with 1400).
async fn write_result(
    ctx: &Context,
    cur: &HostNic,
    f: impl Fn(&mut HostNicStatus),
) -> Result<HostNic> {
    /// Enough for a few concurrent writers; a conflict storm beyond that is an error.
    const ATTEMPTS: usize = 5;
    let mut base = cur.clone();
    let mut attempt = 1;
    loop {
        match write(ctx, &base, &f).await {
            Err(e) if e.is_conflict() && attempt < ATTEMPTS => {
                tracing::debug!(
                    attempt,
                    "status write conflicted: re-reading to keep the call's result"
                );
                match fresh(ctx, &base).await? {
                    Some(now) => base = now,
                    None => return Err(e),
                }
                attempt += 1;
            }
            r => return r,
        }
    }
}

fn set_cond(status: &mut HostNicStatus, cond: &Cond, generation: Option<i64>) {
    status.conditions = conditions::set(&status.conditions, cond, generation, Timestamp::now());
}

/// Marks the HostNic Failed with a reason; the pool replaces it.
async fn fail(
    ctx: &Context,
    cur: &HostNic,
    reason: &'static str,
    message: String,
) -> Result<Action> {
    // It makes no call of its round any more, and waits for no link.
    ctx.batch.forget(&cur.name_any());
    ctx.link_wait.done(&cur.name_any());
    let generation = cur.metadata.generation;
    write(ctx, cur, |s| {
        s.phase = HostNicPhase::Failed;
        set_cond(
            s,
            &Cond::new("CloudError", true, reason, message.clone()),
            generation,
        );
    })
    .await?;
    let on_pool = format!(
        "HostNic {} on {} failed: {message}",
        cur.name_any(),
        cur.spec.node
    );
    ctx.event(cur, EventType::Warning, reason, message, "Fail")
        .await;
    ctx.warn_pool(&cur.spec.pool, reason, on_pool, "Fail").await;
    Ok(Action::await_change())
}

/// The object as the API server has it now. The reflector may lag behind our own writes, and
/// acting on a stale status would repeat a cloud call (attach, detach) already made.
async fn fresh(ctx: &Context, nic: &HostNic) -> Result<Option<HostNic>> {
    let api: Api<HostNic> = Api::all(ctx.client.clone());
    api.get_opt(&nic.name_any())
        .await
        .map_err(Error::kube("read HostNic"))
}

async fn apply(nic: &HostNic, ctx: &Context) -> Result<Action> {
    let Some(mut cur) = fresh(ctx, nic).await? else {
        return Ok(Action::await_change());
    };
    let settings = &ctx.settings;
    // An attach handed off: its answer is recorded before anything is read again.
    match ctx.attaches.take(&cur.name_any()) {
        Some(Call::Running) => return Err(in_flight("an attach call is in flight", ctx)),
        Some(Call::Answered(answer)) => return attach_answered(ctx, &cur, answer).await,
        None => {}
    }
    // Whether this reconcile itself recorded Creating: then no NIC can exist under our name
    // yet and the lookup by name (needed after a crash) is skipped.
    let mut fresh_intent = false;
    // The NIC as this reconcile last learned it from the cloud (CreateNics' answer, the
    // adoption lookup): no DescribeNics is needed to know a NIC we just created is free.
    let mut known: Option<Nic> = None;
    for _ in 0..MAX_STEPS {
        let status = cur.status.clone().unwrap_or_default();
        let prio = ctx.priority_for(&cur);
        let quarantine = quarantine_of(ctx, &cur).await?;
        let name = cur.name_any();
        let started = status
            .last_job
            .as_ref()
            .and_then(|j| ctx.link_wait.started(&name, &j.id));
        let now = Timestamp::now();
        match apply_step(
            &facts(&status, started),
            quarantine,
            settings.link_grace,
            now,
        ) {
            ApplyStep::BeginCreate => {
                cur = write(ctx, &cur, |s| s.phase = HostNicPhase::Creating).await?;
                fresh_intent = true;
            }
            ApplyStep::FindOrCreate => {
                match find_or_create(ctx, &cur, prio, !fresh_intent).await? {
                    Some((next, nic)) => {
                        cur = next;
                        known = Some(nic);
                    }
                    None => return Ok(Action::await_change()),
                }
            }
            ApplyStep::LinkReported => {
                ctx.backoff.forget(&super::job_key(NAME, &cur));
                ctx.link_wait.done(&name);
                let generation = cur.metadata.generation;
                let instance = status.instance.clone().unwrap_or_default();
                write(ctx, &cur, |s| {
                    set_cond(
                        s,
                        &Cond::new(
                            "Attached",
                            true,
                            LINK_REPORTED,
                            format!("the agent sees the link on the node of {instance}"),
                        ),
                        generation,
                    );
                    s.conditions.retain(|c| c.type_ != REFUSED);
                    s.phase = HostNicPhase::Available;
                })
                .await?;
                return Ok(Action::requeue(settings.resync));
            }
            // The link report is a HostNic write, which wakes this reconcile; past the grace
            // the job is polled on the shared tick, with every other job due then.
            ApplyStep::AwaitLink(rest) => {
                let poll = now
                    .checked_add(rest)
                    .map_or(Duration::ZERO, |at| shared_tick(settings.job_poll, at));
                return Ok(Action::requeue(rest + poll));
            }
            ApplyStep::PollJob(id) => {
                let job = ctx.batch.job(&id, prio).await?;
                match job_verdict(job.as_ref(), settings.job_timeout, Timestamp::now()) {
                    JobVerdict::Wait(_) => {
                        return Ok(Action::requeue(shared_tick(
                            settings.job_poll,
                            Timestamp::now(),
                        )));
                    }
                    JobVerdict::ReadNic(word) => {
                        cur = write(ctx, &cur, |s| {
                            if let Some(j) = s.last_job.as_mut() {
                                j.status = word.to_string();
                            }
                        })
                        .await?;
                        if word == JobState::Failed.as_str() {
                            // The next attempt (CheckNic) waits out the back-off.
                            ctx.backoff
                                .fail(&super::job_key(NAME, &cur), settings.backoff_transient);
                            return Err(Error::JobFailed {
                                action: "AttachNics",
                                job: id,
                            });
                        }
                    }
                }
            }
            ApplyStep::CheckNic => {
                let Some(id) = status.nic_id.clone() else {
                    return Ok(Action::await_change());
                };
                let Some(instance) = status.instance.clone() else {
                    return fail(
                        ctx,
                        &cur,
                        "NoInstance",
                        "attaching NIC has no instance".into(),
                    )
                    .await;
                };
                let seen = match known.take().filter(|n| n.id == id) {
                    Some(n) => Some(n),
                    None => ctx.batch.nic(&id, prio).await?,
                };
                let job_word = status.last_job.as_ref().map(|j| j.status.as_str());
                let new = created_within(&status, settings.visibility_grace, Timestamp::now());
                match attach_verdict(seen.as_ref(), &instance, job_word, new) {
                    AttachVerdict::Attached => {
                        ctx.backoff.forget(&super::job_key(NAME, &cur));
                        ctx.link_wait.done(&name);
                        let generation = cur.metadata.generation;
                        cur = write(ctx, &cur, |s| {
                            set_cond(
                                s,
                                &Cond::new(
                                    "Attached",
                                    true,
                                    "InUse",
                                    format!("attached to {instance}"),
                                ),
                                generation,
                            );
                            s.conditions.retain(|c| c.type_ != REFUSED);
                        })
                        .await?;
                    }
                    AttachVerdict::Vanished => {
                        return fail(
                            ctx,
                            &cur,
                            "NicVanished",
                            format!("cloud NIC {id} no longer exists"),
                        )
                        .await;
                    }
                    AttachVerdict::Elsewhere(other) => {
                        return fail(
                            ctx,
                            &cur,
                            "AttachedElsewhere",
                            format!("cloud NIC {id} is attached to {other}"),
                        )
                        .await;
                    }
                    AttachVerdict::Settle => return Ok(Action::requeue(settings.job_poll)),
                    AttachVerdict::Attach => {
                        // The phase (Attaching) already records the intent.
                        ctx.checkpoint.step("AttachNics").await;
                        let (batch, member) = (ctx.batch.clone(), name.clone());
                        ctx.attaches.start(&name, async move {
                            batch.attach(&instance, &id, &member, prio).await
                        });
                        return Err(in_flight("an attach call is in flight", ctx));
                    }
                }
            }
            ApplyStep::MarkAvailable => {
                ctx.link_wait.done(&name);
                write(ctx, &cur, |s| s.phase = HostNicPhase::Available).await?;
                return Ok(Action::requeue(settings.resync));
            }
            ApplyStep::EndQuarantine => {
                write(ctx, &cur, |s| {
                    s.phase = HostNicPhase::Available;
                    s.pod = None;
                    s.released_at = None;
                })
                .await?;
                return Ok(Action::requeue(settings.resync));
            }
            ApplyStep::Quarantine(rest) => return Ok(Action::requeue(rest)),
            // The agent's report of the link is a HostNic write, which wakes this reconcile.
            ApplyStep::AwaitLinkHome => return Ok(Action::requeue(settings.resync)),
            ApplyStep::Idle => return Ok(Action::requeue(settings.resync)),
        }
    }
    Ok(Action::requeue(Duration::from_millis(100)))
}

/// A reconcile waiting for its handed-off call: the answer wakes it, the poll is a fallback.
/// A wait, not a success: an attempt that fails keeps the object's back-off growing.
fn in_flight(what: &'static str, ctx: &Context) -> Error {
    Error::WaitingFor(what, ctx.settings.link_grace)
}

/// Records the answer to a handed-off AttachNics.
async fn attach_answered(
    ctx: &Context,
    cur: &HostNic,
    answer: CloudResult<String>,
) -> Result<Action> {
    let status = cur.status.clone().unwrap_or_default();
    let (instance, id) = (
        status.instance.unwrap_or_default(),
        status.nic_id.unwrap_or_default(),
    );
    match answer {
        Ok(job) => {
            // Before the write, whose watch event wakes the wait.
            ctx.link_wait.start(&cur.name_any(), &job, Timestamp::now());
            write_result(ctx, cur, |s| {
                s.last_job = Some(started_job("AttachNics", &job))
            })
            .await?;
            Ok(Action::requeue(ctx.settings.link_grace))
        }
        Err(e) if refuses_instance(&e, &id) => Err(refused(ctx, cur, instance, e).await),
        Err(e) if e.is_not_found() => fail(ctx, cur, "NicVanished", e.to_string()).await,
        Err(e) => Err(e.into()),
    }
}

/// Records the answer to a handed-off DetachNics; the cleanup then waits for the job.
async fn detach_answered(
    ctx: &Context,
    cur: &HostNic,
    answer: CloudResult<String>,
) -> Result<Action> {
    match answer {
        Ok(job) => {
            // Before the write, whose watch event wakes the wait.
            ctx.link_wait.start(&cur.name_any(), &job, Timestamp::now());
            write_result(ctx, cur, |s| s.last_job = Some(started_job(DETACH, &job))).await?;
            Err(Error::WaitingFor(
                "detach job started",
                ctx.settings.link_grace,
            ))
        }
        Err(e) if e.is_not_found() => Ok(Action::await_change()),
        Err(e) => {
            ctx.doubts.refused(&cur.name_any());
            Err(e.into())
        }
    }
}

/// A just-started job of `action` as the status records it.
fn started_job(action: &str, id: &str) -> CloudJob {
    CloudJob {
        id: id.to_string(),
        action: action.into(),
        status: "pending".into(),
    }
}

/// The pool's quarantine (its default when the pool is gone).
async fn quarantine_of(ctx: &Context, nic: &HostNic) -> Result<Duration> {
    if nic
        .status
        .as_ref()
        .is_none_or(|s| s.phase != HostNicPhase::Released)
    {
        return Ok(Duration::ZERO);
    }
    // The pool store, not a GET: a Released NIC is reconciled on every change until its
    // quarantine ends, and the pool's watch delivers a quarantine edit within moments.
    let secs = match ctx.pool(&nic.spec.pool).await? {
        Some(p) => p.spec.quarantine_seconds,
        None => hostnic_crds::nicpool::DEFAULT_QUARANTINE_SECONDS,
    };
    Ok(Duration::from_secs(u64::from(secs)))
}

/// Creating: takes its NIC from its create batch, or (without a batch) adopts the NIC created
/// under its name (`look_up`) or creates it; then records Attaching with the NIC's facts (the
/// intent of the attach). Returns the NIC as the cloud just described it; None: the HostNic
/// failed or its node is gone.
async fn find_or_create(
    ctx: &Context,
    cur: &HostNic,
    prio: Priority,
    look_up: bool,
) -> Result<Option<(HostNic, Nic)>> {
    let vxnet = cur.spec.vxnet.clone();
    let Some(node) = ctx.node(&cur.spec.node).await? else {
        // The pool deletes HostNics of vanished nodes; nothing to create for them.
        return Ok(None);
    };
    let instance = ctx.instances.instance_of(&node);
    // Read before the create (the pool cached it), so nothing can fail between CreateNics
    // and recording its NIC id.
    let vx = ctx
        .facts
        .vxnets(std::slice::from_ref(&vxnet), prio)
        .await?
        .into_iter()
        .next();
    let tag = BatchTag::of(cur);
    let nic = match &tag {
        Some(tag) => match create_batch::claim(ctx, cur, tag, Want::Create, prio).await? {
            Claim::Nic(n) => n,
            Claim::Refused(e) => {
                create_refused(ctx, cur, e).await?;
                return Ok(None);
            }
            // `Want::Create` never ends with nothing.
            Claim::Nothing => return Ok(None),
            Claim::Pending => return Err(in_flight("its create batch is in flight", ctx)),
        },
        None => match own_nic(ctx, cur, prio, look_up).await? {
            Ok(n) => n,
            Err(e) => {
                create_refused(ctx, cur, e).await?;
                return Ok(None);
            }
        },
    };
    let generation = cur.metadata.generation;
    let next = write_result(ctx, cur, |s| {
        s.phase = HostNicPhase::Attaching;
        s.nic_id = Some(nic.id.clone());
        s.private_ip = nic.private_ip.clone();
        s.vxnet_cidr = vx.as_ref().and_then(|v| v.cidr.clone());
        s.vxnet_gateway = vx.as_ref().and_then(|v| v.gateway.clone());
        s.instance = Some(instance.clone());
        s.last_job = None;
        // Its transition time starts the visibility grace of the new NIC.
        set_cond(
            s,
            &Cond::new(
                "Attached",
                false,
                CREATED,
                format!("NIC {} created", nic.id),
            ),
            generation,
        );
    })
    .await?;
    if let Some(tag) = &tag {
        ctx.create_batches.settle(tag, &next.name_any()).await;
    }
    Ok(Some((next, nic)))
}

/// The NIC of a HostNic without a create batch: the one created under its name (`look_up`),
/// or a new one. Err: the CreateNics refusal (throttled and transient failures are errors).
async fn own_nic(
    ctx: &Context,
    cur: &HostNic,
    prio: Priority,
    look_up: bool,
) -> Result<std::result::Result<Nic, CloudError>> {
    let name = nic_name(ctx, cur);
    let vxnet = cur.spec.vxnet.clone();
    let found = if look_up {
        ctx.cloud
            .describe_nics(NicQuery::Name(name.clone()), prio)
            .await?
    } else {
        Vec::new()
    };
    if let Some(n) = found.into_iter().min_by(|a, b| a.id.cmp(&b.id)) {
        tracing::info!(nic = %n.id, "adopting NIC created before a restart");
        return Ok(Ok(n));
    }
    ctx.checkpoint.step("CreateNics").await;
    match ctx
        .cloud
        .create_nics(vxnet.clone(), name.clone(), 1, prio)
        .await
    {
        Ok(created) => {
            let c = created
                .into_iter()
                .next()
                .ok_or_else(|| CloudError::transient("CreateNics", "CreateNics returned no NIC"))?;
            Ok(Ok(Nic {
                id: c.id,
                name,
                state: NicState::Available,
                instance: None,
                vxnet,
                private_ip: c.private_ip,
                created: Some(Timestamp::now()),
            }))
        }
        Err(e)
            if matches!(
                e.kind,
                CloudErrorKind::Throttled | CloudErrorKind::Transient
            ) =>
        {
            Err(e.into())
        }
        Err(e) => Ok(Err(e)),
    }
}

/// A refused CreateNics: marks what it says about the vxnet or the quota, and fails the
/// HostNic with the reason (the pool replaces it once the cloud allows).
async fn create_refused(ctx: &Context, cur: &HostNic, e: CloudError) -> Result<Action> {
    if matches!(e.kind, CloudErrorKind::Capacity | CloudErrorKind::Refused) {
        ctx.facts.mark_exhausted(&cur.spec.vxnet);
    }
    if e.kind == CloudErrorKind::QuotaExceeded {
        ctx.facts.hold_quota();
    }
    let reason = match e.kind {
        CloudErrorKind::Capacity => "VxnetExhausted",
        CloudErrorKind::QuotaExceeded => "QuotaExceeded",
        _ => "CreateRefused",
    };
    fail(ctx, cur, reason, e.to_string()).await
}

/// Reason of the Attached=False condition recorded with a new NIC's id.
const CREATED: &str = "NicCreated";

/// Condition type on a HostNic whose instance refuses NICs; the pool reports it as Degraded.
pub const REFUSED: &str = "AttachRefused";

/// Reason of the Attached=True condition recorded from the agent's link report.
const LINK_REPORTED: &str = "LinkReported";

/// Whether the HostNic's NIC was recorded within `grace` (DescribeNics may not show it yet):
/// its id recorded, or its attach proven by the link report (no DescribeNics saw it then, and
/// the NIC is older than the report, so this errs on the side of waiting).
fn created_within(status: &HostNicStatus, grace: Duration, now: Timestamp) -> bool {
    status
        .conditions
        .iter()
        .find(|c| {
            c.type_ == "Attached"
                && ((c.status == "False" && c.reason == CREATED)
                    || (c.status == "True" && c.reason == LINK_REPORTED))
        })
        .is_some_and(|c| now.duration_since(c.last_transition_time.0).unsigned_abs() < grace)
}

/// The instance refused the attach for a reason about itself: record it once on the HostNic
/// (the pool shows it as Degraded), refresh what is known of the instance, and back off.
async fn refused(ctx: &Context, cur: &HostNic, instance: String, e: CloudError) -> Error {
    ctx.facts.forget_instance(&instance);
    let already = cur
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, REFUSED));
    if !already {
        let generation = cur.metadata.generation;
        let message = e.to_string();
        // Best effort: the back-off below happens whether or not this lands.
        if let Err(error) = write(ctx, cur, |s| {
            set_cond(
                s,
                &Cond::new(REFUSED, true, "InstanceRefused", message.clone()),
                generation,
            );
        })
        .await
        {
            tracing::debug!(%error, "could not record the refusal");
        }
        let note = format!("{instance} refuses NICs: {e}");
        ctx.event(
            cur,
            EventType::Warning,
            "InstanceRefused",
            note.clone(),
            "Attach",
        )
        .await;
        let on_pool = format!("node {}: {note}", cur.spec.node);
        ctx.warn_pool(&cur.spec.pool, "InstanceRefused", on_pool, "Attach")
            .await;
    }
    Error::InstanceRefused {
        instance,
        source: e,
    }
}

/// A batch member still Pending may have had a NIC created for it (its batch's CreateNics
/// covers every live member): it looks for one left over, as a Creating one does, instead of
/// leaving it to GC.
fn batch_cleanup_step(step: CleanupStep, phase: HostNicPhase, batched: bool) -> CleanupStep {
    match step {
        CleanupStep::Forget if batched && phase == HostNicPhase::Pending => CleanupStep::FindByName,
        step => step,
    }
}

async fn node_exists(ctx: &Context, name: &str) -> Result<bool> {
    Ok(ctx.node(name).await?.is_some())
}

async fn cleanup(nic: &HostNic, ctx: &Context) -> Result<Action> {
    let Some(mut cur) = fresh(ctx, nic).await? else {
        return Ok(Action::await_change());
    };
    let retain = nic
        .annotations()
        .get(RETAIN_ANNOTATION)
        .is_some_and(|v| v == "true");
    let prio = Priority::Background;
    let name = cur.name_any();
    // Handed-off calls are seen through first: an attach's job is what the cleanup waits for.
    match ctx.attaches.take(&name) {
        Some(Call::Running) => return Err(in_flight("an attach call is in flight", ctx)),
        Some(Call::Answered(Ok(job))) => {
            cur = write_result(ctx, &cur, |s| {
                s.last_job = Some(started_job("AttachNics", &job))
            })
            .await?;
        }
        Some(Call::Answered(Err(_))) | None => {}
    }
    match ctx.detaches.take(&name) {
        Some(Call::Running) => return Err(in_flight("a detach call is in flight", ctx)),
        Some(Call::Answered(answer)) => return detach_answered(ctx, &cur, answer).await,
        None => {}
    }
    match ctx.deletes.take(&name) {
        Some(Call::Running) => return Err(in_flight("a delete call is in flight", ctx)),
        Some(Call::Answered(Ok(()))) => return Ok(Action::await_change()),
        Some(Call::Answered(Err(e))) if e.is_not_found() => return Ok(Action::await_change()),
        Some(Call::Answered(Err(e))) => {
            ctx.doubts.refused(&name);
            return Err(e.into());
        }
        None => {}
    }
    for _ in 0..MAX_STEPS {
        let status = cur.status.clone().unwrap_or_default();
        let started = status
            .last_job
            .as_ref()
            .and_then(|j| ctx.link_wait.started(&name, &j.id));
        let f = facts(&status, started);
        // Only a wait for the node's pods depends on the node: read it only then.
        let step = match cleanup_step(&f, true) {
            CleanupStep::WaitRelease | CleanupStep::WaitLinkHome => {
                cleanup_step(&f, node_exists(ctx, &cur.spec.node).await?)
            }
            step => batch_cleanup_step(step, status.phase, BatchTag::of(&cur).is_some()),
        };
        // Both waits poll: a deleted Node wakes no HostNic, and it ends them.
        match step {
            CleanupStep::WaitRelease => return Err(Error::Waiting("a pod still holds the NIC")),
            CleanupStep::WaitLinkHome => {
                return Err(Error::Waiting("the agent has not proven the link home"));
            }
            CleanupStep::Forget => return Ok(Action::await_change()),
            CleanupStep::FindByName => {
                let found = match BatchTag::of(&cur) {
                    // A NIC of its batch left for it (created for it before a crash, or after
                    // it was deleted) is deleted with it rather than left to GC.
                    Some(tag) => {
                        match create_batch::claim(ctx, &cur, &tag, Want::Leftover, prio).await? {
                            Claim::Nic(n) => Some(n),
                            Claim::Nothing | Claim::Refused(_) => None,
                            Claim::Pending => {
                                return Err(in_flight("its create batch is in flight", ctx));
                            }
                        }
                    }
                    None => ctx
                        .cloud
                        .describe_nics(NicQuery::Name(nic_name(ctx, &cur)), prio)
                        .await?
                        .into_iter()
                        .min_by(|a, b| a.id.cmp(&b.id)),
                };
                let Some(n) = found else {
                    return Ok(Action::await_change());
                };
                cur = write(ctx, &cur, |s| {
                    s.nic_id = Some(n.id);
                    s.private_ip = n.private_ip;
                })
                .await?;
            }
            CleanupStep::PollJob(id) => {
                // The agent's report of the link going is a HostNic write, which wakes this.
                if let Some(rest) = detach_wait(&f, ctx.settings.link_grace, Timestamp::now()) {
                    return Err(Error::WaitingFor("the node to see the link go", rest));
                }
                let job = ctx.batch.job(&id, prio).await?;
                match job_verdict(job.as_ref(), ctx.settings.job_timeout, Timestamp::now()) {
                    JobVerdict::Wait(_) => return Err(Error::Waiting("detach job running")),
                    JobVerdict::ReadNic(word) => {
                        cur = write(ctx, &cur, |s| {
                            if let Some(j) = s.last_job.as_mut() {
                                j.status = word.to_string();
                            }
                        })
                        .await?;
                        if word == JobState::Failed.as_str() {
                            ctx.backoff
                                .fail(&super::job_key(NAME, &cur), ctx.settings.backoff_transient);
                            return Err(Error::JobFailed {
                                action: "DetachNics",
                                job: id,
                            });
                        }
                    }
                }
            }
            CleanupStep::CheckNic => {
                let Some(id) = status.nic_id.clone() else {
                    return Ok(Action::await_change());
                };
                if retain {
                    // Renamed out of this cluster's prefix, GC leaves it alone for good.
                    ctx.checkpoint.step("ModifyNicAttributes").await;
                    let kept = format!("retained-{}", nic_name(ctx, &cur));
                    match ctx.cloud.rename_nic(id, kept, prio).await {
                        Ok(()) => return Ok(Action::await_change()),
                        Err(e) if e.is_not_found() => return Ok(Action::await_change()),
                        Err(e) => return Err(e.into()),
                    }
                }
                let known = known_cleanup_verdict(&f).filter(|_| !ctx.doubts.was_refused(&name));
                let verdict = match known {
                    Some(v) => v,
                    None => {
                        let seen = ctx.batch.nic(&id, prio).await?;
                        if seen.is_none()
                            && created_within(
                                &status,
                                ctx.settings.visibility_grace,
                                Timestamp::now(),
                            )
                        {
                            // Not "gone": DescribeNics does not show a NIC this new yet.
                            return Err(Error::Waiting("new NIC not visible yet"));
                        }
                        ctx.doubts.clear(&name);
                        cleanup_verdict(seen.as_ref())
                    }
                };
                match verdict {
                    CleanupVerdict::Gone => return Ok(Action::await_change()),
                    CleanupVerdict::Detach => {
                        if status.phase != HostNicPhase::Detaching {
                            write(ctx, &cur, |s| s.phase = HostNicPhase::Detaching).await?;
                        }
                        ctx.checkpoint.step("DetachNics").await;
                        let (batch, member) = (ctx.batch.clone(), name.clone());
                        let instance = status.instance.clone();
                        ctx.detaches.start(&name, async move {
                            batch
                                .detach(instance.as_deref(), &id, Some(&member), prio)
                                .await
                        });
                        return Err(in_flight("a detach call is in flight", ctx));
                    }
                    CleanupVerdict::Delete => {
                        ctx.backoff.forget(&super::job_key(NAME, &cur));
                        if status.phase != HostNicPhase::Deleting {
                            write(ctx, &cur, |s| s.phase = HostNicPhase::Deleting).await?;
                        }
                        ctx.checkpoint.step("DeleteNics").await;
                        let (batch, member) = (ctx.batch.clone(), name.clone());
                        let instance = status.instance.clone();
                        ctx.deletes.start(&name, async move {
                            batch
                                .delete(instance.as_deref(), &id, Some(&member), prio)
                                .await
                        });
                        return Err(in_flight("a delete call is in flight", ctx));
                    }
                }
            }
        }
    }
    Err(Error::Waiting("cleanup continues"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_batch_member_looks_for_its_leftover() {
        let forget = CleanupStep::Forget;
        assert_eq!(
            batch_cleanup_step(forget.clone(), HostNicPhase::Pending, true),
            CleanupStep::FindByName
        );
        // Without a batch, nothing was ever created for a Pending HostNic.
        assert_eq!(
            batch_cleanup_step(forget.clone(), HostNicPhase::Pending, false),
            forget
        );
        // A Failed member takes no NIC of its batch.
        assert_eq!(
            batch_cleanup_step(forget.clone(), HostNicPhase::Failed, true),
            forget
        );
    }
}
