//! Leader election between operator replicas: one leader at a time, a graceful handover, a
//! leader cut off from the API server that stops calling the cloud before anyone else may take
//! over, and a live Lease whose holder's clock is off that is not stolen.
//!
//! Lease timing is production's (15 s / 10 s / 2 s) scaled by 1/5 (3 s / 2 s / 400 ms) so a
//! failover takes seconds, not half a minute; the ratios, which the safety argument rests on,
//! are production's.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hostnic_operator::controller::Checkpoint;
use hostnic_operator::lease::Timing;
use hostnic_operator::metrics::Metrics;
use hostnic_operator::run::{LeaseConfig, Operator};
use hostnic_tests::proxy::Proxy;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);
const NS: &str = "hostnic-system";
const LEASE: &str = "hostnic-operator";

fn timing() -> Timing {
    Timing::new(
        Duration::from_secs(3),
        Duration::from_secs(2),
        Duration::from_millis(400),
    )
    .expect("valid timing")
}

fn lease_config() -> LeaseConfig {
    LeaseConfig {
        namespace: NS.into(),
        name: LEASE.into(),
        timing: timing(),
    }
}

struct Replica {
    id: &'static str,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// Starts `op` with its own metrics.
    fn start(id: &'static str, mut op: Operator) -> Self {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut reg));
        op.metrics = metrics.clone();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(op.run(stop.clone()));
        Self {
            id,
            metrics,
            stop,
            handle,
        }
    }

    fn leads(&self) -> bool {
        self.metrics.leader.get() == 1 && !self.stop.is_cancelled()
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}

fn leaders(r: &[Replica]) -> Vec<&'static str> {
    r.iter().filter(|r| r.leads()).map(|r| r.id).collect()
}

async fn start_env() -> Env {
    let env = Env::start(Setup::default()).await;
    hostnic_tests::scratch::ensure_namespace(&env.client, NS)
        .await
        .expect("create namespace");
    env
}

