//! Which watch events wake the pools, and how urgently. Of a pool's own, its spec, finalizers
//! and waiting annotations (never its status). Every HostNic change, at once when it took a
//! node's last free NIC or left a whole attach batch missing. Of Nodes, only changes to what a
//! pool uses (labels for its selector, `spec.unschedulable`, the Ready status, the instance id
//! from `spec.providerID`, the annotation or the label, deletion). A kubelet's status heartbeat
//! (condition heartbeat times, allocatable, images, volumes) changes none of that and triggers
//! nothing, so an idle cluster costs no pool passes.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use hostnic_crds::{HostNic, HostNicPhase, NicPool};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::coalesce::Urgency;
use super::nicpool;
use crate::node::{self, InstanceSource};
use crate::plan::{self, pool::NicView};
use crate::sync::lock;

/// A digest of everything about a Node the pools read.
pub fn fingerprint(n: &Node, instances: &InstanceSource) -> u64 {
    let labels: &BTreeMap<String, String> = n.labels();
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let mut h = DefaultHasher::new();
    labels.hash(&mut h);
    node::can_grow(n).hash(&mut h);
    ready.hash(&mut h);
    instances.instance_of(n).hash(&mut h);
    n.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// What a HostNic change asks of its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTrigger {
    /// The pool to pass.
    pub pool: ObjectRef<NicPool>,
    /// The node whose refill is due at once, if the change made one so.
    pub due_on: Option<String>,
}

impl PoolTrigger {
    /// How the pool's pass is to be gathered.
    pub fn urgency(&self) -> Urgency {
        if self.due_on.is_some() {
            Urgency::Now
        } else {
            Urgency::Gather
        }
    }
}

/// The pool a HostNic watch event wakes, and whether at once. Read after the event is in
/// `hostnics` (the reflector's store), so it counts the node as the pool's pass will see it.
/// A claim or a failure (the changes that take a free NIC away) after which the node's refill
/// can gather nothing more ([`plan::pool::refill_is_due`]) makes it due now; every other
/// change is gathered.
pub fn hostnic_trigger(
    event: &watcher::Event<HostNic>,
    pools: &Store<NicPool>,
    hostnics: &Store<HostNic>,
    attach_batch: u32,
) -> Option<PoolTrigger> {
    let (h, changed) = match event {
        watcher::Event::Apply(h) => (h, true),
        watcher::Event::Delete(h) | watcher::Event::InitApply(h) => (h, false),
        watcher::Event::Init | watcher::Event::InitDone => return None,
    };
    let pool_ref = ObjectRef::<NicPool>::new(&h.spec.pool);
    let taken = changed
        && matches!(
            h.status.as_ref().map(|s| s.phase),
            Some(HostNicPhase::Bound | HostNicPhase::Failed)
        );
    let due = taken
        && pools.get(&pool_ref).is_some_and(|pool| {
            let on_node: Vec<NicView> = hostnics
                .state()
                .iter()
                .filter(|n| n.spec.pool == h.spec.pool && n.spec.node == h.spec.node)
                .map(|n| nicpool::nic_view(n))
                .collect();
            let waiting = pool
                .annotations()
                .contains_key(&hostnic_crds::waiting_annotation(&h.spec.node));
            plan::pool::refill_is_due(pool.spec.size, &on_node, waiting, attach_batch)
        });
    Some(PoolTrigger {
        pool: pool_ref,
        due_on: due.then(|| h.spec.node.clone()),
    })
}

/// The nodes, per pool, whose refill a claim made due at once ([`PoolTrigger::due_on`]): the
/// pool's next pass is early for them (`plan::pool::Clock::early_batch`).
#[derive(Debug, Default)]
pub struct EarlyRefills(Mutex<HashMap<String, HashSet<String>>>);

impl EarlyRefills {
    /// Notes what `trigger` made due.
    pub fn note(&self, trigger: &PoolTrigger) {
        if let Some(node) = &trigger.due_on {
            lock(&self.0)
                .entry(trigger.pool.name.clone())
                .or_default()
                .insert(node.clone());
        }
    }

    /// The nodes of `pool` noted since the last take (the pool's pass, or its deletion).
    pub fn take(&self, pool: &str) -> HashSet<String> {
        lock(&self.0).remove(pool).unwrap_or_default()
    }
}

/// A digest of a NicPool's waiting annotations (`hostnic_crds::waiting_annotation`), for the
/// predicate on the pool's own events: an ADD that starts or stops waiting changes what the
/// pool must do (a resting NIC is no supply for it), yet it is neither a spec change nor a
/// finalizer.
pub fn waiting_adds(p: &NicPool) -> Option<u64> {
    let mut h = DefaultHasher::new();
    p.annotations()
        .iter()
        .filter(|(k, _)| k.starts_with(hostnic_crds::WAITING_ANNOTATION_PREFIX))
        .for_each(|kv| kv.hash(&mut h));
    Some(h.finish())
}

/// Remembers each Node's last fingerprint and lets through only the events that change it.
#[derive(Debug)]
pub struct NodeFilter {
    instances: InstanceSource,
    seen: HashMap<String, u64>,
}

impl NodeFilter {
    /// A filter that has seen no Node yet.
    pub fn new(instances: InstanceSource) -> Self {
        Self {
            instances,
            seen: HashMap::new(),
        }
    }

