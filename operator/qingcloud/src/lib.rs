//! QingCloud IaaS API client: signing, typed NIC calls, retries and rate limiting.
//!
//! [`signer`] and [`wire`] are pure and shared with the simulator (`qingcloud-sim`), so both
//! sides of the protocol use one implementation of the signature and one set of wire types.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use qingcloud::{Client, ClientSettings, CloudConfig, NicFilter, Priority};
//! let config = CloudConfig::load("/root/.qingcloud/config.yaml".as_ref())?;
//! let client = Client::new(config, ClientSettings::default(), None)?;
//! let urgent = client.with_priority(Priority::Urgent);
//! let vxnet = "vxnet-abc1234".parse()?;
//! let nics = urgent.create_nics(&vxnet, 2, Some("hostnic_i-abcd1234")).await?;
//! let ids: Vec<_> = nics.into_iter().map(|n| n.id).collect();
//! let job = urgent.attach_nics(&"i-abcd1234".parse()?, &ids).await?;
//! let outcome = urgent.wait_job(&job, client.settings().job_timeout).await?;
//! # Ok(()) }
//! ```

pub mod batch;
pub mod client;
pub mod config;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod metrics;
pub mod ratelimit;
pub mod signer;
pub mod wire;

pub use batch::BatchReport;
pub use client::{Client, JobFilter, NewNic, NicChanges, NicFilter};
pub use config::{ClientSettings, CloudConfig, ConfigError, Protocol, Secret};
pub use error::{Error, Result};
pub use ids::{IdError, InstanceId, JobId, NicId, VxnetId};
pub use jobs::JobOutcome;
pub use metrics::Metrics;
pub use ratelimit::{Priority, RateLimiter};
pub use wire::{Action, RetCode};
