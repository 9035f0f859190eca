//! The two images serving a cluster, each run as the manifests run it (the rendered
//! container's args, env, mounts and securityContext): in a private containerd inside the node
//! netns, the agent DaemonSet's init container installs `hostnic` into the node's CNI bin dir;
//! the agent container and the operator container replace the cluster's agent and operator
//! processes; the operator (its image user, read-only root) reads its credentials file and
//! fills a pool through the simulator, the agent reports the links and serves the claim of a
//! sandbox created through CRI, whose NIC returns when the sandbox goes. Both containers are
//! ready (their /readyz probes) before any NicPool exists, as `kubectl rollout status` needs.
//!
//! What only a test adds, because the node and the cluster are stand-ins: the containers join
//! the host netns where the stand-ins listen (`--with-ns`, as the cluster's processes run),
//! a kubeconfig stands for the in-cluster ServiceAccount, and the agent is told which netns
//! plays the node (`--node-netns`).

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hostnic_manifests_tests::ctr::{Ctr, Images, Kubelet};
use hostnic_manifests_tests::{manifests_dir, render};
use hostnic_tests::cluster::{Cluster, ClusterConfig, phase, wait_for};
use hostnic_tests::containerd::{CniSetup, Containerd};
use hostnic_tests::privilege::require_root;
use hostnic_tests::{http, images};
use serde_json::Value;

/// Where the test-only files (kubeconfig, the simulator's CA) are mounted in both containers.
const TEST_DIR: &str = "/etc/hostnic-test";

/// Containers started here, removed on drop (before the containerd that runs them).
struct Running<'a> {
    ctr: &'a Ctr,
    ids: Vec<&'static str>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            self.ctr.remove(id);
        }
    }
}

fn container<'a>(spec: &'a Value, kind: &str, name: &str) -> &'a Value {
    spec[kind]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Makes `path` readable by every user (the operator runs as 65532).
