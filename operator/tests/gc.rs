//! Garbage collection: orphaned cloud NICs of this cluster (named exactly
//! `hostnic-<cluster>-<uuid>`) go after two passes, NICs of other clusters never; a HostNic
//! whose NIC vanished is failed and replaced, unless a pod holds it; dry run touches nothing;
//! a pass lists only the pools' vxnets and only running jobs; a lost answer triggers a pass;
//! the default cluster name is refused while other clusters' NICs exist.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::future::BoxFuture;
use hostnic_crds::{HostNic, HostNicPhase};
use hostnic_operator::cloud::{
    CloudApi, CloudResult, CreatedNic, Instance, Job, Nic, NicQuery, Priority, Vxnet,
};
use hostnic_operator::controller::{Checkpoint, Context};
use hostnic_operator::gc::Collector;
use kube::ResourceExt;
use qingcloud_sim::{Fault, FaultKind};

const T: Duration = Duration::from_secs(30);

/// A Kubernetes-style uid, the tail of every NIC name an operator gives.
fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

async fn orphan_in(env: &Env, vxnet: &str, name: &str, attach: bool) -> String {
    let vx = vxnet.parse().expect("vxnet");
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

async fn orphan(env: &Env, name: &str, attach: bool) -> String {
    orphan_in(env, VX_A, name, attach).await
}

fn exists(env: &Env, id: &str) -> bool {
    env.sim.nics().iter().any(|n| n.nic.nic_id == id)
}

fn has_vanished_condition(h: &HostNic) -> bool {
    h.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "CloudError" && c.status == "True" && c.reason == "NicVanished")
    })
}

/// A GC of its own around `cloud`, to run passes one at a time.
fn standalone_gc(env: &Env, cloud: Arc<dyn CloudApi>) -> Context {
    let op = env.operator(Arc::new(Checkpoint::default()), None, "gc-test");
    // GC reads the API itself, not the stores.
    let stores = hostnic_operator::controller::status::Stores {
        pools: kube::runtime::reflector::store().0,
        nodes: kube::runtime::reflector::store().0,
        hostnics: kube::runtime::reflector::store().0,
    };
    let recorder = hostnic_operator::controller::recorder(&op);
    // GC hands off no calls: nothing to wake.
    let (wake, _) = hostnic_operator::controller::handoff::Wake::channel();
    Context::new(&op, cloud, stores, recorder, wake)
}

/// The real cloud, except that vxnet listings skip one NIC: a paged, non-atomic listing
/// that missed a row (the by-id answer is right).
#[derive(Debug)]
struct ListingMisses {
    inner: Arc<dyn CloudApi>,
    nic: String,
}

impl CloudApi for ListingMisses {
    fn lost_answers(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.lost_answers()
    }

