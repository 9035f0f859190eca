//! `manifests/` renders offline, every object parses into its type with no unknown field, and
//! the install-time policies hold (least privilege, credentials only in the operator, ...).

use hostnic_manifests_tests::render::{self, describe};
use hostnic_manifests_tests::{kubelet, manifests_dir, repo_root, typed};
use serde_json::Value;

fn rendered() -> Vec<Value> {
    render::kustomize(&manifests_dir()).expect("kubectl kustomize manifests/")
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendered manifests"))
}

fn pod_spec<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &find(objs, kind, name)["spec"]["template"]["spec"]
}

#[test]
fn every_rendered_object_parses_into_its_type_without_losing_fields() {
    let objs = rendered();
    assert!(objs.len() >= 15, "only {} objects rendered", objs.len());
    let failures: Vec<String> = objs
        .iter()
        .filter_map(|o| typed::round_trip(o).err().map(|e| e.to_string()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_example_nicpool_parses_and_is_not_applied_by_default() {
    let text = std::fs::read_to_string(manifests_dir().join("examples/nicpool.yaml")).unwrap();
    let docs = render::parse_documents(&text).unwrap();
    assert_eq!(docs.len(), 1);
    typed::round_trip(&docs[0]).unwrap();
    assert!(!rendered().iter().any(|o| o["kind"] == "NicPool"));
}

#[test]
fn namespaced_objects_all_live_in_hostnic_system() {
    let objs = rendered();
    let namespaced = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "ConfigMap",
        "Service",
        "Deployment",
        "DaemonSet",
    ];
    for o in objs
        .iter()
        .filter(|o| namespaced.iter().any(|k| o["kind"] == *k))
    {
        // Except the events Role: events about cluster-scoped objects land in "default".
        let expected = if o["metadata"]["name"] == "hostnic-events" {
            "default"
        } else {
            "hostnic-system"
        };
        assert_eq!(o["metadata"]["namespace"], expected, "{}", describe(o));
    }
    find(&objs, "Namespace", "hostnic-system");
}

#[test]
fn the_crds_are_the_generated_ones() {
    let objs = rendered();
    let crds: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    let generated = hostnic_crds::crd_files().unwrap();
    assert_eq!(crds.len(), generated.len());
    for file in generated {
        let mut want = render::parse_documents(&file.yaml).unwrap().remove(0);
        // The kustomization labels everything it installs.
        want["metadata"]["labels"] = serde_json::json!({"app.kubernetes.io/part-of": "hostnic"});
        let name = want["metadata"]["name"].as_str().unwrap();
        let got = find(&objs, "CustomResourceDefinition", name);
        // Both ways, so a field added or dropped by the kustomization shows up.
        let mut diffs = Vec::new();
        typed::lost_fields(&want, got, "", &mut diffs);
        typed::lost_fields(got, &want, "", &mut diffs);
        assert!(diffs.is_empty(), "{name} differs from crds/: {diffs:?}");
    }
}

#[test]
fn images_are_set_in_the_kustomization_only() {
    let objs = rendered();
    let text = std::fs::read_to_string(manifests_dir().join("kustomization.yaml")).unwrap();
    for (kind, name) in [
        ("Deployment", "hostnic-operator"),
        ("DaemonSet", "hostnic-agent"),
    ] {
        let spec = pod_spec(&objs, kind, name);
        for c in containers(spec) {
            let image = c["image"].as_str().unwrap();
            let (repo, tag) = image.rsplit_once(':').unwrap();
            assert!(
                text.contains(&format!("newName: {repo}"))
                    && text.contains(&format!("newTag: {tag}")),
                "{kind}/{name}: image {image} is not set by kustomization.yaml images:"
            );
        }
    }
}

use kubelet::containers;

#[test]
fn the_credentials_are_mounted_into_the_operator_only() {
    let objs = rendered();
    let secret = objs
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("the QingCloud config Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    assert!(secret_name.starts_with("qingcloud-config"));
    assert!(secret["data"]["config.yaml"].is_string());

    let workloads: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
        .collect();
    let mut users = Vec::new();
    for w in &workloads {
        let text = serde_json::to_string(&w["spec"]).unwrap();
        if text.contains(secret_name) {
            users.push(describe(w));
        }
    }
    assert_eq!(users, vec!["Deployment/hostnic-system/hostnic-operator"]);
}

#[test]
fn the_secret_template_has_every_qingcloud_config_key() {
    let text = std::fs::read_to_string(manifests_dir().join("qingcloud/config.yaml")).unwrap();
    let config: serde_json::Map<String, Value> = serde_saphyr::from_str(&text).unwrap();
    let keys: Vec<&str> = config.keys().map(String::as_str).collect();
    for key in [
        "qy_access_key_id",
        "qy_secret_access_key",
        "zone",
        "host",
        "port",
        "protocol",
        "uri",
        "connection_retries",
        "connection_timeout",
    ] {
        assert!(keys.contains(&key), "qingcloud/config.yaml lacks {key}");
    }
}

#[test]
fn the_operator_is_locked_down() {
    let objs = rendered();
    let deploy = find(&objs, "Deployment", "hostnic-operator");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(spec["serviceAccountName"], "hostnic-operator");
    for c in containers(spec) {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(sc["capabilities"]["add"].is_null());
        assert_ne!(sc["privileged"], true);
        assert!(c["livenessProbe"]["httpGet"]["path"] == "/healthz");
        assert!(c["readinessProbe"]["httpGet"]["path"] == "/readyz");
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());
        let env: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["valueFrom"]["fieldRef"].is_object())
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(
            env.contains(&"NAMESPACE") && env.contains(&"POD_NAME"),
            "{env:?}"
        );
    }
    // In the host network it binds no privileged port and mounts nothing of the host.
    assert!(kubelet::node_ports(spec).iter().all(|p| *p >= 1024));
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["hostPath"].is_null())
    );
}

