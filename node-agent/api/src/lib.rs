//! Wire types of the node-agent's unix socket, shared with the `hostnic` CNI plugin.
//!
//! The protocol is HTTP/1.1 over the agent's unix socket with JSON bodies, so it can be
//! driven by hand with `curl --unix-socket`. Requests are versioned by path:
//!
//! | method | path          | body              | success body       |
//! |--------|---------------|-------------------|--------------------|
//! | POST   | `/v1/claim`   | [`ClaimRequest`]  | [`Attachment`]     |
//! | POST   | `/v1/release` | [`ReleaseRequest`]| [`Released`]       |
//! | POST   | `/v1/check`   | [`CheckRequest`]  | [`Attachment`]     |
//! | POST   | `/v1/gc`      | [`GcRequest`]     | [`GcResponse`]     |
//! | GET    | `/v1/status`  | none              | [`AgentStatus`]    |
//!
//! Failures answer a 4xx/5xx status with an [`ApiError`] body. Kept free of kube and tokio so
//! the plugin stays lean.

use serde::{Deserialize, Serialize};

/// Version prefix of every request path; the agent answers 404 to any other.
pub const API_VERSION: &str = "v1";

/// Default path of the agent's unix socket.
pub const DEFAULT_SOCKET: &str = "/run/hostnic/hostnic.sock";

/// Largest request body the agent accepts; anything bigger is refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Paths of the socket's endpoints.
pub mod path {
    /// Claim a free NIC for a pod sandbox.
    pub const CLAIM: &str = "/v1/claim";
    /// Release the NIC of a pod sandbox.
    pub const RELEASE: &str = "/v1/release";
    /// Verify a pod sandbox's NIC is configured as claimed.
    pub const CHECK: &str = "/v1/check";
    /// Release every attachment not in a list of valid ones.
    pub const GC: &str = "/v1/gc";
    /// Readiness of the agent.
    pub const STATUS: &str = "/v1/status";
}

/// DELs waiting for the agent: when the plugin cannot get an answer (agent down, restarting,
/// not recovered) it leaves the [`ReleaseRequest`] here and reports success, and the agent
/// releases it after its start-up recovery. The directory sits next to the agent's socket
/// (`/run/hostnic/pending-del`, tmpfs: queued DELs vanish with the pods at reboot), root only.
pub mod pending_del {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::path::{Path, PathBuf};

    use crate::{AttachmentKey, ReleaseRequest};

    /// The queue directory for the agent whose socket is `socket`.
    pub fn dir(socket: &Path) -> PathBuf {
        socket
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .join("pending-del")
    }

    /// File name of a queued DEL: `<containerID>_<ifname>`, so a repeated DEL replaces its
    /// earlier entry. Neither part can hold a '/', and a container id never starts with '.'
    /// (the prefix of files still being written).
    pub fn file_name(key: &AttachmentKey) -> String {
        format!("{}_{}", key.container_id, key.ifname)
    }

    /// Queues `req` in `dir` (created 0700): written to a temporary file, then renamed into
    /// place, so a reader never sees half an entry.
    pub fn queue(dir: &Path, req: &ReleaseRequest) -> std::io::Result<PathBuf> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let name = file_name(&req.key);
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let body = serde_json::to_vec(req).map_err(std::io::Error::other)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&body)?;
        drop(file);
        let path = dir.join(name);
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(path)
    }

    /// Every complete entry of `dir` with its path; unreadable or malformed entries come back
    /// as errors so the caller can log and drop them. A missing directory is an empty queue.
    pub fn list(dir: &Path) -> Vec<(PathBuf, Result<ReleaseRequest, String>)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                let path = e.path();
                let req = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                (path, req)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The pod a request is for, from the runtime's `CNI_ARGS`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most seconds a claim may be held for a NIC on its way (see
/// [`ClaimRequest::wait_for_nic_seconds`]).
pub const MAX_WAIT_FOR_NIC_SECS: u64 = 60;

