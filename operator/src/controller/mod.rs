//! The two controllers and what they share: the `Context` (Kubernetes client, cloud, batcher,
//! recorder, metrics, settings), a cache of cloud facts, the crash-point hook, the per-object
//! back-off and the error policy.
//!
//! ```text
//!   Node ──watch──┐                       ┌── HostNic controller: one HostNic's cloud lifecycle
//!   HostNic ─watch┼─> NicPool controller ──┤      (create, attach, detach, delete)
//!   NicPool ──────┘   (creates/deletes     └── gc: orphans in the cloud, vanished NICs
//!                      HostNic objects)
//! ```

pub mod backoff;
pub mod cache;
pub mod coalesce;
pub mod create_batch;
pub mod handoff;
pub mod hostnic;
pub mod link_wait;
pub mod nicpool;
pub mod own_writes;
pub mod status;
pub mod taint;
pub mod triggers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostnic_crds::{HostNic, HostNicPhase, NODE_LABEL, NicPool, POOL_LABEL};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;

use crate::args::Settings;
use crate::cloud::batch::Batcher;
use crate::cloud::{CloudApi, Priority};
use crate::error::{Error, ErrorClass, Result};
use crate::metrics::Metrics;
use crate::node::InstanceSource;

/// Annotation the NicPool controller puts on HostNics of a pool deleted with reclaimPolicy
/// Retain: their cleanup keeps the cloud NIC (renamed out of GC's reach).
pub const RETAIN_ANNOTATION: &str = "hostnic.qingcloud.com/retain";

/// Counts lifecycle steps (each status write and each mutating cloud call) and, in tests, stops
/// the operator dead at a chosen step: the deterministic crash-point hook.
#[derive(Debug, Default)]
pub struct Checkpoint {
    count: AtomicU64,
    freeze: Freeze,
    /// Whether the step `Freeze::After` names was taken.
    passed: AtomicBool,
    /// Notified once the freezing step is reached (the step never completes).
    pub hit: Notify,
}

/// Where a [`Checkpoint`] freezes.
#[derive(Debug, Default)]
enum Freeze {
    #[default]
    Never,
    /// At step `k` (1-based) and every later one.
    At(u64),
    /// At the first step after the one of this name, whichever number it has (the order of
    /// concurrent reconciles' steps varies from run to run).
    After(&'static str),
}

impl Checkpoint {
    /// A hook that freezes at step `k` (1-based).
    pub fn crash_at(k: u64) -> Self {
        Self {
            freeze: Freeze::At(k),
            ..Self::default()
        }
    }

