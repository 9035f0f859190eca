//! The simulator's own reading of the QingCloud wire format (`shared/reference/qingcloud-api.md`
//! §4-§5): response envelopes, resource shapes, status strings and ret codes, written apart
//! from the client crate so a field-name or encoding mistake on one side is caught by the other.
//!
//! Only the server's direction matters here: every type serializes exactly what the real API
//! sends. The inspection API (`/admin/*`, [`crate::SimHandle`]) reuses the same shapes, hence the
//! `Deserialize` derives.

use serde::{Deserialize, Serialize};

/// A `ret_code` (§4 table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RetCode(pub i32);

impl RetCode {
    /// Success.
    pub const OK: Self = Self(0);
    /// Missing required parameter or bad value format.
    pub const MALFORMED: Self = Self(1100);
    /// Unknown action.
    pub const UNKNOWN_ACTION: Self = Self(1101);
    /// Unknown access key or signature mismatch.
    pub const AUTH_FAILURE: Self = Self(1200);
    /// `time_stamp` too old.
    pub const EXPIRED: Self = Self(1300);
    /// Not allowed in the resource's state.
    pub const PERMISSION_DENIED: Self = Self(1400);
    /// No such resource.
    pub const NOT_FOUND: Self = Self(2100);
    /// Resource quota or API request quota exceeded.
    pub const QUOTA_EXCEEDED: Self = Self(2500);
    /// Internal error.
    pub const INTERNAL: Self = Self(5000);
}

impl std::fmt::Display for RetCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `{"action":"<Action>Response","ret_code":0, ...fields}` around a success body.
#[derive(Serialize)]
struct Success<'a, T> {
    action: String,
    ret_code: RetCode,
    #[serde(flatten)]
    body: &'a T,
}

/// `{"ret_code":n,"message":"<Name>, <details>"}`: errors carry no `action`.
#[derive(Serialize)]
struct Failure<'a> {
    ret_code: RetCode,
    message: &'a str,
}

/// The JSON text of a success response to `action`.
pub fn success<T: Serialize>(action: &str, body: &T) -> serde_json::Result<String> {
    serde_json::to_string(&Success {
        action: format!("{action}Response"),
        ret_code: RetCode::OK,
        body,
    })
}

/// The JSON text of an error response.
pub fn failure(code: RetCode, message: &str) -> String {
    // Two plain fields cannot fail to serialize; the fallback keeps the code regardless.
    serde_json::to_string(&Failure {
        ret_code: code,
        message,
    })
    .unwrap_or_else(|_| format!(r#"{{"ret_code":{code}}}"#))
}

/// A NIC's `status`: the API has exactly these two, no transition status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NicStatus {
    /// `available`: not attached.
    #[serde(rename = "available")]
    Available,
    /// `in-use`: attached.
    #[serde(rename = "in-use")]
    InUse,
}

impl NicStatus {
    /// The DescribeNics `status` filter value, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(Self::Available),
            "in-use" => Some(Self::InUse),
            _ => None,
        }
    }
}

/// A job's `status` (§6 lifecycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// `pending`: queued.
    #[serde(rename = "pending")]
    Pending,
    /// `working`: running.
    #[serde(rename = "working")]
    Working,
    /// `successful`: terminal.
    #[serde(rename = "successful")]
    Successful,
    /// `failed`: terminal.
    #[serde(rename = "failed")]
    Failed,
    /// `done with failure`: terminal, partly applied.
    #[serde(rename = "done with failure")]
    DoneWithFailure,
}

impl JobStatus {
    /// The DescribeJobs `status.N` filter value, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Working,
            Self::Successful,
            Self::Failed,
            Self::DoneWithFailure,
        ]
        .into_iter()
        .find(|st| st.text() == s)
    }

    fn text(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Working => "working",
            Self::Successful => "successful",
            Self::Failed => "failed",
            Self::DoneWithFailure => "done with failure",
        }
    }
}

/// An instance's `status` (§5 DescribeInstances).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Being created.
    Pending,
    /// Running: the only state NICs attach to.
    Running,
    /// Stopped.
    Stopped,
    /// Suspended (billing).
    Suspended,
    /// Terminated.
    Terminated,
    /// Ceased.
    Ceased,
}

