//! Garbage collection against the cloud, limited to what is provably this cluster's. A cloud
//! NIC is ours only if its name is exactly `hostnic-<cluster>-<uuid>` (see [`owned_uid`]; the
//! uuid is a HostNic's uid or its create batch's id), so cluster `prod` never touches
//! `prod-eu`'s NICs. A NIC named after a HostNic or a batch whose member has no NIC yet is
//! kept: that member may be about to take it. Passes list only the NICs of the vxnets the
//! pools and HostNics use, every `gc_interval` and soon after a side-effecting call lost its
//! answer. Orphans go only after being seen in two passes, when known to be older than a
//! grace period and not in a pending or working job (attached ones are detached first). A
//! HostNic whose NIC is absent from two listings and from a by-id DescribeNics is marked
//! Failed (replaced by its pool), or, when a pod holds it, only flagged with a condition and
//! an event. Dry run writes and deletes nothing.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hostnic_crds::{HostNic, HostNicPhase, NicPool};
use jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::cloud::{CloudApi, Job, Nic, NicQuery, NicState, Priority};
use crate::controller::Context;
use crate::controller::create_batch::BatchTag;
use crate::error::{Error, Result};
use crate::plan::conditions::{self, Cond};

// One parser of NIC names for the operator and `kubectl hostnic leaks`.
pub use hostnic_crds::names::{hostnic_cluster, is_uuid, owned_uid};

/// The cluster name the operator uses when none is given.
pub const DEFAULT_CLUSTER: &str = "kubernetes";

/// Refuses the default cluster name while NICs of other hostnic clusters exist in the
/// account: two clusters left at the default would collect each other's NICs.
pub async fn check_cluster_name(cluster: &str, cloud: &dyn CloudApi) -> anyhow::Result<()> {
    if cluster != DEFAULT_CLUSTER {
        return Ok(());
    }
    // Once per start, and only with the default name: the one whole-account listing.
    let nics = cloud
        .describe_nics(NicQuery::All, Priority::Refill)
        .await
        .map_err(|e| anyhow::anyhow!("list the account's NICs to check the cluster name: {e}"))?;
    let others: BTreeSet<&str> = nics
        .iter()
        .filter_map(|n| hostnic_cluster(&n.name))
        .filter(|c| *c != cluster)
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to start with the default cluster name `{DEFAULT_CLUSTER}`: the account \
         has hostnic NICs of other clusters ({}); give this cluster a name of its own with \
         --cluster-name (HOSTNIC_CLUSTER_NAME), so garbage collection can tell its NICs apart",
        others.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// A HostNic as GC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// HostNic name.
    pub name: String,
    /// metadata.uid.
    pub uid: String,
    /// status.nicId.
    pub nic_id: Option<String>,
    /// Phase.
    pub phase: HostNicPhase,
    /// Id of its create batch, when it has one.
    pub batch: Option<String>,
}

/// What one GC pass decided from the listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// Orphans to detach (attached) or delete (free).
    pub collect: Vec<Nic>,
    /// Orphans seen once so far (or too young), by NIC id: the memory for the next pass.
    pub suspects: HashSet<String>,
    /// HostNics whose NIC the listing does not show, with the NIC id: to confirm by id.
    pub absent: Vec<(String, String)>,
}

/// Phases in which a HostNic's NIC must exist in the cloud.
fn must_exist(p: HostNicPhase) -> bool {
    matches!(
        p,
        HostNicPhase::Available | HostNicPhase::Bound | HostNicPhase::Released
    )
}

