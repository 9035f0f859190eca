//! RBAC from the manifests is sufficient and minimal. The real operator (two replicas, the
//! leader killed midway) and agent run against the in-memory API server as the manifests'
//! ServiceAccounts, with RBAC enforced from the manifests' roles, through a whole NicPool life
//! (fill, fail over, claim, release, scale, delete), with the QingCloud simulator hot-plugging
//! NICs into a test-made node netns. Every request must be allowed, and the (verb, resource)
//! pairs used must be exactly what the roles grant.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hostnic_manifests_tests::admin::Admin;
use hostnic_manifests_tests::apiserver::{ApiServer, AuditEntry};
use hostnic_manifests_tests::rbac::{self, Access, Grant, ServiceAccount};
use hostnic_manifests_tests::{manifests_dir, render};
use hostnic_tests::bins::{bin, target_dir};
use hostnic_tests::cluster::{ClusterConfig, Node, free_port, wait_for};
use hostnic_tests::cni_runtime::CniRuntime;
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use hostnic_tests::process::{Proc, Spec};
use hostnic_tests::sim::Sim;
use serde_json::{Value, json};

const NAMESPACE: &str = "hostnic-system";
const NODE: &str = "rbac-node-0";
const INSTANCE: &str = "i-hnrbac00";
const POOL: &str = "rbac";
const CRD_VERSION: &str = "hostnic.qingcloud.com/v1alpha1";
const STARTUP_TAINT: &str = "hostnic.qingcloud.com/not-ready";

/// Grants an account needs although this scenario does not exercise them:
/// (account, verb, group, resource, why). Kept tiny on purpose: anything else unused fails.
const NEEDED_BEYOND_THE_SCENARIO: &[(&str, &str, &str, &str, &str)] = &[
    (
        "hostnic-agent",
        "create",
        "events.k8s.io",
        "events",
        "the agent publishes only Warnings (ClaimFailed, ReleaseFailed, WaitingForNic), none of \
         which this scenario provokes (node-agent agent.rs::a_waiting_add_warns_on_the_pod_and_pool \
         and a_claim_failing_in_the_kernel_is_undone_and_reported do)",
    ),
    (
        "hostnic-agent",
        "patch",
        "events.k8s.io",
        "events",
        "kube-runtime's Recorder patches the event series when the same event repeats within \
         its cache window (kube-runtime 5.0 events.rs `publish`)",
    ),
    (
        "hostnic-operator",
        "patch",
        "events.k8s.io",
        "events",
        "the same Recorder; whether an event repeats within the window depends on timing",
    ),
    (
        "hostnic-agent",
        "patch",
        "hostnic.qingcloud.com",
        "nicpools",
        "the waiting annotation (node-agent waiting.rs), set only while an ADD finds its pool \
         empty with a NIC on its way, which this scenario does not provoke \
         (node-agent agent.rs::an_add_finding_the_pool_empty_waits_for_the_nic_on_its_way does)",
    ),
    (
        "hostnic-agent",
        "get",
        "hostnic.qingcloud.com",
        "hostnics",
        "re-read after a 409 Conflict on a release (node-agent claims.rs), which needs a \
         concurrent writer this scenario does not provoke",
    ),
];

fn operator_account() -> ServiceAccount {
    ServiceAccount::new(NAMESPACE, "hostnic-operator")
}

/// As the agent's pod holds it: a token bound to a pod on its node, which the manifests'
/// admission policy requires.
fn agent_account() -> ServiceAccount {
    ServiceAccount::new(NAMESPACE, "hostnic-agent").on_node(NODE)
}

/// The system under test: API server, simulator, operator and one agent on one node netns.
struct System {
    api: ApiServer,
    sim: Sim,
    /// hostnic-operator-0 and -1.
    operators: Vec<Proc>,
    agent: Proc,
    /// Owns the node netns (removed on drop) and names the agent's socket.
    node: Node,
    dir: std::path::PathBuf,
}

