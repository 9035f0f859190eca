//! "Pods" for the system tests: a netns made by the test, set up and torn down by a real CNI
//! runtime (libcni, through the Go driver of [`crate::cni_runtime`]) running the hostnic plugin
//! from a conflist that talks to the pod's node agent, exactly as a container runtime would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::cluster::Cluster;
use crate::cni_runtime::{self, CniFailure, CniRuntime};
use crate::interrupt;
use crate::netns::TestNetns;

/// A pod sandbox with its network set up by CNI ADD.
#[derive(Debug)]
pub struct Pod {
    /// Pod name (also the K8S_POD_NAME).
    pub name: String,
    /// Index of its node in the cluster.
    pub node: usize,
    /// The sandbox's netns.
    pub netns: TestNetns,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// Address of its eth0 (without prefix).
    pub ip: String,
    /// The vxnet gateway from the CNI result.
    pub gateway: String,
    /// The CNI result JSON.
    pub result: serde_json::Value,
}

impl Pod {
    /// The pod a successful CNI ADD of `container_id` in `netns` on `node` made.
    pub fn from_result(
        name: &str,
        node: usize,
        netns: TestNetns,
        container_id: &str,
        result: serde_json::Value,
    ) -> Result<Pod> {
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .context("CNI result without ips[0].address")?
            .to_owned();
        let gateway = result["ips"][0]["gateway"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(Pod {
            name: name.to_owned(),
            node,
            netns,
            container_id: container_id.to_owned(),
            ip,
            gateway,
            result,
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The netns field is deleted right after this.
        interrupt::remove_netns(self.netns.name());
    }
}

/// Creates pods on a cluster's nodes through libcni.
#[derive(Debug)]
pub struct Pods {
    confdir: PathBuf,
    cache: PathBuf,
}

impl Pods {
    /// Builds the libcni driver and writes one conflist per node next to the cluster's files.
    pub fn new(cluster: &Cluster) -> Result<Self> {
        // Build now (about 2 s) rather than inside the first timed ADD.
        cni_runtime::driver();
        let confdir = cluster.dir.path().join("cni");
        std::fs::create_dir_all(&confdir).context("create conflist dir")?;
        for i in 0..cluster.nodes.len() {
            std::fs::write(
                confdir.join(format!("node{i}.conflist")),
                cluster.conflist(i),
            )
            .context("write conflist")?;
        }
        Ok(Self {
            confdir,
            cache: cluster.dir.path().join("cni-cache"),
        })
    }

    /// The conflist file of `node`.
    pub fn conflist(&self, node: usize) -> PathBuf {
        self.confdir.join(format!("node{node}.conflist"))
    }

    /// The libcni runtime as a kubelet would configure it for pod `name` (CNI_ARGS with the pod
    /// identity), finding `hostnic` among the workspace's binaries.
    pub fn runtime(&self, name: &str, container_id: &str) -> CniRuntime {
        CniRuntime::new([crate::bins::target_dir()], &self.cache).cni_args(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};\
             K8S_POD_UID=uid-{container_id};\
             K8S_POD_INFRA_CONTAINER_ID={container_id}"
        ))
    }

    /// CNI ADD of a new pod on `node`. A failed ADD is followed by a DEL, as kubelet does
    /// (StopPodSandbox), so nothing half-made stays behind.
    pub fn add(&self, node: usize, name: &str) -> Result<Pod> {
        self.try_add(node, name)?
            .map_err(|e| anyhow!("CNI ADD {name}: {e}"))
    }

    /// [`Pods::add`], keeping the plugin's failure (its CNI error code) apart from failures
    /// of the harness.
    pub fn try_add(&self, node: usize, name: &str) -> Result<Result<Pod, CniFailure>> {
        let netns = TestNetns::new("pod");
        interrupt::add_netns(netns.name());
        let container_id = format!("ctr-{}", netns.name());
        let rt = self.runtime(name, &container_id);
        let conflist = self.conflist(node);
        match rt.add(&conflist, &container_id, &netns.path(), "eth0") {
            Ok(result) => Pod::from_result(name, node, netns, &container_id, result).map(Ok),
            Err(e) => {
                let _ = rt.del(&conflist, &container_id, &netns.path(), "eth0");
                interrupt::remove_netns(netns.name());
                Ok(Err(e))
            }
        }
    }

    /// CNI ADD, retried while it fails (no free NIC yet: "try again later"), as kubelet
    /// retries a sandbox.
    pub fn add_retrying(&self, node: usize, name: &str, timeout: Duration) -> Result<Pod> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.add(node, name) {
                Ok(pod) => return Ok(pod),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// CNI DEL of a pod (its netns goes when the `Pod` is dropped).
    pub fn del(&self, pod: &Pod) -> Result<()> {
        self.runtime(&pod.name, &pod.container_id)
            .del(
                &self.conflist(pod.node),
                &pod.container_id,
                &pod.netns.path(),
                "eth0",
            )
            .map_err(|e| anyhow!("CNI DEL {}: {e}", pod.name))
    }
}
