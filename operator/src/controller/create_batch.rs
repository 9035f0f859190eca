//! Batched CreateNics: the HostNics a pool pass adds in one vxnet form create batches, each one
//! CreateNics with `count`, whose NICs (all named `<prefix><batch uuid>`) go to the members in a
//! fixed order. The batch is recorded on every member when the pool creates it, before any cloud
//! call, so after a crash anywhere the batch's NICs are found by name and handed out by the same
//! rule: every NIC ends with exactly one member.
//!
//! Assignment ([`assign`]): members that recorded a NIC keep it; the batch's other NICs, sorted
//! by id, go to the members still without one, sorted by name (live members before members
//! being deleted, Failed members never). In this process, a NIC handed to a member stays
//! reserved for it until its status records it, and one member at a time works on a batch.
//! Members wait until the pool pass that made their batch has created all of them, so the
//! first one's CreateNics covers every member; after a restart no member can come any more.
//!
//! No member waits in its reconcile, which would hold one of the controller's few slots: a
//! member that asks before the seal, or while the batch's CreateNics (or lookup) waits for the
//! rate budget and the cloud, is told [`Claim::Pending`] and woken when that is over. Held in
//! their slots, a batch's hundreds of members starved every other reconcile for as long as
//! its CreateNics queued, and the members of one node reached their attach round too far
//! apart to meet (754 AttachNics for 500 nodes in the bench's (d)).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hostnic_crds::{CREATE_BATCH_LABEL, CREATE_BATCH_SIZE_ANNOTATION, HostNic, HostNicPhase};
use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use rand::Rng;

use super::Context;
use super::handoff::Wake;
use crate::cloud::{CloudApi, CloudError, CloudErrorKind, Nic, NicQuery, NicState, Priority};
use crate::error::{Error, Result};
use crate::sync::lock;

/// A create batch as its members carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTag {
    /// The batch's UUID (also the tail of its NICs' cloud name).
    pub id: String,
    /// How many NICs the batch creates; 0 when unknown (then: one per member waiting).
    pub size: u32,
}

impl BatchTag {
    /// The batch a HostNic belongs to; None for HostNics of older operators (one NIC each).
    pub fn of(h: &HostNic) -> Option<Self> {
        let id = h.labels().get(CREATE_BATCH_LABEL)?.clone();
        let size = h
            .annotations()
            .get(CREATE_BATCH_SIZE_ANNOTATION)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some(Self { id, size })
    }

    /// Records the batch on a HostNic about to be created.
    pub fn mark(&self, h: &mut HostNic) {
        h.labels_mut()
            .insert(CREATE_BATCH_LABEL.to_string(), self.id.clone());
        h.annotations_mut().insert(
            CREATE_BATCH_SIZE_ANNOTATION.to_string(),
            self.size.to_string(),
        );
    }

    /// Cloud name of the batch's NICs.
    pub fn nic_name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.id)
    }
}

/// A fresh random (version 4) UUID in canonical lowercase form, as GC's name grammar expects.
fn new_batch_id() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Splits the NICs a pass creates (given by their vxnets, in order) into batches: per vxnet, in
/// order, at most `limit` each. Returns the batches as indices into `vxnets`.
pub fn group(vxnets: &[&str], limit: u32) -> Vec<Vec<usize>> {
    let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
    let mut by_vxnet: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, v) in vxnets.iter().enumerate() {
        by_vxnet.entry(v).or_default().push(i);
    }
    by_vxnet
        .into_values()
        .flat_map(|ids| ids.chunks(limit).map(<[usize]>::to_vec).collect::<Vec<_>>())
        .collect()
}

/// Where a member stands in its batch's assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Alive: it needs a NIC.
    Live,
    /// Being deleted: it takes a NIC only if one is left over (to delete it, not leak it).
    Leaving,
}

/// A member of a batch as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// HostNic name.
    pub name: String,
    /// The NIC its status records.
    pub nic_id: Option<String>,
    /// None: it takes no NIC (Failed).
    pub standing: Option<Standing>,
}

impl Member {
    fn of(h: &HostNic) -> Self {
        let status = h.status.as_ref();
        let failed = status.is_some_and(|s| s.phase == HostNicPhase::Failed);
        let standing = match (failed, h.metadata.deletion_timestamp.is_some()) {
            (true, _) => None,
            (false, false) => Some(Standing::Live),
            (false, true) => Some(Standing::Leaving),
        };
        Self {
            name: h.name_any(),
            nic_id: status.and_then(|s| s.nic_id.clone()),
            standing,
        }
    }
}

