//! Fault injection rules and the decision, per request, of which ones fire. Pure: the caller
//! passes the random generator, so a seed reproduces a run.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::JobOutcome;

/// One injected fault: what happens, to which action, how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Action it applies to (e.g. `AttachNics`); `None` = every action it makes sense for.
    #[serde(default)]
    pub action: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// When it fires.
    pub trigger: Trigger,
    /// For response faults: run the action first, then replace its response (a lost
    /// response: the cloud did it, the client does not know).
    #[serde(default)]
    pub after: bool,
}

impl Fault {
    /// A fault firing on every matching call, for every action.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            action: None,
            kind,
            trigger: Trigger::Probability(1.0),
            after: false,
        }
    }

    /// An API error (`ret_code`) with the usual message for that code.
    pub fn error(code: i32) -> Self {
        Self::new(FaultKind::ApiError {
            code,
            message: None,
        })
    }

    /// Restricts the fault to one action.
    pub fn on(mut self, action: &str) -> Self {
        self.action = Some(action.to_owned());
        self
    }

    /// Fires for the next `n` matching calls only.
    pub fn next(mut self, n: u32) -> Self {
        self.trigger = Trigger::Next(n);
        self
    }

    /// Fires with probability `p` per matching call.
    pub fn probability(mut self, p: f64) -> Self {
        self.trigger = Trigger::Probability(p);
        self
    }

    /// Runs the action before replacing the response.
    pub fn after_effect(mut self) -> Self {
        self.after = true;
        self
    }
}

/// What an injected fault does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// HTTP 200 with this `ret_code` (e.g. 5000, 5100, 2500, 1400 "lease info not ready").
    ApiError {
        /// The `ret_code`.
        code: i32,
        /// The message; a realistic one for the code when absent.
        #[serde(default)]
        message: Option<String>,
    },
    /// This HTTP status (e.g. 502, 503) with a short JSON body.
    HttpStatus(u16),
    /// HTTP 200, `Content-Type: application/json`, a body that is not JSON.
    NonJson,
    /// HTTP 200 with a JSON object lacking `ret_code`.
    MissingRetCode,
    /// The connection is closed without any response.
    Reset,
    /// The response is delayed by this many milliseconds (then answered normally).
    DelayMs(u64),
    /// AttachNics/DetachNics: the job ends this way.
    Job(JobOutcome),
    /// CreateNics: the new NICs are left out of this many DescribeNics calls that match them.
    HideNewNics(u32),
    /// AttachNics/DetachNics: after the job ends, DescribeNics shows the NICs' old status for
    /// this many calls that match them.
    NicStatusLag(u32),
    /// AttachNics: the NIC's link appears in the node this many milliseconds after the job
    /// ends (hot-plug on).
    LinkDelayMs(u64),
}

impl FaultKind {
    /// Whether the fault means anything for `action`.
    fn applies_to(&self, action: &str) -> bool {
        match self {
            Self::Job(_) | Self::NicStatusLag(_) => matches!(action, "AttachNics" | "DetachNics"),
            Self::LinkDelayMs(_) => action == "AttachNics",
            Self::HideNewNics(_) => action == "CreateNics",
            _ => true,
        }
    }

    /// The response it replaces the real one with, if it is a response fault.
    fn response(&self) -> Option<ResponseFault> {
        match self {
            Self::ApiError { code, message } => Some(ResponseFault::ApiError {
                code: *code,
                message: message.clone(),
            }),
            Self::HttpStatus(s) => Some(ResponseFault::HttpStatus(*s)),
            Self::NonJson => Some(ResponseFault::NonJson),
            Self::MissingRetCode => Some(ResponseFault::MissingRetCode),
            Self::Reset => Some(ResponseFault::Reset),
            Self::DelayMs(_)
            | Self::Job(_)
            | Self::HideNewNics(_)
            | Self::NicStatusLag(_)
            | Self::LinkDelayMs(_) => None,
        }
    }
}

/// When a fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// On the next N matching calls, then the rule is removed.
    Next(u32),
    /// On each matching call with this probability (0..=1).
    Probability(f64),
}

/// An installed fault and its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstalledFault {
    /// Id for removal.
    pub id: u64,
    /// The rule (with `Next` counting down).
    pub fault: Fault,
}

/// The response-replacing subset of [`FaultKind`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ResponseFault {
    ApiError { code: i32, message: Option<String> },
    HttpStatus(u16),
    NonJson,
    MissingRetCode,
    Reset,
}

/// What the faults decided for one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Decision {
    /// Replace the response (with `after`: run the action first).
    pub(crate) response: Option<(ResponseFault, bool)>,
    pub(crate) delay_ms: u64,
    pub(crate) job: Option<JobOutcome>,
    pub(crate) hide_polls: u32,
    pub(crate) status_lag: u32,
    pub(crate) link_delay_ms: u64,
}

/// The installed rules, in installation order.
#[derive(Debug, Default)]
pub(crate) struct FaultSet {
    rules: Vec<InstalledFault>,
    next_id: u64,
}

impl FaultSet {
    pub(crate) fn add(&mut self, fault: Fault) -> u64 {
        self.next_id += 1;
        self.rules.push(InstalledFault {
            id: self.next_id,
            fault,
        });
        self.next_id
    }

    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        self.rules.len() != before
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn list(&self) -> Vec<InstalledFault> {
        self.rules.clone()
    }

