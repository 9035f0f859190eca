//! ValidatingAdmissionPolicy semantics the manifests rely on, on ConfigMaps: rules and match
//! conditions select requests, a failed validation denies with its reason's HTTP code and its
//! message, failurePolicy decides what an erroring expression does, and what kube-mem cannot
//! evaluate is refused rather than passed (kube-mem only: admission setup is the cluster's).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_mem::KubeMem;
use serde_json::{Value, json};

const GROUP: &str = "admissionregistration.k8s.io";

fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(GROUP, "v1", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

async fn bind(client: &kube::Client, name: &str, spec: Value) {
    let policy = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name}, "spec": spec});
    api(
        client,
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
    )
    .create(
        &PostParams::default(),
        &serde_json::from_value(policy).unwrap(),
    )
    .await
    .unwrap();
    let binding = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}});
    api(
        client,
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    )
    .create(
        &PostParams::default(),
        &serde_json::from_value(binding).unwrap(),
    )
    .await
    .unwrap();
}

fn config_map(name: &str, color: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"color": color}})).unwrap()
}

fn rules(operations: &[&str]) -> Value {
    json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
        "operations": operations, "resources": ["configmaps"]}]})
}

async fn create(cms: &Api<ConfigMap>, name: &str, color: &str) -> Result<(), kube::Error> {
    cms.create(&PostParams::default(), &config_map(name, color))
        .await
        .map(drop)
}

fn code(r: Result<(), kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn policies_deny_with_their_reason_and_message_and_only_what_they_match() {
    let server = KubeMem::builder().start().await.unwrap();
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    bind(
        &client,
        "no-red",
        json!({"matchConstraints": rules(&["CREATE", "UPDATE"]),
            "matchConditions": [{"name": "not-exempt", "expression": "!object.metadata.name.startsWith('exempt-')"}],
            "validations": [{"expression": "object.data.color != 'red'", "reason": "Invalid",
                "messageExpression": "'no red: ' + object.metadata.name"}]}),
    )
    .await;

    create(&cms, "blue", "blue").await.unwrap();
    let (status, message) = code(create(&cms, "apple", "red").await);
    assert_eq!(status, 422, "{message}");
    assert!(
        message.contains(
            "ValidatingAdmissionPolicy 'no-red' with binding 'no-red' denied request: no red: apple"
        ),
        "{message}"
    );
    // Not matched: the condition exempts it, and DELETE is not among the operations.
    create(&cms, "exempt-rose", "red").await.unwrap();
    cms.delete("blue", &Default::default()).await.unwrap();
    assert!(cms.get_opt("apple").await.unwrap().is_none());

    // An expression that fails to evaluate: Fail (the default) denies, Ignore admits.
    bind(
        &client,
        "broken",
        json!({"matchConstraints": rules(&["CREATE"]),
            "validations": [{"expression": "object.data.missing == 'x'"}]}),
    )
    .await;
    let (status, message) = code(create(&cms, "green", "green").await);
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("resulted in error"), "{message}");
}

#[tokio::test]
async fn what_kube_mem_cannot_evaluate_is_refused_not_passed() {
    let server = KubeMem::builder().start().await.unwrap();
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    create(&cms, "kept", "blue").await.unwrap();
    // failurePolicy Ignore: an expression that cannot be evaluated admits the request.
    bind(
        &client,
        "lenient",
        json!({"matchConstraints": rules(&["UPDATE"]), "failurePolicy": "Ignore",
            "validations": [{"expression": "object.data.missing == 'x'"}]}),
    )
    .await;
    let mut kept = cms.get("kept").await.unwrap();
    kept.data = Some([("color".to_string(), "teal".to_string())].into());
    cms.replace("kept", &PostParams::default(), &kept)
        .await
        .unwrap();

    bind(
        &client,
        "with-params",
        json!({"matchConstraints": rules(&["CREATE"]),
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "validations": [{"expression": "true"}]}),
    )
    .await;
    let (status, message) = code(create(&cms, "a", "blue").await);
    assert_eq!(status, 500, "{message}");
    assert!(
        message.contains("does not evaluate /spec/paramKind"),
        "{message}"
    );
}
