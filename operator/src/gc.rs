//! Garbage collection against the cloud. Cloud NICs named with this cluster's prefix that no
//! HostNic owns are deleted only after being seen orphaned in two passes, when older than a
//! grace period and not in a running job (attached ones are detached first). HostNics whose
//! cloud NIC vanished (seen missing twice) are marked Failed, so their pool replaces them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hostnic_crds::{HostNic, HostNicPhase};
use jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::cloud::{Job, Nic, NicQuery, NicState, Priority};
use crate::controller::Context;
use crate::error::{Error, Result};
use crate::plan::conditions::{self, Cond};

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
}

/// What one GC pass decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// Orphans to detach (attached) or delete (free).
    pub collect: Vec<Nic>,
    /// Orphans seen once so far, by NIC id: the memory for the next pass.
    pub suspects: HashSet<String>,
    /// HostNics whose NIC is gone (seen missing twice).
    pub vanished: Vec<String>,
    /// HostNics seen missing once: memory for the next pass.
    pub missing: HashSet<String>,
}

/// Phases in which a HostNic's NIC must exist in the cloud.
fn must_exist(p: HostNicPhase) -> bool {
    matches!(
        p,
        HostNicPhase::Available | HostNicPhase::Bound | HostNicPhase::Released
    )
}

/// One pass of GC decisions. `suspects`/`missing` are the previous pass's memory.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    cloud: &[Nic],
    owners: &[Owner],
    running_jobs: &[Job],
    prefix: &str,
    suspects: &HashSet<String>,
    missing: &HashSet<String>,
    grace: Duration,
    now: Timestamp,
) -> Verdict {
    let owned_ids: HashSet<&str> = owners.iter().filter_map(|o| o.nic_id.as_deref()).collect();
    // A HostNic without a NIC id yet may be about to adopt a NIC created under its name.
    let adopting: HashSet<String> = owners
        .iter()
        .filter(|o| o.nic_id.is_none())
        .map(|o| format!("{prefix}{}", o.uid))
        .collect();
    let busy: HashSet<&str> = running_jobs
        .iter()
        .flat_map(|j| j.nics.iter().map(String::as_str))
        .collect();
    let mut v = Verdict::default();
    for nic in cloud.iter().filter(|n| n.name.starts_with(prefix)) {
        if owned_ids.contains(nic.id.as_str())
            || adopting.contains(&nic.name)
            || busy.contains(nic.id.as_str())
        {
            continue;
        }
        let old = nic
            .created
            .is_none_or(|c| now.duration_since(c).unsigned_abs() >= grace);
        if suspects.contains(&nic.id) && old {
            v.collect.push(nic.clone());
        } else {
            v.suspects.insert(nic.id.clone());
        }
    }
    let in_cloud: HashSet<&str> = cloud.iter().map(|n| n.id.as_str()).collect();
    for o in owners.iter().filter(|o| must_exist(o.phase)) {
        let Some(id) = o.nic_id.as_deref() else {
            continue;
        };
        if in_cloud.contains(id) {
            continue;
        }
        if missing.contains(&o.name) {
            v.vanished.push(o.name.clone());
        } else {
            v.missing.insert(o.name.clone());
        }
    }
    v
}

/// GC's memory between passes.
#[derive(Debug, Default)]
pub struct Collector {
    suspects: HashSet<String>,
    missing: HashSet<String>,
}

