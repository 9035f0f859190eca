//! Batched cloud calls: AttachNics per instance, DetachNics and DeleteNics per instance, and the
//! Describe calls by id. The pool plans each round: the HostNics it creates (or deletes) on a
//! node in one pass are expected to attach (or detach and delete) together, and their call is
//! made as soon as every one of them asked, up to the batch limit. Requests outside a round
//! share a call with those arriving within a short window. A call refused for its size is
//! split in halves and the smaller limit is kept for every later call of that action.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::sync::lock;

use super::{CloudApi, CloudError, CloudErrorKind, CloudResult, Job, Nic, NicQuery, Priority};

/// Runs one batched call for a key and the distinct items collected under it.
type BatchFn<R> =
    Arc<dyn Fn(String, Vec<String>, Priority) -> BoxFuture<'static, CloudResult<R>> + Send + Sync>;

/// One request: the item (a NIC id) and where the answer goes.
struct Waiter<R> {
    item: String,
    tx: tokio::sync::oneshot::Sender<CloudResult<R>>,
}

struct Group<R> {
    id: u64,
    prio: Priority,
    waiters: Vec<Waiter<R>>,
    /// The planned rounds its members belong to: it runs once each has every member in.
    rounds: HashSet<u64>,
}

impl<R> Group<R> {
    fn distinct(&self) -> usize {
        let mut items: Vec<&String> = self.waiters.iter().map(|w| &w.item).collect();
        items.sort();
        items.dedup();
        items.len()
    }
}

/// The rounds the pool planned, each the members one pass created (or deleted) on one node.
#[derive(Default)]
struct Rounds {
    next: u64,
    /// Each member still expected: its key and round.
    expected: HashMap<String, (String, u64)>,
    /// Per round, how many of its members have yet to ask.
    left: HashMap<u64, usize>,
}

impl Rounds {
    fn plan(&mut self, key: &str, members: impl IntoIterator<Item = String>) {
        let id = self.next;
        self.next += 1;
        for m in members {
            // Planned again (a later pass): it belongs to the newer round only.
            if let Some((_, old)) = self.expected.insert(m, (key.to_string(), id)) {
                self.settle(old);
            }
            *self.left.entry(id).or_default() += 1;
        }
    }

    /// `member` asked under `key`, or (`key` None) will not ask: its round, if it was expected.
    fn take(&mut self, member: &str, key: Option<&str>) -> Option<(String, u64)> {
        let (k, id) = self.expected.get(member)?.clone();
        if key.is_some_and(|key| key != k) {
            return None;
        }
        self.expected.remove(member);
        self.settle(id);
        Some((k, id))
    }

    fn settle(&mut self, id: u64) {
        if let Some(n) = self.left.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.left.remove(&id);
            }
        }
    }

    /// Whether a group of these rounds is complete: it has one, and each has all its members in.
    fn complete(&self, rounds: &HashSet<u64>) -> bool {
        !rounds.is_empty() && rounds.iter().all(|r| !self.left.contains_key(r))
    }
}

/// Collects items per key and runs one call for them: when every member of the rounds its
/// members belong to has asked (a round of another pass, still waiting for its creates, does
/// not hold it), when the group reaches the batch limit, or after the wait (the window, or the
/// round's bound when a member of a round is waiting).
struct Coalescer<R> {
    groups: Mutex<HashMap<String, Group<R>>>,
    /// The rounds the pool planned, and their members that have not asked yet.
    rounds: Mutex<Rounds>,
    next_id: Mutex<u64>,
    window: Duration,
    /// Longest a round waits, after its latest member asked, for one that does not come (its
    /// create failed, it was deleted): a bound on the delay, not a way to meet.
    round_wait: Duration,
    /// Most distinct items per call: the configured limit, lowered by size refusals.
    limit: AtomicUsize,
    run: BatchFn<R>,
    /// Whether a refused batch is retried item by item, so one bad NIC cannot block the others.
    split_on_refusal: bool,
}

/// Answers per item.
type Answers<R> = HashMap<String, CloudResult<R>>;

