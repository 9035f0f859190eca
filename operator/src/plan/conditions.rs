//! Condition bookkeeping shared by NicPool and HostNic status: set a condition, keeping its
//! lastTransitionTime when its status did not change.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as decided, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// Condition type.
    pub type_: &'static str,
    /// True / False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Cond {
    /// A condition.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// `conditions` with `cond` set: the transition time moves only when the status flips.
pub fn set(
    conditions: &[Condition],
    cond: &Cond,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let status = if cond.status { "True" } else { "False" };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != cond.type_)
        .cloned()
        .collect();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == cond.type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    out.push(Condition {
        type_: cond.type_.to_string(),
        status: status.to_string(),
        reason: cond.reason.to_string(),
        message: cond.message.clone(),
        observed_generation: generation,
        last_transition_time,
    });
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Whether condition `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The reason of condition `type_`, if present.
pub fn reason<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let c = set(&[], &Cond::new("Ready", false, "Filling", "x"), Some(1), t0);
        assert_eq!(c[0].last_transition_time.0, t0);
        let c = set(&c, &Cond::new("Ready", false, "Filling", "y"), Some(2), t1);
        assert_eq!(
            c[0].last_transition_time.0, t0,
            "same status keeps the time"
        );
        assert_eq!(c[0].message, "y");
        let c = set(&c, &Cond::new("Ready", true, "Warm", ""), Some(2), t1);
        assert_eq!(c[0].last_transition_time.0, t1);
        assert!(is_true(&c, "Ready"));
        assert_eq!(reason(&c, "Ready"), Some("Warm"));
        let c = set(
            &c,
            &Cond::new("Degraded", false, "AsExpected", ""),
            Some(2),
            t1,
        );
        assert_eq!(c.len(), 2);
    }
}
