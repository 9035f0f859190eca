//! The NicPool status writer, the only one: it publishes counts and `Ready` (and the per-node
//! count metrics) a fraction of a second after a HostNic, Node or NicPool change, from the reflectors' stores (no LIST, no
//! cloud call), joined with what the last full reconcile owns, which the reconcile hands over
//! on the [`Board`] instead of writing it. One writer, so the two never overwrite each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hostnic_crds::{HostNic, NicPool};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::Notify;

use super::Context;
use crate::error::{Error, Result};
use crate::metrics::PoolLabels;
use crate::node;
use crate::plan::conditions;
use crate::plan::status::{NodeFacts, Owned, compose, fresh};

/// The field manager of the pool status the operator applies (also its events' reporter).
pub const FIELD_MANAGER: &str = "hostnic-operator";

/// How long a burst of changes is gathered before the pools it touched are written: at most
/// one write per pool per this (plus the write itself), however many HostNics flip at once.
pub const COALESCE: Duration = Duration::from_millis(100);

/// Pause after a round whose write failed for another reason than a stale read, so a refusing
/// API server is not asked ten times a second.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Which pools need a new status, and what the reconcile decided for each.
#[derive(Debug, Default)]
pub struct Board {
    owned: Mutex<HashMap<String, Owned>>,
    dirty: Mutex<BTreeSet<String>>,
    all: AtomicBool,
    wake: Notify,
    /// The generation each pool was last announced Ready for (one PoolReady per spec, not one
    /// per refill after a claim).
    announced: Mutex<HashMap<String, Option<i64>>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Board {
    /// `pool` needs its status recomputed.
    pub fn touch(&self, pool: &str) {
        locked(&self.dirty).insert(pool.to_string());
        self.wake.notify_one();
    }

    /// Every pool needs its status recomputed (a Node changed, a store relisted).
    pub fn touch_all(&self) {
        self.all.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The reconcile's part of `pool`'s status.
    pub fn report(&self, pool: &str, owned: Owned) {
        locked(&self.owned).insert(pool.to_string(), owned);
        self.touch(pool);
    }

    fn owned(&self, pool: &str) -> Option<Owned> {
        locked(&self.owned).get(pool).cloned()
    }

    /// Marks the pools a HostNic event touches. Relist events count once the store has swapped
    /// in the new list (`InitDone`), not before.
    pub fn on_hostnic(&self, event: &watcher::Event<HostNic>) {
        match event {
            watcher::Event::Apply(h) | watcher::Event::Delete(h) => self.touch(&h.spec.pool),
            watcher::Event::InitDone => self.touch_all(),
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// Marks the pool a NicPool event is about (its spec or status changed, or it is gone).
    pub fn on_pool(&self, event: &watcher::Event<NicPool>) {
        match event {
            watcher::Event::Apply(p) => self.touch(&p.name_any()),
            watcher::Event::Delete(p) => {
                let name = p.name_any();
                locked(&self.owned).remove(&name);
                locked(&self.announced).remove(&name);
            }
            watcher::Event::InitDone => self.touch_all(),
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    fn take(&self, pools: &Store<NicPool>) -> BTreeSet<String> {
        let mut out = std::mem::take(&mut *locked(&self.dirty));
        if self.all.swap(false, Ordering::SeqCst) {
            out.extend(pools.state().iter().map(|p| p.name_any()));
        }
        out
    }

    /// Whether Ready=True for `generation` of `pool` is news.
    fn first_ready(&self, pool: &str, generation: Option<i64>) -> bool {
        locked(&self.announced).insert(pool.to_string(), generation) != Some(generation)
    }
}

/// The stores the writer reads.
#[derive(Clone)]
pub struct Stores {
    /// NicPools.
    pub pools: Store<NicPool>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// HostNics.
    pub hostnics: Store<HostNic>,
}

/// Writes the status of every pool the [`Board`] marks, until dropped.
pub async fn run(ctx: std::sync::Arc<Context>, stores: Stores) {
    // Counts from a store that has not listed yet would be zeros: publish none before.
    let ready = futures::future::join3(
        super::wait_synced(&stores.pools),
        super::wait_synced(&stores.nodes),
        super::wait_synced(&stores.hostnics),
    )
    .await;
    if !matches!(ready, (Ok(()), Ok(()), Ok(()))) {
        return;
    }
    ctx.status.touch_all();
    loop {
        ctx.status.wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        let mut failed = false;
        for name in ctx.status.take(&stores.pools) {
            match publish(&ctx, &stores, &name).await {
                Ok(()) => {}
                // Written against a pool the store has not caught up with (our last write, a
                // reconcile's finalizer): its watch event marks the pool again.
                Err(e) if e.is_conflict() => {
                    tracing::debug!(pool = %name, "status write raced a newer pool; retrying");
                }
                Err(error) => {
                    tracing::warn!(pool = %name, %error, "could not write NicPool status");
                    ctx.status.touch(&name);
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// Recomputes one pool's status and writes it if it changed, conditioned on the pool's
/// resourceVersion in the store: a write never rests on a stale read.
async fn publish(ctx: &Context, stores: &Stores, name: &str) -> Result<()> {
    let Some(pool) = stores.pools.get(&ObjectRef::new(name)) else {
        return Ok(());
    };
    let spec = &pool.spec;
    let nodes: Vec<NodeFacts> = stores
        .nodes
        .state()
        .iter()
        .map(|n| NodeFacts {
            name: n.name_any(),
            selected: node::selected(&spec.node_selector, n),
            can_grow: node::can_grow(n),
        })
        .collect();
    let nics: Vec<_> = stores
        .hostnics
        .state()
        .iter()
        .filter(|h| h.spec.pool == name)
        .map(|h| (h.spec.node.clone(), super::nicpool::nic_view(h)))
        .collect();
    let counts = fresh(spec, &nodes, &nics);
    for (_, s) in &counts.nodes {
        for (state, v) in [
            ("available", s.available),
            ("bound", s.bound),
            ("in_progress", s.in_progress),
            ("failed", s.failed),
        ] {
            let labels = PoolLabels {
                pool: name.to_string(),
                node: s.node.clone(),
                state,
            };
            ctx.metrics
                .pool_nics
                .get_or_create(&labels)
                .set(i64::from(v));
        }
    }
    let current = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let next = compose(
        &current,
        generation,
        &counts,
        ctx.status.owned(name).as_ref(),
        Timestamp::now(),
    );
    if pool.metadata.deletion_timestamp.is_some() {
        // No alert on a pool on its way out (its cleanup forgets them too).
        ctx.metrics.forget_pool(name);
    } else {
        ctx.metrics.pool_conditions(
            name,
            crate::metrics::POOL_CONDITIONS
                .iter()
                .map(|c| (*c, conditions::is_true(&next.conditions, c))),
        );
    }
    if current == next && pool.status.is_some() {
        return Ok(());
    }
    // Server-side apply under one field manager: a field the operator stops sending (an
    // emptied list, a cleared value) is removed, where a merge patch kept what it omitted. The
    // resourceVersion makes it optimistic: counts composed from a stale pool are refused.
    let patch = serde_json::json!({
        "apiVersion": NicPool::api_version(&()),
        "kind": NicPool::kind(&()),
        "metadata": {"name": name, "resourceVersion": pool.resource_version()},
        "status": next,
    });
    Api::<NicPool>::all(ctx.client.clone())
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube("write NicPool status"))?;
    if conditions::is_true(&next.conditions, "Ready") && ctx.status.first_ready(name, generation) {
        let note = format!("every node has {} free NICs", spec.size);
        ctx.event(
            pool.as_ref(),
            EventType::Normal,
            "PoolReady",
            note,
            "Reconcile",
        )
        .await;
    }
    Ok(())
}
