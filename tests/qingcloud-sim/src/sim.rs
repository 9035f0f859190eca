//! The simulator as a running thing: the builder, the handle tests hold, the shared state, and
//! the job driver that finishes due jobs (applying hot-plug before a job turns terminal, so a
//! client that sees `successful` finds the link already there).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use qingcloud::wire::{self, InstanceStatus};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::clock::Clock;
use crate::config::{InstanceSpec, JobLatency, Quota, SimConfig, VxnetSpec};
use crate::faults::{Fault, FaultSet, InstalledFault};
use crate::hotplug::{Hotplug, delete_netns};
use crate::model::{InstanceInfo, LinkChange, Model, NicInfo};
use crate::server::{self, CallStats};

/// Mutable state behind one lock (never held across an await).
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) model: Model,
    pub(crate) faults: FaultSet,
    pub(crate) calls: CallStats,
    quota: Option<Quota>,
    window: (Duration, u64),
}

impl State {
    /// Sets or removes the quota; counting restarts at `now`.
    pub(crate) fn set_quota(&mut self, quota: Option<Quota>, now: Duration) {
        self.quota = quota;
        self.window = (now, 0);
    }

    /// Counts one request against the quota's fixed window; false when over the quota.
    pub(crate) fn quota_admits(&mut self, now: Duration) -> bool {
        let Some(q) = self.quota else {
            return true;
        };
        let window = Duration::from_millis(q.window_ms.max(1));
        if now.saturating_sub(self.window.0) >= window {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        self.window.1 <= q.requests
    }
}

/// What the server tasks, the driver and the handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) clock: Arc<Clock>,
    state: Mutex<State>,
    /// `None` when hot-plug is off. Also serializes job completion with link checks.
    hotplug: tokio::sync::Mutex<Option<Hotplug>>,
    /// vxnet id → the netns made for it (fixed at start, so teardown needs no lock).
    vxnet_netns: HashMap<String, String>,
    /// Wakes the driver when a job is created (its deadline may be the next one).
    pub(crate) wake: Notify,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for a simulator.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finishes every due job: link changes first, then the terminal status.
    pub(crate) async fn tick(&self) {
        let mut hotplug = self.hotplug.lock().await;
        let due = self.lock().model.take_due_jobs();
        if let Some(hp) = hotplug.as_mut() {
            // A NIC is in at most one unfinished job, so the jobs' changes never collide.
            let changes: Vec<_> = due.iter().flat_map(|job| job.changes.clone()).collect();
            hp.apply(self.with_nodes(changes)).await;
        }
        for job in due {
            self.lock().model.finish_job(job);
        }
        let links = self.lock().model.take_due_links();
        if let Some(hp) = hotplug.as_mut() {
            hp.apply(self.with_nodes(links)).await;
        }
    }

    /// Pairs each change with its instance's node netns.
    fn with_nodes(&self, changes: Vec<LinkChange>) -> Vec<(LinkChange, Option<String>)> {
        let st = self.lock();
        changes
            .into_iter()
            .map(|c| {
                let node = st.model.node_netns(&c.instance);
                (c, node)
            })
            .collect()
    }

    async fn check_links(&self) {
        if let Some(hp) = self.hotplug.lock().await.as_mut() {
            hp.check().await;
        }
    }

    pub(crate) fn vxnet_netns(&self, vxnet: &str) -> Option<String> {
        self.vxnet_netns.get(vxnet).cloned()
    }
}

/// Builds a simulator. Defaults: zone `pek3a`, one access key (see [`SimConfig::default`]),
/// no vxnets or instances, hot-plug off, jobs of 150-450 ms.
#[derive(Clone, Debug, Default)]
pub struct Simulator {
    config: SimConfig,
}

impl Simulator {
    /// A builder with the defaults.
    pub fn builder() -> Self {
        Self::default()
    }

    /// A builder starting from a full config (e.g. read from a file).
    pub fn from_config(config: SimConfig) -> Self {
        Self { config }
    }

