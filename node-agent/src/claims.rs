//! Claim, release, check and GC: the socket's verbs, as steps on the HostNics and the kernel.
//!
//! A claim records the pod on the HostNic first (optimistic, by resourceVersion), then moves
//! the link; if the kernel step fails the claim is reverted. Claims, releases and the link
//! reporter are serialized by one lock: a claim takes milliseconds, and serializing makes the
//! agent's own view consistent (no two claims pick the same NIC in one agent).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostnic_agent_api::{
    AgentStatus, Attachment, AttachmentKey, CheckRequest, ClaimRequest, GcFailure, GcRequest,
    GcResponse, ReleaseRequest, Released,
};
use hostnic_crds::{HostNic, HostNicPhase, NicPool, PodRef};
use kube::ResourceExt;
use tracing::{info, warn};

use crate::attach::{self, AttachSpec};
use crate::journal::{ClaimRecord, Journal, Stage};
use crate::kube_io::{self, KubeIo, Write};
use crate::metrics::{ClaimPath, Metrics, PathLabels};
use crate::netns::{Netns, Probe};
use crate::observe;
use crate::shutdown::Requests;
use crate::waiting::Waiting;
use crate::watch::View;
use crate::{Error, Result, decide, test_hooks};

/// Status writes retried on 409 before giving up (each retry re-reads the object).
const WRITE_ATTEMPTS: usize = 5;

/// The agent's state shared by the socket server, the health server and background loops.
pub struct Agent {
    /// Cached HostNics and NicPools.
    pub view: Arc<View>,
    /// Kubernetes calls.
    pub kube: KubeIo,
    /// The netns that plays the node.
    pub node_netns: Arc<Netns>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Serializes everything that changes NICs.
    pub(crate) lock: tokio::sync::Mutex<()>,
    /// Answers given since start, for repeated ADDs.
    answered: Mutex<HashMap<AttachmentKey, Attachment>>,
    /// Set once start-up recovery has run.
    pub(crate) recovered: std::sync::atomic::AtomicBool,
    /// The node's record of claims and queued DELs.
    pub(crate) journal: Journal,
    /// Socket requests in flight, for a graceful stop.
    pub(crate) requests: Arc<Requests>,
    /// How long an ADD that finds its pool empty waits for a NIC on its way.
    wait_for_nic: Duration,
    /// The ADDs waiting so, told to the operator.
    waiting: Waiting,
}

impl Agent {
    /// An agent over `view`, acting on `node_netns`, recording claims in `journal`; an ADD
    /// finding its pool empty waits up to `wait_for_nic` for a NIC on its way.
    pub fn new(
        view: Arc<View>,
        kube: KubeIo,
        node_netns: Arc<Netns>,
        metrics: Arc<Metrics>,
        journal: Journal,
        wait_for_nic: Duration,
    ) -> Self {
        Self {
            waiting: Waiting::new(kube.clone(), view.node()),
            wait_for_nic,
            view,
            kube,
            node_netns,
            metrics,
            lock: tokio::sync::Mutex::new(()),
            answered: Mutex::new(HashMap::new()),
            recovered: Default::default(),
            journal,
            requests: Arc::default(),
        }
    }

    fn answered(&self) -> std::sync::MutexGuard<'_, HashMap<AttachmentKey, Attachment>> {
        self.answered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// CNI ADD: hands a free NIC to the pod, or returns the earlier answer for the same key.
    #[tracing::instrument(skip_all, fields(container_id = %req.key.container_id, ifname = %req.key.ifname, pod = %format!("{}/{}", req.pod.namespace, req.pod.name)))]
    pub async fn claim(self: &Arc<Self>, req: ClaimRequest) -> Result<Attachment> {
        let started = Instant::now();
        let mut path = ClaimPath::Warm;
        let result = self.claim_inner(req, &mut path).await;
        let elapsed = started.elapsed().as_secs_f64();
        tracing::debug!(
            ms = elapsed * 1e3,
            ok = result.is_ok(),
            ?path,
            "claim served"
        );
        self.metrics
            .claim_seconds
            .get_or_create(&PathLabels { path: path.label() })
            .observe(elapsed);
        Metrics::count(&self.metrics.claims, &result);
        result
    }