/// Identifies one attachment: the sandbox container and the interface inside it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AttachmentKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// Claim a free NIC of a pool and move it into the pod's netns (CNI ADD).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Which sandbox and interface.
    #[serde(flatten)]
    pub key: AttachmentKey,
    /// `CNI_NETNS`: path of the pod's network namespace.
    pub netns: String,
    /// The pod.
    pub pod: PodInfo,
    /// The conflist's `pool`: used only when the pod has no `hostnic.qingcloud.com/pool`
    /// annotation (the annotation always wins, read from the API or [`Self::pod_pool`]); `None`
    /// lets the agent use the default pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The pod's `hostnic.qingcloud.com/pool` annotation as the runtime passed it (containerd's
    /// `io.kubernetes.cri.pod-annotations` capability), for when the agent cannot read the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_pool: Option<String>,
    /// Whether the runtime passed the pod's annotations and they show a pod of the API (not a
    /// static pod): then a missing [`Self::pod_pool`] means the pod has no pool annotation, and
    /// with [`PodInfo::uid`] the agent needs no API round trip to serve the ADD.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_annotations: bool,
    /// How long the agent may hold the claim when the pool is empty but a NIC for it is on its
    /// way (the plugin waits that much longer for the answer); 0, as from older plugins, means
    /// answer "try again later" at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_for_nic_seconds: u64,
    /// The network (the conflist's `name`) making the attachment, recorded with the claim so
    /// that GC of one network never releases another network's attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// MTU to set on the pod interface; `None` keeps the NIC's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Extra routes from the CNI config (the original hostnic's `ipam.routes`), added to the
    /// pool's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// Release a sandbox's NIC back to the host (CNI DEL). Idempotent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// Which sandbox and interface.
    #[serde(flatten)]
    pub key: AttachmentKey,
    /// `CNI_NETNS`; empty or absent when the runtime already removed the netns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// Verify a sandbox's NIC is still configured as claimed (CNI CHECK).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CheckRequest {
    /// Which sandbox and interface.
    #[serde(flatten)]
    pub key: AttachmentKey,
    /// `CNI_NETNS`.
    pub netns: String,
    /// What the runtime's cached result (prevResult) and the conflist say the interface must
    /// look like. `None` (an older plugin) checks only what the claim recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

/// The pod interface as CHECK expects it in the kernel. Routes are a minimum: routes a later
/// chained plugin added are fine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// MAC in prevResult; empty when it gives none.
    #[serde(default)]
    pub mac: String,
    /// Address with prefix length in prevResult.
    pub address: String,
    /// MTU the conflist sets, else the one prevResult reports (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Routes through the interface: prevResult's and the conflist's `ipam.routes`. A gateway
    /// of `0.0.0.0` matches any next hop (the node's address in the vxnet, whatever it is now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// Release every attachment of one network on this node that is not listed (CNI GC).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GcRequest {
    /// The network (conflist `name`) being collected: only its attachments are candidates.
    /// Empty (an older plugin) is refused, since it cannot say whose attachments are stale.
    #[serde(default)]
    pub network: String,
    /// `cni.dev/valid-attachments`: attachments of this network the runtime still knows.
    pub valid_attachments: Vec<AttachmentKey>,
}

/// What GC released, and what it could not.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GcResponse {
    /// Attachments released because the runtime no longer knows them.
    pub released: Vec<AttachmentKey>,
    /// Stale attachments whose release failed; GC went on with the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<GcFailure>,
}

/// One release GC could not do.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GcFailure {
    /// The attachment.
    #[serde(flatten)]
    pub key: AttachmentKey,
    /// Why its release failed.
    pub error: String,
}

/// Outcome of a release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// HostNic released, or `None` when nothing was attached (already released or unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnic: Option<String>,
}