    fn describe_nics(&self, q: NicQuery, p: Priority) -> BoxFuture<'_, CloudResult<Vec<Nic>>> {
        Box::pin(async move {
            let listing = matches!(q, NicQuery::Vxnets(_));
            let mut nics = self.inner.describe_nics(q, p).await?;
            if listing {
                nics.retain(|n| n.id != self.nic);
            }
            Ok(nics)
        })
    }
    fn create_nics(
        &self,
        v: String,
        n: String,
        c: u32,
        p: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<CreatedNic>>> {
        self.inner.create_nics(v, n, c, p)
    }
    fn attach_nics(
        &self,
        i: String,
        n: Vec<String>,
        p: Priority,
    ) -> BoxFuture<'_, CloudResult<String>> {
        self.inner.attach_nics(i, n, p)
    }
    fn detach_nics(&self, n: Vec<String>, p: Priority) -> BoxFuture<'_, CloudResult<String>> {
        self.inner.detach_nics(n, p)
    }
    fn delete_nics(&self, n: Vec<String>, p: Priority) -> BoxFuture<'_, CloudResult<()>> {
        self.inner.delete_nics(n, p)
    }
    fn rename_nic(&self, n: String, m: String, p: Priority) -> BoxFuture<'_, CloudResult<()>> {
        self.inner.rename_nic(n, m, p)
    }
    fn describe_jobs(&self, i: Vec<String>, p: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        self.inner.describe_jobs(i, p)
    }
    fn running_jobs(&self, p: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        self.inner.running_jobs(p)
    }
    fn describe_vxnets(
        &self,
        i: Vec<String>,
        p: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Vxnet>>> {
        self.inner.describe_vxnets(i, p)
    }
    fn describe_instances(
        &self,
        i: Vec<String>,
        p: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Instance>>> {
        self.inner.describe_instances(i, p)
    }
}

/// A NIC a listing missed twice is looked up by id before anything is written: found, its
/// HostNic stays as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nic_the_listing_missed_is_confirmed_by_id() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 1)).await;
    env.converged("web", &["i-node0001"], 1, T).await;
    env.stop_operator().await;
    let h = env.all_hostnics().await[0].clone();
    let nic = h
        .status
        .as_ref()
        .and_then(|s| s.nic_id.clone())
        .expect("nic id");
    let cloud = Arc::new(ListingMisses {
        inner: env.cloud(),
        nic: nic.clone(),
    });
    let ctx = standalone_gc(&env, cloud);
    let mut gc = Collector::default();
    for _ in 0..3 {
        gc.pass(&ctx).await.expect("pass");
    }
    let after = env.hostnics().get(&h.name_any()).await.expect("get");
    assert_eq!(
        h.metadata.resource_version, after.metadata.resource_version,
        "a NIC the by-id DescribeNics finds was judged vanished: {:?}",
        after.status
    );
    assert!(exists(&env, &nic));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphans_are_collected_and_vanished_nics_replaced() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;

    let free = orphan(&env, &format!("{PREFIX}{}", uid(1)), false).await;
    let attached = orphan(&env, &format!("{PREFIX}{}", uid(2)), true).await;
    let foreign = orphan(&env, "someone-elses-nic", false).await;
    let not_a_uid = orphan(&env, &format!("{PREFIX}0000-dead"), false).await;
    let longer_cluster = orphan(&env, &format!("{PREFIX}eu-{}", uid(3)), false).await;
    eventually("orphans collected", T, || async {
        !exists(&env, &free) && !exists(&env, &attached)
    })
    .await;
    assert!(
        exists(&env, &foreign) && exists(&env, &not_a_uid) && exists(&env, &longer_cluster),
        "NICs not named exactly `{PREFIX}<uuid>` are never touched"
    );
    // Out of the way of the invariants below, which count every NIC with our prefix.
    let ids: Vec<qingcloud::NicId> = [not_a_uid, longer_cluster]
        .iter()
        .map(|i| i.parse().expect("id"))
        .collect();
    env.qc.delete_nics(&ids).await.expect("delete");

    // A NIC deleted behind the operator's back: its HostNic fails and is replaced.
    let victim = env.all_hostnics().await[0].clone();
    env.delete_in_cloud(&victim).await;
    let victim_name = victim.name_any();
    eventually("vanished NIC replaced", T, || async {
        env.all_hostnics()
            .await
            .iter()
            .all(|h| h.name_any() != victim_name)
    })
    .await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let text = hostnic_operator::metrics::encode(&env.registry);
    assert!(gc_deletions(&text, "false") >= 1, "{text}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_prod_never_collects_prod_eu_and_back() {
    let mut setup = Setup::default();
    setup.settings.nic_prefix = "hostnic-prod-".into();
    let mut env = Env::start(setup).await;
    let prod = orphan(&env, &format!("hostnic-prod-{}", uid(1)), false).await;
    let prod_eu = orphan(&env, &format!("hostnic-prod-eu-{}", uid(2)), false).await;
    // No pool: GC lists the vxnets of the HostNics and pools, so give it one to look at.
    env.create_pool("web", spec(&[VX_A], 0)).await;
    env.start_operator();
    eventually("prod's orphan collected", T, || async {
        !exists(&env, &prod)
    })
    .await;
    // More passes (every 500 ms here) than it took to collect prod's own orphan.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(exists(&env, &prod_eu), "prod collected a NIC of prod-eu");
    env.stop_operator().await;

    // The same account seen from prod-eu: its orphan goes, prod's NICs stay.
    let prod2 = orphan(&env, &format!("hostnic-prod-{}", uid(3)), false).await;
    env.setup_settings.nic_prefix = "hostnic-prod-eu-".into();
    env.start_operator();
    eventually("prod-eu's orphan collected", T, || async {
        !exists(&env, &prod_eu)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(exists(&env, &prod2), "prod-eu collected a NIC of prod");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_bound_nic_keeps_its_phase_and_gets_a_condition() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 1)).await;
    env.converged("web", &["i-node0001"], 1, T).await;
    let victim = env.all_hostnics().await[0].clone();
    let name = victim.name_any();
    env.bind(&name).await;
    env.delete_in_cloud(&victim).await;
    eventually("vanished condition on the bound HostNic", T, || async {
        env.hostnics()
            .get_opt(&name)
            .await
            .expect("get")
            .is_some_and(|h| has_vanished_condition(&h))
    })
    .await;
    // Several more passes: still Bound, never Failed (that would detach the pod's NIC).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = env.hostnics().get(&name).await.expect("get");
    let phase = h.status.as_ref().map(|s| s.phase);
    assert_eq!(phase, Some(HostNicPhase::Bound), "{:?}", h.status);
    // The pool keeps a free NIC next to it, as for any bound one.
    eventually("a free NIC beside the bound one", T, || async {
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await
            == 1
    })
    .await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_writes_and_deletes_nothing() {
    let mut setup = Setup::default();
    setup.settings.gc_dry_run = true;
    let mut env = Env::start(setup).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    let id = orphan(&env, &format!("{PREFIX}{}", uid(1)), true).await;
    let victim = env.all_hostnics().await[0].clone();
    let name = victim.name_any();
    env.delete_in_cloud(&victim).await;
    env.sim.reset_calls();
    let before = env.hostnics().get(&name).await.expect("get");
    eventually("dry run reported", T, || async {
        gc_deletions(&hostnic_operator::metrics::encode(&env.registry), "true") >= 1
    })
    .await;
    // Many passes (every 500 ms here) with the orphan and the vanished NIC in view.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(exists(&env, &id), "dry run removed an orphan");
    let calls = env.sim.calls();
    for action in ["DetachNics", "DeleteNics"] {
        assert_eq!(calls.action(action), 0, "dry run called {action}");
    }
    let after = env.hostnics().get(&name).await.expect("get");
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "dry run wrote the HostNic whose NIC vanished: {:?}",
        after.status
    );
    assert!(!has_vanished_condition(&after));
    env.shutdown().await;
}

/// The GC pass's cost, counted in HTTP requests at the simulator (paging included): one
/// DescribeNics per 100 NICs of the pools' vxnets, however many NICs the account has
/// elsewhere, and one DescribeJobs for the running jobs, however long the job history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_lists_only_the_pools_vxnets_and_running_jobs() {
    let mut env = Env::start(Setup::default()).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    env.stop_operator().await;

    // The rest of the account: 200 NICs in a vxnet no pool uses, and a job history of more
    // than a page (50 attaches and 50 detaches on top of the pool's own).
    let vx_b = VX_B.parse().expect("vxnet");
    let others: Vec<qingcloud::NicId> = env
        .qc
        .create_nics(&vx_b, 200, Some("someone-else"))
        .await
        .expect("create")
        .into_iter()
        .map(|n| n.id)
        .collect();
    let node: qingcloud::InstanceId = "i-node0001".parse().expect("instance");
    for action in ["attach", "detach"] {
        let mut jobs = Vec::new();
        for nic in &others[..50] {
            let one = std::slice::from_ref(nic);
            jobs.push(
                match action {
                    "attach" => env.qc.attach_nics(&node, one).await,
                    _ => env.qc.detach_nics(one).await,
                }
                .expect("job"),
            );
        }
        for j in jobs {
            env.qc.wait_job(&j, T).await.expect("wait");
        }
    }
    assert!(env.sim.jobs().len() > 100);
    let orphan = orphan(&env, &format!("{PREFIX}{}", uid(1)), false).await;

    let ctx = standalone_gc(&env, env.cloud());
    let mut gc = Collector::default();
    env.sim.reset_calls();
    assert!(gc.pass(&ctx).await.expect("pass 1").is_empty());
    let first = env.sim.calls();
    assert_eq!(first.action("DescribeNics"), 1, "{first:?}");
    assert_eq!(first.total, 1, "{first:?}");
    env.sim.reset_calls();
    assert_eq!(gc.pass(&ctx).await.expect("pass 2"), vec![orphan.clone()]);
    let second = env.sim.calls();
    assert_eq!(
        (
            second.action("DescribeNics"),
            second.action("DescribeJobs"),
            second.action("DeleteNics"),
        ),
        (1, 1, 1),
        "{second:?}"
    );
    assert!(!exists(&env, &orphan));
    assert_eq!(
        env.sim
            .nics()
            .iter()
            .filter(|n| n.nic.nic_name == "someone-else")
            .count(),
        200
    );
    env.shutdown().await;
}