    /// The claim; sets `path` to [`ClaimPath::Waited`] once it starts waiting for a NIC (an
    /// out-parameter, as every early return of a failure must still report how far it got).
    async fn claim_inner(
        self: &Arc<Self>,
        req: ClaimRequest,
        path: &mut ClaimPath,
    ) -> Result<Attachment> {
        decide::validate_claim(&req)?;
        self.ensure_recovered()?;
        // A netns that does not exist is "container unknown" (3), one that is not a netns 7.
        let pod_ns = Arc::new(Netns::open(&req.netns)?);
        // Read before taking the lock so concurrent claims do not queue behind an API round trip.
        let facts = self.pod_facts(&req).await?;
        let wait = self
            .wait_for_nic
            .min(Duration::from_secs(req.wait_for_nic_seconds));
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.view.changes();
        let mut waiting = None;
        loop {
            changes.borrow_and_update();
            match self.claim_now(&req, &pod_ns, &facts).await {
                Err(Error::NoFreeNic { pool })
                    if tokio::time::Instant::now() < deadline
                        && decide::nic_coming(&self.view.nics(), &self.view.pools(), &pool) =>
                {
                    if waiting.is_none() {
                        info!(%pool, "no free NIC; waiting for one on its way");
                        *path = ClaimPath::Waited;
                        let pod =
                            kube_io::pod_ref(&req.pod.namespace, &req.pod.name, facts.1.as_deref());
                        waiting = Some(self.waiting.enter(&pool, pod, wait).await);
                    }
                    // Any change of the view may be the NIC arriving; the deadline bounds the
                    // wait, and the lock is not held meanwhile. A stopping agent answers now.
                    tokio::select! {
                        _ = tokio::time::timeout_at(deadline, changes.changed()) => {}
                        () = self.requests.stopping() => return Err(Error::NoFreeNic { pool }),
                    }
                }
                other => return other,
            }
        }
    }

    /// One attempt at the claim with the NICs the view shows now, under the lock.
    async fn claim_now(
        self: &Arc<Self>,
        req: &ClaimRequest,
        pod_ns: &Arc<Netns>,
        (annotation, api_uid): &(Option<String>, Option<String>),
    ) -> Result<Attachment> {
        let pod_ns = pod_ns.clone();
        let _serial = self.lock.lock().await;
        let mut nics = self.view.nics();
        if let Some(nic) = decide::find_bound(&nics, &req.key).cloned() {
            if let Some(done) = self.answered().get(&req.key) {
                return Ok(done.clone());
            }
            if let Some(att) = self.live_attachment(&nic, req, pod_ns.clone()).await? {
                self.answered().insert(req.key.clone(), att.clone());
                return Ok(att);
            }
            warn!(hostnic = %nic.name_any(), "bound NIC is not in the pod: releasing it and claiming afresh");
            self.release_nic(&nic, Some(&req.netns)).await?;
            nics = self.view.nics();
        }

        let pools = self.view.pools();
        let pool = decide::choose_pool(annotation.as_deref(), req.pool.as_deref(), &pools, &nics)
            .map_err(|why| Error::NoPool {
            pod: format!("{}/{}", req.pod.namespace, req.pod.name),
            why,
        })?;

        let pod_ref = PodRef {
            namespace: req.pod.namespace.clone(),
            name: req.pod.name.clone(),
            uid: api_uid.clone(),
            container_id: req.key.container_id.clone(),
            netns: req.netns.clone(),
            interface: req.key.ifname.clone(),
            network: req.network.clone(),
        };
        let mut lost = HashSet::new();
        loop {
            let (written, spec) = self
                .bind_free_nic(&pool, &pools, req, &pod_ref, &mut lost)
                .await?;
            let record = ClaimRecord {
                hostnic: written.name_any(),
                key: req.key.clone(),
                netns: req.netns.clone(),
                stage: Stage::Moving,
                attachment: None,
            };
            // Recorded before the link moves: a crash from here on is undone at the next start.
            if let Err(e) = self.journal.record_claim(&record) {
                self.revert_claim(&written, &req.key).await;
                return Err(e);
            }
            test_hooks::pause(test_hooks::CLAIM_RECORDED).await;
            let mut guard = ClaimGuard {
                agent: self.clone(),
                claimed: Some((written.clone(), req.key.clone(), pod_ns.clone())),
            };
            let kernel_started = Instant::now();
            let attached =
                attach::attach(self.node_netns.clone(), pod_ns.clone(), spec.clone()).await;
            let kernel_ms = kernel_started.elapsed().as_secs_f64() * 1e3;
            match attached {
                Ok(attached) => {
                    guard.claimed = None;
                    let att = decide::attachment(&written, &spec, &req.netns, attached.mtu);
                    let done = ClaimRecord {
                        stage: Stage::Attached,
                        attachment: Some(att.clone()),
                        ..record
                    };
                    if let Err(error) = self.journal.record_claim(&done) {
                        // A record left at Moving would make the next start undo this claim;
                        // without one, recovery keeps the link if it is in the pod.
                        warn!(hostnic = %written.name_any(), %error, "could not record the completed claim");
                        self.journal.forget_claim(&written.name_any());
                    }
                    test_hooks::pause(test_hooks::CLAIM_ATTACHED).await;
                    self.answered().insert(req.key.clone(), att.clone());
                    // No event: the claim is in the HostNic's status and this log, and an API
                    // write on every pod start would load the API server for no one's benefit.
                    info!(hostnic = %written.name_any(), mac = %spec.mac, host_name = %attached.host_name, kernel_ms, "claimed");
                    return Ok(att);
                }
                Err(e) => {
                    guard.claimed = None;
                    // attach undoes its own steps; this only matters if its thread died midway.
                    if let Err(error) = attach::detach(
                        self.node_netns.clone(),
                        Some(pod_ns.clone()),
                        spec.mac.clone(),
                    )
                    .await
                    {
                        warn!(hostnic = %written.name_any(), %error, "could not bring the NIC home after a failed claim");
                    }
                    self.revert_claim(&written, &req.key).await;
                    let name = written.name_any();
                    self.spawn_warning(
                        &written,
                        "ClaimFailed",
                        format!(
                            "moving the NIC into pod {}/{} failed: {e}",
                            req.pod.namespace, req.pod.name
                        ),
                    );
                    if !matches!(e, Error::LinkNotFound { .. }) {
                        return Err(e);
                    }
                    // The link left the node after the view last saw it there (unplugged, or
                    // the link pass has not reported it yet): another free NIC can still serve.
                    warn!(hostnic = %name, error = %e, "the NIC's link is gone; trying the next free NIC");
                    lost.insert(name);
                }
            }
        }
    }

