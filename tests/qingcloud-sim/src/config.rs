//! What a simulator is made of: zone, keys, vxnets, instances, job latencies, limits.
//!
//! One serde type serves the builder, the binary's YAML config file and the admin endpoint, so
//! the three cannot drift apart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Everything needed to start a simulator. Every field has a default, so a config file may be
/// as small as `vxnets: [{cidr: 172.22.0.0/24}]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Address of the HTTP server (API and admin endpoints).
    pub listen: SocketAddr,
    /// The only zone the simulator serves.
    pub zone: String,
    /// Owner (`usr-...`) shown on every resource.
    pub owner: String,
    /// Access keys accepted by the signature check.
    pub access_keys: Vec<AccessKey>,
    /// The vxnets (subnets) of the account.
    pub vxnets: Vec<VxnetSpec>,
    /// The instances (VMs) of the account.
    pub instances: Vec<InstanceSpec>,
    /// How long attach/detach jobs stay `pending` and `working`.
    pub job_latency: JobLatency,
    /// Seed of the random generator (ids, latencies, fault probabilities).
    pub seed: u64,
    /// Whether attached NICs become real links in the instances' node netns (needs root).
    pub hotplug: bool,
    /// How often hot-plugged NICs are checked for vanished links, in milliseconds.
    pub hotplug_check_ms: u64,
    /// ret_code for capacity errors (NICs per instance or vxnet, address pool, count > 252):
    /// the real code is unconfirmed (1400, 2500 or 5200).
    pub capacity_error_code: i32,
    /// Largest accepted distance between `time_stamp` and the server clock, in seconds.
    pub timestamp_tolerance_s: u64,
    /// Account-level API request quota (2500 "api request quota exceeded"); `None` means
    /// unlimited. `quota: {}` is the documented default for new accounts, 2000 per hour.
    pub quota: Option<Quota>,
    /// Account-level resource quota on the number of NICs: a CreateNics that would exceed
    /// it is refused with 2500 "resource quota ... exceeded" (worded apart from the request
    /// quota, as clients must tell the two apart). `None` means unlimited.
    pub nic_quota: Option<usize>,
    /// Longest request URI (path and query) the front end accepts; longer → HTTP 414, as
    /// gateways answer (about 8 KB is typical). `None` accepts any length.
    pub max_uri_len: Option<usize>,
    /// Most NICs one AttachNics/DetachNics call may name (more → 1100); `None` = no limit.
    /// hostnic issue #74 reports 5, unconfirmed by the API docs.
    pub nic_batch_limit: Option<usize>,
    /// Whether job time only moves through [`crate::SimHandle::advance`] (tests of the job
    /// state machine without sleeping).
    pub manual_clock: bool,
    /// Account rules that make the simulator as strict as the real API (see [`Rules`]).
    pub rules: Rules,
    /// Finished jobs the account already has at start (months of history, as a real account
    /// has); DescribeJobs without a filter pages through all of them.
    pub job_history: usize,
    /// Serve HTTPS (with a CA and a server certificate made at start) instead of HTTP.
    pub tls: bool,
    /// Where to write the CA certificate (PEM) when `tls` is on; default: a file in the temp
    /// directory, removed when the simulator stops.
    pub tls_ca_file: Option<PathBuf>,
    /// An extra plain-HTTP listener serving only the admin endpoints (test harnesses without
    /// a TLS client); the API stays on `listen` only.
    pub admin_listen: Option<SocketAddr>,
    /// Read-after-write lag: a new NIC is left out of DescribeNics for this many
    /// milliseconds of simulated time after CreateNics (the old hostnic re-read new NICs for
    /// up to 15 s). Other calls see it at once.
    pub nic_visibility_lag_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            zone: "pek3a".into(),
            owner: "usr-simowner".into(),
            access_keys: vec![AccessKey {
                id: "SIMACCESSKEYID000000".into(),
                secret: "sim-secret-access-key".into(),
            }],
            vxnets: Vec::new(),
            instances: Vec::new(),
            job_latency: JobLatency::default(),
            seed: 1,
            hotplug: false,
            hotplug_check_ms: 300,
            capacity_error_code: 1400,
            timestamp_tolerance_s: 60,
            quota: None,
            nic_quota: None,
            max_uri_len: Some(8192),
            nic_batch_limit: None,
            manual_clock: false,
            rules: Rules::default(),
            job_history: 0,
            tls: false,
            tls_ca_file: None,
            admin_listen: None,
            nic_visibility_lag_ms: 0,
        }
    }
}