impl System {
    fn start(dir: &Path) -> Result<Self> {
        let api = ApiServer::start(dir, &[operator_account(), agent_account()])?;
        // Everything the user installs (the namespace and CRDs first, as kubectl orders them).
        let mut objects = render::kustomize(&manifests_dir())?;
        objects.sort_by_key(|o| {
            !matches!(
                o["kind"].as_str(),
                Some("Namespace" | "CustomResourceDefinition")
            )
        });
        api.client.create_all(&objects)?;
        api.client.create_all(&[json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
            // Registered with hostnic's startup taint (kubelet --register-with-taints).
            "spec": {
                "providerID": format!("qingcloud://{INSTANCE}"),
                "taints": [{"key": STARTUP_TAINT, "effect": "NoSchedule"}],
            },
        })])?;

        let node_netns = TestNetns::new("rbac");
        let node_netns_path = node_netns.path();
        let socket = dir.join("agent.sock");
        let config = ClusterConfig {
            nodes: 1,
            vxnets: vec![("vxnet-hnrbac1".into(), "172.31.7.0/24".into())],
            job_latency_ms: (20, 50),
            ..ClusterConfig::default()
        };
        let node = Node {
            name: NODE.into(),
            instance: INSTANCE.into(),
            netns: Some(node_netns),
            agent: None,
            socket: socket.clone(),
            health_addr: free_port()?,
        };
        let sim = Sim::start(dir, &config, std::slice::from_ref(&node))?;
        let cloud_config = dir.join("qingcloud.yaml");
        // The simulator's built-in test credentials, in the Secret's format (HTTPS with the
        // simulator's CA in its realistic profile).
        std::fs::write(
            &cloud_config,
            sim.cloud_config_yaml("SIMACCESSKEYID000000", "sim-secret-access-key"),
        )?;

        // Two replicas, as the Deployment runs them: one leads, the other waits on the Lease.
        let mut operators = Vec::new();
        for replica in 0..2 {
            operators.push(Proc::start(
                Spec::new(&format!("operator-{replica}"), bin("hostnic-operator"))
                    .env("KUBECONFIG", api.kubeconfig_for(&operator_account())?)
                    .env("POD_NAME", format!("hostnic-operator-{replica}"))
                    .env("RUST_LOG", "info")
                    .arg("--cluster-name=rbac")
                    .arg(format!("--cloud-config={}", cloud_config.display()))
                    .arg(format!("--metrics-addr={}", free_port()?))
                    .arg(format!("--lease-namespace={NAMESPACE}"))
                    .arg("--lease-seconds=3")
                    .arg("--lease-renew-deadline-seconds=2")
                    .arg("--lease-retry-period-seconds=1")
                    .arg("--job-poll-seconds=0.2")
                    .arg("--shrink-delay-seconds=1")
                    .arg("--cloud-cache-seconds=1")
                    .arg("--gc-interval-seconds=2")
                    .arg("--gc-grace-seconds=2")
                    .arg("--resync-seconds=5"),
                dir,
            )?);
        }
        let agent = Proc::start(
            Spec::new("agent", bin("hostnic-agent"))
                .env("KUBECONFIG", api.kubeconfig_for(&agent_account())?)
                .env("NODE_NAME", NODE)
                .env("RUST_LOG", "info")
                .arg(format!("--node-netns={}", node_netns_path.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--health-addr={}", node.health_addr)),
            dir,
        )?;
        Ok(Self {
            api,
            sim,
            operators,
            agent,
            node,
            dir: dir.to_owned(),
        })
    }

    fn admin(&self) -> &Admin {
        &self.api.client
    }

    fn hostnics(&self) -> Result<Vec<Value>> {
        self.admin().list(CRD_VERSION, "HostNic")
    }

    fn count(&self, phase: &str) -> Result<usize> {
        Ok(self
            .hostnics()?
            .iter()
            .filter(|n| n["status"]["phase"] == phase)
            .count())
    }

    fn logs(&self) -> String {
        // Panics first: their backtraces would push the message out of a log tail.
        let panics = |p: &Proc| -> String {
            std::fs::read_to_string(p.log_path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("panicked"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut out = String::new();
        for p in self.operators.iter().chain([&self.agent]) {
            out.push_str(&format!(
                "----- {} (panics: {})\n{}\n",
                p.name(),
                panics(p),
                p.log_tail(30)
            ));
        }
        out + &format!("----- kube-mem\n{}", self.api.log_tail(10))
    }

    /// Kills the replica holding the Lease; the other must take over.
    fn kill_leader(&mut self) -> Result<String> {
        let leases = self.admin().list("coordination.k8s.io/v1", "Lease")?;
        let holder = leases
            .iter()
            .find(|l| l["metadata"]["name"] == "hostnic-operator")
            .and_then(|l| l["spec"]["holderIdentity"].as_str())
            .context("no Lease holder")?
            .to_owned();
        let leader = self
            .operators
            .iter_mut()
            .find(|p| holder.ends_with(p.name()))
            .context("the holder is none of the replicas")?;
        leader.kill9();
        Ok(holder)
    }

    fn conflist(&self) -> Result<std::path::PathBuf> {
        let path = self.dir.join("hostnic.conflist");
        // The installed conflist, pointed at this test's agent socket.
        let mut conf: Value = serde_json::from_slice(&std::fs::read(
            manifests_dir().join("cni/10-hostnic.conflist"),
        )?)?;
        conf["plugins"][0]["socket"] = json!(self.node.socket);
        std::fs::write(&path, conf.to_string())?;
        Ok(path)
    }
}

/// Runs the scenario; on failure the error carries the components' logs.
fn scenario(sys: &mut System) -> Result<()> {
    sys.admin().create_all(&[json!({
        "apiVersion": CRD_VERSION,
        "kind": "NicPool",
        "metadata": {"name": POOL, "annotations": {
            "hostnic.qingcloud.com/is-default-pool": "true",
            // The pool gates the node's startup taint.
            "hostnic.qingcloud.com/gate-node-readiness": "true",
        }},
        "spec": {
            "vxnets": ["vxnet-hnrbac1"], "size": 2, "quarantineSeconds": 0,
            // A route through the node (gateway 0.0.0.0) brings in the gateway-NIC paths.
            "routes": [{"destination": "10.96.0.0/12", "gateway": "0.0.0.0"}],
        },
    })])?;
    wait_for("2 Available HostNics", Duration::from_secs(60), || {
        Ok(sys.count("Available")? == 2)
    })?;
    wait_for("the startup taint to go", Duration::from_secs(30), || {
        let nodes = sys.admin().list("v1", "Node")?;
        Ok(!nodes
            .iter()
            .flat_map(|n| n["spec"]["taints"].as_array().into_iter().flatten())
            .any(|t| t["key"] == STARTUP_TAINT))
    })?;

    // Fail over: the standby replica finishes the scenario with the same RBAC.
    let killed = sys.kill_leader()?;
    println!("killed the leader {killed}");
    let sys = &*sys;

    // A pod: the API object the agent reads, and a sandbox set up through libcni.
    let admin = sys.admin();
    admin.create_all(&[json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "pause"}]},
    })])?;
    let pod_netns = TestNetns::new("rbacpod");
    let container_id = format!("ctr-{}", pod_netns.name());
    let runtime = CniRuntime::new([target_dir()], sys.dir.join("cni-cache")).cni_args(&format!(
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={container_id}"
    ));
    let conflist = sys.conflist()?;
    runtime
        .add(&conflist, &container_id, &pod_netns.path(), "eth0")
        .context("CNI ADD")?;
    wait_for("a Bound HostNic", Duration::from_secs(10), || {
        Ok(sys.count("Bound")? == 1)
    })?;
    runtime
        .del(&conflist, &container_id, &pod_netns.path(), "eth0")
        .context("CNI DEL")?;
    wait_for("the NIC back in the pool", Duration::from_secs(30), || {
        Ok(sys.count("Bound")? == 0 && sys.count("Available")? >= 2)
    })?;

    // Resize the user's way, then delete the pool (reclaimPolicy Delete).
    admin.scale(CRD_VERSION, "NicPool", POOL, 3)?;
    wait_for("3 Available HostNics", Duration::from_secs(60), || {
        Ok(sys.count("Available")? == 3)
    })?;
    admin.delete(CRD_VERSION, "NicPool", POOL)?;
    wait_for("every HostNic to go", Duration::from_secs(60), || {
        Ok(sys.hostnics()?.is_empty())
    })?;
    wait_for("the NicPool to go", Duration::from_secs(20), || {
        Ok(admin.list(CRD_VERSION, "NicPool")?.is_empty())
    })?;
    Ok(())
}

