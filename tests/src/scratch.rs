//! A real API server for the operator, agent and end-to-end tests: the scratch cluster named
//! by `HOSTNIC_TEST_KUBECONFIG`, which the tests then use one at a time and reset before each.
//!
//! Without it every test has a kube-mem of its own. With it the same tests check the stand-in
//! against the real thing. The cluster must be a scratch API server with no Nodes of its own
//! (envtest's etcd + kube-apiserver): the tests delete every NicPool, HostNic, Pod, Lease and
//! Event they could have made, and a pool would select a real node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hostnic_crds::{HostNic, NicPool};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, MutexGuard};

use crate::cluster::crd_files;
use crate::kubectl::Kubectl;

/// The variable naming the scratch cluster's kubeconfig.
pub const VAR: &str = "HOSTNIC_TEST_KUBECONFIG";

/// The label on every Node a test makes, so a reset can tell them from the cluster's own.
pub const NODE_LABEL: &str = "hostnic.qingcloud.com/test-node";

/// Namespaces the tests put Leases and Events in.
const NAMESPACES: [&str; 2] = ["hostnic-system", "default"];

/// The scratch cluster's kubeconfig, if `HOSTNIC_TEST_KUBECONFIG` names one.
pub fn kubeconfig() -> Option<PathBuf> {
    std::env::var_os(VAR).map(PathBuf::from)
}

/// Says (on stderr, with `why`) that the calling test needs kube-mem's own powers and is
/// skipped, when it runs against a scratch cluster.
pub fn skip_without_kube_mem(why: &str) -> bool {
    let real = kubeconfig().is_some();
    if real {
        eprintln!("skipped with {VAR}: the test {why}, which only kube-mem can");
    }
    real
}

/// One test's use of the scratch cluster: the tests of a binary take turns (the cluster's
/// objects are cluster-wide, and each test's operator would act on the others'); the turn
/// ends when this is dropped.
pub struct Turn {
    _guard: MutexGuard<'static, ()>,
    /// The kubeconfig's text.
    pub kubeconfig_yaml: String,
    /// A client for it.
    pub client: Client,
}

static TURNS: Mutex<()> = Mutex::const_new(());

impl Turn {
    /// Waits for the cluster, resets it and installs the hostnic CRDs.
    pub async fn take(path: &Path) -> Result<Self> {
        // A test that panicked in its turn left its objects to this reset.
        let guard = TURNS.lock().await;
        let kubeconfig_yaml = std::fs::read_to_string(path)
            .with_context(|| format!("read {VAR} {}", path.display()))?;
        let client =
            client(Kubeconfig::from_yaml(&kubeconfig_yaml).context("parse kubeconfig")?).await?;
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || install_crds(&path))
            .await
            .context("install CRDs")??;
        reset(&client).await?;
        for ns in NAMESPACES {
            ensure_namespace(&client, ns).await?;
        }
        Ok(Self {
            _guard: guard,
            kubeconfig_yaml,
            client,
        })
    }

    /// `take` for blocking callers (the end-to-end harness), on a runtime of its own; the
    /// turn's `client` is bound to that runtime and must not be used.
    pub fn take_blocking(path: &Path) -> Result<Self> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(Self::take(path))
    }
}

/// Applies the hostnic CRDs with kubectl and waits until they are served.
fn install_crds(kubeconfig: &Path) -> Result<()> {
    let kubectl = Kubectl::new(kubeconfig);
    let mut apply = vec!["apply".to_owned()];
    for f in crd_files()? {
        apply.push("-f".into());
        apply.push(f.display().to_string());
    }
    kubectl.run(&apply.iter().map(String::as_str).collect::<Vec<_>>())?;
    kubectl.run(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/nicpools.hostnic.qingcloud.com",
        "crd/hostnics.hostnic.qingcloud.com",
    ])?;
    Ok(())
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create namespace {name}")),
    }
}

/// Removes what an earlier test could have left: HostNics and NicPools (finalizers dropped,
/// their operator is gone), the test Nodes, and the Pods, Leases and Events of the tests'
/// namespaces. Refuses a cluster with Nodes of its own.
pub async fn reset(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let theirs: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .context("list nodes")?
        .items
        .into_iter()
        .filter(|n| !n.labels().contains_key(NODE_LABEL))
        .map(|n| n.name_any())
        .collect();
    if !theirs.is_empty() {
        bail!(
            "{VAR} names a cluster with Nodes of its own ({}); the tests need a scratch API \
             server without nodes (envtest's etcd + kube-apiserver)",
            theirs.join(", ")
        );
    }
    purge(Api::<HostNic>::all(client.clone())).await?;
    purge(Api::<NicPool>::all(client.clone())).await?;
    purge(nodes).await?;
    for ns in NAMESPACES {
        purge(Api::<Pod>::namespaced(client.clone(), ns)).await?;
        purge(Api::<Lease>::namespaced(client.clone(), ns)).await?;
        purge(Api::<Event>::namespaced(client.clone(), ns)).await?;
    }
    Ok(())
}

/// Deletes every object of `api`, dropping finalizers first, and waits until they are gone.
async fn purge<K>(api: Api<K>) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let what = std::any::type_name::<K>();
    for attempt in 0.. {
        let items = api.list(&ListParams::default()).await.context(what)?.items;
        if items.is_empty() {
            return Ok(());
        }
        if attempt == 100 {
            bail!("{} {what} objects left after 10 s of deleting", items.len());
        }
        for obj in items {
            let name = obj.name_any();
            if !obj.finalizers().is_empty() {
                let drop_finalizers = serde_json::json!({"metadata": {"finalizers": null}});
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&drop_finalizers),
                )
                .await
                .ok();
            }
            // At once: no kubelet will confirm a pod's graceful deletion.
            api.delete(&name, &DeleteParams::default().grace_period(0))
                .await
                .ok();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `kubeconfig_yaml` with every cluster reached at `addr` (a proxy in front of its API
/// server); a TLS server's certificate is still checked for the server's own name.
pub fn via(kubeconfig_yaml: &str, addr: SocketAddr) -> Result<Kubeconfig> {
    let mut kubeconfig = Kubeconfig::from_yaml(kubeconfig_yaml).context("parse kubeconfig")?;
    for cluster in kubeconfig
        .clusters
        .iter_mut()
        .filter_map(|c| c.cluster.as_mut())
    {
        let server: http::Uri = cluster
            .server
            .as_deref()
            .unwrap_or_default()
            .parse()
            .context("server URL")?;
        let scheme = server.scheme_str().unwrap_or("https");
        if scheme == "https" && cluster.tls_server_name.is_none() {
            cluster.tls_server_name = server.host().map(str::to_owned);
        }
        cluster.server = Some(format!("{scheme}://{addr}"));
    }
    Ok(kubeconfig)
}

/// A client for `kubeconfig`.
pub async fn client(kubeconfig: Kubeconfig) -> Result<Client> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("kubeconfig")?;
    Client::try_from(config).context("kube client")
}

/// The address of the API server of `kubeconfig_yaml`'s first cluster.
pub async fn server_addr(kubeconfig_yaml: &str) -> Result<SocketAddr> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_yaml).context("parse kubeconfig")?;
    let server: http::Uri = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.as_deref())
        .context("the kubeconfig names no server")?
        .parse()
        .context("server URL")?;
    let host = server.host().context("server host")?;
    let port = server
        .port_u16()
        .unwrap_or(if server.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}
