//! Command-line flags, with environment fallbacks for the DaemonSet.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Per-node agent: hands pre-attached QingCloud NICs to pods through the hostnic CNI plugin.
#[derive(Parser, Debug, Clone)]
#[command(name = "hostnic-agent", version, about)]
pub struct Args {
    /// Kubernetes Node name of this node (downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,

    /// Network namespace that plays the node; default: the agent's own. Tests and the demo run
    /// the agent in the host netns (to reach a local API server) and point this at a test netns.
    #[arg(long, env = "HOSTNIC_NODE_NETNS")]
    pub node_netns: Option<PathBuf>,

    /// Unix socket the CNI plugin talks to.
    #[arg(long, env = "HOSTNIC_SOCKET", default_value = hostnic_agent_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Local address for /healthz, /readyz and /metrics.
    #[arg(long, env = "HOSTNIC_HEALTH_ADDR", default_value = "127.0.0.1:9465")]
    pub health_addr: SocketAddr,

    /// Seconds between sweeps for NICs of pods that vanished without a DEL.
    #[arg(long, env = "HOSTNIC_SWEEP_SECONDS", default_value_t = 30)]
    pub sweep_seconds: u64,

    /// Seconds between link reports when nothing changes.
    #[arg(long, env = "HOSTNIC_LINK_SCAN_SECONDS", default_value_t = 5)]
    pub link_scan_seconds: u64,

    /// Seconds SIGTERM waits for the requests in flight before the agent exits anyway (a claim
    /// cut off then is undone at the next start); below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "HOSTNIC_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,

    /// `true`: uninstall: remove the agent's nat rule from the node at start and keep it off
    /// (the agent still serves the CNI DELs of the last pods). The same variable switches the
    /// `cni-config` container to uninstall (README, Uninstall).
    #[arg(long, env = "HOSTNIC_CNI_UNINSTALL", action = clap::ArgAction::Set, default_value_t = false)]
    pub uninstall: bool,
    /// Seconds an ADD that finds its pool empty waits for a NIC on its way (being created or
    /// attached, or resting after a release) before it answers "try again later": well below
    /// the runtime's sandbox timeout, and never longer than the plugin grants in the claim.
    #[arg(long, env = "HOSTNIC_WAIT_FOR_NIC_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=hostnic_agent_api::MAX_WAIT_FOR_NIC_SECS))]
    pub wait_for_nic_seconds: u64,

    /// Log format: `json` (default) or `text`.
    #[arg(long, env = "HOSTNIC_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}
