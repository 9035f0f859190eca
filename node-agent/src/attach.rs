//! The kernel side of claims and releases: moving a NIC's link between the node netns and a
//! pod netns and configuring it, each step undone if a later one fails.
//!
//! The host name of a link in a pod is kept in its `ifalias`, so a release needs no outside
//! state to restore it (as the reference host-device plugin does).

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use rtnetlink::Handle;

use crate::decide;
use crate::netlink::{self, Link, RouteEntry};
use crate::netns::{Netns, run_in};
use crate::{Error, Result};

/// What a claimed NIC must look like inside the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachSpec {
    /// The NIC's MAC (nic_id).
    pub mac: String,
    /// Interface name in the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// MTU to set; `None` keeps the NIC's.
    pub mtu: Option<u32>,
    /// Pod address with the vxnet prefix length.
    pub address: Ipv4Net,
    /// Vxnet gateway: the default route.
    pub gateway: Ipv4Addr,
    /// Further routes, gateways already resolved.
    pub routes: Vec<RouteEntry>,
    /// Destinations routed through the node's own address in the pod's subnet (gateway
    /// `0.0.0.0`). The address is read from the node's kernel when the NIC moves: it is a fact
    /// of the node (its primary NIC, or the gateway NIC the agent configured), so no per-node
    /// record in the API is needed, and a claim never routes through an address that is not up.
    pub via_node: Vec<Ipv4Net>,
}

impl AttachSpec {
    /// Every route the pod gets: the default route first, then the others.
    pub fn all_routes(&self) -> Vec<RouteEntry> {
        let mut all = vec![RouteEntry {
            dst: Ipv4Net::default(),
            gw: Some(self.gateway),
        }];
        all.extend(self.routes.iter().cloned());
        all
    }

    /// This spec with its routes via the node going through `node`.
    pub fn via(mut self, node: Ipv4Addr) -> Self {
        for dst in std::mem::take(&mut self.via_node) {
            let entry = RouteEntry {
                dst,
                gw: Some(node),
            };
            if !self.routes.contains(&entry) {
                self.routes.push(entry);
            }
        }
        self
    }
}

/// Outcome of a successful attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// Name the link had on the node (now in its ifalias).
    pub host_name: String,
    /// MTU of the link in the pod.
    pub mtu: u32,
    /// What was applied: the spec with its routes via the node resolved.
    pub spec: AttachSpec,
}

/// Name used when a link's host name is unknown or taken: `hn` and the MAC's hex digits.
pub fn fallback_name(mac: &str) -> String {
    let hex: String = mac.chars().filter(|c| *c != ':').collect();
    let tail = hex.len().saturating_sub(12);
    format!("hn{}", &hex[tail..])
}

/// Moves the NIC with `spec.mac` from `node` into `pod` named `spec.ifname` and configures it.
/// On failure every step done is undone: the link is back in `node` under its host name.
pub async fn attach(node: Arc<Netns>, pod: Arc<Netns>, spec: AttachSpec) -> Result<Attached> {
    let (node_fd, pod_fd) = (node.raw_fd(), pod.raw_fd());
    let node_name = node.path().display().to_string();
    // The pod netns goes last: the thread ends there, so the sysctl writes land in the pod.
    run_in(vec![node.clone(), pod.clone()], move |handles| async move {
        let (nh, ph) = (&handles[0], &handles[1]);
        let link = netlink::link_by_mac(nh, &spec.mac)
            .await?
            .ok_or_else(|| Error::LinkNotFound {
                mac: spec.mac.clone(),
                netns: node_name,
            })?;
        // Before anything moves, so a node without its address in the vxnet changes nothing.
        let spec = resolve(nh, spec).await?;
        let started = std::time::Instant::now();
        // One request: the kernel closes the link as it leaves the node, and keeps the alias.
        if let Err(e) = netlink::move_into(nh, link.index, pod_fd, &spec.ifname, spec.mtu, &link.name).await {
            if let Err(undo) = put_back(nh, ph, &link, node_fd).await {
                tracing::error!(mac = %spec.mac, error = %undo, "undo of a failed move failed");
            }
            return Err(e);
        }
        let moved = started.elapsed();
        let configured = configure(ph, &spec).await;
        tracing::debug!(
            mac = %spec.mac,
            move_ms = moved.as_secs_f64() * 1e3,
            configure_ms = (started.elapsed() - moved).as_secs_f64() * 1e3,
            "attach steps"
        );
        match configured {
            Ok(mtu) => Ok(Attached {
                host_name: link.name,
                mtu,
                spec,
            }),
            Err(e) => {
                if let Err(undo) = move_out(ph, nh, &spec.mac, node_fd).await {
                    tracing::error!(mac = %spec.mac, error = %undo, "undo of a failed attach failed");
                }
                Err(e)
            }
        }
    })
    .await
}

