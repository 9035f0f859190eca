//! Client-side rate limiting: one token bucket per account, shared by every clone of the
//! client, handing tokens to waiters by priority.
//!
//! The account's API quota (about 2000 requests per hour) is shared by the operator's pod
//! path, pool refills and garbage collection. When tokens are scarce, a pod waiting for a NIC
//! must go first, and background work keeps a reserve of tokens untouched so it can never
//! drain the burst a pod start needs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Who is asking for a token. Higher priorities are served first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Shrinking pools, garbage collection, periodic resyncs. May not use the reserve.
    Background,
    /// Keeping warm pools filled.
    Refill,
    /// A pod is waiting for this call.
    Urgent,
}

impl Priority {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Background => "background",
            Self::Refill => "refill",
            Self::Urgent => "urgent",
        }
    }
}

/// Tokens that must be in the bucket for `priority` to take one.
fn needed(priority: Priority, reserve: f64) -> f64 {
    match priority {
        Priority::Background => 1.0 + reserve,
        Priority::Refill | Priority::Urgent => 1.0,
    }
}

/// How long a waiter waits before it is served as if it were one priority higher. Strict
/// priority alone lets sustained higher traffic starve the rest: a 500-node fill takes about
/// 20 minutes of refills at the default budget, and garbage collection and shrinks would wait
/// all of it. With aging a waiter is served after at most about one step per level below the
/// traffic that outranks it, and a pod waiting now still goes before refills queued now.
pub(crate) const AGING_STEP: Duration = Duration::from_secs(60);

/// `priority` raised by `levels`, at most to `Urgent`.
fn raised(priority: Priority, levels: u64) -> Priority {
    let order = [Priority::Background, Priority::Refill, Priority::Urgent];
    let at = order.iter().position(|p| *p == priority).unwrap_or(0);
    let to = usize::try_from(levels).map_or(order.len() - 1, |l| {
        at.saturating_add(l).min(order.len() - 1)
    });
    order[to]
}

/// A queued request for a token.
#[derive(Debug)]
struct Waiter<T> {
    since: Instant,
    item: T,
}

impl<T> Waiter<T> {
    /// Whole aging steps waited by `now`.
    fn steps(&self, now: Instant) -> u64 {
        let waited = now.saturating_duration_since(self.since).as_secs_f64();
        // Truncation wanted: only whole steps raise the priority.
        (waited / AGING_STEP.as_secs_f64()) as u64
    }
}

/// The pure scheduling logic: a token bucket and a queue of waiters served by priority (aged
/// by their wait), driven by an explicit clock so it can be tested without sleeping.
#[derive(Debug)]
pub(crate) struct Scheduler<T> {
    rate: f64,
    burst: f64,
    /// Tokens that only `Refill` and `Urgent` may take.
    reserve: f64,
    tokens: f64,
    last: Instant,
    /// By own priority, then arrival: within a priority the oldest has aged the most, so the
    /// next to serve is always one of the three heads.
    waiters: BTreeMap<Ticket, Waiter<T>>,
    next_seq: u64,
}

/// Identifies a queued waiter, to cancel it: its own priority and its arrival.
pub(crate) type Ticket = (Priority, u64);

const PRIORITIES: [Priority; 3] = [Priority::Urgent, Priority::Refill, Priority::Background];

impl<T> Scheduler<T> {
    /// A full bucket. `qps` must be positive and finite, `burst` at least 1.
    pub(crate) fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: qps,
            burst,
            // A quarter of the bucket, but never so much that background work could not run.
            reserve: (burst / 4.0).min(burst - 1.0),
            tokens: burst,
            last: now,
            waiters: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Queues a waiter.
    pub(crate) fn enqueue(&mut self, priority: Priority, item: T, now: Instant) -> Ticket {
        let ticket = (priority, self.next_seq);
        self.next_seq += 1;
        self.waiters.insert(ticket, Waiter { since: now, item });
        ticket
    }

