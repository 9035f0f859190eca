//! The simulator as a running thing: the builder, the handle tests hold, the shared state, and
//! the job driver that finishes due jobs (applying hot-plug before a job turns terminal, so a
//! client that sees `successful` finds the link already there).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::wire::{self, InstanceStatus};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::clock::Clock;
use crate::config::{InstanceSpec, JobLatency, Profile, Quota, Rules, SimConfig, VxnetSpec};
use crate::faults::{Fault, FaultSet, InstalledFault};
use crate::hotplug::{Hotplug, delete_netns};
use crate::model::{HISTORY_SPAN, InstanceInfo, LinkChange, Model, NicInfo};
use crate::server::{self, CallStats, Surface};

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
    /// VPC router id → the netns playing it (fixed at start too).
    router_netns: HashMap<String, String>,
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
            let primaries = self.lock().model.primary_links();
            hp.adopt_primaries(primaries).await;
            hp.check().await;
        }
    }

    pub(crate) fn vxnet_netns(&self, vxnet: &str) -> Option<String> {
        self.vxnet_netns.get(vxnet).cloned()
    }

    pub(crate) fn router_netns(&self, router: &str) -> Option<String> {
        self.router_netns.get(router).cloned()
    }

    /// Every netns the simulator made, for teardown.
    fn owned_netns(&self) -> Vec<String> {
        self.vxnet_netns
            .values()
            .chain(self.router_netns.values())
            .cloned()
            .collect()
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

    /// Applies a named profile: overwrites the settings it governs (job latency, batch limit,
    /// rules, job history, TLS), so call it before the builder methods that refine them.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.config.apply_profile(profile);
        self
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
        // A seeded job history needs a past before the start to lie in.
        let past = if config.job_history > 0 {
            HISTORY_SPAN
        } else {
            Duration::ZERO
        };
        let clock = Arc::new(Clock::with_past(config.manual_clock, past));
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
        let admin_listener = match config.admin_listen {
            Some(a) => {
                let l = TcpListener::bind(a)
                    .await
                    .map_err(|source| Error::Bind { addr: a, source })?;
                let local = l
                    .local_addr()
                    .map_err(|source| Error::Bind { addr: a, source })?;
                Some((l, local))
            }
            None => None,
        };
        let tls = if config.tls {
            let tls = throwaway_tls::generate("qingcloud-sim", addr.ip())
                .map_err(|e| Error::Tls(e.to_string()))?;
            let (path, owned) = match &config.tls_ca_file {
                Some(p) => (p.clone(), false),
                None => (
                    std::env::temp_dir().join(format!(
                        "qingcloud-sim-ca-{}-{}.pem",
                        std::process::id(),
                        addr.port()
                    )),
                    true,
                ),
            };
            std::fs::write(&path, &tls.ca_pem)
                .map_err(|e| Error::Tls(format!("write {}: {e}", path.display())))?;
            Some((tls, CaFile { path, owned }))
        } else {
            None
        };
        // Netns last: nothing after this can fail, so they cannot leak.
        let hotplug = if config.hotplug {
            match Hotplug::setup(&model.vxnet_networks()).await {
                Ok(mut hp) => {
                    // The VMs' own NICs are there before any API call, as on a real VM.
                    hp.adopt_primaries(model.primary_links()).await;
                    Some(hp)
                }
                Err(e) => {
                    // The CA file written above must not outlive a failed start.
                    if let Some((_, file)) = &tls {
                        file.remove();
                    }
                    return Err(Error::Hotplug(e));
                }
            }
        } else {
            None
        };
        let quota = config.quota;
        let vxnet_netns = hotplug
            .as_ref()
            .map(|hp| hp.vxnet_netns().clone())
            .unwrap_or_default();
        let router_netns = hotplug
            .as_ref()
            .map(|hp| hp.router_netns().clone())
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
            router_netns,
            wake: Notify::new(),
        });
        let cancel = CancellationToken::new();
        let (acceptor, ca) = match tls {
            Some((tls, file)) => (Some(tls.acceptor), Some((tls.ca_pem, file))),
            None => (None, None),
        };
        let mut tasks = vec![
            tokio::spawn(server::serve(
                listener,
                shared.clone(),
                acceptor,
                Surface::All,
                cancel.clone(),
            )),
            tokio::spawn(drive(shared.clone(), cancel.clone())),
        ];
        let admin_addr = admin_listener.map(|(l, local)| {
            tasks.push(tokio::spawn(server::serve(
                l,
                shared.clone(),
                None,
                Surface::AdminOnly,
                cancel.clone(),
            )));
            local
        });
        tracing::info!(%addr, zone = %shared.config.zone, tls = ca.is_some(), "qingcloud simulator listening");
        Ok(SimHandle {
            shared,
            addr,
            cancel,
            tasks,
            ca,
            admin_addr,
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
    /// The CA (PEM) and its file, when serving HTTPS.
    ca: Option<(String, CaFile)>,
    /// The plain-HTTP admin-only listener, if configured.
    admin_addr: Option<SocketAddr>,
}

/// Where the CA certificate was written; `owned` files are removed when the simulator stops.
#[derive(Debug)]
struct CaFile {
    path: PathBuf,
    owned: bool,
}

impl CaFile {
    fn remove(&self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl SimHandle {
    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API endpoint, e.g. `http://127.0.0.1:41234/iaas` (`/iaas/` works too; `https`
    /// when serving TLS).
    pub fn url(&self) -> String {
        format!("{}/iaas", self.base_url())
    }

    /// `http://addr` or `https://addr`; the admin endpoints are under `/admin/`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.protocol(), self.addr)
    }

    /// Base URL of the admin endpoints: the plain-HTTP admin port when configured
    /// (`admin_listen`), else [`Self::base_url`].
    pub fn admin_url(&self) -> String {
        match self.admin_addr {
            Some(a) => format!("http://{a}"),
            None => self.base_url(),
        }
    }

    fn protocol(&self) -> &'static str {
        if self.ca.is_some() { "https" } else { "http" }
    }

    /// The CA certificate (PEM) clients must trust, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|(pem, _)| pem.as_str())
    }

    /// The file holding [`Self::ca_pem`], when serving HTTPS.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca.as_ref().map(|(_, f)| f.path.as_path())
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

    /// A QingCloud client config file (qingcloud-sdk-go keys) pointing at this simulator;
    /// when serving HTTPS it also names the CA file (`ca_file`, a hostnic client key).
    pub fn config_yaml(&self) -> String {
        let (id, secret) = self.access_key();
        let ca = self
            .ca_file()
            .map(|p| format!("ca_file: '{}'\n", p.display()))
            .unwrap_or_default();
        format!(
            "qy_access_key_id: '{id}'\nqy_secret_access_key: '{secret}'\nzone: '{zone}'\n\
             host: '{host}'\nport: {port}\nprotocol: '{protocol}'\nuri: '/iaas'\n\
             connection_retries: 3\nconnection_timeout: 30\n{ca}",
            zone = self.zone(),
            host = self.addr.ip(),
            port = self.addr.port(),
            protocol = self.protocol(),
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
        self.set_instance_status(id, status)
    }

    /// Sets an instance's status (e.g. `Suspended`); AttachNics needs `Running`.
    pub fn set_instance_status(&self, id: &str, status: InstanceStatus) -> Result<(), Error> {
        Ok(self.shared.lock().model.set_instance_status(id, status)?)
    }

    /// The account rules in force.
    pub fn rules(&self) -> Rules {
        self.shared.lock().model.rules()
    }

    /// Replaces the account rules (for calls from now on).
    pub fn set_rules(&self, rules: Rules) {
        self.shared.lock().model.set_rules(rules);
    }

    /// Most NICs per AttachNics/DetachNics call (`None`: no limit).
    pub fn set_nic_batch_limit(&self, limit: Option<usize>) {
        self.shared.lock().model.set_batch_limit(limit);
    }

    /// Adds an instance (a new node) at run time; returns its id.
    pub fn add_instance(&self, spec: InstanceSpec) -> Result<String, Error> {
        self.shared
            .lock()
            .model
            .add_instance(&spec)
            .map_err(Error::Config)
    }

    /// The netns the simulator made for a vxnet (hot-plug on only): bridge `br0`, with the
    /// gateway address on the VPC router's leg (or on `br0` itself outside any VPC).
    pub fn vxnet_netns(&self, vxnet: &str) -> Option<String> {
        self.shared.vxnet_netns(vxnet)
    }

    /// The netns playing a VPC router (hot-plug on only): IPv4 forwarding on, one leg per
    /// vxnet of the VPC holding that vxnet's gateway address.
    pub fn router_netns(&self, router: &str) -> Option<String> {
        self.shared.router_netns(router)
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
        delete_netns(&self.shared.owned_netns());
        if let Some((_, file)) = &self.ca {
            file.remove();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        delete_netns(&self.shared.owned_netns());
        if let Some((_, file)) = &self.ca {
            file.remove();
        }
    }
}