    /// Decides the faults for one call of `action`. The first firing rule of each effect wins;
    /// rules that do not get to act are not used up.
    pub(crate) fn decide(&mut self, action: &str, rng: &mut impl Rng) -> Decision {
        let mut d = Decision::default();
        for rule in &mut self.rules {
            let f = &rule.fault;
            if f.action.as_deref().is_some_and(|a| a != action) || !f.kind.applies_to(action) {
                continue;
            }
            let slot_free = match &f.kind {
                k if k.response().is_some() => d.response.is_none(),
                FaultKind::DelayMs(_) => d.delay_ms == 0,
                FaultKind::Job(_) => d.job.is_none(),
                FaultKind::NicStatusLag(_) => d.status_lag == 0,
                FaultKind::LinkDelayMs(_) => d.link_delay_ms == 0,
                _ => d.hide_polls == 0,
            };
            if !slot_free {
                continue;
            }
            let fires = match &mut rule.fault.trigger {
                Trigger::Next(0) => false,
                Trigger::Next(n) => {
                    *n -= 1;
                    true
                }
                Trigger::Probability(p) => rng.random_bool(p.clamp(0.0, 1.0)),
            };
            if !fires {
                continue;
            }
            match &rule.fault.kind {
                FaultKind::DelayMs(ms) => d.delay_ms = *ms,
                FaultKind::Job(outcome) => d.job = Some(*outcome),
                FaultKind::HideNewNics(polls) => d.hide_polls = *polls,
                FaultKind::NicStatusLag(polls) => d.status_lag = *polls,
                FaultKind::LinkDelayMs(ms) => d.link_delay_ms = *ms,
                kind => d.response = kind.response().map(|r| (r, rule.fault.after)),
            }
        }
        self.rules
            .retain(|r| !matches!(r.fault.trigger, Trigger::Next(0)));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn next_n_fires_n_times_then_goes_away() {
        let mut set = FaultSet::default();
        let mut rng = StdRng::seed_from_u64(1);
        set.add(Fault::error(5100).on("AttachNics").next(2));
        assert!(set.decide("DescribeNics", &mut rng).response.is_none());
        for _ in 0..2 {
            let d = set.decide("AttachNics", &mut rng);
            assert!(matches!(
                d.response,
                Some((ResponseFault::ApiError { code: 5100, .. }, false))
            ));
        }
        assert!(set.decide("AttachNics", &mut rng).response.is_none());
        assert!(set.list().is_empty());
    }

    #[test]
    fn first_response_rule_wins_and_others_wait() {
        let mut set = FaultSet::default();
        let mut rng = StdRng::seed_from_u64(1);
        set.add(Fault::error(5000).next(1));
        set.add(Fault::new(FaultKind::HttpStatus(503)).next(1));
        set.add(Fault::new(FaultKind::DelayMs(10)).next(1));
        let d = set.decide("DescribeJobs", &mut rng);
        assert!(matches!(
            d.response,
            Some((ResponseFault::ApiError { code: 5000, .. }, _))
        ));
        assert_eq!(d.delay_ms, 10);
        let d = set.decide("DescribeJobs", &mut rng);
        assert_eq!(d.response, Some((ResponseFault::HttpStatus(503), false)));
    }

    #[test]
    fn job_and_hide_faults_only_for_their_actions() {
        let mut set = FaultSet::default();
        let mut rng = StdRng::seed_from_u64(1);
        set.add(Fault::new(FaultKind::Job(JobOutcome::Failed)).next(1));
        set.add(Fault::new(FaultKind::HideNewNics(3)).next(1));
        assert_eq!(set.decide("DescribeNics", &mut rng), Decision::default());
        assert_eq!(set.decide("CreateNics", &mut rng).hide_polls, 3);
        assert_eq!(
            set.decide("DetachNics", &mut rng).job,
            Some(JobOutcome::Failed)
        );
    }

    #[test]
    fn probability_is_reproducible_with_a_seed() {
        let run = || {
            let mut set = FaultSet::default();
            let mut rng = StdRng::seed_from_u64(7);
            set.add(Fault::error(5100).probability(0.5));
            (0..64)
                .map(|_| set.decide("DescribeNics", &mut rng).response.is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let fired = a.iter().filter(|f| **f).count();
        assert!((10..54).contains(&fired), "{fired}");
    }

    #[test]
    fn serde_shape_for_the_admin_endpoint() {
        let f: Fault = serde_json::from_str(
            r#"{"action":"AttachNics","kind":{"api_error":{"code":5100}},"trigger":{"next":3}}"#,
        )
        .unwrap();
        assert_eq!(f, Fault::error(5100).on("AttachNics").next(3));
        let f: Fault = serde_json::from_str(
            r#"{"kind":{"job":"done_with_failure"},"trigger":{"probability":1.0}}"#,
        )
        .unwrap();
        assert_eq!(f.kind, FaultKind::Job(JobOutcome::DoneWithFailure));
        let f: Fault = serde_json::from_str(r#"{"kind":"non_json","trigger":{"next":1}}"#).unwrap();
        assert_eq!(f.kind, FaultKind::NonJson);
    }
}
