//! The user's install path against the in-memory API server: `kubectl apply -k manifests/`
//! is accepted, stores every object as rendered, is idempotent, and the README's NicPool
//! commands (apply the example, `kubectl scale nicpool`, `kubectl get nicpools,hostnics`) work.

use hostnic_manifests_tests::apiserver::ApiServer;
use hostnic_manifests_tests::render::{self, describe};
use hostnic_manifests_tests::{manifests_dir, typed};
use serde_json::Value;

fn plural(kind: &str) -> String {
    match kind {
        "CustomResourceDefinition" => "customresourcedefinitions.apiextensions.k8s.io".into(),
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
            format!("{}s.rbac.authorization.k8s.io", kind.to_lowercase())
        }
        "Deployment" | "DaemonSet" => format!("{}s.apps", kind.to_lowercase()),
        "ValidatingAdmissionPolicy" => {
            "validatingadmissionpolicies.admissionregistration.k8s.io".into()
        }
        "ValidatingAdmissionPolicyBinding" => {
            "validatingadmissionpolicybindings.admissionregistration.k8s.io".into()
        }
        _ => format!("{}s", kind.to_lowercase()),
    }
}

#[test]
fn kubectl_apply_k_installs_everything_as_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start(dir.path(), &[]).unwrap();
    let manifests = manifests_dir().display().to_string();

    let out = api
        .admin
        .run(&["apply", "-k", &manifests])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", api.log_tail(30)));
    let objs = render::kustomize(&manifests_dir()).unwrap();
    assert_eq!(out.lines().count(), objs.len(), "{out}");
    assert!(out.lines().all(|l| l.ends_with(" created")), "{out}");

    // The server kept every field (no pruning of something it did not understand).
    for obj in &objs {
        let meta = &obj["metadata"];
        let mut args = vec![
            "get".to_owned(),
            format!(
                "{}/{}",
                plural(obj["kind"].as_str().unwrap()),
                meta["name"].as_str().unwrap()
            ),
            "-o".into(),
            "json".into(),
        ];
        if let Some(ns) = meta["namespace"].as_str() {
            args.extend(["-n".into(), ns.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stored: Value = serde_json::from_str(&api.admin.run(&args).unwrap()).unwrap();
        let mut lost = Vec::new();
        typed::lost_fields(obj, &stored, "", &mut lost);
        assert!(
            lost.is_empty(),
            "{}: the server changed {lost:?}",
            describe(obj)
        );
    }

    // Idempotent: a second apply changes nothing.
    let again = api.admin.run(&["apply", "-k", &manifests]).unwrap();
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");
}

#[test]
fn the_readme_nicpool_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start(dir.path(), &[]).unwrap();
    let manifests = manifests_dir();
    api.admin
        .run(&["apply", "-k", &manifests.display().to_string()])
        .unwrap();
    let example = manifests
        .join("examples/nicpool.yaml")
        .display()
        .to_string();
    api.admin
        .run(&["apply", "-f", &example])
        .unwrap_or_else(|e| panic!("the example NicPool is refused: {e:#}"));
    api.admin
        .run(&["scale", "nicpool", "default", "--replicas=5"])
        .unwrap();
    let size = api
        .admin
        .run(&["get", "nicpool", "default", "-o", "jsonpath={.spec.size}"])
        .unwrap();
    assert_eq!(size, "5");
    let table = api.admin.run(&["get", "nicpools,hostnics"]).unwrap();
    assert!(
        table.contains("nicpool.hostnic.qingcloud.com/default"),
        "{table}"
    );
}
