//! Two replicas with leader election: one leads at a time; when it stops, the other takes
//! over and the pool keeps converging.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hostnic_operator::controller::Checkpoint;
use hostnic_operator::metrics::Metrics;
use hostnic_operator::run::LeaseConfig;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

type Replica = (
    &'static str,
    Arc<Metrics>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
);

fn leaders(r: &[Replica]) -> Vec<&'static str> {
    r.iter()
        .filter(|(_, m, s, _)| m.leader.get() == 1 && !s.is_cancelled())
        .map(|(id, ..)| *id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_at_a_time_and_failover() {
    let env = Env::start(Setup::default()).await;
    let mut ns = Namespace::default();
    ns.metadata.name = Some("hostnic-system".into());
    let _ = Api::<Namespace>::all(env.client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let lease = LeaseConfig {
        namespace: "hostnic-system".into(),
        name: "hostnic-operator".into(),
        duration: Duration::from_secs(2),
    };
    let mut replicas: Vec<Replica> = Vec::new();
    for id in ["op-a", "op-b"] {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut reg));
        let mut op = env.operator(Arc::new(Checkpoint::default()), Some(lease.clone()), id);
        op.metrics = metrics.clone();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(op.run(stop.clone()));
        replicas.push((id, metrics, stop, handle));
    }
    eventually("one leader", T, || async { leaders(&replicas).len() == 1 }).await;
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    for _ in 0..10 {
        assert!(leaders(&replicas).len() <= 1, "two leaders at once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = leaders(&replicas)[0];
    let holder = Api::<Lease>::namespaced(env.client.clone(), "hostnic-system")
        .get("hostnic-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some(first));

    // The leader shuts down gracefully (releases the Lease); the other one takes over.
    let idx = replicas
        .iter()
        .position(|(id, ..)| *id == first)
        .expect("leader");
    let (_, _, stop, handle) = replicas.remove(idx);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    eventually("the other replica leads", T, || async {
        leaders(&replicas).len() == 1
    })
    .await;
    env.patch_pool("web", serde_json::json!({"size": 3})).await;
    env.converged("web", &["i-node0001"], 3, T).await;
    for (_, _, stop, handle) in replicas {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }
    env.shutdown().await;
}
