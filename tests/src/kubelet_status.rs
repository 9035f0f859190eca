//! Stand-in kubelets' Node status updates: every node posts its conditions with a fresh
//! heartbeat every 10 to 60 s, as kubelets do, changing nothing else of the Node.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rand::Rng;

use crate::stand_in::{Control, StandIn};

/// Seconds between two status updates of one node, drawn anew each time: kubelet's
/// `nodeStatusUpdateFrequency` is 10 s, and a node whose status did not change posts at least
/// every `nodeStatusReportFrequency` (1 min by default).
pub const INTERVAL_S: Range<u64> = 10..61;

/// The running stand-in; stopped on drop.
pub struct NodeStatusUpdates(StandIn);

impl NodeStatusUpdates {
    /// Starts posting status updates for `nodes` of the cluster behind `kubeconfig`.
    pub fn start(kubeconfig: &Path, nodes: Vec<String>) -> Result<Self> {
        StandIn::start(kubeconfig, |client, control| async move {
            let api: Api<Node> = Api::all(client);
            futures::future::join_all(nodes.into_iter().map(|n| post(&api, n, &control))).await;
        })
        .map(Self)
    }

    /// Status updates the API server accepted so far.
    pub fn posted(&self) -> u64 {
        self.0.done()
    }
}

/// One node's kubelet: the first update at once (a real node has its conditions before any
/// pool exists), then one every [`INTERVAL_S`]; the conditions keep their transition time
/// (nothing changes), only the heartbeat moves.
async fn post(api: &Api<Node>, node: String, control: &Control) {
    let since = jiff::Timestamp::now().to_string();
    while !control.stopping() {
        let patch = Patch::Merge(status(&since, &jiff::Timestamp::now().to_string()));
        if api
            .patch_status(&node, &PatchParams::default(), &patch)
            .await
            .is_ok()
        {
            control.count(1);
        }
        let wait = Duration::from_secs(rand::rng().random_range(INTERVAL_S));
        // Short steps, so that a stop is not held up by a minute's sleep.
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until && !control.stopping() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The conditions a healthy kubelet reports.
fn status(since: &str, now: &str) -> serde_json::Value {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since,
        })
    };
    serde_json::json!({"status": {"conditions": [
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                  "kubelet has sufficient memory available"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                  "kubelet has no disk pressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID",
                  "kubelet has sufficient PID available"),
        condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]}})
}
