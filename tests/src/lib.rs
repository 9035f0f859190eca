//! Test fixtures shared by hostnic's crates (real network namespaces, privilege checks, the
//! workspace's binaries), plus the end-to-end tests, the local demo and the benchmarks.

pub mod bins;
pub mod cluster;
pub mod containerd;
pub mod http;
pub mod kubectl;
pub mod netns;
pub mod privilege;
pub mod process;
pub mod sim;
