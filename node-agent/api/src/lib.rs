//! Wire types of the node-agent's unix socket, shared with the `hostnic` CNI plugin.
//!
//! Kept free of kube and tokio so the plugin stays lean.

/// Version of the socket protocol; requests carry it and the agent refuses others.
pub const API_VERSION: &str = "v1";

/// Default path of the agent's unix socket.
pub const DEFAULT_SOCKET: &str = "/run/hostnic/hostnic.sock";