impl InstanceStatus {
    /// The DescribeInstances `status.N` filter value, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// One element of CreateNics' `nics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedNic {
    /// The MAC.
    pub nic_id: String,
    /// Empty with `disable_ip=1`.
    pub private_ip: String,
}

/// CreateNics body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateNics {
    /// The new NICs, all `available`.
    pub nics: Vec<CreatedNic>,
}

/// AttachNics and DetachNics body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobStarted {
    /// The job tracking the action.
    pub job_id: String,
}

/// Body of actions answering with the envelope only (DeleteNics, ModifyNicAttributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NoFields {}

/// A `*_set` page of a Describe* action: the set under its own key plus `total_count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing<T> {
    /// `nic_set`, `job_set`, `vxnet_set` or `instance_set`.
    #[serde(flatten)]
    pub set: T,
    /// Rows matching the filters, ignoring paging.
    pub total_count: u64,
}

/// DescribeNics' set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicSet {
    /// One page.
    pub nic_set: Vec<Nic>,
}

/// DescribeJobs' set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobSet {
    /// One page.
    pub job_set: Vec<Job>,
}

/// DescribeVxnets' set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VxnetSet {
    /// One page.
    pub vxnet_set: Vec<Vxnet>,
}

/// DescribeInstances' (and DescribeVxnetInstances') set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceSet<T> {
    /// One page.
    pub instance_set: Vec<T>,
}

/// A NIC row of DescribeNics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Its MAC, lowercase, colon separated.
    pub nic_id: String,
    /// Free-form name.
    pub nic_name: String,
    /// `available` or `in-use`.
    pub status: NicStatus,
    /// The attached instance; `""` when available.
    pub instance_id: String,
    /// Its vxnet.
    pub vxnet_id: String,
    /// Its address; `""` when created without one.
    pub private_ip: String,
    /// 1 primary, 0 secondary. Always sent; an `Option` only so inspection code reads like
    /// client code (`role == Some(1)`).
    pub role: Option<u8>,
    /// Index on its instance (always sent).
    pub sequence: Option<u32>,
    /// ISO 8601 UTC.
    pub create_time: String,
    /// ISO 8601 UTC of the last status change.
    pub status_time: String,
    /// `usr-...`.
    pub owner: String,
    /// Security group id; the simulator has none.
    pub security_group: String,
    /// Tag objects; the simulator has none.
    pub tags: Vec<serde_json::Value>,
}

impl Nic {
    /// The instance it is attached to (`instance_id`, `None` when empty).
    pub fn attached_to(&self) -> Option<&str> {
        (!self.instance_id.is_empty()).then_some(self.instance_id.as_str())
    }
}

/// A job row of DescribeJobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `j-...`.
    pub job_id: String,
    /// The action that started it.
    pub job_action: String,
    /// Lifecycle state.
    pub status: JobStatus,
    /// ISO 8601 UTC.
    pub create_time: String,
    /// ISO 8601 UTC of the last status change.
    pub status_time: String,
    /// `usr-...`.
    pub owner: String,
    /// Resource ids, space separated.
    pub resource_ids: String,
    /// JSON text; `nics` lists the NICs of a NIC job.
    pub directive: String,
}

/// The VPC router block of a vxnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    /// `rtr-...`.
    pub router_id: String,
    /// Free-form name.
    pub router_name: String,
    /// The gateway address of the vxnet.
    pub manager_ip: String,
    /// The vxnet's CIDR.
    pub ip_network: String,
    /// First DHCP address; `""` with DHCP off.
    pub dyn_ip_start: String,
    /// Last DHCP address; `""` with DHCP off.
    pub dyn_ip_end: String,
}

