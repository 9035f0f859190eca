//! What a NicPool does on each node: how many NICs to create (and in which vxnet), which
//! HostNics to delete, which gateway each vxnet uses, and the counts and conditions of its
//! status. Inputs are snapshots; the output is a list of intents the controller carries out.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hostnic_crds::{
    HostNicPhase, MAX_NICS_PER_INSTANCE, NicPoolSpec, NicRole, NodeGateway, NodePoolStatus,
};
use jiff::Timestamp;

use super::conditions::Cond;
use crate::cloud::InstanceNic;

/// A HostNic of the pool, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicView {
    /// HostNic name.
    pub name: String,
    /// Phase.
    pub phase: HostNicPhase,
    /// Pod or gateway NIC.
    pub role: NicRole,
    /// Vxnet.
    pub vxnet: String,
    /// Cloud NIC id once known.
    pub nic_id: Option<String>,
    /// Private IP once known.
    pub ip: Option<String>,
    /// Whether its deletion already started (deletionTimestamp set).
    pub deleting: bool,
    /// Whether its instance refused to take it (condition AttachRefused).
    pub refused: bool,
    /// Whether the agent proved its link on the node since its last claim
    /// ([`super::nic::link_home`]).
    pub link_home: bool,
}

/// The node's VM as the cloud last described it (cached for minutes: the operator's own NICs
/// are counted from HostNics, not from here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Every NIC attached, primary included.
    pub nics: Vec<InstanceNic>,
    /// Whether the VM is running (AttachNics needs that).
    pub running: bool,
}

/// A node, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Whether the Node object exists.
    pub exists: bool,
    /// Whether the pool's selector matches it.
    pub selected: bool,
    /// Schedulable and Ready.
    pub can_grow: bool,
    /// Resolved instance id.
    pub instance_id: Option<String>,
    /// The instance, when DescribeInstances found it.
    pub instance: Option<InstanceView>,
    /// Secondary NICs on the VM that no HostNic owns (someone else's), from the instance.
    pub foreign_nics: u32,
    /// NIC slots of the VM that other pools' HostNics hold or will hold.
    pub other_pools_slots: u32,
    /// NIC ids of every pod-role HostNic (all pools): those never serve as a gateway.
    pub pod_nic_ids: Arc<HashSet<String>>,
    /// An ADD on this node waits for one of the pool's NICs (the agent's annotation on the
    /// pool, `hostnic_crds::waiting_annotation`).
    pub pod_waiting: bool,
}

/// Free addresses per vxnet, shared by every node of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxnetBudget {
    free: BTreeMap<String, u32>,
    /// Why nothing more can be taken once the budget is spent.
    spent: Blocker,
}

impl Default for VxnetBudget {
    /// No vxnet, so nothing to take.
    fn default() -> Self {
        Self::new([])
    }
}

impl VxnetBudget {
    /// Budget from (vxnet, free addresses).
    pub fn new(free: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self {
            free: free.into_iter().collect(),
            spent: Blocker::VxnetExhausted,
        }
    }

    /// The account's NIC quota is used up: nothing can be created, whatever the vxnets have.
    pub fn quota_exceeded(self) -> Self {
        Self {
            free: BTreeMap::new(),
            spent: Blocker::QuotaExceeded,
        }
    }

    /// The vxnet with the most free addresses (ties: lowest id), taking one address from it.
    fn take_best(&mut self) -> Option<String> {
        let (id, _) = self
            .free
            .iter()
            .filter(|(_, n)| **n > 0)
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))?;
        let id = id.clone();
        self.take(&id).then_some(id)
    }

    /// Takes one address of `vxnet`.
    fn take(&mut self, vxnet: &str) -> bool {
        match self.free.get_mut(vxnet) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Why a node did not get all the NICs it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Blocker {
    /// Every vxnet of the pool is out of addresses.
    VxnetExhausted,
    /// The account's NIC quota is used up (CreateNics refused with a resource 2500).
    QuotaExceeded,
    /// The VM has no free NIC slot left.
    InstanceFull,
    /// The pool's maxPerNode is reached.
    MaxPerNode,
    /// The node's instance is unknown to the cloud.
    InstanceUnknown,
    /// The node's VM is not running.
    InstanceStopped,
    /// The node's VM refused a NIC for a reason about itself (AttachNics 1400/2100/5200).
    InstanceRefused,
    /// Cordoned or NotReady: not grown on purpose.
    NotSchedulable,
}

impl Blocker {
    /// Condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::VxnetExhausted => "VxnetExhausted",
            Self::QuotaExceeded => "QuotaExceeded",
            Self::InstanceFull => "InstanceFull",
            Self::MaxPerNode => "MaxPerNode",
            Self::InstanceUnknown => "InstanceUnknown",
            Self::InstanceStopped => "InstanceStopped",
            Self::InstanceRefused => "InstanceRefused",
            Self::NotSchedulable => "NodeNotSchedulable",
        }
    }

    /// Whether the pool is Degraded by it (a cordoned node is not a fault).
    pub fn degrades(self) -> bool {
        self != Self::NotSchedulable
    }
}

