//! Prometheus metrics of the agent: claims and releases by outcome, claim latency (warm or
//! waited), free NICs, whether the agent is synced.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of an outcome: `ok` or an [`crate::Error::metric_label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok` or the error's label.
    pub outcome: String,
}

/// How a claim was served, the `path` label of the claim latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimPath {
    /// Found a free NIC (or its earlier answer) at once.
    Warm,
    /// Waited for a NIC on its way (answered when it came, or when the wait ran out).
    Waited,
}

impl ClaimPath {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Waited => "waited",
        }
    }
}

/// Labels of the claim latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `warm` or `waited`, a [`ClaimPath::label`].
    pub path: &'static str,
}

/// The agent's metrics, registered under the `hostnic_agent` prefix.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Claims by outcome.
    pub claims: Family<Outcome, Counter>,
    /// Releases by outcome.
    pub releases: Family<Outcome, Counter>,
    /// Seconds a claim took, success or not, by path.
    pub claim_seconds: Family<PathLabels, Histogram, fn() -> Histogram>,
    /// Free NICs on the node.
    pub free_nics: Gauge,
    /// 1 while the agent serves (HostNics synced, recovery done), as `/readyz` says.
    pub synced: Gauge,
}

/// 1 ms .. ~65 s: a warm claim takes milliseconds, a waited one up to `--wait-for-nic-seconds`
/// (30 by default, and a runtime may allow more).
fn claim_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hostnic_agent");
        let claims = Family::<Outcome, Counter>::default();
        let releases = Family::<Outcome, Counter>::default();
        let claim_seconds = Family::new_with_constructor(claim_histogram as fn() -> Histogram);
        let free_nics = Gauge::default();
        let synced = Gauge::default();
        // The series alerts and dashboards divide by exist from the start, at 0 (a rate of a
        // series that appears with its first sample misses that sample).
        let ok = || Outcome {
            outcome: "ok".to_owned(),
        };
        drop(claims.get_or_create(&ok()));
        drop(releases.get_or_create(&ok()));
        for path in [ClaimPath::Warm, ClaimPath::Waited] {
            drop(claim_seconds.get_or_create(&PathLabels { path: path.label() }));
        }
        registry.register("claims", "CNI claims by outcome", claims.clone());
        registry.register("releases", "CNI releases by outcome", releases.clone());
        registry.register(
            "claim_duration_seconds",
            "Time to serve a claim, by path: warm (a free NIC at once) or waited (for a refill)",
            claim_seconds.clone(),
        );
        registry.register("free_nics", "Free NICs on this node", free_nics.clone());
        registry.register(
            "synced",
            "1 while the agent is synced and serves claims (readyz)",
            synced.clone(),
        );
        Self {
            registry,
            claims,
            releases,
            claim_seconds,
            free_nics,
            synced,
        }
    }
}

impl Metrics {
    /// Counts one claim or release outcome.
    pub fn count<T>(family: &Family<Outcome, Counter>, result: &crate::Result<T>) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.metric_label().to_owned(),
        };
        family.get_or_create(&Outcome { outcome }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
