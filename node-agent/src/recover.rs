//! Start-up recovery and the DEL queue: what the agent does before it serves, and how DELs it
//! could not finish get finished.
//!
//! A bound NIC is kept while its pod holds it: "the link with this MAC is in the recorded netns
//! under the recorded name". Nothing here compares with today's NicPool routes or gateways, so
//! editing a pool or replacing a gateway NIC never takes a NIC from a running pod. A netns that
//! cannot be opened for any reason but "it is gone" tells nothing, and the NIC is kept. A claim
//! the journal shows interrupted before it completed is undone.

use std::collections::HashSet;
use std::sync::Arc;

use hostnic_agent_api::AttachmentKey;
use hostnic_crds::HostNic;
use kube::ResourceExt;
use tracing::{info, warn};

use crate::claims::{Agent, PodNetns};
use crate::journal::Stage;
use crate::netns::{Netns, Probe};
use crate::{Error, attach, decide};

/// Whether a bound NIC's pod still holds it.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The link is in the pod under its pod name.
    Live,
    /// It cannot be told (the netns does not open, netlink failed): keep the NIC.
    Unknown(String),
    /// The pod does not hold it, or its claim never completed: release it.
    NotLive(String),
}

impl Agent {
    /// Start-up recovery: keeps every bound NIC its pod may still hold, releases the others
    /// (only once their link is home, see [`Agent::release_nic`]), then lets requests in.
    pub async fn recover(&self) {
        self.view.wait_synced().await;
        let _gate = self.gate.write().await;
        let nics = self.view.nics();
        let bound = decide::bound(&nics);
        let names: HashSet<String> = bound.iter().map(|(_, n)| n.name_any()).collect();
        for stale in self.journal.claimed() {
            if !names.contains(&stale) {
                self.undo_unwritten_claim(&stale, &nics).await;
            }
        }
        for (key, nic) in bound {
            let hostnic = nic.name_any();
            match self.liveness(&nic, &key).await {
                Liveness::Live => {
                    info!(%hostnic, container_id = %key.container_id, "kept live attachment")
                }
                Liveness::Unknown(why) => {
                    warn!(%hostnic, container_id = %key.container_id, %why, "cannot tell whether the pod still holds its NIC; keeping it")
                }
                Liveness::NotLive(why) => {
                    info!(%hostnic, container_id = %key.container_id, %why, "releasing stale attachment");
                    match self.release_nic(&nic, &PodNetns::open(None, &nic)).await {
                        Ok(()) => {}
                        Err(error @ Error::NotHome { .. }) => {
                            info!(%hostnic, %error, "stays Bound until its link is on the node")
                        }
                        Err(error) => {
                            warn!(%hostnic, %error, "could not release stale attachment")
                        }
                    }
                }
            }
        }
        self.recovered
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Undoes the claim the journal records on `hostnic`, which is not bound: its HostNic write
    /// never landed (or was reverted), but its link may have moved into the pod. The link comes
    /// home before the record goes, so a failure leaves the record for the next start.
    async fn undo_unwritten_claim(&self, hostnic: &str, nics: &[Arc<HostNic>]) {
        let record = self.journal.record_of(hostnic);
        let mac = nics
            .iter()
            .find(|n| n.name_any() == hostnic)
            .and_then(|n| decide::mac(n));
        if let (Some(record), Some(mac)) = (record, mac)
            && record.stage == Stage::Moving
        {
            let pod_ns = match Netns::probe(&record.netns) {
                Probe::Open(ns) => Some(Arc::new(ns)),
                Probe::Gone(_) | Probe::Unknown(_) => None,
            };
            if let Err(error) = attach::detach(self.node_netns.clone(), pod_ns, mac).await {
                warn!(%hostnic, %error, "could not bring home the link of an interrupted claim");
                return;
            }
            info!(%hostnic, container_id = %record.key.container_id, "undid a claim interrupted before its HostNic write");
        }
        self.journal.forget_claim(hostnic);
    }

    /// Whether the pod recorded on `nic` (bound to `key`) still holds it.
    pub async fn liveness(&self, nic: &HostNic, key: &AttachmentKey) -> Liveness {
        let Some(pod) = nic.status.as_ref().and_then(|s| s.pod.clone()) else {
            return Liveness::NotLive("no pod recorded".into());
        };
        if self
            .journal
            .claim(&nic.name_any(), key)
            .is_some_and(|r| r.stage == Stage::Moving)
        {
            return Liveness::NotLive("its claim was interrupted before it completed".into());
        }
        let Some(mac) = decide::mac(nic) else {
            return Liveness::NotLive("the HostNic has no MAC".into());
        };
        let ns = match Netns::probe(&pod.netns) {
            Probe::Open(ns) => ns,
            Probe::Gone(e) => return Liveness::NotLive(e.to_string()),
            Probe::Unknown(e) => return Liveness::Unknown(e.to_string()),
        };
        match attach::inspect(Arc::new(ns), mac).await {
            Ok(Some(link)) if link.name == pod.interface => Liveness::Live,
            Ok(Some(link)) => Liveness::NotLive(format!(
                "its link is {} in the pod, not {}",
                link.name, pod.interface
            )),
            Ok(None) => Liveness::NotLive("its link is not in the pod netns".into()),
            Err(e) => Liveness::Unknown(e.to_string()),
        }
    }

    /// Finishes the queued DELs (from the plugin while the agent was away, or releases that
    /// could not finish); each stays queued until it does. Returns how many remain.
    pub async fn drain_queued(&self) -> usize {
        if self.ensure_recovered().is_err() {
            return self.journal.queued_releases().len();
        }
        let mut left = 0;
        let _gate = self.gate.read().await;
        for req in self.journal.queued_releases() {
            self.release_queued(&req).await;
            left += usize::from(self.journal.is_queued(&req.key));
        }
        left
    }
}
