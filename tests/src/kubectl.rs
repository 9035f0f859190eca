//! Real `kubectl` against a kubeconfig (the in-memory API server's, or a real cluster's): what a
//! user sees is what the tests check, and the same calls work against any cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// kubectl bound to one kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl using `kubeconfig`.
    pub fn new(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_owned(),
        }
    }

    /// The kubeconfig path.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl <args>` (stdin from `input` if given) and returns stdout; fails with stderr.
    pub fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run kubectl (is it installed?)")?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .context("write kubectl stdin")?;
        }
        let out = child.wait_with_output().context("wait for kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `kubectl <args>` and returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_input(args, None)
    }

    /// `kubectl apply -f -` with a manifest (YAML or JSON).
    pub fn apply(&self, manifest: &str) -> Result<String> {
        self.run_with_input(&["apply", "-f", "-"], Some(manifest))
    }

    /// `kubectl get <what> -o json`, the `items` of the list.
    pub fn list(&self, what: &str) -> Result<Vec<serde_json::Value>> {
        let text = self.run(&["get", what, "-o", "json"])?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("kubectl get {what}: not JSON"))?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Starts `kubectl get <args> --watch -o json`: each object it prints arrives on the
    /// returned [`Watch`] with the moment it was read.
    pub fn watch(&self, args: &[&str]) -> Result<Watch> {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("get")
            .args(args)
            .args(["--watch", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("run kubectl --watch (is it installed?)")?;
        let stdout = child.stdout.take().context("kubectl stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            // kubectl prints one JSON document per change, back to back.
            let docs = serde_json::Deserializer::from_reader(stdout).into_iter();
            for doc in docs {
                let Ok(doc) = doc else { break };
                if tx.send((Instant::now(), doc)).is_err() {
                    break;
                }
            }
        });
        Ok(Watch { child, events })
    }
}

/// A running `kubectl get --watch`, stopped when dropped.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    /// Each object printed, with when it was read.
    pub events: mpsc::Receiver<(Instant, serde_json::Value)>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