impl<R: Clone + Send + 'static> Coalescer<R> {
    fn new(cfg: &BatchConfig, max: usize, split_on_refusal: bool, run: BatchFn<R>) -> Arc<Self> {
        Arc::new(Self {
            groups: Mutex::new(HashMap::new()),
            rounds: Mutex::default(),
            next_id: Mutex::new(0),
            window: cfg.window,
            round_wait: cfg.round_wait,
            limit: AtomicUsize::new(max.max(1)),
            run,
            split_on_refusal,
        })
    }

    /// The current limit of one call.
    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Expects `members` to ask under `key`, as one round.
    fn plan(self: &Arc<Self>, key: &str, members: impl IntoIterator<Item = String>) {
        lock(&self.rounds).plan(key, members);
    }

    /// `member` will not ask (it failed or went away): a group waiting only for it runs now.
    fn forget(self: &Arc<Self>, member: &str) {
        let Some((key, _)) = lock(&self.rounds).take(member, None) else {
            return;
        };
        let due = {
            let mut groups = lock(&self.groups);
            let complete = groups
                .get(&key)
                .is_some_and(|g| lock(&self.rounds).complete(&g.rounds));
            if complete { groups.remove(&key) } else { None }
        };
        if let Some(group) = due {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.run_group(&key, group).await });
        }
    }

    async fn submit(
        self: &Arc<Self>,
        key: String,
        item: String,
        member: Option<&str>,
        prio: Priority,
    ) -> CloudResult<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let due = {
            let mut groups = lock(&self.groups);
            // Joined under the groups' lock: a member joining outside it could be the round's
            // last to join but the second to reach the group, which the other then ran as
            // complete without it (a round of 20 became 19 and 1, seen in CI).
            let round = member.and_then(|m| lock(&self.rounds).take(m, Some(&key)));
            let wait = if round.is_some() {
                self.round_wait
            } else {
                self.window
            };
            let group = match groups.get_mut(&key) {
                // A round's member came: the round waits `round_wait` from now for the rest,
                // so a round whose members arrive steadily (each after its share of a create
                // batch, under load) is never cut short; only a member that stops coming is.
                Some(g) if round.is_some() => {
                    g.id = self.arm(&key, wait);
                    g
                }
                Some(g) => g,
                None => {
                    let id = self.arm(&key, wait);
                    groups.entry(key.clone()).or_insert(Group {
                        id,
                        prio,
                        waiters: Vec::new(),
                        rounds: HashSet::new(),
                    })
                }
            };
            group.prio = group.prio.min(prio);
            group.waiters.push(Waiter { item, tx });
            group.rounds.extend(round.map(|(_, id)| id));
            // A group that runs leaves the map at once, so no later request can join it.
            let full = group.distinct() >= self.limit();
            let complete = lock(&self.rounds).complete(&group.rounds);
            if full || complete {
                groups.remove(&key)
            } else {
                None
            }
        };
        if let Some(group) = due {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.run_group(&key, group).await });
        }
        rx.await
            .unwrap_or_else(|_| Err(CloudError::transient("batch", "batched call was dropped")))
    }

    /// Runs the group under `key` after `wait`, unless it ran or was re-armed meanwhile; the
    /// id the group must carry for that.
    fn arm(self: &Arc<Self>, key: &str, wait: Duration) -> u64 {
        let id = {
            let mut n = lock(&self.next_id);
            *n += 1;
            *n
        };
        let this = Arc::clone(self);
        let k = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(group) = this.take(&k, Some(id)) {
                this.run_group(&k, group).await;
            }
        });
        id
    }

    /// Removes the group under `key` (only if it is still group `id`, when given).
    fn take(&self, key: &str, id: Option<u64>) -> Option<Group<R>> {
        let mut groups = lock(&self.groups);
        match groups.get(key) {
            Some(g) if id.is_none_or(|id| g.id == id) => groups.remove(key),
            _ => None,
        }
    }

    /// Makes the group's calls and answers every waiter.
    async fn run_group(self: &Arc<Self>, key: &str, group: Group<R>) {
        let mut items: Vec<String> = group.waiters.iter().map(|w| w.item.clone()).collect();
        items.sort();
        items.dedup();
        let answers = self.run_items(key, items, group.prio).await;
        for w in group.waiters {
            let r = answers
                .get(&w.item)
                .cloned()
                .unwrap_or_else(|| Err(CloudError::transient("batch", "no answer for the item")));
            let _ = w.tx.send(r);
        }
    }

    /// Calls for `items` in chunks of the current limit. A call refused for its size (1100 for
    /// more than one item) lowers the limit to half its size and is made again in those
    /// halves, never unchanged. A refusal that names some of the NICs fails those and retries
    /// the others once without them; any other refusal (about the instance, or naming no NIC)
    /// answers every item, since retrying the same NICs one by one would only repeat it.
    fn run_items<'a>(
        self: &'a Arc<Self>,
        key: &'a str,
        items: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'a, Answers<R>> {
        Box::pin(async move {
            let limit = self.limit();
            if items.len() > limit {
                let mut answers = HashMap::new();
                for chunk in items.chunks(limit) {
                    answers.extend(self.run_items(key, chunk.to_vec(), prio).await);
                }
                return answers;
            }
            let result = (self.run)(key.to_string(), items.clone(), prio).await;
            let all = |r: &CloudResult<R>| -> Answers<R> {
                items.iter().map(|i| (i.clone(), r.clone())).collect()
            };
            match &result {
                Err(e) if items.len() > 1 && is_size_refusal(e) => {
                    let half = items.len().div_ceil(2);
                    let was = self.limit.fetch_min(half, Ordering::Relaxed);
                    tracing::warn!(%e, was, now = half.min(was), "the cloud refused the batch for its size: lowering the limit");
                    self.run_items(key, items, prio).await
                }
                Err(e) if self.split_on_refusal && is_refusal(e) => {
                    let culprits: Vec<String> = items
                        .iter()
                        .filter(|i| e.message.contains(i.as_str()))
                        .cloned()
                        .collect();
                    if culprits.is_empty() || culprits.len() == items.len() {
                        return all(&result);
                    }
                    tracing::debug!(%e, refused = ?culprits, "batch refused for some NICs: retrying the others once");
                    let rest: Vec<String> = items
                        .iter()
                        .filter(|i| !culprits.contains(i))
                        .cloned()
                        .collect();
                    let retried = (self.run)(key.to_string(), rest.clone(), prio).await;
                    let mut answers = all(&result);
                    answers.extend(rest.into_iter().map(|i| (i, retried.clone())));
                    answers
                }
                _ => all(&result),
            }
        })
    }
}