/// One pass of GC decisions over a listing. `suspects` is the previous pass's memory.
pub fn decide(
    cloud: &[Nic],
    owners: &[Owner],
    running_jobs: &[Job],
    prefix: &str,
    suspects: &HashSet<String>,
    grace: Duration,
    now: Timestamp,
) -> Verdict {
    let owned_ids: HashSet<&str> = owners.iter().filter_map(|o| o.nic_id.as_deref()).collect();
    // A HostNic without a NIC id yet may be about to adopt a NIC created under its name, or
    // under its batch's name.
    let adopting: HashSet<&str> = owners
        .iter()
        .filter(|o| o.nic_id.is_none())
        .flat_map(|o| std::iter::once(o.uid.as_str()).chain(o.batch.as_deref()))
        .collect();
    let busy: HashSet<&str> = running_jobs
        .iter()
        .flat_map(|j| j.nics.iter().map(String::as_str))
        .collect();
    let mut v = Verdict::default();
    for nic in cloud {
        let Some(uid) = owned_uid(&nic.name, prefix) else {
            continue;
        };
        if owned_ids.contains(nic.id.as_str())
            || adopting.contains(uid)
            || busy.contains(nic.id.as_str())
        {
            continue;
        }
        // An unknown creation time counts as young: the grace period is never skipped.
        let old = nic
            .created
            .is_some_and(|c| now.duration_since(c).unsigned_abs() >= grace);
        if suspects.contains(&nic.id) && old {
            v.collect.push(nic.clone());
        } else {
            v.suspects.insert(nic.id.clone());
        }
    }
    let listed: HashSet<&str> = cloud.iter().map(|n| n.id.as_str()).collect();
    v.absent = owners
        .iter()
        .filter(|o| must_exist(o.phase))
        .filter_map(|o| Some((o.name.clone(), o.nic_id.clone()?)))
        .filter(|(_, id)| !listed.contains(id.as_str()))
        .collect();
    v
}

/// Splits HostNics whose NIC a by-id DescribeNics also did not find into those missing in
/// the previous pass too (vanished) and the memory for the next pass.
pub fn vanished(confirmed: &[String], missing: &HashSet<String>) -> (Vec<String>, HashSet<String>) {
    let (gone, first): (Vec<String>, Vec<String>) =
        confirmed.iter().cloned().partition(|n| missing.contains(n));
    (gone, first.into_iter().collect())
}

/// The vxnets worth listing: those of every pool and every HostNic (a pool may have dropped
/// a vxnet its HostNics still use).
fn vxnets_in_use(pools: &[NicPool], hostnics: &[HostNic]) -> Vec<String> {
    let set: BTreeSet<String> = pools
        .iter()
        .flat_map(|p| p.spec.vxnets.iter().cloned())
        .chain(hostnics.iter().map(|h| h.spec.vxnet.clone()))
        .collect();
    set.into_iter().collect()
}

/// When the next pass runs after one that left `memory` entries (suspects or missing
/// HostNics to look at again): once the grace period is over, so a fresh orphan goes in
/// about `grace` instead of a whole interval, but never sooner than `settle`.
pub fn next_pass(memory: bool, interval: Duration, grace: Duration, settle: Duration) -> Duration {
    if memory {
        grace.max(settle).min(interval)
    } else {
        interval
    }
}

/// GC's memory between passes.
#[derive(Debug, Default)]
pub struct Collector {
    suspects: HashSet<String>,
    missing: HashSet<String>,
}

impl Collector {
    /// Whether the last pass left something to look at again.
    fn remembers(&self) -> bool {
        !self.suspects.is_empty() || !self.missing.is_empty()
    }

