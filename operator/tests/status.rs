//! NicPool status as `kubectl` shows it follows the HostNics within a second: each claim and
//! release (written as the agent writes them) shows in the per-node counts, and `Ready` is False
//! while a node is short and True once every node is full, in a poll and in a watch.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hostnic_crds::{HostNic, HostNicPhase};
use hostnic_tests::kubectl::Kubectl;
use kube::ResourceExt;
use qingcloud_sim::{Fault, FaultKind};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
/// The promise: a HostNic change shows in the pool's status within this.
const LAG: Duration = Duration::from_secs(1);
/// A burst of pods starting on both nodes (a Deployment scaling up) claims NICs this far apart.
const PACE: Duration = Duration::from_millis(150);
const NODES: [&str; 2] = ["i-node0001", "i-node0002"];
const POOL: &str = "web";
const SIZE: u32 = 3;
/// How long each CreateNics takes while the test needs nodes to stay short: a refill cannot be
/// Available before it, so a Ready shown meanwhile is wrong, not early.
const SLOW_CREATE_MS: u64 = 4000;

/// Makes every CreateNics slow until the returned fault id is removed.
fn slow_creates(env: &Env) -> u64 {
    env.sim
        .inject(Fault::new(FaultKind::DelayMs(SLOW_CREATE_MS)).on("CreateNics"))
}

/// Production settings: the reconcile's debounce, resync, polls and back-offs as deployed.
/// Only names come from the lab: the NIC prefix the simulator's NICs carry and where its Nodes
/// keep their instance ids.
fn setup() -> Setup {
    let lab = test_settings();
    let mut settings = production_settings();
    settings.nic_prefix = lab.nic_prefix;
    settings.instance_annotation = lab.instance_annotation;
    settings.instance_label = lab.instance_label;
    Setup {
        nodes: NODES.iter().map(|n| (*n, VX_A)).collect(),
        settings,
        kube_tls: true,
        ..Default::default()
    }
}

async fn started() -> (Env, tempfile::TempDir, Kubectl) {
    let mut env = Env::start(setup()).await;
    env.start_operator();
    env.create_pool(POOL, spec(&[VX_A], SIZE)).await;
    env.converged(POOL, &NODES, SIZE, T).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, env.kubeconfig()).expect("write kubeconfig");
    let kubectl = Kubectl::new(&path);
    (env, dir, kubectl)
}

/// What one NicPool object says: per-node (available, bound) and Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    nodes: BTreeMap<String, (u64, u64)>,
    ready: bool,
}

fn shown(pool: &Value) -> Shown {
    let status = &pool["status"];
    let nodes = status["nodeStatus"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let count = |k: &str| n[k].as_u64().unwrap_or(0);
            let name = n["node"].as_str().unwrap_or_default().to_string();
            (name, (count("available"), count("bound")))
        })
        .collect();
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    Shown { nodes, ready }
}

impl Shown {
    fn bound(&self, node: &str) -> u64 {
        self.nodes.get(node).map_or(0, |n| n.1)
    }
}

/// One `kubectl get nicpools -o json`: asked at `asked`, answered at `answered`.
#[derive(Debug, Clone)]
struct Poll {
    asked: Instant,
    answered: Instant,
    shown: Shown,
}

/// Polls `kubectl get nicpools -o json` back to back from `POLLERS` threads until dropped.
struct Poller {
    stop: Arc<AtomicBool>,
    polls: Arc<Mutex<Vec<Poll>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// kubectl processes polling at once, `STAGGER` apart.
const POLLERS: u32 = 2;
const STAGGER: Duration = Duration::from_millis(120);

impl Poller {
    fn start(kubectl: &Kubectl) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..POLLERS)
            .map(|i| {
                let (s, p, k) = (stop.clone(), polls.clone(), kubectl.clone());
                std::thread::spawn(move || {
                    // Staggered, so a change waits half a kubectl call for the next poll.
                    std::thread::sleep(STAGGER * i);
                    poll_until(&s, &p, &k);
                })
            })
            .collect();
        Self {
            stop,
            polls,
            threads,
        }
    }

    /// Every poll so far, in the order they were asked.
    fn polls(&self) -> Vec<Poll> {
        let mut all = self.polls.lock().unwrap().clone();
        all.sort_by_key(|p| p.asked);
        all
    }

    fn latest(&self) -> Option<Poll> {
        self.polls().pop()
    }
}