/// Whether the cloud refused the call for the state of what it names (1400, 2100, 5200).
fn is_refusal(e: &CloudError) -> bool {
    matches!(
        e.kind,
        CloudErrorKind::Refused | CloudErrorKind::NotFound | CloudErrorKind::Capacity
    )
}

/// Whether the cloud refused a call as malformed (1100): for a call whose only varying
/// parameter is its list of NICs, that is its length (QingCloud takes at most 5 NICs per
/// AttachNics/DetachNics).
fn is_size_refusal(e: &CloudError) -> bool {
    e.code == Some(1100)
}

/// Batch limits and the coalescing window.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// How long the first request of a batch waits for company.
    pub window: Duration,
    /// Most NICs per AttachNics call.
    pub max_attach: usize,
    /// Most NICs per DetachNics call.
    pub max_detach: usize,
    /// Most NICs per DeleteNics call.
    pub max_delete: usize,
    /// Longest a round planned by the pool waits, after its latest member asked, for a member
    /// that does not ask.
    pub round_wait: Duration,
}

/// Single-NIC front of a [`CloudApi`] that batches concurrent requests (clones share it).
#[derive(Clone)]
pub struct Batcher {
    attach: Arc<Coalescer<String>>,
    detach: Arc<Coalescer<String>>,
    delete: Arc<Coalescer<()>>,
    nics: Arc<Coalescer<Arc<Vec<Nic>>>>,
    jobs: Arc<Coalescer<Arc<Vec<Job>>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Describe calls page at 100 rows.
const DESCRIBE_BATCH: usize = 100;

impl Batcher {
    /// Batches calls to `cloud`.
    pub fn new(cloud: Arc<dyn CloudApi>, cfg: BatchConfig) -> Self {
        let c = cloud.clone();
        let attach = Coalescer::new(
            &cfg,
            cfg.max_attach,
            true,
            Arc::new(move |instance, nics, prio| {
                let c = c.clone();
                Box::pin(async move { c.attach_nics(instance, nics, prio).await })
            }),
        );
        let c = cloud.clone();
        let detach = Coalescer::new(
            &cfg,
            cfg.max_detach,
            true,
            Arc::new(move |_, nics, prio| {
                let c = c.clone();
                Box::pin(async move { c.detach_nics(nics, prio).await })
            }),
        );
        let c = cloud.clone();
        let delete = Coalescer::new(
            &cfg,
            cfg.max_delete,
            true,
            Arc::new(move |_, nics, prio| {
                let c = c.clone();
                Box::pin(async move { c.delete_nics(nics, prio).await })
            }),
        );
        let c = cloud.clone();
        let nics = Coalescer::new(
            &cfg,
            DESCRIBE_BATCH,
            false,
            Arc::new(move |_, ids, prio| {
                let c = c.clone();
                Box::pin(async move {
                    c.describe_nics(NicQuery::Ids(ids), prio)
                        .await
                        .map(Arc::new)
                })
            }),
        );
        let c = cloud;
        let jobs = Coalescer::new(
            &cfg,
            DESCRIBE_BATCH,
            false,
            Arc::new(move |_, ids, prio| {
                let c = c.clone();
                Box::pin(async move { c.describe_jobs(ids, prio).await.map(Arc::new) })
            }),
        );
        Self {
            attach,
            detach,
            delete,
            nics,
            jobs,
        }
    }

