//! Running the offline images with `ctr` the way the kubelet would run the manifests' containers:
//! the rendered container's command, args (with `$(VAR)` expanded from its env), env (literal
//! values and the downward-API fields the test supplies), volume mounts (onto host directories
//! the test chooses, HostToContainer propagation as `rslave`) and read-only root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostnic_tests::bins::{bin, target_dir};
use hostnic_tests::{images, oci};
use serde_json::Value;

/// The containerd namespace the image tests use.
pub const NAMESPACE: &str = "hostnic-images-test";

/// `ctr` bound to one containerd socket and [`NAMESPACE`].
#[derive(Debug)]
pub struct Ctr {
    /// containerd's socket.
    pub socket: PathBuf,
}

impl Ctr {
    /// Runs `ctr ARGS`, whatever its outcome.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", NAMESPACE])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// Runs `ctr ARGS` and returns its stdout; panics with its output if it failed.
    pub fn ok(&self, args: &[&str]) -> String {
        Self::succeeded(args, self.run(args))
    }

    /// `ctr run ARGS` of a short-lived task that always prints, run again (at most 3 times in
    /// all) while its output came back empty: ctr can lose the output of a task that exits
    /// before ctr's copy of it starts, which happens under load (containerd/containerd#770).
    pub fn run_printing(&self, args: &[&str]) -> Output {
        let mut out = self.run(args);
        for _ in 1..3 {
            if !(out.stdout.is_empty() && out.stderr.is_empty()) {
                break;
            }
            out = self.run(args);
        }
        out
    }

    /// [`Self::run_printing`], then as [`Self::ok`].
    pub fn ok_printing(&self, args: &[&str]) -> String {
        Self::succeeded(args, self.run_printing(args))
    }

    fn succeeded(args: &[&str], out: Output) -> String {
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills and deletes container `id` if it runs (best effort, for cleanup).
    pub fn remove(&self, id: &str) {
        let _ = self.run(&["task", "kill", "-s", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.run(&["task", "delete", id]).status.success() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.run(&["container", "delete", id]);
    }
}

/// What the kubelet would supply to a container beyond its spec.
#[derive(Debug, Default)]
pub struct Kubelet<'a> {
    /// Volume name -> host directory mounted for it.
    pub volumes: BTreeMap<&'a str, PathBuf>,
    /// Downward-API `fieldRef.fieldPath` -> value (e.g. `spec.nodeName`).
    pub fields: BTreeMap<&'a str, String>,
}

impl Kubelet<'_> {
    /// The container's environment: literal values and the fields it refers to.
    pub fn env(&self, c: &Value) -> Vec<(String, String)> {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e["name"].as_str()?.to_owned();
                if let Some(v) = e["value"].as_str() {
                    return Some((name, v.to_owned()));
                }
                let path = e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?;
                let value = self.fields.get(path).unwrap_or_else(|| {
                    panic!("{}: no value for field {path} of {name}", c["name"])
                });
                Some((name, value.clone()))
            })
            .collect()
    }

    /// `ctr run` options for the container: env, mounts and read-only root.
    pub fn run_options(&self, c: &Value) -> Vec<String> {
        let mut args = Vec::new();
        if c["securityContext"]["readOnlyRootFilesystem"] == true {
            args.push("--read-only".to_owned());
        }
        for (k, v) in self.env(c) {
            args.push("--env".to_owned());
            args.push(format!("{k}={v}"));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            let src = self
                .volumes
                .get(name)
                .unwrap_or_else(|| panic!("{}: no host directory for volume {name}", c["name"]));
            let mut options = vec!["rbind", if m["readOnly"] == true { "ro" } else { "rw" }];
            if m["mountPropagation"] == "HostToContainer" {
                options.push("rslave");
            }
            args.push("--mount".to_owned());
            args.push(format!(
                "type=bind,src={},dst={},options={}",
                src.display(),
                m["mountPath"].as_str().unwrap_or_default(),
                options.join(":")
            ));
        }
        args
    }

    /// The container's command and args, `$(VAR)` expanded from its env as the kubelet does.
    pub fn command(&self, c: &Value) -> Vec<String> {
        let env = self.env(c);
        c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(c["args"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .map(|a| {
                env.iter()
                    .fold(a.to_owned(), |a, (k, v)| a.replace(&format!("$({k})"), v))
            })
            .collect()
    }
}

/// Polls `cond` every 50 ms for up to 30 s; panics naming `what` if it never holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// This workspace's two images, built offline from its binaries and imported with `ctr`.
#[derive(Debug)]
pub struct Images {
    /// What they were built from.
    pub inputs: images::Inputs,
    /// The operator image's reference.
    pub operator: String,
    /// The agent image's reference.
    pub agent: String,
}

impl Images {
    /// Builds both as OCI archives under `dir`, tagged `tag`, and imports them.
    pub fn import(ctr: &Ctr, dir: &Path, tag: &str) -> Self {
        let inputs = images::Inputs {
            repo_root: crate::repo_root(),
            bin_dir: target_dir(),
            plugin: bin("hostnic"),
            cni_plugins: PathBuf::from("/usr/lib/cni"),
        };
        let operator = format!("registry.local/hostnic/hostnic-operator:{tag}");
        let agent = format!("registry.local/hostnic/hostnic-agent:{tag}");
        for (name, spec) in [
            ("operator", images::operator(&inputs, &operator)),
            ("agent", images::agent(&inputs, &agent)),
        ] {
            let work = dir.join(format!("{name}-work"));
            let archive = dir.join(format!("{name}.oci.tar"));
            let spec = spec.expect("the image's files");
            oci::write_archive(&spec, &work, &archive).expect("write the image archive");
            ctr.ok(&["images", "import", &archive.display().to_string()]);
        }
        Self {
            inputs,
            operator,
            agent,
        }
    }

    /// Removes both from containerd.
    pub fn remove(&self, ctr: &Ctr) {
        ctr.ok(&["images", "rm", &self.operator, &self.agent]);
    }
}
