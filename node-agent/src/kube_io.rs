//! The agent's Kubernetes calls: HostNic status writes (optimistic, by resourceVersion), pod
//! lookups and events on HostNics, NicPools and pods. Every verb the agent uses is here, which
//! keeps RBAC honest.

use std::time::Duration;

use hostnic_crds::{HostNic, NicPool};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};

use crate::{Error, Result};

/// Whether a failed API call is worth retrying as it is: the server shedding load (429, API
/// Priority and Fairness), failing or restarting (5xx), or not reached or not answering in
/// time (connection errors and timeouts from the client stack). A CNI ADD failing so is
/// "try again later" (11), not a permanent error.
pub fn is_retryable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// How long a read may take before it counts as a timeout: well inside the CNI plugin's
/// default deadline (10 s), so an ADD whose pod read hangs on a stalled API server answers
/// "try again later" (11) rather than running out the plugin's clock (an I/O error, 5). The
/// client has no read timeout of its own: its watches idle for minutes.
pub const READ_DEADLINE: Duration = Duration::from_secs(4);

/// `read`, failing as a timeout once [`READ_DEADLINE`] has passed. Only reads are bounded: a
/// write given up on may still land, and its callers must know whether it did.
async fn bounded<T>(
    context: &'static str,
    read: impl Future<Output = kube::Result<T>>,
) -> Result<T> {
    let answer = tokio::time::timeout(READ_DEADLINE, read)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the API server did not answer within {READ_DEADLINE:?}"),
            ))))
        });
    answer.map_err(Error::kube(context))
}

/// Outcome of an optimistic status write.
#[derive(Debug)]
pub enum Write {
    /// Written; the object as the server stored it.
    Done(Box<HostNic>),
    /// Someone else changed the object first (409): re-read and decide again.
    Conflict,
}

/// Kubernetes access of one agent.
#[derive(Clone)]
pub struct KubeIo {
    client: Client,
    hostnics: Api<HostNic>,
    recorder: Recorder,
}

impl KubeIo {
    /// Wraps a client; events are reported as `hostnic-agent` on `node`.
    pub fn new(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "hostnic-agent".into(),
            instance: Some(node.to_owned()),
        };
        Self {
            hostnics: Api::all(client.clone()),
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    /// The client, for watchers.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `PUT hostnics/<name>/status` carrying `nic`'s resourceVersion (`update hostnics/status`).
    pub async fn replace_status(&self, nic: &HostNic) -> Result<Write> {
        match self
            .hostnics
            .replace_status(&nic.name_any(), &PostParams::default(), nic)
            .await
        {
            Ok(written) => Ok(Write::Done(Box::new(written))),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Write::Conflict),
            Err(e) => Err(Error::kube("update hostnic status")(e)),
        }
    }

    /// `GET hostnics/<name>` (`get hostnics`).
    pub async fn get_hostnic(&self, name: &str) -> Result<Option<HostNic>> {
        bounded("get hostnic", self.hostnics.get_opt(name)).await
    }

    /// `GET pods/<name>` in `namespace` (`get pods`); `None` when it does not exist.
    pub async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace);
        bounded("get pod", pods.get_opt(name)).await
    }

    /// Sets (`Some`) or removes (`None`) the annotation `key` of NicPool `pool` by a merge patch
    /// (`patch nicpools`): no read, and no conflict with the operator's writes.
    pub async fn annotate_pool(&self, pool: &str, key: &str, value: Option<&str>) -> Result<()> {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        Api::<NicPool>::all(self.client.clone())
            .patch(pool, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(Error::kube("annotate nicpool"))
    }

    /// Publishes an event about `regarding` (`create`/`patch` `events.k8s.io/events` in its
    /// namespace, `default` for cluster-scoped objects). The one recorder of this agent turns
    /// repeats of a reason on the same object into a series on one event object (a patch), not
    /// new objects. Failures are only logged: an event is never worth failing a claim for.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&ev, regarding).await {
            tracing::debug!(name = ?regarding.name, kind = ?regarding.kind, %error, "could not publish event");
        }
    }
}

/// A reference to `nic` for its events.
pub fn hostnic_ref(nic: &HostNic) -> ObjectReference {
    nic.object_ref(&())
}

/// A reference to NicPool `pool` for its events.
pub fn pool_ref(pool: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(NicPool::api_version(&()).into_owned()),
        kind: Some(NicPool::kind(&()).into_owned()),
        name: Some(pool.to_owned()),
        ..Default::default()
    }
}

/// A reference to the pod `namespace/name` (with its UID if known) for its events. Built the
/// same way for every ADD of the pod, so the recorder sees repeats as one series.
pub fn pod_ref(namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid: uid.map(str::to_owned),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::Error;
    use hostnic_agent_api::ErrorKind;
    use kube::core::Status;

    fn api(code: u16) -> Error {
        Error::kube("get pod")(kube::Error::Api(
            Status::failure("m", "r").with_code(code).boxed(),
        ))
    }

    #[test]
    fn overload_outages_and_timeouts_are_try_again_later() {
        for code in [429, 500, 503, 504] {
            assert_eq!(api(code).kind(), ErrorKind::TryAgainLater, "{code}");
        }
        let timeout = Error::kube("get pod")(kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))));
        assert_eq!(timeout.kind(), ErrorKind::TryAgainLater);
        for code in [400, 403, 404, 422] {
            assert_eq!(api(code).kind(), ErrorKind::Internal, "{code}");
        }
    }
}