/// On a cluster whose only CNI is hostnic, no pod network exists until the operator has
/// created NICs and the agent serves them: both must be placed on such a node and start there.
#[test]
fn the_operator_and_the_agent_start_on_nodes_without_a_pod_network() {
    let objs = rendered();
    for (kind, name) in [
        ("Deployment", "hostnic-operator"),
        ("DaemonSet", "hostnic-agent"),
    ] {
        let spec = pod_spec(&objs, kind, name);
        if let Some(why) = kubelet::cannot_start_before_pod_network(spec) {
            panic!("{kind}/{name} cannot start before the pod network exists: it {why}");
        }
        // Clusters often have only control-plane or add-on-only nodes at that point.
        if let Some(why) = kubelet::untolerated(spec, &kubelet::taints_of_reserved_nodes()) {
            panic!("{kind}/{name} cannot run on control-plane or add-on nodes: it {why}");
        }
    }
    // The agent runs on every node, whatever its taints.
    let agent = pod_spec(&objs, "DaemonSet", "hostnic-agent");
    let anything = [kubelet::Taint::new("example.com/dedicated", "NoExecute")];
    assert_eq!(kubelet::untolerated(agent, &anything), None);
}

/// Ports bound on the node must not collide: between two operator replicas (the scheduler never
/// puts them on one node) and between the operator and the agent, which share every node.
#[test]
fn pods_that_can_share_a_node_never_bind_the_same_port() {
    let objs = rendered();
    let operator = &find(&objs, "Deployment", "hostnic-operator")["spec"];
    let agent = &find(&objs, "DaemonSet", "hostnic-agent")["spec"];
    for workload in [operator, agent] {
        let spec = &workload["template"]["spec"];
        let declared = kubelet::node_ports(spec);
        // Every address a container listens on is a declared port, so the list is complete.
        for c in kubelet::containers(spec) {
            for arg in c["args"].as_array().into_iter().flatten() {
                let arg = arg.as_str().unwrap();
                let Some((flag, addr)) = arg.split_once('=') else {
                    continue;
                };
                if flag.ends_with("-addr") {
                    let port: u64 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
                    assert!(
                        declared.contains(&port),
                        "{arg} listens on an undeclared port"
                    );
                }
            }
        }
    }
    let operator_ports = kubelet::node_ports(&operator["template"]["spec"]);
    if operator["replicas"].as_u64() > Some(1) && !operator_ports.is_empty() {
        assert!(
            kubelet::one_per_node(&operator["template"]),
            "two operator replicas may land on one node and both bind {operator_ports:?}"
        );
        // With one replica per node, a surge pod has nowhere to go on a two-node cluster.
        assert_eq!(operator["strategy"]["rollingUpdate"]["maxSurge"], 0);
    }
    let agent_ports = kubelet::node_ports(&agent["template"]["spec"]);
    assert!(
        operator_ports.iter().all(|p| !agent_ports.contains(p)),
        "operator {operator_ports:?} and agent {agent_ports:?} share a node port"
    );
}

/// Runtimes pass CNI_NETNS as a host path made after the agent started: containerd and CRI-O
/// under /var/run/netns (= /run/netns), containerd with `netns_mounts_under_state_dir` under its
/// CRI state directory. The agent must see each of them.
#[test]
fn the_agent_sees_every_netns_a_runtime_passes() {
    let objs = rendered();
    let spec = pod_spec(&objs, "DaemonSet", "hostnic-agent");
    let agent = &spec["containers"][0];
    for path in [
        "/var/run/netns/cni-2f1c",
        "/run/netns/cni-2f1c",
        "/run/containerd/io.containerd.grpc.v1.cri/netns/cni-2f1c",
    ] {
        assert!(
            kubelet::sees_later_host_mount(spec, agent, path),
            "the agent cannot open the runtime's netns {path}"
        );
    }
}

