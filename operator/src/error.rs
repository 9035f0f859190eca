//! The operator's one error type, its classes (how `error_policy` backs off) and metric labels.

use crate::cloud::{CloudError, CloudErrorKind};

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes {context}: {source}")]
    Kube {
        /// What was being done.
        context: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A cloud call failed.
    #[error("cloud: {0}")]
    Cloud(#[from] CloudError),
    /// The object's spec cannot be acted on.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// Cleanup must wait for something outside the operator (a pod to release its NIC).
    #[error("waiting: {0}")]
    Waiting(&'static str),
    /// Cleanup waits for a report that wakes it, polling only after the given time.
    #[error("waiting: {0}")]
    WaitingFor(&'static str, std::time::Duration),
    /// The cloud refused to put a NIC on this instance for a reason about the instance itself
    /// (stopped VM, another VPC, no free NIC slot, unknown instance): no NIC of it can help,
    /// so the pool reports it instead of retrying NIC by NIC.
    #[error("instance {instance} refused: {source}")]
    InstanceRefused {
        /// The instance.
        instance: String,
        /// The refusal.
        #[source]
        source: CloudError,
    },
    /// An attach or detach job ended in failure: retried under the object's back-off, so a
    /// job that keeps failing does not loop at job speed.
    #[error("{action} job {job} failed")]
    JobFailed {
        /// AttachNics or DetachNics.
        action: &'static str,
        /// The job id.
        job: String,
    },
    /// The finalizer helper failed; boxed because it wraps this very type.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The cloud asked us to slow down.
    Throttled,
    /// Worth retrying soon (network, 5xx, a 409 conflict).
    Transient,
    /// Retrying will not help until the spec changes.
    BadSpec,
    /// The instance refuses NICs until something about it changes (started, slot freed).
    Refused,
    /// Waiting on someone else.
    Waiting,
}

impl Error {
    /// Wraps a kube error with what was being done.
    pub fn kube(context: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { context, source }
    }

    /// Whether this is an optimistic-concurrency conflict (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self.reconcile_error(),
            Self::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409
        )
    }

    /// The reconcile's own error: the one inside a finalizer error, if that is where it failed.
    pub fn reconcile_error(&self) -> &Error {
        match self {
            Self::Finalizer(f) => f.source_error().map_or(self, Error::reconcile_error),
            _ => self,
        }
    }

    /// The class deciding the back-off.
    pub fn class(&self) -> ErrorClass {
        match self.reconcile_error() {
            Self::Kube { .. } => ErrorClass::Transient,
            Self::Cloud(e) => match e.kind {
                CloudErrorKind::Throttled => ErrorClass::Throttled,
                // Only someone raising the quota or freeing NICs helps: look again rarely.
                CloudErrorKind::Permanent | CloudErrorKind::QuotaExceeded => ErrorClass::BadSpec,
                _ => ErrorClass::Transient,
            },
            Self::InvalidSpec(_) => ErrorClass::BadSpec,
            Self::Waiting(_) | Self::WaitingFor(..) => ErrorClass::Waiting,
            Self::InstanceRefused { .. } => ErrorClass::Refused,
            // The finalizer itself failed (its own patch), not the reconcile inside it.
            Self::JobFailed { .. } | Self::Finalizer(_) => ErrorClass::Transient,
        }
    }

    /// Label of the `failures` metric.
    pub fn metric_label(&self) -> &'static str {
        match self.reconcile_error() {
            e @ Self::Kube { .. } if e.is_conflict() => "conflict",
            Self::Kube { .. } => "kube",
            Self::Cloud(e) => match e.kind {
                CloudErrorKind::Throttled => "cloud_throttled",
                CloudErrorKind::QuotaExceeded => "cloud_quota_exceeded",
                CloudErrorKind::Transient => "cloud_transient",
                CloudErrorKind::NotFound => "cloud_not_found",
                CloudErrorKind::Refused => "cloud_refused",
                CloudErrorKind::Capacity => "cloud_capacity",
                CloudErrorKind::Permanent => "cloud_permanent",
            },
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Waiting(_) | Self::WaitingFor(..) => "waiting",
            Self::InstanceRefused { .. } => "instance_refused",
            Self::JobFailed { .. } => "job_failed",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// The reconcile error inside a finalizer error, if that is where it failed.
trait SourceError {
    fn source_error(&self) -> Option<&Error>;
}

impl SourceError for kube::runtime::finalizer::Error<Error> {
    fn source_error(&self) -> Option<&Error> {
        use kube::runtime::finalizer::Error as F;
        match self {
            F::ApplyFailed(e) | F::CleanupFailed(e) => Some(e),
            _ => None,
        }
    }
}
