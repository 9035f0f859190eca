//! Prometheus metrics of the agent: claims and releases by outcome, claim latency, free NICs.

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

/// The agent's metrics, registered under the `hostnic_agent` prefix.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Claims by outcome.
    pub claims: Family<Outcome, Counter>,
    /// Releases by outcome.
    pub releases: Family<Outcome, Counter>,
    /// Seconds a claim took, success or not.
    pub claim_seconds: Histogram,
    /// Free NICs on the node.
    pub free_nics: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hostnic_agent");
        let claims = Family::<Outcome, Counter>::default();
        let releases = Family::<Outcome, Counter>::default();
        // 0.5 ms .. ~4 s: claims take milliseconds unless the API server is slow.
        let claim_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let free_nics = Gauge::default();
        registry.register("claims", "CNI claims by outcome", claims.clone());
        registry.register("releases", "CNI releases by outcome", releases.clone());
        registry.register(
            "claim_duration_seconds",
            "Time to serve a claim",
            claim_seconds.clone(),
        );
        registry.register("free_nics", "Free NICs on this node", free_nics.clone());
        Self {
            registry,
            claims,
            releases,
            claim_seconds,
            free_nics,
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