    /// A hook that freezes at the first step after the step named `what`.
    pub fn crash_after(what: &'static str) -> Self {
        Self {
            freeze: Freeze::After(what),
            ..Self::default()
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Marks a step; at the freezing step, signals and never returns.
    pub async fn step(&self, what: &'static str) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::trace!(step = n, what, "lifecycle step");
        let freeze = match self.freeze {
            Freeze::Never => false,
            Freeze::At(k) => n >= k,
            Freeze::After(name) => {
                let passed = self.passed.load(Ordering::SeqCst);
                if what == name {
                    self.passed.store(true, Ordering::SeqCst);
                }
                passed
            }
        };
        if freeze {
            self.hit.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// Shared state of both controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The cloud (metered).
    pub cloud: Arc<dyn CloudApi>,
    /// Batched single-NIC calls.
    pub batch: Batcher,
    /// Create batches: one CreateNics for the NICs a pool pass adds in a vxnet.
    pub create_batches: create_batch::Batches,
    /// Event recorder: the operator process's one, so repeats of an event become one series.
    pub recorder: Recorder,
    /// What the NicPool status writer publishes next.
    pub status: Arc<status::Board>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tunables.
    pub settings: Settings,
    /// How nodes map to instances.
    pub instances: InstanceSource,
    /// Cached vxnet and instance facts.
    pub facts: cache::CloudFacts,
    /// All HostNics (the HostNic controller's reflector): what pool passes and priorities read.
    pub hostnics: Store<HostNic>,
    /// All Nodes (the pool controller's Node reflector).
    pub nodes: Store<Node>,
    /// All NicPools (the pool controller's reflector).
    pub pools: Store<NicPool>,
    /// The pool passes' creations and deletions of HostNics the store does not show yet.
    pub own_writes: own_writes::OwnWrites,
    /// Since when each (pool, node) has had surplus free NICs.
    pub surplus: Mutex<HashMap<(String, String), Timestamp>>,
    /// The nodes, per pool, whose refill a claim made due at once.
    pub early_refills: triggers::EarlyRefills,
    /// Most NICs per AttachNics: the size of a whole attach round.
    pub attach_batch: u32,
    /// Crash-point hook.
    pub checkpoint: Arc<Checkpoint>,
    /// Per-object exponential back-off of both controllers.
    pub backoff: backoff::Backoff,
    /// When each attach or detach job started waiting for its link report.
    pub link_wait: link_wait::LinkWait,
    /// AttachNics calls the HostNic reconciles handed off (their answers: job ids).
    pub attaches: handoff::Handoff<String>,
    /// DetachNics calls handed off (their answers: job ids).
    pub detaches: handoff::Handoff<String>,
    /// DeleteNics calls handed off.
    pub deletes: handoff::Handoff<()>,
    /// HostNics whose call made on their status's word the cloud refused.
    pub doubts: handoff::Doubts,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// Builds the context of `op`'s controllers around the (metered) `cloud` and the reflector
    /// stores, publishing events through `recorder` (see [`recorder`]).
    pub fn new(
        op: &crate::run::Operator,
        cloud: Arc<dyn CloudApi>,
        stores: status::Stores,
        recorder: Recorder,
        wake: handoff::Wake,
    ) -> Self {
        let settings = op.settings.clone();
        Self {
            batch: Batcher::new(cloud.clone(), op.batch),
            facts: cache::CloudFacts::new(cloud.clone(), settings.cloud_cache),
            instances: InstanceSource {
                annotation: settings.instance_annotation.clone(),
                label: settings.instance_label.clone(),
            },
            client: op.client.clone(),
            cloud,
            recorder,
            status: Arc::default(),
            metrics: op.metrics.clone(),
            settings,
            hostnics: stores.hostnics,
            nodes: stores.nodes,
            pools: stores.pools,
            own_writes: own_writes::OwnWrites::default(),
            surplus: Mutex::new(HashMap::new()),
            early_refills: triggers::EarlyRefills::default(),
            attach_batch: u32::try_from(op.batch.max_attach).unwrap_or(u32::MAX),
            checkpoint: op.checkpoint.clone(),
            backoff: backoff::Backoff::new(op.settings.backoff_max),
            link_wait: link_wait::LinkWait::default(),
            attaches: handoff::Handoff::new(wake.clone()),
            detaches: handoff::Handoff::new(wake.clone()),
            deletes: handoff::Handoff::new(wake.clone()),
            doubts: handoff::Doubts::default(),
            create_batches: create_batch::Batches::new(wake),
        }
    }

    /// The Node `name` as the Node store has it (its first listing awaited): a reconcile reads
    /// the store, not a GET per step (Nodes are tens of KB, and a cleanup waiting for pods
    /// polls). A node appears before the pool gives it HostNics, so a store that lags can
    /// only take a deleted node for alive a moment longer, never the other way round.
    pub async fn node(&self, name: &str) -> Result<Option<Arc<Node>>> {
        wait_synced(&self.nodes).await?;
        Ok(self.nodes.get(&ObjectRef::new(name)))
    }

    /// The NicPool `name` as the pool store has it (its first listing awaited).
    pub async fn pool(&self, name: &str) -> Result<Option<Arc<NicPool>>> {
        wait_synced(&self.pools).await?;
        Ok(self.pools.get(&ObjectRef::new(name)))
    }

    /// Priority of cloud work for a HostNic: urgent when its node has no free NIC left in its
    /// pool (a pod may be waiting), else an ordinary refill.
    pub fn priority_for(&self, nic: &HostNic) -> Priority {
        let (pool, node) = (nic.labels().get(POOL_LABEL), nic.labels().get(NODE_LABEL));
        let free = self
            .hostnics
            .state()
            .iter()
            .filter(|h| h.labels().get(POOL_LABEL) == pool && h.labels().get(NODE_LABEL) == node)
            .filter(|h| {
                h.status
                    .as_ref()
                    .is_some_and(|s| s.phase == HostNicPhase::Available)
            })
            .count();
        if free == 0 {
            Priority::Urgent
        } else {
            Priority::Refill
        }
    }

    /// `hostnic` is gone: answers to its handed-off calls, if they come, have nobody to record
    /// them.
    pub fn forget_calls(&self, hostnic: &str) {
        self.attaches.forget(hostnic);
        self.detaches.forget(hostnic);
        self.deletes.forget(hostnic);
        self.doubts.clear(hostnic);
    }

    /// Publishes an event about `obj`; events are best effort.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }
}

/// The event recorder of an operator process. Kept for the whole process, across leadership
/// terms: kube-runtime's `Recorder` turns a repeated event into one Event with a growing
/// `series.count` only when the same instance (its cache) publishes the repeats.
pub fn recorder(op: &crate::run::Operator) -> Recorder {
    Recorder::new(
        op.client.clone(),
        Reporter {
            controller: status::FIELD_MANAGER.into(),
            instance: Some(op.identity.clone()),
        },
    )
}

impl Context {
    /// Publishes a Warning about `pool` by name (from a HostNic's failure: users look at the
    /// pool). Best effort, like every event.
    pub async fn warn_pool(&self, pool: &str, reason: &str, note: String, action: &str) {
        match self.pool(pool).await {
            Ok(Some(p)) => {
                self.event(p.as_ref(), EventType::Warning, reason, note, action)
                    .await
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, pool, "could not read the pool for an event"),
        }
    }
}

/// Wait before the first retry, per error class; each further consecutive failure of the same
/// object doubles it (see [`backoff`]). Conflicts only mean a stale read: they start short.
pub fn base_backoff(error: &Error, settings: &Settings) -> Duration {
    if error.is_conflict() {
        return Duration::from_millis(100);
    }
    match error.class() {
        ErrorClass::Throttled => settings.backoff_throttled,
        ErrorClass::Transient | ErrorClass::Refused => settings.backoff_transient,
        ErrorClass::BadSpec => settings.backoff_permanent,
        ErrorClass::Waiting => settings.job_poll,
    }
}

/// The back-off key of an object in one controller: deleting objects have their own, so a
/// cleanup never waits out an apply's back-off.
pub fn backoff_key<K: ResourceExt>(controller: &'static str, obj: &K) -> String {
    let phase = if obj.meta().deletion_timestamp.is_some() {
        "cleanup"
    } else {
        "apply"
    };
    phase_key(controller, &obj.name_any(), phase)
}

fn phase_key(controller: &str, name: &str, phase: &str) -> String {
    format!("{controller}/{name}/{phase}")
}

/// The back-off key of an object's cloud jobs. A failed job shows only after the call that
/// started it succeeded, so it has its own key, reset when a job's work is confirmed (the NIC
/// attached, or detached), not by the reconcile that starts the next job.
pub fn job_key<K: ResourceExt>(controller: &'static str, obj: &K) -> String {
    format!("{}/job", backoff_key(controller, obj))
}

/// Runs one reconcile under the object's back-off: while it is backing off nothing is done (a
/// watch event, even one caused by the failing reconcile's own write, does not bypass the
/// wait); a failure lengthens it before any new trigger can run; a success resets it.
pub async fn with_backoff<K, F>(
    controller: &'static str,
    obj: &K,
    ctx: &Context,
    run: F,
) -> Result<Action, Error>
where
    K: ResourceExt,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let key = backoff_key(controller, obj);
    let left = ctx
        .backoff
        .holdoff(&key)
        .max(ctx.backoff.holdoff(&job_key(controller, obj)));
    if let Some(left) = left {
        tracing::debug!(controller, name = %obj.name_any(), ?left, "backing off");
        return Ok(Action::requeue(left));
    }
    let result = run.await;
    match &result {
        Ok(_) => {
            ctx.backoff.forget(&key);
            if obj.meta().deletion_timestamp.is_some() {
                // A finished cleanup: nothing of this object runs again.
                ctx.backoff
                    .forget_prefix(&phase_key(controller, &obj.name_any(), ""));
            }
        }
        Err(e) if e.class() == ErrorClass::Waiting => {}
        Err(e) => {
            ctx.backoff.fail(&key, base_backoff(e, &ctx.settings));
        }
    }
    result
}

/// How long a waiting reconcile sleeps: past the time its error names (a report that wakes it
/// is due by then), to the shared clock's next tick, at least half a period away: the cleanups
/// waiting for their detach jobs poll together, in one DescribeJobs, and none polls a job just
/// started.
fn waiting_delay(error: &Error, every: Duration, now: Timestamp) -> Duration {
    // Seen through the finalizer's wrapper: matched on the wrapper, every HostNic waiting for
    // its handed-off call was reconciled again on each tick instead of once.
    let at = match error.reconcile_error() {
        Error::WaitingFor(_, rest) => now.checked_add(*rest).unwrap_or(now),
        _ => now,
    };
    let tick = crate::plan::nic::shared_tick(every, at);
    let wait = at.duration_since(now).unsigned_abs() + tick;
    if tick < every / 2 { wait + every } else { wait }
}

/// Shared error policy: log, count by variant, requeue after the object's back-off (recorded
/// by [`with_backoff`]). Waiting is not a failure: it polls at its own pace.
pub fn error_policy<K: ResourceExt>(
    controller: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    let label = error.metric_label();
    ctx.metrics.failure(controller, label);
    if error.class() == ErrorClass::Waiting {
        tracing::debug!(controller, name = %obj.name_any(), %error, "waiting");
        return Action::requeue(waiting_delay(
            error,
            ctx.settings.job_poll,
            Timestamp::now(),
        ));
    }
    let key = backoff_key(controller, obj);
    let wait = ctx
        .backoff
        .holdoff(&key)
        .unwrap_or_else(|| base_backoff(error, &ctx.settings));
    let failures = ctx.backoff.failures(&key);
    if error.is_conflict() {
        tracing::debug!(controller, name = %obj.name_any(), %error, ?wait, "retrying");
    } else {
        tracing::warn!(controller, name = %obj.name_any(), %error, error_kind = label, failures, ?wait, "reconcile failed");
    }
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{CloudError, CloudErrorKind};

    fn settings() -> Settings {
        <crate::args::Args as clap::Parser>::parse_from(["hostnic-operator"]).settings()
    }

    #[test]
    fn backoff_follows_the_error_class() {
        let s = settings();
        let cloud = |code| Error::Cloud(CloudError::from_code("AttachNics", code, "x"));
        let api_quota = Error::Cloud(CloudError::from_code(
            "AttachNics",
            2500,
            "QuotaExceeded, api request quota exceeded",
        ));
        assert_eq!(base_backoff(&api_quota, &s), s.backoff_throttled);
        assert_eq!(base_backoff(&cloud(2500), &s), s.backoff_permanent);
        assert_eq!(base_backoff(&cloud(5100), &s), s.backoff_throttled);
        assert_eq!(base_backoff(&cloud(5000), &s), s.backoff_transient);
        assert_eq!(base_backoff(&cloud(1400), &s), s.backoff_transient);
        assert_eq!(base_backoff(&cloud(1200), &s), s.backoff_permanent);
        assert_eq!(
            base_backoff(&Error::InvalidSpec("x".into()), &s),
            s.backoff_permanent
        );
        assert_eq!(base_backoff(&Error::Waiting("x"), &s), s.job_poll);
        assert!(
            s.backoff_max >= Duration::from_secs(600),
            "a stuck object retries a few times an hour at most"
        );
        assert_eq!(api_quota.metric_label(), "cloud_throttled");
        assert_eq!(cloud(2500).metric_label(), "cloud_quota_exceeded");
        assert_eq!(
            Error::Cloud(CloudError::transient("DescribeNics", "reset")).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            CloudError::from_code("x", 5200, "").kind,
            CloudErrorKind::Capacity
        );
    }

    #[test]
    fn a_wait_for_a_report_inside_a_finalizer_sleeps_until_the_report_is_due() {
        let every = Duration::from_secs(2);
        let now = Timestamp::now();
        let grace = Duration::from_secs(30);
        let wrapped =
            |e| Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(e)));
        for e in [
            Error::WaitingFor("x", grace),
            wrapped(Error::WaitingFor("x", grace)),
        ] {
            let d = waiting_delay(&e, every, now);
            assert!(d >= grace && d <= grace + every * 2, "{e}: {d:?}");
        }
        let d = waiting_delay(&wrapped(Error::Waiting("x")), every, now);
        assert!(d >= every / 2 && d <= every * 2, "{d:?}");
    }

    #[tokio::test]
    async fn checkpoint_freezes_at_its_step() {
        let cp = Arc::new(Checkpoint::crash_at(2));
        cp.step("one").await;
        let c = cp.clone();
        let frozen = tokio::spawn(async move { c.step("two").await });
        cp.hit.notified().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!frozen.is_finished());
        frozen.abort();
        assert_eq!(cp.steps(), 2);
    }

