//! Cloud calls a HostNic reconcile hands off instead of awaiting. A batched call waits for the
//! rest of its round and for the rate budget; a reconcile awaiting it would hold one of the
//! controller's few slots all that time, so the rounds of many nodes could never fill (each
//! slot waiting for siblings queued behind it) and urgent work would queue behind refills. The
//! answer is kept for the HostNic and wakes its reconcile, which records it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use hostnic_crds::HostNic;
use kube::runtime::reflector::ObjectRef;

use crate::cloud::CloudResult;
use crate::sync::lock;

/// Wakes the HostNic controller for one object (its `reconcile_on` stream).
#[derive(Debug, Clone)]
pub struct Wake(mpsc::UnboundedSender<ObjectRef<HostNic>>);

impl Wake {
    /// A waker and the stream of objects it wakes, for `Controller::reconcile_on`.
    pub fn channel() -> (Self, impl futures::Stream<Item = ObjectRef<HostNic>>) {
        let (tx, rx) = mpsc::unbounded();
        (Self(tx), rx)
    }

    pub(super) fn wake(&self, name: &str) {
        // The controller is gone at the end of a term: nobody is left to wake.
        let _ = self.0.unbounded_send(ObjectRef::new(name));
    }
}

/// Where a handed-off call stands.
#[derive(Debug)]
pub enum Call<R> {
    /// Still waiting for its batch, the budget or the cloud.
    Running,
    /// The cloud's answer, not yet recorded.
    Answered(CloudResult<R>),
}

/// Per HostNic, the one call of one action it handed off (at most one at a time).
#[derive(Debug)]
pub struct Handoff<R> {
    calls: Arc<Mutex<HashMap<String, Option<CloudResult<R>>>>>,
    wake: Wake,
}

impl<R: Send + 'static> Handoff<R> {
    /// Calls whose answers wake their HostNic through `wake`.
    pub fn new(wake: Wake) -> Self {
        Self {
            calls: Arc::default(),
            wake,
        }
    }

    /// `name`'s call: Running, or its answer (taken: the caller records it). None: none was
    /// handed off, or its answer was taken.
    pub fn take(&self, name: &str) -> Option<Call<R>> {
        let mut calls = lock(&self.calls);
        match calls.get(name)? {
            None => Some(Call::Running),
            Some(_) => calls.remove(name).flatten().map(Call::Answered),
        }
    }

    /// Whether `name` has a call running or an answer not yet taken.
    pub fn pending(&self, name: &str) -> bool {
        lock(&self.calls).contains_key(name)
    }

    /// Runs `call` for `name` in the background; its answer wakes `name`'s reconcile. Ignored
    /// while `name` already has one (a reconcile always takes the answer before calling again).
    pub fn start(&self, name: &str, call: impl Future<Output = CloudResult<R>> + Send + 'static) {
        {
            let mut calls = lock(&self.calls);
            if calls.contains_key(name) {
                return;
            }
            calls.insert(name.to_string(), None);
        }
        let (calls, wake, name) = (self.calls.clone(), self.wake.clone(), name.to_string());
        tokio::spawn(async move {
            let answer = call.await;
            lock(&calls).insert(name.clone(), Some(answer));
            wake.wake(&name);
        });
    }

    /// `name` is gone: its answer, if one comes, has nobody to record it.
    pub fn forget(&self, name: &str) {
        lock(&self.calls).remove(name);
    }
}

/// HostNics whose cleanup call, made on what their status said (no DescribeNics), the cloud
/// refused: their NIC is read before the next call. In memory only: after a restart a wrong
/// status costs one more refused call.
#[derive(Debug, Default)]
pub struct Doubts(Mutex<HashSet<String>>);

impl Doubts {
    /// The cloud refused a call `name` made on its status's word.
    pub fn refused(&self, name: &str) {
        lock(&self.0).insert(name.to_string());
    }

    /// Whether `name`'s status was proven wrong since its NIC was last read.
    pub fn was_refused(&self, name: &str) -> bool {
        lock(&self.0).contains(name)
    }

    /// `name`'s NIC was read (or `name` is gone).
    pub fn clear(&self, name: &str) {
        lock(&self.0).remove(name);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn the_answer_wakes_its_object_once_and_is_taken_once() {
        let (wake, mut woken) = Wake::channel();
        let calls: Handoff<String> = Handoff::new(wake);
        assert!(calls.take("hn-a").is_none());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        calls.start("hn-a", async move {
            let _ = rx.await;
            Ok("j-1".to_string())
        });
        // A second start while one runs makes no second call.
        calls.start("hn-a", async { panic!("a second call was made") });
        assert!(matches!(calls.take("hn-a"), Some(Call::Running)));
        assert!(calls.pending("hn-a"));
        let _ = tx.send(());
        assert_eq!(woken.next().await, Some(ObjectRef::new("hn-a")));
        assert!(matches!(calls.take("hn-a"), Some(Call::Answered(Ok(j))) if j == "j-1"));
        assert!(calls.take("hn-a").is_none());
        assert!(!calls.pending("hn-a"));
    }
}
