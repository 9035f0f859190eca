//! Command-line flags, as kubectl users expect them (`--kubeconfig`, `--context`, `-n`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Explains hostnic's state: why a pod has no NIC, each node's pool fill, leaked cloud NICs.
#[derive(Parser, Debug)]
#[command(name = "kubectl-hostnic", bin_name = "kubectl hostnic", version, about)]
pub struct Args {
    /// Kubeconfig file (default: $KUBECONFIG or ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to explain.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Walks pod -> node and agent -> pool -> HostNic -> cloud NIC and says in one line what
    /// keeps the pod from its NIC; exits 1 when something does.
    Why {
        /// The pod.
        pod: String,
        /// Its namespace (default: the context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// A table per pool and node: size, available, bound, in progress, failed, waiting ADDs.
    Nodes,
    /// Cloud NICs named as this cluster's (`hostnic-<cluster>-<uid>`) that no HostNic owns.
    /// Read-only.
    Leaks {
        /// QingCloud config file in the operator's format (the file the operator reads).
        #[arg(long, env = "HOSTNIC_CLOUD_CONFIG")]
        cloud_config: PathBuf,
        /// The operator's cluster name (its --cluster-name).
        #[arg(long, env = "HOSTNIC_CLUSTER_NAME", default_value = "kubernetes")]
        cluster: String,
    },
}
