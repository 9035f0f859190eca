//! `HostNic`: one cloud NIC the system owns, its place in a pool and its lifecycle.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{IPV4_CIDR_PATTERN, IPV4_PATTERN, MAC_PATTERN, VXNET_ID_PATTERN};

/// Desired placement of a HostNic: its pool, node and vxnet.
///
/// The operator creates a HostNic before it calls the cloud, so a NIC is never created that no
/// object remembers. The node's agent hands Available NICs to pods and records the pod here.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hostnic.qingcloud.com",
    version = "v1alpha1",
    kind = "HostNic",
    plural = "hostnics",
    shortname = "hn",
    category = "hostnic-all",
    status = "HostNicStatus",
    doc = "One QingCloud NIC owned by hostnic, attached (or on its way) to one node.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Vxnet", type_ = "string", json_path = ".spec.vxnet"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.privateIp"),
    printcolumn(name = "MAC", type_ = "string", json_path = ".status.nicId"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".status.pod.name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HostNicSpec {
    /// The NicPool this NIC belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub pool: String,

    /// The node (Kubernetes Node name) the NIC is attached to.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,

    /// The vxnet the NIC is created in.
    #[schemars(pattern(VXNET_ID_PATTERN))]
    pub vxnet: String,

    /// Whether the NIC serves pods or is the node's gateway NIC in its vxnet.
    #[serde(default)]
    pub role: NicRole,
}

/// What a HostNic is for.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NicRole {
    /// Handed to one pod at a time.
    #[default]
    Pod,
    /// Configured on the node itself; pods route through its address (a route with gateway
    /// `0.0.0.0`). Never handed to a pod.
    Gateway,
}

/// Where a HostNic is in its lifecycle.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum HostNicPhase {
    /// Recorded, no cloud call made yet.
    #[default]
    Pending,
    /// CreateNics issued; the NIC may exist in the cloud under this object's name.
    Creating,
    /// AttachNics issued; waiting for the job and for the agent to see the link.
    Attaching,
    /// Attached, link present on the node, free for a pod.
    Available,
    /// Held by the pod in `status.pod`.
    Bound,
    /// Released by its pod; rests for the pool's quarantine before it is Available again.
    Released,
    /// DetachNics issued.
    Detaching,
    /// DeleteNics issued or about to be.
    Deleting,
    /// The cloud refused the NIC or it vanished; the operator replaces it.
    Failed,
}

impl HostNicPhase {
    /// Phases of a NIC on its way into the pool, counted so a pool never overshoots.
    pub fn is_incoming(self) -> bool {
        matches!(self, Self::Pending | Self::Creating | Self::Attaching)
    }

    /// Phases of a NIC on its way out of the cloud.
    pub fn is_outgoing(self) -> bool {
        matches!(self, Self::Detaching | Self::Deleting)
    }
}

/// Observed state of a HostNic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostNicStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: HostNicPhase,

    /// QingCloud NIC id, which is the NIC's MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(MAC_PATTERN))]
    pub nic_id: Option<String>,

    /// Private IPv4 address QingCloud assigned to the NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(IPV4_PATTERN))]
    pub private_ip: Option<String>,

    /// CIDR of the NIC's vxnet; the pod address gets its prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(IPV4_CIDR_PATTERN))]
    pub vxnet_cidr: Option<String>,

    /// Gateway address of the NIC's vxnet; the pod's default route goes through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(IPV4_PATTERN))]
    pub vxnet_gateway: Option<String>,

    /// QingCloud instance id the NIC is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,

    /// Name of the NIC's link on the node while it is there, as the agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_interface: Option<String>,

    /// The pod holding the NIC (phase Bound), or that last held it (phase Released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,

    /// When the last pod released the NIC: the start of its quarantine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Time>,

    /// The last asynchronous cloud job (AttachNics or DetachNics) issued for the NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<CloudJob>,

    /// `Attached` (cloud side), `LinkReady` (the agent sees the link on the node) and
    /// `CloudError` (the last cloud call failed, with its ret_code in the reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The pod holding a NIC.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID, when the runtime passed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Sandbox (infra) container id the CNI runtime passed.
    pub container_id: String,
    /// Path of the pod's network namespace.
    pub netns: String,
    /// Interface name of the NIC inside the pod, usually `eth0`.
    pub interface: String,
    /// The CNI network (the conflist's `name`) that made the attachment; CNI GC of a network
    /// only collects its own. Absent on claims made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A QingCloud asynchronous job.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudJob {
    /// Job id, `j-...`.
    pub id: String,
    /// Action that started the job, e.g. `AttachNics`.
    pub action: String,
    /// Last status seen: pending, working, successful, failed, done with failure, or unknown.
    pub status: String,
}
