//! Hot-plug into the real kernel: an attached NIC becomes a link with the NIC's MAC in its
//! instance's node netns, detached NICs vanish, and a NIC whose link died with a pod netns comes
//! back to the node, as a real hot-plugged NIC returns to the host.
//!
//! Layout, per vxnet: a netns made by the simulator (`hn-vx-<pid>-<random>`) holding bridge `br0`
//! with the vxnet gateway address. Per attached NIC: a veth pair created inside that vxnet
//! netns; the end named `v<mac hex>` stays on the bridge, the other end gets the NIC's MAC and
//! is moved into the node netns as `enx<mac hex>` (the name MAC-based udev naming gives a real
//! NIC). Nothing is ever created in the host's own netns. Deleting a vxnet netns removes every
//! pair of it, wherever the NIC ends went.
//!
//! Why `ip -n` rather than rtnetlink: every step names a netns, and `ip` enters it in its own
//! process, so no thread of ours ever calls setns (the style guide's hazard), the crate needs
//! no unsafe code, and a few milliseconds per exec do not matter at cloud-API speeds.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::Rng;
use tokio::process::Command;
use tokio::task::JoinSet;

use crate::model::LinkChange;

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
}

/// The kernel side of the simulator (absent when hot-plug is off).
#[derive(Debug, Default)]
pub(crate) struct Hotplug {
    /// vxnet id → netns name.
    vxnets: HashMap<String, String>,
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
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hotplug {
    /// Creates one netns with a gateway bridge per vxnet. On failure, removes what it made.
    pub(crate) async fn setup(networks: &[(String, Ipv4Net, Ipv4Addr)]) -> Result<Self, String> {
        sweep_orphans();
        let mut hp = Self::default();
        for (id, cidr, gateway) in networks {
            let suffix: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(4)
                .map(|c| char::from(c).to_ascii_lowercase())
                .collect();
            let ns = format!("{NETNS_PREFIX}{}-{suffix}", std::process::id());
            let addr = format!("{gateway}/{}", cidr.prefix_len());
            let steps: [&[&str]; 5] = [
                &["netns", "add", &ns],
                &["-n", &ns, "link", "set", "lo", "up"],
                &["-n", &ns, "link", "add", BRIDGE, "type", "bridge"],
                &["-n", &ns, "addr", "add", &addr, "dev", BRIDGE],
                &["-n", &ns, "link", "set", BRIDGE, "up"],
            ];
            for (i, step) in steps.iter().enumerate() {
                if let Err(e) = ip(step).await {
                    if i > 0 {
                        hp.vxnets.insert(id.clone(), ns.clone());
                    }
                    delete_netns(hp.vxnets.values());
                    return Err(e);
                }
            }
            tracing::info!(vxnet = %id, netns = %ns, gateway = %addr, "vxnet netns ready");
            hp.vxnets.insert(id.clone(), ns);
        }
        Ok(hp)
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
                    let result = plug(&vx, &change.mac, &node).await;
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
                match plug(ns, mac, &p.node).await {
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

/// Creates the pair in the vxnet netns and moves the NIC end into the node (one request
/// moves and renames, so no half-named link is ever visible there).
async fn plug(vx: &str, mac: &str, node: &str) -> Result<(), String> {
    let (peer, tmp) = (peer_name(mac), format!("n{}", hex(mac)));
    ip(&[
        "-n", vx, "link", "add", &tmp, "address", mac, "type", "veth", "peer", "name", &peer,
    ])
    .await?;
    let rest = async {
        ip(&["-n", vx, "link", "set", &peer, "master", BRIDGE, "up"]).await?;
        ip(&[
            "-n",
            vx,
            "link",
            "set",
            &tmp,
            "netns",
            node,
            "name",
            &link_name(mac),
        ])
        .await
    };
    if let Err(e) = rest.await {
        let _ = ip(&["-n", vx, "link", "del", &peer]).await;
        return Err(e);
    }
    Ok(())
}

fn link_names(json: &str) -> Vec<String> {
    serde_json::from_str::<Vec<serde_json::Value>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}
