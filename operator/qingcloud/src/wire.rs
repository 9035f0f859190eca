//! Serde types of the QingCloud JSON responses, shared by the client (decode) and the simulator
//! (encode).
//!
//! The API documents every field as optional or nullable, so every field here has a default and
//! `null` decodes like an absent field. Unknown fields are ignored. Strings that may be absent
//! decode to `""`; numbers whose zero would be meaningful (`role`, `total_count`) are `Option`.

use serde::{Deserialize, Deserializer, Serialize};

/// Decodes `null` (and, with `#[serde(default)]`, absence) as `T::default()`.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A QingCloud `ret_code`. A newtype rather than an enum because the API has many codes this
/// project never sees, and they must survive a round trip unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RetCode(pub i32);

impl RetCode {
    /// Success.
    pub const OK: Self = Self(0);
    /// Malformed request: missing required parameter or bad value format.
    pub const MALFORMED: Self = Self(1100);
    /// Unknown action or bad value.
    pub const UNKNOWN_ACTION: Self = Self(1101);
    /// Unknown access key or signature mismatch.
    pub const AUTH_FAILURE: Self = Self(1200);
    /// `time_stamp` too old.
    pub const EXPIRED: Self = Self(1300);
    /// Not allowed, or the resource's state forbids the operation.
    pub const PERMISSION_DENIED: Self = Self(1400);
    /// Resource not found.
    pub const NOT_FOUND: Self = Self(2100);
    /// Resource already exists.
    pub const ALREADY_EXISTS: Self = Self(2110);
    /// Resource quota or API request quota exceeded.
    pub const QUOTA_EXCEEDED: Self = Self(2500);
    /// Internal server error.
    pub const INTERNAL: Self = Self(5000);
    /// Server busy: retry later.
    pub const SERVER_BUSY: Self = Self(5100);
    /// Insufficient backend resources.
    pub const INSUFFICIENT_RESOURCES: Self = Self(5200);
    /// Service being upgraded: retry later.
    pub const UPGRADING: Self = Self(5300);

    /// True for `0`.
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }
}

impl std::fmt::Display for RetCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The actions this crate speaks, as named on the wire (`action=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Create NICs in a vxnet (synchronous).
    CreateNics,
    /// Attach NICs to an instance (job).
    AttachNics,
    /// Detach NICs (job).
    DetachNics,
    /// Delete detached NICs (synchronous).
    DeleteNics,
    /// List NICs.
    DescribeNics,
    /// Rename a NIC or change its IP (synchronous).
    ModifyNicAttributes,
    /// List jobs.
    DescribeJobs,
    /// List vxnets.
    DescribeVxnets,
    /// List instances.
    DescribeInstances,
}

impl Action {
    /// Every action, for dispatch tables and metrics.
    pub const ALL: [Self; 9] = [
        Self::CreateNics,
        Self::AttachNics,
        Self::DetachNics,
        Self::DeleteNics,
        Self::DescribeNics,
        Self::ModifyNicAttributes,
        Self::DescribeJobs,
        Self::DescribeVxnets,
        Self::DescribeInstances,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateNics => "CreateNics",
            Self::AttachNics => "AttachNics",
            Self::DetachNics => "DetachNics",
            Self::DeleteNics => "DeleteNics",
            Self::DescribeNics => "DescribeNics",
            Self::ModifyNicAttributes => "ModifyNicAttributes",
            Self::DescribeJobs => "DescribeJobs",
            Self::DescribeVxnets => "DescribeVxnets",
            Self::DescribeInstances => "DescribeInstances",
        }
    }

    /// Looks an action up by its wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The response envelope: `action`, `ret_code`, `message` plus the action's own fields.
///
/// `ret_code` is an `Option` so a body without it can be detected (the client treats it as a
/// decode failure); the simulator always sets it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// `<Action>Response` on success; may be absent on errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `0` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret_code: Option<RetCode>,
    /// Error text, `"<Name>, <details>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The action's own fields.
    #[serde(flatten)]
    pub body: T,
}