    /// The pool's round on `instance`: these HostNics (just created) attach together.
    pub fn plan_attach(&self, instance: &str, members: impl IntoIterator<Item = String>) {
        self.attach.plan(instance, members);
    }

    /// The pool's round on `instance`: these HostNics (just deleted, attached) detach together,
    /// then are deleted together.
    pub fn plan_detach(&self, instance: &str, members: impl IntoIterator<Item = String>) {
        let members: Vec<String> = members.into_iter().collect();
        self.detach.plan(instance, members.clone());
        self.delete.plan(instance, members);
    }

    /// `member` will make no call of its round (it failed, or needs no detach or delete).
    pub fn forget(&self, member: &str) {
        self.attach.forget(member);
        self.detach.forget(member);
        self.delete.forget(member);
    }

    /// Attaches `nic` to `instance` together with the other NICs of `member`'s round (or
    /// those asking within the window).
    pub async fn attach(
        &self,
        instance: &str,
        nic: &str,
        member: &str,
        prio: Priority,
    ) -> CloudResult<String> {
        self.attach
            .submit(instance.to_string(), nic.to_string(), Some(member), prio)
            .await
    }

    /// Detaches `nic` (attached to `instance`) in a batch.
    pub async fn detach(
        &self,
        instance: Option<&str>,
        nic: &str,
        member: Option<&str>,
        prio: Priority,
    ) -> CloudResult<String> {
        self.detach
            .submit(
                instance.unwrap_or_default().to_string(),
                nic.to_string(),
                member,
                prio,
            )
            .await
    }

    /// Deletes `nic` (last on `instance`) in a batch.
    pub async fn delete(
        &self,
        instance: Option<&str>,
        nic: &str,
        member: Option<&str>,
        prio: Priority,
    ) -> CloudResult<()> {
        if let Some(m) = member {
            // Not detached by this operator (already free): it asks for no detach.
            self.detach.forget(m);
        }
        self.delete
            .submit(
                instance.unwrap_or_default().to_string(),
                nic.to_string(),
                member,
                prio,
            )
            .await
    }

    /// Reads one NIC (None: it does not exist).
    pub async fn nic(&self, id: &str, prio: Priority) -> CloudResult<Option<Nic>> {
        let all = self
            .nics
            .submit(String::new(), id.to_string(), None, prio)
            .await?;
        Ok(all.iter().find(|n| n.id == id).cloned())
    }