/// GC passes are rare (every 30 minutes by default), but a CreateNics whose answer was lost
/// triggers one soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_create_answer_triggers_an_early_pass() {
    let mut setup = Setup::default();
    // Longer than the test: only the lost answer can start the pass that collects.
    setup.settings.gc_interval = Duration::from_secs(3600);
    let mut env = Env::start(setup).await;
    env.start_operator();
    env.create_pool("web", spec(&[VX_A], 1)).await;
    env.converged("web", &["i-node0001"], 1, T).await;
    // Settle the start pass, then leave an orphan that no periodic pass will see in time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = orphan(&env, &format!("{PREFIX}{}", uid(7)), false).await;
    env.sim.inject(
        Fault::new(FaultKind::Reset)
            .on("CreateNics")
            .next(1)
            .after_effect(),
    );
    env.patch_pool("web", serde_json::json!({ "size": 2 }))
        .await;
    // Not `converged`: that also wants the orphan gone, which is what is tested below.
    eventually("pool grown despite the lost answer", T, || async {
        env.count("web", "i-node0001", HostNicPhase::Available)
            .await
            == 2
    })
    .await;
    assert!(
        env.sim.faults().is_empty(),
        "the lost answer never happened"
    );
    eventually("orphan collected by the early pass", T, || async {
        !exists(&env, &left)
    })
    .await;
    env.shutdown().await;
}