impl<T> Envelope<T> {
    /// A success response for `action` (e.g. `"DescribeNics"`; `Response` is appended).
    pub fn ok(action: &str, body: T) -> Self {
        Self {
            action: Some(format!("{action}Response")),
            ret_code: Some(RetCode::OK),
            message: None,
            body,
        }
    }
}

impl Envelope<Empty> {
    /// An error response.
    pub fn error(code: RetCode, message: impl Into<String>) -> Self {
        Self {
            action: None,
            ret_code: Some(code),
            message: Some(message.into()),
            body: Empty {},
        }
    }
}

/// The body of actions that return nothing but the envelope (DeleteNics, ModifyNicAttributes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// A NIC's `status`. There is no transition status for NICs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NicStatus {
    /// Not attached.
    #[serde(rename = "available")]
    Available,
    /// Attached to an instance.
    #[serde(rename = "in-use")]
    InUse,
    /// Absent, null or a value this client does not know.
    #[default]
    #[serde(other, rename = "unknown")]
    Unknown,
}

/// A job's `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// Queued.
    #[serde(rename = "pending")]
    Pending,
    /// Running.
    #[serde(rename = "working")]
    Working,
    /// Terminal: success.
    #[serde(rename = "successful")]
    Successful,
    /// Terminal: failure.
    #[serde(rename = "failed")]
    Failed,
    /// Terminal: partial failure (the Go SDK wrongly keeps polling on this one).
    #[serde(rename = "done with failure")]
    DoneWithFailure,
    /// Absent, null or a value this client does not know.
    #[default]
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl JobStatus {
    /// The wire text (`"unknown"` for [`JobStatus::Unknown`], which the API never sends).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Working => "working",
            Self::Successful => "successful",
            Self::Failed => "failed",
            Self::DoneWithFailure => "done with failure",
            Self::Unknown => "unknown",
        }
    }

    /// True once the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Successful | Self::Failed | Self::DoneWithFailure
        )
    }
}

/// An instance's `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Being created.
    Pending,
    /// Running: NICs can be attached.
    Running,
    /// Stopped.
    Stopped,
    /// Suspended.
    Suspended,
    /// Terminated.
    Terminated,
    /// Ceased.
    Ceased,
    /// Absent, null or a value this client does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// One element of CreateNics' `nics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedNic {
    /// The NIC id (its MAC).
    #[serde(default, deserialize_with = "null_default")]
    pub nic_id: String,
    /// The private IP; empty when created with `disable_ip=1`.
    #[serde(default, deserialize_with = "null_default")]
    pub private_ip: String,
}

/// CreateNics response body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateNicsResponse {
    /// The NICs created, all `available`.
    #[serde(default, deserialize_with = "null_default")]
    pub nics: Vec<CreatedNic>,
}

/// Response body of asynchronous actions (AttachNics, DetachNics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResponse {
    /// The job tracking the action.
    #[serde(default, deserialize_with = "null_default")]
    pub job_id: String,
}

/// A NIC as DescribeNics returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// The NIC id: its MAC, lowercase, colon separated.
    #[serde(default, deserialize_with = "null_default")]
    pub nic_id: String,
    /// Free-form name.
    #[serde(default, deserialize_with = "null_default")]
    pub nic_name: String,
    /// `available` or `in-use`.
    #[serde(default, deserialize_with = "null_default")]
    pub status: NicStatus,
    /// The instance it is attached to; empty when available.
    #[serde(default, deserialize_with = "null_default")]
    pub instance_id: String,
    /// The vxnet it lives in.
    #[serde(default, deserialize_with = "null_default")]
    pub vxnet_id: String,
    /// Its private IP.
    #[serde(default, deserialize_with = "null_default")]
    pub private_ip: String,
    /// 1 = primary NIC of its instance, 0 = secondary.
    #[serde(default)]
    pub role: Option<u8>,
    /// Index of the NIC on its instance (primary: 0).
    #[serde(default)]
    pub sequence: Option<u32>,
    /// ISO 8601 UTC.
    #[serde(default, deserialize_with = "null_default")]
    pub create_time: String,
    /// ISO 8601 UTC of the last status change.
    #[serde(default, deserialize_with = "null_default")]
    pub status_time: String,
    /// Owning user (`usr-...`).
    #[serde(default, deserialize_with = "null_default")]
    pub owner: String,
    /// Security group id, often empty.
    #[serde(default, deserialize_with = "null_default")]
    pub security_group: String,
    /// Tag objects, kept opaque.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<serde_json::Value>,
}

