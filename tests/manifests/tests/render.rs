//! `manifests/` renders offline, every object parses into its type with no unknown field, and
//! the install-time policies hold (least privilege, credentials only in the operator, ...).

use hostnic_manifests_tests::render::{self, describe};
use hostnic_manifests_tests::{manifests_dir, repo_root, typed};
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

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    let init = spec["initContainers"].as_array().into_iter().flatten();
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(init)
}

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
fn the_operator_is_locked_down_and_highly_available() {
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
}

#[test]
fn the_agent_runs_on_every_node_with_the_host_access_it_needs() {
    let objs = rendered();
    let ds = find(&objs, "DaemonSet", "hostnic-agent");
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
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
    let init_sc = &spec["initContainers"][0]["securityContext"];
    assert_eq!(init_sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_ne!(init_sc["privileged"], true);
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

    let mounts = |c: &Value| -> Vec<(String, Value)> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["mountPath"].as_str().unwrap().to_owned(), m.clone()))
            .collect()
    };
    let agent_mounts = mounts(agent);
    let netns = agent_mounts
        .iter()
        .find(|(p, _)| p == "/var/run/netns")
        .expect("agent mounts /var/run/netns");
    assert_eq!(netns.1["mountPropagation"], "HostToContainer");
    assert!(agent_mounts.iter().any(|(p, _)| p == "/run/hostnic"));

    let init = &spec["initContainers"][0];
    let init_mounts = mounts(init);
    for path in ["/host/opt/cni/bin", "/host/etc/cni/net.d"] {
        assert!(
            init_mounts.iter().any(|(p, _)| p == path),
            "init mounts {path}"
        );
    }
    let host_paths: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for path in [
        "/run/hostnic",
        "/var/run/netns",
        "/opt/cni/bin",
        "/etc/cni/net.d",
    ] {
        assert!(
            host_paths.contains(&path),
            "no hostPath {path}: {host_paths:?}"
        );
    }
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

    // The init container reads the ConfigMap's file where the volume mounts it.
    let init = &spec["initContainers"][0];
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
    let source = env_value(init, "HOSTNIC_CONFLIST");
    let mount = mount_of(init, volume_of_configmap["name"].as_str().unwrap());
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
