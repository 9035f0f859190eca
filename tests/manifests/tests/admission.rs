//! The manifests' ValidatingAdmissionPolicy, evaluated by the in-memory API server: the agent's
//! ServiceAccount may write only HostNics of the node its token is bound to, and nothing else
//! is limited (the operator, the admin). Without the policy (what RBAC alone allows), the agent
//! of one node could claim or release every node's NICs.

use hostnic_manifests_tests::admin::Admin;
use hostnic_manifests_tests::apiserver::ApiServer;
use hostnic_manifests_tests::manifests_dir;
use hostnic_manifests_tests::rbac::ServiceAccount;
use hostnic_manifests_tests::render;
use serde_json::{Value, json};

const NAMESPACE: &str = "hostnic-system";
const CRD_VERSION: &str = "hostnic.qingcloud.com/v1alpha1";

fn hostnic(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": CRD_VERSION, "kind": "HostNic",
        "metadata": {"name": name},
        "spec": {"pool": "p", "node": node, "vxnet": "vxnet-adm1"},
    })
}

/// The stored object with `status.phase` set, as a claim or release would write it.
fn with_phase(admin: &Admin, name: &str, phase: &str) -> Value {
    let mut obj = admin
        .list(CRD_VERSION, "HostNic")
        .unwrap()
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("HostNic {name} not stored"));
    obj["status"] = json!({"phase": phase});
    obj
}

#[test]
fn the_agent_writes_only_hostnics_of_its_own_node() {
    let agent = ServiceAccount::new(NAMESPACE, "hostnic-agent");
    let agent_a = agent.clone().on_node("node-a");
    let operator = ServiceAccount::new(NAMESPACE, "hostnic-operator");
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start(
        dir.path(),
        &[agent_a.clone(), agent.clone(), operator.clone()],
    )
    .unwrap();
    let mut objects = render::kustomize(&manifests_dir()).unwrap();
    objects.sort_by_key(|o| {
        !matches!(
            o["kind"].as_str(),
            Some("Namespace" | "CustomResourceDefinition")
        )
    });
    api.client.create_all(&objects).unwrap();
    api.client
        .create_all(&[hostnic("hn-a", "node-a"), hostnic("hn-b", "node-b")])
        .unwrap();
    let as_agent_a = Admin::connect(&api.kubeconfig_for(&agent_a).unwrap()).unwrap();

    let own = as_agent_a.update_status(&with_phase(&api.client, "hn-a", "Available"));
    assert!(own.is_ok(), "its own node's HostNic: {own:?}");

    let other = as_agent_a
        .update_status(&with_phase(&api.client, "hn-b", "Available"))
        .expect_err("the agent of node-a wrote node-b's HostNic");
    let text = format!("{other:#}");
    assert!(
        text.contains("hostnic-agent-own-node")
            && text.contains("the agent on node node-a may not write HostNic hn-b of node node-b"),
        "{text}"
    );
    assert!(text.contains("403") || text.contains("Forbidden"), "{text}");

    // A token not bound to a pod (a leaked long-lived Secret token, or a cluster before 1.30).
    let unbound = Admin::connect(&api.kubeconfig_for(&agent).unwrap()).unwrap();
    let e = unbound
        .update_status(&with_phase(&api.client, "hn-a", "Bound"))
        .expect_err("an agent token bound to no node wrote a HostNic");
    assert!(
        format!("{e:#}").contains("the agent's token is not bound to a node"),
        "{e:#}"
    );

    // Nobody else is limited: the operator writes every node's HostNics.
    let as_operator = Admin::connect(&api.kubeconfig_for(&operator).unwrap()).unwrap();
    as_operator
        .update_status(&with_phase(&api.client, "hn-b", "Released"))
        .unwrap();
    let stored = api.client.list(CRD_VERSION, "HostNic").unwrap();
    let phase = |name: &str| {
        stored
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .map(|o| o["status"]["phase"].clone())
    };
    assert_eq!(phase("hn-a"), Some(json!("Available")));
    assert_eq!(phase("hn-b"), Some(json!("Released")));
}
