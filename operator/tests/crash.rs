//! The deterministic crash-point test: the operator is frozen at lifecycle step k (each status
//! write and each mutating cloud call is a step), killed there, and a fresh operator finishes
//! the job. For every k of a full lifecycle (fill a pool, then delete it) the invariants must
//! hold: cloud NICs == HostNics, no duplicates, counts converged, nothing left at the end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

use hostnic_operator::controller::Checkpoint;
use kube::ResourceExt;
use kube::api::DeleteParams;

const T: Duration = Duration::from_secs(40);

/// The pool a lifecycle fills and deletes: `size` NICs on each of `nodes`.
#[derive(Clone, Copy)]
struct Shape {
    nodes: &'static [&'static str],
    size: u32,
}

/// Drives one lifecycle of pool `name`; returns early (true) if the checkpoint froze.
async fn lifecycle(
    env: &Env,
    shape: Shape,
    name: &str,
    cp: &Checkpoint,
    created: &mut bool,
    deleted: &mut bool,
) -> bool {
    let drive = async {
        if !*created {
            env.create_pool(name, spec(&[VX_A], shape.size)).await;
            *created = true;
        }
        env.converged(name, shape.nodes, shape.size, T).await;
        env.delete_pool(name).await;
        *deleted = true;
        eventually("pool gone", T, || async { env.pool(name).await.is_none() }).await;
    };
    tokio::select! {
        () = cp.hit.notified() => true,
        () = drive => false,
    }
}

async fn finish(env: &Env, shape: Shape, name: &str, created: bool, deleted: bool) {
    if !created {
        env.create_pool(name, spec(&[VX_A], shape.size)).await;
    }
    if !deleted {
        env.converged(name, shape.nodes, shape.size, T).await;
        env.delete_pool(name).await;
    }
    eventually("pool gone", T, || async { env.pool(name).await.is_none() }).await;
    eventually("no NIC left", T, || async {
        env.cloud_nics().is_empty() && env.all_hostnics().await.is_empty()
    })
    .await;
}

/// Counts the steps of a clean lifecycle of `shape`, then kills the operator at each of them
/// in turn and lets a fresh one finish.
async fn kill_at_every_step(shape: Shape, min_steps: u64) {
    let mut setup = Setup {
        nodes: shape.nodes.iter().map(|n| (*n, VX_A)).collect(),
        ..Setup::default()
    };
    // One HostNic reconcile at a time keeps the step order the same run after run.
    setup.settings.concurrency = 1;
    // GC would collect a NIC the restarted operator failed to adopt and hide the leak: with a
    // grace of an hour it collects none of the test's NICs, so every NIC must be adopted.
    setup.settings.gc_grace = Duration::from_secs(3600);
    let mut env = Env::start(setup).await;

    let counter = Arc::new(Checkpoint::default());
    env.start_with(counter.clone());
    let (mut c, mut d) = (false, false);
    assert!(!lifecycle(&env, shape, "p0", &counter, &mut c, &mut d).await);
    finish(&env, shape, "p0", c, d).await;
    let steps = counter.steps();
    env.stop_operator().await;
    let nics = shape.nodes.len() as u32 * shape.size;
    eprintln!("a clean lifecycle of {nics} NICs takes {steps} steps");
    assert!(
        steps >= min_steps,
        "every NIC has at least 10 steps, saw {steps}"
    );

    for k in 1..=steps {
        let name = format!("p{k}");
        let cp = Arc::new(Checkpoint::crash_at(k));
        env.start_with(cp.clone());
        let (mut created, mut deleted) = (false, false);
        let crashed = lifecycle(&env, shape, &name, &cp, &mut created, &mut deleted).await;
        env.kill_operator().await;
        eprintln!("k={k}: crashed={crashed} created={created} deleted={deleted}");
        if crashed {
            env.assert_no_duplicate_names().await;
        }
        env.start_operator();
        finish(&env, shape, &name, created, deleted).await;
        env.assert_invariants().await;
        env.stop_operator().await;
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_between_every_pair_of_steps() {
    let shape = Shape {
        nodes: &["i-node0001"],
        size: 2,
    };
    kill_at_every_step(shape, 20).await;
}

/// A create batch spans members and nodes: 2 nodes x 2 NICs share one CreateNics, so the kill
/// falls between the CreateNics and each member's record of its NIC, on either node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_at_every_step_of_a_batch_across_nodes() {
    let shape = Shape {
        nodes: &["i-node0001", "i-node0002"],
        size: 2,
    };
    kill_at_every_step(shape, 40).await;
}

/// A member deleted after its batch's CreateNics but before it recorded its NIC:
/// its cleanup takes the NIC left over for it and deletes it. GC (its grace an hour here)
/// would not, so a leftover left behind fails the convergence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_deleted_before_recording_its_nic_deletes_the_leftover() {
    let mut setup = Setup::default();
    // One HostNic reconcile at a time. The operator freezes at the step after the batch's
    // CreateNics (made in the background): another member's Creating or a record of a NIC.
    // Members may write Creating before or after the CreateNics (a member reconciled before
    // the pool pass has made them all waits), so the step is named, not numbered.
    setup.settings.concurrency = 1;
    setup.settings.gc_grace = Duration::from_secs(3600);
    let mut env = Env::start(setup).await;
    let cp = Arc::new(Checkpoint::crash_after("CreateNics"));
    env.start_with(cp.clone());
    env.create_pool("p", spec(&[VX_A], 3)).await;
    tokio::time::timeout(T, cp.hit.notified())
        .await
        .expect("frozen after the CreateNics");
    eventually("the batch's NICs made", T, || async {
        env.cloud_nics().len() == 3
    })
    .await;
    env.kill_operator().await;
    assert_eq!(env.sim.calls().action("CreateNics"), 1);
    assert_eq!(env.cloud_nics().len(), 3, "one batch of 3");
    let mut names: Vec<String> = env
        .all_hostnics()
        .await
        .iter()
        .filter(|h| h.status.as_ref().and_then(|s| s.nic_id.as_ref()).is_none())
        .map(|h| h.name_any())
        .collect();
    names.sort();
    let victim = names.pop().expect("a member without its NIC recorded");
    env.hostnics()
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete member");
    env.start_operator();
    env.converged("p", &["i-node0001"], 3, T).await;
    assert!(
        env.hostnics()
            .get_opt(&victim)
            .await
            .expect("get")
            .is_none()
    );
    env.assert_invariants().await;
    env.shutdown().await;
}
