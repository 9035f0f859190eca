//! A stand-in for a cluster component (agents, kubelets) that runs against the API server on a
//! thread of its own beside the blocking harness, counting what it did, stopped on drop.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use kube::Client;
use kube::config::Kubeconfig;

/// What the stand-in's task sees: whether to stop, and where to count its deeds.
#[derive(Clone, Debug, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
}

impl Control {
    /// Whether the stand-in was asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts `n` more deeds.
    pub fn count(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// The running stand-in.
pub struct StandIn {
    control: Control,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Runs `task` with a client for the cluster behind `kubeconfig` on a runtime of its own;
    /// the task returns once [`Control::stopping`] says so.
    pub fn start<F, Fut>(kubeconfig: &Path, task: F) -> Result<Self>
    where
        F: FnOnce(Client, Control) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let kubeconfig = Kubeconfig::read_from(kubeconfig).context("read kubeconfig")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let client = runtime.block_on(crate::scratch::client(kubeconfig))?;
        let control = Control::default();
        let c = control.clone();
        let thread = std::thread::spawn(move || runtime.block_on(task(client, c)));
        Ok(Self {
            control,
            thread: Some(thread),
        })
    }

    /// Deeds counted so far.
    pub fn done(&self) -> u64 {
        self.control.done.load(Ordering::Relaxed)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
