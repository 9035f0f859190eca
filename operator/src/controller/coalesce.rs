//! Coalesced reconcile triggers: an object's triggers run it once they pause, at the latest a
//! bounded time after the first of them, and at once when waiting can gather nothing more.
//!
//! kube-runtime's debounce restarts on every trigger, so an object woken more often than its
//! debounce never runs while that lasts. A pool is woken by every change of every HostNic it
//! owns: in a busy cluster (pods starting somewhere every fraction of a second) its refills
//! would wait for a lull that may not come.

use std::collections::HashMap;
use std::hash::Hash;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;

/// How triggers of one object are gathered.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The object runs once no trigger came for this long: a burst becomes one pass.
    pub quiet: Duration,
    /// ... and no later than this after the first trigger it has not run for yet.
    pub max: Duration,
}

/// Whether a trigger is gathered with others or runs its object at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// More triggers may follow that the same run can serve: wait for them (by the window).
    Gather,
    /// Waiting would gather nothing the run could still use: run now.
    Now,
}

/// An object's triggers since it last ran.
#[derive(Clone, Copy)]
struct Pending {
    first: Instant,
    last: Instant,
    /// When an urgent one came.
    urgent: Option<Instant>,
}

impl Window {
    /// When an object with these triggers runs.
    fn due(&self, p: &Pending) -> Instant {
        p.urgent
            .unwrap_or_else(|| (p.last + self.quiet).min(p.first + self.max))
    }
}

struct State<T, S> {
    input: Pin<Box<S>>,
    window: Window,
    /// Objects waiting to run.
    waiting: HashMap<T, Pending>,
    ended: bool,
}

impl<T: Eq + Hash + Clone, S> State<T, S> {
    /// The next object to run, and when.
    fn next(&self) -> Option<(T, Instant)> {
        self.waiting
            .iter()
            .map(|(t, p)| (t, self.window.due(p)))
            .min_by_key(|&(_, at)| at)
            .map(|(t, at)| (t.clone(), at))
    }
}

/// `input`'s triggers, gathered per object by `window` unless urgent. When `input` ends, what
/// waits is still emitted at its time, then the stream ends.
pub fn coalesce<T, S>(input: S, window: Window) -> impl Stream<Item = T> + Send
where
    T: Eq + Hash + Clone + Send + 'static,
    S: Stream<Item = (T, Urgency)> + Send + 'static,
{
    let state = State {
        input: Box::pin(input),
        window,
        waiting: HashMap::new(),
        ended: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            let next = st.next();
            if st.ended && next.is_none() {
                return None;
            }
            let at = next.as_ref().map(|(_, at)| *at);
            tokio::select! {
                // Triggers already there are taken first, so a run serves every one of them
                // (and the order is deterministic); the input yields between its events.
                biased;
                item = st.input.next(), if !st.ended => match item {
                    Some((t, urgency)) => {
                        let now = Instant::now();
                        let p = st.waiting.entry(t).or_insert(Pending {
                            first: now,
                            last: now,
                            urgent: None,
                        });
                        p.last = now;
                        if urgency == Urgency::Now {
                            p.urgent.get_or_insert(now);
                        }
                    }
                    None => st.ended = true,
                },
                () = tokio::time::sleep_until(at.unwrap_or_else(Instant::now)), if at.is_some() => {
                    if let Some((t, _)) = next {
                        st.waiting.remove(&t);
                        return Some((t, st));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Window = Window {
        quiet: Duration::from_millis(200),
        max: Duration::from_secs(1),
    };

    /// Sends `key` every `every` until `until`, and records when each output came (from start).
    async fn run(every: Duration, until: Duration) -> Vec<(&'static str, Duration)> {
        let start = Instant::now();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = coalesce(tokio_stream_of(rx), WINDOW);
        tokio::spawn(async move {
            while start.elapsed() < until {
                if tx.send(("pool", Urgency::Gather)).is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        });
        out.map(|t| (t, start.elapsed())).collect().await
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> + Send {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_runs_once_after_it_pauses() {
        let out = run(Duration::from_millis(50), Duration::from_millis(300)).await;
        assert_eq!(out.len(), 1, "{out:?}");
        // The last trigger at 250 ms, then 200 ms of quiet.
        assert_eq!(out[0].1, Duration::from_millis(450));
    }

    /// Triggers every 100 ms for 5 s: a restarting debounce of 200 ms would run the pool once,
    /// after the 5 s; here it runs every second.
    #[tokio::test(start_paused = true)]
    async fn steady_triggers_delay_a_run_by_at_most_max() {
        let out = run(Duration::from_millis(100), Duration::from_secs(5)).await;
        let times: Vec<Duration> = out.iter().map(|(_, at)| *at).collect();
        assert!(times.len() >= 5, "{times:?}");
        assert_eq!(times[0], Duration::from_secs(1));
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] <= Duration::from_millis(1100),
                "{times:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn objects_are_gathered_apart() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = coalesce(tokio_stream_of(rx), WINDOW);
        for t in ["a", "b", "a", "b", "a"] {
            tx.send((t, Urgency::Gather)).expect("send");
        }
        drop(tx);
        let mut got: Vec<&str> = out.collect().await;
        got.sort();
        assert_eq!(got, ["a", "b"]);
    }

    /// An urgent trigger runs its object at once, whatever gathered before it, and leaves the
    /// others to their window.
    #[tokio::test(start_paused = true)]
    async fn an_urgent_trigger_runs_at_once() {
        let start = Instant::now();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut out = Box::pin(coalesce(tokio_stream_of(rx), WINDOW));
        tx.send(("a", Urgency::Gather)).expect("send");
        tx.send(("b", Urgency::Gather)).expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(("a", Urgency::Now)).expect("send");
        assert_eq!(out.next().await, Some("a"));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        // A later gathered trigger does not hold an urgent one back.
        tx.send(("a", Urgency::Now)).expect("send");
        tx.send(("a", Urgency::Gather)).expect("send");
        assert_eq!(out.next().await, Some("a"));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        // The stream reads its input when polled: b's trigger was read at 50 ms.
        assert_eq!(out.next().await, Some("b"));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }
}
