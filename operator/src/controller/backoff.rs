//! Per-object exponential back-off with jitter and a cap (controller-runtime's rate-limited
//! workqueue semantics): each consecutive failure of one object doubles its wait, a success
//! forgets it. Watch events do not bypass the wait: a reconcile that finds its object still
//! backing off does nothing and looks again when the wait is over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// Back-off state of every object that failed last time.
#[derive(Debug)]
pub struct Backoff {
    cap: Duration,
    state: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: Instant,
}

/// The wait after the `failures`-th consecutive failure (1-based): `base` doubled per earlier
/// failure, capped at `cap`, then scaled by `jitter` (0.5..=1.0 spreads objects that failed
/// together, so they do not retry in lockstep).
pub fn delay(base: Duration, failures: u32, cap: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    let raw = base.saturating_mul(1u32 << doublings.min(31));
    raw.min(cap).mul_f64(jitter.clamp(0.5, 1.0))
}

impl Backoff {
    /// No object backing off; waits never exceed `cap`.
    pub fn new(cap: Duration) -> Self {
        Self {
            cap,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` whose first retry would wait `base`; returns the wait.
    pub fn fail(&self, key: &str, base: Duration) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let failures = state.get(key).map_or(0, |e| e.failures).saturating_add(1);
        let wait = delay(
            base,
            failures,
            self.cap.max(base),
            rand::rng().random_range(0.5..=1.0),
        );
        state.insert(
            key.to_string(),
            Entry {
                failures,
                until: Instant::now() + wait,
            },
        );
        wait
    }

    /// How long `key` must still wait before its next attempt (None: go ahead).
    pub fn holdoff(&self, key: &str) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let left = state
            .get(key)?
            .until
            .checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &str) -> u32 {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.get(key).map_or(0, |e| e.failures)
    }

    /// Forgets every key starting with `prefix` (an object that is gone).
    pub fn forget_prefix(&self, prefix: &str) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| !k.starts_with(prefix));
    }

    /// `key` succeeded: its next failure starts from the base again.
    pub fn forget(&self, key: &str) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_per_failure_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=9).map(|n| delay(S, n, cap, 1.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            delay(S, 1000, cap, 1.0),
            cap,
            "no overflow far past the cap"
        );
        assert_eq!(
            delay(S, 2, cap, 0.5),
            S,
            "jitter scales the wait down to half"
        );
        assert_eq!(delay(S, 2, cap, 7.0), 2 * S, "jitter never lengthens it");
    }

    #[test]
    fn failures_accumulate_until_success() {
        let b = Backoff::new(Duration::from_secs(600));
        let w1 = b.fail("a", S);
        let w2 = b.fail("a", S);
        let w3 = b.fail("a", S);
        assert!(w1 <= S && w1 >= S / 2);
        assert!(w2 <= 2 * S && w2 >= S);
        assert!(w3 <= 4 * S && w3 >= 2 * S);
        assert_eq!(b.failures("a"), 3);
        assert!(b.holdoff("a").is_some());
        assert!(b.holdoff("b").is_none(), "objects back off independently");
        b.forget("a");
        assert_eq!(b.failures("a"), 0);
        assert!(b.holdoff("a").is_none());
        let w = b.fail("a", S);
        assert!(w <= S, "reset on success: {w:?}");
        b.fail("x/1/job", S);
        b.fail("x/1/apply", S);
        b.forget_prefix("x/1/");
        assert_eq!(b.failures("x/1/job") + b.failures("x/1/apply"), 0);
        assert_eq!(b.failures("a"), 1);
    }
}
