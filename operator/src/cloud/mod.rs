//! The cloud as the operator sees it: a small `CloudApi` trait over the QingCloud calls the
//! operator makes, so reconcile logic runs unchanged against the real client, the simulator
//! (through the real client) or an in-process fake that injects errors.

pub mod batch;
pub mod fake;
pub mod gate;
pub mod metered;
pub mod qingcloud;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use tokio::sync::Notify;

/// Scheduling class of a cloud call on the shared, prioritised rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Refills for nodes whose pods are waiting (no free NIC left).
    Urgent,
    /// Ordinary refills and lifecycle progress.
    Refill,
    /// Shrinking, deletion and garbage collection.
    Background,
}

/// Whether a cloud NIC is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicState {
    /// Not attached to any instance.
    Available,
    /// Attached to `Nic::instance`.
    InUse,
}

/// A cloud NIC.
#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    /// NIC id (the MAC).
    pub id: String,
    /// `nic_name`.
    pub name: String,
    /// Attachment state.
    pub state: NicState,
    /// Instance the NIC is attached to.
    pub instance: Option<String>,
    /// Vxnet of the NIC.
    pub vxnet: String,
    /// Private IPv4 address.
    pub private_ip: Option<String>,
    /// Creation time, when the cloud reports it.
    pub created: Option<Timestamp>,
}

/// A NIC CreateNics returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedNic {
    /// NIC id (the MAC).
    pub id: String,
    /// Private IPv4 address.
    pub private_ip: Option<String>,
}

/// A vxnet and what the operator needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxnet {
    /// Vxnet id.
    pub id: String,
    /// Free addresses left.
    pub available_ips: u32,
    /// CIDR of the vxnet (its VPC router's ip_network).
    pub cidr: Option<String>,
    /// Gateway address (the router's manager_ip).
    pub gateway: Option<String>,
}

/// A NIC attached to an instance, as DescribeInstances lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNic {
    /// NIC id.
    pub nic_id: String,
    /// Vxnet of the NIC.
    pub vxnet: String,
    /// Private IPv4 address.
    pub private_ip: Option<String>,
    /// Whether this is the instance's primary NIC.
    pub primary: bool,
}

/// A VM instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// Whether the instance is running (AttachNics needs that).
    pub running: bool,
    /// Every NIC attached to it, the primary included.
    pub nics: Vec<InstanceNic>,
}

impl Instance {
    /// Secondary NICs attached.
    pub fn secondary_nics(&self) -> u32 {
        u32::try_from(self.nics.iter().filter(|n| !n.primary).count()).unwrap_or(u32::MAX)
    }
}

/// State of an asynchronous job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Queued or running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// `failed` or `done with failure`.
    Failed,
}

impl JobState {
    /// The wire word recorded in HostNic.status.lastJob.status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "working",
            Self::Succeeded => "successful",
            Self::Failed => "failed",
        }
    }
}

/// An asynchronous job (AttachNics, DetachNics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// Originating action.
    pub action: String,
    /// State.
    pub state: JobState,
    /// NIC ids the job works on.
    pub nics: Vec<String>,
    /// When the job was created.
    pub created: Option<Timestamp>,
}

/// Which NICs DescribeNics should return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicQuery {
    /// These ids (any number; the client pages).
    Ids(Vec<String>),
    /// NICs with exactly this nic_name.
    Name(String),
    /// Every NIC in these vxnets (any number; the client chunks the filter and pages).
    Vxnets(Vec<String>),
    /// Every NIC of the account: pages through all of them, so only for one-off checks.
    All,
}

/// How the operator treats a failed cloud call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudErrorKind {
    /// Rate limit or server busy (2500 about the API request quota, 5100, HTTP 429): back
    /// off, retry later.
    Throttled,
    /// A resource quota of the account (2500 about the NIC count): slowing down does not
    /// help; the pool stops growing until the quota is raised or NICs are freed.
    QuotaExceeded,
    /// Transport failure or transient server error (5000, 5300, HTTP, timeout): retry.
    Transient,
    /// The resource does not exist (2100).
    NotFound,
    /// Refused because of a state or permission (1400).
    Refused,
    /// Not enough capacity (5200, exhausted vxnet or instance).
    Capacity,
    /// Anything else: a bad request or bad credentials; retrying does not help.
    Permanent,
}

