//! Cluster-admin requests for tests that enforce RBAC: kubectl does not send bearer tokens over
//! plain http (the in-memory API server's scheme), so the admin side talks through a kube
//! Client instead, synchronously, so tests read like the kubectl commands they stand for.

use std::path::Path;

use anyhow::{Context, Result};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde_json::{Value, json};

/// A kube Client with its own runtime.
pub struct Admin {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Admin {
    /// Connects with the credentials in `kubeconfig`.
    pub fn connect(kubeconfig: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("build a tokio runtime")?;
        let text = std::fs::read_to_string(kubeconfig)
            .with_context(|| format!("read {}", kubeconfig.display()))?;
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::from_yaml(&text)?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            anyhow::Ok(kube::Client::try_from(cfg)?)
        })?;
        Ok(Self { rt, client })
    }

    async fn api(
        &self,
        obj_api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>> {
        let (group, version) = obj_api_version
            .rsplit_once('/')
            .unwrap_or(("", obj_api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = discovery::pinned_kind(&self.client, &gvk)
            .await
            .with_context(|| format!("discover {obj_api_version} {kind}"))?;
        Ok(match (caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (Scope::Namespaced, None) => Api::default_namespaced_with(self.client.clone(), &ar),
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &ar),
        })
    }

    /// The API of `obj`'s own kind, version and namespace.
    async fn api_of(&self, obj: &Value) -> Result<Api<DynamicObject>> {
        self.api(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
            obj["metadata"]["namespace"].as_str(),
        )
        .await
    }

    /// Creates each object in order (POST), like `kubectl create -f`.
    pub fn create_all(&self, objects: &[Value]) -> Result<()> {
        self.rt.block_on(async {
            for obj in objects {
                let what = crate::render::describe(obj);
                let api = self.api_of(obj).await?;
                let dynamic: DynamicObject = serde_json::from_value(obj.clone())?;
                api.create(&PostParams::default(), &dynamic)
                    .await
                    .with_context(|| format!("create {what}"))?;
            }
            Ok(())
        })
    }

    /// The objects of a kind in every namespace, as JSON.
    pub fn list(&self, api_version: &str, kind: &str) -> Result<Vec<Value>> {
        self.rt.block_on(async {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let (ar, _) = discovery::pinned_kind(&self.client, &gvk).await?;
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
            let list = api.list(&ListParams::default()).await?;
            list.items
                .into_iter()
                .map(|o| Ok(serde_json::to_value(o)?))
                .collect()
        })
    }

    /// `kubectl scale <kind> <name> --replicas=N` for a cluster-scoped kind.
    pub fn scale(&self, api_version: &str, kind: &str, name: &str, replicas: u32) -> Result<()> {
        self.rt.block_on(async {
            let api = self.api(api_version, kind, None).await?;
            api.patch_scale(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?;
            Ok(())
        })
    }

    /// `kubectl delete <kind> <name> --wait=false` for a cluster-scoped kind.
    pub fn delete(&self, api_version: &str, kind: &str, name: &str) -> Result<()> {
        self.rt.block_on(async {
            let api = self.api(api_version, kind, None).await?;
            api.delete(name, &DeleteParams::default()).await?;
            Ok(())
        })
    }

    /// PUT of `obj`'s status subresource (what the agent does on a claim or release), as
    /// whoever the kubeconfig names; the server's answer, or its refusal.
    pub fn update_status(&self, obj: &Value) -> Result<Value> {
        self.rt.block_on(async {
            let api = self.api_of(obj).await?;
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let dynamic: DynamicObject = serde_json::from_value(obj.clone())?;
            let stored = api
                .replace_status(name, &PostParams::default(), &dynamic)
                .await?;
            Ok(serde_json::to_value(stored)?)
        })
    }

    /// `kubectl get --raw <path>`.
    pub fn get_raw(&self, path: &str) -> Result<String> {
        self.rt.block_on(async {
            let req = http::Request::get(path).body(Vec::new())?;
            Ok(self.client.request_text(req).await?)
        })
    }
}