    /// Removes a waiter that gave up; false if it was already granted.
    pub(crate) fn cancel(&mut self, ticket: Ticket) -> bool {
        self.waiters.remove(&ticket).is_some()
    }

    /// The oldest waiter of each own priority, with the priority it is served at by `now`
    /// (its own, raised by the steps it waited).
    fn heads(&self, now: Instant) -> impl Iterator<Item = (Ticket, &Waiter<T>, Priority)> {
        PRIORITIES.into_iter().filter_map(move |p| {
            let (ticket, w) = self.waiters.range((p, 0)..=(p, u64::MAX)).next()?;
            Some((*ticket, w, raised(p, w.steps(now))))
        })
    }

    /// The waiter to serve next at `now`: the highest effective priority, the oldest of those.
    fn first(&self, now: Instant) -> Option<(Ticket, Priority)> {
        self.heads(now)
            .map(|(ticket, _, p)| (ticket, p))
            .reduce(|best, next| {
                let better = next.1 > best.1 || (next.1 == best.1 && next.0.1 < best.0.1);
                if better { next } else { best }
            })
    }

    /// Gives one token each to as many waiters as possible, highest effective priority first.
    /// Strictly in order: the waiter to serve next is never overtaken.
    pub(crate) fn grant(&mut self, now: Instant) -> Vec<T> {
        self.refill(now);
        let mut granted = Vec::new();
        while let Some((ticket, priority)) = self.first(self.last) {
            if self.tokens < needed(priority, self.reserve) {
                break;
            }
            self.tokens -= 1.0;
            if let Some(w) = self.waiters.remove(&ticket) {
                granted.push(w.item);
            }
        }
        granted
    }

    /// Gives back a token granted to a waiter that had already gone.
    pub(crate) fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Empties the bucket: the cloud said we are too fast, so every caller slows to the
    /// sustained rate until the bucket refills.
    pub(crate) fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
    }

    /// How long until the next grant could happen, if anyone waits: when the first waiter
    /// has its tokens, or earlier when a waiter's aging changes who is first. Call after
    /// `grant`.
    pub(crate) fn next_wait(&self) -> Option<Duration> {
        let now = self.last;
        let (_, priority) = self.first(now)?;
        let missing = (needed(priority, self.reserve) - self.tokens).max(0.0);
        let tokens_in = Duration::from_secs_f64(missing / self.rate);
        // Only a head's aging can change who is first: the others are younger than theirs.
        let next_aging = self
            .heads(now)
            .filter(|(_, _, p)| *p < Priority::Urgent)
            .map(|(_, w, _)| {
                let step = w.steps(now).saturating_add(1);
                let at =
                    w.since + AGING_STEP.saturating_mul(u32::try_from(step).unwrap_or(u32::MAX));
                at.saturating_duration_since(now)
            })
            .min();
        Some(next_aging.map_or(tokens_in, |a| a.min(tokens_in)))
    }
}

/// The current time on tokio's clock, so tests with paused time drive the bucket too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The shared limiter. Cloning shares the bucket.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Mutex<Scheduler<oneshot::Sender<()>>>>,
}

