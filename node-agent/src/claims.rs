//! Claim, release, check and GC: the socket's verbs, as steps on the HostNics and the kernel.
//!
//! A claim records itself in the node journal, then writes the pod onto the HostNic (optimistic,
//! by resourceVersion) while it moves the link: the write hides behind the move. It answers only
//! once both landed, because the write is what the operator respects: a NIC it took meanwhile
//! (the write conflicts) goes home unused. A release answers once its intent is in the journal
//! and brings the link home after. Work on one NIC, one attachment or one pod netns is
//! serialized by [`Locks`]; work on different ones runs in parallel. The gate lets start-up
//! recovery and a graceful stop exclude all of it.

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
use crate::locks::{Held, Locks};
use crate::metrics::{ClaimPath, Metrics, PathLabels};
use crate::netns::{Netns, NetnsId, Probe};
use crate::observe;
use crate::shutdown::Requests;
use crate::waiting::Waiting;
use crate::watch::View;
use crate::{Error, Result, decide, test_hooks};

/// Why a claim of one NIC did not complete (what landed of it is undone by then).
enum Failed {
    /// The HostNic write failed: the API is unreachable or refused it.
    Api(Error),
    /// The HostNic changed under the write: someone else took the NIC.
    Taken,
    /// The HostNic was written but the kernel step failed.
    Kernel(Box<HostNic>, Error),
}

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
    /// Held shared by every step that changes NICs, exclusively by start-up recovery and a
    /// graceful stop.
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
    /// One NIC's claim, release or link tending at a time.
    pub(crate) nic_locks: Locks<String>,
    /// One verb of an attachment at a time (a repeated ADD, a DEL racing its ADD).
    key_locks: Locks<AttachmentKey>,
    /// Held by a release until its link left the pod netns: a claim into that netns waits, as
    /// the interface name may be the one it wants.
    netns_locks: Locks<NetnsId>,
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
            gate: Arc::default(),
            nic_locks: Locks::default(),
            key_locks: Locks::default(),
            netns_locks: Locks::default(),
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
        // Read before taking any lock so concurrent claims do not queue behind an API round trip.
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
                    // wait, and no lock is held meanwhile. A stopping agent answers now.
                    tokio::select! {
                        _ = tokio::time::timeout_at(deadline, changes.changed()) => {}
                        () = self.requests.stopping() => return Err(Error::NoFreeNic { pool }),
                    }
                }
                other => return other,
            }
        }
    }

    /// One attempt at the claim with the NICs the view shows now.
    async fn claim_now(
        self: &Arc<Self>,
        req: &ClaimRequest,
        pod_ns: &Arc<Netns>,
        (annotation, api_uid): &(Option<String>, Option<String>),
    ) -> Result<Attachment> {
        let _gate = self.gate.read().await;
        let _key = self.key_locks.lock(req.key.clone()).await;
        if let Some(att) = self.repeated_claim(req, pod_ns).await? {
            return Ok(att);
        }
        // A release still bringing a link home from this netns may hold the name wanted here.
        drop(self.netns_locks.lock(pod_ns.id()?).await);

        let pools = self.view.pools();
        let pool = decide::choose_pool(
            annotation.as_deref(),
            req.pool.as_deref(),
            &pools,
            &self.view.nics(),
        )
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
            let (nic, held, spec) = self.reserve_free_nic(&pool, &pools, req, &lost).await?;
            let name = nic.name_any();
            match self
                .claim_nic(nic, held, spec, req, pod_ns, pod_ref.clone())
                .await?
            {
                Some(att) => return Ok(att),
                None => {
                    lost.insert(name);
                }
            }
        }
    }

    /// The answer to an ADD whose key is already bound (a repeated ADD, or one after an agent
    /// restart), or `None` when nothing is bound to it (any more) and a fresh claim is due.
    async fn repeated_claim(
        &self,
        req: &ClaimRequest,
        pod_ns: &Arc<Netns>,
    ) -> Result<Option<Attachment>> {
        let Some(nic) = decide::find_bound(&self.view.nics(), &req.key).cloned() else {
            return Ok(None);
        };
        // Its release may still be bringing the link home (a DEL answers before that).
        let _held = self.nic_locks.lock(nic.name_any()).await;
        let Some(nic) = decide::find_bound(&self.view.nics(), &req.key).cloned() else {
            return Ok(None);
        };
        if let Some(done) = self.answered().get(&req.key) {
            return Ok(Some(done.clone()));
        }
        if let Some(att) = self.live_attachment(&nic, req, pod_ns.clone()).await? {
            self.answered().insert(req.key.clone(), att.clone());
            return Ok(Some(att));
        }
        warn!(hostnic = %nic.name_any(), "bound NIC is not in the pod: releasing it and claiming afresh");
        self.release_nic(&nic, &PodNetns::open(Some(&req.netns), &nic))
            .await?;
        Ok(None)
    }

    /// Claims `nic`, whose lock `held` is: records the claim in the journal, then writes the
    /// pod onto the HostNic while the link moves. Returns the attachment once both landed, or
    /// `None` when the NIC cannot serve (another writer took it, its link left the node) and
    /// the next free one should, each half that landed undone.
    async fn claim_nic(
        self: &Arc<Self>,
        nic: Arc<HostNic>,
        held: Held<String>,
        spec: AttachSpec,
        req: &ClaimRequest,
        pod_ns: &Arc<Netns>,
        pod_ref: PodRef,
    ) -> Result<Option<Attachment>> {
        let name = nic.name_any();
        let record = ClaimRecord {
            hostnic: name.clone(),
            key: req.key.clone(),
            netns: req.netns.clone(),
            stage: Stage::Moving,
            attachment: None,
        };
        // Recorded before anything changes: a crash from here on is undone at the next start.
        self.journal.record_claim(&record)?;
        let mut guard = ClaimGuard {
            agent: self.clone(),
            claimed: Some(Claimed {
                hostnic: name.clone(),
                mac: spec.mac.clone(),
                key: req.key.clone(),
                pod_ns: pod_ns.clone(),
                held,
            }),
        };
        let bound = decide::bind(&nic, pod_ref);
        let write = async {
            test_hooks::pause(test_hooks::CLAIM_WRITING).await;
            self.kube.replace_status(&bound).await
        };
        let kernel = async {
            test_hooks::pause(test_hooks::CLAIM_RECORDED).await;
            let started = Instant::now();
            let attached =
                attach::attach(self.node_netns.clone(), pod_ns.clone(), spec.clone()).await;
            (attached, started.elapsed().as_secs_f64() * 1e3)
        };
        let (written, (attached, kernel_ms)) = tokio::join!(write, kernel);
        let written = match written {
            Ok(Write::Done(w)) => {
                self.view.record_write(nic.resource_version(), (*w).clone());
                Ok(Some(*w))
            }
            Ok(Write::Conflict) => Ok(None),
            Err(e) => Err(e),
        };
        let held = guard.disarm();
        let failure = match (written, attached) {
            (Ok(Some(written)), Ok(attached)) => {
                let att = decide::attachment(&written, &attached.spec, &req.netns, attached.mtu);
                let done = ClaimRecord {
                    stage: Stage::Attached,
                    attachment: Some(att.clone()),
                    ..record
                };
                if let Err(error) = self.journal.record_claim(&done) {
                    // A record left at Moving would make the next start undo this claim;
                    // without one, recovery keeps the link if it is in the pod.
                    warn!(hostnic = %name, %error, "could not record the completed claim");
                    self.journal.forget_claim(&name);
                }
                test_hooks::pause(test_hooks::CLAIM_ATTACHED).await;
                self.answered().insert(req.key.clone(), att.clone());
                drop(held);
                // No event: the claim is in the HostNic's status and this log, and an API
                // write on every pod start would load the API server for no one's benefit.
                info!(hostnic = %name, mac = %spec.mac, host_name = %attached.host_name, kernel_ms, "claimed");
                return Ok(Some(att));
            }
            (Err(e), _) => Failed::Api(e),
            (Ok(None), _) => Failed::Taken,
            (Ok(Some(written)), Err(e)) => Failed::Kernel(Box::new(written), e),
        };
        // Undo what landed: the link home first, so a NIC written back to Available is at
        // rest (attach undoes its own steps; this matters when the move landed, not the write).
        if let Err(error) = attach::detach(
            self.node_netns.clone(),
            Some(pod_ns.clone()),
            spec.mac.clone(),
        )
        .await
        {
            warn!(hostnic = %name, %error, "could not bring the NIC home after a failed claim");
        }
        match &failure {
            Failed::Kernel(written, _) => self.revert_claim(written, &req.key).await,
            Failed::Api(_) | Failed::Taken => self.journal.forget_claim(&name),
        }
        drop(held);
        match failure {
            Failed::Api(e) => Err(e),
            Failed::Taken => {
                info!(hostnic = %name, "lost the race for a NIC; picking another");
                Ok(None)
            }
            Failed::Kernel(written, e) => {
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
                // The link left the node after the view last saw it there (unplugged, or the
                // link pass has not reported it yet): another free NIC can still serve.
                warn!(hostnic = %name, error = %e, "the NIC's link is gone; trying the next free NIC");
                Ok(None)
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

    /// The first free NIC of `pool` not in `lost` that can serve the claim, with its lock
    /// taken, and what it must look like in the pod. Free NICs another claim (or the link
    /// pass) holds are passed over; when all are held, waits for one.
    async fn reserve_free_nic(
        &self,
        pool: &str,
        pools: &[Arc<NicPool>],
        req: &ClaimRequest,
        lost: &HashSet<String>,
    ) -> Result<(Arc<HostNic>, Held<String>, AttachSpec)> {
        let mut skipped = HashSet::new();
        loop {
            let excluded: HashSet<String> = lost.union(&skipped).cloned().collect();
            let candidates = decide::free_candidates(&self.view.nics(), pool, &excluded);
            if candidates.is_empty() {
                return Err(Error::NoFreeNic {
                    pool: pool.to_owned(),
                });
            }
            let mut busy = None;
            for nic in candidates {
                let name = nic.name_any();
                let Some(held) = self.nic_locks.try_lock(&name) else {
                    busy.get_or_insert(name);
                    continue;
                };
                // Its last holder may have just claimed it: only the view under the lock counts.
                let Some(nic) = decide::free_candidates(&self.view.nics(), pool, &excluded)
                    .into_iter()
                    .find(|n| n.name_any() == name)
                else {
                    continue;
                };
                match decide::attach_spec(&nic, pools, &req.key.ifname, req.mtu, &req.routes) {
                    Ok(spec) => return Ok((nic, held, spec)),
                    Err(e @ Error::InvalidRequest(_)) => return Err(e),
                    Err(e) => {
                        warn!(hostnic = %name, error = %e, "skipping NIC");
                        skipped.insert(name);
                    }
                }
            }
            // Every free NIC is held: wait for the first to be let go, then look again.
            if let Some(name) = busy {
                drop(self.nic_locks.lock(name).await);
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
            &req.key.ifname,
            req.mtu,
            &req.routes,
        )?;
        let spec = attach::resolved(self.node_netns.clone(), spec).await?;
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

    /// Reverts the claim of `name` for `key` if its HostNic write landed (read from the API:
    /// the claim may have stopped before telling the view), and forgets its record.
    async fn revert_if_bound(&self, name: &str, key: &AttachmentKey) {
        match self.kube.get_hostnic(name).await {
            Ok(Some(nic)) if decide::is_bound_to(&nic, key) => self.revert_claim(&nic, key).await,
            Ok(_) => self.journal.forget_claim(name),
            Err(error) => {
                warn!(hostnic = %name, %error, "could not re-read HostNic to revert claim; recovery will")
            }
        }
    }

    /// Publishes a Warning on `nic` off the request's path.
    fn spawn_warning(&self, nic: &HostNic, reason: &'static str, note: String) {
        let kube = self.kube.clone();
        let regarding = kube_io::hostnic_ref(nic);
        tokio::spawn(async move { kube.event(&regarding, true, reason, note).await });
    }

    /// CNI DEL: answers once the release is queued in the journal, and brings the NIC back to
    /// the node and marks it Released after (the runtime has nothing to wait for: a real NIC
    /// leaves a destroyed netns by itself, and the pod netns is held open until the link left
    /// it). Unknown keys succeed. So does every DEL the agent cannot finish now (not recovered
    /// yet, the link not home, the API unreachable): it stays queued and is retried, because the
    /// runtime cannot do anything better with a failure than retry forever while the pod stays
    /// Terminating.
    #[tracing::instrument(skip_all, fields(container_id = %req.key.container_id, ifname = %req.key.ifname))]
    pub async fn release(self: &Arc<Self>, req: ReleaseRequest) -> Result<Released> {
        let result = self.release_inner(req).await;
        Metrics::count(&self.metrics.releases, &result);
        result
    }

    async fn release_inner(self: &Arc<Self>, mut req: ReleaseRequest) -> Result<Released> {
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
        let gate = self.gate.clone().read_owned().await;
        let key = self.key_locks.lock(req.key.clone()).await;
        let Some((nic, held)) = self.lock_bound(&req.key).await else {
            self.forget_key(&req.key);
            return Ok(Released { hostnic: None });
        };
        let pod_ns = PodNetns::open(req.netns.as_deref(), &nic);
        let busy = match pod_ns.id() {
            Some(id) => Some(self.netns_locks.lock(id).await),
            None => None,
        };
        // Durable before the answer: a crash before the link is home finishes it at next start.
        self.journal.queue_release(&req)?;
        self.answered().remove(&req.key);
        drop(key);
        let agent = self.clone();
        let hostnic = nic.name_any();
        tokio::spawn(async move {
            let _held = (gate, held);
            test_hooks::pause(test_hooks::RELEASE_ANSWERED).await;
            let finished = agent.release_nic(&nic, &pod_ns).await;
            drop(busy);
            agent.after_release(&nic, &req, finished);
        });
        Ok(Released {
            hostnic: Some(hostnic),
        })
    }

    /// The NIC bound to `key` with its lock taken, if one is (read again under the lock: a
    /// release may have finished meanwhile).
    async fn lock_bound(&self, key: &AttachmentKey) -> Option<(Arc<HostNic>, Held<String>)> {
        let name = decide::find_bound(&self.view.nics(), key)?.name_any();
        let held = self.nic_locks.lock(name).await;
        let nic = decide::find_bound(&self.view.nics(), key)?.clone();
        Some((nic, held))
    }

    /// Forgets every trace of an attachment that holds no NIC (any more).
    fn forget_key(&self, key: &AttachmentKey) {
        self.answered().remove(key);
        self.journal.dequeue_release(key);
    }

    /// Dequeues a finished release; one that did not finish stays queued for the retry loop.
    fn after_release(&self, nic: &HostNic, req: &ReleaseRequest, finished: Result<()>) {
        match finished {
            Ok(()) => self.journal.dequeue_release(&req.key),
            Err(error) => {
                info!(hostnic = %nic.name_any(), %error, "release not finished; queued for retry")
            }
        }
    }

    /// Releases the NIC bound to `req.key`, if any, and dequeues the release once finished (or
    /// moot). Returns the HostNic bound to the key. The caller holds the gate.
    pub(crate) async fn release_queued(&self, req: &ReleaseRequest) -> Option<String> {
        let _key = self.key_locks.lock(req.key.clone()).await;
        let Some((nic, _held)) = self.lock_bound(&req.key).await else {
            self.forget_key(&req.key);
            return None;
        };
        let finished = self
            .release_nic(&nic, &PodNetns::open(req.netns.as_deref(), &nic))
            .await;
        self.after_release(&nic, req, finished);
        Some(nic.name_any())
    }

    /// Releases the NIC bound to `key` if one still is, under its lock, finding the link
    /// through the netns recorded at claim time. `None` when nothing is bound to it.
    pub(crate) async fn release_if_bound(
        &self,
        key: &AttachmentKey,
    ) -> Option<(String, Result<()>)> {
        let (nic, _held) = self.lock_bound(key).await?;
        let released = self.release_nic(&nic, &PodNetns::open(None, &nic)).await;
        Some((nic.name_any(), released))
    }

    /// Brings a bound NIC home and marks it Released, only once its link is proven on the
    /// node: moved back from the pod netns, or found there (a real NIC returns by itself when
    /// its netns is destroyed). Otherwise returns [`Error::NotHome`] and the NIC stays Bound:
    /// the operator may recycle or delete a Released NIC, so a link still in some pod must
    /// never be Released. The caller holds the NIC's lock.
    pub(crate) async fn release_nic(&self, nic: &HostNic, pod_ns: &PodNetns) -> Result<()> {
        let status = nic.status.clone().unwrap_or_default();
        let Some(pod) = status.pod else {
            return Ok(());
        };
        let key = AttachmentKey {
            container_id: pod.container_id.clone(),
            ifname: pod.interface.clone(),
        };
        let detached = match decide::mac(nic) {
            Some(mac) => {
                match attach::detach(self.node_netns.clone(), pod_ns.ns.clone(), mac).await {
                    Ok(d) => match d.host_name {
                        Some(name) => Some(name),
                        None => {
                            return Err(Error::NotHome {
                                hostnic: nic.name_any(),
                                why: pod_ns.not_home_reason(),
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
                }
            }
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
        let _gate = self.gate.read().await;
        let mut resp = GcResponse::default();
        for (key, _) in decide::gc_candidates(&self.view.nics(), &req.network, &valid) {
            match self.release_if_bound(&key).await {
                // Released meanwhile (by a DEL finishing), or by this GC.
                None | Some((_, Ok(()))) => resp.released.push(key),
                Some((hostnic, Err(error))) => {
                    warn!(%hostnic, %error, "gc could not release NIC");
                    resp.failed.push(GcFailure {
                        key,
                        error: format!("hostnic {hostnic}: {error}"),
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
/// Undoes a recorded claim if the claiming task panics between its journal record and the
/// end of its HostNic write and kernel step, keeping the NIC's lock until then. A process that
/// dies there leaves its journal record at [`Stage::Moving`], and the next start undoes the
/// claim instead.
struct ClaimGuard {
    agent: Arc<Agent>,
    claimed: Option<Claimed>,
}

/// What [`ClaimGuard`] needs to undo a claim.
struct Claimed {
    hostnic: String,
    mac: String,
    key: AttachmentKey,
    pod_ns: Arc<Netns>,
    held: Held<String>,
}

impl ClaimGuard {
    /// The claim ran to its end (completed or undone by the claim itself): hands back the lock.
    fn disarm(&mut self) -> Option<Held<String>> {
        self.claimed.take().map(|c| c.held)
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(c) = self.claimed.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let agent = self.agent.clone();
            rt.spawn(async move {
                let _held = c.held;
                if let Err(error) =
                    attach::detach(agent.node_netns.clone(), Some(c.pod_ns), c.mac).await
                {
                    warn!(hostnic = %c.hostnic, %error, "could not bring the NIC home after an interrupted claim");
                }
                agent.revert_if_bound(&c.hostnic, &c.key).await;
            });
        }
    }
}

/// A bound NIC's pod netns as a release found it: open (held open until the release is done,
/// so the runtime's unmount does not destroy it under the move), or why it did not open.
pub(crate) struct PodNetns {
    ns: Option<Arc<Netns>>,
    unopened: Vec<String>,
}

impl PodNetns {
    /// Opens the runtime's path `hint` first, then the one recorded on `nic` at claim time.
    pub(crate) fn open(hint: Option<&str>, nic: &HostNic) -> Self {
        let recorded = nic
            .status
            .as_ref()
            .and_then(|s| s.pod.as_ref())
            .map(|p| p.netns.as_str());
        let mut unopened = Vec::new();
        let ns = hint
            .filter(|p| !p.is_empty())
            .into_iter()
            .chain(recorded)
            .find_map(|p| match Netns::probe(p) {
                Probe::Open(ns) => Some(ns),
                Probe::Gone(e) | Probe::Unknown(e) => {
                    unopened.push(e.to_string());
                    None
                }
            })
            .map(Arc::new);
        Self { ns, unopened }
    }

    fn id(&self) -> Option<NetnsId> {
        self.ns.as_ref().and_then(|ns| ns.id().ok())
    }

    /// Why a link found neither here nor on the node is not home.
    fn not_home_reason(&self) -> String {
        if self.ns.is_some() {
            "its link is neither in the pod netns nor on the node".into()
        } else {
            format!(
                "its link is not on the node and the pod netns did not open ({})",
                self.unopened.join("; ")
            )
        }
    }
}