    /// Replaces the accepted keys with this one.
    pub fn access_key(mut self, id: &str, secret: &str) -> Self {
        self.config.access_keys = vec![crate::config::AccessKey {
            id: id.to_owned(),
            secret: secret.to_owned(),
        }];
        self
    }

    /// The zone served.
    pub fn zone(mut self, zone: &str) -> Self {
        self.config.zone = zone.to_owned();
        self
    }

    /// Adds a vxnet.
    pub fn vxnet(mut self, spec: VxnetSpec) -> Self {
        self.config.vxnets.push(spec);
        self
    }

    /// Adds an instance (after the vxnets it needs).
    pub fn instance(mut self, spec: InstanceSpec) -> Self {
        self.config.instances.push(spec);
        self
    }

    /// Job phase latencies.
    pub fn job_latency(mut self, latency: JobLatency) -> Self {
        self.config.job_latency = latency;
        self
    }

    /// Seed for ids, latencies and fault probabilities.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Turns hot-plug into the instances' node netns on (needs root).
    pub fn hotplug(mut self, on: bool) -> Self {
        self.config.hotplug = on;
        self
    }

    /// Job time moves only through [`SimHandle::advance`].
    pub fn manual_clock(mut self) -> Self {
        self.config.manual_clock = true;
        self
    }

    /// Gives access to every other setting.
    pub fn configure(mut self, f: impl FnOnce(&mut SimConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Starts the HTTP server, the job driver and (if on) the vxnet netns.
    pub async fn start(self) -> Result<SimHandle, Error> {
        let config = self.config;
        let clock = Arc::new(Clock::new(config.manual_clock));
        let model = Model::new(&config, clock.clone()).map_err(Error::Config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        // Netns last: nothing after this can fail, so they cannot leak.
        let hotplug = if config.hotplug {
            Some(
                Hotplug::setup(&model.vxnet_networks())
                    .await
                    .map_err(Error::Hotplug)?,
            )
        } else {
            None
        };
        let quota = config.quota;
        let vxnet_netns = hotplug
            .as_ref()
            .map(|hp| hp.vxnet_netns().clone())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            config,
            clock,
            state: Mutex::new(State {
                model,
                faults: FaultSet::default(),
                calls: CallStats::default(),
                quota,
                window: (Duration::ZERO, 0),
            }),
            hotplug: tokio::sync::Mutex::new(hotplug),
            vxnet_netns,
            wake: Notify::new(),
        });
        let cancel = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(server::serve(listener, shared.clone(), cancel.clone())),
            tokio::spawn(drive(shared.clone(), cancel.clone())),
        ];
        tracing::info!(%addr, zone = %shared.config.zone, "qingcloud simulator listening");
        Ok(SimHandle {
            shared,
            addr,
            cancel,
            tasks,
        })
    }
}