/// `spec` with its routes via the node resolved against the addresses of the node netns `nh`.
async fn resolve(nh: &Handle, spec: AttachSpec) -> Result<AttachSpec> {
    if spec.via_node.is_empty() {
        return Ok(spec);
    }
    let subnet = spec.address.trunc();
    let addresses = netlink::addresses_by_link(nh).await?;
    let node = decide::node_address(spec.address, addresses.into_values().flatten())
        .ok_or(Error::NoNodeAddress { subnet })?;
    Ok(spec.via(node))
}

/// `spec` with its routes via the node resolved in `node` (see [`AttachSpec::via_node`]).
pub async fn resolved(node: Arc<Netns>, spec: AttachSpec) -> Result<AttachSpec> {
    if spec.via_node.is_empty() {
        return Ok(spec);
    }
    run_in(vec![node], move |handles| async move {
        resolve(&handles[0], spec).await
    })
    .await
}

/// Brings `link` back to the node as it was before a move that failed: the kernel may have
/// moved it and then failed the rename (the pod's name is taken), leaving it in the pod under
/// its node name with the new MTU.
async fn put_back(nh: &Handle, ph: &Handle, link: &Link, node_fd: i32) -> Result<()> {
    if let Some(moved) = netlink::link_by_mac(ph, &link.mac).await? {
        netlink::move_to(ph, moved.index, node_fd, &link.name).await?;
    }
    if let Some(home) = netlink::link_by_mac(nh, &link.mac).await?
        && (home.mtu != link.mtu || home.alias != link.alias)
    {
        netlink::restore(
            nh,
            home.index,
            link.mtu,
            link.alias.as_deref().unwrap_or(""),
        )
        .await?;
    }
    Ok(())
}

async fn configure(ph: &Handle, spec: &AttachSpec) -> Result<u32> {
    let link = netlink::link_by_mac(ph, &spec.mac)
        .await?
        .ok_or_else(|| Error::LinkNotFound {
            mac: spec.mac.clone(),
            netns: "pod".into(),
        })?;
    // Announce the address with a gratuitous ARP when the link comes up: the IP may have
    // belonged to a pod elsewhere (it moved with the NIC) and neighbours still cache it.
    let sysctl = format!("/proc/sys/net/ipv4/conf/{}/arp_notify", spec.ifname);
    std::fs::write(&sysctl, "1").map_err(|source| Error::Io {
        context: "write arp_notify sysctl in pod",
        source,
    })?;
    netlink::add_address(ph, link.index, spec.address).await?;
    netlink::set_up(ph, link.index).await?;
    for route in spec.all_routes() {
        netlink::add_route(ph, link.index, route.dst, route.gw).await?;
    }
    Ok(spec.mtu.unwrap_or(link.mtu))
}

/// Moves the link with `mac` from the netns of `from` to the node (`node_fd`) under its host
/// name (ifalias, else [`fallback_name`]), then tidies it on the node. Returns the name used,
/// or `None` when the link is not in `from`.
async fn move_out(from: &Handle, nh: &Handle, mac: &str, node_fd: i32) -> Result<Option<String>> {
    let Some(link) = netlink::link_by_mac(from, mac).await? else {
        return Ok(None);
    };
    let wanted = link.alias.clone().unwrap_or_else(|| fallback_name(mac));
    let name = match netlink::move_to(from, link.index, node_fd, &wanted).await {
        Ok(()) => wanted,
        Err(Error::Netlink { source, .. })
            if netlink::is_errno(&source, nix::errno::Errno::EEXIST) =>
        {
            // The name is taken on the node. The kernel either refused the move (the link's
            // pod name is taken there too) or moved the link and then failed the rename.
            let fallback = fallback_name(mac);
            match netlink::link_by_mac(from, mac).await? {
                Some(still) => netlink::move_to(from, still.index, node_fd, &fallback).await?,
                None => {
                    let home = netlink::link_by_mac(nh, mac).await?.ok_or_else(|| {
                        Error::LinkNotFound {
                            mac: mac.to_owned(),
                            netns: "the node, after a failed move home".into(),
                        }
                    })?;
                    netlink::rename(nh, home.index, &fallback).await?;
                }
            }
            fallback
        }
        Err(e) => return Err(e),
    };
    tidy_on_node(nh, mac).await?;
    Ok(Some(name))
}

/// Brings a free NIC's link on the node to rest: down, no addresses, no alias, and back under
/// its host name if it came home under another (a real NIC returns from a destroyed pod
/// netns with its pod name). Returns the link, or `None` if it is not on the node.
async fn tidy_on_node(nh: &Handle, mac: &str) -> Result<Option<Link>> {
    let Some(mut link) = netlink::link_by_mac(nh, mac).await? else {
        return Ok(None);
    };
    if link.up {
        netlink::set_down(nh, link.index).await?;
        link.up = false;
    }
    if let Some(alias) = link.alias.take() {
        if alias != link.name && netlink::rename(nh, link.index, &alias).await.is_ok() {
            link.name = alias;
        }
        netlink::set_down_with_alias(nh, link.index, "").await?;
    }
    netlink::flush_addresses(nh, link.index).await?;
    Ok(Some(link))
}