fn accesses(audit: &[AuditEntry], account: &ServiceAccount) -> (Vec<Access>, Vec<String>) {
    let mine: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| e.user == account.username())
        .collect();
    // Refused by RBAC, or allowed by RBAC and then refused by the admission policy (403).
    let denied = mine
        .iter()
        .filter(|e| !e.allowed || e.code == 403)
        .map(|e| {
            format!(
                "{} {}/{} {} {} -> {}",
                e.verb, e.api_group, e.resource, e.subresource, e.path, e.code
            )
        })
        .collect();
    let used: BTreeSet<Access> = mine.iter().filter_map(|e| e.access()).collect();
    (used.into_iter().collect(), denied)
}

fn needed_beyond_the_scenario(account: &ServiceAccount, grant: &Grant) -> bool {
    NEEDED_BEYOND_THE_SCENARIO
        .iter()
        .any(|(name, verb, group, resource, _why)| {
            account.name == *name
                && grant.verb == *verb
                && grant.group == *group
                && grant.resource == *resource
        })
}

#[test]
fn operator_and_agent_need_exactly_the_rbac_the_manifests_grant() {
    if !require_root("operator_and_agent_need_exactly_the_rbac_the_manifests_grant") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("hn-rbac-")
        .tempdir()
        .unwrap();
    let mut sys = System::start(dir.path()).expect("start the system");
    if let Err(e) = scenario(&mut sys) {
        // A missing grant usually shows up as a stalled scenario: name the denied requests.
        let denied: BTreeSet<String> = sys
            .api
            .audit()
            .unwrap_or_default()
            .iter()
            .filter(|e| !e.allowed)
            .map(|e| match e.access() {
                Some(a) => format!("{}: {}", e.user, a.without_name()),
                None => format!("{}: {} {}", e.user, e.verb, e.path),
            })
            .collect();
        panic!(
            "scenario failed: {e:#}\ndenied requests: {denied:#?}\n{}",
            sys.logs()
        );
    }
    let audit = sys.api.audit().unwrap();
    let objects = render::kustomize(&manifests_dir()).unwrap();

    let mut report = String::new();
    for account in [operator_account(), agent_account()] {
        let (used, denied) = accesses(&audit, &account);
        assert!(
            !used.is_empty(),
            "{} made no request at all",
            account.username()
        );
        let grants = rbac::grants_of(&account, &objects).unwrap();
        for (name, verb, group, resource, _why) in NEEDED_BEYOND_THE_SCENARIO {
            assert!(
                *name != account.name
                    || grants
                        .iter()
                        .any(|g| g.verb == *verb && g.group == *group && g.resource == *resource),
                "NEEDED_BEYOND_THE_SCENARIO lists {verb} {group}/{resource} for {name}, which no role grants: drop it"
            );
        }
        let mut cmp = rbac::compare(&grants, &used);
        cmp.unused
            .retain(|g| !needed_beyond_the_scenario(&account, g));
        println!("{}: used", account.username());
        let distinct: BTreeSet<String> =
            used.iter().map(|a| a.without_name().to_string()).collect();
        for a in &distinct {
            println!("  {a}");
        }
        if !denied.is_empty() || !cmp.is_exact() {
            report.push_str(&format!("{}:\n", account.username()));
            for d in &denied {
                report.push_str(&format!("denied: {d}\n"));
            }
            report.push_str(&cmp.to_string());
        }
    }
    assert!(report.is_empty(), "{report}\n{}", sys.logs());
    // The node netns is left as the simulator found it: no hot-plugged NIC remains (the VM's
    // own primary NIC, which the simulator plugs in with its address, is not one).
    let primaries = sys.sim.primary_macs().unwrap();
    let node_netns = sys.node.netns.as_ref().unwrap();
    let links: Vec<_> = node_netns
        .links()
        .into_iter()
        .filter(|l| l.name != "lo" && !primaries.contains(&l.mac))
        .collect();
    assert!(links.is_empty(), "links left in the node netns: {links:?}");
}