/// A HostNic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNic {
    /// Its vxnet.
    pub vxnet: String,
    /// Pod or gateway NIC.
    pub role: NicRole,
}

/// What the pool does on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeDecision {
    /// HostNics to create (gateways first).
    pub create: Vec<NewNic>,
    /// HostNics to delete, by name.
    pub delete: Vec<String>,
    /// Since when the node has had surplus free NICs (kept across passes for hysteresis).
    pub surplus_since: Option<Timestamp>,
    /// When to look again because of the shrink timer.
    pub recheck_after: Option<Duration>,
    /// Missing NICs an early pass left to the gathered pass after it ([`Clock::early_batch`]).
    pub deferred: u32,
    /// Counts and gateways for status.
    pub status: NodePoolStatus,
    /// What kept the node from getting everything it wants.
    pub blockers: Vec<Blocker>,
}

/// Shrink hysteresis settings, the clock, and the pass's timing.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Now.
    pub now: Timestamp,
    /// How long a surplus must last before it is deleted.
    pub shrink_delay: Duration,
    /// Set (to the attach batch) when the pass runs early for the node, for a claim there it
    /// did not wait for: if the node still has a free NIC it gets whole attach rounds only,
    /// since more claims may come to fill a partial one, and the pass after creates the rest.
    pub early_batch: Option<u32>,
}

/// Whether a HostNic in this phase holds (or is about to take) one of the VM's NIC slots.
pub fn holds_slot(p: HostNicPhase) -> bool {
    !matches!(p, HostNicPhase::Failed | HostNicPhase::Deleting)
}

/// Counts of a node's pod NICs by phase (a NIC being deleted is in progress, whatever its phase).
pub fn counts(nics: &[&NicView]) -> NodePoolStatus {
    let mut s = NodePoolStatus::default();
    for n in nics.iter().filter(|n| n.role == NicRole::Pod) {
        match n.phase {
            _ if n.deleting => s.in_progress += 1,
            HostNicPhase::Available => s.available += 1,
            HostNicPhase::Bound => s.bound += 1,
            HostNicPhase::Failed => s.failed += 1,
            _ => s.in_progress += 1,
        }
    }
    s
}

/// A node's pod NICs that serve its pool's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Supply {
    /// Free now.
    available: u32,
    /// On their way (being created or attached).
    incoming: u32,
    /// Resting in quarantine. They come back, so a pod restart (one release, one claim) costs
    /// no cloud call. Unless a pod waits now: the quarantine (minutes) is far longer than an
    /// ADD may wait, so it gets a new NIC and the resting ones go to the surplus.
    resting: u32,
}

/// A node's pod NICs that are not being deleted and have not failed.
fn serving_pods(nics: &[NicView]) -> Vec<&NicView> {
    nics.iter()
        .filter(|n| !n.deleting && n.role == NicRole::Pod && n.phase != HostNicPhase::Failed)
        .collect()
}

impl Supply {
    /// Of `pods`, as [`serving_pods`] gives them.
    fn of(pods: &[&NicView], pod_waiting: bool) -> Self {
        let count = |f: &dyn Fn(&NicView) -> bool| pods.iter().filter(|n| f(n)).count() as u32;
        Self {
            available: count(&|n| n.phase == HostNicPhase::Available),
            incoming: count(&|n| n.phase.is_incoming()),
            resting: count(&|n| n.phase == HostNicPhase::Released && !pod_waiting),
        }
    }

    fn total(self) -> u32 {
        self.available + self.incoming + self.resting
    }
}

/// Whether a node's refill gains nothing by waiting for more claims to join its round: the
/// node has no free NIC left (no claim can land there before the refill does), or it lacks a
/// whole attach batch (later claims need a round of their own anyway). `nics` are the pool's
/// HostNics on the node. A claim read while the pass for earlier ones is still creating their
/// NICs counts those missing too; the early pass it brings creates whole rounds only
/// ([`Clock::early_batch`]), so it adds no partial round.
pub fn refill_is_due(size: u32, nics: &[NicView], pod_waiting: bool, attach_batch: u32) -> bool {
    let supply = Supply::of(&serving_pods(nics), pod_waiting);
    let missing = size.saturating_sub(supply.total());
    missing > 0 && (supply.available == 0 || missing >= attach_batch)
}

