//! Checks of the install manifests under `manifests/`: rendering them offline, parsing every
//! object into its typed Kubernetes form, and comparing the RBAC they grant with what the
//! operator and the agent really use. The tests under `tests/` drive these against the
//! rendered output, the in-memory API server and the CNI installer script.

pub mod admin;
pub mod apiserver;
pub mod ctr;
pub mod kubelet;
pub mod promql;
pub mod rbac;
pub mod render;
pub mod status_agent;
pub mod typed;

use std::path::PathBuf;

/// Root of the repository (the workspace), where `manifests/` and `crds/` live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The `manifests/` directory.
pub fn manifests_dir() -> PathBuf {
    repo_root().join("manifests")
}