fn world_readable(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_images_serve_a_cri_sandbox_and_reach_the_simulator() {
    if !require_root("the_images_serve_a_cri_sandbox_and_reach_the_simulator") {
        return;
    }
    let mut cluster = Cluster::start(
        ClusterConfig {
            nodes: 1,
            ..ClusterConfig::default()
        },
        &mut |m| println!("{m}"),
    )
    .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("hn-images-serve-")
        .tempdir()
        .unwrap();
    world_readable(dir.path(), 0o755);
    // The manifests as rendered, and the host directories of their volumes.
    let objs = render::kustomize(&manifests_dir()).unwrap();
    let pod_spec = |kind: &str| -> Value {
        objs.iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))["spec"]["template"]["spec"]
            .clone()
    };
    let (ds, deploy) = (pod_spec("DaemonSet"), pod_spec("Deployment"));
    let conflists = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"].to_string().contains("conflist"))
        .expect("the conflist ConfigMap")["data"]
        .as_object()
        .unwrap()
        .clone();
    let mut volumes: BTreeMap<&str, PathBuf> = [
        "cni-bin",
        "cni-conf",
        "cni-conflist",
        "run-hostnic",
        "containerd-state",
        "qingcloud-config",
    ]
    .into_iter()
    .map(|v| (v, dir.path().join(format!("host-{v}"))))
    .collect();
    for d in volumes.values() {
        fs::create_dir_all(d).unwrap();
        world_readable(d, 0o755);
    }
    // Pod netns are bind mounts the runtime makes under the host's /run/netns after the agent
    // started: the real directory, with the manifest's HostToContainer propagation.
    volumes.insert("netns", PathBuf::from("/run/netns"));
    for (file, text) in &conflists {
        fs::write(volumes["cni-conflist"].join(file), text.as_str().unwrap()).unwrap();
    }

    // The operator's Secret: the cluster's cloud config, its CA path where the test mounts it,
    // readable by the operator's group only (fsGroup), as the Deployment gives it.
    let test_files = dir.path().join("test-files");
    fs::create_dir_all(&test_files).unwrap();
    world_readable(&test_files, 0o755);
    let mut cloud = fs::read_to_string(cluster.cloud_config_file()).unwrap();
    let ca_line = cloud
        .lines()
        .find(|l| l.starts_with("ca_file:"))
        .expect("the realistic simulator serves HTTPS")
        .to_owned();
    let ca = ca_line
        .trim_start_matches("ca_file:")
        .trim()
        .trim_matches('\'');
    fs::copy(ca, test_files.join("ca.pem")).unwrap();
    cloud = cloud.replace(&ca_line, &format!("ca_file: '{TEST_DIR}/ca.pem'"));
    let secret = volumes["qingcloud-config"].join("config.yaml");
    fs::write(&secret, cloud).unwrap();
    std::os::unix::fs::chown(&secret, Some(0), Some(65532)).unwrap();
    world_readable(&secret, 0o440);
    // The kubeconfig names a root CA, as the in-cluster config does (the ServiceAccount's
    // ca.crt): the agent image carries no system roots, it talks only to the API server.
    let kubeconfig = test_files.join("kubeconfig");
    fs::copy(cluster.kubectl.kubeconfig(), &kubeconfig).unwrap();
    let set = std::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["config", "set-cluster", "kube-mem"])
        .arg(format!("--certificate-authority={TEST_DIR}/ca.pem"))
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    for f in ["ca.pem", "kubeconfig"] {
        world_readable(&test_files.join(f), 0o444);
    }
    let test_mount = format!(
        "type=bind,src={},dst={TEST_DIR},options=rbind:ro",
        test_files.display()
    );

    // The runtime: containerd in the node netns, its conflist the manifests' with the socket
    // where the agent container's run-hostnic volume is, its plugin where the init container
    // installs it.
    let conflist_name = conflists.keys().next().unwrap().clone();
    let mut conflist: Value =
        serde_json::from_str(conflists[&conflist_name].as_str().unwrap()).unwrap();
    let socket = volumes["run-hostnic"].join("hostnic.sock");
    for p in conflist["plugins"].as_array_mut().unwrap() {
        if p["type"] == "hostnic" {
            p["socket"] = socket.display().to_string().into();
        }
    }
    let cni = CniSetup {
        conflist_name,
        conflist: conflist.to_string(),
        plugins: vec![("hostnic".into(), volumes["cni-bin"].join("hostnic"))],
    };
    let node_netns = cluster.nodes[0].netns.as_ref().unwrap().path();
    let mut containerd = Containerd::start(&node_netns, &cni).unwrap();
    let ctr = Ctr {
        socket: containerd.dir().join("containerd.sock"),
    };
    let images = Images::import(&ctr, dir.path(), "serve");
    let (operator_ref, agent_ref) = (images.operator.as_str(), images.agent.as_str());
    let mut running = Running {
        ctr: &ctr,
        ids: Vec::new(),
    };
    let host_netns = format!("network:/proc/{}/ns/net", std::process::id());
    let node_name = cluster.nodes[0].name.clone();
    let kubelet = Kubelet {
        volumes,
        fields: BTreeMap::from([
            ("spec.nodeName", node_name.clone()),
            ("status.hostIP", "127.0.0.1".to_owned()),
            // The namespace of the cluster's own operator's Lease: the image takes it over.
            ("metadata.namespace", "default".to_owned()),
            ("metadata.name", "hostnic-operator-image".to_owned()),
        ]),
    };
    let log_dir = dir.path().join("logs");
    fs::create_dir_all(&log_dir).unwrap();
    let run = |c: &Value, id: &'static str, image: &str, entrypoint: &str, extra: &[&str]| {
        let mut args: Vec<String> = ["run", "-d", "--with-ns", &host_netns, "--mount"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.push(test_mount.clone());
        args.push(format!("--log-uri=file://{}", log_dir.join(id).display()));
        args.extend(["--env".into(), format!("KUBECONFIG={TEST_DIR}/kubeconfig")]);
        if c["securityContext"]["privileged"] == true {
            args.push("--privileged".into());
        }
        args.extend(kubelet.run_options(c));
        args.extend([image.to_owned(), id.to_owned()]);
        // The container gives args only: the image's entrypoint runs them.
        if c["command"].is_null() {
            args.push(entrypoint.to_owned());
        }
        args.extend(kubelet.command(c));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        ctr.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };

    // The init container installs the plugin the runtime will run.
    let init = &ds["initContainers"][0];
    let mut args = vec!["run".to_owned(), "--rm".to_owned()];
    args.extend(kubelet.run_options(init));
    args.extend([agent_ref.to_owned(), "hn-serve-install".to_owned()]);
    args.extend(kubelet.command(init));
    ctr.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(kubelet.volumes["cni-bin"].join("hostnic").exists());

    // The agent container replaces the node's agent process.
    if let Some(mut agent) = cluster.nodes[0].agent.take() {
        agent.kill9();
    }
    let node_netns_arg = node_netns.display().to_string();
    running.ids.push("hn-serve-agent");
    run(
        container(&ds, "containers", "agent"),
        "hn-serve-agent",
        agent_ref,
        images::AGENT_BIN,
        &["--node-netns", &node_netns_arg],
    );
    // The operator container replaces the operator process; it takes the Lease over.
    cluster.operator.kill9();
    let calls_before = cluster.sim.calls().unwrap();
    running.ids.push("hn-serve-operator");
    run(
        container(&deploy, "containers", "operator"),
        "hn-serve-operator",
        operator_ref,
        images::OPERATOR_BIN,
        &[],
    );

    let logs = |ctr: &Ctr, containerd: &Containerd| {
        let tasks = ctr.run(&["task", "ls"]);
        let container_logs: String = running
            .ids
            .iter()
            .map(|id| {
                let log = fs::read_to_string(log_dir.join(id)).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(40).collect();
                format!(
                    "----- {id}\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        format!(
            "tasks:\n{}\n{container_logs}containerd:\n{}",
            String::from_utf8_lossy(&tasks.stdout),
            containerd
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    // Both are ready before any NicPool exists, as `kubectl rollout status` needs: their probes
    // ask /readyz on the address their args give.
    for (c, flag) in [
        (container(&ds, "containers", "agent"), "--health-addr="),
        (
            container(&deploy, "containers", "operator"),
            "--metrics-addr=",
        ),
    ] {
        let addr: SocketAddr = kubelet
            .command(c)
            .iter()
            .find_map(|a| a.strip_prefix(flag)?.parse().ok())
            .unwrap_or_else(|| panic!("no {flag} in {}", c["name"]));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        wait_for(
            &format!("{}'s /readyz", c["name"]),
            Duration::from_secs(60),
            || Ok(http::request(addr, "GET", "/readyz", None).is_ok_and(|(code, _)| code == 200)),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&ctr, &containerd)));
    }
    assert!(cluster.kubectl.list("nicpools").unwrap().is_empty());
    cluster
        .fill_pool("serve", 2, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&ctr, &containerd)));
    let calls = cluster.sim.calls().unwrap();
    for action in ["CreateNics", "AttachNics"] {
        assert!(
            calls.get(action) > calls_before.get(action),
            "the operator container made no {action}: {calls:?}"
        );
    }

    // A sandbox through CRI: the plugin the init container installed asks the agent container.
    let id = containerd
        .run_pod_sandbox("default", "serve-pod", "uid-serve-pod")
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", logs(&ctr, &containerd), cluster.logs(20)));
    let sandbox = containerd.sandbox(&id).unwrap();
    let nics = cluster.hostnics().unwrap();
    let bound: Vec<_> = nics.iter().filter(|n| phase(n) == "Bound").collect();
    assert_eq!(bound.len(), 1, "{nics:#?}");
    assert_eq!(bound[0]["status"]["pod"]["name"], "serve-pod");
    assert_eq!(bound[0]["status"]["privateIp"], sandbox.ip.as_str());
    containerd.stop_pod_sandbox(&id).unwrap();
    containerd.remove_pod_sandbox(&id).unwrap();
    wait_for("the NIC back in the pool", Duration::from_secs(30), || {
        Ok(cluster.hostnics()?.iter().all(|n| phase(n) != "Bound"))
    })
    .unwrap();

    drop(running);
    images.remove(&ctr);
    drop(containerd);
}