/// Decides one node of a pool. `nics` are the pool's HostNics on this node.
pub fn decide_node(
    spec: &NicPoolSpec,
    node: &NodeView,
    nics: &[NicView],
    budget: &mut VxnetBudget,
    surplus_since: Option<Timestamp>,
    clock: Clock,
) -> NodeDecision {
    let live: Vec<&NicView> = nics.iter().filter(|n| !n.deleting).collect();
    let mut d = NodeDecision {
        status: NodePoolStatus {
            node: node.name.clone(),
            instance: node.instance_id.clone(),
            ..counts(&nics.iter().collect::<Vec<_>>())
        },
        ..Default::default()
    };
    d.status.node = node.name.clone();
    if !node.exists {
        // The node is gone: every NIC goes, even bound ones (their pods are gone too).
        d.delete = live.iter().map(|n| n.name.clone()).collect();
        return d;
    }
    if !node.selected {
        d.delete = live
            .iter()
            .filter(|n| n.phase != HostNicPhase::Bound)
            .map(|n| n.name.clone())
            .collect();
        return d;
    }
    // Failed NICs are replaced: delete them, and count only the others below.
    d.delete.extend(
        live.iter()
            .filter(|n| n.phase == HostNicPhase::Failed)
            .map(|n| n.name.clone()),
    );
    let pods = serving_pods(nics);
    let available: Vec<&NicView> = pods
        .iter()
        .copied()
        .filter(|n| n.phase == HostNicPhase::Available)
        .collect();
    let mut pending: Vec<&NicView> = pods
        .iter()
        .copied()
        .filter(|n| n.phase == HostNicPhase::Pending)
        .collect();
    let supply = Supply::of(&pods, node.pod_waiting);
    let have = supply.total();
    let size = spec.size;
    if nics.iter().any(|n| n.refused && !n.deleting) {
        d.blockers.push(Blocker::InstanceRefused);
    }
    let running = node.instance.as_ref().is_none_or(|i| i.running);
    if !running {
        d.blockers.push(Blocker::InstanceStopped);
    }

    // Gateways before pod NICs: pods' routes depend on them. The VM's free slots: its 63
    // minus NICs that are not ours minus every HostNic that holds or will hold a slot.
    let mut slots_taken = 0;
    let own_slots = nics.iter().filter(|n| holds_slot(n.phase)).count() as u32;
    let free_slots = node.instance.as_ref().map(|_| {
        MAX_NICS_PER_INSTANCE
            .saturating_sub(node.foreign_nics)
            .saturating_sub(node.other_pools_slots)
            .saturating_sub(own_slots)
    });
    if spec.routes.iter().any(|r| r.via_node()) {
        for vxnet in &spec.vxnets {
            let own = live.iter().find(|n| {
                n.role == NicRole::Gateway && &n.vxnet == vxnet && n.phase != HostNicPhase::Failed
            });
            if let Some(g) = own {
                if let (HostNicPhase::Available, Some(ip), Some(id)) = (g.phase, &g.ip, &g.nic_id) {
                    d.status.gateways.push(NodeGateway {
                        vxnet: vxnet.clone(),
                        ip: ip.clone(),
                        nic_id: id.clone(),
                        hostnic: Some(g.name.clone()),
                    });
                }
                continue;
            }
            let existing = node.instance.as_ref().and_then(|i| {
                let mut c: Vec<&InstanceNic> = i
                    .nics
                    .iter()
                    .filter(|n| {
                        &n.vxnet == vxnet
                            && !node.pod_nic_ids.contains(&n.nic_id)
                            && n.private_ip.is_some()
                    })
                    .collect();
                c.sort_by_key(|n| (!n.primary, n.nic_id.clone()));
                c.first().copied()
            });
            if let Some(e) = existing {
                d.status.gateways.push(NodeGateway {
                    vxnet: vxnet.clone(),
                    ip: e.private_ip.clone().unwrap_or_default(),
                    nic_id: e.nic_id.clone(),
                    hostnic: None,
                });
                continue;
            }
            if !node.can_grow || node.instance.is_none() || !running {
                continue;
            }
            if free_slots.is_some_and(|f| f <= slots_taken) {
                d.blockers.push(Blocker::InstanceFull);
            } else if budget.take(vxnet) {
                slots_taken += 1;
                d.create.push(NewNic {
                    vxnet: vxnet.clone(),
                    role: NicRole::Gateway,
                });
            } else {
                d.blockers.push(budget.spent);
            }
        }
    }

    // Shrink: surplus NICs that never reached the cloud go at once; free NICs only after the
    // surplus has lasted `shrink_delay`; bound and in-flight NICs never. Resting NICs make no
    // surplus of the pending ones: they come back only when their quarantine ends, and what
    // was created for a pod that waited is wanted by the next. Dropped once the wait ended, a
    // burst of restarts created, dropped and created again (bench (f): a DetachNics, a
    // DeleteNics and describes for each dropped NIC whose batch had already reached the cloud).
    let mut surplus = have.saturating_sub(size);
    let pending_surplus = Supply {
        resting: 0,
        ..supply
    }
    .total()
    .saturating_sub(size);
    pending.sort_by(|a, b| b.name.cmp(&a.name));
    let dropped_pending = pending_surplus.min(pending.len() as u32);
    for p in pending.iter().take(dropped_pending as usize) {
        d.delete.push(p.name.clone());
    }
    surplus -= dropped_pending;
    // A cordoned or NotReady node keeps its free NICs: a drain is usually temporary, and a
    // stopped VM refuses the detach anyway.
    let extra_free = if node.can_grow {
        surplus.min(available.len() as u32)
    } else {
        0
    };
    if extra_free > 0 {
        let since = surplus_since.unwrap_or(clock.now);
        let waited = clock.now.duration_since(since).unsigned_abs();
        if waited >= clock.shrink_delay {
            // Only NICs whose link the agent proved home: another may be on its way into a
            // pod, and its cleanup could not detach it anyway.
            let mut victims: Vec<&&NicView> = available.iter().filter(|n| n.link_home).collect();
            victims.sort_by(|a, b| b.name.cmp(&a.name));
            victims.truncate(extra_free as usize);
            d.delete.extend(victims.iter().map(|n| n.name.clone()));
            if victims.len() < extra_free as usize {
                // The surplus lasted: the rest goes as soon as the agent proves it (its
                // HostNic write wakes the pool).
                d.surplus_since = Some(since);
            }
        } else {
            d.surplus_since = Some(since);
            d.recheck_after = Some(clock.shrink_delay - waited);
        }
    }

    // Grow.
    let mut want = size.saturating_sub(have - dropped_pending);
    if let Some(batch) = clock.early_batch
        && !available.is_empty()
    {
        d.deferred = want % batch.max(1);
        want -= d.deferred;
    }
    if want > 0 {
        if !node.can_grow {
            d.blockers.push(Blocker::NotSchedulable);
        } else if !running {
            // Reported above; AttachNics would be refused.
        } else if let Some(free_slots) = free_slots {
            let total = pods
                .iter()
                .filter(|n| n.phase != HostNicPhase::Pending || !d.delete.contains(&n.name))
                .count() as u32;
            let by_max = spec.max_per_node.saturating_sub(total);
            let by_slots = free_slots.saturating_sub(slots_taken);
            let n = want.min(by_max).min(by_slots);
            if n < want {
                d.blockers.push(if by_slots < by_max {
                    Blocker::InstanceFull
                } else {
                    Blocker::MaxPerNode
                });
            }
            for _ in 0..n {
                match budget.take_best() {
                    Some(vxnet) => d.create.push(NewNic {
                        vxnet,
                        role: NicRole::Pod,
                    }),
                    None => {
                        d.blockers.push(budget.spent);
                        break;
                    }
                }
            }
        } else {
            d.blockers.push(Blocker::InstanceUnknown);
        }
    }
    d.blockers.sort();
    d.blockers.dedup();
    d
}

