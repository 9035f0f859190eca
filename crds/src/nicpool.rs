//! `NicPool`: which vxnets NICs come from, which nodes get a warm pool and how big it is.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    IPV4_CIDR_PATTERN, IPV4_PATTERN, MAC_PATTERN, MAX_NICS_PER_INSTANCE, VXNET_ID_PATTERN,
};

/// Free NICs kept warm per node when `spec.size` is not given (the original daemon's PoolSize).
pub const DEFAULT_SIZE: u32 = 3;

/// Quarantine of a released NIC when `spec.quarantineSeconds` is not given: it covers the
/// conntrack and ARP cache window in which reusing the address could hijack connections.
pub const DEFAULT_QUARANTINE_SECONDS: u32 = 120;

/// Desired state of a NicPool.
///
/// The operator keeps `size` free NICs attached to each node selected by `nodeSelector`,
/// creating them in the pool's vxnets. Editing `size` (or `kubectl scale nicpool NAME
/// --replicas=N`) resizes every node's pool live.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hostnic.qingcloud.com",
    version = "v1alpha1",
    kind = "NicPool",
    plural = "nicpools",
    shortname = "np",
    category = "hostnic-all",
    status = "NicPoolStatus",
    doc = "A pool of QingCloud NICs kept warm on every matching node, ready to be handed to pods.",
    scale(
        spec_replicas_path = ".spec.size",
        status_replicas_path = ".status.warmPerNode"
    ),
    printcolumn(name = "Vxnets", type_ = "string", json_path = ".spec.vxnets"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.available"),
    printcolumn(name = "Bound", type_ = "integer", json_path = ".status.bound"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodes"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NicPoolSpec {
    /// Vxnets (QingCloud subnets, `vxnet-...`) the pool's NICs are created in. Among them the
    /// operator picks the one with the most free addresses for each new NIC.
    #[schemars(length(min = 1, max = 16), inner(pattern(VXNET_ID_PATTERN)))]
    pub vxnets: Vec<String>,

    /// Labels a node must carry to get this pool. Empty selects every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Free (Available) NICs kept warm on each selected node. Scaling the NicPool sets this.
    #[serde(default = "default_size")]
    #[schemars(range(min = 0, max = MAX_NICS_PER_INSTANCE))]
    pub size: u32,

    /// Most NICs of this pool on one node, free and bound together. A VM holds at most 63
    /// secondary NICs, so that is the ceiling.
    #[serde(default = "default_max_per_node")]
    #[schemars(range(min = 1, max = MAX_NICS_PER_INSTANCE))]
    pub max_per_node: u32,

    /// Routes written into every pod using this pool, besides the default route through the
    /// vxnet gateway: typically the Service CIDR through the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub routes: Vec<Route>,

    /// What happens to the pool's cloud NICs when the NicPool is deleted.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,

    /// Seconds a released NIC rests before another pod gets it. It keeps its IP, so reusing it
    /// inside the conntrack/ARP window could hand a new pod an old pod's connections.
    #[serde(default = "default_quarantine_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub quarantine_seconds: u32,
}

fn default_size() -> u32 {
    DEFAULT_SIZE
}

fn default_max_per_node() -> u32 {
    MAX_NICS_PER_INSTANCE
}

fn default_quarantine_seconds() -> u32 {
    DEFAULT_QUARANTINE_SECONDS
}

/// A route written into pods of the pool.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination IPv4 CIDR, e.g. the Service CIDR `10.96.0.0/12`.
    #[schemars(pattern(IPV4_CIDR_PATTERN))]
    pub destination: String,

    /// Next hop. `0.0.0.0` means "a NIC of the node in the pod's vxnet": the operator gives
    /// each node a gateway NIC per vxnet (or reuses one the node already has) and pods route
    /// through its address.
    #[schemars(pattern(IPV4_PATTERN))]
    pub gateway: String,
}

impl Route {
    /// Whether the gateway is the `0.0.0.0` placeholder for the node's NIC in the pod's vxnet.
    pub fn via_node(&self) -> bool {
        self.gateway == "0.0.0.0"
    }
}

/// What happens to a pool's cloud NICs when the NicPool is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Detach and delete every free NIC of the pool (bound NICs go once their pods release them).
    #[default]
    Delete,
    /// Leave the cloud NICs in place; only the HostNic objects go.
    Retain,
}

/// Observed state of a NicPool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NicPoolStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Nodes the pool's selector matches.
    #[serde(default)]
    pub nodes: u32,

    /// Free NICs on the least-stocked selected node: equals `spec.size` once every node is full.
    /// It is the scale subresource's status replicas.
    #[serde(default)]
    pub warm_per_node: u32,

    /// Free NICs, ready for a pod, over all nodes.
    #[serde(default)]
    pub available: u32,

    /// NICs held by pods over all nodes.
    #[serde(default)]
    pub bound: u32,

    /// NICs being created, attached, released or quarantined over all nodes.
    #[serde(default)]
    pub in_progress: u32,

    /// NICs in phase Failed over all nodes.
    #[serde(default)]
    pub failed: u32,

    /// Counts per selected node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_status: Vec<NodePoolStatus>,

    /// `Ready` (every node has its warm NICs), `Progressing` (NICs on their way) and
    /// `Degraded` (a vxnet, instance or quota problem keeps the pool from converging).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A NicPool's counts on one node.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Node name.
    pub node: String,

    /// QingCloud instance id of the node, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,

    /// Free NICs on the node.
    #[serde(default)]
    pub available: u32,

    /// NICs held by pods on the node.
    #[serde(default)]
    pub bound: u32,

    /// NICs on their way in or out on the node.
    #[serde(default)]
    pub in_progress: u32,

    /// Failed NICs on the node.
    #[serde(default)]
    pub failed: u32,

    /// The node's NIC in each vxnet that pods route through for routes with gateway `0.0.0.0`:
    /// the operator's record (agents read the address from the node's kernel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<NodeGateway>,
}

/// The node's address in one vxnet, replacing `0.0.0.0` in the routes of pods in that vxnet.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGateway {
    /// The vxnet.
    #[schemars(pattern(VXNET_ID_PATTERN))]
    pub vxnet: String,

    /// The node's IPv4 address in the vxnet.
    #[schemars(pattern(IPV4_PATTERN))]
    pub ip: String,

    /// The NIC carrying it: a gateway HostNic the operator created, or a NIC the node already had.
    #[schemars(pattern(MAC_PATTERN))]
    pub nic_id: String,

    /// Name of the gateway HostNic, when the operator created one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnic: Option<String>,
}