    /// Reads one job (None: the cloud does not know it).
    pub async fn job(&self, id: &str, prio: Priority) -> CloudResult<Option<Job>> {
        let all = self
            .jobs
            .submit(String::new(), id.to_string(), None, prio)
            .await?;
        Ok(all.iter().find(|j| j.id == id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::cloud::{CloudApi, NicState};

    fn cfg() -> BatchConfig {
        BatchConfig {
            window: Duration::from_millis(30),
            max_attach: 3,
            max_detach: 10,
            max_delete: 10,
            round_wait: Duration::from_secs(30),
        }
    }

    async fn nics(cloud: &FakeCloud, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..n {
            let c = cloud
                .create_nics("vxnet-a".into(), format!("n{i}"), 1, Priority::Refill)
                .await
                .unwrap();
            out.extend(c.into_iter().map(|c| c.id));
        }
        out
    }

    #[tokio::test]
    async fn concurrent_attaches_share_calls_up_to_the_batch_limit() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let ids = nics(&cloud, 7).await;
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let jobs = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.attach("i-1", &id, &id, Priority::Refill).await.unwrap() }
        }))
        .await;
        assert_eq!(
            cloud.calls()["AttachNics"],
            3,
            "7 NICs in batches of at most 3"
        );
        let mut distinct = jobs.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        assert!(cloud.nics().iter().all(|n| n.state == NicState::InUse));
    }

    #[tokio::test]
    async fn a_refusal_naming_a_nic_fails_it_and_retries_the_rest_once() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let mut ids = nics(&cloud, 2).await;
        ids.push("52:54:ff:ff:ff:ff".into());
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let results = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.attach("i-1", &id, &id, Priority::Refill).await }
        }))
        .await;
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(results[2].as_ref().is_err_and(CloudError::is_not_found));
        assert_eq!(
            cloud.calls()["AttachNics"],
            2,
            "one refused batch, then one retry without the missing NIC"
        );
    }

    #[tokio::test]
    async fn a_refusal_about_the_instance_is_not_split() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let ids = nics(&cloud, 3).await;
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let results = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.attach("i-404", &id, &id, Priority::Refill).await }
        }))
        .await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_err_and(CloudError::is_not_found))
        );
        assert_eq!(
            cloud.calls()["AttachNics"],
            1,
            "an unknown instance refuses every NIC alike: no NIC-by-NIC retries"
        );
    }

    #[tokio::test]
    async fn describes_are_shared_and_errors_reach_every_waiter() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        let ids = nics(&cloud, 4).await;
        let b = Arc::new(Batcher::new(cloud.clone(), cfg()));
        let seen = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.nic(&id, Priority::Refill).await.unwrap().map(|n| n.id) }
        }))
        .await;
        assert_eq!(seen.into_iter().flatten().collect::<Vec<_>>(), ids);
        assert_eq!(cloud.calls()["DescribeNics"], 1);
        cloud.inject("DescribeNics", &[5100]);
        let r = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move { b.nic(&id, Priority::Refill).await }
        }))
        .await;
        assert!(r.iter().all(|r| {
            r.as_ref()
                .is_err_and(|e| e.kind == CloudErrorKind::Throttled)
        }));
    }

    /// Also while another pass's round on the instance still waits for its members (their
    /// CreateNics slow): that round does not hold this one.
    #[tokio::test]
    async fn a_planned_round_makes_one_call_as_soon_as_every_member_asked() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        // Fewer NICs than the batch limit (3): only the round's completeness can run the call.
        let ids = nics(&cloud, 2).await;
        // A window far longer than the test: only the round can make the call.
        let b = Arc::new(Batcher::new(
            cloud.clone(),
            BatchConfig {
                window: Duration::from_secs(600),
                ..cfg()
            },
        ));
        b.plan_attach("i-1", ["hn-slow-1".to_string(), "hn-slow-2".to_string()]);
        b.plan_attach("i-1", ids.iter().map(|id| format!("hn-{id}")));
        let all = futures::future::join_all(ids.iter().map(|id| {
            let b = b.clone();
            let id = id.clone();
            async move {
                b.attach("i-1", &id, &format!("hn-{id}"), Priority::Refill)
                    .await
            }
        }));
        let jobs = tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("the round ran when complete, without the other round's members");
        assert!(jobs.iter().all(Result::is_ok));
        assert_eq!(cloud.calls()["AttachNics"], 1);
    }

    #[tokio::test]
    async fn a_round_whose_members_come_steadily_waits_for_the_last() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let ids = nics(&cloud, 4).await;
        // Members 60 ms apart, 180 ms from the first to the last: longer than the 100 ms a
        // round waits, but never that long between two members.
        let b = Arc::new(Batcher::new(
            cloud.clone(),
            BatchConfig {
                window: Duration::from_secs(600),
                max_attach: 5,
                round_wait: Duration::from_millis(100),
                ..cfg()
            },
        ));
        b.plan_attach("i-1", ids.iter().map(|id| format!("hn-{id}")));
        let all = futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
            let b = b.clone();
            let id = id.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(60) * u32::try_from(i).unwrap()).await;
                b.attach("i-1", &id, &format!("hn-{id}"), Priority::Refill)
                    .await
            }
        }));
        let jobs = tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("the round ran");
        assert!(jobs.iter().all(Result::is_ok));
        assert_eq!(
            cloud.calls()["AttachNics"],
            1,
            "one call for the whole round"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn members_asking_at_once_never_split_their_round() {
        const ROUNDS: usize = 40;
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 1000);
        let b = Arc::new(Batcher::new(
            cloud.clone(),
            BatchConfig {
                window: Duration::from_secs(600),
                max_attach: 20,
                round_wait: Duration::from_secs(600),
                ..cfg()
            },
        ));
        for r in 0..ROUNDS {
            let instance = format!("i-{r}");
            cloud.add_instance(&instance, "vxnet-a");
            let ids = nics(&cloud, 20).await;
            b.plan_attach(&instance, ids.iter().map(|id| format!("hn-{id}")));
            let asks: Vec<_> = ids
                .into_iter()
                .map(|id| {
                    let (b, instance) = (b.clone(), instance.clone());
                    tokio::spawn(async move {
                        b.attach(&instance, &id, &format!("hn-{id}"), Priority::Refill)
                            .await
                    })
                })
                .collect();
            let answers =
                tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(asks))
                    .await
                    .expect("every round ran when complete, none waited for a member");
            assert!(answers.iter().all(|a| a.as_ref().is_ok_and(Result::is_ok)));
        }
        assert_eq!(
            cloud.calls()["AttachNics"],
            ROUNDS as u64,
            "one call per round"
        );
    }

    #[tokio::test]
    async fn a_member_that_will_not_come_releases_its_round() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        let ids = nics(&cloud, 2).await;
        let b = Arc::new(Batcher::new(
            cloud.clone(),
            BatchConfig {
                window: Duration::from_secs(600),
                ..cfg()
            },
        ));
        b.plan_attach(
            "i-1",
            ["a".to_string(), "b".to_string(), "failed".to_string()],
        );
        let all = futures::future::join_all(
            ids.iter()
                .zip(["a", "b"])
                .map(|(id, m)| b.attach("i-1", id, m, Priority::Refill)),
        );
        let forget = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            b.forget("failed");
        };
        let (jobs, ()) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(all, forget) })
                .await
                .expect("released by forget");
        assert!(jobs.iter().all(Result::is_ok));
        assert_eq!(cloud.calls()["AttachNics"], 1);
    }

    #[tokio::test]
    async fn a_batch_refused_for_its_size_is_halved_and_the_limit_kept() {
        let cloud = Arc::new(FakeCloud::new(Duration::ZERO));
        cloud.add_vxnet("vxnet-a", 100);
        cloud.add_instance("i-1", "vxnet-a");
        cloud.limit_batches(5);
        let ids = nics(&cloud, 20).await;
        let b = Arc::new(Batcher::new(
            cloud.clone(),
            BatchConfig {
                max_attach: 20,
                ..cfg()
            },
        ));
        let attach_all = |ids: Vec<String>| {
            let b = b.clone();
            async move {
                b.plan_attach("i-1", ids.iter().cloned());
                futures::future::join_all(
                    ids.iter()
                        .map(|id| b.attach("i-1", id, id, Priority::Refill)),
                )
                .await
            }
        };
        let jobs = attach_all(ids[..10].to_vec()).await;
        assert!(jobs.iter().all(Result::is_ok), "{jobs:?}");
        assert_eq!(
            cloud.calls()["AttachNics"],
            3,
            "10 refused, then two halves of 5"
        );
        let jobs = attach_all(ids[10..].to_vec()).await;
        assert!(jobs.iter().all(Result::is_ok), "{jobs:?}");
        assert_eq!(
            cloud.calls()["AttachNics"],
            5,
            "the next round uses the limit that worked"
        );
        assert!(cloud.nics().iter().all(|n| n.state == NicState::InUse));
    }
}
