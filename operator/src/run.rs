//! Wiring: the two controllers, the status writer, GC and leader election around one `Context`. `main` builds an
//! [`Operator`] from flags; tests build one around the in-memory API server and a cloud of
//! their choice.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use hostnic_crds::{HostNic, NicPool};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::args::Settings;
use crate::cloud::CloudApi;
use crate::cloud::batch::BatchConfig;
use crate::cloud::gate::Gate;
use crate::cloud::metered::Metered;
use crate::controller::coalesce::{Urgency, coalesce};
use crate::controller::triggers::{self, NodeFilter};
use crate::controller::{Checkpoint, Context, handoff, hostnic, nicpool, status};
use crate::gc::Collector;
use crate::lease::{Elector, Timing};
use crate::metrics::Metrics;

/// Where the leader Lease lives and how it is kept.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// Duration, renew deadline and retry period.
    pub timing: Timing,
}

/// Bounds how long a connection attempt to the API server may take.
pub const KUBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds how long the client waits for bytes on a connection, so a half-open one (a
/// partition) fails instead of hanging forever. Longer than kube-runtime's watch idle timeout
/// (290 s server-side watch timeout + 5 s), which it must not undercut: a watch on a quiet
/// resource reads nothing in between. The Lease does not rely on it: each attempt has its own
/// deadline.
pub const KUBE_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The Kubernetes client settings the operator runs with (kube 5.0 sets no read timeout).
pub fn kube_config(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(KUBE_CONNECT_TIMEOUT);
    config.read_timeout = Some(KUBE_READ_TIMEOUT);
    // Count from when a request is sent, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    config
}

/// A configured operator, ready to run.
pub struct Operator {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The cloud (metered here).
    pub cloud: Arc<dyn CloudApi>,
    /// Tunables.
    pub settings: Settings,
    /// Batching.
    pub batch: BatchConfig,
    /// This replica's identity (Lease holder, event reporter).
    pub identity: String,
    /// Leader election; None runs unconditionally (single replica, tests).
    pub lease: Option<LeaseConfig>,
    /// Crash-point hook.
    pub checkpoint: Arc<Checkpoint>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A watch item, or none with its error logged (the watcher retries on its own backoff).
fn logged<K>(item: Result<K, watcher::Error>, kind: &str) -> Option<K> {
    item.inspect_err(|error| tracing::debug!(%error, kind, "pool triggers: watch"))
        .ok()
}

/// The Node events that wake the pools: only changes to what a pool uses (see
/// [`NodeFilter`]), never a kubelet's status heartbeat.
/// They also wake the status writer, which reads the Nodes from `store`'s reflector.
fn node_triggers(
    client: &kube::Client,
    ctx: &Context,
    store: reflector::store::Writer<Node>,
) -> impl futures::Stream<Item = Result<Node, watcher::Error>> + Send + 'static {
    let mut filter = NodeFilter::new(ctx.instances.clone());
    let board = ctx.status.clone();
    watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(store)
        .filter_map(move |event| {
            let out = match event {
                Ok(e) => filter.pass(e).map(Ok),
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        })
        .inspect_ok(move |_| board.touch_all())
}

impl Operator {
    /// Runs until `stop`; reconcilers run only while this replica leads.
    pub async fn run(self, stop: CancellationToken) {
        // One recorder for the process: its cache is what aggregates repeated events.
        let recorder = crate::controller::recorder(&self);
        let Some(l) = self.lease.clone() else {
            // A single replica: one term, ended only by `stop`.
            self.run_controllers(stop, &recorder).await;
            return;
        };
        let (tx, rx) = watch::channel(false);
        let campaign = CancellationToken::new();
        let elector = Elector::new(
            self.client.clone(),
            &l.namespace,
            &l.name,
            &self.identity,
            l.timing,
        );
        let elector = tokio::spawn(elector.run(tx, campaign.clone()));
        self.lead_while_elected(rx, &stop, &recorder).await;
        // The controllers are gone: only now hand the Lease back.
        campaign.cancel();
        let _ = elector.await;
    }

    /// Runs the controllers each time this replica becomes leader, until `stop`.
    async fn lead_while_elected(
        &self,
        mut rx: watch::Receiver<bool>,
        stop: &CancellationToken,
        recorder: &Recorder,
    ) {
        loop {
            while !*rx.borrow_and_update() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
                }
            }
            // The term: ends on `stop` or when the elector reports leadership lost.
            let term = stop.child_token();
            let mut lost = rx.clone();
            let t = term.clone();
            let watchdog = tokio::spawn(async move {
                while lost.changed().await.is_ok() {
                    if !*lost.borrow() {
                        break;
                    }
                }
                t.cancel();
            });
            tracing::info!(identity = %self.identity, "leading: starting controllers");
            self.run_controllers(term, recorder).await;
            watchdog.abort();
            if stop.is_cancelled() {
                return;
            }
            tracing::warn!("leadership lost: controllers stopped");
        }
    }

    /// Runs both controllers and GC for one term. When `term` ends they are dropped where they
    /// stand, in-flight reconciles included (each step is crash-safe), and the cloud is fenced
    /// for everything they spawned.
    async fn run_controllers(&self, term: CancellationToken, recorder: &Recorder) {
        self.metrics.leader.set(1);
        // Metered inside the gate: fenced calls never reached the cloud, so they do not count.
        let cloud: Arc<dyn CloudApi> = Arc::new(Gate::new(
            Arc::new(Metered::new(self.cloud.clone(), self.metrics.clone())),
            term.clone(),
        ));
        let cfg = Config::default().concurrency(self.settings.concurrency);
        let hostnics: Api<HostNic> = Api::all(self.client.clone());
        let (hn_store, hn_writer) = reflector::store();
        let (node_store, node_writer) = reflector::store();
        let (pool_store, pool_writer) = reflector::store();
        let stores = status::Stores {
            pools: pool_store.clone(),
            nodes: node_store,
            hostnics: hn_store.clone(),
        };
        let (wake, woken) = handoff::Wake::channel();
        let ctx = Arc::new(Context::new(
            self,
            cloud,
            stores.clone(),
            recorder.clone(),
            wake,
        ));
        // Each watch event drives its controller and marks the pools whose status it changes.
        let board = ctx.status.clone();
        // Every HostNic change also wakes its pool, read off this one watch once its
        // reflector has stored it (see `triggers::hostnic_trigger`).
        let (nic_tx, mut nic_rx) = tokio::sync::mpsc::unbounded_channel();
        let (pools, nics, early) = (pool_store.clone(), hn_store.clone(), ctx.clone());
        let hn_events = watcher(hostnics, watcher::Config::default())
            .default_backoff()
            .reflect(hn_writer)
            .inspect_ok(move |e| {
                board.on_hostnic(e);
                if let Some(t) = triggers::hostnic_trigger(e, &pools, &nics, early.attach_batch) {
                    early.early_refills.note(&t);
                    // Fails only once the pool controller is gone, at the end of the term.
                    let _ = nic_tx.send((t.pool.clone(), t.urgency()));
                }
            })
            .applied_objects();
        // A handed-off cloud call's answer wakes its HostNic.
        let hn_ctrl = Controller::for_stream(hn_events, hn_store.clone())
            .with_config(cfg.clone())
            .reconcile_on(woken);
        let board = ctx.status.clone();
        let pool_events = watcher(
            Api::<NicPool>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(pool_writer)
        .inspect_ok(move |e| board.on_pool(e))
        .applied_objects()
        // A pool's own reconcile acts on its spec and deletion (generation), the finalizer it
        // adds (which kube's finalizer helper awaits as a change) and an ADD waiting on a node
        // (the agent's annotation), never on its status.
        // The status writer publishes counts after every claim: were its writes triggers, each
        // would hold the pool's pass back by another quiet window.
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(triggers::waiting_adds),
            PredicateConfig::default(),
        );
        // HostNic changes wake their pool (above), and Node changes a pool uses (labels,
        // schedulability, readiness, instance id, deletion) wake every pool; kubelet
        // heartbeats do not. They are gathered per pool (see `args::POOL_TRIGGERS`).
        let nic_triggers = futures::stream::poll_fn(move |cx| nic_rx.poll_recv(cx));
        let pools = pool_store.clone();
        let node_pool_triggers = node_triggers(&self.client, &ctx, node_writer)
            .filter_map(|n| std::future::ready(logged(n, "Node")))
            .flat_map(move |_| {
                futures::stream::iter(
                    pools
                        .state()
                        .iter()
                        .map(|p| (ObjectRef::from_obj(p.as_ref()), Urgency::Gather))
                        .collect::<Vec<_>>(),
                )
            });
        let triggers = coalesce(
            futures::stream::select(nic_triggers, node_pool_triggers),
            self.settings.pool_triggers,
        );
        let pool_ctrl = Controller::for_stream(pool_events, pool_store.clone())
            .with_config(cfg)
            .reconcile_on(triggers);
        let hn = hn_ctrl
            .run(hostnic::reconcile, hostnic::error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(error) = r {
                    tracing::debug!(%error, "hostnic controller event");
                }
            });
        let np = pool_ctrl
            .run(nicpool::reconcile, nicpool::error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(error) = r {
                    tracing::debug!(%error, "nicpool controller event");
                }
            });
        let gc = Collector::default().run(ctx.clone(), term.clone());
        let writer = status::run(ctx.clone(), stores);
        tokio::select! {
            // Dropping the controller streams aborts their reconcile tasks (kube-runtime holds
            // each in an abort-on-drop handle); the gate already refuses their cloud calls.
            biased;
            () = term.cancelled() => {}
            _ = futures::future::join4(hn, np, gc, writer) => {}
        }
        self.metrics.leader.set(0);
    }
}