impl Nic {
    /// The instance the NIC is attached to, if any (`""` and absent both mean none).
    pub fn attached_to(&self) -> Option<&str> {
        Some(self.instance_id.as_str()).filter(|s| !s.is_empty())
    }
}

/// DescribeNics response body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeNicsResponse {
    /// One page of NICs.
    #[serde(default, deserialize_with = "null_default")]
    pub nic_set: Vec<Nic>,
    /// Number of NICs matching the filters, ignoring paging.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// A job as DescribeJobs returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `j-...`.
    #[serde(default, deserialize_with = "null_default")]
    pub job_id: String,
    /// The originating action, e.g. `AttachNics`.
    #[serde(default, deserialize_with = "null_default")]
    pub job_action: String,
    /// Lifecycle state.
    #[serde(default, deserialize_with = "null_default")]
    pub status: JobStatus,
    /// ISO 8601 UTC.
    #[serde(default, deserialize_with = "null_default")]
    pub create_time: String,
    /// ISO 8601 UTC of the last status change.
    #[serde(default, deserialize_with = "null_default")]
    pub status_time: String,
    /// Owning user.
    #[serde(default, deserialize_with = "null_default")]
    pub owner: String,
    /// Ids of the resources involved, separated by spaces.
    #[serde(default, deserialize_with = "null_default")]
    pub resource_ids: String,
    /// A JSON document (as a string) with the job's parameters; `nics` for NIC jobs.
    #[serde(default, deserialize_with = "null_default")]
    pub directive: String,
}

impl Job {
    /// The NIC ids in `directive.nics` (empty when the directive is absent or not JSON).
    pub fn directive_nics(&self) -> Vec<String> {
        #[derive(Deserialize)]
        struct Directive {
            #[serde(default, deserialize_with = "null_default")]
            nics: Vec<String>,
        }
        serde_json::from_str::<Directive>(&self.directive)
            .map(|d| d.nics)
            .unwrap_or_default()
    }
}

/// DescribeJobs response body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeJobsResponse {
    /// One page of jobs.
    #[serde(default, deserialize_with = "null_default")]
    pub job_set: Vec<Job>,
    /// Number of jobs matching the filters, ignoring paging.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// The VPC router of a vxnet: gateway, CIDR and DHCP range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    /// `rtr-...`.
    #[serde(default, deserialize_with = "null_default")]
    pub router_id: String,
    /// Free-form name.
    #[serde(default, deserialize_with = "null_default")]
    pub router_name: String,
    /// The vxnet's gateway address.
    #[serde(default, deserialize_with = "null_default")]
    pub manager_ip: String,
    /// The vxnet's CIDR.
    #[serde(default, deserialize_with = "null_default")]
    pub ip_network: String,
    /// First DHCP address; empty when DHCP is off.
    #[serde(default, deserialize_with = "null_default")]
    pub dyn_ip_start: String,
    /// Last DHCP address; empty when DHCP is off.
    #[serde(default, deserialize_with = "null_default")]
    pub dyn_ip_end: String,
}