/// On SELinux-enforcing hosts a container_t process cannot write the host's CNI directories
/// (bin_t, etc_t): every container that writes them runs as spc_t.
#[test]
fn the_installers_can_write_the_host_cni_dirs_under_selinux() {
    let objs = rendered();
    let spec = pod_spec(&objs, "DaemonSet", "hostnic-agent");
    let host_cni_volumes = ["cni-bin", "cni-conf"];
    let mut writers = 0;
    for c in containers(spec) {
        let writes = c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
            host_cni_volumes.contains(&m["name"].as_str().unwrap()) && m["readOnly"] != true
        });
        if writes {
            writers += 1;
            let sc = &c["securityContext"];
            let selinux_type = sc["seLinuxOptions"]["type"]
                .as_str()
                .or(spec["securityContext"]["seLinuxOptions"]["type"].as_str());
            assert!(
                sc["privileged"] == true || selinux_type == Some("spc_t"),
                "{} writes the host CNI dirs as container_t",
                c["name"]
            );
        }
    }
    assert_eq!(writers, 2, "the plugin installer and the conflist writer");
}

#[test]
fn the_agent_runs_on_every_node_with_the_host_access_it_needs() {
    let objs = rendered();
    let ds = find(&objs, "DaemonSet", "hostnic-agent");
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["serviceAccountName"], "hostnic-agent");

    let agent = &spec["containers"][0];
    let sc = &agent["securityContext"];
    // Either privileged, and the source says why right above, or only the two capabilities.
    if sc["privileged"] == true {
        let source = std::fs::read_to_string(manifests_dir().join("agent.yaml")).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim() == "privileged: true")
            .unwrap();
        assert!(
            lines[at - 1].trim_start().starts_with('#'),
            "privileged: true needs a comment saying why"
        );
        assert!(sc["capabilities"].is_null() && sc["allowPrivilegeEscalation"].is_null());
    } else {
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(
            sc["capabilities"]["add"],
            serde_json::json!(["NET_ADMIN", "SYS_ADMIN"])
        );
    }
    // The installers: no privilege, no capability, read-only image.
    for c in containers(spec).filter(|c| c["name"] != "agent") {
        let sc = &c["securityContext"];
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_ne!(sc["privileged"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
    }
    let node_name = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME env");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    // Readiness is the agent's own /readyz, on the port it serves health on.
    let probe = &agent["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/readyz");
    let health = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str().unwrap().strip_prefix("--health-addr="))
        .expect("--health-addr");
    assert_eq!(
        probe["port"].as_u64().map(|p| p.to_string()).as_deref(),
        health.rsplit_once(':').map(|(_, p)| p)
    );
}