/// Started with the default cluster name (`kubernetes`) on an account where another
/// cluster's hostnic NICs exist, the binary refuses to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_cluster_name_is_refused_beside_other_clusters() {
    let env = Env::start(Setup::default()).await;
    orphan(&env, &format!("hostnic-prod-eu-{}", uid(1)), false).await;
    orphan(&env, &format!("hostnic-kubernetes-{}", uid(2)), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, env.operator_kubeconfig()).expect("write");
    let cloud = dir.path().join("config.yaml");
    std::fs::write(&cloud, env.sim.config_yaml()).expect("write");
    let log = dir.path().join("operator.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hostnic-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUST_LOG")
        .env_remove("HOSTNIC_CLUSTER_NAME")
        .arg(format!("--cloud-config={}", cloud.display()))
        .arg("--metrics-addr=127.0.0.1:0")
        .args(["--lease-namespace", "hostnic-system"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the operator binary");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > T {
            let _ = child.kill();
            panic!(
                "the operator started beside another cluster's NICs: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("refusing to start with the default cluster name")
            && text.contains("prod-eu")
            && text.contains("--cluster-name"),
        "{text}"
    );
    assert_eq!(env.sim.calls().action("DeleteNics"), 0);
    env.shutdown().await;
}

/// The GC deletion count with `dry_run` in the metrics `text` (the series exists from the
/// start, at 0).
fn gc_deletions(text: &str, dry_run: &str) -> u64 {
    let series = format!("hostnic_operator_gc_deletions_total{{dry_run=\"{dry_run}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}