/// A named set of settings (`--profile`, [`crate::Simulator::profile`], `profile:` in the
/// config file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Lenient and fast: short jobs, no batch limit, no serialization, HTTP.
    #[default]
    Default,
    /// As the real API behaves (or is believed to, see the README): jobs of a few seconds
    /// serialized per instance, 5 NICs per Attach/DetachNics, VPC and DHCP rules,
    /// `available_ip_count` only when verbose, a long job history, HTTPS, 2000 requests per
    /// hour, new NICs visible to DescribeNics after 3 s.
    Realistic,
}

impl SimConfig {
    /// The defaults with `profile` applied.
    pub fn with_profile(profile: Profile) -> Self {
        let mut cfg = Self::default();
        cfg.apply_profile(profile);
        cfg
    }

    /// Overwrites the settings `profile` governs (everything else is left alone).
    pub fn apply_profile(&mut self, profile: Profile) {
        let base = Self::default();
        match profile {
            Profile::Default => {
                self.job_latency = base.job_latency;
                self.nic_batch_limit = base.nic_batch_limit;
                self.rules = base.rules;
                self.job_history = base.job_history;
                self.tls = base.tls;
                self.quota = base.quota;
                self.nic_visibility_lag_ms = base.nic_visibility_lag_ms;
            }
            Profile::Realistic => {
                // Attach/detach jobs of 2-5 s, as observed for hot-plug on QingCloud [U].
                self.job_latency = JobLatency {
                    pending: Latency::UniformMs(500, 1500),
                    working: Latency::UniformMs(1500, 3500),
                };
                self.nic_batch_limit = Some(5);
                self.rules = Rules::realistic();
                self.job_history = REALISTIC_JOB_HISTORY;
                self.tls = true;
                // A new account's request quota (reference §7).
                self.quota = Some(Quota::default());
                // New NICs reach DescribeNics a few seconds late: the old hostnic re-read them
                // for up to 15 s (reference §7) [U].
                self.nic_visibility_lag_ms = REALISTIC_NIC_VISIBILITY_LAG_MS;
            }
        }
    }
}

impl SimConfig {
    /// Parses a YAML config file. Its optional `profile:` key (or `profile`, which wins) gives
    /// the base the file's other keys override; a key absent from the file keeps the
    /// profile's value.
    pub fn from_yaml(text: &str, profile: Option<Profile>) -> Result<Self, String> {
        let file: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut file = match file {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            _ => return Err("the config must be a mapping".into()),
        };
        let named = match file.remove("profile") {
            Some(p) => {
                Some(serde_json::from_value::<Profile>(p).map_err(|e| format!("profile: {e}"))?)
            }
            None => None,
        };
        let base = Self::with_profile(profile.or(named).unwrap_or_default());
        let mut merged = match serde_json::to_value(base).map_err(|e| e.to_string())? {
            serde_json::Value::Object(map) => map,
            _ => return Err("the defaults are not a mapping".into()),
        };
        merged.extend(file);
        serde_json::from_value(serde_json::Value::Object(merged)).map_err(|e| e.to_string())
    }
}

/// How long a new NIC stays out of DescribeNics in the realistic profile.
pub const REALISTIC_NIC_VISIBILITY_LAG_MS: u64 = 3000;

/// Jobs in the history of a realistic account: ten pages of DescribeJobs.
pub const REALISTIC_JOB_HISTORY: usize = 1000;

/// What a second AttachNics/DetachNics does while an instance has an unfinished job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceJobs {
    /// Jobs of one instance run at the same time.
    #[default]
    Concurrent,
    /// The new job is accepted and stays `pending` until the instance's earlier jobs end.
    Queue,
    /// The call is refused with 1400 `PermissionDenied` (instance busy).
    Refuse,
}

/// Account rules the real API enforces; each is off in the default profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Jobs serialized per instance.
    pub instance_jobs: InstanceJobs,
    /// AttachNics of a NIC whose vxnet is in another VPC (router) than the instance's primary
    /// NIC is refused with 1400.
    pub vpc_check: bool,
    /// CreateNics in a vxnet without a router (not in a VPC) or without a DHCP range is
    /// refused with 1400.
    pub routed_create_only: bool,
    /// DescribeVxnets leaves `available_ip_count` out unless `verbose=1`.
    pub ip_count_verbose_only: bool,
}