/// A vxnet as DescribeVxnets returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxnet {
    /// `vxnet-...`.
    #[serde(default, deserialize_with = "null_default")]
    pub vxnet_id: String,
    /// Free-form name.
    #[serde(default, deserialize_with = "null_default")]
    pub vxnet_name: String,
    /// 0 unmanaged, 1 managed, 2 basic network.
    #[serde(default)]
    pub vxnet_type: Option<u8>,
    /// Zone id.
    #[serde(default, deserialize_with = "null_default")]
    pub zone_id: String,
    /// ISO 8601 UTC.
    #[serde(default, deserialize_with = "null_default")]
    pub create_time: String,
    /// Free-form description.
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
    /// Owning user.
    #[serde(default, deserialize_with = "null_default")]
    pub owner: String,
    /// Router id when in a VPC.
    #[serde(default, deserialize_with = "null_default")]
    pub vpc_router_id: String,
    /// Free addresses left.
    #[serde(default)]
    pub available_ip_count: Option<u32>,
    /// Instances in the vxnet (only with `verbose=1`).
    #[serde(default, deserialize_with = "null_default")]
    pub instance_ids: Vec<String>,
    /// e.g. `vlan`; newer API only.
    #[serde(default, deserialize_with = "null_default")]
    pub tunnel_type: String,
    /// `None` when the vxnet is not in a VPC (unusable for pod NICs).
    #[serde(default)]
    pub router: Option<Router>,
}

/// DescribeVxnets response body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeVxnetsResponse {
    /// One page of vxnets.
    #[serde(default, deserialize_with = "null_default")]
    pub vxnet_set: Vec<Vxnet>,
    /// Number of vxnets matching the filters, ignoring paging.
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// One NIC of an instance as DescribeInstances lists it under `vxnets`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceVxnet {
    /// `vxnet-...`.
    #[serde(default, deserialize_with = "null_default")]
    pub vxnet_id: String,
    /// Free-form name.
    #[serde(default, deserialize_with = "null_default")]
    pub vxnet_name: String,
    /// 0 unmanaged, 1 managed, 2 basic network.
    #[serde(default)]
    pub vxnet_type: Option<u8>,
    /// The NIC's id (MAC).
    #[serde(default, deserialize_with = "null_default")]
    pub nic_id: String,
    /// The NIC's private IP.
    #[serde(default, deserialize_with = "null_default")]
    pub private_ip: String,
    /// 1 = primary NIC.
    #[serde(default)]
    pub role: Option<u8>,
}

/// An instance as DescribeInstances returns it (NIC-relevant subset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `i-...`.
    #[serde(default, deserialize_with = "null_default")]
    pub instance_id: String,
    /// Free-form name.
    #[serde(default, deserialize_with = "null_default")]
    pub instance_name: String,
    /// Lifecycle state.
    #[serde(default, deserialize_with = "null_default")]
    pub status: InstanceStatus,
    /// `""` or e.g. `starting`, `stopping`.
    #[serde(default, deserialize_with = "null_default")]
    pub transition_status: String,
    /// Zone id.
    #[serde(default, deserialize_with = "null_default")]
    pub zone_id: String,
    /// One entry per attached NIC.
    #[serde(default, deserialize_with = "null_default")]
    pub vxnets: Vec<InstanceVxnet>,
}

