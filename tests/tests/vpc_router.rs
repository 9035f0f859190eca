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
    on_one_node(("vxnet-hnprim1", "172.30.9.0/24"), routed);
}

/// Runs `scenario` on a one-node cluster whose primary NIC is in a vxnet of its own
/// (`primary`: id and CIDR), so every pod-to-node packet crosses the router.
fn on_one_node(primary: (&str, &str), scenario: fn(&Cluster) -> Result<()>) {
    let missing = scenario::missing_prerequisites();
    assert!(missing.is_empty(), "missing: {missing:?}");
    let config = ClusterConfig {
        nodes: 1,
        primary_vxnets: vec![(primary.0.into(), primary.1.into())],
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config, &mut |_| {}).expect("cluster");
    if let Err(e) = scenario(&cluster) {
        panic!("{e:#}\n{}", cluster.logs(30));
    }
}

/// The primary address of the cluster's one node.
fn primary_ip(cluster: &Cluster) -> Result<String> {
    let node = &cluster.nodes[0].instance;
    let (_, ip) = cluster
        .sim
        .primary_nics()?
        .remove(node)
        .with_context(|| format!("no primary NIC for {node}"))?;
    Ok(ip)
}

/// Deletes the pools and checks that nothing is left behind.
fn teardown(cluster: &Cluster) -> Result<()> {
    cluster.delete_pools(Duration::from_secs(60))?;
    let left = cluster.leftovers()?;
    if !left.is_empty() {
        bail!("left behind: {left:?}");
    }
    Ok(())
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
    let primary_ip = primary_ip(cluster)?;
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
    teardown(cluster)
}

/// A route with gateway `0.0.0.0` through the real operator and agent: the primary NICs are in
/// a vxnet of their own, so the operator gives the node a gateway NIC in the pod's vxnet, the
/// agent brings it up with its address, and the pod's route goes through that address, read
/// from the node's kernel (no NicPool status involved): the node's primary address answers.
#[test]
fn a_route_via_the_node_goes_through_its_gateway_nic_in_the_pods_vxnet() {
    if !require_root("a_route_via_the_node_goes_through_its_gateway_nic_in_the_pods_vxnet") {
        return;
    }
    on_one_node(("vxnet-hnprim2", "172.30.8.0/24"), via_node);
}

fn via_node(cluster: &Cluster) -> Result<()> {
    let vxnets = cluster.config().vxnet_ids();
    let pool = serde_json::json!({
        "apiVersion": "hostnic.qingcloud.com/v1alpha1",
        "kind": "NicPool",
        "metadata": {
            "name": POOL,
            "annotations": {"hostnic.qingcloud.com/is-default-pool": "true"},
        },
        "spec": {
            "vxnets": [vxnets[0]],
            "size": 1,
            "quarantineSeconds": 0,
            "routes": [{"destination": "172.30.8.0/24", "gateway": "0.0.0.0"}],
        },
    });
    cluster.kubectl.apply(&pool.to_string())?;
    cluster.wait_available(POOL, 1, Duration::from_secs(90))?;
    let gateway_ip = |nics: &[serde_json::Value]| {
        nics.iter()
            .find(|n| n["spec"]["role"] == "Gateway")
            .and_then(|n| n["status"]["privateIp"].as_str().map(str::to_owned))
    };
    let gw = gateway_ip(&cluster.hostnics()?).context("no gateway HostNic")?;
    let pods = Pods::new(cluster)?;
    let pod = pods.add_retrying(0, "pod-via-node", Duration::from_secs(30))?;
    let routes = pod.netns.ip(&["-4", "route", "show", "172.30.8.0/24"]);
    if !routes.contains(&format!("via {gw} dev eth0")) {
        bail!("the pod's route does not go through the gateway NIC {gw}: {routes}");
    }
    let primary_ip = primary_ip(cluster)?;
    if !pod.netns.ping(&primary_ip, 2) {
        bail!(
            "{} cannot reach its node's primary address {primary_ip} via {gw}",
            pod.ip
        );
    }
    pods.del(&pod)?;
    drop(pod);
    teardown(cluster)
}
