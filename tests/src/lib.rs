//! Test fixtures shared by hostnic's crates (real network namespaces, privilege checks, the
//! workspace's binaries), plus the end-to-end tests, the local demo and the benchmarks.

pub mod bench;
pub mod bins;
pub mod chaos;
pub mod cluster;
pub mod cni_runtime;
pub mod containerd;
pub mod fake_agent;
pub mod http;
pub mod images;
pub mod interrupt;
pub mod kubectl;
pub mod kubelet_status;
pub mod netns;
pub mod oci;
pub mod pods;
pub mod privilege;
pub mod process;
pub mod proxy;
pub mod scenario;
pub mod scratch;
pub mod sim;
pub mod stand_in;
