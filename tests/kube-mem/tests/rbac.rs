//! Bearer tokens, RBAC from stored Roles/bindings, and the audit log (kube-mem only: a real
//! cluster's authn setup is not ours to change).

mod common;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_mem::{Auth, Identity, KubeMem};
use serde_json::json;

fn dynamic(
    client: &kube::Client,
    ns: Option<&str>,
    group: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn obj(v: serde_json::Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn rbac_allows_what_roles_grant_and_audit_records_it() {
    let mem = KubeMem::builder()
        .with_crds_from_dir(fixture(""))
        .auth(Auth::new().token("reader-token", Identity::service_account("team", "reader")))
        .tls(true)
        .start()
        .await
        .unwrap();
    let admin = mem.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(admin.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let roles = dynamic(
        &admin,
        Some("team"),
        "rbac.authorization.k8s.io",
        "Role",
        "roles",
    );
    roles
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "widget-reader"}, "rules": [
                {"apiGroups": ["conformance.kube-mem.hostnic.io"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["conformance.kube-mem.hostnic.io"], "resources": ["widgets/status"], "verbs": ["patch"], "resourceNames": ["w1"]},
            ]})),
        )
        .await
        .unwrap();
    let bindings = dynamic(
        &admin,
        Some("team"),
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
    );
    bindings
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "widget-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}]})),
        )
        .await
        .unwrap();
    let admin_widgets: Api<Widget> = Api::namespaced(admin.clone(), "team");
    for name in ["w1", "w2"] {
        admin_widgets
            .create(&PostParams::default(), &widget(name, "red"))
            .await
            .unwrap();
    }
    mem.clear_audit();

    let reader = mem.client_for("reader-token").await.unwrap();
    let widgets: Api<Widget> = Api::namespaced(reader.clone(), "team");
    assert_eq!(
        widgets.list(&Default::default()).await.unwrap().items.len(),
        2
    );
    widgets.get("w1").await.unwrap();
    let denied = api_err(
        widgets
            .create(&PostParams::default(), &widget("w3", "red"))
            .await,
    );
    assert_eq!((denied.code, denied.reason.as_str()), (403, "Forbidden"));
    assert!(
        denied.message.contains("User \"system:serviceaccount:team:reader\" cannot create resource \"widgets\" in API group \"conformance.kube-mem.hostnic.io\" in the namespace \"team\""),
        "{}",
        denied.message
    );
    let status = Patch::Merge(json!({"status": {"observed": 1}}));
    widgets
        .patch_status("w1", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(
        api_err(
            widgets
                .patch_status("w2", &PatchParams::default(), &status)
                .await
        )
        .code,
        403,
        "resourceNames limit the rule"
    );
    // resourceNames also cover list/watch pinned to the name by a field selector.
    let cr = dynamic(
        &admin,
        None,
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
    );
    let rule = json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"], "resourceNames": ["node-a"]});
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "own-node"}, "rules": [rule]});
    cr.create(&PostParams::default(), &obj(role)).await.unwrap();
    let crb = dynamic(
        &admin,
        None,
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
    );
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "own-node"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "own-node"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}]});
    crb.create(&PostParams::default(), &obj(binding))
        .await
        .unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(reader.clone());
    nodes
        .list(&kube::api::ListParams::default().fields("metadata.name=node-a"))
        .await
        .unwrap();
    assert_eq!(api_err(nodes.list(&Default::default()).await).code, 403);
    assert_eq!(
        api_err(
            nodes
                .list(&kube::api::ListParams::default().fields("metadata.name=node-b"))
                .await
        )
        .code,
        403
    );

    let other_ns: Api<Widget> = Api::namespaced(reader.clone(), "default");
    assert_eq!(
        api_err(other_ns.list(&Default::default()).await).code,
        403,
        "a RoleBinding grants only its namespace"
    );

    let anonymous = mem.client_for("wrong-token").await.unwrap();
    let anon_widgets: Api<Widget> = Api::namespaced(anonymous, "team");
    assert_eq!(
        api_err(anon_widgets.list(&Default::default()).await).code,
        401
    );

    let audit = mem.audit();
    let by_reader: Vec<(String, bool)> = audit
        .iter()
        .filter(|r| r.user == "system:serviceaccount:team:reader")
        .map(|r| (r.permission(), r.allowed))
        .collect();
    for want in [
        (
            "list conformance.kube-mem.hostnic.io/widgets".to_string(),
            true,
        ),
        (
            "get conformance.kube-mem.hostnic.io/widgets".to_string(),
            true,
        ),
        (
            "create conformance.kube-mem.hostnic.io/widgets".to_string(),
            false,
        ),
        (
            "patch conformance.kube-mem.hostnic.io/widgets/status".to_string(),
            true,
        ),
        (
            "patch conformance.kube-mem.hostnic.io/widgets/status".to_string(),
            false,
        ),
    ] {
        assert!(by_reader.contains(&want), "{want:?} in {by_reader:?}");
    }
    let patch_w1 = audit
        .iter()
        .find(|r| r.subresource == "status" && r.allowed)
        .unwrap();
    assert_eq!(
        (
            patch_w1.namespace.as_str(),
            patch_w1.name.as_str(),
            patch_w1.code
        ),
        ("team", "w1", 200)
    );
    assert!(
        audit
            .iter()
            .any(|r| r.user == "system:anonymous" && r.code == 401)
    );

    // kubectl sends tokens only over TLS: this server serves HTTPS with its own CA.
    assert!(mem.url().starts_with("https://") && mem.ca_pem().is_some());
    if std::path::Path::new("/usr/bin/kubectl").exists() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("reader.kubeconfig");
        std::fs::write(&kc, mem.kubeconfig_yaml_for(Some("reader-token"))).unwrap();
        let kubectl = |args: &[&str]| {
            let mut c = tokio::process::Command::new("/usr/bin/kubectl");
            c.arg("--kubeconfig")
                .arg(&kc)
                .arg("--cache-dir")
                .arg(dir.path().join("cache"))
                .args(args);
            c
        };
        let out = kubectl(&["get", "widgets", "-n", "team", "-o", "name"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("widget.conformance.kube-mem.hostnic.io/w1")
        );
        let out = kubectl(&["delete", "widget", "w1", "-n", "team"])
            .output()
            .await
            .unwrap();
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("cannot delete resource")
        );
    } else {
        assert!(std::env::var_os("CI").is_none(), "kubectl missing in CI");
    }

    // The admin endpoint serves the same records as JSON.
    let body: serde_json::Value = admin
        .request(
            http::Request::get("/kube-mem/audit")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(body.as_array().unwrap().len() >= audit.len());
    mem.shutdown().await;
}
