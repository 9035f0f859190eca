//! What the agent knows of the cluster: this node's HostNics (label selector
//! `hostnic.qingcloud.com/node=<node>`) and every NicPool, kept by kube-runtime reflectors.
//!
//! The reflector lags behind the agent's own writes, so they are laid over it (see
//! [`crate::overlay`]). Reading a stale object is still safe: every write is optimistic and a
//! 409 picks again.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hostnic_crds::{HostNic, NicPool};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::overlay::Overlay;

/// The agent's cached view of its HostNics and the NicPools.
pub struct View {
    node: String,
    nics: Store<HostNic>,
    pools: Store<NicPool>,
    /// Our writes the reflector has not shown yet.
    own_writes: Mutex<Overlay>,
    /// Becomes true once both reflectors have listed.
    synced: tokio::sync::watch::Receiver<bool>,
    /// Woken on every watch event, so the link reporter reacts at once.
    pub changed: Arc<Notify>,
    /// Bumped on every watch event and own write, for any number of waiters (ADDs waiting for
    /// a NIC).
    revision: Arc<tokio::sync::watch::Sender<u64>>,
}

impl View {
    /// Starts the reflectors on `client`; they run until the returned tasks are aborted.
    pub fn start(client: Client, node: &str) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        let changed = Arc::new(Notify::new());
        let revision = Arc::new(tokio::sync::watch::Sender::new(0));
        let (nics, nic_writer) = reflector::store::<HostNic>();
        let (pools, pool_writer) = reflector::store::<NicPool>();
        let selector = format!(
            "{}={}",
            hostnic_crds::NODE_LABEL,
            hostnic_crds::names::label_value(node)
        );
        let nic_stream = watcher(
            Api::<HostNic>::all(client.clone()),
            watcher::Config::default().labels(&selector),
        )
        .default_backoff()
        .reflect(nic_writer);
        let pool_stream = watcher(Api::<NicPool>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(pool_writer);
        // A store's readiness future keeps only its latest poller's waker, so exactly one task
        // awaits it and publishes the result for everyone else.
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let (n, p) = (nics.clone(), pools.clone());
        let tasks = vec![
            tokio::spawn(drive(
                nic_stream,
                changed.clone(),
                revision.clone(),
                "hostnics",
            )),
            tokio::spawn(drive(
                pool_stream,
                changed.clone(),
                revision.clone(),
                "nicpools",
            )),
            tokio::spawn(async move {
                if n.wait_until_ready().await.is_ok() && p.wait_until_ready().await.is_ok() {
                    let _ = synced_tx.send(true);
                }
            }),
        ];
        let view = Arc::new(Self {
            node: node.to_owned(),
            nics,
            pools,
            own_writes: Mutex::new(Overlay::default()),
            synced,
            changed,
            revision,
        });
        (view, tasks)
    }

    /// This agent's node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Waits until both reflectors have listed once.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // Errors only when the agent is shutting down.
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Whether both reflectors have listed once.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// This node's HostNics, our own latest writes overlaid.
    pub fn nics(&self) -> Vec<Arc<HostNic>> {
        let mut own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        own.apply(self.nics.state())
            .into_iter()
            .filter(|n| n.spec.node == self.node)
            .collect()
    }

    /// Every NicPool.
    pub fn pools(&self) -> Vec<Arc<NicPool>> {
        self.pools.state()
    }

    /// Remembers our write of `written`, which replaced version `replaced`.
    pub fn record_write(&self, replaced: Option<String>, written: HostNic) {
        let mut own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        own.record(replaced, written);
        drop(own);
        self.revision.send_modify(|r| *r += 1);
    }

    /// A receiver told of every later change of the view (watch events and own writes).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

async fn drive<S, T>(
    stream: S,
    changed: Arc<Notify>,
    revision: Arc<tokio::sync::watch::Sender<u64>>,
    what: &'static str,
) where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => {
                changed.notify_one();
                revision.send_modify(|r| *r += 1);
            }
            Err(error) => tracing::warn!(what, %error, "watch failed; retrying with backoff"),
        }
    }
}