/// Finishes jobs when due and checks hot-plugged links, until cancelled.
async fn drive(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut check = tokio::time::interval(Duration::from_millis(
        shared.config.hotplug_check_ms.max(10),
    ));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        shared.tick().await;
        let next = if shared.clock.is_manual() {
            None
        } else {
            shared.lock().model.next_deadline()
        };
        let sleep = async {
            match next {
                // A millisecond of slack so the deadline has surely passed on wake-up.
                Some(d) => tokio::time::sleep(d + Duration::from_millis(1)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = sleep => {}
            _ = check.tick(), if shared.config.hotplug => shared.check_links().await,
        }
    }
}

/// A running simulator. Dropping it stops the server and removes the netns it made (also on
/// a panicking test); [`SimHandle::shutdown`] does the same and waits.
#[derive(Debug)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API endpoint, e.g. `http://127.0.0.1:41234/iaas` (`/iaas/` works too).
    pub fn url(&self) -> String {
        format!("http://{}/iaas", self.addr)
    }

    /// The zone served.
    pub fn zone(&self) -> &str {
        &self.shared.config.zone
    }

    /// The first access key: (id, secret).
    pub fn access_key(&self) -> (&str, &str) {
        self.shared
            .config
            .access_keys
            .first()
            .map_or(("", ""), |k| (k.id.as_str(), k.secret.as_str()))
    }

    /// A QingCloud client config file (qingcloud-sdk-go keys) pointing at this simulator.
    pub fn config_yaml(&self) -> String {
        let (id, secret) = self.access_key();
        format!(
            "qy_access_key_id: '{id}'\nqy_secret_access_key: '{secret}'\nzone: '{zone}'\n\
             host: '{host}'\nport: {port}\nprotocol: 'http'\nuri: '/iaas'\n\
             connection_retries: 3\nconnection_timeout: 30\n",
            zone = self.zone(),
            host = self.addr.ip(),
            port = self.addr.port(),
        )
    }

    /// Every NIC, primaries included (filter on `nic.role == Some(0)` for secondaries).
    pub fn nics(&self) -> Vec<NicInfo> {
        self.shared.lock().model.nic_infos()
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<wire::Job> {
        self.shared.lock().model.job_views()
    }

    /// Every vxnet (verbose view, with `instance_ids`).
    pub fn vxnets(&self) -> Vec<wire::Vxnet> {
        self.shared.lock().model.vxnet_views()
    }

    /// Every instance with its attached NICs and node netns.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        self.shared.lock().model.instance_infos()
    }

    /// Calls received so far.
    pub fn calls(&self) -> CallStats {
        self.shared.lock().calls.clone()
    }

    /// Zeroes the call counters.
    pub fn reset_calls(&self) {
        self.shared.lock().calls = CallStats::default();
    }

    /// Installs a fault; returns its id.
    pub fn inject(&self, fault: Fault) -> u64 {
        self.shared.lock().faults.add(fault)
    }

    /// Removes one fault; false if it is gone already (e.g. a used-up `next`).
    pub fn remove_fault(&self, id: u64) -> bool {
        self.shared.lock().faults.remove(id)
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The installed faults.
    pub fn faults(&self) -> Vec<InstalledFault> {
        self.shared.lock().faults.list()
    }

    /// Sets or removes the account's API request quota (counting restarts).
    pub fn set_quota(&self, quota: Option<Quota>) {
        let now = self.shared.clock.now();
        self.shared.lock().set_quota(quota, now);
    }

    /// Latencies of jobs created from now on.
    pub fn set_job_latency(&self, latency: JobLatency) {
        self.shared.lock().model.set_latency(latency);
    }

    /// Starts or stops an instance (AttachNics needs it running).
    pub fn set_instance_running(&self, id: &str, running: bool) -> Result<(), Error> {
        let status = if running {
            InstanceStatus::Running
        } else {
            InstanceStatus::Stopped
        };
        Ok(self.shared.lock().model.set_instance_status(id, status)?)
    }

    /// Adds an instance (a new node) at run time; returns its id.
    pub fn add_instance(&self, spec: InstanceSpec) -> Result<String, Error> {
        self.shared
            .lock()
            .model
            .add_instance(&spec)
            .map_err(Error::Config)
    }

    /// The netns the simulator made for a vxnet (hot-plug on only): its bridge `br0` holds the
    /// gateway address.
    pub fn vxnet_netns(&self, vxnet: &str) -> Option<String> {
        self.shared.vxnet_netns(vxnet)
    }

    /// Moves a manual clock forward and finishes the jobs that became due.
    pub async fn advance(&self, by: Duration) -> Result<(), Error> {
        if !self.shared.clock.advance(by) {
            return Err(Error::NotManualClock);
        }
        self.shared.tick().await;
        Ok(())
    }

    /// Stops serving and removes every netns and link the simulator made.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            if let Err(error) = task.await {
                tracing::warn!(%error, "simulator task ended badly");
            }
        }
        delete_netns(self.shared.vxnet_netns.values());
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        delete_netns(self.shared.vxnet_netns.values());
    }
}
