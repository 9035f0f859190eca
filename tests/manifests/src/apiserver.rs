//! The in-memory API server (the `kube-mem` binary) as the tests here use it: optionally with
//! bearer tokens for ServiceAccounts and RBAC enforced, kubeconfigs per identity, and its audit
//! log turned into [`Access`] records.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hostnic_tests::bins::bin;
use hostnic_tests::cluster::{free_port, wait_for};
use hostnic_tests::kubectl::Kubectl;
use hostnic_tests::process::{Proc, Spec};
use serde::Deserialize;

use crate::admin::Admin;
use crate::rbac::{Access, ServiceAccount};

/// A running kube-mem with an admin kubeconfig.
pub struct ApiServer {
    url: String,
    proc: Proc,
    dir: PathBuf,
    /// kubectl as the admin. Only without accounts: kubectl sends no bearer token over http.
    pub admin: Kubectl,
    /// A kube Client as the admin (bypasses RBAC), which works with tokens too.
    pub client: Admin,
}

impl ApiServer {
    /// Starts kube-mem in `dir`. With `accounts`, every request needs a bearer token and RBAC
    /// is enforced; each account gets the token [`token_of`] returns.
    pub fn start(dir: &Path, accounts: &[ServiceAccount]) -> Result<Self> {
        let addr = free_port()?;
        let kubeconfig = dir.join("admin.kubeconfig");
        let mut spec = Spec::new("kube-mem", bin("kube-mem"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--kubeconfig")
            .arg(&kubeconfig);
        for account in accounts {
            spec = spec.arg("--token").arg(format!(
                "{}={}{}",
                token_of(account),
                account.username(),
                account
                    .node
                    .as_ref()
                    .map(|n| format!("@{n}"))
                    .unwrap_or_default()
            ));
        }
        let proc = Proc::start(spec, dir)?;
        let admin = Kubectl::new(&kubeconfig);
        let mut client = None;
        wait_for("kube-mem to answer", Duration::from_secs(30), || {
            if client.is_none() && kubeconfig.exists() {
                client = Some(Admin::connect(&kubeconfig)?);
            }
            Ok(client.as_ref().is_some_and(|c| c.get_raw("/api").is_ok()))
        })
        .with_context(|| proc.log_tail(20))?;
        Ok(Self {
            url: format!("http://{addr}"),
            proc,
            dir: dir.to_owned(),
            admin,
            client: client.context("admin client")?,
        })
    }

    /// Writes a kubeconfig that authenticates as `account` and returns its path.
    pub fn kubeconfig_for(&self, account: &ServiceAccount) -> Result<PathBuf> {
        let path = self.dir.join(format!("{}.kubeconfig", token_of(account)));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-mem\n  cluster:\n    server: {}\n\
             contexts:\n- name: sa\n  context:\n    cluster: kube-mem\n    user: sa\n    namespace: {}\n\
             current-context: sa\nusers:\n- name: sa\n  user:\n    token: {}\n",
            self.url,
            account.namespace,
            token_of(account)
        );
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Every request the server saw so far.
    pub fn audit(&self) -> Result<Vec<AuditEntry>> {
        let text = self.client.get_raw("/kube-mem/audit")?;
        serde_json::from_str(&text).context("parse the kube-mem audit log")
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
}

/// The bearer token of a ServiceAccount in these tests (one per node it is bound to).
pub fn token_of(account: &ServiceAccount) -> String {
    match &account.node {
        Some(node) => format!("token-{}-{}-{node}", account.namespace, account.name),
        None => format!("token-{}-{}", account.namespace, account.name),
    }
}

/// One request in kube-mem's audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub user: String,
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource requests (discovery, openapi).
    pub path: String,
    pub allowed: bool,
    pub code: u16,
}

impl AuditEntry {
    /// The request as an RBAC access; None for non-resource requests (discovery), which every
    /// authenticated identity may make.
    pub fn access(&self) -> Option<Access> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        (!self.resource.is_empty()).then(|| Access {
            verb: self.verb.clone(),
            group: self.api_group.clone(),
            resource: self.resource.clone(),
            subresource: non_empty(&self.subresource),
            namespace: non_empty(&self.namespace),
            name: non_empty(&self.name),
        })
    }
}