impl Rules {
    /// Every rule on; instance jobs queue.
    pub fn realistic() -> Self {
        Self {
            instance_jobs: InstanceJobs::Queue,
            vpc_check: true,
            routed_create_only: true,
            ip_count_verbose_only: true,
        }
    }
}

/// An access key pair.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// `access_key_id` as sent by clients.
    pub id: String,
    /// The HMAC secret.
    pub secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A vxnet: its gateway is the first host of `cidr`, its DHCP range the rest of the hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxnetSpec {
    /// `vxnet-` + 7 characters; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The subnet, e.g. `172.22.0.0/24`.
    pub cidr: Ipv4Net,
    /// The VPC router (`rtr-...`) the vxnet is joined to; default: the account's one VPC.
    #[serde(default)]
    pub router: Option<String>,
    /// Whether the vxnet is in a VPC at all; `false` shows `router: null`, vxnet_type 0.
    #[serde(default = "yes")]
    pub vpc: bool,
    /// Whether its router serves DHCP; `false` shows empty `dyn_ip_start`/`dyn_ip_end`.
    #[serde(default = "yes")]
    pub dhcp: bool,
}

impl VxnetSpec {
    /// A vxnet with a fixed id, in the account's VPC, with DHCP.
    pub fn new(id: &str, cidr: Ipv4Net) -> Self {
        Self {
            id: Some(id.to_owned()),
            name: None,
            cidr,
            router: None,
            vpc: true,
            dhcp: true,
        }
    }

    /// Joins the vxnet to this VPC router instead of the account's default one.
    pub fn router(mut self, router: &str) -> Self {
        self.router = Some(router.to_owned());
        self
    }

    /// Takes the vxnet out of any VPC (no router).
    pub fn outside_vpc(mut self) -> Self {
        self.vpc = false;
        self
    }

    /// Turns DHCP off on its router.
    pub fn without_dhcp(mut self) -> Self {
        self.dhcp = false;
        self
    }
}

/// An instance (VM). Its primary NIC (role 1) is created in `vxnet`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// `i-` + 8 characters; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The network namespace playing this VM (a name under `/var/run/netns` or an absolute
    /// path): attached NICs appear there when hot-plug is on.
    #[serde(default)]
    pub node_netns: Option<String>,
    /// Vxnet of the primary NIC; defaults to the first vxnet.
    #[serde(default)]
    pub vxnet: Option<String>,
    /// Whether the instance starts `running` (else `stopped`).
    #[serde(default = "yes")]
    pub running: bool,
}

fn yes() -> bool {
    true
}

impl InstanceSpec {
    /// A running instance with a fixed id, not mapped to any netns.
    pub fn new(id: &str) -> Self {
        Self {
            id: Some(id.to_owned()),
            name: None,
            node_netns: None,
            vxnet: None,
            running: true,
        }
    }

    /// Maps the instance to a node netns (name or path).
    pub fn node_netns(mut self, netns: &str) -> Self {
        self.node_netns = Some(netns.to_owned());
        self
    }
}

/// A duration drawn per job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Always this many milliseconds.
    FixedMs(u64),
    /// Uniformly between the two bounds (inclusive), in milliseconds.
    UniformMs(u64, u64),
}

impl Latency {
    /// Draws one duration.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Self::FixedMs(ms) => Duration::from_millis(ms),
            Self::UniformMs(a, b) => Duration::from_millis(rng.random_range(a.min(b)..=a.max(b))),
        }
    }
}

/// Latency of each job phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLatency {
    /// Time spent `pending`.
    pub pending: Latency,
    /// Time spent `working`.
    pub working: Latency,
}

impl Default for JobLatency {
    /// Short enough for tests, long enough that clients see both phases.
    fn default() -> Self {
        Self {
            pending: Latency::UniformMs(50, 150),
            working: Latency::UniformMs(100, 300),
        }
    }
}

/// An API request quota: at most `requests` per fixed window of `window_ms`; more → 2500.
/// The default is a new account's: 2000 requests per hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    /// Requests allowed per window.
    pub requests: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Self::per_hour(2000)
    }
}

impl Quota {
    /// `requests` per hour.
    pub fn per_hour(requests: u64) -> Self {
        Self {
            requests,
            window_ms: 3_600_000,
        }
    }
}
