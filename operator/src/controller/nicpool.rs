//! The NicPool controller: keeps `size` free NICs on every selected node by creating and
//! deleting HostNic objects (the HostNic controller does the cloud work), publishes per-node
//! counts, gateways and conditions, and applies the reclaim policy when the pool is deleted.
//! It watches Nodes (selectors, cordons, deletions) and the pool's HostNics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hostnic_crds::{
    HostNic, HostNicPhase, HostNicSpec, NIC_FINALIZER, NODE_LABEL, NicPool, NicPoolStatus, NicRole,
    POOL_FINALIZER, POOL_LABEL, ROLE_LABEL, ReclaimPolicy, VXNET_LABEL, names,
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;

use super::create_batch::BatchTag;
use super::{Context, RETAIN_ANNOTATION, wait_synced};
use crate::cloud::{Instance, Priority};
use crate::error::{Error, Result};
use crate::node;
use crate::plan::conditions;
use crate::plan::pool::{
    Blocker, Clock, InstanceView, NicView, NodeDecision, NodeView, VxnetBudget, decide_node,
    holds_slot, joins_detach_round, needs_instance, summarize, validate,
};
use crate::plan::status::Owned;
use crate::sync::lock;

/// Controller name in metrics and logs.
pub const NAME: &str = "nicpool";

/// How often a pool blocked by the cloud (exhausted vxnet, full VM) looks again.
const BLOCKED_RECHECK: Duration = Duration::from_secs(60);