/// The host's CNI directories are one setting: merging other values into the
/// `hostnic-host-cni-dirs` ConfigMap from an overlay (and listing the component again, as the
/// README says) moves both hostPath volumes and nothing else, and the ConfigMap is not installed.
#[test]
fn the_host_cni_dirs_are_one_kustomize_setting() {
    let objs = rendered();
    assert!(
        !objs
            .iter()
            .any(|o| o["metadata"]["name"] == "hostnic-host-cni-dirs")
    );
    let dir = tempfile::tempdir().unwrap();
    let base = manifests_dir().canonicalize().unwrap();
    let rel = |p: &std::path::Path| {
        let depth = dir.path().canonicalize().unwrap().components().count() - 1;
        let mut r = std::path::PathBuf::new();
        for _ in 0..depth {
            r.push("..");
        }
        r.join(p.strip_prefix("/").unwrap())
    };
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
components:
  - {base}/components/host-cni-dirs
configMapGenerator:
  - name: hostnic-host-cni-dirs
    namespace: hostnic-system
    behavior: merge
    literals:
      - bin=/var/lib/rancher/cni/bin
      - conf=/var/lib/rancher/cni/net.d
",
            base = rel(&base).display()
        ),
    )
    .unwrap();
    let moved = render::kustomize(dir.path()).unwrap();
    assert_eq!(moved.len(), objs.len());
    let volumes = |objs: &[Value]| -> Vec<(String, String)> {
        pod_spec(objs, "DaemonSet", "hostnic-agent")["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| {
                Some((
                    v["name"].as_str()?.to_owned(),
                    v["hostPath"]["path"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let (before, after) = (volumes(&objs), volumes(&moved));
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        match name.as_str() {
            "cni-bin" => assert_eq!(
                (old.as_str(), new.as_str()),
                ("/opt/cni/bin", "/var/lib/rancher/cni/bin")
            ),
            "cni-conf" => assert_eq!(
                (old.as_str(), new.as_str()),
                ("/etc/cni/net.d", "/var/lib/rancher/cni/net.d")
            ),
            _ => assert_eq!(old, new),
        }
    }
    // Nothing else in the install names the old directories.
    let text = serde_json::to_string(&moved).unwrap();
    assert!(!text.contains("\"/opt/cni/bin\"") && !text.contains("\"/etc/cni/net.d\""));
}

#[test]
fn metrics_are_scrapeable() {
    let objs = rendered();
    for (kind, name) in [
        ("Deployment", "hostnic-operator"),
        ("DaemonSet", "hostnic-agent"),
    ] {
        let template = &find(&objs, kind, name)["spec"]["template"];
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        let port = annotations["prometheus.io/port"].as_str().unwrap();
        let ports = &template["spec"]["containers"][0]["ports"];
        assert!(
            ports
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["containerPort"].as_u64() == port.parse().ok()),
            "{kind}/{name}: the scrape port {port} is not a port of its container"
        );
    }
    // The Service selects the operator's pods on their metrics port.
    let svc = find(&objs, "Service", "hostnic-operator-metrics");
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/name"],
        "hostnic-operator"
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
}

#[test]
fn crds_are_referenced_not_copied() {
    for entry in std::fs::read_dir(manifests_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains("kind: CustomResourceDefinition"),
            "{} copies a CRD: include ../crds instead",
            path.display()
        );
    }
    assert!(repo_root().join("crds/kustomization.yaml").is_file());
}

/// Environment variables the manifests set that no clap flag reads: used for `$(VAR)`
/// expansion in args, or read by the tracing subscriber.
fn expansion_or_runtime_env(name: &str, args: &[String]) -> bool {
    name == "RUST_LOG" || args.iter().any(|a| a.contains(&format!("$({name})")))
}

#[test]
fn every_flag_and_env_var_the_manifests_pass_is_one_the_binary_knows() {
    let objs = rendered();
    let cases = [
        ("Deployment", "hostnic-operator", "hostnic-operator"),
        ("DaemonSet", "hostnic-agent", "hostnic-agent"),
    ];
    for (kind, name, binary) in cases {
        let help = std::process::Command::new(hostnic_tests::bins::bin(binary))
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success(), "{binary} --help failed");
        let help = String::from_utf8_lossy(&help.stdout);
        let c = &pod_spec(&objs, kind, name)["containers"][0];
        let args: Vec<String> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        for arg in &args {
            let flag = arg.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag} <")),
                "{kind}/{name} passes {flag}, which `{binary} --help` does not list"
            );
        }
        for env in c["env"].as_array().into_iter().flatten() {
            let var = env["name"].as_str().unwrap();
            if expansion_or_runtime_env(var, &args) {
                continue;
            }
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{kind}/{name} sets {var}, which `{binary} --help` does not read"
            );
        }
    }
}

#[test]
fn the_conflist_the_installer_writes_reaches_the_agent() {
    let objs = rendered();
    let spec = pod_spec(&objs, "DaemonSet", "hostnic-agent");
    let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let (file, text) = cm["data"].as_object().unwrap().iter().next().unwrap();
    let conflist: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();

    // The conflist writer reads the ConfigMap's file where the volume mounts it.
    let writer = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cni-config")
        .expect("the cni-config container");
    let env_value = |c: &Value, name: &str| -> String {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name} not set"))
            .to_owned()
    };
    let mount_of = |c: &Value, volume: &str| -> String {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no mount of {volume}"))
            .to_owned()
    };
    let volume_of_configmap = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("a volume of the conflist ConfigMap");
    let source = env_value(writer, "HOSTNIC_CONFLIST");
    let mount = mount_of(writer, volume_of_configmap["name"].as_str().unwrap());
    assert_eq!(source, format!("{mount}/{file}"));

    // The plugin talks to the socket the agent serves, in the host directory both share.
    let socket = conflist["plugins"][0]["socket"].as_str().unwrap();
    let agent = &spec["containers"][0];
    let args: Vec<&str> = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--socket={socket}").as_str()),
        "{args:?}"
    );
    let dir = socket.rsplit_once('/').unwrap().0;
    assert_eq!(mount_of(agent, "run-hostnic"), dir);
    // The writer asks that socket for CNI STATUS before it installs the conflist.
    assert_eq!(env_value(writer, "HOSTNIC_SOCKET"), socket);
    assert_eq!(mount_of(writer, "run-hostnic"), dir);
    let host_dir = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "run-hostnic")
        .unwrap()["hostPath"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        host_dir, dir,
        "the plugin on the host must see the agent's socket"
    );
}