/// The deterministic assignment: for each member without a recorded NIC and without a
/// reservation (`held`: member -> NIC id), the free NIC it gets. Free: in `nics` (the batch's
/// NIC ids), neither recorded by a member nor held. Members with a recorded NIC or a
/// reservation keep theirs and are not in the result.
pub fn assign(
    members: &[Member],
    held: &HashMap<String, String>,
    nics: &[String],
) -> BTreeMap<String, String> {
    let taken: HashSet<&str> = members
        .iter()
        .filter_map(|m| m.nic_id.as_deref())
        .chain(held.values().map(String::as_str))
        .collect();
    let mut free: Vec<&String> = nics
        .iter()
        .filter(|n| !taken.contains(n.as_str()))
        .collect();
    free.sort();
    free.dedup();
    let mut waiting: Vec<(Standing, &str)> = members
        .iter()
        .filter(|m| m.nic_id.is_none() && !held.contains_key(&m.name))
        .filter_map(|m| Some((m.standing?, m.name.as_str())))
        .collect();
    waiting.sort();
    waiting
        .into_iter()
        .zip(free)
        .map(|((_, m), n)| (m.to_string(), n.clone()))
        .collect()
}

/// What this process knows of one batch.
#[derive(Debug, Default)]
pub struct Slot {
    /// The batch's NICs: None when unknown (after a restart or a lost answer: look them up).
    nics: Option<Vec<Nic>>,
    /// NICs handed to members that have not recorded them yet.
    held: HashMap<String, Nic>,
    /// Why its CreateNics was refused: the members still without a NIC fail with it too.
    refused: Option<CloudError>,
    /// Members that recorded their NIC or went away.
    settled: HashSet<String>,
    /// Whether the batch's CreateNics or lookup is in flight.
    flying: bool,
    /// Members told to wait for the flight: woken when it lands.
    waiting: HashSet<String>,
    /// A flight's retryable failure, for each member that waited for it (once each, so its
    /// back-off grows; its next claim makes the next attempt).
    failed: HashMap<String, CloudError>,
}

/// Whether the pool pass that made a batch has created all its members.
#[derive(Debug)]
enum Seal {
    /// Not yet: these members asked meanwhile, and are woken at the seal.
    Open(HashSet<String>),
    Sealed,
}

/// One batch in this process: its lock, and its seal.
#[derive(Debug)]
struct Entry {
    slot: Arc<tokio::sync::Mutex<Slot>>,
    seal: Arc<Mutex<Seal>>,
}

impl Entry {
    fn new(slot: Slot, seal: Seal) -> Self {
        Self {
            slot: Arc::new(tokio::sync::Mutex::new(slot)),
            seal: Arc::new(Mutex::new(seal)),
        }
    }
}

/// The batches of this process, one lock each: a single flight per batch.
#[derive(Debug)]
pub struct Batches {
    slots: Mutex<HashMap<String, Entry>>,
    /// Wakes the members a seal or a flight kept waiting.
    wake: Wake,
}

/// The batches of one pool pass, one tag per NIC it creates. Dropped when the pass has created
/// their members (or failed to): that seals them.
#[derive(Debug)]
pub struct Planned {
    /// One tag per NIC to create, in the order given.
    pub tags: Vec<BatchTag>,
    seals: Vec<Arc<Mutex<Seal>>>,
    wake: Wake,
}

impl Drop for Planned {
    fn drop(&mut self) {
        for seal in &self.seals {
            let was = std::mem::replace(&mut *lock(seal), Seal::Sealed);
            if let Seal::Open(asked) = was {
                for m in asked {
                    self.wake.wake(&m);
                }
            }
        }
    }
}

impl Batches {
    /// No batch yet; members kept waiting are woken through `wake`.
    pub fn new(wake: Wake) -> Self {
        Self {
            slots: Mutex::default(),
            wake,
        }
    }