    /// The pod's pool annotation (it wins over the conflist's pool) and its UID, which marks
    /// that it is a pod of the API: only such claims are swept when the pod leaves the API.
    /// Taken from the runtime when it passed both (containerd passes the annotations, and
    /// kubelet `K8S_POD_UID`), so the ADD makes no API round trip; else read from the API.
    async fn pod_facts(&self, req: &ClaimRequest) -> Result<(Option<String>, Option<String>)> {
        if req.pod_annotations && req.pod.uid.is_some() {
            return Ok((req.pod_pool.clone(), req.pod.uid.clone()));
        }
        Ok(
            match self.kube.get_pod(&req.pod.namespace, &req.pod.name).await? {
                Some(p) => (
                    p.annotations()
                        .get(hostnic_crds::POD_POOL_ANNOTATION)
                        .cloned(),
                    p.metadata.uid,
                ),
                None => (req.pod_pool.clone(), None),
            },
        )
    }

    /// Records the claim on the first free NIC of `pool` not in `lost` that can serve it,
    /// adding the NICs it passes over (incomplete, or taken by a racing writer) to `lost`.
    async fn bind_free_nic(
        &self,
        pool: &str,
        pools: &[Arc<NicPool>],
        req: &ClaimRequest,
        pod_ref: &PodRef,
        lost: &mut HashSet<String>,
    ) -> Result<(HostNic, AttachSpec)> {
        let mut nics = self.view.nics();
        loop {
            let Some(nic) = decide::free_candidates(&nics, pool, lost)
                .into_iter()
                .next()
            else {
                return Err(Error::NoFreeNic {
                    pool: pool.to_owned(),
                });
            };
            let spec = match decide::attach_spec(
                &nic,
                pools,
                self.view.node(),
                &req.key.ifname,
                req.mtu,
                &req.routes,
            ) {
                Ok(spec) => spec,
                Err(e @ Error::InvalidRequest(_)) => return Err(e),
                Err(e) => {
                    warn!(hostnic = %nic.name_any(), error = %e, "skipping NIC");
                    lost.insert(nic.name_any());
                    continue;
                }
            };
            match self
                .kube
                .replace_status(&decide::bind(&nic, pod_ref.clone()))
                .await?
            {
                Write::Done(written) => {
                    self.view
                        .record_write(nic.resource_version(), (*written).clone());
                    return Ok((*written, spec));
                }
                Write::Conflict => {
                    info!(hostnic = %nic.name_any(), "lost the race for a NIC; picking another");
                    lost.insert(nic.name_any());
                    nics = self.view.nics();
                }
            }
        }
    }

