//! A private containerd (Debian's 1.6, CRI plugin built in, runc) running inside a "node" netns
//! with its own root, state, socket and CNI directories under a temp dir, driven over CRI the
//! way kubelet drives it: the honest kubelet-like path for the CNI plugin. Dropping it stops
//! every sandbox, kills containerd and its shims and unmounts what they left.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::oci::{self, Entry, ImageSpec};

/// The sandbox ("pause") image every pod sandbox runs; built offline by [`build_pause_image`].
pub const PAUSE_IMAGE: &str = "registry.local/hostnic/pause:1";

/// What to install as the runtime's CNI configuration.
#[derive(Debug, Clone)]
pub struct CniSetup {
    /// File name of the conflist in the conf dir, e.g. `10-hostnic.conflist`.
    pub conflist_name: String,
    /// The conflist's JSON.
    pub conflist: String,
    /// Plugin binaries to put in the bin dir as `(type name, path)`. `loopback` is always added:
    /// containerd's CNI library sets up `lo` with it before the configured network.
    pub plugins: Vec<(String, PathBuf)>,
}

/// A running containerd inside a node netns, with its own directories under a temp dir.
pub struct Containerd {
    dir: TempDir,
    child: Child,
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// A pod sandbox as CRI reports it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Sandbox id.
    pub id: String,
    /// Primary pod IP (from the CNI result), empty if none.
    pub ip: String,
    /// Path of the sandbox's network namespace.
    pub netns: Option<PathBuf>,
}

