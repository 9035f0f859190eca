//! `hostnic-agent`: the per-node agent that hands pre-attached cloud NICs to pods.
//!
//! It watches the HostNics of its node, keeps free NICs down and unconfigured on the node,
//! and serves the CNI plugin on a unix socket: a claim moves a NIC's link into the pod netns
//! and records the pod on the HostNic; a release brings it back. Of a HostNic the agent writes
//! only status: `phase` (Available to Bound, Bound to Released, a failed claim back to
//! Available), `pod`, `releasedAt`, `hostInterface` and the `LinkReady` condition; the operator
//! writes everything else.

pub mod args;
pub mod attach;
pub mod claims;
pub mod decide;
pub mod health;
pub mod hostnet;
pub mod hygiene;
pub mod journal;
pub mod kube_io;
pub mod link_events;
pub mod locks;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod observe;
pub mod overlay;
pub mod recover;
pub mod run;
pub mod server;
pub mod shutdown;
pub mod test_hooks;
pub mod waiting;
pub mod watch;

use std::path::PathBuf;

use hostnic_agent_api::ErrorKind;

/// Everything that can go wrong inside the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netns path could not be opened.
    #[error("open netns {path}: {source}")]
    NetnsOpen {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A path that should be a netns is some other file.
    #[error("{path} is not a network namespace")]
    NotANetns {
        /// The path.
        path: PathBuf,
    },
    /// The thread running netns work ended without an answer.
    #[error("netns worker thread died")]
    NetnsThreadDied,
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// The step.
        context: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("{context}: {source}")]
    Netlink {
        /// The step.
        context: &'static str,
        /// Why.
        source: rtnetlink::Error,
    },
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// The call.
        context: &'static str,
        /// Why.
        source: Box<kube::Error>,
    },
    /// No link with the NIC's MAC where it should be.
    #[error("no link with MAC {mac} in {netns}")]
    LinkNotFound {
        /// The NIC's MAC.
        mac: String,
        /// Where it was looked for.
        netns: String,
    },
    /// The request is invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No free NIC of the pool on this node.
    #[error("no free NIC of pool {pool} on this node; the operator refills the pool")]
    NoFreeNic {
        /// The pool.
        pool: String,
    },
    /// No pool could be chosen for the pod.
    #[error("no NicPool for pod {pod}: {why}")]
    NoPool {
        /// `namespace/name`.
        pod: String,
        /// Why none fits.
        why: String,
    },
    /// A HostNic lacks a field the claim needs (the operator fills them before Available).
    #[error("hostnic {name} is incomplete: {what}")]
    IncompleteHostNic {
        /// HostNic name.
        name: String,
        /// Which field.
        what: String,
    },
    /// A route with gateway `0.0.0.0` goes through the node's own address in the pod's subnet,
    /// and the node has none there yet (its gateway NIC is not up yet).
    #[error("the node has no address in {subnet} yet for routes via the node (gateway 0.0.0.0)")]
    NoNodeAddress {
        /// The pod's subnet.
        subnet: ipnet::Ipv4Net,
    },
    /// CHECK found differences.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// A HostNic kept changing under a status write.
    #[error("hostnic {hostnic} kept changing while its status was written")]
    TooManyConflicts {
        /// HostNic name.
        hostnic: String,
    },
    /// The agent has not synced yet.
    #[error("agent not ready: {0}")]
    NotReady(String),
    /// A release found the NIC's link neither in the pod nor on the node, so it cannot be
    /// proven free: the NIC stays Bound until its link is seen on the node.
    #[error("hostnic {hostnic} is not home yet: {why}")]
    NotHome {
        /// HostNic name.
        hostnic: String,
        /// Where the link was looked for.
        why: String,
    },
}

impl Error {
    /// Label for the failure counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NetnsOpen { .. } | Self::NotANetns { .. } => "netns",
            Self::NetnsThreadDied => "thread",
            Self::Io { .. } => "io",
            Self::Netlink { .. } => "netlink",
            Self::Kube { .. } => "kube",
            Self::LinkNotFound { .. } => "link_not_found",
            Self::InvalidRequest(_) => "invalid_request",
            Self::NoFreeNic { .. } => "no_free_nic",
            Self::NoPool { .. } => "no_pool",
            Self::IncompleteHostNic { .. } => "incomplete_hostnic",
            Self::NoNodeAddress { .. } => "no_node_address",
            Self::CheckFailed(_) => "check_failed",
            Self::TooManyConflicts { .. } => "conflicts",
            Self::NotReady(_) => "not_ready",
            Self::NotHome { .. } => "not_home",
        }
    }

    /// The category the CNI plugin maps to an error code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            // The runtime's CNI_NETNS is gone: the spec's "container unknown" (3).
            Self::NetnsOpen { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::UnknownContainer
            }
            Self::InvalidRequest(_)
            | Self::NoPool { .. }
            | Self::NetnsOpen { .. }
            | Self::NotANetns { .. } => ErrorKind::InvalidRequest,
            // The API server shedding load or briefly away: the runtime should retry.
            Self::Kube { source, .. } if kube_io::is_retryable(source) => ErrorKind::TryAgainLater,
            // The operator is setting up the node's NIC in the vxnet, or a release waits for
            // its link: both pass.
            Self::NoFreeNic { .. } | Self::NotHome { .. } | Self::NoNodeAddress { .. } => {
                ErrorKind::TryAgainLater
            }
            Self::CheckFailed(_) => ErrorKind::CheckFailed,
            Self::NotReady(_) => ErrorKind::NotReady,
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn kube(context: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube {
            context,
            source: Box::new(source),
        }
    }
}

/// Result of the agent's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