    /// The attachment of a bound NIC whose link is already in the pod (a repeated ADD after an
    /// agent restart), or `None` if the link is not there or its claim never completed. The
    /// answer is what the claim applied, as recorded then, not what the pool says today.
    async fn live_attachment(
        &self,
        nic: &HostNic,
        req: &ClaimRequest,
        pod_ns: Arc<Netns>,
    ) -> Result<Option<Attachment>> {
        let Some(mac) = decide::mac(nic) else {
            return Ok(None);
        };
        let Some(link) = attach::inspect(pod_ns, mac)
            .await?
            .filter(|l| l.name == req.key.ifname)
        else {
            return Ok(None);
        };
        if let Some(record) = self.journal.claim(&nic.name_any(), &req.key) {
            return Ok(match record {
                ClaimRecord {
                    stage: Stage::Attached,
                    attachment: Some(att),
                    ..
                } => Some(att),
                _ => None,
            });
        }
        // Claimed by an agent that kept no journal: rebuild the answer.
        let spec = decide::attach_spec(
            nic,
            &self.view.pools(),
            self.view.node(),
            &req.key.ifname,
            req.mtu,
            &req.routes,
        )?;
        Ok(Some(decide::attachment(nic, &spec, &req.netns, link.mtu)))
    }

    /// Puts a claim that could not be completed back to Available, unless someone else
    /// changed the NIC meanwhile.
    pub(crate) async fn revert_claim(&self, written: &HostNic, key: &AttachmentKey) {
        self.journal.forget_claim(&written.name_any());
        let mut current = written.clone();
        for _ in 0..WRITE_ATTEMPTS {
            let mut next = current.clone();
            if let Some(st) = next.status.as_mut() {
                st.phase = HostNicPhase::Available;
                st.pod = None;
            }
            match self.kube.replace_status(&next).await {
                Ok(Write::Done(w)) => {
                    self.view.record_write(current.resource_version(), *w);
                    return;
                }
                Ok(Write::Conflict) => match self.kube.get_hostnic(&written.name_any()).await {
                    Ok(Some(fresh)) if decide::is_bound_to(&fresh, key) => current = fresh,
                    Ok(_) => return,
                    Err(error) => {
                        warn!(hostnic = %written.name_any(), %error, "could not re-read HostNic to revert claim");
                        return;
                    }
                },
                Err(error) => {
                    warn!(hostnic = %written.name_any(), %error, "could not revert claim; recovery will release it");
                    return;
                }
            }
        }
    }

    /// Publishes a Warning on `nic` off the request's path.
    fn spawn_warning(&self, nic: &HostNic, reason: &'static str, note: String) {
        let kube = self.kube.clone();
        let regarding = kube_io::hostnic_ref(nic);
        tokio::spawn(async move { kube.event(&regarding, true, reason, note).await });
    }

    /// CNI DEL: brings the NIC back to the node and marks it Released. Unknown keys succeed.
    /// So does every DEL the agent cannot finish now (not recovered yet, the link not home, the
    /// API unreachable): it is queued in the journal and retried, because the runtime cannot
    /// do anything better with a failure than retry forever while the pod stays Terminating.
    #[tracing::instrument(skip_all, fields(container_id = %req.key.container_id, ifname = %req.key.ifname))]
    pub async fn release(&self, req: ReleaseRequest) -> Result<Released> {
        let result = self.release_inner(req).await;
        Metrics::count(&self.metrics.releases, &result);
        result
    }

    async fn release_inner(&self, mut req: ReleaseRequest) -> Result<Released> {
        decide::validate_key(&req.key)?;
        // The path is only a hint (the recorded one is tried next): an odd one must not fail a DEL.
        if req
            .netns
            .as_deref()
            .is_some_and(|ns| decide::validate_netns(ns).is_err())
        {
            req.netns = None;
        }
        if self.ensure_recovered().is_err() {
            self.journal.queue_release(&req)?;
            info!("queued DEL until start-up recovery is done");
            return Ok(Released { hostnic: None });
        }
        let _serial = self.lock.lock().await;
        Ok(Released {
            hostnic: self.release_queued(&req).await,
        })
    }

