//! The I/O: a kube client from the kubeconfig, and the objects the commands look at.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hostnic_crds::{HostNic, NicPool};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::why::AGENT_LABEL;

/// A client as kubectl would make it: `--kubeconfig` and `--context` when given, else the
/// usual search ($KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (None, None) => return Client::try_default().await.context("find a cluster"),
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options).await?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await?,
    };
    Client::try_from(config).context("build the kube client")
}

/// Every NicPool and every HostNic.
pub async fn pools_and_nics(
    client: &Client,
) -> anyhow::Result<(Vec<Arc<NicPool>>, Vec<Arc<HostNic>>)> {
    let lp = ListParams::default();
    let pools = Api::<NicPool>::all(client.clone())
        .list(&lp)
        .await
        .context("list NicPools")?;
    let nics = Api::<HostNic>::all(client.clone())
        .list(&lp)
        .await
        .context("list HostNics")?;
    Ok((
        pools.items.into_iter().map(Arc::new).collect(),
        nics.items.into_iter().map(Arc::new).collect(),
    ))
}

/// What `why` needs besides the pools and NICs.
#[derive(Debug)]
pub struct PodView {
    pub pod: Pod,
    pub node: Option<Node>,
    pub agents: Vec<Pod>,
}

/// The pod, its node and the agent pods.
pub async fn pod_view(client: &Client, namespace: &str, name: &str) -> anyhow::Result<PodView> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("get pod {namespace}/{name}"))?;
    let node = match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(n) => Api::<Node>::all(client.clone())
            .get_opt(n)
            .await
            .with_context(|| format!("get node {n}"))?,
        None => None,
    };
    let selector = format!("{}={}", AGENT_LABEL.0, AGENT_LABEL.1);
    let agents = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .context("list the agent pods")?
        .items;
    Ok(PodView { pod, node, agents })
}
