//! The `hostnic` CNI plugin: a thin, std-only client of the node-agent. It checks what the
//! runtime passed, forwards one request over the agent's unix socket and prints the CNI result
//! or the spec's error JSON. The binary (`main.rs`) only wires the process to [`verbs`].

pub mod client;
pub mod config;
pub mod env;
pub mod error;
pub mod log;
pub mod result;
pub mod verbs;
pub mod version;
