//! Parses objects into their k8s-openapi (or hostnic) types and finds fields the types do not
//! know. k8s-openapi types ignore unknown fields when deserializing, so a misspelled field
//! (`readOnlyRootFileSystem`) would silently vanish; re-serializing the typed value and
//! comparing it with the original shows every field that was dropped or changed.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why an object does not check out.
#[derive(Debug, thiserror::Error)]
pub enum TypedError {
    #[error("{0}: kind not known to these tests (add its type to typed::round_trip)")]
    UnknownKind(String),
    #[error("{what}: does not parse as its type: {source}")]
    Parse {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: fields unknown to the type or changed by it: {paths:?}")]
    Dropped { what: String, paths: Vec<String> },
}

/// Parses `obj` into the type its apiVersion and kind name and checks that nothing was lost.
pub fn round_trip(obj: &Value) -> Result<(), TypedError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => check::<Namespace>(obj),
        ("v1", "ServiceAccount") => check::<ServiceAccount>(obj),
        ("v1", "Secret") => check::<Secret>(&unwrap_base64(obj, "data")),
        ("v1", "ConfigMap") => check::<ConfigMap>(&unwrap_base64(obj, "binaryData")),
        ("v1", "Service") => check::<Service>(obj),
        ("apps/v1", "Deployment") => check::<Deployment>(obj),
        ("apps/v1", "DaemonSet") => check::<DaemonSet>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => check::<ClusterRole>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => check::<ClusterRoleBinding>(obj),
        ("rbac.authorization.k8s.io/v1", "Role") => check::<Role>(obj),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => check::<RoleBinding>(obj),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            check::<ValidatingAdmissionPolicy>(obj)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            check::<ValidatingAdmissionPolicyBinding>(obj)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            check::<CustomResourceDefinition>(obj)
        }
        ("hostnic.qingcloud.com/v1alpha1", "NicPool") => check::<hostnic_crds::NicPool>(obj),
        ("hostnic.qingcloud.com/v1alpha1", "HostNic") => check::<hostnic_crds::HostNic>(obj),
        _ => Err(TypedError::UnknownKind(format!("{api_version} {kind}"))),
    }
}

/// kustomize folds long base64 values over several lines. The API server's decoder (Go's
/// encoding/base64) skips line breaks, k8s-openapi's does not: drop them as the server would.
fn unwrap_base64(obj: &Value, field: &str) -> Value {
    let mut obj = obj.clone();
    if let Some(data) = obj.get_mut(field).and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            if let Some(text) = value.as_str() {
                *value = Value::String(text.replace(['\n', '\r'], ""));
            }
        }
    }
    obj
}

fn check<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<(), TypedError> {
    let what = crate::render::describe(obj);
    let typed: T = serde_json::from_value(obj.clone()).map_err(|source| TypedError::Parse {
        what: what.clone(),
        source,
    })?;
    let again = serde_json::to_value(&typed).map_err(|source| TypedError::Parse {
        what: what.clone(),
        source,
    })?;
    let mut paths = Vec::new();
    lost_fields(obj, &again, "", &mut paths);
    if paths.is_empty() {
        Ok(())
    } else {
        Err(TypedError::Dropped { what, paths })
    }
}

/// Collects the paths of `original` that are missing from `typed` or differ there. Fields the
/// type adds (serde defaults) are fine: the manifest did not write them.
pub fn lost_fields(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => lost_fields(value, other, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!("{path} (length {} became {})", a.len(), b.len()));
                return;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                lost_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if numbers_equal(a, b) => {}
        (a, b) if a != b => out.push(format!("{path} ({a} became {b})")),
        _ => {}
    }
}

/// YAML `1` may come back as `1.0` from a float field, or the other way round.
fn numbers_equal(a: &Value, b: &Value) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(container: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [container]}}
            }
        })
    }

    #[test]
    fn a_correct_object_round_trips() {
        let obj = deployment(json!({
            "name": "c", "image": "i",
            "securityContext": {"readOnlyRootFilesystem": true}
        }));
        round_trip(&obj).unwrap();
    }

    #[test]
    fn a_misspelled_field_is_reported_with_its_path() {
        let obj = deployment(json!({
            "name": "c", "image": "i",
            "securityContext": {"readOnlyRootFileSystem": true}
        }));
        let err = round_trip(&obj).unwrap_err();
        let TypedError::Dropped { paths, .. } = err else {
            panic!("expected Dropped, got {err}");
        };
        assert_eq!(
            paths,
            vec![".spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem"]
        );
    }

    #[test]
    fn a_field_of_the_wrong_type_fails_to_parse() {
        let obj = deployment(json!({"name": "c", "image": "i", "ports": "8080"}));
        assert!(matches!(round_trip(&obj), Err(TypedError::Parse { .. })));
    }

    #[test]
    fn folded_base64_is_accepted_like_the_api_server_does() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "aGVsbG8g\nd29ybGQ="}
        });
        round_trip(&secret).unwrap();
    }

    #[test]
    fn an_unknown_kind_is_an_error_not_a_pass() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        assert!(matches!(round_trip(&obj), Err(TypedError::UnknownKind(_))));
    }

    #[test]
    fn defaults_added_by_a_type_are_not_losses() {
        let pool = json!({
            "apiVersion": "hostnic.qingcloud.com/v1alpha1",
            "kind": "NicPool",
            "metadata": {"name": "p"},
            "spec": {"vxnets": ["vxnet-a1"]}
        });
        round_trip(&pool).unwrap();
    }
}