    #[tokio::test]
    async fn checkpoint_freezes_at_the_step_after_the_named_one() {
        let cp = Arc::new(Checkpoint::crash_after("create"));
        cp.step("write").await;
        cp.step("create").await;
        let c = cp.clone();
        let frozen = tokio::spawn(async move { c.step("write").await });
        cp.hit.notified().await;
        assert_eq!(cp.steps(), 3);
        frozen.abort();
    }
}

#[cfg(test)]
mod priority_tests {
    use super::*;
    use hostnic_crds::{HostNicSpec, HostNicStatus, NicRole};
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    fn nic(name: &str, node: &str, phase: HostNicPhase) -> HostNic {
        let mut h = HostNic::new(
            name,
            HostNicSpec {
                pool: "p".into(),
                node: node.into(),
                vxnet: "vxnet-a".into(),
                role: NicRole::Pod,
            },
        );
        h.metadata.labels = Some(
            [
                (POOL_LABEL.to_string(), "p".to_string()),
                (NODE_LABEL.to_string(), node.to_string()),
            ]
            .into(),
        );
        h.status = Some(HostNicStatus {
            phase,
            ..Default::default()
        });
        h
    }

    #[tokio::test]
    async fn nodes_without_a_free_nic_come_first() {
        let (reader, mut writer) = reflector::store::<HostNic>();
        for h in [
            nic("a1", "a", HostNicPhase::Available),
            nic("a2", "a", HostNicPhase::Creating),
            nic("b1", "b", HostNicPhase::Bound),
            nic("b2", "b", HostNicPhase::Creating),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(h));
        }
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let op = crate::run::Operator {
            client,
            cloud: Arc::new(crate::cloud::fake::FakeCloud::new(Duration::ZERO)),
            settings: <crate::args::Args as clap::Parser>::parse_from(["x"]).settings(),
            batch: crate::cloud::batch::BatchConfig {
                window: Duration::ZERO,
                max_attach: 5,
                max_detach: 5,
                max_delete: 5,
                round_wait: Duration::ZERO,
            },
            identity: "t".into(),
            lease: None,
            checkpoint: Arc::new(Checkpoint::default()),
            metrics: Arc::new(Metrics::new(
                &mut prometheus_client::registry::Registry::default(),
            )),
        };
        let (wake, _) = handoff::Wake::channel();
        let stores = status::Stores {
            pools: reflector::store().0,
            nodes: reflector::store().0,
            hostnics: reader,
        };
        let ctx = Context::new(&op, op.cloud.clone(), stores, recorder(&op), wake);
        assert_eq!(
            ctx.priority_for(&nic("a2", "a", HostNicPhase::Creating)),
            Priority::Refill
        );
        assert_eq!(
            ctx.priority_for(&nic("b2", "b", HostNicPhase::Creating)),
            Priority::Urgent
        );
    }
}

