//! Timing and load behaviour of a real API server that an instant in-memory one would hide:
//! write latency (an etcd commit), delayed watch delivery, and API Priority and Fairness 429s.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How slow and how loaded the server behaves. The default is instant and never throttles;
/// [`Realism::etcd_like`] is what a small real cluster shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Realism {
    /// Every write (create, update, patch, delete) answers this much later, and its effect is
    /// visible only then: the time an etcd commit takes.
    pub write_latency: Duration,
    /// Every watch event (bookmarks too) reaches the watcher this much after it happened.
    pub watch_delay: Duration,
}

impl Realism {
    /// 5 ms per write and 10 ms of watch delivery: a small cluster with a local etcd.
    pub fn etcd_like() -> Self {
        Realism {
            write_latency: Duration::from_millis(5),
            watch_delay: Duration::from_millis(10),
        }
    }
}

/// Which requests a throttle applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Every resource request (reads, writes, watches).
    All,
    /// Only create, update, patch and delete.
    Writes,
}

/// Requests still to be answered with 429 (API Priority and Fairness rejecting them).
#[derive(Debug, Default)]
pub struct Throttle {
    all: AtomicU64,
    writes: AtomicU64,
    rejected: AtomicU64,
}

impl Throttle {
    pub fn arm(&self, which: Throttled, requests: u64) {
        let slot = match which {
            Throttled::All => &self.all,
            Throttled::Writes => &self.writes,
        };
        slot.fetch_add(requests, Ordering::SeqCst);
    }

    /// Whether this request is rejected; consumes one armed rejection if so.
    pub fn take(&self, is_write: bool) -> bool {
        let take = |slot: &AtomicU64| {
            slot.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        let hit = take(&self.all) || (is_write && take(&self.writes));
        if hit {
            self.rejected.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::SeqCst)
    }
}

/// Settings that tests may change while the server runs.
#[derive(Debug, Default)]
pub struct Live {
    realism: Mutex<Realism>,
    pub throttle: Throttle,
}

impl Live {
    pub fn new(realism: Realism) -> Self {
        Live {
            realism: Mutex::new(realism),
            throttle: Throttle::default(),
        }
    }

    pub fn get(&self) -> Realism {
        *self.realism.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, r: Realism) {
        *self.realism.lock().unwrap_or_else(|e| e.into_inner()) = r;
    }
}

/// Forwards watch lines from `rx` to `tx`, each `delay` after it was produced, keeping order.
/// Lines are stamped as they arrive, so a burst is delayed once, not once per line.
pub async fn delay_lines(mut rx: mpsc::Receiver<Bytes>, tx: mpsc::Sender<Bytes>, delay: Duration) {
    let mut due: VecDeque<(Instant, Bytes)> = VecDeque::new();
    let mut open = true;
    loop {
        let next = due.front().map(|(at, _)| *at);
        tokio::select! {
            line = rx.recv(), if open => match line {
                Some(line) => due.push_back((Instant::now() + delay, line)),
                None => open = false,
            },
            _ = sleep_until(next), if next.is_some() => {
                if let Some((_, line)) = due.pop_front()
                    && tx.send(line).await.is_err()
                {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
        if !open && due.is_empty() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_counts_down_per_class() {
        let t = Throttle::default();
        t.arm(Throttled::Writes, 1);
        assert!(!t.take(false), "a read is not a write");
        assert!(t.take(true));
        assert!(!t.take(true), "only one was armed");
        t.arm(Throttled::All, 2);
        assert!(t.take(false) && t.take(true) && !t.take(false));
        assert_eq!(t.rejected(), 3);
    }

    #[tokio::test]
    async fn lines_arrive_after_the_delay_in_order() {
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let d = Duration::from_millis(10);
        tokio::spawn(delay_lines(in_rx, out_tx, d));
        let start = Instant::now();
        in_tx.send(Bytes::from_static(b"a")).await.unwrap();
        in_tx.send(Bytes::from_static(b"b")).await.unwrap();
        assert_eq!(out_rx.recv().await.unwrap(), "a");
        assert!(start.elapsed() >= d);
        assert_eq!(out_rx.recv().await.unwrap(), "b");
        drop(in_tx);
        assert!(out_rx.recv().await.is_none());
    }
}
