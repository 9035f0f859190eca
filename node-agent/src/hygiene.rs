//! Background loops: report each NIC's link on the node (and keep free NICs at rest, gateway
//! NICs configured), release NICs of pods that are gone even if no DEL ever came, and retry
//! queued DELs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hostnic_crds::{HostNic, HostNicPhase};
use kube::ResourceExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::attach::{self, NodeAction};
use crate::claims::{Agent, PodNetns};
use crate::kube_io::Write;
use crate::locks::Held;
use crate::netns::{Netns, Probe};
use crate::{Error, decide};

fn is_bound(nic: &HostNic) -> bool {
    nic.status
        .as_ref()
        .is_some_and(|s| s.phase == HostNicPhase::Bound)
}

/// Reports links whenever the HostNics change or `link_events` is notified (a link came or
/// went on the node, see [`crate::link_events`]), and every `interval` anyway.
pub async fn report_links_loop(agent: Arc<Agent>, interval: Duration, link_events: Arc<Notify>) {
    loop {
        report_links(&agent).await;
        tokio::select! {
            _ = agent.view.changed.notified() => {
                // A burst of claims changes many HostNics; one pass after it is enough, and
                // claims should not queue behind a pass per change.
                tokio::time::sleep(CHANGE_DEBOUNCE).await;
            }
            _ = link_events.notified() => {
                // Hot-plugging or moving NICs comes in bursts of link events too, but a
                // hot-plugged NIC's report ends an attach the operator and maybe a pod wait
                // for: the link events of one attach job arrive within milliseconds.
                tokio::time::sleep(LINK_DEBOUNCE).await;
            }
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Wait after a HostNic change before a link pass, so bursts coalesce.
const CHANGE_DEBOUNCE: Duration = Duration::from_millis(100);

/// Wait after a link event before a link pass.
const LINK_DEBOUNCE: Duration = Duration::from_millis(25);

/// One pass: for every NIC expected on the node, find its link, apply its [`attach::NodeAction`]
/// and write `hostInterface` and `LinkReady` when they changed. A bound NIC whose link shows up
/// on the node has left its pod (a real NIC comes home by itself when its netns is destroyed):
/// that is the proof a release waits for, so it is released here.
pub async fn report_links(agent: &Agent) {
    let _gate = agent.gate.read().await;
    // Under a NIC's lock no claim or release is halfway through it, so a bound NIC's link on
    // the node really has come back. NICs a claim or release holds now wait for the next pass
    // (their end changes the view, which wakes one).
    let mut held: HashMap<String, Held<String>> = agent
        .view
        .nics()
        .iter()
        .filter_map(|n| Some((n.name_any(), agent.nic_locks.try_lock(&n.name_any())?)))
        .collect();
    let work: Vec<_> = agent
        .view
        .nics()
        .into_iter()
        .filter(|n| held.contains_key(&n.name_any()))
        .filter_map(|n| {
            let action = match decide::node_action(&n) {
                Some(action) => action,
                None if is_bound(&n) => NodeAction::Look,
                None => return None,
            };
            Some((decide::mac(&n)?, action, n))
        })
        .collect();
    held.retain(|name, _| work.iter().any(|(_, _, n)| &n.name_any() == name));
    if work.is_empty() {
        return;
    }
    let items = work
        .iter()
        .map(|(mac, action, _)| (mac.clone(), action.clone()))
        .collect();
    let results = match attach::on_node(agent.node_netns.clone(), items).await {
        Ok(r) => r,
        Err(error) => {
            warn!(%error, "could not inspect the node's links");
            return;
        }
    };
    // Each NIC is tended side by side with the others and let go as soon as it is done, for
    // the claims waiting on it: one after the other, the reports of an attach round of 5 took
    // 35 ms, and the last NIC's report ends the round.
    let tended: Vec<_> = work
        .into_iter()
        .zip(results)
        .map(|((mac, _, nic), result)| {
            let held = held.remove(&nic.name_any());
            tend(agent, mac, nic, result, held)
        })
        .collect();
    futures::future::join_all(tended).await;
}

/// Releases a bound NIC whose link is back on the node, or reports a NIC's link, as one pass
/// of [`report_links`] found it. `_held` is the NIC's lock.
async fn tend(
    agent: &Agent,
    mac: String,
    nic: Arc<HostNic>,
    result: Result<Option<String>, Error>,
    _held: Option<Held<String>>,
) {
    let link = match result {
        Ok(link) => link,
        Err(error) => {
            warn!(hostnic = %nic.name_any(), %mac, %error, "could not tend the NIC's link");
            return;
        }
    };
    if is_bound(&nic) {
        if let Some(name) = link {
            info!(hostnic = %nic.name_any(), %mac, link = %name, "the link of a bound NIC is back on the node; releasing it");
            if let Err(error) = agent.release_nic(&nic, &PodNetns::open(None, &nic)).await {
                warn!(hostnic = %nic.name_any(), %error, "could not release a NIC whose link came home");
            }
        }
        return;
    }
    let Some(next) = decide::report_link(&nic, link.as_deref(), jiff::Timestamp::now()) else {
        return;
    };
    match agent.kube.replace_status(&next).await {
        Ok(Write::Done(w)) => {
            info!(hostnic = %nic.name_any(), %mac, link = ?link, "reported link");
            agent.view.record_write(nic.resource_version(), *w);
        }
        // Someone changed it meanwhile; the next pass reports again.
        Ok(Write::Conflict) => {}
        Err(error) => warn!(hostnic = %nic.name_any(), %error, "could not report link"),
    }
}

/// Every `interval`, retries the queued DELs (the first pass right away: DELs the plugin queued
/// while the agent was away).
pub async fn queue_loop(agent: Arc<Agent>, interval: Duration) {
    loop {
        let left = agent.drain_queued().await;
        if left > 0 {
            info!(left, "queued DELs still waiting");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Every `interval`, releases bound NICs whose netns is gone or whose pod no longer exists.
pub async fn sweep_loop(agent: Arc<Agent>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        sweep(&agent).await;
    }
}

/// One sweep; returns how many NICs it released.
pub async fn sweep(agent: &Agent) -> usize {
    let mut released = 0;
    for (key, nic) in decide::bound(&agent.view.nics()) {
        let Some(pod) = nic.status.as_ref().and_then(|s| s.pod.clone()) else {
            continue;
        };
        // A netns that does not open for another reason than "gone" tells nothing.
        let netns_gone = match Netns::probe(&pod.netns) {
            Probe::Open(_) => false,
            Probe::Gone(_) => true,
            Probe::Unknown(error) => {
                warn!(hostnic = %nic.name_any(), %error, "cannot open the pod netns; not taking it as gone");
                false
            }
        };
        // `uid` is recorded only when the claim saw the pod in the API; without it the API
        // cannot tell us the pod is gone (a runtime used without a Kubernetes pod).
        let pod_gone = match &pod.uid {
            None => false,
            Some(uid) => match agent.kube.get_pod(&pod.namespace, &pod.name).await {
                Ok(None) => true,
                Ok(Some(p)) => !decide::is_same_pod(&p, uid),
                Err(error) => {
                    warn!(%error, "could not look up pod; keeping its NIC for now");
                    false
                }
            },
        };
        if !netns_gone && !pod_gone {
            continue;
        }
        info!(hostnic = %nic.name_any(), pod = %format!("{}/{}", pod.namespace, pod.name), netns_gone, pod_gone, "releasing NIC of a vanished pod");
        let _gate = agent.gate.read().await;
        // Released meanwhile by a DEL: nothing left to do.
        let Some((hostnic, result)) = agent.release_if_bound(&key).await else {
            continue;
        };
        match result {
            Ok(()) => released += 1,
            // The link pass releases it once its link is on the node.
            Err(error @ Error::NotHome { .. }) => {
                info!(%hostnic, %error, "NIC of a vanished pod stays Bound until its link is home")
            }
            Err(error) => {
                warn!(%hostnic, %error, "could not release NIC of a vanished pod")
            }
        }
    }
    released
}
