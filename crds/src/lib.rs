//! The hostnic custom resources, `NicPool` and `HostNic`, as Rust types.
//!
//! The CRD YAML under `crds/` is generated from these types (`cargo run -p hostnic-crds
//! --bin crdgen -- crds`) and a test fails when the committed files are stale, so the doc
//! comments here are what `kubectl explain` prints.

mod formats;
pub mod hostnic;
pub mod names;
pub mod nicpool;

mod render;

pub use hostnic::{CloudJob, HostNic, HostNicPhase, HostNicSpec, HostNicStatus, NicRole, PodRef};
pub use nicpool::{
    NicPool, NicPoolSpec, NicPoolStatus, NodeGateway, NodePoolStatus, ReclaimPolicy, Route,
};
pub use render::{CrdFile, crd_files, hostnic_crd, nicpool_crd};

/// API group of every hostnic resource.
pub const GROUP: &str = "hostnic.qingcloud.com";

/// Finalizer the operator puts on HostNics so a cloud NIC is never orphaned by a delete.
pub const NIC_FINALIZER: &str = "hostnic.qingcloud.com/nic";

/// Finalizer the operator puts on NicPools so their reclaim policy is applied before they go.
pub const POOL_FINALIZER: &str = "hostnic.qingcloud.com/pool";

/// Label on a HostNic naming its node (value: [`names::label_value`] of the node name); the
/// agent watches with this selector.
pub const NODE_LABEL: &str = "hostnic.qingcloud.com/node";

/// Label on a HostNic naming its NicPool (value: [`names::label_value`] of the pool name).
pub const POOL_LABEL: &str = "hostnic.qingcloud.com/pool";

/// Label on a HostNic naming its vxnet.
pub const VXNET_LABEL: &str = "hostnic.qingcloud.com/vxnet";

/// Label on a HostNic telling a pod NIC from a gateway NIC.
pub const ROLE_LABEL: &str = "hostnic.qingcloud.com/role";

/// Category of both CRDs: `kubectl get hostnic-all` lists NicPools and HostNics. It must not
/// be a resource's name: kubectl expands a category before it looks up a resource, so a
/// category `hostnic` turned `kubectl get hostnic NAME` into a get of every kind in it.
pub const CATEGORY: &str = "hostnic-all";

/// Label on a HostNic naming its create batch (a UUID): the HostNics a pool pass adds in one
/// vxnet share one CreateNics, whose NICs are all named `hostnic-<cluster>-<batch>` and are
/// handed to the members in a fixed order, so a crash anywhere is recovered by name.
pub const CREATE_BATCH_LABEL: &str = "hostnic.qingcloud.com/create-batch";

/// Annotation on a HostNic with its create batch's size (how many NICs the batch creates).
pub const CREATE_BATCH_SIZE_ANNOTATION: &str = "hostnic.qingcloud.com/create-batch-size";

/// Pod annotation choosing the NicPool a pod's NIC comes from.
pub const POD_POOL_ANNOTATION: &str = "hostnic.qingcloud.com/pool";

/// NicPool annotation (value `"true"`) marking the pool used by pods that name none.
pub const DEFAULT_POOL_ANNOTATION: &str = "hostnic.qingcloud.com/is-default-pool";

/// Prefix of the NicPool annotation a node-agent sets, as [`waiting_annotation`], while an ADD
/// on that node waits for one of the pool's NICs to arrive; its value is when the wait began
/// (RFC 3339). The agent removes it when no ADD waits any more: a refill that is urgent.
pub const WAITING_ANNOTATION_PREFIX: &str = "waiting.hostnic.qingcloud.com/";

/// The waiting annotation's key for `node`: the prefix and the node's label value (an
/// annotation key's name part is limited to 63 bytes, like a label value).
pub fn waiting_annotation(node: &str) -> String {
    format!("{WAITING_ANNOTATION_PREFIX}{}", names::label_value(node))
}

/// Condition type the agent owns on HostNics: the NIC's link is (or is not) on the node.
pub const LINK_READY: &str = "LinkReady";

/// Reason of `LinkReady=False`: no link with the NIC's MAC is on the node.
pub const LINK_MISSING: &str = "LinkMissing";

/// Reason of `LinkReady=False` while the link is in its pod (set by the claim).
pub const LINK_IN_POD: &str = "InPod";

/// Reason of `LinkReady=True`: the link is on the node.
pub const LINK_PRESENT: &str = "LinkPresent";

/// Most secondary NICs a QingCloud VM can hold (64 NICs including the primary).
pub const MAX_NICS_PER_INSTANCE: u32 = 63;

/// Pattern of a QingCloud vxnet id.
pub const VXNET_ID_PATTERN: &str = "^vxnet-[a-z0-9]+$";

/// Pattern of a NIC id: QingCloud uses the lowercase MAC address.
pub const MAC_PATTERN: &str = "^([0-9a-f]{2}:){5}[0-9a-f]{2}$";

/// Pattern of an IPv4 address.
pub const IPV4_PATTERN: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$";

/// Pattern of an IPv4 CIDR.
pub const IPV4_CIDR_PATTERN: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$";