    /// Batches for the NICs a pass is about to create (their vxnets, in order). Their NICs are
    /// known not to exist yet, so the first member creates without a lookup, once the pass has
    /// created every member (the returned [`Planned`] is dropped).
    pub fn plan(&self, vxnets: &[&str], limit: u32) -> Planned {
        let mut tags: Vec<Option<BatchTag>> = vec![None; vxnets.len()];
        let mut seals = Vec::new();
        let mut slots = lock(&self.slots);
        for batch in group(vxnets, limit) {
            let tag = BatchTag {
                id: new_batch_id(),
                size: u32::try_from(batch.len()).unwrap_or(u32::MAX),
            };
            let fresh = Slot {
                nics: Some(Vec::new()),
                ..Slot::default()
            };
            let entry = Entry::new(fresh, Seal::Open(HashSet::new()));
            seals.push(entry.seal.clone());
            slots.insert(tag.id.clone(), entry);
            for i in batch {
                tags[i] = Some(tag.clone());
            }
        }
        Planned {
            tags: tags.into_iter().flatten().collect(),
            seals,
            wake: self.wake.clone(),
        }
    }

    /// The batch's lock, once its members are all created; None: not yet, and `member` is
    /// woken at the seal. A batch this process did not plan (made before a restart) gets a
    /// lock of its own, its NICs unknown.
    fn sealed_slot(&self, id: &str, member: &str) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        let mut slots = lock(&self.slots);
        let e = slots
            .entry(id.to_string())
            .or_insert_with(|| Entry::new(Slot::default(), Seal::Sealed));
        match &mut *lock(&e.seal) {
            Seal::Open(asked) => {
                asked.insert(member.to_string());
                None
            }
            Seal::Sealed => Some(e.slot.clone()),
        }
    }

    /// `member` recorded its NIC or is gone: its reservation ends, and the batch is forgotten
    /// once all its members are settled.
    pub async fn settle(&self, tag: &BatchTag, member: &str) {
        let Some(slot) = lock(&self.slots).get(&tag.id).map(|e| e.slot.clone()) else {
            return;
        };
        let done = {
            let mut s = slot.lock().await;
            s.held.remove(member);
            s.failed.remove(member);
            s.settled.insert(member.to_string());
            s.settled.len() >= usize::try_from(tag.size).unwrap_or(usize::MAX)
        };
        if done {
            lock(&self.slots).remove(&tag.id);
        }
    }
}

/// What a member asks of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A NIC, creating the batch's missing NICs if none is left for it (apply).
    Create,
    /// A NIC only if one is left over (cleanup of a member without one).
    Leftover,
}

/// What a member got.
#[derive(Debug)]
pub enum Claim {
    /// Its NIC (reserved for it until its status records it: then call [`Batches::settle`]).
    Nic(Nic),
    /// None is left for it (only with [`Want::Leftover`]).
    Nothing,
    /// The batch's CreateNics was refused (capacity, quota, a bad request): not retried.
    Refused(CloudError),
    /// Not yet: the pass is still creating the batch's members, or its NICs are being created
    /// or looked up. The member is woken when that is over.
    Pending,
}

/// The NIC of batch member `cur`, per the batch's assignment. A flight's throttled or
/// transient failure is an error for each member that waited for it (retried after its
/// back-off); a lost answer makes the next flight a lookup.
pub async fn claim(
    ctx: &Context,
    cur: &HostNic,
    tag: &BatchTag,
    want: Want,
    prio: Priority,
) -> Result<Claim> {
    let me = cur.name_any();
    let Some(slot) = ctx.create_batches.sealed_slot(&tag.id, &me) else {
        return Ok(Claim::Pending);
    };
    let mut s = slot.lock().await;
    if let Some(n) = s.held.get(&me) {
        return Ok(Claim::Nic(n.clone()));
    }
    if let Some(e) = s.failed.remove(&me) {
        return Err(e.into());
    }
    if s.flying {
        s.waiting.insert(me);
        return Ok(Claim::Pending);
    }
    let members = members(ctx, tag).await?;
    let recorded: HashSet<&str> = members
        .iter()
        .filter(|m| m.nic_id.is_some())
        .map(|m| m.name.as_str())
        .collect();
    // A member gone or recorded needs its reservation no more.
    s.held
        .retain(|m, _| members.iter().any(|x| &x.name == m) && !recorded.contains(m.as_str()));
    // Members that recorded theirs before a restart count as settled too, so the batch is
    // forgotten once the rest are.
    s.settled.extend(recorded.iter().map(|m| m.to_string()));
    let flight = Flight {
        cloud: ctx.cloud.clone(),
        wake: ctx.create_batches.wake.clone(),
        slot: slot.clone(),
        vxnet: cur.spec.vxnet.clone(),
        name: tag.nic_name(&ctx.settings.nic_prefix),
        prio,
    };
    let Some(known) = s.nics.as_ref() else {
        flight.start(&mut s, &me, None);
        return Ok(Claim::Pending);
    };
    let held: HashMap<String, String> = s
        .held
        .iter()
        .map(|(m, n)| (m.clone(), n.id.clone()))
        .collect();
    let ids: Vec<String> = known.iter().map(|n| n.id.clone()).collect();
    let handed: Vec<(String, Nic)> = assign(&members, &held, &ids)
        .into_iter()
        .filter_map(|(m, id)| Some((m, known.iter().find(|n| n.id == id)?.clone())))
        .collect();
    s.held.extend(handed);
    if let Some(n) = s.held.get(&me) {
        return Ok(Claim::Nic(n.clone()));
    }
    if want == Want::Leftover {
        return Ok(Claim::Nothing);
    }
    if let Some(e) = &s.refused {
        return Ok(Claim::Refused(e.clone()));
    }
    // Every free NIC is handed out: create one for each live member still waiting, this one
    // among them. The batch is sealed, so every member there will be is listed.
    let waiting = members
        .iter()
        .filter(|m| m.nic_id.is_none() && m.standing == Some(Standing::Live))
        .filter(|m| !s.held.contains_key(&m.name))
        .count();
    let count = u32::try_from(waiting)
        .unwrap_or(u32::MAX)
        .clamp(1, ctx.settings.max_create_batch.max(1));
    ctx.checkpoint.step("CreateNics").await;
    flight.start(&mut s, &me, Some(count));
    Ok(Claim::Pending)
}