    /// Releases the NIC bound to `req.key`, if any, under the lock. A release that cannot
    /// finish stays queued in the journal; a finished (or moot) one is dequeued. Returns the
    /// HostNic bound to the key.
    pub(crate) async fn release_queued(&self, req: &ReleaseRequest) -> Option<String> {
        let nics = self.view.nics();
        let Some(nic) = decide::find_bound(&nics, &req.key).cloned() else {
            self.answered().remove(&req.key);
            self.journal.dequeue_release(&req.key);
            return None;
        };
        match self.release_nic(&nic, req.netns.as_deref()).await {
            Ok(()) => self.journal.dequeue_release(&req.key),
            Err(error) => {
                info!(hostnic = %nic.name_any(), %error, "release not finished; queued for retry");
                if let Err(error) = self.journal.queue_release(req) {
                    warn!(hostnic = %nic.name_any(), %error, "could not queue the release; the sweep and the link pass still finish it");
                }
            }
        }
        Some(nic.name_any())
    }

    /// Brings a bound NIC home and marks it Released, only once its link is proven on the
    /// node: moved back from the pod netns, or found there (a real NIC returns by itself when
    /// its netns is destroyed). Otherwise returns [`Error::NotHome`] and the NIC stays Bound:
    /// the operator may recycle or delete a Released NIC, so a link still in some pod must
    /// never be Released. The caller holds the lock.
    pub(crate) async fn release_nic(&self, nic: &HostNic, netns_hint: Option<&str>) -> Result<()> {
        let status = nic.status.clone().unwrap_or_default();
        let Some(pod) = status.pod else {
            return Ok(());
        };
        let key = AttachmentKey {
            container_id: pod.container_id.clone(),
            ifname: pod.interface.clone(),
        };
        // The runtime's path first, then the one recorded at claim time.
        let mut unopened = Vec::new();
        let pod_ns = netns_hint
            .filter(|p| !p.is_empty())
            .into_iter()
            .chain([pod.netns.as_str()])
            .find_map(|p| match Netns::probe(p) {
                Probe::Open(ns) => Some(ns),
                Probe::Gone(e) | Probe::Unknown(e) => {
                    unopened.push(e.to_string());
                    None
                }
            })
            .map(Arc::new);
        let searched_pod = pod_ns.is_some();
        let detached = match decide::mac(nic) {
            Some(mac) => match attach::detach(self.node_netns.clone(), pod_ns, mac).await {
                Ok(d) => match d.host_name {
                    Some(name) => Some(name),
                    None => {
                        return Err(Error::NotHome {
                            hostnic: nic.name_any(),
                            why: if searched_pod {
                                "its link is neither in the pod netns nor on the node".into()
                            } else {
                                format!(
                                    "its link is not on the node and the pod netns did not open ({})",
                                    unopened.join("; ")
                                )
                            },
                        });
                    }
                },
                Err(e) => {
                    self.spawn_warning(
                        nic,
                        "ReleaseFailed",
                        format!(
                            "bringing the NIC back from pod {}/{} failed: {e}",
                            pod.namespace, pod.name
                        ),
                    );
                    return Err(e);
                }
            },
            None => None,
        };
        let mut current = nic.clone();
        for _ in 0..WRITE_ATTEMPTS {
            let next = decide::release(&current, jiff::Timestamp::now(), detached.clone());
            match self.kube.replace_status(&next).await? {
                Write::Done(w) => {
                    self.view.record_write(current.resource_version(), *w);
                    self.answered().remove(&key);
                    self.journal.forget_claim(&nic.name_any());
                    info!(hostnic = %nic.name_any(), pod = %format!("{}/{}", pod.namespace, pod.name), "released");
                    return Ok(());
                }
                Write::Conflict => match self.kube.get_hostnic(&nic.name_any()).await? {
                    Some(fresh) if decide::is_bound_to(&fresh, &key) => current = fresh,
                    _ => {
                        self.answered().remove(&key);
                        self.journal.forget_claim(&nic.name_any());
                        return Ok(());
                    }
                },
            }
        }
        Err(Error::TooManyConflicts {
            hostnic: nic.name_any(),
        })
    }

