//! hostnic-operator: keeps every node's warm pool of QingCloud NICs full (NicPool) and every
//! HostNic's cloud NIC in the state its object says, without leaking NICs.
//!
//! Layout: `plan` decides (pure), `controller` observes and acts, `cloud` talks to QingCloud
//! behind a trait, `gc` collects orphans, `lease` elects a leader, `http` serves probes and
//! metrics, `run` wires it together for `main`.

pub mod args;
pub mod cloud;
pub mod controller;
pub mod error;
pub mod gc;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod run;
pub mod sync;
pub mod telemetry;

pub use error::{Error, Result};