/// A vxnet row of DescribeVxnets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxnet {
    /// `vxnet-...`.
    pub vxnet_id: String,
    /// Free-form name.
    pub vxnet_name: String,
    /// 0 unmanaged, 1 managed.
    pub vxnet_type: u8,
    /// Zone id.
    pub zone_id: String,
    /// ISO 8601 UTC.
    pub create_time: String,
    /// Free-form description.
    pub description: String,
    /// `usr-...`.
    pub owner: String,
    /// The router's id; `""` outside a VPC.
    pub vpc_router_id: String,
    /// Free addresses; left out (not `null`) where the API does not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_ip_count: Option<u32>,
    /// Instances in the vxnet (`verbose=1` only, else empty).
    pub instance_ids: Vec<String>,
    /// e.g. `vxlan`.
    pub tunnel_type: String,
    /// `null` outside a VPC.
    pub router: Option<Router>,
}

/// One NIC of an instance under DescribeInstances' `vxnets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceVxnet {
    /// `vxnet-...`.
    pub vxnet_id: String,
    /// Free-form name.
    pub vxnet_name: String,
    /// 0 unmanaged, 1 managed.
    pub vxnet_type: u8,
    /// The NIC's MAC.
    pub nic_id: String,
    /// The NIC's address.
    pub private_ip: String,
    /// 1 primary.
    pub role: u8,
}

/// An instance row of DescribeInstances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `i-...`.
    pub instance_id: String,
    /// Free-form name.
    pub instance_name: String,
    /// Lifecycle state.
    pub status: InstanceStatus,
    /// `""` when no transition runs.
    pub transition_status: String,
    /// Zone id.
    pub zone_id: String,
    /// One entry per attached NIC.
    pub vxnets: Vec<InstanceVxnet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_match_the_reference_shapes() {
        let ok = success(
            "AttachNics",
            &JobStarted {
                job_id: "j-abcd1234".into(),
            },
        )
        .unwrap();
        assert_eq!(
            ok,
            r#"{"action":"AttachNicsResponse","ret_code":0,"job_id":"j-abcd1234"}"#
        );
        assert_eq!(
            success("DeleteNics", &NoFields {}).unwrap(),
            r#"{"action":"DeleteNicsResponse","ret_code":0}"#
        );
        assert_eq!(
            failure(RetCode::NOT_FOUND, "ResourceNotFound, x"),
            r#"{"ret_code":2100,"message":"ResourceNotFound, x"}"#
        );
    }

    #[test]
    fn status_strings_are_the_references() {
        fn text<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap()
        }
        assert_eq!(text(&NicStatus::InUse), r#""in-use""#);
        assert_eq!(text(&NicStatus::Available), r#""available""#);
        assert_eq!(text(&JobStatus::DoneWithFailure), r#""done with failure""#);
        assert_eq!(text(&InstanceStatus::Suspended), r#""suspended""#);
        for s in [
            "pending",
            "working",
            "successful",
            "failed",
            "done with failure",
        ] {
            let st = JobStatus::parse(s).unwrap();
            assert_eq!(text(&st), format!("\"{s}\""));
        }
        assert_eq!(JobStatus::parse("done"), None);
        assert_eq!(NicStatus::parse("in_use"), None);
        assert_eq!(
            InstanceStatus::parse("running"),
            Some(InstanceStatus::Running)
        );
        assert_eq!(InstanceStatus::parse("unknown"), None);
    }

    #[test]
    fn listing_flattens_the_set_and_omits_unknown_ip_counts() {
        let v = Vxnet {
            vxnet_id: "vxnet-abc1234".into(),
            vxnet_name: String::new(),
            vxnet_type: 0,
            zone_id: "pek3a".into(),
            create_time: String::new(),
            description: String::new(),
            owner: String::new(),
            vpc_router_id: String::new(),
            available_ip_count: None,
            instance_ids: Vec::new(),
            tunnel_type: String::new(),
            router: None,
        };
        let json = success(
            "DescribeVxnets",
            &Listing {
                set: VxnetSet { vxnet_set: vec![v] },
                total_count: 1,
            },
        )
        .unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["total_count"], 1);
        assert_eq!(back["vxnet_set"][0]["router"], serde_json::Value::Null);
        assert!(back["vxnet_set"][0].get("available_ip_count").is_none());
    }
}