/// A failed cloud call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action}: {kind:?} ({}): {message}", ret_code_text(*.code))]
pub struct CloudError {
    /// The action that failed.
    pub action: &'static str,
    /// Its class.
    pub kind: CloudErrorKind,
    /// QingCloud ret_code, when the API answered.
    pub code: Option<i64>,
    /// Message from the API or the transport.
    pub message: String,
}

/// `ret_code N` as users read it in events and conditions, or that the API gave none.
fn ret_code_text(code: Option<i64>) -> String {
    code.map_or_else(|| "no ret_code".into(), |c| format!("ret_code {c}"))
}

impl CloudError {
    /// Builds an error from a QingCloud ret_code (and, for 2500, its message: the API uses
    /// one code for the request quota and for resource quotas).
    pub fn from_code(action: &'static str, code: i64, message: impl Into<String>) -> Self {
        let message = message.into();
        let kind = match code {
            2500 if ::qingcloud::error::is_request_quota_message(&message) => {
                CloudErrorKind::Throttled
            }
            2500 => CloudErrorKind::QuotaExceeded,
            5100 => CloudErrorKind::Throttled,
            5000 | 5300 => CloudErrorKind::Transient,
            2100 => CloudErrorKind::NotFound,
            1400 => CloudErrorKind::Refused,
            5200 => CloudErrorKind::Capacity,
            _ => CloudErrorKind::Permanent,
        };
        Self {
            action,
            kind,
            code: Some(code),
            message,
        }
    }

    /// A transport-level failure (no ret_code).
    pub fn transient(action: &'static str, message: impl Into<String>) -> Self {
        Self {
            action,
            kind: CloudErrorKind::Transient,
            code: None,
            message: message.into(),
        }
    }

    /// Whether the resource was not found (2100): on detach/delete that means already gone.
    pub fn is_not_found(&self) -> bool {
        self.kind == CloudErrorKind::NotFound
    }

    /// Whether the call may have taken effect without us knowing (the answer was lost).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.kind, CloudErrorKind::Transient) && self.code.is_none()
    }
}

/// Result of a cloud call.
pub type CloudResult<T> = std::result::Result<T, CloudError>;

/// The QingCloud calls the operator makes. Implementations page Describe calls themselves.
pub trait CloudApi: Send + Sync + fmt::Debug {
    /// DescribeNics.
    fn describe_nics(
        &self,
        query: NicQuery,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Nic>>>;
    /// CreateNics: `count` new NICs in `vxnet`, all named `name` (a create batch's name).
    fn create_nics(
        &self,
        vxnet: String,
        name: String,
        count: u32,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<CreatedNic>>>;
    /// AttachNics: returns the job id.
    fn attach_nics(
        &self,
        instance: String,
        nics: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<String>>;
    /// DetachNics: returns the job id.
    fn detach_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<String>>;
    /// DeleteNics.
    fn delete_nics(&self, nics: Vec<String>, prio: Priority) -> BoxFuture<'_, CloudResult<()>>;
    /// ModifyNicAttributes nic_name.
    fn rename_nic(
        &self,
        nic: String,
        name: String,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<()>>;
    /// DescribeJobs by id.
    fn describe_jobs(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Job>>>;
    /// Jobs still pending or working (for GC: never delete a NIC a job still works on), asked
    /// of the API by status so the account's job history is never paged through.
    fn running_jobs(&self, prio: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>>;
    /// DescribeVxnets.
    fn describe_vxnets(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Vxnet>>>;
    /// DescribeInstances.
    fn describe_instances(
        &self,
        ids: Vec<String>,
        prio: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Instance>>>;
    /// Notified whenever a call with side effects (CreateNics, DeleteNics) ended without a
    /// known outcome, so GC looks for what it may have left behind; `None` when this layer
    /// does not watch for that. No default: a wrapper that forgot to forward it would
    /// silently keep GC from ever hearing of a lost answer.
    fn lost_answers(&self) -> Option<Arc<Notify>>;
}