/// Removes the waiter from the queue if `acquire` is cancelled while waiting.
struct CancelOnDrop<'a> {
    limiter: &'a RateLimiter,
    ticket: Ticket,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.limiter.lock().cancel(self.ticket);
    }
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `qps` per second. `qps` must be positive.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Scheduler::new(qps, burst, now()))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scheduler<oneshot::Sender<()>>> {
        // The scheduler's invariants hold between statements, so a panic elsewhere while
        // holding the lock cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Grants what can be granted now and says how long until the next grant.
    fn dispatch(&self) -> Option<Duration> {
        let mut sched = self.lock();
        for waiter in sched.grant(now()) {
            if waiter.send(()).is_err() {
                sched.refund();
            }
        }
        sched.next_wait()
    }

    /// Called when the cloud throttled us (2500, 5100): empties the bucket so all clones of the
    /// client fall back to the sustained rate instead of spending their burst.
    pub fn penalize(&self) {
        self.lock().drain(now());
    }

    /// Waits for a token; returns how long it waited.
    pub async fn acquire(&self, priority: Priority) -> Duration {
        let start = tokio::time::Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let ticket = self.lock().enqueue(priority, tx, now());
        let _guard = CancelOnDrop {
            limiter: self,
            ticket,
        };
        loop {
            // Every waiter drives the bucket when its own estimate expires, so no background
            // task is needed; a grant to another waiter is delivered through its channel.
            let wait = self.dispatch();
            if rx.try_recv().is_ok() {
                return start.elapsed();
            }
            let wait = wait
                .unwrap_or(Duration::from_millis(100))
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = &mut rx => return start.elapsed(),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(0.5, 3, t0);
        for i in 0..4 {
            s.enqueue(Priority::Urgent, i, t0);
        }
        assert_eq!(s.grant(t0), vec![0, 1, 2]);
        assert_eq!(s.next_wait(), Some(secs(2.0)));
        assert!(s.grant(t0 + secs(1.9)).is_empty());
        assert_eq!(s.grant(t0 + secs(2.0)), vec![3]);
        assert_eq!(s.next_wait(), None);
    }

    #[test]
    fn bucket_never_exceeds_burst() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1.0, 2, t0);
        for i in 0..5 {
            s.enqueue(Priority::Urgent, i, t0);
        }
        // An hour idle still leaves only `burst` tokens.
        assert_eq!(s.grant(t0 + secs(3600.0)), vec![0, 1]);
        assert_eq!(s.next_wait(), Some(secs(1.0)));
    }

    #[test]
    fn higher_priority_first_fifo_within_priority() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1.0, 1, t0);
        s.enqueue(Priority::Urgent, "u0", t0);
        assert_eq!(s.grant(t0), vec!["u0"]);
        s.enqueue(Priority::Background, "b1", t0);
        s.enqueue(Priority::Refill, "r1", t0);
        s.enqueue(Priority::Urgent, "u1", t0);
        s.enqueue(Priority::Refill, "r2", t0);
        s.enqueue(Priority::Urgent, "u2", t0);
        let mut order = Vec::new();
        for i in 1..=5 {
            order.extend(s.grant(t0 + secs(f64::from(i))));
        }
        assert_eq!(order, vec!["u1", "u2", "r1", "r2", "b1"]);
    }

    #[test]
    fn background_keeps_the_reserve() {
        let t0 = Instant::now();
        // burst 8: reserve 2, so background stops when 2 tokens are left.
        let mut s = Scheduler::new(1.0, 8, t0);
        for i in 0..8 {
            s.enqueue(Priority::Background, i, t0);
        }
        assert_eq!(s.grant(t0).len(), 6);
        // Background now needs 3 tokens: one second gives 3, only one is taken.
        assert_eq!(s.next_wait(), Some(secs(1.0)));
        assert_eq!(s.grant(t0 + secs(1.0)), vec![6]);
        // An urgent request may use the reserve at once, ahead of the waiting background one.
        s.enqueue(Priority::Urgent, 100, t0);
        assert_eq!(s.grant(t0 + secs(1.0)), vec![100]);
        s.enqueue(Priority::Urgent, 101, t0);
        assert_eq!(s.grant(t0 + secs(1.0)), vec![101]);
        assert!(s.grant(t0 + secs(1.0)).is_empty());
    }

    #[test]
    fn background_runs_with_a_tiny_bucket() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1.0, 1, t0);
        s.enqueue(Priority::Background, 0, t0);
        assert_eq!(s.grant(t0), vec![0]);
    }

    #[test]
    fn drain_forces_the_sustained_rate() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(0.5, 20, t0);
        s.drain(t0);
        s.enqueue(Priority::Urgent, 1, t0);
        assert!(s.grant(t0).is_empty());
        assert_eq!(s.next_wait(), Some(secs(2.0)));
        assert_eq!(s.grant(t0 + secs(2.0)), vec![1]);
    }

    #[test]
    fn cancelled_waiters_are_skipped_and_refunds_return_tokens() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1.0, 1, t0);
        let a = s.enqueue(Priority::Urgent, "a", t0);
        s.enqueue(Priority::Urgent, "b", t0);
        assert!(s.cancel(a));
        assert!(!s.cancel(a));
        assert_eq!(s.grant(t0), vec!["b"]);
        s.refund();
        s.enqueue(Priority::Refill, "c", t0);
        assert_eq!(s.grant(t0), vec!["c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn async_limiter_serves_urgent_before_background() {
        let limiter = RateLimiter::new(10.0, 1);
        limiter.acquire(Priority::Urgent).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (i, p) in [Priority::Background, Priority::Background, Priority::Urgent]
            .into_iter()
            .enumerate()
        {
            let (l, tx) = (limiter.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                l.acquire(p).await;
                tx.send(i).unwrap();
            }));
            // Let each task enqueue before the next one.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order: Vec<usize> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, vec![2, 0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_acquire_leaves_the_queue() {
        let limiter = RateLimiter::new(1.0, 1);
        limiter.acquire(Priority::Urgent).await;
        let waiting = tokio::time::timeout(secs(0.1), limiter.acquire(Priority::Urgent)).await;
        assert!(waiting.is_err());
        assert_eq!(limiter.lock().waiters.len(), 0);
    }

    /// Serves one newly queued `priority` waiter per second at one token per second, for
    /// `for_secs` seconds, with one `starved` waiter queued first; says when `starved` was served.
    fn served_under_load(starved: Priority, load: Priority, for_secs: u32) -> Option<u32> {
        let t0 = Instant::now();
        let mut s = Scheduler::new(1.0, 1, t0);
        assert!(s.grant(t0).is_empty());
        s.enqueue(starved, "starved", t0);
        for i in 1..=for_secs {
            let now = t0 + secs(f64::from(i));
            s.enqueue(load, "load", now);
            if s.grant(now).contains(&"starved") {
                return Some(i);
            }
        }
        None
    }

    #[test]
    fn sustained_refills_do_not_starve_background_work() {
        // Strict priority would never serve it; one aging step raises it to the refills', and
        // it is older than all of them.
        let step = AGING_STEP.as_secs() as u32;
        assert_eq!(
            served_under_load(Priority::Background, Priority::Refill, 3 * step),
            Some(step)
        );
    }

    #[test]
    fn sustained_urgent_traffic_does_not_starve_anything() {
        let step = AGING_STEP.as_secs() as u32;
        assert_eq!(
            served_under_load(Priority::Refill, Priority::Urgent, 3 * step),
            Some(step)
        );
        assert_eq!(
            served_under_load(Priority::Background, Priority::Urgent, 3 * step),
            Some(2 * step)
        );
    }

    #[test]
    fn a_waiter_is_woken_when_aging_lets_it_take_the_reserve() {
        let t0 = Instant::now();
        // burst 8: reserve 2. At a token per 1000 s, background would wait 1000 s for the
        // token above the reserve; after one aging step it may take the reserve.
        let mut s = Scheduler::new(0.001, 8, t0);
        for i in 0..6 {
            s.enqueue(Priority::Background, i, t0);
        }
        assert_eq!(s.grant(t0).len(), 6);
        s.enqueue(Priority::Background, 6, t0);
        assert!(s.grant(t0).is_empty());
        assert_eq!(s.next_wait(), Some(AGING_STEP));
        assert_eq!(s.grant(t0 + AGING_STEP), vec![6]);
    }
}