    /// CNI CHECK: the NIC is in the pod under its name with the MAC and address the claim
    /// recorded, and the MTU and routes the runtime's cached result and the conflist expect.
    pub async fn check(&self, req: CheckRequest) -> Result<Attachment> {
        decide::validate_key(&req.key)?;
        decide::validate_netns(&req.netns)?;
        self.ensure_recovered()?;
        let nics = self.view.nics();
        let nic = decide::find_bound(&nics, &req.key)
            .cloned()
            .ok_or_else(|| {
                Error::CheckFailed(format!(
                    "no NIC is attached to container {} as {}",
                    req.key.container_id, req.key.ifname
                ))
            })?;
        let pod_ns = Arc::new(Netns::open(&req.netns)?);
        let observed = observe::interface(pod_ns, req.key.ifname.clone()).await?;
        let problems = decide::check_problems(&nic, &req, observed.as_ref())?;
        match observed {
            Some(o) if problems.is_empty() => decide::checked_attachment(&nic, &req, &o),
            _ => Err(Error::CheckFailed(problems.join("; "))),
        }
    }

    /// CNI GC of one network: releases its bound NICs whose attachment the runtime no longer
    /// lists. A failed release does not stop the others; it is reported in the answer.
    pub async fn gc(&self, req: GcRequest) -> Result<GcResponse> {
        if req.network.is_empty() {
            return Err(Error::InvalidRequest(
                "GC needs the network name, to collect only that network's attachments \
                 (is the hostnic plugin older than the agent?)"
                    .into(),
            ));
        }
        self.ensure_recovered()?;
        let valid: HashSet<_> = req.valid_attachments.into_iter().collect();
        let _serial = self.lock.lock().await;
        let mut resp = GcResponse::default();
        for (key, nic) in decide::gc_candidates(&self.view.nics(), &req.network, &valid) {
            match self.release_nic(&nic, None).await {
                Ok(()) => resp.released.push(key),
                Err(error) => {
                    warn!(hostnic = %nic.name_any(), %error, "gc could not release NIC");
                    resp.failed.push(GcFailure {
                        key,
                        error: format!("hostnic {}: {error}", nic.name_any()),
                    });
                }
            }
        }
        Ok(resp)
    }

    /// Refuses to change anything before start-up recovery has rebuilt the agent's view.
    pub(crate) fn ensure_recovered(&self) -> Result<()> {
        if self.recovered.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::NotReady(
                "HostNics and the kernel not synced yet".into(),
            ))
        }
    }

    /// CNI STATUS and `/readyz`: ready once the HostNics are synced and start-up recovery is
    /// done, i.e. the agent serves. A node without a free NIC is ready too: ADD answers "try
    /// again later" for that, while a failed STATUS makes the runtime report the node NotReady
    /// (and its pods get evicted).
    pub fn status(&self) -> AgentStatus {
        let synced =
            self.view.is_synced() && self.recovered.load(std::sync::atomic::Ordering::SeqCst);
        let (free, incoming) = decide::counts(&self.view.nics());
        self.metrics.free_nics.set(i64::from(free));
        self.metrics.synced.set(i64::from(synced));
        let reason =
            (!synced).then(|| "agent has not synced HostNics and the kernel yet".to_owned());
        AgentStatus {
            ready: synced,
            reason,
            synced,
            free_nics: free,
            incoming_nics: incoming,
        }
    }
}
/// Reverts a recorded claim if the claiming task panics between the HostNic write and the end
/// of the kernel step. A process that dies there leaves its journal record at
/// [`Stage::Moving`], and the next start undoes the claim instead.
struct ClaimGuard {
    agent: Arc<Agent>,
    claimed: Option<(HostNic, AttachmentKey, Arc<Netns>)>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some((nic, key, pod_ns)) = self.claimed.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let agent = self.agent.clone();
            rt.spawn(async move {
                let _serial = agent.lock.lock().await;
                if let Some(mac) = decide::mac(&nic)
                    && let Err(error) = attach::detach(agent.node_netns.clone(), Some(pod_ns), mac).await
                {
                    warn!(hostnic = %nic.name_any(), %error, "could not bring the NIC home after an interrupted claim");
                }
                agent.revert_claim(&nic, &key).await;
            });
        }
    }
}
