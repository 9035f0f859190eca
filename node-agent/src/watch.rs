//! What the agent knows of the cluster: this node's HostNics (label selector
//! `hostnic.qingcloud.com/node=<node>`) and every NicPool, kept by kube-runtime reflectors.
//!
//! The reflector lags behind the agent's own writes, so each write is remembered next to the
//! resourceVersion it replaced until the reflector shows any other version of that object.
//! Reading a stale object is still safe: every write is optimistic and a 409 picks again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hostnic_crds::{HostNic, NicPool};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

/// The resourceVersion a write of ours replaced, and the object we wrote.
type OwnWrite = (Option<String>, Arc<HostNic>);

/// The agent's cached view of its HostNics and the NicPools.
pub struct View {
    node: String,
    nics: Store<HostNic>,
    pools: Store<NicPool>,
    /// name -> (resourceVersion our write replaced, the object we wrote).
    own_writes: Mutex<HashMap<String, OwnWrite>>,
    /// Becomes true once both reflectors have listed.
    synced: tokio::sync::watch::Receiver<bool>,
    /// Woken on every watch event, so the link reporter reacts at once.
    pub changed: Arc<Notify>,
}

impl View {
    /// Starts the reflectors on `client`; they run until the returned tasks are aborted.
    pub fn start(client: Client, node: &str) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        let changed = Arc::new(Notify::new());
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
            tokio::spawn(drive(nic_stream, changed.clone(), "hostnics")),
            tokio::spawn(drive(pool_stream, changed.clone(), "nicpools")),
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
            own_writes: Mutex::new(HashMap::new()),
            synced,
            changed,
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
        let seen = self.nics.state();
        let mut out = Vec::with_capacity(seen.len());
        let mut present = std::collections::HashSet::new();
        for nic in seen {
            let name = nic.name_any();
            present.insert(name.clone());
            match own.get(&name) {
                Some((replaced, written)) if *replaced == nic.resource_version() => {
                    out.push(written.clone())
                }
                Some(_) => {
                    own.remove(&name);
                    out.push(nic);
                }
                None => out.push(nic),
            }
        }
        own.retain(|name, _| present.contains(name));
        out.into_iter()
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
        own.insert(written.name_any(), (replaced, Arc::new(written)));
    }
}

async fn drive<S, T>(stream: S, changed: Arc<Notify>, what: &'static str)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => changed.notify_one(),
            Err(error) => tracing::warn!(what, %error, "watch failed; retrying with backoff"),
        }
    }
}
