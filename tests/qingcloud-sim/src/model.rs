//! The account's resources (vxnets, instances, NICs, jobs) and every rule the real API
//! enforces on them. Pure state: no I/O; the job driver applies hot-plug effects between
//! `take_due_jobs` and `finish_job`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::{self, InstanceStatus, JobStatus, NicStatus};
use ipnet::Ipv4Net;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::api_error::ApiError;
use crate::clock::Clock;
use crate::config::{InstanceJobs, InstanceSpec, JobLatency, Rules, SimConfig, VxnetSpec};

/// At most this many secondary NICs per instance (64 NICs including the primary).
pub const MAX_SECONDARY_NICS: usize = 63;
/// At most this many NICs per vxnet.
pub const MAX_VXNET_NICS: usize = 252;
/// Describe* never return more rows than this, whatever `limit` asks.
pub const PAGE_CAP: u64 = 100;

/// A NIC's state inside the simulator, finer than the API's `available`/`in-use`: a NIC in an
/// unfinished job shows its old status to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicState {
    /// Not attached, no job.
    Available,
    /// In an unfinished AttachNics job (shown `available`).
    Attaching,
    /// Attached.
    InUse,
    /// In an unfinished DetachNics job (shown `in-use`).
    Detaching,
}

/// A NIC as the inspection API shows it: the wire view plus the simulator's own state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// Exactly what DescribeNics would show (ignoring hidden polls).
    #[serde(flatten)]
    pub nic: wire::Nic,
    /// The fine-grained state.
    pub state: NicState,
    /// The instance involved: attached, or the target of an unfinished attach.
    pub instance: Option<String>,
    /// The unfinished job the NIC is part of.
    pub job_id: Option<String>,
    /// DescribeNics calls that will still leave it out (eventual consistency fault).
    pub hidden_polls: u32,
}

/// An instance as the inspection API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Exactly what DescribeInstances shows.
    #[serde(flatten)]
    pub instance: wire::Instance,
    /// The netns playing this VM, if any.
    pub node_netns: Option<String>,
}

/// How an attach/detach job ends (chosen when it is created).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// Every NIC is attached/detached.
    Successful,
    /// Nothing changes.
    Failed,
    /// Every NIC but the last of the batch is attached/detached.
    DoneWithFailure,
    /// The job stays `working` for ever and its NICs stay busy.
    NeverFinish,
}

/// How an injected fault shapes one attach/detach job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct JobFaults {
    pub(crate) outcome: Option<JobOutcome>,
    /// DescribeNics keeps showing the NICs' old status for this many matching calls after
    /// the job ends.
    pub(crate) status_lag_polls: u32,
    /// Attach only: the link appears this long after the job ends.
    pub(crate) link_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobKind {
    Attach,
    Detach,
}

impl JobKind {
    fn action(self) -> &'static str {
        match self {
            Self::Attach => "AttachNics",
            Self::Detach => "DetachNics",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `pending` until `pending_until`, then `working`.
    Running,
    /// Its effects are being applied (shown `working`).
    Finishing,
    Done(JobStatus),
}

#[derive(Debug)]
struct Job {
    id: String,
    kind: JobKind,
    /// (nic, instance) pairs.
    nics: Vec<(String, String)>,
    created: Duration,
    pending_until: Duration,
    working_until: Option<Duration>,
    outcome: JobOutcome,
    faults: JobFaults,
    phase: Phase,
    status_changed: Duration,
}

#[derive(Debug)]
struct Vxnet {
    id: String,
    name: String,
    cidr: Ipv4Net,
    /// The VPC router; `None` when the vxnet is in no VPC.
    router: Option<String>,
    dhcp: bool,
    created: Duration,
    used_ips: BTreeSet<Ipv4Addr>,
}

impl Vxnet {
    fn gateway(&self) -> Ipv4Addr {
        offset(self.cidr.network(), 1)
    }

    /// DHCP range: every host after the gateway.
    fn dyn_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        (
            offset(self.cidr.network(), 2),
            offset(self.cidr.broadcast(), -1),
        )
    }

    fn in_dyn_range(&self, ip: Ipv4Addr) -> bool {
        let (a, b) = self.dyn_range();
        a <= ip && ip <= b
    }

    fn free_ips(&self) -> usize {
        let (a, b) = self.dyn_range();
        let size = (u32::from(b) + 1).saturating_sub(u32::from(a)) as usize;
        size.saturating_sub(
            self.used_ips
                .iter()
                .filter(|ip| self.in_dyn_range(**ip))
                .count(),
        )
    }

    fn allocate(&mut self) -> Option<Ipv4Addr> {
        let (a, b) = self.dyn_range();
        let ip = (u32::from(a)..=u32::from(b))
            .map(Ipv4Addr::from)
            .find(|ip| !self.used_ips.contains(ip))?;
        self.used_ips.insert(ip);
        Some(ip)
    }
}

fn offset(ip: Ipv4Addr, by: i64) -> Ipv4Addr {
    Ipv4Addr::from((i64::from(u32::from(ip)) + by).clamp(0, i64::from(u32::MAX)) as u32)
}

#[derive(Debug)]
struct Instance {
    id: String,
    name: String,
    status: InstanceStatus,
    node_netns: Option<String>,
}

#[derive(Debug)]
struct Nic {
    id: String,
    name: String,
    vxnet: String,
    ip: Option<Ipv4Addr>,
    primary: bool,
    state: NicState,
    /// Attached/attaching instance.
    instance: Option<String>,
    job: Option<String>,
    sequence: u32,
    created: Duration,
    status_changed: Duration,
    hidden_polls: u32,
    /// What DescribeNics still shows after a job with a status-lag fault: (in use, instance,
    /// polls left).
    stale: Option<(bool, Option<String>, u32)>,
}

impl Nic {
    /// Whether clients see it `in-use` (a detaching NIC still is; an attaching one not yet).
    fn shown_in_use(&self) -> bool {
        match &self.stale {
            Some((in_use, _, _)) => *in_use,
            None => matches!(self.state, NicState::InUse | NicState::Detaching),
        }
    }

    /// The `instance_id` clients see.
    fn shown_instance(&self) -> Option<&str> {
        match &self.stale {
            Some((_, instance, _)) => instance.as_deref(),
            None => self.instance.as_deref().filter(|_| self.shown_in_use()),
        }
    }
}

/// A NIC whose link must appear in (plug) or vanish from (unplug) its instance's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkChange {
    pub(crate) mac: String,
    pub(crate) vxnet: String,
    pub(crate) instance: String,
    pub(crate) plug: bool,
}

/// A vxnet as the hot-plug layer needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VxnetNetwork {
    pub(crate) id: String,
    pub(crate) cidr: Ipv4Net,
    pub(crate) gateway: Ipv4Addr,
    /// The VPC router it is joined to; `None` outside a VPC (nothing routes it).
    pub(crate) router: Option<String>,
}

/// An instance's primary NIC in its node netns: plugged like any NIC, then addressed with a
/// default route through its vxnet's gateway, as a VM's `eth0` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PrimaryLink {
    pub(crate) mac: String,
    pub(crate) vxnet: String,
    pub(crate) node: String,
    pub(crate) address: Ipv4Net,
    pub(crate) gateway: Ipv4Addr,
}

/// A job whose time is up: its link changes must be applied before [`Model::finish_job`].
#[derive(Debug)]
pub(crate) struct DueJob {
    index: usize,
    succeeded: Vec<String>,
    pub(crate) changes: Vec<LinkChange>,
}

/// Paging parameters (`offset`, `limit`, already capped).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Page {
    pub(crate) offset: u64,
    pub(crate) limit: u64,
}

impl Page {
    fn apply<T>(self, rows: Vec<T>) -> (u64, Vec<T>) {
        let total = rows.len() as u64;
        let rows = rows
            .into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(self.limit.min(PAGE_CAP)).unwrap_or(usize::MAX))
            .collect();
        (total, rows)
    }
}

