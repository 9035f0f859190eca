//! Bearer-token authentication and RBAC authorization driven by the Roles, ClusterRoles and
//! bindings stored in the server, so tests can check a component's RBAC manifests.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::store::Store;

/// Who a request comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    /// `userInfo.extra`, e.g. `authentication.kubernetes.io/node-name` of a token bound to a
    /// pod on that node (what admission policies read).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The `userInfo.extra` key naming the node of a pod-bound service-account token.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// The user name and group that bypass RBAC (like `system:masters`).
pub const ADMIN_USER: &str = "kube-mem-admin";
pub const MASTERS_GROUP: &str = "system:masters";

impl Identity {
    /// A plain user, member of `system:authenticated`.
    pub fn user(name: impl Into<String>) -> Self {
        Identity {
            user: name.into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        }
    }

    /// `system:serviceaccount:<ns>:<name>` with the service-account groups.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Identity {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            ..Default::default()
        }
    }

    /// The all-powerful identity of the admin kubeconfig.
    pub fn admin() -> Self {
        Identity {
            user: ADMIN_USER.into(),
            groups: vec![MASTERS_GROUP.into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    /// Bound to a pod on `node`: the extra a projected service-account token carries (1.30+).
    pub fn on_node(mut self, node: impl Into<String>) -> Self {
        self.extra.insert(NODE_NAME_EXTRA.into(), vec![node.into()]);
        self
    }

    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }
}

/// Token -> identity table. With auth enabled, a request without a known token gets 401.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub(crate) tokens: HashMap<String, Identity>,
}

impl Auth {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `token` to `identity`.
    pub fn token(mut self, token: impl Into<String>, identity: Identity) -> Self {
        self.tokens.insert(token.into(), identity);
        self
    }

    pub fn identify(&self, token: &str) -> Option<&Identity> {
        self.tokens.get(token)
    }
}

/// What a request wants to do, in RBAC terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection (or the HTTP verb in
    /// lower case for non-resource paths).
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource requests (discovery, openapi, version).
    pub path: String,
}

impl Attributes {
    pub fn is_resource(&self) -> bool {
        !self.resource.is_empty()
    }
}

/// Paths every authenticated identity may read (the default `system:discovery` and
/// `system:public-info-viewer` bindings).
fn public_path(path: &str) -> bool {
    [
        "/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz",
    ]
    .iter()
    .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strs(rule.get("verbs"));
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    if !a.is_resource() {
        return strs(rule.get("nonResourceURLs"))
            .iter()
            .any(|u| *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p)));
    }
    if !strs(rule.get("apiGroups"))
        .iter()
        .any(|g| *g == "*" || *g == a.api_group)
    {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let res_ok = strs(rule.get("resources")).iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
            || (!a.subresource.is_empty() && *r == format!("{}/*", a.resource))
    });
    if !res_ok {
        return false;
    }
    let names = strs(rule.get("resourceNames"));
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()))
}

fn subject_matches(s: &Value, id: &Identity, binding_ns: &str) -> bool {
    let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
    match s.get("kind").and_then(Value::as_str) {
        Some("User") => name == id.user,
        Some("Group") => id.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            id.user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rules_of<'a>(store: &'a Store, role_ref: &Value, binding_ns: &str) -> Vec<&'a Value> {
    let kind = role_ref
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = role_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (plural, ns) = if kind == "ClusterRole" {
        ("clusterroles", "")
    } else {
        ("roles", binding_ns)
    };
    store
        .objects_of("rbac.authorization.k8s.io", plural)
        .into_iter()
        .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
        .filter(|r| {
            r.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                == ns
        })
        .flat_map(|r| {
            r.get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect()
}

/// Whether RBAC in `store` lets `id` do `a`.
pub fn authorize(store: &Store, id: &Identity, a: &Attributes) -> bool {
    // `system:basic-user` lets everyone ask what they themselves may do.
    let self_review = a.api_group == "authorization.k8s.io"
        && a.resource.starts_with("selfsubject")
        && a.verb == "create";
    if id.is_admin() || self_review || (!a.is_resource() && public_path(&a.path)) {
        return true;
    }
    let bound = |b: &&Value, ns: &str| strs_subjects(b).iter().any(|s| subject_matches(s, id, ns));
    for b in store.objects_of("rbac.authorization.k8s.io", "clusterrolebindings") {
        if bound(&b, "")
            && rules_of(store, b.get("roleRef").unwrap_or(&Value::Null), "")
                .iter()
                .any(|r| rule_allows(r, a))
        {
            return true;
        }
    }
    if a.namespace.is_empty() {
        return false;
    }
    store
        .objects_of("rbac.authorization.k8s.io", "rolebindings")
        .into_iter()
        .filter(|b| {
            b.pointer("/metadata/namespace").and_then(Value::as_str) == Some(a.namespace.as_str())
        })
        .any(|b| {
            bound(&b, &a.namespace)
                && rules_of(
                    store,
                    b.get("roleRef").unwrap_or(&Value::Null),
                    &a.namespace,
                )
                .iter()
                .any(|r| rule_allows(r, a))
        })
}

fn strs_subjects(b: &Value) -> Vec<&Value> {
    b.get("subjects")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// The message of a 403, worded like the real server's.
pub fn forbidden_message(id: &Identity, a: &Attributes) -> String {
    if !a.is_resource() {
        return format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            id.user, a.verb, a.path
        );
    }
    let res = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let subject = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} \"{}\"", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{subject} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
        id.user, a.verb, a.api_group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, res: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: "hostnic.qingcloud.com".into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_match_subresources_names_and_wildcards() {
        let rule = json!({"apiGroups": ["hostnic.qingcloud.com"], "resources": ["hostnics", "hostnics/status"], "verbs": ["get", "patch"]});
        assert!(rule_allows(
            &rule,
            &attrs("patch", "hostnics", "status", "a")
        ));
        assert!(!rule_allows(&rule, &attrs("patch", "nicpools", "", "a")));
        assert!(!rule_allows(&rule, &attrs("delete", "hostnics", "", "a")));
        let named = json!({"apiGroups": ["*"], "resources": ["nicpools/scale"], "verbs": ["*"], "resourceNames": ["p1"]});
        assert!(rule_allows(
            &named,
            &attrs("update", "nicpools", "scale", "p1")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("update", "nicpools", "scale", "p2")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("list", "nicpools", "scale", "")
        ));
    }
}