/// A batch's CreateNics or lookup by name, made in the background.
struct Flight {
    cloud: Arc<dyn CloudApi>,
    wake: Wake,
    slot: Arc<tokio::sync::Mutex<Slot>>,
    vxnet: String,
    name: String,
    prio: Priority,
}

impl Flight {
    /// Creates `count` NICs (None: looks the batch's NICs up), `member` waiting for it.
    fn start(self, s: &mut Slot, member: &str, count: Option<u32>) {
        s.flying = true;
        s.waiting.insert(member.to_string());
        tokio::spawn(async move {
            let answer = match count {
                Some(n) => self.create(n).await,
                None => self
                    .cloud
                    .describe_nics(NicQuery::Name(self.name.clone()), self.prio)
                    .await
                    .map(Landed::Found),
            };
            let waiting = {
                let mut s = self.slot.lock().await;
                s.flying = false;
                let waiting = std::mem::take(&mut s.waiting);
                match answer {
                    Ok(Landed::Found(nics)) => s.nics = Some(nics),
                    Ok(Landed::Created(nics)) => s.nics.get_or_insert_default().extend(nics),
                    Ok(Landed::Refused(e)) => s.refused = Some(e),
                    Err(e) => {
                        if e.outcome_unknown() {
                            // The NICs may exist: the next flight looks them up by name.
                            s.nics = None;
                        }
                        s.failed
                            .extend(waiting.iter().map(|m| (m.clone(), e.clone())));
                    }
                }
                waiting
            };
            for m in waiting {
                self.wake.wake(&m);
            }
        });
    }

    /// One CreateNics of `count`. Err: throttled or transient (retried).
    async fn create(&self, count: u32) -> std::result::Result<Landed, CloudError> {
        match self
            .cloud
            .create_nics(self.vxnet.clone(), self.name.clone(), count, self.prio)
            .await
        {
            Ok(created) if created.is_empty() => Err(CloudError::transient(
                "CreateNics",
                "CreateNics returned no NIC",
            )),
            Ok(created) => {
                tracing::info!(name = %self.name, count, "created the NICs of a create batch");
                let now = Timestamp::now();
                Ok(Landed::Created(
                    created
                        .into_iter()
                        .map(|c| Nic {
                            id: c.id,
                            name: self.name.clone(),
                            state: NicState::Available,
                            instance: None,
                            vxnet: self.vxnet.clone(),
                            private_ip: c.private_ip,
                            created: Some(now),
                        })
                        .collect(),
                ))
            }
            Err(e)
                if matches!(
                    e.kind,
                    CloudErrorKind::Throttled | CloudErrorKind::Transient
                ) =>
            {
                Err(e)
            }
            Err(e) => Ok(Landed::Refused(e)),
        }
    }
}

/// What a flight brought back.
enum Landed {
    /// The batch's NICs, looked up by name.
    Found(Vec<Nic>),
    /// NICs the CreateNics made.
    Created(Vec<Nic>),
    /// The CreateNics was refused (capacity, quota, a bad request): not retried.
    Refused(CloudError),
}

