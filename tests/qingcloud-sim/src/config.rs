//! What a simulator is made of: zone, keys, vxnets, instances, job latencies, limits.
//!
//! One serde type serves the builder, the binary's YAML config file and the admin endpoint, so
//! the three cannot drift apart.

use std::net::SocketAddr;
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
    /// Account-level API request quota; `None` means unlimited.
    pub quota: Option<Quota>,
    /// Most NICs one AttachNics/DetachNics call may name (more → 1100); `None` = no limit.
    /// hostnic issue #74 reports 5, unconfirmed by the API docs.
    pub nic_batch_limit: Option<usize>,
    /// Whether job time only moves through [`crate::SimHandle::advance`] (tests of the job
    /// state machine without sleeping).
    pub manual_clock: bool,
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
            nic_batch_limit: None,
            manual_clock: false,
            nic_visibility_lag_ms: 0,
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
}

impl VxnetSpec {
    /// A vxnet with a fixed id.
    pub fn new(id: &str, cidr: Ipv4Net) -> Self {
        Self {
            id: Some(id.to_owned()),
            name: None,
            cidr,
        }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests allowed per window.
    pub requests: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
}