/// DescribeInstances response body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeInstancesResponse {
    /// One page of instances.
    #[serde(default, deserialize_with = "null_default")]
    pub instance_set: Vec<Instance>,
    /// Number of instances matching the filters, ignoring paging.
    #[serde(default)]
    pub total_count: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_reference_nic_shape() {
        let body = r#"{"action":"DescribeNicsResponse","ret_code":0,"total_count":1,"nic_set":[{"nic_id":"52:54:9a:1b:2c:3d",
 "nic_name":"hostnic_i-abcd1234","status":"in-use","instance_id":"i-abcd1234","vxnet_id":"vxnet-abc1234",
 "private_ip":"172.22.0.9","role":0,"sequence":2,"owner":"usr-abcd1234","security_group":"","tags":[],
 "create_time":"2024-05-01T08:09:10Z","status_time":"2024-05-01T08:09:40Z"}]}"#;
        let env: Envelope<DescribeNicsResponse> = serde_json::from_str(body).unwrap();
        assert_eq!(env.ret_code, Some(RetCode::OK));
        assert_eq!(env.body.total_count, Some(1));
        let nic = &env.body.nic_set[0];
        assert_eq!(nic.status, NicStatus::InUse);
        assert_eq!(nic.attached_to(), Some("i-abcd1234"));
        assert_eq!(nic.role, Some(0));
        assert_eq!(nic.sequence, Some(2));
    }

    #[test]
    fn tolerates_nulls_absences_and_unknown_values() {
        let body = r#"{"ret_code":0,"nic_set":[{"nic_id":"52:54:00:00:00:01","status":"weird",
            "instance_id":null,"tags":null,"role":null,"extra":{"x":1}}],"total_count":null}"#;
        let env: Envelope<DescribeNicsResponse> = serde_json::from_str(body).unwrap();
        let nic = &env.body.nic_set[0];
        assert_eq!(nic.status, NicStatus::Unknown);
        assert_eq!(nic.attached_to(), None);
        assert!(nic.tags.is_empty());
        assert_eq!(nic.role, None);
        assert_eq!(env.body.total_count, None);

        let env: Envelope<DescribeNicsResponse> =
            serde_json::from_str(r#"{"ret_code":0,"nic_set":null}"#).unwrap();
        assert!(env.body.nic_set.is_empty());
    }

    #[test]
    fn decodes_error_envelope_without_action() {
        let env: Envelope<JobResponse> =
            serde_json::from_str(r#"{"ret_code":2100,"message":"ResourceNotFound, x"}"#).unwrap();
        assert_eq!(env.ret_code, Some(RetCode::NOT_FOUND));
        assert_eq!(env.message.as_deref(), Some("ResourceNotFound, x"));
        assert_eq!(env.body.job_id, "");
    }

    #[test]
    fn missing_ret_code_is_visible() {
        let env: Envelope<Empty> = serde_json::from_str(r#"{"action":"X"}"#).unwrap();
        assert_eq!(env.ret_code, None);
    }

    #[test]
    fn job_status_round_trips_including_done_with_failure() {
        for s in [
            JobStatus::Pending,
            JobStatus::Working,
            JobStatus::Successful,
            JobStatus::Failed,
            JobStatus::DoneWithFailure,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<JobStatus>(&json).unwrap(), s);
        }
        assert_eq!(
            serde_json::to_string(&JobStatus::DoneWithFailure).unwrap(),
            r#""done with failure""#
        );
        assert!(JobStatus::DoneWithFailure.is_terminal());
        for s in [
            JobStatus::Pending,
            JobStatus::DoneWithFailure,
            JobStatus::Unknown,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!(!JobStatus::Working.is_terminal());
    }

    #[test]
    fn simulator_style_serialization_round_trips() {
        let env = Envelope::ok(
            "DescribeVxnets",
            DescribeVxnetsResponse {
                vxnet_set: vec![Vxnet {
                    vxnet_id: "vxnet-abc1234".into(),
                    router: Some(Router {
                        manager_ip: "172.22.0.1".into(),
                        ip_network: "172.22.0.0/24".into(),
                        ..Router::default()
                    }),
                    ..Vxnet::default()
                }],
                total_count: Some(1),
            },
        );
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.contains(r#""action":"DescribeVxnetsResponse""#));
        assert!(json.contains(r#""ret_code":0"#));
        assert!(!json.contains("message"));
        let back: Envelope<DescribeVxnetsResponse> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);

        let err =
            serde_json::to_string(&Envelope::error(RetCode::SERVER_BUSY, "ServerBusy")).unwrap();
        assert_eq!(err, r#"{"ret_code":5100,"message":"ServerBusy"}"#);
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.as_str()), Some(a));
        }
        assert_eq!(Action::from_name("RunInstances"), None);
    }

    #[test]
    fn directive_nics_parses_embedded_json() {
        let job = Job {
            directive: r#"{"nics": ["52:54:9a:1b:2c:3d"], "instance": "i-abcd1234"}"#.into(),
            ..Job::default()
        };
        assert_eq!(job.directive_nics(), vec!["52:54:9a:1b:2c:3d".to_string()]);
        assert!(Job::default().directive_nics().is_empty());
    }
}
