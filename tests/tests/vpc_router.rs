//! The simulator's VPC router in the whole system: pods whose NICs come from different vxnets
//! of one VPC reach each other, and a pod reaches its node's primary address, through the
//! vxnet gateways as in a real VPC.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hostnic_tests::cluster::{Cluster, ClusterConfig};
use hostnic_tests::pods::{Pod, Pods};
use hostnic_tests::privilege::require_root;
use hostnic_tests::scenario;

const POOL: &str = "routed";

#[test]
fn pods_reach_each_other_across_vxnets_and_their_nodes_primary_address() {
    if !require_root("pods_reach_each_other_across_vxnets_and_their_nodes_primary_address") {
        return;
    }
    let missing = scenario::missing_prerequisites();
    assert!(missing.is_empty(), "missing: {missing:?}");
    let config = ClusterConfig {
        nodes: 1,
        // The primary NICs in a vxnet of their own: every pod-to-node packet crosses the router.
        primary_vxnets: vec![("vxnet-hnprim1".into(), "172.30.9.0/24".into())],
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config, &mut |_| {}).expect("cluster");
    let result = routed(&cluster);
    if let Err(e) = &result {
        panic!("{e:#}\n{}", cluster.logs(30));
    }
}

fn routed(cluster: &Cluster) -> Result<()> {
    let vxnets = cluster.config().vxnet_ids();
    cluster.apply_pool(POOL, 2, &vxnets)?;
    cluster.wait_converged(POOL, 2, Duration::from_secs(90))?;
    let pods = Pods::new(cluster)?;
    // The operator spreads new NICs over the freer vxnet, so a few pods cover both.
    let mut running: Vec<Pod> = Vec::new();
    let (a, b) = loop {
        if running.len() == 6 {
            bail!("6 pods, all in one vxnet");
        }
        let name = format!("pod-{}", running.len());
        running.push(pods.add_retrying(0, &name, Duration::from_secs(30))?);
        let last = running.len() - 1;
        if let Some(other) = running[..last]
            .iter()
            .position(|p| p.gateway != running[last].gateway)
        {
            break (other, last);
        }
    };
    let (a, b) = (&running[a], &running[b]);
    let node = &cluster.nodes[0].instance;
    let (_, primary_ip) = cluster
        .sim
        .primary_nics()?
        .remove(node)
        .with_context(|| format!("no primary NIC for {node}"))?;
    for (from, to, what) in [
        (a, b.ip.as_str(), "a pod in the other vxnet"),
        (b, a.ip.as_str(), "a pod in the other vxnet"),
        (a, primary_ip.as_str(), "its node's primary address"),
        (b, primary_ip.as_str(), "its node's primary address"),
    ] {
        if !from.netns.ping(to, 2) {
            bail!(
                "{} ({}, gateway {}) cannot reach {what} {to}",
                from.name,
                from.ip,
                from.gateway
            );
        }
    }
    for pod in &running {
        pods.del(pod)?;
    }
    drop(running);
    cluster.delete_pools(Duration::from_secs(60))?;
    let left = cluster.leftovers()?;
    if !left.is_empty() {
        bail!("left behind: {left:?}");
    }
    Ok(())
}
