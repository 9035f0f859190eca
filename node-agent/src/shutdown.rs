//! Graceful stop: counts the requests in flight so SIGTERM can stop taking new ones, let the
//! running ones finish (bounded by the grace period), and only then end the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Requests being served, and whether new ones are still taken.
#[derive(Debug, Default)]
pub struct Requests {
    inflight: AtomicUsize,
    stopping: AtomicBool,
    idle: Notify,
    stopped: Notify,
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Requests>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Requests {
    /// Starts a request, or `None` once the agent is stopping.
    pub fn enter(self: &Arc<Self>) -> Option<InFlight> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.clone());
        // Checked after counting, so `stop` either sees this request or it sees `stopping`.
        (!self.stopping.load(Ordering::SeqCst)).then_some(guard)
    }

    /// Refuses new requests from now on.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stopped.notify_waiters();
    }

    /// Returns once [`Requests::stop`] was called: a request that only waits (an ADD held for
    /// a NIC on its way) answers then instead of holding up the stop.
    pub async fn stopping(&self) {
        let notified = self.stopped.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.stopping.load(Ordering::SeqCst) {
            notified.await;
        }
    }

    /// Requests in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Returns once no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn stop_refuses_new_requests_and_idle_waits_for_the_running_ones() {
        let requests = Arc::new(Requests::default());
        let running = requests.enter().expect("taken before stop");
        requests.stop();
        assert!(requests.enter().is_none());
        // Already stopping: returns at once.
        tokio::time::timeout(Duration::from_secs(1), requests.stopping())
            .await
            .expect("stopping returns once stopped");
        let waiter = tokio::spawn({
            let r = requests.clone();
            async move { r.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "idle while a request runs");
        drop(running);
        waiter.await.unwrap();
        assert_eq!(requests.inflight(), 0);
    }

    #[tokio::test]
    async fn stopping_wakes_the_requests_that_wait() {
        let requests = Arc::new(Requests::default());
        let waiter = tokio::spawn({
            let r = requests.clone();
            async move { r.stopping().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "stopping before stop");
        requests.stop();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("stop wakes the waiter")
            .unwrap();
    }
}