/// Reconciles one NicPool: the finalizer is the only top-level action.
#[tracing::instrument(skip_all, fields(pool = %pool.name_any()))]
pub async fn reconcile(pool: Arc<NicPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(NAME);
    let api: Api<NicPool> = Api::all(ctx.client.clone());
    let obj = pool.clone();
    super::with_backoff(NAME, obj.as_ref(), &ctx, async {
        finalizer(&api, POOL_FINALIZER, pool, |event| async {
            match event {
                Event::Apply(pool) => apply(&pool, &ctx).await,
                Event::Cleanup(pool) => cleanup(&pool, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

/// The error policy of this controller.
pub fn error_policy(pool: Arc<NicPool>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy(NAME, pool.as_ref(), error, &ctx)
}

/// A HostNic as the planner sees it.
pub fn nic_view(h: &HostNic) -> NicView {
    let s = h.status.clone().unwrap_or_default();
    let link_home = crate::plan::nic::link_home(&s);
    NicView {
        name: h.name_any(),
        phase: s.phase,
        role: h.spec.role,
        vxnet: h.spec.vxnet.clone(),
        nic_id: s.nic_id,
        ip: s.private_ip,
        deleting: h.metadata.deletion_timestamp.is_some(),
        refused: conditions::is_true(&s.conditions, super::hostnic::REFUSED),
        link_home,
    }
}

fn phase(h: &HostNic) -> HostNicPhase {
    h.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// The reference that makes `pool` the controller of its HostNics: `kubectl get` and tools
/// show the pool they belong to, and the cluster's garbage collector removes any a pool's
/// own cleanup left behind. It does not block the pool's deletion: the pool's finalizer
/// already waits for its HostNics, and blocking would need update on `nicpools/finalizers`
/// where the OwnerReferencesPermissionEnforcement admission plugin is on.
fn owner_ref(pool: &NicPool) -> Option<OwnerReference> {
    let mut r = pool.controller_owner_ref(&())?;
    r.block_owner_deletion = None;
    Some(r)
}

/// Whether `h` names `pool` as its controller (the pool's uid: a pool deleted and made again
/// under the same name is another owner).
fn owned_by(h: &HostNic, pool: &NicPool) -> bool {
    h.owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == pool.metadata.uid.as_ref())
}

/// A HostNic object for `node`, named `<pool>-<node>-<5 random>` (CONTRACT.md), owned by
/// `pool`, member of create batch `batch`.
fn new_hostnic(
    pool: &NicPool,
    node: &str,
    vxnet: &str,
    role: NicRole,
    batch: &BatchTag,
) -> HostNic {
    let pool_name = &pool.name_any();
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(5)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    let name = names::object_name(&format!("{pool_name}-{node}"), &suffix);
    let mut h = HostNic::new(
        &name,
        HostNicSpec {
            pool: pool_name.to_string(),
            node: node.to_string(),
            vxnet: vxnet.to_string(),
            role,
        },
    );
    let role_word = match role {
        NicRole::Pod => "Pod",
        NicRole::Gateway => "Gateway",
    };
    h.metadata.labels = Some(BTreeMap::from([
        (NODE_LABEL.to_string(), names::label_value(node)),
        (POOL_LABEL.to_string(), names::label_value(pool_name)),
        (VXNET_LABEL.to_string(), vxnet.to_string()),
        (ROLE_LABEL.to_string(), role_word.to_string()),
    ]));
    // Created with its finalizer, so no cloud call can ever happen for an object without one.
    h.metadata.finalizers = Some(vec![NIC_FINALIZER.to_string()]);
    h.metadata.owner_references = owner_ref(pool).map(|r| vec![r]);
    // The batch is the intent of its CreateNics, durable before any cloud call.
    batch.mark(&mut h);
    h
}

/// Makes `pool` the controller of those of `mine` that do not name it (made by an operator
/// before pools owned their HostNics, or the pool made again under its name). Other owners'
/// references are kept.
async fn adopt(api: &Api<HostNic>, pool: &NicPool, mine: &[&HostNic]) -> Result<()> {
    let Some(ours) = owner_ref(pool) else {
        return Ok(());
    };
    for h in mine
        .iter()
        .filter(|h| h.metadata.deletion_timestamp.is_none() && !owned_by(h, pool))
    {
        let mut refs: Vec<OwnerReference> = h
            .owner_references()
            .iter()
            .filter(|r| r.controller != Some(true))
            .cloned()
            .collect();
        refs.push(ours.clone());
        let patch = serde_json::json!({"metadata": {"ownerReferences": refs}});
        match api
            .patch(
                &h.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube("adopt a HostNic of the pool")(e)),
        }
    }
    Ok(())
}

async fn apply(pool: &NicPool, ctx: &Context) -> Result<Action> {
    let name = pool.name_any();
    let spec = &pool.spec;
    let settings = &ctx.settings;
    let now = Timestamp::now();
    let hostnics: Api<HostNic> = Api::all(ctx.client.clone());

    // Observe: the reflectors, not a LIST of every Node and HostNic per pass (500 Nodes of
    // tens of KB, on every HostNic change); the pass's own writes the HostNic store does not
    // show yet are laid over it.
    let all_nics = synced_hostnics(ctx).await?;
    let nodes = ctx.nodes.state();
    let mine = of_pool(&all_nics, &name);
    adopt(&hostnics, pool, &mine).await?;
    let prio = if mine.iter().any(|h| phase(h) == HostNicPhase::Available) {
        Priority::Refill
    } else {
        Priority::Urgent
    };
    let vxnets = ctx.facts.vxnets(&spec.vxnets, prio).await?;
    let known: HashSet<String> = vxnets.iter().map(|v| v.id.clone()).collect();
    if let Err(why) = validate(spec, &known) {
        let (_, conds) = summarize(spec, &[], Some(&why));
        let was_invalid = pool
            .status
            .as_ref()
            .and_then(|s| conditions::reason(&s.conditions, "Degraded"))
            == Some("InvalidSpec");
        let owned = Owned::new(pool.metadata.generation, true, conds, BTreeMap::new());
        ctx.status.report(&name, owned);
        if !was_invalid {
            ctx.event(pool, EventType::Warning, "InvalidSpec", why, "Validate")
                .await;
        }
        return Ok(Action::requeue(settings.resync));
    }

    let by_name: HashMap<String, &Node> =
        nodes.iter().map(|n| (n.name_any(), n.as_ref())).collect();
    let mut node_names: Vec<String> = nodes
        .iter()
        .filter(|n| node::selected(&spec.node_selector, n))
        .map(|n| n.name_any())
        .collect();
    node_names.extend(mine.iter().map(|h| h.spec.node.clone()));
    node_names.sort();
    node_names.dedup();
    // Shared by every node's view: 500 copies of 1500 ids would be tens of MB per pass.
    let pod_nic_ids: Arc<HashSet<String>> = Arc::new(
        all_nics
            .iter()
            .filter(|h| h.spec.role == NicRole::Pod)
            .filter_map(|h| h.status.as_ref().and_then(|s| s.nic_id.clone()))
            .collect(),
    );
    let hostnic_ids: HashSet<&str> = all_nics
        .iter()
        .filter_map(|h| h.status.as_ref().and_then(|s| s.nic_id.as_deref()))
        .collect();
    // Nodes whose refill a claim made due at once: this pass is early for them.
    let early = ctx.early_refills.take(&name);
    let clock_of = |node: &str| Clock {
        now,
        shrink_delay: settings.shrink_delay,
        early_batch: early.contains(node).then_some(ctx.attach_batch),
    };
    // The node as the planner sees it before its VM is described.
    let view_of = |node_name: &String| -> NodeView {
        let node = by_name.get(node_name);
        let other_pools_slots = all_nics
            .iter()
            .filter(|h| h.spec.node == *node_name && h.spec.pool != name && holds_slot(phase(h)))
            .count() as u32;
        NodeView {
            name: node_name.clone(),
            exists: node.is_some(),
            selected: node.is_some_and(|n| node::selected(&spec.node_selector, n)),
            can_grow: node.is_some_and(|n| node::can_grow(n)),
            instance_id: node.map(|n| ctx.instances.instance_of(n)),
            instance: None,
            foreign_nics: 0,
            other_pools_slots,
            pod_nic_ids: pod_nic_ids.clone(),
            pod_waiting: pool
                .annotations()
                .contains_key(&hostnic_crds::waiting_annotation(node_name)),
        }
    };
    // What DescribeInstances said of the node's VM, if it was described.
    let describe = |view: &mut NodeView, instances: &[Instance]| {
        let Some(i) = view
            .instance_id
            .as_ref()
            .and_then(|id| instances.iter().find(|i| &i.id == id))
        else {
            return;
        };
        view.foreign_nics = i
            .nics
            .iter()
            .filter(|n| !n.primary && !hostnic_ids.contains(n.nic_id.as_str()))
            .count() as u32;
        view.instance = Some(InstanceView {
            nics: i.nics.clone(),
            running: i.running,
        });
    };
    let surplus_since = |node_name: &String| {
        lock(&ctx.surplus)
            .get(&(name.clone(), node_name.clone()))
            .copied()
    };
    let planned: Vec<(NodeView, Vec<NicView>, Option<Timestamp>)> = node_names
        .iter()
        .map(|n| {
            let nics = mine
                .iter()
                .filter(|h| h.spec.node == *n)
                .map(|h| nic_view(h))
                .collect();
            (view_of(n), nics, surplus_since(n))
        })
        .collect();

    // Decide.
    let mut budget = VxnetBudget::new(vxnets.iter().map(|v| (v.id.clone(), v.available_ips)));
    if ctx.facts.quota_exceeded() {
        budget = budget.quota_exceeded();
    }
    // Only the VMs of nodes whose decision needs them are described: a converged pool's
    // resync makes no DescribeInstances (500 idle nodes cost 5 pages every cache period).
    let instance_ids: Vec<String> = planned
        .iter()
        .filter(|(view, nics, since)| {
            needs_instance(spec, view, nics, &budget, *since, clock_of(&view.name))
        })
        .filter_map(|(view, ..)| view.instance_id.clone())
        .collect();
    let instances = ctx.facts.instances(&instance_ids, prio).await?;
    let mut decisions: Vec<(bool, NodeDecision)> = Vec::new();
    for (mut view, nics, since) in planned {
        describe(&mut view, &instances);
        let d = decide_node(spec, &view, &nics, &mut budget, since, clock_of(&view.name));
        {
            let key = (name.clone(), view.name.clone());
            let mut surplus = lock(&ctx.surplus);
            match d.surplus_since {
                Some(t) => surplus.insert(key, t),
                None => surplus.remove(&key),
            };
        }
        if d.blockers.contains(&Blocker::InstanceStopped)
            && let Some(id) = &view.instance_id
        {
            // Read it again at the next recheck, not after the cache's minutes: it may start.
            ctx.facts.forget_instance(id);
        }
        decisions.push((view.selected, d));
    }

    // Act. What a pass creates (deletes) on a node is one round: attached (detached and
    // deleted) in one call per batch limit, planned before the first member can ask. What it
    // creates in a vxnet, across nodes, is created in batches: one CreateNics each.
    let new_vxnets: Vec<&str> = decisions
        .iter()
        .flat_map(|(_, d)| d.create.iter().map(|n| n.vxnet.as_str()))
        .collect();
    // Its members are all created (or the pass failed) when it drops: then they may create.
    let planned = ctx
        .create_batches
        .plan(&new_vxnets, settings.max_create_batch);
    let mut batches = planned.tags.iter();
    for (_, d) in &decisions {
        let node_name = &d.status.node;
        let instance = d.status.instance.as_deref();
        // One tag per NIC to create, in the same order; the node's NICs are one round, planned
        // before the first of them can ask.
        let round: Vec<HostNic> = d
            .create
            .iter()
            .zip(batches.by_ref())
            .map(|(new, batch)| new_hostnic(pool, node_name, &new.vxnet, new.role, batch))
            .collect();
        if let Some(i) = instance {
            ctx.batch.plan_attach(i, round.iter().map(|h| h.name_any()));
        }
        // Side by side: the round's create batch waits for all of them, and its attach round
        // for the batch (one after the other, a round of 5 took 35 ms).
        let post = PostParams::default();
        let created =
            futures::future::join_all(round.iter().map(|h| hostnics.create(&post, h))).await;
        let mut failed = None;
        for ((h, new), result) in round.iter().zip(&d.create).zip(created) {
            match result {
                Ok(created) => {
                    ctx.own_writes.created(created);
                    ctx.facts.consume(&new.vxnet);
                }
                Err(e) => {
                    ctx.batch.forget(&h.name_any());
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(Error::kube("create HostNic")(e));
        }
        if let Some(i) = instance {
            let node_exists = by_name.contains_key(node_name);
            let round = mine
                .iter()
                .filter(|h| d.delete.contains(&h.name_any()))
                .filter(|h| joins_detach_round(&nic_view(h), node_exists))
                .map(|h| h.name_any());
            ctx.batch.plan_detach(i, round);
        }
        for victim in &d.delete {
            delete_hostnic(&hostnics, victim).await?;
            ctx.own_writes.deleted(victim);
        }
        if !d.create.is_empty() || !d.delete.is_empty() {
            tracing::info!(node = %node_name, create = d.create.len(), delete = d.delete.len(), "resizing node pool");
        }
    }
    drop(planned);
    let total_created: usize = decisions.iter().map(|(_, d)| d.create.len()).sum();
    let total_deleted: usize = decisions.iter().map(|(_, d)| d.delete.len()).sum();
    if total_created > 0 {
        ctx.event(
            pool,
            EventType::Normal,
            "ScalingUp",
            format!("creating {total_created} NICs"),
            "Scale",
        )
        .await;
    }
    if total_deleted > 0 {
        ctx.event(
            pool,
            EventType::Normal,
            "ScalingDown",
            format!("removing {total_deleted} NICs"),
            "Scale",
        )
        .await;
    }

    // Status: the writer publishes it with fresh counts (see `super::status`).
    let (_, conds) = summarize(spec, &decisions, None);
    let per_node = decisions
        .iter()
        .filter(|(selected, _)| *selected)
        .map(|(_, d)| {
            let s = &d.status;
            (s.node.clone(), (s.instance.clone(), s.gateways.clone()))
        })
        .collect();
    let before = pool.status.clone().unwrap_or_default();
    let owned = Owned::new(pool.metadata.generation, false, conds.clone(), per_node);
    ctx.status.report(&name, owned);
    announce_transitions(ctx, pool, &before, &conds).await;
    super::taint::release_warm_nodes(ctx, pool, &nodes, &decisions).await?;

    let blocked = decisions.iter().any(|(_, d)| {
        d.blockers
            .iter()
            .any(|b| b.degrades() && *b != Blocker::MaxPerNode)
    });
    let mut next = settings.resync;
    if blocked {
        next = next.min(BLOCKED_RECHECK);
    }
    if let Some(r) = decisions.iter().filter_map(|(_, d)| d.recheck_after).min() {
        next = next.min(r);
    }
    if decisions.iter().any(|(_, d)| d.deferred > 0) {
        // What this early pass left waits no longer than gathered triggers would have.
        next = next.min(settings.pool_triggers.quiet);
    }
    Ok(Action::requeue(next))
}

/// Every HostNic as the store shows it with the pool passes' own writes laid over it, once
/// both the HostNic and the Node store have their first listing.
async fn synced_hostnics(ctx: &Context) -> Result<Vec<Arc<HostNic>>> {
    wait_synced(&ctx.hostnics).await?;
    wait_synced(&ctx.nodes).await?;
    Ok(ctx.own_writes.overlay(ctx.hostnics.state()))
}

/// The HostNics of pool `name`.
fn of_pool<'a>(all: &'a [Arc<HostNic>], name: &str) -> Vec<&'a HostNic> {
    all.iter()
        .map(AsRef::as_ref)
        .filter(|h| h.spec.pool == name)
        .collect()
}

async fn delete_hostnic(api: &Api<HostNic>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube("delete HostNic")(e)),
    }
}

/// Events for the transitions a user cares about: the pool became degraded or healthy again
/// (PoolReady comes from the status writer, which owns `Ready`).
async fn announce_transitions(
    ctx: &Context,
    pool: &NicPool,
    before: &NicPoolStatus,
    conds: &[conditions::Cond],
) {
    for c in conds {
        let was = conditions::is_true(&before.conditions, c.type_);
        let reason_before = conditions::reason(&before.conditions, c.type_);
        let changed = was != c.status || reason_before != Some(c.reason);
        if !changed {
            continue;
        }
        match (c.type_, c.status) {
            ("Degraded", true) => {
                ctx.event(
                    pool,
                    EventType::Warning,
                    c.reason,
                    c.message.clone(),
                    "Reconcile",
                )
                .await;
            }
            ("Degraded", false) if was => {
                ctx.event(
                    pool,
                    EventType::Normal,
                    "Recovered",
                    "the pool is healthy again".into(),
                    "Reconcile",
                )
                .await;
            }
            _ => {}
        }
    }
}

/// Deletion: Delete removes every free NIC now and bound ones once released; Retain drops the
/// HostNic objects and keeps the cloud NICs.
async fn cleanup(pool: &NicPool, ctx: &Context) -> Result<Action> {
    let name = pool.name_any();
    let api: Api<HostNic> = Api::all(ctx.client.clone());
    // The stores, not two LISTs per poll: the cleanup polls for as long as pods hold NICs.
    let all_nics = synced_hostnics(ctx).await?;
    let mine = of_pool(&all_nics, &name);
    // Done only if the API server agrees: one LIST at the very end, should the store lag.
    if mine.is_empty()
        && api
            .list(
                &ListParams::default()
                    .labels(&format!("{POOL_LABEL}={}", names::label_value(&name))),
            )
            .await
            .map_err(Error::kube("list HostNics"))?
            .items
            .is_empty()
    {
        lock(&ctx.surplus).retain(|(p, _), _| p != &name);
        ctx.early_refills.take(&name);
        ctx.metrics.forget_pool(&name);
        return Ok(Action::await_change());
    }
    let live_nodes: HashSet<String> = ctx.nodes.state().iter().map(|n| n.name_any()).collect();
    if pool.spec.reclaim_policy == ReclaimPolicy::Delete {
        // Per node, the NICs deleted now are one detach round.
        let mut rounds: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for h in &mine {
            let instance = h.status.as_ref().and_then(|s| s.instance.as_deref());
            if let Some(i) = instance
                && h.metadata.deletion_timestamp.is_none()
                && joins_detach_round(&nic_view(h), live_nodes.contains(&h.spec.node))
            {
                rounds.entry(i).or_default().push(h.name_any());
            }
        }
        for (i, round) in rounds {
            ctx.batch.plan_detach(i, round);
        }
    }
    for h in &mine {
        if h.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pool.spec.reclaim_policy {
            ReclaimPolicy::Retain => {
                if h.annotations()
                    .get(RETAIN_ANNOTATION)
                    .is_none_or(|v| v != "true")
                {
                    let patch = serde_json::json!({"metadata": {"annotations": {RETAIN_ANNOTATION: "true"}}});
                    api.patch(
                        &h.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(Error::kube("annotate HostNic"))?;
                }
                delete_hostnic(&api, &h.name_any()).await?;
                ctx.own_writes.deleted(&h.name_any());
            }
            ReclaimPolicy::Delete => {
                // Bound NICs go once their pod releases them, or at once if their node is gone.
                if phase(h) != HostNicPhase::Bound || !live_nodes.contains(&h.spec.node) {
                    delete_hostnic(&api, &h.name_any()).await?;
                    ctx.own_writes.deleted(&h.name_any());
                }
            }
        }
    }
    Err(Error::Waiting("the pool's HostNics are being removed"))
}
