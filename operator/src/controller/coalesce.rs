//! Coalesced reconcile triggers: an object's triggers run it once they pause, and at the latest
//! a bounded time after the first of them.
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

impl Window {
    /// When an object first triggered at `first`, last at `last`, runs.
    fn due(&self, first: Instant, last: Instant) -> Instant {
        (last + self.quiet).min(first + self.max)
    }
}

struct State<T, S> {
    input: Pin<Box<S>>,
    window: Window,
    /// Objects waiting to run: their first and latest trigger.
    waiting: HashMap<T, (Instant, Instant)>,
    ended: bool,
}

impl<T: Eq + Hash + Clone, S> State<T, S> {
    /// The next object to run, and when.
    fn next(&self) -> Option<(T, Instant)> {
        self.waiting
            .iter()
            .map(|(t, &(first, last))| (t, self.window.due(first, last)))
            .min_by_key(|&(_, at)| at)
            .map(|(t, at)| (t.clone(), at))
    }
}

/// `input`'s triggers, gathered per object by `window`. When `input` ends, what waits is
/// still emitted at its time, then the stream ends.
pub fn coalesce<T, S>(input: S, window: Window) -> impl Stream<Item = T> + Send
where
    T: Eq + Hash + Clone + Send + 'static,
    S: Stream<Item = T> + Send + 'static,
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
                item = st.input.next(), if !st.ended => match item {
                    Some(t) => {
                        let now = Instant::now();
                        st.waiting.entry(t).or_insert((now, now)).1 = now;
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
                if tx.send("pool").is_err() {
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
            tx.send(t).expect("send");
        }
        drop(tx);
        let mut got: Vec<&str> = out.collect().await;
        got.sort();
        assert_eq!(got, ["a", "b"]);
    }
}