fn poll_until(s: &AtomicBool, p: &Mutex<Vec<Poll>>, k: &Kubectl) {
    while !s.load(Ordering::SeqCst) {
        let asked = Instant::now();
        let items = k.list("nicpools").expect("kubectl get nicpools");
        let answered = Instant::now();
        let pool = items
            .iter()
            .find(|p| p["metadata"]["name"] == POOL)
            .expect("the pool");
        p.lock().unwrap().push(Poll {
            asked,
            answered,
            shown: shown(pool),
        });
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A claim or release written at `at`, after which `node` has `bound` Bound NICs.
#[derive(Debug)]
struct Flip {
    at: Instant,
    node: &'static str,
    bound: u64,
    claim: bool,
}

impl Flip {
    /// A claim (or release) on `node` just done, counted in `bound`.
    fn count(bound: &mut BTreeMap<&'static str, u64>, node: &'static str, claim: bool) -> Self {
        let b = bound.entry(node).or_default();
        if claim {
            *b += 1;
        } else {
            *b -= 1;
        }
        Self {
            at: Instant::now(),
            node,
            bound: *b,
            claim,
        }
    }
}

/// How long until a poll asked after the flip showed it; None if none did.
fn lag_of(flip: &Flip, polls: &[Poll]) -> Option<Duration> {
    polls
        .iter()
        .filter(|p| p.asked >= flip.at)
        .find(|p| {
            let b = p.shown.bound(flip.node);
            if flip.claim {
                b >= flip.bound
            } else {
                b <= flip.bound
            }
        })
        .map(|p| p.answered - flip.at)
}

/// Every version of the pool a watch delivers, as polls asked and answered when it arrived.
fn watch_pool(env: &Env) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Poll>>>) {
    use futures::StreamExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let api = env.pools();
    let task = tokio::spawn(async move {
        let mut w = kube::runtime::watcher(api, Default::default()).boxed();
        while let Some(Ok(e)) = w.next().await {
            if let kube::runtime::watcher::Event::Apply(p) = e {
                let at = Instant::now();
                out.lock().unwrap().push(Poll {
                    asked: at,
                    answered: at,
                    shown: shown(&serde_json::json!(p)),
                });
            }
        }
    });
    (task, seen)
}

async fn available_per_node(env: &Env) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for n in NODES {
        out.insert(
            n.to_string(),
            env.count(POOL, n, HostNicPhase::Available).await,
        );
    }
    out
}