/// Whether deciding `node` (its `instance` not described) needs its VM described: the node would
/// grow (which takes the VM's free NIC slots and whether it runs), or look for a gateway among
/// the VM's NICs. A converged node needs nothing from the cloud.
pub fn needs_instance(
    spec: &NicPoolSpec,
    node: &NodeView,
    nics: &[NicView],
    budget: &VxnetBudget,
    surplus_since: Option<Timestamp>,
    clock: Clock,
) -> bool {
    let d = decide_node(spec, node, nics, &mut budget.clone(), surplus_since, clock);
    let gateways_wanted = if spec.routes.iter().any(|r| r.via_node()) {
        spec.vxnets.len()
    } else {
        0
    };
    d.blockers.contains(&Blocker::InstanceUnknown) || d.status.gateways.len() < gateways_wanted
}

/// Whether a HostNic being deleted detaches its NIC (so it joins its node's detach round): it is
/// attached, and its cleanup needs no wait (its link proven home, or its node gone).
pub fn joins_detach_round(nic: &NicView, node_exists: bool) -> bool {
    match nic.phase {
        HostNicPhase::Available | HostNicPhase::Released => nic.link_home || !node_exists,
        HostNicPhase::Bound => !node_exists,
        _ => false,
    }
}

/// A spec the operator refuses to act on, with the reason shown in the Degraded condition.
pub fn validate(spec: &NicPoolSpec, known_vxnets: &HashSet<String>) -> Result<(), String> {
    if spec.vxnets.is_empty() {
        return Err("spec.vxnets is empty".into());
    }
    if spec.size > spec.max_per_node {
        return Err(format!(
            "spec.size {} is larger than spec.maxPerNode {}",
            spec.size, spec.max_per_node
        ));
    }
    if spec.max_per_node > MAX_NICS_PER_INSTANCE {
        return Err(format!(
            "spec.maxPerNode {} exceeds the {MAX_NICS_PER_INSTANCE} secondary NICs of a VM",
            spec.max_per_node
        ));
    }
    let mut seen = HashSet::new();
    for v in &spec.vxnets {
        if !seen.insert(v) {
            return Err(format!("vxnet {v} is listed twice"));
        }
        if !known_vxnets.contains(v) {
            return Err(format!("vxnet {v} does not exist"));
        }
    }
    Ok(())
}

