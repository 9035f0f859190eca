//! Hot-plug into the real kernel: an attached NIC becomes a link with the NIC's MAC in its
//! instance's node netns, detached NICs vanish, and a NIC whose link died with a pod netns comes
//! back to the node, as a real hot-plugged NIC returns to the host.
//!
//! Layout, per vxnet: a netns made by the simulator (`hn-vx-<pid>-<random>`) holding bridge `br0`.
//! Per attached NIC: a veth pair whose end named `v<mac hex>` is on that bridge, and whose
//! other end, with the NIC's MAC, is made in the node netns as `enx<mac hex>` (the name
//! MAC-based udev naming gives a real NIC). Each instance's primary NIC is plugged the same
//! way and, as a VM's `eth0`, gets its address and a default route through its vxnet's
//! gateway.
//!
//! The VPC router, per router id: one more netns (same naming) forwarding IPv4, with a leg
//! `l<n>` on the bridge of each vxnet joined to it; the leg holds the vxnet's gateway address.
//! So pods in different vxnets of one VPC reach each other, and a pod reaches its node's
//! primary address, through the gateway as in a real VPC. A vxnet outside any VPC has no
//! router: its gateway address sits on `br0` itself and nothing forwards. Nothing is ever
//! created in the host's own netns. Deleting a vxnet netns removes every pair of it, wherever
//! the NIC ends went.
//!
//! Why `ip -n` rather than rtnetlink: every step names a netns, and `ip` enters it in its own
//! process, so no thread of ours ever calls setns (the style guide's hazard), the crate needs
//! no unsafe code, and a few milliseconds per exec do not matter at cloud-API speeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::Rng;
use tokio::process::Command;
use tokio::task::JoinSet;

use crate::model::{LinkChange, PrimaryLink, VxnetNetwork};

/// The bridge inside each vxnet netns.
const BRIDGE: &str = "br0";

/// Vxnet netns are named `hn-vx-<pid>-<random>`: the pid of the simulator's process lets a
/// later simulator remove those of one that was killed (SIGKILL leaves no chance to clean up).
const NETNS_PREFIX: &str = "hn-vx-";

/// An attached NIC with a link on its node.
#[derive(Debug)]
struct Plugged {
    vxnet: String,
    node: String,
    /// Its link could not be (re-)created: warn once, keep trying quietly while the node
    /// netns exists.
    lost: bool,
    /// A primary NIC's address and gateway, set again whenever its link is re-created.
    addressing: Option<Addressing>,
}

/// What a primary NIC is configured with in its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Addressing {
    address: Ipv4Net,
    gateway: Ipv4Addr,
}

/// The kernel side of the simulator (absent when hot-plug is off).
#[derive(Debug, Default)]
pub(crate) struct Hotplug {
    /// vxnet id → netns name.
    vxnets: HashMap<String, String>,
    /// VPC router id → netns name.
    routers: HashMap<String, String>,
    /// mac → where its link lives.
    plugged: BTreeMap<String, Plugged>,
}

fn hex(mac: &str) -> String {
    mac.replace(':', "")
}

/// Name of the NIC's link in the node netns.
pub fn link_name(mac: &str) -> String {
    format!("enx{}", hex(mac))
}

fn peer_name(mac: &str) -> String {
    format!("v{}", hex(mac))
}

async fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args).await
}

async fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("run {program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hotplug {
    /// Creates one netns with a bridge per vxnet and one router netns per VPC. On failure,
    /// removes what it made.
    pub(crate) async fn setup(networks: &[VxnetNetwork]) -> Result<Self, String> {
        sweep_orphans();
        let mut hp = Self::default();
        if let Err(e) = hp.build(networks).await {
            delete_netns(hp.owned_netns().iter());
            return Err(e);
        }
        Ok(hp)
    }

    async fn build(&mut self, networks: &[VxnetNetwork]) -> Result<(), String> {
        let routers: BTreeSet<&String> =
            networks.iter().filter_map(|n| n.router.as_ref()).collect();
        for router in routers {
            let ns = new_netns_name();
            ip(&["netns", "add", &ns]).await?;
            self.routers.insert(router.clone(), ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
            // Inside the router's own netns only: a fresh netns starts with forwarding off.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )
            .await?;
            tracing::info!(%router, netns = %ns, "VPC router netns ready");
        }
        for (leg, net) in networks.iter().enumerate() {
            let ns = new_netns_name();
            ip(&["netns", "add", &ns]).await?;
            self.vxnets.insert(net.id.clone(), ns.clone());
            let gateway = format!("{}/{}", net.gateway, net.cidr.prefix_len());
            for step in [
                &["-n", &ns, "link", "set", "lo", "up"][..],
                &["-n", &ns, "link", "add", BRIDGE, "type", "bridge"],
                &["-n", &ns, "link", "set", BRIDGE, "up"],
            ] {
                ip(step).await?;
            }
            match net.router.as_ref().and_then(|r| self.routers.get(r)) {
                Some(router) => add_router_leg(&ns, router, &format!("l{leg}"), &gateway).await?,
                None => ip(&["-n", &ns, "addr", "add", &gateway, "dev", BRIDGE])
                    .await
                    .map(drop)?,
            }
            tracing::info!(vxnet = %net.id, netns = %ns, %gateway, router = ?net.router, "vxnet netns ready");
        }
        Ok(())
    }

    /// Every netns this layer made: vxnets and routers.
    pub(crate) fn owned_netns(&self) -> Vec<String> {
        self.vxnets
            .values()
            .chain(self.routers.values())
            .cloned()
            .collect()
    }

    /// VPC router id → the netns playing it.
    pub(crate) fn router_netns(&self) -> &HashMap<String, String> {
        &self.routers
    }

    /// Plugs the primary NICs not plugged yet (instances added at run time included), each
    /// with its address and default route.
    pub(crate) async fn adopt_primaries(&mut self, primaries: Vec<PrimaryLink>) {
        for p in primaries {
            if self.plugged.contains_key(&p.mac) || !netns_path(&p.node).exists() {
                continue;
            }
            let Some(vx) = self.vxnets.get(&p.vxnet).cloned() else {
                continue;
            };
            let addressing = Addressing {
                address: p.address,
                gateway: p.gateway,
            };
            let result = plug(&vx, &p.mac, &p.node, Some(addressing)).await;
            match &result {
                Ok(()) => {
                    tracing::info!(nic = %p.mac, node = %p.node, address = %p.address, "primary NIC plugged")
                }
                Err(error) => {
                    tracing::warn!(nic = %p.mac, node = %p.node, %error, "cannot plug primary NIC")
                }
            }
            self.plugged.insert(
                p.mac,
                Plugged {
                    vxnet: p.vxnet,
                    node: p.node,
                    lost: result.is_err(),
                    addressing: Some(addressing),
                },
            );
        }
    }

    /// vxnet id → the netns made for it.
    pub(crate) fn vxnet_netns(&self) -> &HashMap<String, String> {
        &self.vxnets
    }

    /// Plugs or unplugs NICs, all at once (each is a few `ip` processes). `node` is the
    /// instance's netns; unmapped instances get no link.
    pub(crate) async fn apply(&mut self, changes: Vec<(LinkChange, Option<String>)>) {
        let mut running = JoinSet::new();
        for (change, node) in changes {
            if change.plug {
                let (Some(node), Some(vx)) = (node, self.vxnets.get(&change.vxnet).cloned()) else {
                    continue;
                };
                running.spawn(async move {
                    let result = plug(&vx, &change.mac, &node, None).await;
                    (change, node, result)
                });
            } else if let Some(p) = self.plugged.remove(&change.mac)
                && let Some(vx) = self.vxnets.get(&p.vxnet).cloned()
            {
                running.spawn(async move {
                    // Deleting our end deletes the pair, wherever the NIC end is (node or pod).
                    let result =
                        match ip(&["-n", &vx, "link", "del", &peer_name(&change.mac)]).await {
                            Err(e) if !e.contains("Cannot find device") => Err(e),
                            _ => Ok(()),
                        };
                    (change, p.node, result)
                });
            }
        }
        while let Some(done) = running.join_next().await {
            let (change, node, result) = match done {
                Ok(done) => done,
                Err(error) => {
                    tracing::warn!(%error, "hot-plug task failed");
                    continue;
                }
            };
            let (nic, link) = (&change.mac, link_name(&change.mac));
            match (&result, change.plug) {
                (Ok(()), true) => tracing::info!(%nic, %node, %link, "NIC hot-plugged"),
                (Ok(()), false) => tracing::info!(%nic, %node, "NIC hot-unplugged"),
                (Err(error), _) => {
                    tracing::warn!(%nic, %node, %error, plug = change.plug, "hot-plug failed")
                }
            }
            if change.plug {
                let lost = result.is_err();
                self.plugged.insert(
                    change.mac,
                    Plugged {
                        vxnet: change.vxnet,
                        node,
                        lost,
                        addressing: None,
                    },
                );
            }
        }
    }

    /// Re-creates, in their node netns, the NICs whose veth pair vanished (a pod netns holding
    /// the NIC end was destroyed).
    pub(crate) async fn check(&mut self) {
        for (vxnet, ns) in &self.vxnets {
            if !self.plugged.values().any(|p| &p.vxnet == vxnet) {
                continue;
            }
            let names = match ip(&["-n", ns, "-j", "link", "show"]).await {
                Ok(json) => link_names(&json),
                Err(error) => {
                    tracing::warn!(%vxnet, %error, "cannot list vxnet links");
                    continue;
                }
            };
            for (mac, p) in self.plugged.iter_mut().filter(|(_, p)| &p.vxnet == vxnet) {
                if names.contains(&peer_name(mac)) {
                    continue;
                }
                // A vanished node (netns deleted) is not retried until it exists again.
                if !netns_path(&p.node).exists() {
                    if !p.lost {
                        tracing::warn!(nic = %mac, node = %p.node, "node netns gone; NIC link not re-created");
                        p.lost = true;
                    }
                    continue;
                }
                match plug(ns, mac, &p.node, p.addressing).await {
                    Ok(()) => {
                        tracing::info!(nic = %mac, node = %p.node, "NIC link vanished; back on its node");
                        p.lost = false;
                    }
                    Err(error) if !p.lost => {
                        tracing::warn!(nic = %mac, node = %p.node, %error, "cannot re-create NIC link");
                        p.lost = true;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Deletes the netns the simulator made (and with them every veth pair, wherever the NIC ends
/// went); ones already gone are skipped. Blocking, so `Drop` can use it.
pub(crate) fn delete_netns<'a>(names: impl IntoIterator<Item = &'a String>) {
    for ns in names {
        if !netns_path(ns).exists() {
            continue;
        }
        let out = std::process::Command::new("ip")
            .args(["netns", "del", ns])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            tracing::warn!(netns = %ns, ?out, "cannot delete vxnet netns");
        }
    }
}

/// The file of a netns given by name (under `/var/run/netns`) or path.
fn netns_path(netns: &str) -> std::path::PathBuf {
    if netns.contains('/') {
        netns.into()
    } else {
        std::path::Path::new("/var/run/netns").join(netns)
    }
}

/// Deletes the vxnet netns of simulator processes that no longer exist.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    let orphans: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix(NETNS_PREFIX)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new("/proc").join(pid.to_string()).exists())
        })
        .collect();
    for ns in &orphans {
        tracing::info!(netns = %ns, "removing the vxnet netns of a simulator that is gone");
    }
    delete_netns(&orphans);
}

/// Creates the pair in one request: the bridge end enslaved and up in the vxnet netns, the NIC
/// end with its MAC and final name in the node, so no half-made link is ever visible there. A
/// primary NIC is then addressed and routed in the node. The NIC end is created in the node
/// rather than moved there: a move waits in the kernel's `rcu_barrier()` under RTNL (about
/// 20 ms here), so ten NICs of one job appeared over 0.22 s, a cost of this emulation and not
/// of the cloud it models (whose attach time is the job's).
async fn plug(
    vx: &str,
    mac: &str,
    node: &str,
    addressing: Option<Addressing>,
) -> Result<(), String> {
    let (peer, link) = (peer_name(mac), link_name(mac));
    ip(&[
        "-n", vx, "link", "add", &peer, "master", BRIDGE, "up", "type", "veth", "peer", "name",
        &link, "address", mac, "netns", node,
    ])
    .await?;
    if let Some(a) = addressing
        && let Err(e) = configure_primary(node, &link, a).await
    {
        let _ = ip(&["-n", vx, "link", "del", &peer]).await;
        return Err(e);
    }
    Ok(())
}

/// Address, up, default route via the gateway: what DHCP gives a VM's primary NIC.
async fn configure_primary(node: &str, link: &str, a: Addressing) -> Result<(), String> {
    // `ip -n` takes a name under /var/run/netns, not a path.
    let ns =
        netns_name(node).ok_or_else(|| format!("node netns {node} is not under /var/run/netns"))?;
    let (address, gateway) = (a.address.to_string(), a.gateway.to_string());
    ip(&["-n", &ns, "addr", "add", &address, "dev", link]).await?;
    ip(&["-n", &ns, "link", "set", link, "up"]).await?;
    ip(&[
        "-n", &ns, "route", "replace", "default", "via", &gateway, "dev", link,
    ])
    .await
    .map(drop)
}

/// The name of a netns given by name or by its path under `/var/run/netns` (or `/run/netns`).
fn netns_name(netns: &str) -> Option<String> {
    if !netns.contains('/') {
        return Some(netns.to_owned());
    }
    let path = std::path::Path::new(netns);
    let parent = path.parent()?;
    (parent == std::path::Path::new("/var/run/netns")
        || parent == std::path::Path::new("/run/netns"))
    .then(|| path.file_name()?.to_str().map(str::to_owned))
    .flatten()
}

/// A veth pair from the vxnet's bridge to the router: the router's end is the vxnet's gateway.
async fn add_router_leg(vx: &str, router: &str, leg: &str, gateway: &str) -> Result<(), String> {
    for step in [
        &[
            "-n", vx, "link", "add", "rtr0", "type", "veth", "peer", "name", "gw0",
        ][..],
        &["-n", vx, "link", "set", "gw0", "master", BRIDGE, "up"],
        &[
            "-n", vx, "link", "set", "rtr0", "netns", router, "name", leg,
        ],
        &["-n", router, "addr", "add", gateway, "dev", leg],
        &["-n", router, "link", "set", leg, "up"],
    ] {
        ip(step).await?;
    }
    Ok(())
}

/// `hn-vx-<pid>-<random>`: see [`NETNS_PREFIX`].
fn new_netns_name() -> String {
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(4)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{NETNS_PREFIX}{}-{suffix}", std::process::id())
}

fn link_names(json: &str) -> Vec<String> {
    serde_json::from_str::<Vec<serde_json::Value>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}