/// Where a released NIC ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    /// Its name on the node, if it is there (a veth stand-in vanishes with its pod netns).
    pub host_name: Option<String>,
}

/// Brings the NIC with `mac` back from `pod` (if given and still there) to the node and puts
/// it to rest. Succeeds when the link is already on the node, or nowhere.
pub async fn detach(node: Arc<Netns>, pod: Option<Arc<Netns>>, mac: String) -> Result<Detached> {
    let node_fd = node.raw_fd();
    let mut namespaces = vec![node.clone()];
    namespaces.extend(pod.clone());
    run_in(namespaces, move |handles| async move {
        let nh = &handles[0];
        if let Some(ph) = handles.get(1)
            && let Some(name) = move_out(ph, nh, &mac, node_fd).await?
        {
            return Ok(Detached {
                host_name: Some(name),
            });
        }
        let link = tidy_on_node(nh, &mac).await?;
        Ok(Detached {
            host_name: link.map(|l| l.name),
        })
    })
    .await
}

/// Finds the link with `mac` in `pod`, if it is there.
pub async fn inspect(pod: Arc<Netns>, mac: String) -> Result<Option<Link>> {
    run_in(vec![pod], move |handles| async move {
        netlink::link_by_mac(&handles[0], &mac).await
    })
    .await
}

/// Lists what differs between `spec` and the pod's netns; empty when all is as claimed.
pub async fn check(pod: Arc<Netns>, spec: AttachSpec) -> Result<Vec<String>> {
    run_in(vec![pod], move |handles| async move {
        let ph = &handles[0];
        let mut problems = Vec::new();
        let Some(link) = netlink::link_by_name(ph, &spec.ifname).await? else {
            problems.push(format!("no interface {} in the pod netns", spec.ifname));
            return Ok(problems);
        };
        if !link.mac.eq_ignore_ascii_case(&spec.mac) {
            problems.push(format!(
                "interface {} has MAC {}, expected {}",
                spec.ifname, link.mac, spec.mac
            ));
        }
        if !link.up {
            problems.push(format!("interface {} is down", spec.ifname));
        }
        let addresses = netlink::addresses(ph, link.index).await?;
        if !addresses.contains(&spec.address) {
            problems.push(format!(
                "address {} missing on {}",
                spec.address, spec.ifname
            ));
        }
        let routes = netlink::routes(ph, link.index).await?;
        for want in spec.all_routes() {
            if !routes.contains(&want) {
                let via = want
                    .gw
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "link".into());
                problems.push(format!("route {} via {via} missing", want.dst));
            }
        }
        Ok(problems)
    })
    .await
}

/// What the agent does to one free or gateway NIC's link on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// Keep it down and unconfigured (a free NIC).
    Rest,
    /// Give it this address and bring it up (a gateway NIC).
    Gateway(Ipv4Net),
    /// Only look (a NIC in flight or in a pod).
    Look,
}

/// Applies each action to the link with its MAC on the node, in one netns thread. Returns per
/// NIC the link's name when present, or why the action failed.
pub async fn on_node(
    node: Arc<Netns>,
    items: Vec<(String, NodeAction)>,
) -> Result<Vec<Result<Option<String>>>> {
    run_in(vec![node], move |handles| async move {
        let nh = &handles[0];
        // One dump of links and one of addresses serve every NIC of the pass.
        let links = netlink::links(nh).await?;
        let addresses = netlink::addresses_by_link(nh).await?;
        let mut out = Vec::with_capacity(items.len());
        for (mac, action) in items {
            let link = netlink::pick_by_mac(&links, &mac);
            let addrs = link
                .as_ref()
                .and_then(|l| addresses.get(&l.index))
                .cloned()
                .unwrap_or_default();
            out.push(node_action(nh, &mac, action, link, &addrs).await);
        }
        Ok(out)
    })
    .await
}

async fn node_action(
    nh: &Handle,
    mac: &str,
    action: NodeAction,
    link: Option<Link>,
    addrs: &[Ipv4Net],
) -> Result<Option<String>> {
    let link = match (action, link) {
        (_, None) => None,
        (NodeAction::Look, link) => link,
        (NodeAction::Rest, Some(l)) => {
            if l.up || l.alias.is_some() || !addrs.is_empty() {
                tidy_on_node(nh, mac).await?
            } else {
                Some(l)
            }
        }
        (NodeAction::Gateway(addr), Some(l)) => {
            if !addrs.contains(&addr) {
                netlink::add_address(nh, l.index, addr).await?;
            }
            if !l.up {
                netlink::set_up(nh, l.index).await?;
            }
            Some(l)
        }
    };
    Ok(link.map(|l| l.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_name_fits_ifnamsiz() {
        let name = fallback_name("52:54:aa:00:00:01");
        assert_eq!(name, "hn5254aa000001");
        assert!(name.len() <= 15);
    }
}