impl Collector {
    /// Runs one pass. Returns the NICs it deleted or detached (or would have, in dry run).
    pub async fn pass(&mut self, ctx: &Context) -> Result<Vec<String>> {
        let prio = Priority::Background;
        let api: Api<HostNic> = Api::all(ctx.client.clone());
        let objs = api
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list HostNics"))?
            .items;
        let owners: Vec<Owner> = objs
            .iter()
            .map(|h| Owner {
                name: h.name_any(),
                uid: h.uid().unwrap_or_default(),
                nic_id: h.status.as_ref().and_then(|s| s.nic_id.clone()),
                phase: h.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            })
            .collect();
        let prefix = ctx.settings.nic_prefix.clone();
        let cloud = ctx
            .cloud
            .describe_nics(NicQuery::NamePrefix(prefix.clone()), prio)
            .await?;
        let judge = |jobs: &[Job]| {
            decide(
                &cloud,
                &owners,
                jobs,
                &prefix,
                &self.suspects,
                &self.missing,
                ctx.settings.gc_grace,
                Timestamp::now(),
            )
        };
        let mut v = judge(&[]);
        // Running jobs are listed (all jobs of the account, paged) only when something would
        // be collected: most passes then cost a single DescribeNics.
        if !v.collect.is_empty() {
            let jobs = ctx.cloud.running_jobs(prio).await?;
            v = judge(&jobs);
        }
        self.suspects = v.suspects;
        self.missing = v.missing;
        let dry = ctx.settings.gc_dry_run;
        let mut acted = Vec::new();
        for nic in &v.collect {
            let label = crate::metrics::GcLabels {
                dry_run: if dry { "true" } else { "false" },
            };
            if dry {
                tracing::info!(nic = %nic.id, name = %nic.name, state = ?nic.state, "gc dry run: would delete orphaned NIC");
                ctx.metrics.gc_deletions.get_or_create(&label).inc();
                acted.push(nic.id.clone());
                continue;
            }
            let r = match nic.state {
                NicState::InUse => ctx.batch.detach(&nic.id, prio).await.map(|_| ()),
                NicState::Available => ctx.batch.delete(&nic.id, prio).await,
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
        for name in &v.vanished {
            let Some(h) = objs.iter().find(|h| &h.name_any() == name) else {
                continue;
            };
            let mut next = h.clone();
            let mut s = next.status.take().unwrap_or_default();
            s.phase = HostNicPhase::Failed;
            s.conditions = conditions::set(
                &s.conditions,
                &Cond::new(
                    "CloudError",
                    true,
                    "NicVanished",
                    "the cloud NIC no longer exists",
                ),
                h.metadata.generation,
                Timestamp::now(),
            );
            next.status = Some(s);
            match api
                .replace_status(name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => {
                    ctx.event(
                        h,
                        EventType::Warning,
                        "NicVanished",
                        "the cloud NIC no longer exists; it will be replaced".into(),
                        "GarbageCollect",
                    )
                    .await;
                }
                Err(error) => {
                    tracing::warn!(hostnic = %name, %error, "gc could not mark HostNic failed")
                }
            }
        }
        Ok(acted)
    }

    /// Runs passes every `gc_interval` until `stop`.
    pub async fn run(mut self, ctx: Arc<Context>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(ctx.settings.gc_interval) => {}
            }
            if let Err(error) = self.pass(&ctx).await {
                tracing::warn!(%error, "gc pass failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::JobState;

    const P: &str = "hostnic-c1-";

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
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(10_000).unwrap()
    }

    const GRACE: Duration = Duration::from_secs(300);

    #[test]
    fn orphans_need_two_passes_and_age() {
        let cloud = [nic("m1", "hostnic-c1-u1", 1000)];
        let v1 = decide(
            &cloud,
            &[],
            &[],
            P,
            &HashSet::new(),
            &HashSet::new(),
            GRACE,
            now(),
        );
        assert!(v1.collect.is_empty());
        assert!(v1.suspects.contains("m1"));
        let v2 = decide(
            &cloud,
            &[],
            &[],
            P,
            &v1.suspects,
            &HashSet::new(),
            GRACE,
            now(),
        );
        assert_eq!(v2.collect.len(), 1);
        // Too young: stays a suspect.
        let young = [nic("m1", "hostnic-c1-u1", 9_900)];
        let v3 = decide(
            &young,
            &[],
            &[],
            P,
            &v1.suspects,
            &HashSet::new(),
            GRACE,
            now(),
        );
        assert!(v3.collect.is_empty() && v3.suspects.contains("m1"));
    }

    #[test]
    fn owned_adopting_foreign_and_busy_nics_are_kept() {
        let cloud = [
            nic("m1", "hostnic-c1-u1", 0),
            nic("m2", "hostnic-c1-u2", 0),
            nic("m3", "hostnic-other-u3", 0),
            nic("m4", "retained-hostnic-c1-u4", 0),
            nic("m5", "hostnic-c1-u5", 0),
        ];
        let owners = [
            owner("a", "u1", Some("m1"), HostNicPhase::Available),
            owner("b", "u2", None, HostNicPhase::Creating),
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
        let v = decide(
            &cloud,
            &owners,
            &jobs,
            P,
            &all,
            &HashSet::new(),
            GRACE,
            now(),
        );
        assert!(v.collect.is_empty(), "{v:?}");
        assert!(v.suspects.is_empty());
    }

    #[test]
    fn duplicate_of_an_adopted_nic_is_an_orphan() {
        let cloud = [nic("m1", "hostnic-c1-u1", 0), nic("m2", "hostnic-c1-u1", 0)];
        let owners = [owner("a", "u1", Some("m1"), HostNicPhase::Attaching)];
        let v = decide(
            &cloud,
            &owners,
            &[],
            P,
            &["m2".to_string()].into(),
            &HashSet::new(),
            GRACE,
            now(),
        );
        assert_eq!(
            v.collect.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["m2"]
        );
    }

    #[test]
    fn vanished_nics_fail_their_hostnic_after_two_passes() {
        let owners = [
            owner("a", "u1", Some("m1"), HostNicPhase::Available),
            owner("b", "u2", Some("m2"), HostNicPhase::Attaching),
        ];
        let v1 = decide(
            &[],
            &owners,
            &[],
            P,
            &HashSet::new(),
            &HashSet::new(),
            GRACE,
            now(),
        );
        assert!(v1.vanished.is_empty());
        assert_eq!(v1.missing, ["a".to_string()].into());
        let v2 = decide(
            &[],
            &owners,
            &[],
            P,
            &HashSet::new(),
            &v1.missing,
            GRACE,
            now(),
        );
        assert_eq!(v2.vanished, ["a".to_string()]);
    }
}
