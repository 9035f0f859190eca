//! Stand-in kubelets' Node status updates: every node posts its whole status once (about
//! 15 KB, as a real Node's), then its conditions with a fresh heartbeat every 10 to 60 s, as kubelets
//! do, changing nothing else of the Node.

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

/// One node's kubelet: its whole status at once (a real node has it before any pool exists),
/// then its conditions every [`INTERVAL_S`]; they keep their transition time (nothing
/// changes), only the heartbeat moves.
async fn post(api: &Api<Node>, node: String, control: &Control) {
    let since = jiff::Timestamp::now().to_string();
    let mut whole = true;
    while !control.stopping() {
        let now = jiff::Timestamp::now().to_string();
        let body = if whole {
            node_status(&since, &now)
        } else {
            status(&since, &now)
        };
        if api
            .patch_status(&node, &PatchParams::default(), &Patch::Merge(body))
            .await
            .is_ok()
        {
            whole = false;
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

/// A Node's whole status as a kubelet keeps it, about 15 KB (the API server's managedFields
/// and the labels make a real Node's tens of KB): the conditions
/// (heartbeat `now`, transitions at `since`), capacity, addresses, node info and, most of the
/// size, the images the node holds, each under a tag and a digest.
pub fn node_status(since: &str, now: &str) -> serde_json::Value {
    let mut s = status(since, now);
    // Kubelet reports at most `--node-status-max-images` (50) images.
    let images: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            let repo = format!(
                "registry.cn-beijing.example-cloud.com/platform-team-{}/payments-service-api-{i:02}",
                i % 7
            );
            serde_json::json!({
                "names": [
                    format!("{repo}@sha256:{:064x}", 0x5eed_0000_u64 + i),
                    format!("{repo}:v1.{i}.{}", i * 3 % 10),
                ],
                "sizeBytes": 25_000_000 + i * 1_048_576,
            })
        })
        .collect();
    s["status"]["capacity"] = serde_json::json!({
        "cpu": "4", "memory": "8152336Ki", "pods": "110", "ephemeral-storage": "102685624Ki",
        "hugepages-1Gi": "0", "hugepages-2Mi": "0",
    });
    s["status"]["allocatable"] = serde_json::json!({
        "cpu": "3800m", "memory": "7000000Ki", "pods": "110", "ephemeral-storage": "94635070922",
        "hugepages-1Gi": "0", "hugepages-2Mi": "0",
    });
    s["status"]["addresses"] = serde_json::json!([
        {"type": "InternalIP", "address": "10.10.0.2"},
        {"type": "Hostname", "address": "i-node0001"},
    ]);
    s["status"]["daemonEndpoints"] = serde_json::json!({"kubeletEndpoint": {"Port": 10250}});
    s["status"]["nodeInfo"] = serde_json::json!({
        "machineID": "9f3c3a2e8d6b4f0e9a1c2b3d4e5f6a7b",
        "systemUUID": "4c4c4544-0042-3510-8052-b4c04f4e4e32",
        "bootID": "0b7c5e3a-2f1d-4c8e-9a6b-5d4e3f2a1b0c",
        "kernelVersion": "6.1.0-28-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
        "containerRuntimeVersion": "containerd://1.7.24", "kubeletVersion": "v1.31.4",
        "kubeProxyVersion": "v1.31.4", "operatingSystem": "linux", "architecture": "amd64",
    });
    s["status"]["images"] = images.into();
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_whole_node_status_is_as_large_as_a_real_ones() {
        let s = super::node_status("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z");
        let bytes = serde_json::to_vec(&s).map(|v| v.len()).unwrap_or(0);
        assert!((12_000..64_000).contains(&bytes), "{bytes} bytes");
    }
}
