//! A strict QingCloud API simulator with hot-plug into network namespaces.
//!
//! It speaks the real wire protocol (`shared/reference/qingcloud-api.md`) on `/iaas` and
//! `/iaas/`, GET (query) or POST (form body), over HTTP or HTTPS (a CA made at start), always
//! answering `application/json` from its own reading of the reference ([`wire`], not the
//! client crate's types); it verifies signatures with its own signer, runs AttachNics/DetachNics as jobs with
//! configurable latency, enforces the documented limits, injects faults on demand, and (as root,
//! when hot-plug is on) makes attached NICs real links with the NIC's MAC in the netns that plays
//! the instance.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qingcloud_sim::Error> {
//! use qingcloud_sim::{Fault, InstanceSpec, Simulator, VxnetSpec};
//! let sim = Simulator::builder()
//!     .access_key("AKID", "secret")
//!     .zone("pek3a")
//!     .vxnet(VxnetSpec::new("vxnet-pods001", "172.22.0.0/24".parse().unwrap()))
//!     .instance(InstanceSpec::new("i-node0001").node_netns("hn-node-abc123"))
//!     .hotplug(true)
//!     .seed(7)
//!     .start()
//!     .await?;
//! std::fs::write("/tmp/qingcloud.yaml", sim.config_yaml()).unwrap();
//! sim.inject(Fault::error(5100).on("AttachNics").next(2));
//! // ... run the code under test against sim.url() ...
//! assert!(sim.nics().iter().all(|n| n.nic.role == Some(1)), "leaked NICs");
//! println!("{} calls", sim.calls().total);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Behaviour where the real API is unconfirmed
//!
//! - An attaching NIC shows `available` with an empty `instance_id` until its job ends; a
//!   detaching one shows `in-use`. Unattached NICs show `sequence` 0.
//! - `done with failure` attaches/detaches every NIC of the batch but the last.
//! - Capacity errors use `capacity_error_code` (default 1400); `count` > 252 is a capacity
//!   error, `count` < 1 is 1100. With `private_ips.N`, one NIC per address is created.
//! - A wrong `zone` is 1100; `limit=0` means the default 20; `time_stamp` may be off by the
//!   tolerance (60 s) in either direction; a past `expires` is 1300.
//! - Attach/DetachNics take any number of NICs unless `nic_batch_limit` is set (more → 1100).
//! - ret_code 2500 comes in two wordings: the API request quota (`quota`, off by default,
//!   `quota: {}` = 2000 per hour) answers "QuotaExceeded, api request quota exceeded, please
//!   try later"; the NIC count quota (`nic_quota`, off by default) answers
//!   "QuotaExceeded, resource quota of [nic] exceeded: ...". The real texts are unconfirmed.
//! - A request URI (path and query) over `max_uri_len` (default 8192) is answered HTTP 414
//!   before the API sees it, as gateways do.
//! - DescribeJobs with an unknown id returns an empty set; DescribeVxnetInstances with an
//!   unknown vxnet too.
//! - The realistic behaviours (profile `realistic`: jobs serialized per instance, VPC and
//!   DHCP rules, `available_ip_count` only when verbose, a long job history, HTTPS) and their
//!   status against the reference are listed in the crate's `README.md`.
//!
//! # Admin endpoints (JSON, not signed)
//!
//! | route | body | effect |
//! |---|---|---|
//! | `GET /admin/nics` | | every NIC ([`NicInfo`]: wire fields + `state`, `instance`, `job_id`, `hidden_polls`) |
//! | `GET /admin/jobs` | | every job (wire `Job`) |
//! | `GET /admin/vxnets` | | every vxnet (wire `Vxnet`, verbose) + `netns` |
//! | `GET /admin/instances` | | every instance ([`InstanceInfo`]) |
//! | `POST /admin/instances` | [`InstanceSpec`] | adds an instance → `{"instance_id"}` |
//! | `PUT /admin/instances/{id}` | `{"running": bool}` or `{"status": "suspended"}` | starts/stops it, or sets any status |
//! | `GET /admin/calls` | | [`CallStats`] |
//! | `POST /admin/calls/reset` | | zeroes the counters |
//! | `GET /admin/faults` | | installed faults with ids |
//! | `POST /admin/faults` | [`Fault`] | installs one → `{"id"}` |
//! | `DELETE /admin/faults[/{id}]` | | removes all / one |
//! | `PUT /admin/quota` | [`Quota`] or `null` | account request quota (→ 2500) |
//! | `PUT /admin/job-latency` | [`JobLatency`] | latencies of new jobs |
//! | `GET /admin/rules` | | the account [`Rules`] in force |
//! | `PUT /admin/rules` | [`Rules`] | replaces them (absent fields: off) |
//! | `PUT /admin/nic-batch-limit` | `5` or `null` | most NICs per Attach/DetachNics |
//! | `POST /admin/advance` | `{"ms": n}` | moves a manual clock, finishing due jobs |
//!
//! Fault JSON examples: `{"action":"AttachNics","kind":{"api_error":{"code":5100}},
//! "trigger":{"next":3}}`, `{"kind":{"http_status":503},"trigger":{"probability":0.1}}`,
//! `{"kind":"non_json","trigger":{"next":1}}`, `{"kind":"reset","trigger":{"next":1}}`,
//! `{"kind":{"delay_ms":2000},"trigger":{"next":1}}`,
//! `{"kind":{"job":"never_finish"},"trigger":{"next":1}}` (also `failed`,
//! `done_with_failure`), `{"kind":{"hide_new_nics":3},"trigger":{"next":1}}`,
//! `{"kind":{"nic_status_lag":2},...}` (DescribeNics shows the old status for 2 more polls
//! after the job), `{"kind":{"link_delay_ms":1500},...}` (the link appears after the job),
//! `{"kind":"missing_ret_code",...}`; `"after": true` runs the action before replacing its
//! response (a lost response).

mod actions;
mod admin;
mod api_error;
mod auth;
mod clock;
pub mod config;
pub mod faults;
pub mod hotplug;
pub mod model;
mod params;
mod server;
mod signer;
mod sim;
pub mod wire;

pub use actions::ACTIONS;
pub use api_error::ApiError;
pub use config::{
    AccessKey, InstanceJobs, InstanceSpec, JobLatency, Latency, Profile, Quota, Rules, SimConfig,
    VxnetSpec,
};
pub use faults::{Fault, FaultKind, InstalledFault, Trigger};
pub use hotplug::link_name;
pub use model::{InstanceInfo, JobOutcome, NicInfo, NicState, VxnetInstance};
pub use server::CallStats;
pub use sim::{SimHandle, Simulator};

/// Failures of the simulator itself (not API answers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent (duplicate ids, instance without vxnet...).
    #[error("invalid simulator config: {0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Creating the vxnet netns failed (not root?).
    #[error("hot-plug setup: {0}")]
    Hotplug(String),
    /// [`SimHandle::advance`] on a real clock.
    #[error("the simulator clock is not manual")]
    NotManualClock,
    /// An operation refused by the model (e.g. unknown instance).
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The TLS certificate could not be made or its CA not written.
    #[error("tls setup: {0}")]
    Tls(String),
}
