//! The plugin as kubectl runs it: the binary as a process, with a kubeconfig pointing at a
//! fresh kube-mem that holds our CRDs and a scenario's objects.

#![allow(dead_code)] // each test binary uses a different part

#[path = "../../src/fixtures.rs"]
pub mod fixtures;

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use fixtures::{AGENT_NS, World};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use kube_mem::KubeMemHandle;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

pub struct Env {
    pub kube: KubeMemHandle,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
}

/// A finished run of the plugin.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The last line printed (the verdict of `why`).
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

impl Env {
    pub async fn start() -> Env {
        let kube = kube_mem::KubeMem::builder()
            .with_crds_from_dir(crds_dir())
            .with_object(kube_mem::namespace("ns"))
            .with_object(kube_mem::namespace(AGENT_NS))
            .start()
            .await
            .expect("start kube-mem");
        let client = kube.client().await.expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Env {
            kube,
            client,
            kubeconfig,
            dir,
        }
    }

    /// Creates every object of `w`, then writes the statuses (a create drops them).
    pub async fn load(&self, w: &World) {
        let c = &self.client;
        if let Some(node) = &w.node {
            put(&Api::all(c.clone()), node).await;
        }
        for pod in std::iter::once(&w.pod).chain(&w.agents) {
            let ns = pod.namespace().unwrap_or_default();
            put(&Api::namespaced(c.clone(), &ns), pod).await;
        }
        for pool in &w.pools {
            put(&Api::all(c.clone()), pool).await;
        }
        for nic in &w.nics {
            put(&Api::all(c.clone()), nic).await;
        }
    }

    /// Runs `kubectl-hostnic --kubeconfig <kube-mem> args...` (asynchronously: the server runs
    /// on this runtime).
    pub async fn plugin(&self, args: &[&str]) -> Out {
        let mut cmd = tokio::process::Command::new(PLUGIN);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        output(cmd).await
    }

    /// Runs `kubectl hostnic args...` with the plugin on PATH and $KUBECONFIG set, as a user
    /// would; None without kubectl (outside CI).
    pub async fn kubectl_hostnic(&self, args: &[&str]) -> Option<Out> {
        if !Path::new(KUBECTL).exists() {
            assert!(std::env::var_os("CI").is_none(), "kubectl missing in CI");
            return None;
        }
        let plugin_dir = Path::new(PLUGIN).parent().expect("plugin dir");
        let path = std::env::join_paths(std::iter::once(plugin_dir.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .expect("PATH");
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("hostnic")
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig);
        Some(output(cmd).await)
    }
}

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-hostnic");
const KUBECTL: &str = "/usr/bin/kubectl";

async fn output(mut cmd: tokio::process::Command) -> Out {
    let out = cmd.output().await.expect("run the plugin");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

async fn put<K>(api: &Api<K>, obj: &K)
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let created = api
        .create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", obj.name_any()));
    let status = serde_json::to_value(obj).expect("json")["status"].take();
    if !status.is_null() {
        api.patch_status(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {}: {e}", obj.name_any()));
    }
}