async fn holder(env: &Env) -> Option<String> {
    Api::<Lease>::namespaced(env.client.clone(), NS)
        .get_opt(LEASE)
        .await
        .expect("get lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_at_a_time_and_failover() {
    let env = start_env().await;
    let mut replicas: Vec<Replica> = ["op-a", "op-b"]
        .into_iter()
        .map(|id| {
            let op = env.operator(Arc::new(Checkpoint::default()), Some(lease_config()), id);
            Replica::start(id, op)
        })
        .collect();
    eventually("one leader", T, || async { leaders(&replicas).len() == 1 }).await;
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    for _ in 0..10 {
        assert!(leaders(&replicas).len() <= 1, "two leaders at once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = leaders(&replicas)[0];
    assert_eq!(holder(&env).await.as_deref(), Some(first));

    // The leader shuts down gracefully (releases the Lease); the other one takes over.
    let idx = replicas.iter().position(|r| r.id == first).expect("leader");
    replicas.remove(idx).stop().await;
    eventually("the other replica leads", T, || async {
        leaders(&replicas).len() == 1
    })
    .await;
    env.patch_pool("web", serde_json::json!({"size": 3})).await;
    env.converged("web", &["i-node0001"], 3, T).await;
    for r in replicas {
        r.stop().await;
    }
    env.shutdown().await;
}

/// The leader's connection to the API server stops forwarding (it hangs, it does not close)
/// while its reconciles wait in the cloud rate limiter. It must stop calling the cloud before
/// its Lease expires for the other replica, which then takes over and converges the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_the_api_server_stops_calling_the_cloud_before_failover() {
    let env = start_env().await;
    let lease_duration = timing().duration;
    // Each replica reaches the API server and the cloud through its own proxy; the proxies
    // in front of the cloud log when each replica sent anything.
    let a_kube = Proxy::start(env.api_addr().await).await;
    let a_cloud = Proxy::start(env.sim.addr()).await;
    let b_cloud = Proxy::start(env.sim.addr()).await;
    // A's cloud client has production's 0.5 requests/s with a bucket of 2 instead of 20, so
    // that its reconciles are queued in the limiter when it is cut off, as on a busy account.
    let slow = qingcloud::ClientSettings {
        qps: 0.5,
        burst: 2,
        ..fast_cloud_settings()
    };
    let mut a = env.operator(
        Arc::new(Checkpoint::default()),
        Some(lease_config()),
        "op-a",
    );
    a.client = env.op_client_via(a_kube.addr()).await;
    a.cloud = Arc::new(hostnic_operator::cloud::qingcloud::QingCloud::new(
        env.qc_via(a_cloud.addr(), slow),
    ));
    let a = Replica::start("op-a", a);
    eventually("op-a leads", T, || async { a.leads() }).await;
    let mut b = env.operator(
        Arc::new(Checkpoint::default()),
        Some(lease_config()),
        "op-b",
    );
    b.cloud = Arc::new(hostnic_operator::cloud::qingcloud::QingCloud::new(
        env.qc_via(b_cloud.addr(), fast_cloud_settings()),
    ));
    let b = Replica::start("op-b", b);
    let size = 6;
    env.create_pool("web", spec(&[VX_A], size)).await;
    // Cut A off as soon as it created its first NIC: the other creates wait in its limiter.
    eventually("op-a creates a NIC", T, || async {
        !env.cloud_nics().is_empty()
    })
    .await;
    a_kube.stall();
    let cut = Instant::now();
    assert_eq!(holder(&env).await.as_deref(), Some("op-a"));

    eventually("op-b takes over", T, || async {
        holder(&env).await.as_deref() == Some("op-b")
    })
    .await;
    env.converged("web", &["i-node0001"], size, T).await;

    let a_sent = a_cloud.sent();
    let b_sent = b_cloud.sent();
    let a_last = *a_sent.last().expect("op-a called the cloud");
    let b_first = *b_sent.first().expect("op-b called the cloud");
    assert!(
        a_last < cut + lease_duration,
        "op-a called the cloud {:?} after it was cut off, past its lease ({lease_duration:?})",
        a_last - cut
    );
    assert!(
        a_last < b_first,
        "op-a still called the cloud {:?} after op-b started",
        a_last - b_first
    );
    assert!(!a.leads(), "op-a still believes it leads");
    eprintln!(
        "op-a: {} sends to the cloud, the last {:?} after the cut; op-b's first {:?} after it",
        a_sent.len(),
        a_last.saturating_duration_since(cut),
        b_first.saturating_duration_since(cut),
    );
    a.stop().await;
    b.stop().await;
    env.shutdown().await;
}

/// A holder whose clock is an hour behind keeps renewing: its renewTime is always an hour old,
/// yet the Lease is live and must not be taken. Once it stops renewing, the Lease is taken no
/// sooner than a lease duration after its last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_lease_with_an_old_renew_time_is_not_stolen() {
    let env = start_env().await;
    let t = timing();
    let leases = Api::<Lease>::namespaced(env.client.clone(), NS);
    let skewed = || MicroTime(Timestamp::now() - jiff::SignedDuration::from_hours(1));
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("op-x".into()),
            lease_duration_seconds: Some(3),
            acquire_time: Some(skewed()),
            renew_time: Some(skewed()),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    let renewing = CancellationToken::new();
    let last_write = Arc::new(std::sync::Mutex::new(Timestamp::now()));
    let holder_task = {
        let (leases, renewing, last_write) = (leases.clone(), renewing.clone(), last_write.clone());
        let period = t.retry_period;
        tokio::spawn(async move {
            while !renewing.is_cancelled() {
                tokio::time::sleep(period).await;
                let mut l = leases.get(LEASE).await.expect("get lease");
                if let Some(s) = l.spec.as_mut() {
                    s.renew_time = Some(skewed());
                }
                if renewing.is_cancelled() {
                    break;
                }
                // Taken before sending, so it is never later than the write itself.
                let sending = Timestamp::now();
                if leases
                    .replace(LEASE, &PostParams::default(), &l)
                    .await
                    .is_ok()
                {
                    *last_write.lock().expect("last write") = sending;
                }
            }
        })
    };

    let op = env.operator(
        Arc::new(Checkpoint::default()),
        Some(lease_config()),
        "op-a",
    );
    let a = Replica::start("op-a", op);
    let watch_until = Instant::now() + 3 * t.duration;
    while Instant::now() < watch_until {
        assert!(!a.leads(), "op-a took a Lease that op-x keeps renewing");
        assert_eq!(holder(&env).await.as_deref(), Some("op-x"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    renewing.cancel();
    let _ = holder_task.await;
    let stopped = *last_write.lock().expect("last write");
    eventually("op-a takes the abandoned Lease", T, || async {
        holder(&env).await.as_deref() == Some("op-a")
    })
    .await;
    // Both times come from this machine's clock: op-a wrote acquireTime when it took over.
    let acquired = leases
        .get(LEASE)
        .await
        .expect("get lease")
        .spec
        .and_then(|s| s.acquire_time)
        .expect("acquireTime")
        .0;
    let waited = acquired.duration_since(stopped);
    assert!(
        waited >= jiff::SignedDuration::try_from(t.duration).expect("duration"),
        "op-a took the Lease {waited:?} after op-x's last renewal, before it expired"
    );
    eventually("op-a leads", T, || async { a.leads() }).await;
    a.stop().await;
    env.shutdown().await;
}