/// DescribeNics filters; empty lists match everything.
#[derive(Clone, Debug, Default)]
pub(crate) struct NicFilter {
    pub(crate) nics: Vec<String>,
    pub(crate) instances: Vec<String>,
    pub(crate) vxnets: Vec<String>,
    pub(crate) status: Option<NicStatus>,
    pub(crate) name: Option<String>,
}

/// One row of DescribeVxnetInstances (a NIC of an instance in the vxnet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxnetInstance {
    /// `i-...`.
    pub instance_id: String,
    /// Display name.
    pub instance_name: String,
    /// The instance's status.
    pub status: InstanceStatus,
    /// The vxnet asked for.
    pub vxnet_id: String,
    /// The NIC of the instance in that vxnet.
    pub nic_id: String,
    /// Its private IP.
    pub private_ip: String,
    /// Its index on the instance.
    pub sequence: u32,
    /// 1 = primary.
    pub role: u8,
}

/// The simulated account.
#[derive(Debug)]
pub(crate) struct Model {
    clock: Arc<Clock>,
    zone: String,
    owner: String,
    capacity_code: i32,
    batch_limit: Option<usize>,
    rules: Rules,
    /// The router of the account's VPC, which vxnets join unless told otherwise (drawn with
    /// the first such vxnet).
    default_router: Option<String>,
    nic_quota: Option<usize>,
    latency: JobLatency,
    pub(crate) rng: StdRng,
    vxnets: Vec<Vxnet>,
    instances: BTreeMap<String, Instance>,
    /// By creation serial, so listings come out in creation order.
    nics: BTreeMap<u64, Nic>,
    nic_serial: HashMap<String, u64>,
    next_serial: u64,
    issued_macs: HashSet<String>,
    jobs: Vec<Job>,
    job_index: HashMap<String, usize>,
    active_jobs: BTreeSet<usize>,
    /// Plugs held back by a link-delay fault, with their due time.
    delayed_links: Vec<(Duration, LinkChange)>,
    /// How long a new NIC stays out of DescribeNics.
    visibility_lag: Duration,
}

impl Model {
    /// Builds the account from a config; 1100-style errors for bad specs.
    pub(crate) fn new(cfg: &SimConfig, clock: Arc<Clock>) -> Result<Self, String> {
        let mut m = Self {
            clock,
            zone: cfg.zone.clone(),
            owner: cfg.owner.clone(),
            capacity_code: cfg.capacity_error_code,
            batch_limit: cfg.nic_batch_limit,
            rules: cfg.rules,
            default_router: None,
            nic_quota: cfg.nic_quota,
            latency: cfg.job_latency,
            rng: StdRng::seed_from_u64(cfg.seed),
            vxnets: Vec::new(),
            instances: BTreeMap::new(),
            nics: BTreeMap::new(),
            nic_serial: HashMap::new(),
            next_serial: 0,
            issued_macs: HashSet::new(),
            jobs: Vec::new(),
            job_index: HashMap::new(),
            active_jobs: BTreeSet::new(),
            delayed_links: Vec::new(),
            visibility_lag: Duration::from_millis(cfg.nic_visibility_lag_ms),
        };
        for v in &cfg.vxnets {
            m.add_vxnet(v)?;
        }
        for i in &cfg.instances {
            m.add_instance(i)?;
        }
        m.seed_history(cfg.job_history);
        Ok(m)
    }

    pub(crate) fn zone(&self) -> &str {
        &self.zone
    }

    pub(crate) fn set_latency(&mut self, latency: JobLatency) {
        self.latency = latency;
    }

    pub(crate) fn rules(&self) -> Rules {
        self.rules
    }

    pub(crate) fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    pub(crate) fn set_batch_limit(&mut self, limit: Option<usize>) {
        self.batch_limit = limit;
    }

    fn now(&self) -> Duration {
        self.clock.now()
    }

    fn stamp(&self, at: Duration) -> String {
        self.clock.stamp(at)
    }

    fn random_id(&mut self, prefix: &str, len: usize) -> String {
        const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let tail: String = (0..len)
            .map(|_| char::from(CHARS[self.rng.random_range(0..CHARS.len())]))
            .collect();
        format!("{prefix}{tail}")
    }