/// Pool-wide totals and conditions from the per-node decisions.
pub fn summarize(
    spec: &NicPoolSpec,
    nodes: &[(bool, NodeDecision)],
    invalid: Option<&str>,
) -> (Totals, Vec<Cond>) {
    let mut t = Totals::default();
    let mut warm: Option<u32> = None;
    let mut warm_by_node = Vec::new();
    let mut blockers: Vec<Blocker> = Vec::new();
    let mut busy = false;
    for (counted, d) in nodes {
        let s = &d.status;
        t.available += s.available;
        t.bound += s.bound;
        t.in_progress += s.in_progress;
        t.failed += s.failed;
        busy |= s.in_progress > 0 || !d.create.is_empty() || !d.delete.is_empty();
        blockers.extend(d.blockers.iter().copied());
        if *counted {
            t.nodes += 1;
            warm = Some(warm.map_or(s.available, |w| w.min(s.available)));
            warm_by_node.push((s.available, d.blockers.contains(&Blocker::NotSchedulable)));
        }
    }
    t.warm_per_node = warm.unwrap_or(0);
    blockers.sort();
    let conds = if let Some(why) = invalid {
        vec![
            Cond::new("Ready", false, "InvalidSpec", why),
            Cond::new("Progressing", false, "InvalidSpec", why),
            Cond::new("Degraded", true, "InvalidSpec", why),
        ]
    } else {
        let degraded = blockers.iter().find(|b| b.degrades());
        vec![
            super::status::ready(spec, warm_by_node),
            if busy {
                Cond::new(
                    "Progressing",
                    true,
                    "NicsInFlight",
                    "NICs are being created, attached or removed",
                )
            } else {
                Cond::new("Progressing", false, "Converged", "nothing in flight")
            },
            match degraded {
                Some(b) => Cond::new("Degraded", true, b.reason(), degraded_message(*b)),
                None if t.failed > 0 => Cond::new(
                    "Degraded",
                    true,
                    "NicsFailed",
                    format!("{} NICs failed and are being replaced", t.failed),
                ),
                None => Cond::new("Degraded", false, "AsExpected", ""),
            },
        ]
    };
    (t, conds)
}

fn degraded_message(b: Blocker) -> &'static str {
    match b {
        Blocker::VxnetExhausted => "no vxnet of the pool has free addresses",
        Blocker::QuotaExceeded => "the account's NIC quota is used up; raise it or free NICs",
        Blocker::InstanceFull => "a node's VM has no free NIC slot",
        Blocker::MaxPerNode => "a node reached spec.maxPerNode",
        Blocker::InstanceUnknown => "a node's QingCloud instance was not found",
        Blocker::InstanceStopped => "a node's VM is not running",
        Blocker::InstanceRefused => {
            "a node's VM refuses NICs (stopped, another VPC or full); see its HostNics' AttachRefused"
        }
        Blocker::NotSchedulable => "a node is cordoned or not ready",
    }
}

/// Pool-wide counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Selected nodes.
    pub nodes: u32,
    /// Least free NICs on a selected node.
    pub warm_per_node: u32,
    /// Free NICs.
    pub available: u32,
    /// Bound NICs.
    pub bound: u32,
    /// NICs in flight.
    pub in_progress: u32,
    /// Failed NICs.
    pub failed: u32,
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