    /// Runs one pass. Returns the NICs it deleted or detached (or would have, in dry run).
    pub async fn pass(&mut self, ctx: &Context) -> Result<Vec<String>> {
        let prio = Priority::Background;
        let api: Api<HostNic> = Api::all(ctx.client.clone());
        let objs = api
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list HostNics"))?
            .items;
        let pools = Api::<NicPool>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list NicPools"))?
            .items;
        let owners: Vec<Owner> = objs
            .iter()
            .map(|h| Owner {
                name: h.name_any(),
                uid: h.uid().unwrap_or_default(),
                nic_id: h.status.as_ref().and_then(|s| s.nic_id.clone()),
                phase: h.status.as_ref().map(|s| s.phase).unwrap_or_default(),
                batch: BatchTag::of(h).map(|t| t.id),
            })
            .collect();
        let prefix = ctx.settings.nic_prefix.clone();
        let vxnets = vxnets_in_use(&pools, &objs);
        let cloud = ctx
            .cloud
            .describe_nics(NicQuery::Vxnets(vxnets), prio)
            .await?;
        let judge = |jobs: &[Job]| {
            decide(
                &cloud,
                &owners,
                jobs,
                &prefix,
                &self.suspects,
                ctx.settings.gc_grace,
                Timestamp::now(),
            )
        };
        let mut v = judge(&[]);
        // Running jobs are listed only when something would be collected: most passes then
        // cost the listing alone.
        if !v.collect.is_empty() {
            let jobs = ctx.cloud.running_jobs(prio).await?;
            v = judge(&jobs);
        }
        // A NIC the listing missed is looked up by id before anything is written: a listing
        // is paged and not atomic, a by-id answer is.
        let absent_ids: Vec<String> = v.absent.iter().map(|(_, id)| id.clone()).collect();
        let found: HashSet<String> = if absent_ids.is_empty() {
            HashSet::new()
        } else {
            ctx.cloud
                .describe_nics(NicQuery::Ids(absent_ids), prio)
                .await?
                .into_iter()
                .map(|n| n.id)
                .collect()
        };
        let confirmed: Vec<String> = v
            .absent
            .iter()
            .filter(|(_, id)| !found.contains(id))
            .map(|(name, _)| name.clone())
            .collect();
        let (gone, missing) = vanished(&confirmed, &self.missing);
        self.suspects = v.suspects;
        self.missing = missing;
        let acted = self.collect(ctx, &v.collect).await;
        for name in &gone {
            if let Some(h) = objs.iter().find(|h| &h.name_any() == name) {
                mark_vanished(ctx, &api, h).await;
            }
        }
        Ok(acted)
    }

    /// Detaches or deletes orphans (only reports them in dry run).
    async fn collect(&mut self, ctx: &Context, orphans: &[Nic]) -> Vec<String> {
        let prio = Priority::Background;
        let dry = ctx.settings.gc_dry_run;
        let mut acted = Vec::new();
        for nic in orphans {
            let label = crate::metrics::GcLabels::new(dry);
            if dry {
                tracing::info!(nic = %nic.id, name = %nic.name, state = ?nic.state, "gc dry run: would delete orphaned NIC");
                ctx.metrics.gc_deletions.get_or_create(&label).inc();
                acted.push(nic.id.clone());
                continue;
            }
            let r = match nic.state {
                NicState::InUse => ctx
                    .batch
                    .detach(nic.instance.as_deref(), &nic.id, None, prio)
                    .await
                    .map(|_| ()),
                NicState::Available => {
                    ctx.batch
                        .delete(nic.instance.as_deref(), &nic.id, None, prio)
                        .await
                }
            };
            match r {
                Ok(()) => {
                    tracing::info!(nic = %nic.id, name = %nic.name, state = ?nic.state, "gc: removing orphaned NIC");
                    if nic.state == NicState::Available {
                        ctx.metrics.gc_deletions.get_or_create(&label).inc();
                    } else {
                        // Detached now, deleted on a later pass: keep it a suspect.
                        self.suspects.insert(nic.id.clone());
                    }
                    acted.push(nic.id.clone());
                }
                Err(e) if e.is_not_found() => {}
                Err(error) => {
                    tracing::warn!(nic = %nic.id, %error, "gc could not remove orphaned NIC")
                }
            }
        }
        acted
    }

    /// Runs passes every `gc_interval` (sooner while suspects wait for their grace period,
    /// and `gc_settle` after a lost CreateNics/DeleteNics answer) until `stop`. The first
    /// pass runs `gc_settle` after the start: a new leader may follow one that crashed
    /// mid-call, the one lost answer nobody reported.
    pub async fn run(mut self, ctx: Arc<Context>, stop: CancellationToken) {
        let lost = ctx.cloud.lost_answers();
        let s = &ctx.settings;
        // The count exists from the start, at 0: `increase()` then sees the first orphan.
        drop(
            ctx.metrics
                .gc_deletions
                .get_or_create(&crate::metrics::GcLabels::new(s.gc_dry_run)),
        );
        let mut wait = s.gc_settle;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = async {
                    match &lost {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Give the owner a moment to adopt its NIC by name before GC judges it.
                    tracing::info!("gc: a cloud answer was lost, looking for orphans early");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(s.gc_settle) => {}
                    }
                }
            }
            if let Err(error) = self.pass(&ctx).await {
                tracing::warn!(%error, "gc pass failed");
            }
            wait = next_pass(self.remembers(), s.gc_interval, s.gc_grace, s.gc_settle);
        }
    }
}