    /// A MAC never issued before by this simulator: `52:54` + 4 random bytes, lowercase.
    fn new_mac(&mut self) -> String {
        loop {
            let b: [u8; 4] = self.rng.random();
            let mac = format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]);
            if self.issued_macs.insert(mac.clone()) {
                return mac;
            }
        }
    }

    pub(crate) fn add_vxnet(&mut self, spec: &VxnetSpec) -> Result<String, String> {
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => self.random_id("vxnet-", 7),
        };
        if self.vxnet(&id).is_some() {
            return Err(format!("vxnet {id} defined twice"));
        }
        if spec.cidr.prefix_len() > 29 {
            return Err(format!("vxnet {id}: {} is too small", spec.cidr));
        }
        let router = match (&spec.router, spec.vpc) {
            (_, false) => None,
            (Some(r), true) => Some(r.clone()),
            (None, true) => Some(match &self.default_router {
                Some(r) => r.clone(),
                None => {
                    let r = self.random_id("rtr-", 8);
                    self.default_router = Some(r.clone());
                    r
                }
            }),
        };
        let created = self.now();
        self.vxnets.push(Vxnet {
            name: spec.name.clone().unwrap_or_else(|| id.clone()),
            id: id.clone(),
            cidr: spec.cidr.trunc(),
            router,
            dhcp: spec.dhcp,
            created,
            used_ips: BTreeSet::new(),
        });
        Ok(id)
    }

    /// Adds an instance with its primary NIC.
    pub(crate) fn add_instance(&mut self, spec: &InstanceSpec) -> Result<String, String> {
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => self.random_id("i-", 8),
        };
        if self.instances.contains_key(&id) {
            return Err(format!("instance {id} defined twice"));
        }
        let vxnet = match &spec.vxnet {
            Some(v) => v.clone(),
            None => self
                .vxnets
                .first()
                .map(|v| v.id.clone())
                .ok_or_else(|| format!("instance {id}: no vxnet for its primary NIC"))?,
        };
        let mac = self
            .create_nics(&vxnet, 1, "", &[], false, 0)
            .map_err(|e| format!("instance {id}: primary NIC: {}", e.message))?
            .remove(0)
            .0;
        if let Some(nic) = self.nic_mut(&mac) {
            nic.primary = true;
            nic.state = NicState::InUse;
            nic.instance = Some(id.clone());
        }
        self.instances.insert(
            id.clone(),
            Instance {
                name: spec.name.clone().unwrap_or_else(|| id.clone()),
                id: id.clone(),
                status: if spec.running {
                    InstanceStatus::Running
                } else {
                    InstanceStatus::Stopped
                },
                node_netns: spec.node_netns.clone(),
            },
        );
        Ok(id)
    }

    pub(crate) fn set_instance_status(
        &mut self,
        id: &str,
        status: InstanceStatus,
    ) -> Result<(), ApiError> {
        let inst = self
            .instances
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("instance", id))?;
        inst.status = status;
        Ok(())
    }

    pub(crate) fn node_netns(&self, instance: &str) -> Option<String> {
        self.instances.get(instance)?.node_netns.clone()
    }

    /// Every vxnet as the hot-plug layer lays it out.
    pub(crate) fn vxnet_networks(&self) -> Vec<VxnetNetwork> {
        self.vxnets
            .iter()
            .map(|v| VxnetNetwork {
                id: v.id.clone(),
                cidr: v.cidr,
                gateway: v.gateway(),
                router: v.router.clone(),
            })
            .collect()
    }

    /// The primary NIC of every instance played by a netns, with its address: a VM's `eth0`.
    pub(crate) fn primary_links(&self) -> Vec<PrimaryLink> {
        self.nics
            .values()
            .filter(|n| n.primary)
            .filter_map(|n| {
                let node = self.node_netns(n.instance.as_deref()?)?;
                let vxnet = self.vxnet(&n.vxnet)?;
                Some(PrimaryLink {
                    mac: n.id.clone(),
                    vxnet: n.vxnet.clone(),
                    node,
                    address: Ipv4Net::new(n.ip?, vxnet.cidr.prefix_len()).ok()?,
                    gateway: vxnet.gateway(),
                })
            })
            .collect()
    }

    fn vxnet(&self, id: &str) -> Option<&Vxnet> {
        self.vxnets.iter().find(|v| v.id == id)
    }

    fn vxnet_mut(&mut self, id: &str) -> Option<&mut Vxnet> {
        self.vxnets.iter_mut().find(|v| v.id == id)
    }

    fn nic(&self, id: &str) -> Option<&Nic> {
        self.nics.get(self.nic_serial.get(id)?)
    }

    fn nic_mut(&mut self, id: &str) -> Option<&mut Nic> {
        self.nics.get_mut(self.nic_serial.get(id)?)
    }

    fn vxnet_nic_count(&self, vxnet: &str) -> usize {
        self.nics.values().filter(|n| n.vxnet == vxnet).count()
    }

    fn secondary_count(&self, instance: &str) -> usize {
        self.nics
            .values()
            .filter(|n| !n.primary && n.instance.as_deref() == Some(instance))
            .count()
    }

    // === actions ===

    /// CreateNics: `count` NICs (or one per explicit IP) in `vxnet`, all `available`.
    pub(crate) fn create_nics(
        &mut self,
        vxnet: &str,
        count: i64,
        name: &str,
        ips: &[Ipv4Addr],
        disable_ip: bool,
        hidden_polls: u32,
    ) -> Result<Vec<(String, Option<Ipv4Addr>)>, ApiError> {
        let cap = self.capacity_code;
        if count < 1 {
            return Err(ApiError::invalid("count", "must be between 1 and 252"));
        }
        if count > MAX_VXNET_NICS as i64 {
            return Err(ApiError::capacity(
                cap,
                "count exceeds 252 NICs per request",
            ));
        }
        let n = if ips.is_empty() {
            count as usize
        } else {
            ips.len()
        };
        if let Some(quota) = self.nic_quota.filter(|q| self.nics.len() + n > *q) {
            return Err(ApiError::nic_quota(self.nics.len(), n, quota));
        }
        let existing = self.vxnet_nic_count(vxnet);
        let v = self
            .vxnet(vxnet)
            .ok_or_else(|| ApiError::not_found("vxnet", vxnet))?;
        if existing + n > MAX_VXNET_NICS {
            return Err(ApiError::capacity(
                cap,
                format!("vxnet [{vxnet}] cannot hold more than {MAX_VXNET_NICS} NICs"),
            ));
        }
        let mut seen = BTreeSet::new();
        for ip in ips {
            if !v.in_dyn_range(*ip) {
                return Err(ApiError::invalid(
                    "private_ips",
                    &format!("{ip} is not a usable address of {}", v.cidr),
                ));
            }
            if v.used_ips.contains(ip) || !seen.insert(*ip) {
                return Err(ApiError::capacity(
                    cap,
                    format!("private ip [{ip}] is already in use"),
                ));
            }
        }
        if ips.is_empty() && !disable_ip && v.free_ips() < n {
            return Err(ApiError::capacity(
                cap,
                format!("vxnet [{vxnet}] has no free address left"),
            ));
        }
        let now = self.now();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let ip = match ips.get(i) {
                Some(ip) => {
                    if let Some(v) = self.vxnet_mut(vxnet) {
                        v.used_ips.insert(*ip);
                    }
                    Some(*ip)
                }
                None if disable_ip => None,
                None => self.vxnet_mut(vxnet).and_then(Vxnet::allocate),
            };
            let mac = self.new_mac();
            let serial = self.next_serial;
            self.next_serial += 1;
            self.nic_serial.insert(mac.clone(), serial);
            self.nics.insert(
                serial,
                Nic {
                    id: mac.clone(),
                    name: name.to_owned(),
                    vxnet: vxnet.to_owned(),
                    ip,
                    primary: false,
                    state: NicState::Available,
                    instance: None,
                    job: None,
                    sequence: 0,
                    created: now,
                    status_changed: now,
                    hidden_polls,
                    stale: None,
                },
            );
            out.push((mac, ip));
        }
        Ok(out)
    }

    /// The distinct NICs of an Attach/Detach/Delete call, all known (else 2100), at most the
    /// batch limit for jobs (else 1100).
    fn known_nics(&self, nics: &[String], job: bool) -> Result<Vec<String>, ApiError> {
        if let Some(limit) = self.batch_limit.filter(|l| job && nics.len() > *l) {
            return Err(ApiError::invalid(
                "nics",
                &format!("at most {limit} NICs per request"),
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(nics.len());
        for id in nics {
            if self.nic(id).is_none() {
                return Err(ApiError::not_found("nic", id));
            }
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// AttachNics: one job for the batch; every NIC `available`, the instance `running`.
    pub(crate) fn attach_nics(
        &mut self,
        instance: &str,
        nics: &[String],
        faults: JobFaults,
    ) -> Result<String, ApiError> {
        let inst = self
            .instances
            .get(instance)
            .ok_or_else(|| ApiError::not_found("instance", instance))?;
        let nics = self.known_nics(nics, true)?;
        if inst.status != InstanceStatus::Running {
            return Err(ApiError::denied(format!(
                "instance [{instance}] is not running"
            )));
        }
        for id in &nics {
            let nic = self.nic(id).ok_or_else(|| ApiError::not_found("nic", id))?;
            if nic.state != NicState::Available {
                return Err(ApiError::denied(format!("nic [{id}] is not available")));
            }
        }
        self.check_same_vpc(instance, &nics)?;
        self.check_not_busy(std::iter::once(instance))?;
        if self.secondary_count(instance) + nics.len() > MAX_SECONDARY_NICS {
            return Err(ApiError::capacity(
                self.capacity_code,
                format!(
                    "instance [{instance}] cannot have more than {MAX_SECONDARY_NICS} secondary NICs"
                ),
            ));
        }
        let pairs = nics
            .iter()
            .map(|n| (n.clone(), instance.to_owned()))
            .collect();
        let job = self.new_job(JobKind::Attach, pairs, faults);
        for id in &nics {
            if let Some(nic) = self.nic_mut(id) {
                nic.state = NicState::Attaching;
                nic.instance = Some(instance.to_owned());
                nic.job = Some(job.clone());
            }
        }
        Ok(job)
    }

    /// DetachNics: one job; every NIC `in-use`, none primary, none in another job.
    pub(crate) fn detach_nics(
        &mut self,
        nics: &[String],
        faults: JobFaults,
    ) -> Result<String, ApiError> {
        let nics = self.known_nics(nics, true)?;
        let mut pairs = Vec::with_capacity(nics.len());
        for id in &nics {
            let nic = self.nic(id).ok_or_else(|| ApiError::not_found("nic", id))?;
            if nic.primary {
                return Err(ApiError::denied(format!(
                    "nic [{id}] is the primary NIC of its instance"
                )));
            }
            match (&nic.state, &nic.instance) {
                (NicState::InUse, Some(inst)) => pairs.push((id.clone(), inst.clone())),
                _ => return Err(ApiError::denied(format!("nic [{id}] is not in use"))),
            }
        }
        self.check_not_busy(pairs.iter().map(|(_, i)| i.as_str()))?;
        let job = self.new_job(JobKind::Detach, pairs, faults);
        for id in &nics {
            if let Some(nic) = self.nic_mut(id) {
                nic.state = NicState::Detaching;
                nic.job = Some(job.clone());
            }
        }
        Ok(job)
    }

    /// DeleteNics: synchronous; every NIC `available` and in no job.
    pub(crate) fn delete_nics(&mut self, nics: &[String]) -> Result<(), ApiError> {
        let nics = self.known_nics(nics, false)?;
        for id in &nics {
            let nic = self.nic(id).ok_or_else(|| ApiError::not_found("nic", id))?;
            if nic.state != NicState::Available {
                return Err(ApiError::denied(format!(
                    "nic [{id}] is in use or busy, detach it first"
                )));
            }
        }
        for id in &nics {
            let Some(serial) = self.nic_serial.remove(id) else {
                continue;
            };
            if let Some(nic) = self.nics.remove(&serial)
                && let Some(ip) = nic.ip
                && let Some(v) = self.vxnet_mut(&nic.vxnet)
            {
                v.used_ips.remove(&ip);
            }
        }
        Ok(())
    }

    /// ModifyNicAttributes: rename any NIC; change vxnet or IP only while `available`.
    pub(crate) fn modify_nic(
        &mut self,
        id: &str,
        name: Option<&str>,
        vxnet: Option<&str>,
        ip: Option<Ipv4Addr>,
    ) -> Result<(), ApiError> {
        let nic = self.nic(id).ok_or_else(|| ApiError::not_found("nic", id))?;
        let (old_vxnet, old_ip, state) = (nic.vxnet.clone(), nic.ip, nic.state);
        if (vxnet.is_some() || ip.is_some()) && state != NicState::Available {
            return Err(ApiError::denied(format!(
                "nic [{id}] must be available to change its network"
            )));
        }
        let target = vxnet.unwrap_or(&old_vxnet).to_owned();
        let moving = target != old_vxnet;
        if moving || ip.is_some_and(|ip| Some(ip) != old_ip) {
            let count = self.vxnet_nic_count(&target);
            let cap = self.capacity_code;
            let v = self
                .vxnet(&target)
                .ok_or_else(|| ApiError::not_found("vxnet", &target))?;
            if moving && count >= MAX_VXNET_NICS {
                return Err(ApiError::capacity(
                    cap,
                    format!("vxnet [{target}] cannot hold more than {MAX_VXNET_NICS} NICs"),
                ));
            }
            if let Some(ip) = ip {
                if !v.in_dyn_range(ip) {
                    return Err(ApiError::invalid(
                        "private_ip",
                        &format!("{ip} is not a usable address of {}", v.cidr),
                    ));
                }
                if v.used_ips.contains(&ip) {
                    return Err(ApiError::capacity(
                        cap,
                        format!("private ip [{ip}] is already in use"),
                    ));
                }
            } else if v.free_ips() == 0 {
                return Err(ApiError::capacity(
                    cap,
                    format!("vxnet [{target}] has no free address left"),
                ));
            }
            if let (Some(old), Some(v)) = (old_ip, self.vxnet_mut(&old_vxnet)) {
                v.used_ips.remove(&old);
            }
            let new_ip = match (ip, self.vxnet_mut(&target)) {
                (Some(ip), Some(v)) => {
                    v.used_ips.insert(ip);
                    Some(ip)
                }
                (None, Some(v)) => v.allocate(),
                (_, None) => None,
            };
            if let Some(nic) = self.nic_mut(id) {
                nic.vxnet = target;
                nic.ip = new_ip;
            }
        }
        if let (Some(name), Some(nic)) = (name, self.nic_mut(id)) {
            nic.name = name.to_owned();
        }
        Ok(())
    }

    fn new_job(&mut self, kind: JobKind, nics: Vec<(String, String)>, faults: JobFaults) -> String {
        let outcome = faults.outcome.unwrap_or(JobOutcome::Successful);
        let id = self.fresh_job_id();
        let now = self.now();
        let pending = self.latency.pending.sample(&mut self.rng);
        let working = self.latency.working.sample(&mut self.rng);
        let (pending_until, working_until) = match self.queue_start(&nics, now) {
            Some(start) => {
                let pending_until = start + pending;
                let end = (outcome != JobOutcome::NeverFinish).then_some(pending_until + working);
                (pending_until, end)
            }
            // Queued behind a job that never ends: pending for ever.
            None => (Duration::MAX, None),
        };
        let index = self.jobs.len();
        self.jobs.push(Job {
            id: id.clone(),
            kind,
            nics,
            created: now,
            pending_until,
            working_until,
            outcome,
            faults,
            phase: Phase::Running,
            status_changed: now,
        });
        self.job_index.insert(id.clone(), index);
        self.active_jobs.insert(index);
        id
    }

    fn fresh_job_id(&mut self) -> String {
        loop {
            let id = self.random_id("j-", 8);
            if !self.job_index.contains_key(&id) {
                return id;
            }
        }
    }

    // === job driver ===

    /// Simulated time until the next job finishes, if any will.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let now = self.now();
        let jobs = self.active_jobs.iter().filter_map(|i| {
            let job = &self.jobs[*i];
            (job.phase == Phase::Running)
                .then_some(job.working_until)
                .flatten()
        });
        let links = self.delayed_links.iter().map(|(t, _)| *t);
        jobs.chain(links).min().map(|t| t.saturating_sub(now))
    }

    /// Jobs whose time is up, now marked finishing (still shown `working`).
    pub(crate) fn take_due_jobs(&mut self) -> Vec<DueJob> {
        let now = self.now();
        let due: Vec<usize> = self
            .active_jobs
            .iter()
            .copied()
            .filter(|i| {
                let job = &self.jobs[*i];
                job.phase == Phase::Running && job.working_until.is_some_and(|t| t <= now)
            })
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for index in due {
            let job = &mut self.jobs[index];
            job.phase = Phase::Finishing;
            let ok = match job.outcome {
                JobOutcome::Successful | JobOutcome::NeverFinish => job.nics.len(),
                JobOutcome::Failed => 0,
                JobOutcome::DoneWithFailure => job.nics.len().saturating_sub(1),
            };
            let (kind, delay) = (job.kind, job.faults.link_delay);
            let pairs = job.nics[..ok].to_vec();
            let mut changes = Vec::with_capacity(pairs.len());
            for (mac, instance) in &pairs {
                let change = LinkChange {
                    mac: mac.clone(),
                    vxnet: self.nic(mac).map(|n| n.vxnet.clone()).unwrap_or_default(),
                    instance: instance.clone(),
                    plug: kind == JobKind::Attach,
                };
                if change.plug && !delay.is_zero() {
                    self.delayed_links.push((now + delay, change));
                } else {
                    changes.push(change);
                }
            }
            out.push(DueJob {
                index,
                succeeded: pairs.into_iter().map(|(n, _)| n).collect(),
                changes,
            });
        }
        out
    }

    /// Delayed plugs whose time is up, for NICs still attached where they were going.
    pub(crate) fn take_due_links(&mut self) -> Vec<LinkChange> {
        let now = self.now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed_links)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed_links = later;
        due.into_iter()
            .map(|(_, c)| c)
            .filter(|c| {
                self.nic(&c.mac).is_some_and(|n| {
                    n.state == NicState::InUse && n.instance.as_deref() == Some(c.instance.as_str())
                })
            })
            .collect()
    }

    /// Commits a due job: NIC states flip, the job becomes terminal.
    pub(crate) fn finish_job(&mut self, due: DueJob) {
        let now = self.now();
        let (kind, nics, outcome, lag) = {
            let job = &self.jobs[due.index];
            (
                job.kind,
                job.nics.clone(),
                job.outcome,
                job.faults.status_lag_polls,
            )
        };
        for (mac, instance) in &nics {
            let ok = due.succeeded.contains(mac);
            let sequence = if kind == JobKind::Attach && ok {
                self.free_sequence(instance)
            } else {
                0
            };
            let Some(nic) = self.nic_mut(mac) else {
                continue;
            };
            if ok && lag > 0 {
                let old = (kind == JobKind::Detach).then(|| instance.clone());
                nic.stale = Some((kind == JobKind::Detach, old, lag));
            }
            nic.job = None;
            nic.status_changed = now;
            match (kind, ok) {
                (JobKind::Attach, true) | (JobKind::Detach, false) => {
                    nic.state = NicState::InUse;
                    if kind == JobKind::Attach {
                        nic.sequence = sequence;
                    }
                }
                (JobKind::Attach, false) | (JobKind::Detach, true) => {
                    nic.state = NicState::Available;
                    nic.instance = None;
                    nic.sequence = 0;
                }
            }
        }
        let job = &mut self.jobs[due.index];
        job.phase = Phase::Done(match outcome {
            JobOutcome::Successful | JobOutcome::NeverFinish => JobStatus::Successful,
            JobOutcome::Failed => JobStatus::Failed,
            JobOutcome::DoneWithFailure => JobStatus::DoneWithFailure,
        });
        job.status_changed = now;
        self.active_jobs.remove(&due.index);
    }

    fn free_sequence(&self, instance: &str) -> u32 {
        let used: BTreeSet<u32> = self
            .nics
            .values()
            .filter(|n| {
                !n.primary
                    && n.instance.as_deref() == Some(instance)
                    && matches!(n.state, NicState::InUse | NicState::Detaching)
            })
            .map(|n| n.sequence)
            .collect();
        (1..).find(|s| !used.contains(s)).unwrap_or(1)
    }

    // === views ===

    fn job_status(&self, job: &Job) -> (JobStatus, Duration) {
        let now = self.now();
        match job.phase {
            Phase::Done(s) => (s, job.status_changed),
            Phase::Running if now < job.pending_until => (JobStatus::Pending, job.created),
            Phase::Running | Phase::Finishing => (JobStatus::Working, job.pending_until),
        }
    }

    fn job_view(&self, job: &Job) -> wire::Job {
        let (status, changed) = self.job_status(job);
        let nics: Vec<&str> = job.nics.iter().map(|(n, _)| n.as_str()).collect();
        let mut resources: Vec<&str> = nics.clone();
        for (_, inst) in &job.nics {
            if !resources.contains(&inst.as_str()) {
                resources.push(inst);
            }
        }
        let directive = match job.kind {
            JobKind::Attach => serde_json::json!({
                "nics": nics,
                "instance": job.nics.first().map(|(_, i)| i.as_str()).unwrap_or_default(),
            }),
            JobKind::Detach => serde_json::json!({ "nics": nics }),
        };
        wire::Job {
            job_id: job.id.clone(),
            job_action: job.kind.action().to_owned(),
            status,
            create_time: self.stamp(job.created),
            status_time: self.stamp(changed),
            owner: self.owner.clone(),
            resource_ids: resources.join(" "),
            directive: directive.to_string(),
        }
    }

    fn nic_view(&self, nic: &Nic) -> wire::Nic {
        let shown_in_use = nic.shown_in_use();
        wire::Nic {
            nic_id: nic.id.clone(),
            nic_name: nic.name.clone(),
            status: if shown_in_use {
                NicStatus::InUse
            } else {
                NicStatus::Available
            },
            instance_id: nic.shown_instance().unwrap_or_default().to_owned(),
            vxnet_id: nic.vxnet.clone(),
            private_ip: nic.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            role: Some(u8::from(nic.primary)),
            sequence: Some(nic.sequence),
            create_time: self.stamp(nic.created),
            status_time: self.stamp(nic.status_changed),
            owner: self.owner.clone(),
            security_group: String::new(),
            tags: Vec::new(),
        }
    }

    fn nic_info(&self, nic: &Nic) -> NicInfo {
        NicInfo {
            nic: self.nic_view(nic),
            state: nic.state,
            instance: nic.instance.clone(),
            job_id: nic.job.clone(),
            hidden_polls: nic.hidden_polls,
        }
    }

    fn vxnet_view(&self, v: &Vxnet, verbose: bool) -> wire::Vxnet {
        let (start, end) = if v.dhcp {
            let (a, b) = v.dyn_range();
            (a.to_string(), b.to_string())
        } else {
            (String::new(), String::new())
        };
        let available_ip_count = (verbose || !self.rules.ip_count_verbose_only)
            .then(|| u32::try_from(v.free_ips()).unwrap_or(u32::MAX));
        let instance_ids = if verbose {
            let ids: BTreeSet<String> = self
                .nics
                .values()
                .filter(|n| {
                    n.vxnet == v.id && matches!(n.state, NicState::InUse | NicState::Detaching)
                })
                .filter_map(|n| n.instance.clone())
                .collect();
            ids.into_iter().collect()
        } else {
            Vec::new()
        };
        wire::Vxnet {
            vxnet_id: v.id.clone(),
            vxnet_name: v.name.clone(),
            // Managed (1) when joined to a router, unmanaged (0) otherwise.
            vxnet_type: u8::from(v.router.is_some()),
            zone_id: self.zone.clone(),
            create_time: self.stamp(v.created),
            description: String::new(),
            owner: self.owner.clone(),
            vpc_router_id: v.router.clone().unwrap_or_default(),
            available_ip_count,
            instance_ids,
            tunnel_type: "vxlan".into(),
            router: v.router.as_ref().map(|router| wire::Router {
                router_id: router.clone(),
                router_name: format!("vpc {router}"),
                manager_ip: v.gateway().to_string(),
                ip_network: v.cidr.to_string(),
                dyn_ip_start: start,
                dyn_ip_end: end,
            }),
        }
    }

    fn instance_view(&self, inst: &Instance) -> wire::Instance {
        let mut nics: Vec<&Nic> = self
            .nics
            .values()
            .filter(|n| {
                n.instance.as_deref() == Some(inst.id.as_str())
                    && matches!(n.state, NicState::InUse | NicState::Detaching)
            })
            .collect();
        nics.sort_by_key(|n| n.sequence);
        wire::Instance {
            instance_id: inst.id.clone(),
            instance_name: inst.name.clone(),
            status: inst.status,
            transition_status: String::new(),
            zone_id: self.zone.clone(),
            vxnets: nics
                .into_iter()
                .map(|n| wire::InstanceVxnet {
                    vxnet_id: n.vxnet.clone(),
                    vxnet_name: self
                        .vxnet(&n.vxnet)
                        .map(|v| v.name.clone())
                        .unwrap_or_default(),
                    vxnet_type: 1,
                    nic_id: n.id.clone(),
                    private_ip: n.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    role: u8::from(n.primary),
                })
                .collect(),
        }
    }

    // === describe ===

    /// DescribeNics; NICs younger than the visibility lag are left out, so are NICs hidden by
    /// the eventual-consistency fault, and each call that would have matched one of those uses
    /// up one of its hidden polls. Likewise each call showing a NIC's stale status (status-lag
    /// fault) uses up one of those polls.
    pub(crate) fn describe_nics(&mut self, f: &NicFilter, page: Page) -> (u64, Vec<wire::Nic>) {
        let now = self.now();
        let mut rows = Vec::new();
        let mut revealed = Vec::new();
        let mut shown_stale = Vec::new();
        for (serial, nic) in &self.nics {
            let shown_in_use = nic.shown_in_use();
            let shown_instance = nic.shown_instance();
            let matches = (f.nics.is_empty() || f.nics.contains(&nic.id))
                && (f.instances.is_empty()
                    || shown_instance.is_some_and(|i| f.instances.iter().any(|x| x == i)))
                && (f.vxnets.is_empty() || f.vxnets.contains(&nic.vxnet))
                && f.status
                    .is_none_or(|s| (s == NicStatus::InUse) == shown_in_use)
                && f.name.as_ref().is_none_or(|n| *n == nic.name);
            // The lag is the API's read-after-write gap for CreateNics; an instance's own
            // NIC is as old as the instance and always listed.
            if !matches || (!nic.primary && now < nic.created + self.visibility_lag) {
                continue;
            }
            if nic.hidden_polls > 0 {
                revealed.push(*serial);
            } else {
                if nic.stale.is_some() {
                    shown_stale.push(*serial);
                }
                rows.push(nic);
            }
        }
        // Views (with their timestamps) only for the page returned: listings can be large.
        let (total, rows) = page.apply(rows);
        let rows = rows.into_iter().map(|n| self.nic_view(n)).collect();
        for serial in revealed {
            if let Some(nic) = self.nics.get_mut(&serial) {
                nic.hidden_polls -= 1;
            }
        }
        for serial in shown_stale {
            if let Some(nic) = self.nics.get_mut(&serial)
                && let Some((_, _, polls)) = &mut nic.stale
            {
                *polls = polls.saturating_sub(1);
                if *polls == 0 {
                    nic.stale = None;
                }
            }
        }
        (total, rows)
    }

    /// DescribeJobs, newest first. Unknown ids simply match nothing.
    pub(crate) fn describe_jobs(
        &self,
        ids: &[String],
        statuses: &[JobStatus],
        action: Option<&str>,
        page: Page,
    ) -> (u64, Vec<wire::Job>) {
        let rows: Vec<&Job> = if ids.is_empty() {
            self.jobs.iter().rev().collect()
        } else {
            ids.iter()
                .filter_map(|id| self.job_index.get(id))
                .map(|i| &self.jobs[*i])
                .collect()
        };
        let rows: Vec<&Job> = rows
            .into_iter()
            .filter(|j| action.is_none_or(|a| a == j.kind.action()))
            .filter(|j| statuses.is_empty() || statuses.contains(&self.job_status(j).0))
            .collect();
        let (total, rows) = page.apply(rows);
        (total, rows.into_iter().map(|j| self.job_view(j)).collect())
    }

    pub(crate) fn describe_vxnets(
        &self,
        ids: &[String],
        verbose: bool,
        page: Page,
    ) -> (u64, Vec<wire::Vxnet>) {
        let rows = self
            .vxnets
            .iter()
            .filter(|v| ids.is_empty() || ids.contains(&v.id))
            .map(|v| self.vxnet_view(v, verbose))
            .collect();
        page.apply(rows)
    }

    pub(crate) fn describe_instances(
        &self,
        ids: &[String],
        statuses: &[InstanceStatus],
        page: Page,
    ) -> (u64, Vec<wire::Instance>) {
        let rows = self
            .instances
            .values()
            .filter(|i| ids.is_empty() || ids.contains(&i.id))
            .filter(|i| statuses.is_empty() || statuses.contains(&i.status))
            .map(|i| self.instance_view(i))
            .collect();
        page.apply(rows)
    }

    /// DescribeVxnetInstances: one row per attached NIC in the vxnet.
    pub(crate) fn describe_vxnet_instances(
        &self,
        vxnet: &str,
        ids: &[String],
        page: Page,
    ) -> (u64, Vec<VxnetInstance>) {
        let rows = self
            .nics
            .values()
            .filter(|n| {
                n.vxnet == vxnet && matches!(n.state, NicState::InUse | NicState::Detaching)
            })
            .filter_map(|n| {
                let inst = self.instances.get(n.instance.as_deref()?)?;
                (ids.is_empty() || ids.contains(&inst.id)).then(|| VxnetInstance {
                    instance_id: inst.id.clone(),
                    instance_name: inst.name.clone(),
                    status: inst.status,
                    vxnet_id: n.vxnet.clone(),
                    nic_id: n.id.clone(),
                    private_ip: n.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    sequence: n.sequence,
                    role: u8::from(n.primary),
                })
            })
            .collect();
        page.apply(rows)
    }

    // === inspection ===

    pub(crate) fn nic_infos(&self) -> Vec<NicInfo> {
        self.nics.values().map(|n| self.nic_info(n)).collect()
    }

    pub(crate) fn job_views(&self) -> Vec<wire::Job> {
        self.jobs.iter().map(|j| self.job_view(j)).collect()
    }

    pub(crate) fn vxnet_views(&self) -> Vec<wire::Vxnet> {
        self.vxnets
            .iter()
            .map(|v| self.vxnet_view(v, true))
            .collect()
    }

    pub(crate) fn instance_infos(&self) -> Vec<InstanceInfo> {
        self.instances
            .values()
            .map(|i| InstanceInfo {
                instance: self.instance_view(i),
                node_netns: i.node_netns.clone(),
            })
            .collect()
    }
}

// === realism rules (issue 11): VPCs, DHCP, per-instance jobs, job history ===

/// How far back the seeded job history of an account reaches.
pub(crate) const HISTORY_SPAN: Duration = Duration::from_secs(30 * 24 * 3600);

impl Model {
    /// The VPC of an instance: the router of its primary NIC's vxnet.
    fn instance_router(&self, instance: &str) -> Option<&str> {
        let primary = self
            .nics
            .values()
            .find(|n| n.primary && n.instance.as_deref() == Some(instance))?;
        self.vxnet(&primary.vxnet)?.router.as_deref()
    }

    /// With `vpc_check`: 1400 when a NIC's vxnet is joined to another router than the
    /// instance's (an instance lives in one VPC).
    fn check_same_vpc(&self, instance: &str, nics: &[String]) -> Result<(), ApiError> {
        if !self.rules.vpc_check {
            return Ok(());
        }
        let Some(home) = self.instance_router(instance) else {
            return Ok(());
        };
        for id in nics {
            let Some(nic) = self.nic(id) else { continue };
            if let Some(router) = self.vxnet(&nic.vxnet).and_then(|v| v.router.as_deref())
                && router != home
            {
                return Err(ApiError::denied(format!(
                    "vxnet [{}] of nic [{id}] is in vpc [{router}], instance [{instance}] is in vpc [{home}]",
                    nic.vxnet
                )));
            }
        }
        Ok(())
    }

    /// The unfinished jobs involving an instance.
    fn active_jobs_of<'a>(&'a self, instance: &'a str) -> impl Iterator<Item = &'a Job> + 'a {
        self.active_jobs
            .iter()
            .map(|i| &self.jobs[*i])
            .filter(move |j| j.nics.iter().any(|(_, inst)| inst == instance))
    }

    /// With `instance_jobs: refuse`: 1400 when one of the instances has an unfinished job.
    fn check_not_busy<'a>(
        &self,
        mut instances: impl Iterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        if self.rules.instance_jobs != InstanceJobs::Refuse {
            return Ok(());
        }
        instances.try_for_each(|instance| match self.active_jobs_of(instance).next() {
            Some(job) => Err(ApiError::denied(format!(
                "instance [{instance}] is busy with job [{}], please try later",
                job.id
            ))),
            None => Ok(()),
        })
    }

    /// When a new job on these (nic, instance) pairs starts: now, or with `instance_jobs:
    /// queue` when the last unfinished job of its instances ends; `None` when that job never
    /// ends.
    fn queue_start(&self, pairs: &[(String, String)], now: Duration) -> Option<Duration> {
        if self.rules.instance_jobs != InstanceJobs::Queue {
            return Some(now);
        }
        let mut start = now;
        let instances: BTreeSet<&str> = pairs.iter().map(|(_, i)| i.as_str()).collect();
        for instance in instances {
            for job in self.active_jobs_of(instance) {
                start = start.max(job.working_until?);
            }
        }
        Some(start)
    }

    /// With `routed_create_only`: 1400 for a vxnet without router or DHCP range (an unknown
    /// vxnet is left to CreateNics' own 2100).
    pub(crate) fn check_create_target(&self, vxnet: &str) -> Result<(), ApiError> {
        if !self.rules.routed_create_only {
            return Ok(());
        }
        match self.vxnet(vxnet) {
            Some(v) if v.router.is_none() => Err(ApiError::denied(format!(
                "vxnet [{vxnet}] is not in a vpc (no router), nics need a managed vxnet"
            ))),
            Some(v) if !v.dhcp => Err(ApiError::denied(format!(
                "vxnet [{vxnet}] has no dhcp range, nics cannot get an address"
            ))),
            _ => Ok(()),
        }
    }

    /// Fills the account's past with `n` finished AttachNics/DetachNics jobs of NICs deleted
    /// long ago, spread over the clock's past (the time before the simulator started).
    fn seed_history(&mut self, n: usize) {
        let past = u64::try_from(self.now().as_millis()).unwrap_or(u64::MAX);
        let instances: Vec<String> = self.instances.keys().cloned().collect();
        let mut times: Vec<u64> = (0..n).map(|_| self.rng.random_range(0..=past)).collect();
        times.sort_unstable();
        for at in times {
            let kind = if self.rng.random_bool(0.5) {
                JobKind::Attach
            } else {
                JobKind::Detach
            };
            let instance = match instances.get(self.rng.random_range(0..instances.len().max(1))) {
                Some(i) => i.clone(),
                None => self.random_id("i-", 8),
            };
            let count = self.rng.random_range(1..=3);
            let nics = (0..count)
                .map(|_| (self.new_mac(), instance.clone()))
                .collect();
            let status = if self.rng.random_bool(0.95) {
                JobStatus::Successful
            } else {
                JobStatus::Failed
            };
            let created = Duration::from_millis(at);
            let ended = (created + Duration::from_millis(self.rng.random_range(2000..=8000)))
                .min(self.now());
            let id = self.fresh_job_id();
            self.job_index.insert(id.clone(), self.jobs.len());
            self.jobs.push(Job {
                id,
                kind,
                nics,
                created,
                pending_until: created,
                working_until: Some(ended),
                outcome: if status == JobStatus::Successful {
                    JobOutcome::Successful
                } else {
                    JobOutcome::Failed
                },
                faults: JobFaults::default(),
                phase: Phase::Done(status),
                status_changed: ended,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Latency;

    fn model() -> Model {
        let cfg = SimConfig {
            vxnets: vec![
                VxnetSpec::new("vxnet-aaaaaaa", "172.22.0.0/24".parse().unwrap()),
                VxnetSpec::new("vxnet-small00", "10.9.0.0/29".parse().unwrap()),
            ],
            instances: vec![
                InstanceSpec::new("i-node0001"),
                InstanceSpec::new("i-node0002"),
            ],
            job_latency: JobLatency {
                pending: Latency::FixedMs(100),
                working: Latency::FixedMs(200),
            },
            manual_clock: true,
            ..SimConfig::default()
        };
        Model::new(&cfg, Arc::new(Clock::new(true))).unwrap()
    }

    fn ok() -> JobFaults {
        JobFaults::default()
    }

    fn with(outcome: JobOutcome) -> JobFaults {
        JobFaults {
            outcome: Some(outcome),
            ..JobFaults::default()
        }
    }

    fn all() -> Page {
        Page {
            offset: 0,
            limit: 100,
        }
    }

    fn run_due(m: &mut Model) -> Vec<LinkChange> {
        let mut changes = Vec::new();
        for due in m.take_due_jobs() {
            changes.extend(due.changes.clone());
            m.finish_job(due);
        }
        changes
    }

    fn create(m: &mut Model, n: i64) -> Vec<String> {
        m.create_nics("vxnet-aaaaaaa", n, "pool", &[], false, 0)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    #[test]
    fn instances_have_a_primary_nic() {
        let mut m = model();
        let (total, nics) = m.describe_nics(&NicFilter::default(), all());
        assert_eq!(total, 2);
        assert!(
            nics.iter()
                .all(|n| n.role == Some(1) && n.status == NicStatus::InUse)
        );
        assert_eq!(nics[0].private_ip, "172.22.0.2");
        assert!(nics[0].nic_id.starts_with("52:54:"));
    }

    #[test]
    fn attach_runs_through_pending_and_working() {
        let mut m = model();
        let nics = create(&mut m, 2);
        let job = m.attach_nics("i-node0001", &nics, ok()).unwrap();
        let status = |m: &Model| {
            m.describe_jobs(std::slice::from_ref(&job), &[], None, all())
                .1[0]
                .status
        };
        assert_eq!(status(&m), JobStatus::Pending);
        m.clock.advance(Duration::from_millis(150));
        assert_eq!(status(&m), JobStatus::Working);
        assert!(run_due(&mut m).is_empty());
        assert_eq!(m.next_deadline(), Some(Duration::from_millis(150)));
        m.clock.advance(Duration::from_millis(150));
        let changes = run_due(&mut m);
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.plug && c.instance == "i-node0001"));
        assert_eq!(status(&m), JobStatus::Successful);
        let f = NicFilter {
            instances: vec!["i-node0001".into()],
            ..NicFilter::default()
        };
        let (_, rows) = m.describe_nics(&f, all());
        let seqs: Vec<_> = rows.iter().map(|n| n.sequence).collect();
        assert_eq!(seqs, vec![Some(0), Some(1), Some(2)]);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn attaching_nic_shows_available_and_is_busy() {
        let mut m = model();
        let nics = create(&mut m, 1);
        m.attach_nics("i-node0001", &nics, ok()).unwrap();
        let (_, rows) = m.describe_nics(
            &NicFilter {
                nics: nics.clone(),
                ..Default::default()
            },
            all(),
        );
        assert_eq!(rows[0].status, NicStatus::Available);
        assert_eq!(rows[0].instance_id, "");
        assert_eq!(
            m.attach_nics("i-node0002", &nics, ok()).unwrap_err().code.0,
            1400
        );
        assert_eq!(m.delete_nics(&nics).unwrap_err().code.0, 1400);
        assert_eq!(m.detach_nics(&nics, ok()).unwrap_err().code.0, 1400);
    }

    #[test]
    fn failed_and_partial_jobs() {
        let mut m = model();
        let nics = create(&mut m, 3);
        m.attach_nics("i-node0001", &nics[..1], with(JobOutcome::Failed))
            .unwrap();
        m.attach_nics("i-node0002", &nics[1..], with(JobOutcome::DoneWithFailure))
            .unwrap();
        m.clock.advance(Duration::from_secs(1));
        let changes = run_due(&mut m);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].mac, nics[1]);
        let (_, jobs) = m.describe_jobs(&[], &[], None, all());
        let mut statuses: Vec<_> = jobs.iter().map(|j| j.status).collect();
        statuses.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(
            statuses,
            vec![JobStatus::DoneWithFailure, JobStatus::Failed]
        );
        let infos = m.nic_infos();
        let state = |id: &str| infos.iter().find(|n| n.nic.nic_id == id).unwrap().state;
        assert_eq!(state(&nics[0]), NicState::Available);
        assert_eq!(state(&nics[1]), NicState::InUse);
        assert_eq!(state(&nics[2]), NicState::Available);
    }

    #[test]
    fn never_finishing_job_stays_working() {
        let mut m = model();
        let nics = create(&mut m, 1);
        let job = m
            .attach_nics("i-node0001", &nics, with(JobOutcome::NeverFinish))
            .unwrap();
        m.clock.advance(Duration::from_secs(3600));
        assert!(run_due(&mut m).is_empty());
        assert_eq!(m.next_deadline(), None);
        assert_eq!(
            m.describe_jobs(&[job], &[], None, all()).1[0].status,
            JobStatus::Working
        );
    }

    #[test]
    fn detach_rules() {
        let mut m = model();
        let nics = create(&mut m, 1);
        assert_eq!(m.detach_nics(&nics, ok()).unwrap_err().code.0, 1400);
        let primary = m
            .describe_nics(
                &NicFilter {
                    instances: vec!["i-node0001".into()],
                    ..Default::default()
                },
                all(),
            )
            .1[0]
            .nic_id
            .clone();
        assert_eq!(
            m.detach_nics(std::slice::from_ref(&primary), ok())
                .unwrap_err()
                .code
                .0,
            1400
        );
        assert_eq!(m.delete_nics(&[primary]).unwrap_err().code.0, 1400);
        assert_eq!(
            m.detach_nics(&["52:54:00:00:00:00".into()], ok())
                .unwrap_err()
                .code
                .0,
            2100
        );
        m.attach_nics("i-node0001", &nics, ok()).unwrap();
        m.clock.advance(Duration::from_secs(1));
        run_due(&mut m);
        m.detach_nics(&nics, ok()).unwrap();
        m.clock.advance(Duration::from_secs(1));
        let changes = run_due(&mut m);
        assert!(!changes[0].plug);
        m.delete_nics(&nics).unwrap();
        assert_eq!(m.delete_nics(&nics).unwrap_err().code.0, 2100);
    }

    #[test]
    fn attach_needs_a_running_instance() {
        let mut m = model();
        let nics = create(&mut m, 1);
        m.set_instance_status("i-node0001", InstanceStatus::Stopped)
            .unwrap();
        assert_eq!(
            m.attach_nics("i-node0001", &nics, ok()).unwrap_err().code.0,
            1400
        );
        assert_eq!(
            m.attach_nics("i-nosuch00", &nics, ok()).unwrap_err().code.0,
            2100
        );
    }

    #[test]
    fn limits_per_instance_and_vxnet() {
        let mut m = model();
        let nics = create(&mut m, 64);
        m.attach_nics("i-node0001", &nics[..63], ok()).unwrap();
        assert_eq!(
            m.attach_nics("i-node0001", &nics[63..], ok())
                .unwrap_err()
                .code
                .0,
            1400
        );
        // 2 primaries + 64 here; 252 is the cap.
        create(&mut m, 186);
        assert_eq!(
            m.create_nics("vxnet-aaaaaaa", 1, "", &[], false, 0)
                .unwrap_err()
                .code
                .0,
            1400
        );
        assert_eq!(
            m.create_nics("vxnet-aaaaaaa", 253, "", &[], false, 0)
                .unwrap_err()
                .code
                .0,
            1400
        );
        assert_eq!(
            m.create_nics("vxnet-aaaaaaa", 0, "", &[], false, 0)
                .unwrap_err()
                .code
                .0,
            1100
        );
        // 10.9.0.0/29: gateway .1, pool .2-.6.
        assert!(
            m.create_nics("vxnet-small00", 6, "", &[], false, 0)
                .is_err()
        );
        assert_eq!(
            m.create_nics("vxnet-small00", 5, "", &[], false, 0)
                .unwrap()
                .len(),
            5
        );
        assert!(m.create_nics("vxnet-small00", 1, "", &[], true, 0).is_ok());
    }

    #[test]
    fn explicit_ips() {
        let mut m = model();
        let ip: Ipv4Addr = "172.22.0.50".parse().unwrap();
        let out = m
            .create_nics("vxnet-aaaaaaa", 1, "", &[ip], false, 0)
            .unwrap();
        assert_eq!(out[0].1, Some(ip));
        assert_eq!(
            m.create_nics("vxnet-aaaaaaa", 1, "", &[ip], false, 0)
                .unwrap_err()
                .code
                .0,
            1400
        );
        let gw: Ipv4Addr = "172.22.0.1".parse().unwrap();
        assert_eq!(
            m.create_nics("vxnet-aaaaaaa", 1, "", &[gw], false, 0)
                .unwrap_err()
                .code
                .0,
            1100
        );
    }

    #[test]
    fn paging_caps_at_100() {
        let mut m = model();
        create(&mut m, 150);
        let (total, rows) = m.describe_nics(
            &NicFilter::default(),
            Page {
                offset: 0,
                limit: 500,
            },
        );
        assert_eq!((total, rows.len()), (152, 100));
        let (_, rows) = m.describe_nics(
            &NicFilter::default(),
            Page {
                offset: 140,
                limit: 20,
            },
        );
        assert_eq!(rows.len(), 12);
    }

    #[test]
    fn hidden_nics_appear_after_polls() {
        let mut m = model();
        let (id, _) = m
            .create_nics("vxnet-aaaaaaa", 1, "late", &[], false, 2)
            .unwrap()
            .remove(0);
        let f = NicFilter {
            nics: vec![id],
            ..Default::default()
        };
        assert_eq!(m.describe_nics(&f, all()).0, 0);
        assert_eq!(m.describe_nics(&f, all()).0, 0);
        assert_eq!(m.describe_nics(&f, all()).0, 1);
    }

    #[test]
    fn new_nics_are_invisible_to_describe_for_the_lag() {
        let mut m = model();
        m.visibility_lag = Duration::from_secs(3);
        let (id, _) = m
            .create_nics("vxnet-aaaaaaa", 1, "lagging", &[], false, 0)
            .unwrap()
            .remove(0);
        let f = NicFilter {
            nics: vec![id.clone()],
            ..Default::default()
        };
        assert_eq!(m.describe_nics(&f, all()).0, 0);
        let primaries = NicFilter {
            instances: vec!["i-node0001".into()],
            ..Default::default()
        };
        assert_eq!(
            m.describe_nics(&primaries, all()).0,
            1,
            "an instance's primary NIC is not a new NIC"
        );
        m.clock.advance(Duration::from_millis(2999));
        assert_eq!(m.describe_nics(&f, all()).0, 0);
        assert!(
            m.nic_infos().iter().any(|n| n.nic.nic_id == id),
            "the inspection view is not lagged"
        );
        m.clock.advance(Duration::from_millis(1));
        assert_eq!(m.describe_nics(&f, all()).0, 1);
    }

    #[test]
    fn modify_renames_and_moves() {
        let mut m = model();
        let nics = create(&mut m, 1);
        m.modify_nic(&nics[0], Some("renamed"), Some("vxnet-small00"), None)
            .unwrap();
        let f = NicFilter {
            name: Some("renamed".into()),
            ..Default::default()
        };
        let (_, rows) = m.describe_nics(&f, all());
        assert_eq!(rows[0].vxnet_id, "vxnet-small00");
        assert_eq!(rows[0].private_ip, "10.9.0.2");
        assert_eq!(
            m.modify_nic("52:54:00:00:00:00", Some("x"), None, None)
                .unwrap_err()
                .code
                .0,
            2100
        );
    }

    #[test]
    fn status_lag_and_delayed_links() {
        let mut m = model();
        let nics = create(&mut m, 1);
        let faults = JobFaults {
            status_lag_polls: 2,
            link_delay: Duration::from_millis(500),
            ..JobFaults::default()
        };
        m.attach_nics("i-node0001", &nics, faults).unwrap();
        m.clock.advance(Duration::from_millis(300));
        assert!(run_due(&mut m).is_empty(), "link held back");
        assert_eq!(m.next_deadline(), Some(Duration::from_millis(500)));
        let f = NicFilter {
            nics: nics.clone(),
            ..Default::default()
        };
        for _ in 0..2 {
            let (_, rows) = m.describe_nics(&f, all());
            assert_eq!(
                (rows[0].status, rows[0].instance_id.as_str()),
                (NicStatus::Available, "")
            );
        }
        let (_, rows) = m.describe_nics(&f, all());
        assert_eq!(
            (rows[0].status, rows[0].instance_id.as_str()),
            (NicStatus::InUse, "i-node0001")
        );
        assert!(m.take_due_links().is_empty());
        m.clock.advance(Duration::from_millis(500));
        let links = m.take_due_links();
        assert_eq!(links.len(), 1);
        assert!(links[0].plug && links[0].vxnet == "vxnet-aaaaaaa");
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn seeded_ids_are_reproducible() {
        let a = model().nic_infos();
        let b = model().nic_infos();
        assert_eq!(
            a.iter().map(|n| &n.nic.nic_id).collect::<Vec<_>>(),
            b.iter().map(|n| &n.nic.nic_id).collect::<Vec<_>>()
        );
    }
}