/// The batch's members as the API server has them now (not the reflector, which may lag
/// behind the NIC ids members just recorded).
async fn members(ctx: &Context, tag: &BatchTag) -> Result<Vec<Member>> {
    let api: Api<HostNic> = Api::all(ctx.client.clone());
    let lp = ListParams::default().labels(&format!("{CREATE_BATCH_LABEL}={}", tag.id));
    Ok(api
        .list(&lp)
        .await
        .map_err(Error::kube("list the HostNics of a create batch"))?
        .items
        .iter()
        .map(Member::of)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, nic: Option<&str>, standing: Option<Standing>) -> Member {
        Member {
            name: name.into(),
            nic_id: nic.map(str::to_string),
            standing,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const LIVE: Option<Standing> = Some(Standing::Live);

    #[test]
    fn free_nics_go_in_id_order_to_members_in_name_order() {
        let members = [m("c", None, LIVE), m("a", None, LIVE), m("b", None, LIVE)];
        let got = assign(&members, &HashMap::new(), &ids(&["n3", "n1", "n2"]));
        let want: BTreeMap<String, String> = [("a", "n1"), ("b", "n2"), ("c", "n3")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn recorded_and_held_nics_are_kept_and_never_handed_out_again() {
        let members = [
            m("a", None, LIVE),
            m("b", Some("n1"), LIVE),
            m("c", None, LIVE),
            m("d", None, LIVE),
        ];
        let held: HashMap<String, String> = [("c".to_string(), "n2".to_string())].into();
        let got = assign(&members, &held, &ids(&["n1", "n2", "n3"]));
        assert_eq!(
            got,
            [("a".to_string(), "n3".to_string())].into_iter().collect()
        );
    }

    #[test]
    fn leaving_members_take_only_leftovers_and_failed_ones_nothing() {
        let members = [
            m("a", None, Some(Standing::Leaving)),
            m("b", None, None),
            m("z", None, LIVE),
        ];
        let one = assign(&members, &HashMap::new(), &ids(&["n1"]));
        assert_eq!(
            one,
            [("z".to_string(), "n1".to_string())].into_iter().collect()
        );
        let two = assign(&members, &HashMap::new(), &ids(&["n1", "n2"]));
        assert_eq!(two.get("a").map(String::as_str), Some("n2"));
        assert!(!two.contains_key("b"));
    }

    #[test]
    fn the_same_view_gives_the_same_assignment_after_a_crash() {
        // A crash after CreateNics: nothing recorded, the NICs found by name in any order.
        let members = [m("p-1", None, LIVE), m("p-0", None, LIVE)];
        let a = assign(&members, &HashMap::new(), &ids(&["n2", "n1"]));
        let b = assign(&members, &HashMap::new(), &ids(&["n1", "n2"]));
        assert_eq!(a, b);
        // A crash after the first member recorded its NIC: the other gets the other NIC.
        let after = [m("p-1", None, LIVE), m("p-0", Some("n1"), LIVE)];
        assert_eq!(
            assign(&after, &HashMap::new(), &ids(&["n2", "n1"])),
            [("p-1".to_string(), "n2".to_string())]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn batches_are_per_vxnet_and_at_most_the_limit() {
        let v = ["a", "b", "a", "a", "b"];
        assert_eq!(group(&v, 252), vec![vec![0, 2, 3], vec![1, 4]]);
        assert_eq!(group(&v, 2), vec![vec![0, 2], vec![3], vec![1, 4]]);
        assert!(group(&[], 252).is_empty());
    }

    #[test]
    fn batch_ids_are_what_gc_owns() {
        let id = new_batch_id();
        assert!(crate::gc::is_uuid(&id), "{id}");
        assert_ne!(id, new_batch_id());
        let tag = BatchTag {
            id: id.clone(),
            size: 3,
        };
        assert_eq!(
            crate::gc::owned_uid(&tag.nic_name("hostnic-c1-"), "hostnic-c1-"),
            Some(id.as_str())
        );
    }

    #[test]
    fn a_tag_survives_the_round_trip_through_its_hostnic() {
        let spec = hostnic_crds::HostNicSpec {
            pool: "p".into(),
            node: "n".into(),
            vxnet: "vxnet-a".into(),
            role: hostnic_crds::NicRole::Pod,
        };
        let mut h = HostNic::new("x", spec);
        assert_eq!(BatchTag::of(&h), None);
        let tag = BatchTag {
            id: new_batch_id(),
            size: 4,
        };
        tag.mark(&mut h);
        assert_eq!(BatchTag::of(&h), Some(tag));
    }
}