impl Containerd {
    /// Starts containerd with `nsenter --net=<node_netns>` (not `ip netns exec`, which would hide
    /// the cgroup mounts), imports the pause image and waits until CRI answers.
    pub fn start(node_netns: &Path, cni: &CniSetup) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hn-containerd-")
            .tempdir()
            .context("create containerd temp dir")?;
        let root = dir.path();
        let cni_bin = root.join("cni-bin");
        let cni_conf = root.join("cni-conf");
        for d in ["root", "state", "cni-bin", "cni-conf", "log"] {
            fs::create_dir_all(root.join(d)).with_context(|| format!("create {d}"))?;
        }
        let loopback = PathBuf::from("/usr/lib/cni/loopback");
        for (name, path) in cni
            .plugins
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .chain([("loopback", loopback.as_path())])
        {
            std::os::unix::fs::symlink(path, cni_bin.join(name))
                .with_context(|| format!("link CNI plugin {name} from {}", path.display()))?;
        }
        fs::write(cni_conf.join(&cni.conflist_name), &cni.conflist).context("write conflist")?;
        let socket = root.join("containerd.sock");
        let config = config_toml(root, &socket, &cni_bin, &cni_conf);
        fs::write(root.join("config.toml"), config).context("write config.toml")?;
        let log = fs::File::create(root.join("containerd.log")).context("create log file")?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", node_netns.display()))
            .arg("containerd")
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone log handle")?)
            .stderr(log)
            .spawn()
            .context("start containerd (is the Debian package containerd installed?)")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build tokio runtime for the CRI client")?;
        let client = runtime.block_on(connect(&socket))?;
        let mut me = Self {
            dir,
            child,
            socket,
            runtime,
            client,
        };
        me.import_pause_image()?;
        me.wait_ready()?;
        Ok(me)
    }

    /// Where containerd keeps its files (log in `containerd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn import_pause_image(&mut self) -> Result<()> {
        let tar = build_pause_image(&self.dir.path().join("pause-image"))?;
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tar)
            .output()
            .context("run ctr images import")?;
        if !out.status.success() {
            bail!(
                "ctr images import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Waits until CRI answers ListPodSandbox (the CRI plugin starts after the gRPC server).
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let res = self.runtime.block_on(
                self.client
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            );
            match res {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("containerd CRI not ready: {e}\n{}", self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// RunPodSandbox: the runtime creates the netns and runs the CNI ADD, as under kubelet.
    pub fn run_pod_sandbox(&mut self, namespace: &str, name: &str, uid: &str) -> Result<String> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: self.dir.path().join("log").display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/hostnic-test/{name}"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = self
            .runtime
            .block_on(self.client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .with_context(|| format!("RunPodSandbox {namespace}/{name}"))?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    /// PodSandboxStatus (verbose, for the netns path).
    pub fn sandbox(&mut self, id: &str) -> Result<Sandbox> {
        let resp = self
            .runtime
            .block_on(self.client.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            }))
            .with_context(|| format!("PodSandboxStatus {id}"))?
            .into_inner();
        let ip = resp
            .status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let netns = resp.info.get("info").and_then(|i| netns_from_info(i));
        Ok(Sandbox {
            id: id.to_owned(),
            ip,
            netns,
        })
    }

    /// StopPodSandbox: the runtime runs CNI DEL with the sandbox's netns.
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<()> {
        self.runtime
            .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }))
            .with_context(|| format!("StopPodSandbox {id}"))?;
        Ok(())
    }

    /// RemovePodSandbox: the runtime runs CNI DEL again, now with an empty netns.
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<()> {
        self.runtime
            .block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }))
            .with_context(|| format!("RemovePodSandbox {id}"))?;
        Ok(())
    }

    /// Ids of every sandbox containerd knows.
    pub fn sandbox_ids(&mut self) -> Result<Vec<String>> {
        let resp = self
            .runtime
            .block_on(
                self.client
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )
            .context("ListPodSandbox")?;
        Ok(resp.into_inner().items.into_iter().map(|s| s.id).collect())
    }

    /// Stops and removes every sandbox, kills containerd and the shims it started, and unmounts
    /// whatever they left under the temp dir. Errors are printed, not raised: teardown goes on.
    fn teardown(&mut self) {
        if let Ok(ids) = self.sandbox_ids() {
            for id in ids {
                if let Err(e) = self
                    .stop_pod_sandbox(&id)
                    .and_then(|()| self.remove_pod_sandbox(&id))
                {
                    eprintln!("containerd teardown: {e:#}");
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive containerd by design; ours carry our socket path on their command line.
        for pid in pids_with_arg(&self.socket.display().to_string()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        unmount_under(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Connects to the CRI socket, retrying until containerd listens: the socket file appears at
/// `bind`, a moment before `listen`, so a first connect can be refused on a loaded machine.
async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_connect(socket).await {
            Ok(channel) => return Ok(RuntimeServiceClient::new(channel)),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context(format!(
                    "connect to containerd's CRI socket {}",
                    socket.display()
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn try_connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_owned();
    Ok(Endpoint::try_from("http://[::]:0")
        .context("CRI endpoint")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?)
}

fn config_toml(root: &Path, socket: &Path, cni_bin: &Path, cni_conf: &Path) -> String {
    let r = root.display();
    format!(
        r#"version = 2
root = "{r}/root"
state = "{r}/state"
# Plugins that would touch shared host paths or need kernel features this machine lacks.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Needed when containerd runs without the host's full privileges over oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
        sock = socket.display(),
        bin = cni_bin.display(),
        conf = cni_conf.display(),
    )
}

/// The network namespace path in CRI's verbose sandbox info (the OCI runtime spec's network
/// namespace).
fn netns_from_info(info: &str) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    v["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .map(PathBuf::from)
}

/// Builds an OCI image archive holding a static `pause` binary (compiled here with
/// `gcc -static`: no image can be pulled on this machine) and returns its path.
pub fn build_pause_image(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).context("create the pause image dir")?;
    let src = dir.join("pause.c");
    fs::write(&src, PAUSE_C).context("write pause.c")?;
    let pause = dir.join("pause");
    oci::run(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&pause)
            .arg(&src),
    )
    .context("compile pause with gcc -static (needs gcc and libc6-dev)")?;
    let spec = ImageSpec {
        name: PAUSE_IMAGE.into(),
        entries: vec![(
            "/pause".into(),
            Entry::File {
                source: pause,
                mode: 0o755,
            },
        )],
        entrypoint: vec!["/pause".into()],
        user: None,
        env: Vec::new(),
    };
    let archive = dir.join("pause-image.tar");
    oci::write_archive(&spec, &dir.join("image"), &archive)?;
    Ok(archive)
}

const PAUSE_C: &str = r#"#include <signal.h>
#include <unistd.h>
/* PID 1 ignores signals without a handler, so install ones that exit. */
static void quit(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    for (;;) pause();
}
"#;

/// Pids of processes with `arg` among their command-line arguments.
fn pids_with_arg(arg: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Unmounts (lazily, deepest first) every mount point under `dir`: the shims' rootfs and
/// overlay snapshots would otherwise keep the temp dir from being removed.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_path_is_read_from_the_verbose_info() {
        let info = r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},
            {"type":"network","path":"/var/run/netns/cni-1"}]}}}"#;
        assert_eq!(
            netns_from_info(info),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        assert_eq!(netns_from_info("{}"), None);
    }
}
