//! Prometheus metrics of the client: calls, errors by ret_code, latency and rate-limiter wait,
//! so the account quota and cloud health are visible on the operator's `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::ratelimit::Priority;
use crate::wire::Action;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    action: &'static str,
    /// The ret_code, `http_<status>`, or the failure class (`transport`, `decode`...).
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    priority: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 ms .. ~40 s: simulator calls are milliseconds, the real API up to the 30 s timeout.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

fn wait_histogram() -> Histogram {
    // 1 ms .. ~130 s: at 0.5 qps a queue of a few dozen calls waits for minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

/// The client's metrics. Clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    calls: Family<ActionLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: HistogramFamily<ActionLabels>,
    limiter_wait: HistogramFamily<PriorityLabels>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (names start with `qingcloud_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            calls: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            limiter_wait: Family::new_with_constructor(wait_histogram),
        };
        registry.register(
            "qingcloud_api_requests",
            "HTTP requests sent to the QingCloud API (every attempt), by action",
            m.calls.clone(),
        );
        registry.register(
            "qingcloud_api_errors",
            "Failed QingCloud API requests, by action and ret_code or failure class",
            m.errors.clone(),
        );
        registry.register(
            "qingcloud_api_request_duration_seconds",
            "Duration of one QingCloud API request, by action",
            m.latency.clone(),
        );
        registry.register(
            "qingcloud_ratelimit_wait_seconds",
            "Time a call waited for a rate-limiter token, by priority",
            m.limiter_wait.clone(),
        );
        m
    }

    pub(crate) fn request(&self, action: Action, took: Duration, outcome: Option<&Error>) {
        let labels = ActionLabels {
            action: action.as_str(),
        };
        self.calls.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(err) = outcome {
            self.errors
                .get_or_create(&ErrorLabels {
                    action: action.as_str(),
                    code: err.code_label(),
                })
                .inc();
        }
    }

    pub(crate) fn limiter_wait(&self, priority: Priority, waited: Duration) {
        self.limiter_wait
            .get_or_create(&PriorityLabels {
                priority: priority.as_str(),
            })
            .observe(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RetCode;

    #[test]
    fn records_and_encodes() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.request(Action::AttachNics, Duration::from_millis(20), None);
        let err = Error::Api {
            action: Action::AttachNics,
            code: RetCode::SERVER_BUSY,
            message: String::new(),
        };
        m.request(Action::AttachNics, Duration::from_millis(5), Some(&err));
        m.limiter_wait(Priority::Urgent, Duration::from_millis(3));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains(r#"qingcloud_api_requests_total{action="AttachNics"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"qingcloud_api_errors_total{action="AttachNics",code="5100"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"qingcloud_api_request_duration_seconds_count{action="AttachNics"} 2"#)
        );
        assert!(out.contains(r#"qingcloud_ratelimit_wait_seconds_count{priority="urgent"} 1"#));
    }
}