fn free_nics(nics: &[HostNic], node: &str) -> Vec<String> {
    nics.iter()
        .filter(|h| h.spec.node == node)
        .filter(|h| h.status.as_ref().map(|s| s.phase) == Some(HostNicPhase::Available))
        .map(|h| h.name_any())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_claim_and_release_shows_within_a_second() {
    let (env, _dir, kubectl) = started().await;
    let nics = env.all_hostnics().await;
    let claimed: Vec<(&'static str, String)> = (0..SIZE as usize)
        .flat_map(|i| NODES.map(|n| (n, free_nics(&nics, n)[i].clone())))
        .collect();
    let poller = Poller::start(&kubectl);
    // kubectl's first calls fetch the API discovery; flips start once the polls are steady.
    eventually("kubectl polls", T, || async {
        poller.polls().len() >= 2 * POLLERS as usize
    })
    .await;
    let (watching, seen) = watch_pool(&env);
    let slow = slow_creates(&env);
    let mut flips = Vec::new();
    let mut bound: BTreeMap<&str, u64> = BTreeMap::new();
    for (node, name) in &claimed {
        env.bind(name).await;
        flips.push(Flip::count(&mut bound, node, true));
        tokio::time::sleep(PACE).await;
    }
    tokio::time::sleep(LAG).await;

    // Every NIC of both nodes is taken and no refill can be Available yet: the nodes are
    // short, and the status says so.
    let asked = Instant::now();
    eventually("a poll after the claims", T, || async {
        poller.latest().is_some_and(|p| p.asked >= asked)
    })
    .await;
    let p = poller.latest().expect("a poll");
    let truth = available_per_node(&env).await;
    assert!(
        truth.values().all(|a| *a < SIZE),
        "refilled too soon: {truth:?}"
    );
    assert!(
        !p.shown.ready,
        "Ready while nodes are short {truth:?}: {p:?}"
    );
    env.sim.remove_fault(slow);
    // Ready once the refill is done, and only then.
    eventually("Ready after the refill", T, || async {
        poller.latest().is_some_and(|p| p.shown.ready)
    })
    .await;
    let truth = available_per_node(&env).await;
    assert!(
        truth.values().all(|a| *a >= SIZE),
        "Ready shown while a node is short: {truth:?}"
    );

    for (node, name) in &claimed {
        env.release(name).await;
        flips.push(Flip::count(&mut bound, node, false));
        tokio::time::sleep(PACE).await;
    }
    tokio::time::sleep(LAG * 2).await;
    let polls = poller.polls();
    drop(poller);

    watching.abort();
    let watched: Vec<Poll> = seen.lock().unwrap().clone();
    let direct: Vec<Option<Duration>> = flips.iter().map(|f| lag_of(f, &watched)).collect();
    let worst_direct = direct.iter().map(|l| l.unwrap_or(Duration::MAX)).max();
    println!("MEASURE status lag through a watch: worst {worst_direct:?}, each {direct:?}");
    let lags: Vec<Option<Duration>> = flips.iter().map(|f| lag_of(f, &polls)).collect();
    let worst = lags.iter().map(|l| l.unwrap_or(Duration::MAX)).max();
    let mut took: Vec<Duration> = polls.iter().map(|p| p.answered - p.asked).collect();
    took.sort();
    println!(
        "MEASURE status lag over {} flips (as kubectl shows it, its own time included: median \
         kubectl get {:?} over {} polls): worst {worst:?}, each {lags:?}",
        flips.len(),
        took.get(took.len() / 2),
        polls.len()
    );
    for (how, lags) in [("a watch", &direct), ("kubectl get", &lags)] {
        for (f, l) in flips.iter().zip(lags) {
            assert!(
                l.is_some_and(|l| l <= LAG),
                "{f:?} showed through {how} after {l:?} (more than {LAG:?})"
            );
        }
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_never_shows_ready_while_a_node_is_short() {
    let (env, _dir, kubectl) = started().await;
    let watch = kubectl
        .watch(&["nicpool", POOL])
        .expect("kubectl get --watch");
    // The watch's first object: the pool as it is, full and Ready.
    let (_, first) = watch
        .events
        .recv_timeout(T)
        .expect("the watch's first object");
    assert!(shown(&first).ready, "converged pool not Ready: {first}");
    assert_eq!(shown(&first).bound(NODES[0]), 0, "{first}");

    let nics = env.all_hostnics().await;
    let name = free_nics(&nics, NODES[0])[0].clone();
    let slow = slow_creates(&env);
    env.bind(&name).await;
    let claimed = Instant::now();
    // Until its refill is Available (two job polls at least), the node is short.
    let mut short_until = claimed;
    loop {
        let asked = Instant::now();
        if env.count(POOL, NODES[0], HostNicPhase::Available).await >= SIZE {
            break;
        }
        short_until = asked;
        assert!(claimed.elapsed() < T, "the node was never refilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.sim.remove_fault(slow);
    assert!(
        short_until - claimed > LAG,
        "the refill was too quick to tell a stale Ready apart ({:?})",
        short_until - claimed
    );
    let mut events = Vec::new();
    let deadline = Instant::now() + T;
    // Until the watch shows Ready again (after the refill).
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, obj) = watch.events.recv_timeout(left).expect("Ready again");
        let s = shown(&obj);
        // A status written before the claim (no NIC bound yet on the node) may still be on its
        // way: it is the pool as it was, Ready rightly.
        if s.bound(NODES[0]) == 0 {
            continue;
        }
        events.push((at, s.clone()));
        if s.ready {
            break;
        }
    }
    let turned_false = events
        .iter()
        .find(|(_, s)| !s.ready)
        .map(|(at, _)| *at - claimed);
    assert!(
        turned_false.is_some_and(|l| l <= LAG),
        "Ready did not turn False within {LAG:?} of the claim: {turned_false:?}"
    );
    for (at, s) in &events {
        assert!(
            !(s.ready && *at <= short_until),
            "the watch showed Ready while the node was short ({:?} after the claim): {s:?}",
            *at - claimed
        );
    }
    env.shutdown().await;
}
