//! Unknown-field detection for built-in kinds: the object is decoded into its k8s-openapi
//! type and encoded again; fields that did not survive are unknown to the real server too
//! (which drops them, warns, or rejects the write under `fieldValidation=Strict`).

use k8s_openapi::api::{admissionregistration, apps, coordination, core, events, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(v.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// The object as its typed form keeps it, or `None` for kinds without one (or objects the
/// typed form cannot decode, which are then left alone).
fn typed_form(group: &str, kind: &str, v: &Value) -> Option<Value> {
    match (group, kind) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>(v),
        ("", "Node") => round_trip::<core::v1::Node>(v),
        ("", "Pod") => round_trip::<core::v1::Pod>(v),
        ("", "Event") => round_trip::<core::v1::Event>(v),
        ("", "Secret") => round_trip::<core::v1::Secret>(v),
        ("", "ConfigMap") => round_trip::<core::v1::ConfigMap>(v),
        ("", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(v),
        ("", "Service") => round_trip::<core::v1::Service>(v),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>(v),
        ("events.k8s.io", "Event") => round_trip::<events::v1::Event>(v),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            round_trip::<apiextensions::v1::CustomResourceDefinition>(v)
        }
        ("rbac.authorization.k8s.io", "Role") => round_trip::<rbac::v1::Role>(v),
        ("rbac.authorization.k8s.io", "ClusterRole") => round_trip::<rbac::v1::ClusterRole>(v),
        ("rbac.authorization.k8s.io", "RoleBinding") => round_trip::<rbac::v1::RoleBinding>(v),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(v)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            round_trip::<admissionregistration::v1::ValidatingAdmissionPolicy>(v)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(v)
        }
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>(v),
        ("apps", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(v),
        _ => None,
    }
}

/// Removes the fields of `obj` its kind does not have and returns their paths
/// (`spec.template.spec.containers[0].imagee`).
pub fn prune_unknown(group: &str, kind: &str, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Some(known) = typed_form(group, kind, obj) {
        prune(obj, &known, "", &mut unknown);
    }
    unknown
}

fn prune(v: &mut Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (v, known) {
        (Value::Object(m), Value::Object(k)) => {
            m.retain(|key, child| {
                // Nulls vanish in the typed form without being unknown.
                let keep = child.is_null() || k.contains_key(key);
                if !keep {
                    out.push(if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    });
                }
                keep
            });
            for (key, child) in m.iter_mut() {
                if let Some(kc) = k.get(key) {
                    let p = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    prune(child, kc, &p, out);
                }
            }
        }
        (Value::Array(items), Value::Array(k)) => {
            for (i, (item, kitem)) in items.iter_mut().zip(k).enumerate() {
                prune(item, kitem, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_typos_in_built_ins() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"any": "x"}},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "c", "imagee": "x", "env": null}]}}, "replicass": 2}});
        let unknown = prune_unknown("apps", "Deployment", &mut d);
        assert_eq!(
            unknown,
            vec![
                "spec.replicass".to_string(),
                "spec.template.spec.containers[0].imagee".to_string()
            ]
        );
        assert!(d["spec"].get("replicass").is_none());
        assert_eq!(d["metadata"]["labels"]["any"], "x");
        let mut cm = json!({"metadata": {"name": "c"}, "data": {"k": "v"}});
        assert!(prune_unknown("", "ConfigMap", &mut cm).is_empty());
    }
}