/// Acts on a HostNic whose NIC is gone: Failed, so its pool replaces it; but a NIC a pod
/// holds keeps its phase (failing it would make cleanup detach whatever the pod uses) and
/// only gets a condition and an event. Dry run only reports.
async fn mark_vanished(ctx: &Context, api: &Api<HostNic>, h: &HostNic) {
    let name = h.name_any();
    let bound = h
        .status
        .as_ref()
        .is_some_and(|s| s.phase == HostNicPhase::Bound);
    if ctx.settings.gc_dry_run {
        tracing::info!(hostnic = %name, bound, "gc dry run: would mark HostNic whose cloud NIC vanished");
        return;
    }
    let mut next = h.clone();
    let mut s = next.status.take().unwrap_or_default();
    let (message, note) = if bound {
        (
            "the cloud NIC no longer exists; the pod keeps its phase until it releases the NIC",
            "the cloud NIC no longer exists; it is replaced once its pod releases it",
        )
    } else {
        (
            "the cloud NIC no longer exists",
            "the cloud NIC no longer exists; it will be replaced",
        )
    };
    let cond = Cond::new("CloudError", true, "NicVanished", message);
    if bound
        && s.conditions
            .iter()
            .any(|c| c.type_ == "CloudError" && c.status == "True" && c.reason == "NicVanished")
    {
        return;
    }
    if !bound {
        s.phase = HostNicPhase::Failed;
    }
    s.conditions = conditions::set(
        &s.conditions,
        &cond,
        h.metadata.generation,
        Timestamp::now(),
    );
    next.status = Some(s);
    // The listed resourceVersion makes this a conditional write: a HostNic that changed
    // since (claimed, released, re-adopted) is judged again next pass.
    match api
        .replace_status(&name, &PostParams::default(), &next)
        .await
    {
        Ok(_) => {
            ctx.event(
                h,
                EventType::Warning,
                "NicVanished",
                note.into(),
                "GarbageCollect",
            )
            .await;
        }
        Err(error) => tracing::warn!(hostnic = %name, %error, "gc could not mark HostNic vanished"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::JobState;

    const P: &str = "hostnic-c1-";
    const U1: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
    const U2: &str = "1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
    const U4: &str = "3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
    const U5: &str = "4f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";

    fn name(uid: &str) -> String {
        format!("{P}{uid}")
    }

    fn nic(id: &str, name: &str, created: i64) -> Nic {
        Nic {
            id: id.into(),
            name: name.into(),
            state: NicState::Available,
            instance: None,
            vxnet: "vxnet-a".into(),
            private_ip: None,
            created: Some(Timestamp::from_second(created).unwrap()),
        }
    }

    fn owner(name: &str, uid: &str, nic_id: Option<&str>, phase: HostNicPhase) -> Owner {
        Owner {
            name: name.into(),
            uid: uid.into(),
            nic_id: nic_id.map(str::to_string),
            phase,
            batch: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(10_000).unwrap()
    }

    const GRACE: Duration = Duration::from_secs(300);

    fn decide_alone(cloud: &[Nic], suspects: &HashSet<String>) -> Verdict {
        decide(cloud, &[], &[], P, suspects, GRACE, now())
    }

    #[test]
    fn ownership_is_the_exact_name_grammar() {
        assert_eq!(owned_uid(&name(U1), P), Some(U1));
        for foreign in [
            // Another cluster whose name extends ours: `c1-eu`, `c1-2`.
            format!("hostnic-c1-eu-{U1}"),
            format!("hostnic-c1-2-{U1}"),
            format!("retained-hostnic-c1-{U1}"),
            format!("{P}{}", U1.to_uppercase()),
            format!("{P}{U1}-x"),
            format!("{P}0000-dead"),
            "hostnic-c1-".into(),
            "someone-elses-nic".into(),
        ] {
            assert_eq!(owned_uid(&foreign, P), None, "{foreign}");
        }
        assert_eq!(
            hostnic_cluster(&format!("hostnic-prod-eu-{U1}")),
            Some("prod-eu")
        );
        assert_eq!(hostnic_cluster(&format!("hostnic-{U1}")), None);
        assert_eq!(hostnic_cluster(&format!("retained-hostnic-a-{U1}")), None);
        assert_eq!(hostnic_cluster("hostnic-a-b"), None);
        assert!(!is_uuid("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0fg"));
        assert!(!is_uuid("0f1e2d3c14b5a-4978-8695-a4b3c2d1e0f1"));
    }

    #[test]
    fn cluster_prod_never_collects_prod_eu() {
        let prod = "hostnic-prod-";
        let cloud = [
            nic("m1", &format!("hostnic-prod-eu-{U1}"), 0),
            nic("m2", &format!("hostnic-prod-{U2}"), 0),
        ];
        let all: HashSet<String> = ["m1".into(), "m2".into()].into();
        let v = decide(&cloud, &[], &[], prod, &all, GRACE, now());
        assert_eq!(
            v.collect.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["m2"]
        );
        assert_eq!(v.suspects, HashSet::new());
        // And the other way round.
        let v = decide(&cloud, &[], &[], "hostnic-prod-eu-", &all, GRACE, now());
        assert_eq!(
            v.collect.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["m1"]
        );
    }

    #[test]
    fn orphans_need_two_passes_and_age() {
        let cloud = [nic("m1", &name(U1), 1000)];
        let v1 = decide_alone(&cloud, &HashSet::new());
        assert!(v1.collect.is_empty());
        assert!(v1.suspects.contains("m1"));
        let v2 = decide_alone(&cloud, &v1.suspects);
        assert_eq!(v2.collect.len(), 1);
        // Too young: stays a suspect.
        let young = [nic("m1", &name(U1), 9_900)];
        let v3 = decide_alone(&young, &v1.suspects);
        assert!(v3.collect.is_empty() && v3.suspects.contains("m1"));
    }

    #[test]
    fn unknown_age_counts_as_young() {
        let mut n = nic("m1", &name(U1), 0);
        n.created = None;
        let v = decide_alone(&[n], &["m1".to_string()].into());
        assert!(v.collect.is_empty(), "{v:?}");
        assert!(v.suspects.contains("m1"));
    }

    #[test]
    fn owned_adopting_foreign_and_busy_nics_are_kept() {
        let cloud = [
            nic("m1", &name(U1), 0),
            nic("m2", &name(U2), 0),
            nic("m3", &format!("hostnic-other-{U1}"), 0),
            nic("m4", &format!("retained-{}", name(U4)), 0),
            nic("m5", &name(U5), 0),
        ];
        let owners = [
            owner("a", U1, Some("m1"), HostNicPhase::Available),
            owner("b", U2, None, HostNicPhase::Creating),
        ];
        let jobs = [Job {
            id: "j-1".into(),
            action: "AttachNics".into(),
            state: JobState::Running,
            nics: vec!["m5".into()],
            created: None,
        }];
        let all: HashSet<String> = ["m1", "m2", "m3", "m4", "m5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = decide(&cloud, &owners, &jobs, P, &all, GRACE, now());
        assert!(v.collect.is_empty(), "{v:?}");
        assert!(v.suspects.is_empty());
    }

    #[test]
    fn batch_nics_are_kept_while_a_member_waits_for_one() {
        const B: &str = "5f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
        // Three NICs of batch B: two recorded by members, one for the member still waiting.
        let cloud = [
            nic("m1", &name(B), 0),
            nic("m2", &name(B), 0),
            nic("m3", &name(B), 0),
        ];
        let member = |n: &str, uid: &str, id: Option<&str>| Owner {
            batch: Some(B.into()),
            ..owner(n, uid, id, HostNicPhase::Attaching)
        };
        let waiting = [
            member("a", U1, Some("m1")),
            member("b", U2, Some("m2")),
            member("c", U4, None),
        ];
        let all: HashSet<String> = ["m1", "m2", "m3"].iter().map(|s| s.to_string()).collect();
        let v = decide(&cloud, &waiting, &[], P, &all, GRACE, now());
        assert!(v.collect.is_empty() && v.suspects.is_empty(), "{v:?}");
        // Once every member has its NIC, a surplus NIC of the batch is an orphan.
        let done = [member("a", U1, Some("m1")), member("b", U2, Some("m2"))];
        let v = decide(&cloud, &done, &[], P, &all, GRACE, now());
        assert_eq!(
            v.collect.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["m3"]
        );
    }

    #[test]
    fn another_clusters_batch_nics_are_never_collected() {
        const B: &str = "5f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
        // `c1-eu`'s batch, and a NIC of ours named after the same batch id.
        let cloud = [
            nic("m1", &format!("hostnic-c1-eu-{B}"), 0),
            nic("m2", &format!("hostnic-c1-eu-{B}"), 0),
            nic("m3", &name(B), 0),
        ];
        let all: HashSet<String> = ["m1", "m2", "m3"].iter().map(|s| s.to_string()).collect();
        for _ in 0..2 {
            let v = decide(&cloud, &[], &[], P, &all, GRACE, now());
            assert_eq!(
                v.collect.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
                ["m3"]
            );
            assert!(!v.suspects.contains("m1") && !v.suspects.contains("m2"));
        }
        // In c1-eu's own pass, its waiting member keeps its batch's NICs, and ours is never
        // its to collect.
        let theirs = [Owner {
            batch: Some(B.into()),
            ..owner("x", U1, None, HostNicPhase::Creating)
        }];
        let v = decide(&cloud, &theirs, &[], "hostnic-c1-eu-", &all, GRACE, now());
        assert!(v.collect.is_empty(), "{v:?}");
    }

    #[test]
    fn duplicate_of_an_adopted_nic_is_an_orphan() {
        let cloud = [nic("m1", &name(U1), 0), nic("m2", &name(U1), 0)];
        let owners = [owner("a", U1, Some("m1"), HostNicPhase::Attaching)];
        let v = decide(
            &cloud,
            &owners,
            &[],
            P,
            &["m2".to_string()].into(),
            GRACE,
            now(),
        );
        assert_eq!(
            v.collect.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["m2"]
        );
    }

    #[test]
    fn absent_nics_are_confirmed_then_vanish_after_two_passes() {
        let owners = [
            owner("a", U1, Some("m1"), HostNicPhase::Available),
            owner("b", U2, Some("m2"), HostNicPhase::Attaching),
            owner("c", U4, Some("m4"), HostNicPhase::Bound),
        ];
        let v = decide(&[], &owners, &[], P, &HashSet::new(), GRACE, now());
        // Attaching NICs may not be visible yet: only settled phases are checked.
        assert_eq!(
            v.absent,
            [
                ("a".to_string(), "m1".to_string()),
                ("c".into(), "m4".into())
            ]
        );
        // The by-id check found `c`: only `a` is missing, and only from the second time on.
        let (gone, missing) = vanished(&["a".to_string()], &HashSet::new());
        assert!(gone.is_empty());
        assert_eq!(missing, ["a".to_string()].into());
        let (gone, missing) = vanished(&["a".to_string()], &missing);
        assert_eq!(gone, ["a".to_string()]);
        assert!(missing.is_empty());
    }

    #[test]
    fn passes_are_rare_unless_something_waits() {
        let interval = Duration::from_secs(900);
        let settle = Duration::from_secs(30);
        assert_eq!(next_pass(false, interval, GRACE, settle), interval);
        assert_eq!(next_pass(true, interval, GRACE, settle), GRACE);
        assert_eq!(next_pass(true, interval, Duration::ZERO, settle), settle);
        assert_eq!(
            next_pass(true, interval, Duration::from_secs(3600), settle),
            interval
        );
    }

    #[test]
    fn default_gc_interval_is_between_10_and_30_minutes() {
        let s = <crate::args::Args as clap::Parser>::parse_from(["hostnic-operator"]).settings();
        assert!(
            (600..=1800).contains(&s.gc_interval.as_secs()),
            "{:?}",
            s.gc_interval
        );
    }
}
