//! Garbage collection: orphaned cloud NICs of this cluster go after two passes (dry run only
//! reports them), other NICs stay, and a HostNic whose NIC vanished is failed and replaced.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

async fn orphan(env: &Env, name: &str, attach: bool) -> String {
    let vx = VX_A.parse().expect("vxnet");
    let nic = env
        .qc
        .create_nics(&vx, 1, Some(name))
        .await
        .expect("create")[0]
        .id
        .clone();
    if attach {
        let job = env
            .qc
            .attach_nics(
                &"i-node0001".parse().expect("instance"),
                std::slice::from_ref(&nic),
            )
            .await
            .expect("attach");
        env.qc
            .wait_job(&job, Duration::from_secs(10))
            .await
            .expect("job");
    }
    nic.as_str().to_string()
}

fn exists(env: &Env, id: &str) -> bool {
    env.sim.nics().iter().any(|n| n.nic.nic_id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphans_are_collected_and_vanished_nics_replaced() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;

    let free = orphan(&env, &format!("{PREFIX}0000-dead"), false).await;
    let attached = orphan(&env, &format!("{PREFIX}0000-gone"), true).await;
    let foreign = orphan(&env, "someone-elses-nic", false).await;
    eventually("orphans collected", T, || async {
        !exists(&env, &free) && !exists(&env, &attached)
    })
    .await;
    assert!(
        exists(&env, &foreign),
        "NICs without our prefix are never touched"
    );

    // A NIC deleted behind the operator's back: its HostNic fails and is replaced.
    let victim = env.all_hostnics().await[0].clone();
    env.delete_in_cloud(&victim).await;
    let victim_name = kube::ResourceExt::name_any(&victim);
    eventually("vanished NIC replaced", T, || async {
        env.all_hostnics()
            .await
            .iter()
            .all(|h| kube::ResourceExt::name_any(h) != victim_name)
    })
    .await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let text = hostnic_operator::metrics::encode(&env.registry);
    assert!(
        text.contains("hostnic_operator_gc_deletions_total{dry_run=\"false\"}"),
        "{text}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_only_reports() {
    let mut setup = Setup::default();
    setup.settings.gc_dry_run = true;
    let mut env = Env::start(setup).await;
    env.start_operator();
    let id = orphan(&env, &format!("{PREFIX}0000-dead"), false).await;
    eventually("dry run reported", T, || async {
        hostnic_operator::metrics::encode(&env.registry)
            .contains("hostnic_operator_gc_deletions_total{dry_run=\"true\"} ")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(exists(&env, &id));
    env.shutdown().await;
}