    /// The Node to trigger the pools with, if this event changes anything they use. Deletions
    /// always do; a (re)list passes each Node that is new or changed while the watch was down.
    pub fn pass(&mut self, event: watcher::Event<Node>) -> Option<Node> {
        match event {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                let print = fingerprint(&n, &self.instances);
                let before = self.seen.insert(n.name_any(), print);
                (before != Some(print)).then_some(n)
            }
            watcher::Event::Delete(n) => {
                self.seen.remove(&n.name_any());
                Some(n)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn src() -> InstanceSource {
        InstanceSource {
            annotation: "node.beta.kubernetes.io/instance-id".into(),
            label: "hostnic.qingcloud.com/instance-id".into(),
        }
    }

    fn cond(type_: &str, status: &str, beat: i64) -> NodeCondition {
        let t = Time(jiff::Timestamp::from_second(beat).unwrap());
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            last_heartbeat_time: Some(t.clone()),
            last_transition_time: Some(t),
            reason: Some("KubeletReady".into()),
            message: Some("kubelet is posting ready status".into()),
        }
    }

    /// A Node as a kubelet keeps it, with its heartbeat at `beat`.
    fn kubelet_node(beat: i64) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("worker-1".into());
        n.metadata.resource_version = Some(beat.to_string());
        n.metadata.labels = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "worker-1".to_string(),
        )]));
        n.spec = Some(NodeSpec {
            provider_id: Some("qingcloud://i-abcdef12".into()),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            conditions: Some(vec![
                cond("MemoryPressure", "False", beat),
                cond("Ready", "True", beat),
            ]),
            allocatable: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(format!("{}Ki", 8_000_000 + beat % 1000)),
            )])),
            ..Default::default()
        });
        n
    }

    #[test]
    fn heartbeats_pass_nothing_changes_that_matter_pass() {
        let mut f = NodeFilter::new(src());
        assert!(f.pass(watcher::Event::InitApply(kubelet_node(0))).is_some());
        for beat in 1..100 {
            assert!(
                f.pass(watcher::Event::Apply(kubelet_node(beat))).is_none(),
                "heartbeat {beat} triggered the pools"
            );
        }
        let mut cordoned = kubelet_node(200);
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        assert!(f.pass(watcher::Event::Apply(cordoned)).is_some());
        assert!(
            f.pass(watcher::Event::Apply(kubelet_node(201))).is_some(),
            "uncordoned"
        );

        let mut not_ready = kubelet_node(202);
        not_ready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[1]
            .status = "Unknown".into();
        assert!(f.pass(watcher::Event::Apply(not_ready)).is_some());
        assert!(
            f.pass(watcher::Event::Apply(kubelet_node(203))).is_some(),
            "ready again"
        );

        let mut labelled = kubelet_node(204);
        labelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("pool".into(), "web".into());
        assert!(f.pass(watcher::Event::Apply(labelled.clone())).is_some());

        let mut moved = labelled.clone();
        moved.spec.as_mut().unwrap().provider_id = Some("qingcloud://i-00000002".into());
        assert!(
            f.pass(watcher::Event::Apply(moved.clone())).is_some(),
            "providerID"
        );

        let mut deleting = moved.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(9).unwrap()));
        assert!(f.pass(watcher::Event::Apply(deleting.clone())).is_some());
        assert!(f.pass(watcher::Event::Delete(deleting.clone())).is_some());
        assert!(
            f.pass(watcher::Event::InitApply(kubelet_node(300)))
                .is_some(),
            "a node seen again after its deletion is new"
        );
        assert!(f.pass(watcher::Event::Init).is_none());
        assert!(f.pass(watcher::Event::InitDone).is_none());
    }

    #[test]
    fn the_instance_annotation_matters_without_a_provider_id() {
        let mut f = NodeFilter::new(src());
        let mut n = kubelet_node(0);
        n.spec.as_mut().unwrap().provider_id = None;
        assert!(f.pass(watcher::Event::Apply(n.clone())).is_some());
        n.metadata.annotations = Some(BTreeMap::from([(
            "node.beta.kubernetes.io/instance-id".to_string(),
            "i-12345678".to_string(),
        )]));
        assert!(f.pass(watcher::Event::Apply(n.clone())).is_some());
        n.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("unrelated".into(), "x".into());
        assert!(f.pass(watcher::Event::Apply(n)).is_none());
    }

    #[test]
    fn only_waiting_annotations_change_a_pools_digest() {
        let mut p = NicPool::new("web", crate::plan::fixtures::pool_spec(&["vxnet-a"], 1));
        let idle = waiting_adds(&p);
        p.metadata.annotations = Some(BTreeMap::from([(
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "{}".to_string(),
        )]));
        assert_eq!(waiting_adds(&p), idle);
        let key = hostnic_crds::waiting_annotation("worker-1");
        let annotations = p.metadata.annotations.as_mut().unwrap();
        annotations.insert(key.clone(), "2026-12-03T18:00:00Z".into());
        let waiting = waiting_adds(&p);
        assert_ne!(waiting, idle);
        p.metadata.annotations.as_mut().unwrap().remove(&key);
        assert_eq!(waiting_adds(&p), idle);
    }
}