/// Waits for a reflector's first listing: a pass reading an empty store at start would create
/// every node's pool again.
///
/// kube-runtime's `Store::wait_until_ready` keeps one waker for all its waiters (a futures
/// oneshot under a mutex): of the tasks waiting at once (the status writer, a pass started
/// before the listing ended, GC), only the last to poll is woken and the others wait for ever.
/// So the wait is polled again every [`READY_POLL`].
pub(crate) async fn wait_synced<K>(store: &Store<K>) -> Result<()>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => {
                return Err(Error::Waiting(
                    "the reflector stopped before its first listing",
                ));
            }
            Err(_) => {}
        }
    }
}

/// How often [`wait_synced`] looks again: a lost wake-up costs at most this.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(50);

#[cfg(test)]
mod synced_tests {
    use std::time::Duration;

    use hostnic_crds::HostNic;
    use kube::runtime::{reflector, watcher};

    use super::wait_synced;

    /// Two tasks wait for one store's first listing: both go on once it ends. With kube's
    /// `wait_until_ready` alone, the first waiter's wake-up was lost and it waited for ever
    /// (seen as a pool pass stuck at an operator's start, its pool never reconciled again).
    #[tokio::test]
    async fn every_waiter_sees_the_store_synced() {
        let (store, mut writer) = reflector::store::<HostNic>();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { wait_synced(&store).await })
            })
            .collect();
        // Both are waiting.
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for (i, w) in waiters.into_iter().enumerate() {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap_or_else(|_| panic!("waiter {i} was never woken"))
                .expect("join")
                .expect("synced");
        }
    }
}