/// A NIC configured in a pod: what the plugin turns into a CNI result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Attachment {
    /// Name of the HostNic object holding the claim.
    pub hostnic: String,
    /// Interface name inside the pod.
    pub interface: String,
    /// MAC address (the QingCloud nic_id), lowercase.
    pub mac: String,
    /// Path of the pod's network namespace.
    pub sandbox: String,
    /// MTU set on the interface.
    pub mtu: u32,
    /// The pod address with its prefix length, e.g. `172.22.0.9/24`.
    pub address: String,
    /// The vxnet gateway, the pod's default route.
    pub gateway: String,
    /// Every route written into the pod, the default route included.
    pub routes: Vec<Route>,
}

/// A route in a pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Destination CIDR; `0.0.0.0/0` for the default route.
    pub dst: String,
    /// Next hop; `0.0.0.0` in a request means "the node's NIC in the pod's vxnet".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// Readiness of the agent (CNI STATUS).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// Whether ADD can be expected to succeed now.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the agent has synced its HostNics and the kernel.
    pub synced: bool,
    /// Free NICs on this node.
    pub free_nics: u32,
    /// NICs on their way to this node.
    pub incoming_nics: u32,
}

/// What went wrong, as a category the plugin maps to a CNI error code.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (CNI 7 / 4).
    InvalidRequest,
    /// No free NIC now; the pool is being refilled (CNI 11, try again later).
    TryAgainLater,
    /// CHECK found the attachment missing or misconfigured.
    CheckFailed,
    /// The agent is not ready (CNI 50 for STATUS).
    NotReady,
    /// The sandbox's netns does not exist (CNI 3, container unknown).
    UnknownContainer,
    /// A kernel or API failure inside the agent (CNI 5 / 999).
    Internal,
    /// A kind this side does not know (a newer agent): treated as [`Self::Internal`].
    #[serde(other)]
    Unknown,
}

/// Error body of every failed request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Category.
    pub kind: ErrorKind,
    /// What went wrong, for a human.
    pub message: String,
    /// More context (the failing step, the NIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_request_flattens_the_attachment_key() {
        let req = ClaimRequest {
            key: AttachmentKey {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: "/var/run/netns/p".into(),
            pod: PodInfo {
                namespace: "ns".into(),
                name: "p".into(),
                uid: None,
            },
            pool: None,
            pod_pool: None,
            pod_annotations: false,
            wait_for_nic_seconds: 0,
            network: Some("hostnic".into()),
            mtu: None,
            routes: vec![],
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["container_id"], "c1");
        assert_eq!(json["ifname"], "eth0");
        assert!(json.get("pool").is_none());
        let back: ClaimRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn error_kind_is_snake_case_on_the_wire() {
        let err = ApiError {
            kind: ErrorKind::TryAgainLater,
            message: "no free NIC".into(),
            details: None,
        };
        let json = serde_json::to_string(&err).unwrap();
        assert!(json.contains("\"try_again_later\""), "{json}");
        let newer: ApiError =
            serde_json::from_str(r#"{"kind": "from_the_future", "message": "m"}"#).unwrap();
        assert_eq!(newer.kind, ErrorKind::Unknown);
    }

    #[test]
    fn older_peers_still_parse() {
        // A GC request and answer from before the network name and the failure list.
        let old: GcRequest = serde_json::from_str(r#"{"valid_attachments": []}"#).unwrap();
        assert_eq!(old.network, "");
        let old: GcResponse = serde_json::from_str(r#"{"released": []}"#).unwrap();
        assert!(old.failed.is_empty());
        let old: CheckRequest =
            serde_json::from_str(r#"{"container_id": "c", "ifname": "eth0", "netns": "/n"}"#)
                .unwrap();
        assert_eq!(old.expected, None);
        let old: ClaimRequest = serde_json::from_str(
            r#"{"container_id": "c", "ifname": "eth0", "netns": "/n",
                "pod": {"namespace": "ns", "name": "p"}, "pool": "a"}"#,
        )
        .unwrap();
        assert_eq!((old.pod_pool, old.network), (None, None));
    }
}
