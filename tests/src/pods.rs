//! "Pods" for the system tests: a netns made by the test, set up and torn down by a real CNI
//! runtime (libcni, through the Go driver of [`crate::libcni`]) running the hostnic plugin
//! from a conflist that talks to the pod's node agent, exactly as a container runtime would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cluster::Cluster;
use crate::libcni::{Driver, Invocation};
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

/// Creates pods on a cluster's nodes through libcni.
#[derive(Debug)]
pub struct Pods {
    runtime: Driver,
    confdir: PathBuf,
    cache: PathBuf,
}

impl Pods {
    /// Builds the libcni driver and writes one conflist per node next to the cluster's files.
    pub fn new(cluster: &Cluster) -> Result<Self> {
        let runtime = Driver::get().context("build the libcni driver")?;
        let confdir = cluster.dir.path().join("cni");
        std::fs::create_dir_all(&confdir).context("create conflist dir")?;
        for i in 0..cluster.nodes.len() {
            std::fs::write(
                confdir.join(format!("node{i}.conflist")),
                cluster.conflist(i),
            )
            .context("write conflist")?;
        }
        let cache = cluster.dir.path().join("cni-cache");
        Ok(Self {
            runtime,
            confdir,
            cache,
        })
    }

    /// The libcni call for a pod of `node`.
    pub fn invocation(&self, node: usize, name: &str, netns: &TestNetns, id: &str) -> Invocation {
        Invocation {
            conflist: self.confdir.join(format!("node{node}.conflist")),
            netns: netns.path(),
            container_id: id.to_owned(),
            ifname: "eth0".into(),
            cni_args: vec![
                ("K8S_POD_NAMESPACE".into(), "default".into()),
                ("K8S_POD_NAME".into(), name.to_owned()),
                ("K8S_POD_UID".into(), format!("uid-{id}")),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_owned()),
            ],
            plugin_dirs: vec![crate::bins::target_dir()],
            cache_dir: self.cache.clone(),
        }
    }

    /// CNI ADD of a new pod on `node`. A failed ADD is followed by a DEL, as kubelet does
    /// (StopPodSandbox), so nothing half-made stays behind.
    pub fn add(&self, node: usize, name: &str) -> Result<Pod> {
        let netns = TestNetns::new("pod");
        let container_id = format!("ctr-{}", netns.name());
        let inv = self.invocation(node, name, &netns, &container_id);
        let result = match self.runtime.add(&inv) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.runtime.del(&inv);
                return Err(e.context(format!("CNI ADD {name}")));
            }
        };
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
            container_id,
            ip,
            gateway,
            result,
        })
    }

    /// CNI ADD, retried while the answer is "try again later" (no free NIC yet), as kubelet
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
        self.runtime
            .del(&self.invocation(pod.node, &pod.name, &pod.netns, &pod.container_id))
            .with_context(|| format!("CNI DEL {}", pod.name))
    }
}
