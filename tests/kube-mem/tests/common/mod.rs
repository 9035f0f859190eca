//! Test environment: a fresh kube-mem server, or the real cluster named by
//! `HOSTNIC_TEST_KUBECONFIG` (then the same tests check the fake against the real thing).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, CustomResource};
use kube_mem::{KubeMem, KubeMemHandle};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The test-only custom resource (tests/fixtures/widgets.yaml).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "conformance.kube-mem.hostnic.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub color: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Value>>,
}

pub fn widget(name: &str, color: &str) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            color: color.into(),
            ..Default::default()
        },
    )
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn repo_crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds")
}

/// A server (or cluster) plus a namespace of this test's own.
pub struct Env {
    pub client: Client,
    /// Set when the test runs against kube-mem (not a real cluster).
    pub mem: Option<KubeMemHandle>,
    pub kubeconfig: PathBuf,
    pub ns: String,
    _dir: tempfile::TempDir,
}

pub fn unique(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}-{suffix}")
}

impl Env {
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (client, mem, kubeconfig) = match std::env::var("HOSTNIC_TEST_KUBECONFIG") {
            Ok(path) => {
                let yaml = std::fs::read_to_string(&path).unwrap();
                (
                    kube_mem::client_from_yaml(&yaml).await.unwrap(),
                    None,
                    PathBuf::from(path),
                )
            }
            Err(_) => {
                let mem = KubeMem::builder()
                    .bookmark_interval(Duration::from_millis(500))
                    .start()
                    .await
                    .unwrap();
                let path = dir.path().join("kubeconfig");
                mem.write_kubeconfig(&path).unwrap();
                (mem.client().await.unwrap(), Some(mem), path)
            }
        };
        let ns = unique("km");
        let env = Env {
            client,
            mem,
            kubeconfig,
            ns,
            _dir: dir,
        };
        env.ensure_widget_crd().await;
        let nss: Api<Namespace> = Api::all(env.client.clone());
        let ns_obj: Namespace = serde_json::from_value(
            json!({"metadata": {"name": env.ns, "labels": {"kube-mem-test": "true"}}}),
        )
        .unwrap();
        nss.create(&PostParams::default(), &ns_obj).await.unwrap();
        env
    }

    pub fn local(&self) -> bool {
        self.mem.is_some()
    }

    async fn ensure_widget_crd(&self) {
        let text = std::fs::read_to_string(fixture("widgets.yaml")).unwrap();
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        let crds: Api<kube::api::DynamicObject> = Api::all_with(
            self.client.clone(),
            &kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(
                    "apiextensions.k8s.io",
                    "v1",
                    "CustomResourceDefinition",
                ),
                "customresourcedefinitions",
            ),
        );
        let obj: kube::api::DynamicObject = serde_json::from_value(crd).unwrap();
        match crds.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create widget CRD: {e}"),
        }
        let widgets: Api<Widget> = Api::all(self.client.clone());
        eventually("widget CRD served", || async {
            widgets.list(&Default::default()).await.is_ok()
        })
        .await;
    }

    pub fn widgets(&self) -> Api<Widget> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Forgets kube-mem's watch history (a real cluster's etcd compacts on its own).
    pub fn compact(&self) {
        if let Some(m) = &self.mem {
            m.compact();
        }
    }

    pub async fn cleanup(self) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        // Best effort: a real cluster keeps the namespace labelled for a sweep if this fails.
        let _ = nss.delete(&self.ns, &DeleteParams::default()).await;
        if let Some(m) = &self.mem {
            m.shutdown().await;
        }
    }
}

/// Waits until `f` holds, polling; panics with `what` after 20 s. Eventual consistency
/// (garbage collection on a real cluster) needs this; it is not a timing assertion.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The API error code and reason of a failed call.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
