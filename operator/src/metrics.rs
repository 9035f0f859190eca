//! Prometheus metrics: reconcile counts, durations and failures, cloud calls per action (and
//! per NIC created), pool counts per pool and node, pool conditions, GC deletions, leadership.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `nicpool` or `hostnic`.
    pub controller: &'static str,
}

/// Labels of a reconcile failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `nicpool` or `hostnic`.
    pub controller: &'static str,
    /// `Error::metric_label`.
    pub error: &'static str,
}

/// Labels of a cloud call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudLabels {
    /// QingCloud action.
    pub action: &'static str,
    /// `ok` or the error class.
    pub result: &'static str,
}

/// Labels of a pool count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// NicPool name.
    pub pool: String,
    /// Node name.
    pub node: String,
    /// available, bound, in_progress or failed.
    pub state: &'static str,
}

/// Labels of a pool condition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// NicPool name.
    pub pool: String,
    /// Ready, Progressing or Degraded.
    pub condition: &'static str,
}

/// Labels of a GC deletion.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GcLabels {
    /// Whether it was only reported (dry run).
    pub dry_run: &'static str,
}

impl GcLabels {
    /// The label of a GC that deletes (`dry_run: false`) or only reports.
    pub fn new(dry_run: bool) -> Self {
        Self {
            dry_run: if dry_run { "true" } else { "false" },
        }
    }
}

/// The condition types of a NicPool's status.
pub const POOL_CONDITIONS: [&str; 3] = ["Ready", "Progressing", "Degraded"];

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric of the operator.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles that failed, by error.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconcile duration.
    pub duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    /// Cloud calls.
    pub cloud_calls: Family<CloudLabels, Counter>,
    /// Cloud NICs created.
    pub nics_created: Counter,
    /// Cloud NICs deleted.
    pub nics_deleted: Counter,
    /// Cloud calls divided by NICs created, in thousandths (a gauge of integers).
    pub calls_per_nic_milli: Gauge,
    /// NICs per pool, node and state.
    pub pool_nics: Family<PoolLabels, Gauge>,
    /// 1 while a pool's condition is True, 0 while False.
    pub pool_condition: Family<ConditionLabels, Gauge>,
    /// NICs GC deleted (or would have).
    pub gc_deletions: Family<GcLabels, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    total_calls: AtomicU64,
}

impl Metrics {
    /// Registers every metric under `hostnic_operator_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            cloud_calls: Family::default(),
            nics_created: Counter::default(),
            nics_deleted: Counter::default(),
            calls_per_nic_milli: Gauge::default(),
            pool_nics: Family::default(),
            pool_condition: Family::default(),
            gc_deletions: Family::default(),
            leader: Gauge::default(),
            total_calls: AtomicU64::new(0),
        };
        let r = registry.sub_registry_with_prefix("hostnic_operator");
        r.register("reconciles", "Reconciles run", m.reconciles.clone());
        r.register(
            "reconcile_failures",
            "Reconciles failed, by error",
            m.failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            m.duration.clone(),
        );
        r.register(
            "cloud_calls",
            "QingCloud API calls by action and result",
            m.cloud_calls.clone(),
        );
        r.register("nics_created", "Cloud NICs created", m.nics_created.clone());
        r.register("nics_deleted", "Cloud NICs deleted", m.nics_deleted.clone());
        r.register(
            "cloud_calls_per_nic_milli",
            "QingCloud API calls per NIC created, times 1000",
            m.calls_per_nic_milli.clone(),
        );
        r.register(
            "pool_nics",
            "NICs per pool, node and state",
            m.pool_nics.clone(),
        );
        r.register(
            "pool_condition",
            "1 while the NicPool's condition (Ready, Progressing, Degraded) is True",
            m.pool_condition.clone(),
        );
        r.register(
            "gc_deletions",
            "Orphaned cloud NICs GC deleted (dry_run: would delete)",
            m.gc_deletions.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease",
            m.leader.clone(),
        );
        m
    }

    /// Starts timing a reconcile; the duration is recorded when the guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn failure(&self, controller: &'static str, error: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, error })
            .inc();
    }

    /// Counts a cloud call.
    pub fn cloud_call(&self, action: &'static str, result: &'static str) {
        self.cloud_calls
            .get_or_create(&CloudLabels { action, result })
            .inc();
        self.total_calls.fetch_add(1, Ordering::Relaxed);
        self.update_ratio();
    }

    /// Counts created NICs.
    pub fn created(&self, n: u64) {
        self.nics_created.inc_by(n);
        self.update_ratio();
    }

    fn update_ratio(&self) {
        let created = self.nics_created.get().max(1);
        let calls = self.total_calls.load(Ordering::Relaxed);
        self.calls_per_nic_milli
            .set(i64::try_from(calls * 1000 / created).unwrap_or(i64::MAX));
    }

    /// Records the conditions `pool`'s status now carries.
    pub fn pool_conditions(
        &self,
        pool: &str,
        conds: impl IntoIterator<Item = (&'static str, bool)>,
    ) {
        for (condition, status) in conds {
            self.pool_condition
                .get_or_create(&ConditionLabels {
                    pool: pool.to_owned(),
                    condition,
                })
                .set(i64::from(status));
        }
    }

    /// Drops the conditions of a deleted pool, so no alert fires on a pool that is gone.
    pub fn forget_pool(&self, pool: &str) {
        for condition in POOL_CONDITIONS {
            self.pool_condition.remove(&ConditionLabels {
                pool: pool.to_owned(),
                condition,
            });
        }
    }

    /// Total cloud calls so far.
    pub fn total_cloud_calls(&self) -> u64 {
        self.total_calls.load(Ordering::Relaxed)
    }
}

/// Records a reconcile's duration on drop.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        drop(m.reconcile("hostnic"));
        m.failure("hostnic", "kube");
        m.cloud_call("CreateNics", "ok");
        m.cloud_call("AttachNics", "ok");
        m.created(1);
        let text = encode(&reg);
        assert!(
            text.contains(
                "hostnic_operator_cloud_calls_total{action=\"CreateNics\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("hostnic_operator_cloud_calls_per_nic_milli 2000"),
            "{text}"
        );
        assert!(text.contains(
            "hostnic_operator_reconcile_duration_seconds_count{controller=\"hostnic\"} 1"
        ));
        assert_eq!(m.total_cloud_calls(), 2);
    }

    #[test]
    fn pool_conditions_are_dropped_with_the_pool() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        m.pool_conditions("a", [("Ready", false), ("Degraded", true)]);
        let text = encode(&reg);
        assert!(
            text.contains("hostnic_operator_pool_condition{pool=\"a\",condition=\"Ready\"} 0"),
            "{text}"
        );
        m.forget_pool("a");
        assert!(!encode(&reg).contains("pool=\"a\""));
    }
}
