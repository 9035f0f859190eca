//! What the manifests' RBAC grants a ServiceAccount, and how that compares with the requests
//! the account really makes: a grant nobody uses is a finding (least privilege), and so is a
//! request no grant allows (the component would fail on a real cluster).

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::Value;

/// Why the RBAC objects cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("parse {what}: {source}")]
    Parse {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{binding} refers to {role_kind} {role}, which the manifests do not define")]
    MissingRole {
        binding: String,
        role_kind: String,
        role: String,
    },
    #[error(
        "{role} grants with a wildcard ({rule}): least privilege means naming each verb and resource"
    )]
    Wildcard { role: String, rule: String },
    #[error("{role} grants nonResourceURLs, which hostnic never requests")]
    NonResource { role: String },
}

/// A ServiceAccount, the identity a component runs as.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    /// The node of the pod its token is bound to (`authentication.kubernetes.io/node-name`).
    pub node: Option<String>,
}

impl ServiceAccount {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node: None,
        }
    }

    /// The same account as a pod on `node` holds it (a projected token bound to that pod).
    pub fn on_node(self, node: &str) -> Self {
        Self {
            node: Some(node.to_owned()),
            ..self
        }
    }

    /// The user name the API server authenticates the account's token as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// One kind of request an identity made: a verb on a resource (and subresource) in a
/// namespace, or cluster-wide (`namespace: None`: a cluster-scoped resource, or a list or
/// watch across all namespaces).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub verb: String,
    /// API group, `""` for the core group.
    pub group: String,
    /// Plural resource name, e.g. `hostnics`.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    /// Object name, when the request names one (get, update, patch, delete).
    pub name: Option<String>,
}

impl Access {
    /// `resource` or `resource/subresource`, as RBAC rules spell it.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// The same access with the object name dropped, to list distinct kinds of requests.
    pub fn without_name(&self) -> Self {
        Self {
            name: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.rbac_resource())?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        if let Some(name) = &self.name {
            write!(f, " name={name}")?;
        }
        Ok(())
    }
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Through a ClusterRoleBinding: every namespace and the cluster-scoped resources.
    Cluster,
    /// Through a RoleBinding: that namespace only.
    Namespace(String),
}

/// One verb on one resource, granted by a named role in a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub scope: Scope,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub verb: String,
    /// Empty: any object.
    pub resource_names: Vec<String>,
    /// `ClusterRole/name` or `Role/ns/name`, for messages.
    pub role: String,
}

impl Grant {
    /// Whether this grant allows `access` (the Kubernetes RBAC authorizer's rule).
    pub fn allows(&self, access: &Access) -> bool {
        let in_scope = match &self.scope {
            Scope::Cluster => true,
            Scope::Namespace(ns) => access.namespace.as_deref() == Some(ns),
        };
        let named = self.resource_names.is_empty()
            || access
                .name
                .as_ref()
                .is_some_and(|n| self.resource_names.contains(n));
        in_scope
            && named
            && self.verb == access.verb
            && self.group == access.group
            && self.resource == access.rbac_resource()
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Scope::Namespace(ns) = &self.scope {
            write!(f, " in {ns}")?;
        }
        if !self.resource_names.is_empty() {
            write!(f, " names={:?}", self.resource_names)?;
        }
        write!(f, " (from {})", self.role)
    }
}

/// Every grant the RBAC objects among `objects` give `account`, one per verb and resource.
pub fn grants_of(account: &ServiceAccount, objects: &[Value]) -> Result<Vec<Grant>, RbacError> {
    let cluster_roles: Vec<ClusterRole> = of_kind(objects, "ClusterRole")?;
    let roles: Vec<Role> = of_kind(objects, "Role")?;
    let mut grants = BTreeSet::new();

    for binding in of_kind::<ClusterRoleBinding>(objects, "ClusterRoleBinding")? {
        if !binds(binding.subjects.as_deref(), account) {
            continue;
        }
        let binding_name = format!(
            "ClusterRoleBinding/{}",
            binding.metadata.name.unwrap_or_default()
        );
        let role = find_cluster_role(&cluster_roles, &binding.role_ref.name, &binding_name)?;
        expand(role, Scope::Cluster, &mut grants)?;
    }
    for binding in of_kind::<RoleBinding>(objects, "RoleBinding")? {
        if !binds(binding.subjects.as_deref(), account) {
            continue;
        }
        let ns = binding.metadata.namespace.clone().unwrap_or_default();
        let binding_name = format!(
            "RoleBinding/{ns}/{}",
            binding.metadata.name.unwrap_or_default()
        );
        let scope = Scope::Namespace(ns.clone());
        let role_name = &binding.role_ref.name;
        if binding.role_ref.kind == "ClusterRole" {
            let role = find_cluster_role(&cluster_roles, role_name, &binding_name)?;
            expand(role, scope, &mut grants)?;
        } else {
            let role = roles
                .iter()
                .find(|r| {
                    r.metadata.name.as_ref() == Some(role_name)
                        && r.metadata.namespace.as_deref() == Some(ns.as_str())
                })
                .ok_or_else(|| RbacError::MissingRole {
                    binding: binding_name.clone(),
                    role_kind: "Role".into(),
                    role: format!("{ns}/{role_name}"),
                })?;
            let label = format!("Role/{ns}/{role_name}");
            expand_rules(
                &label,
                role.rules.as_deref().unwrap_or(&[]),
                scope,
                &mut grants,
            )?;
        }
    }
    Ok(grants.into_iter().collect())
}

/// How the grants compare with the requests made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Requests no grant allows.
    pub missing: Vec<Access>,
    /// Grants no request used.
    pub unused: Vec<Grant>,
}

impl Comparison {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unused.is_empty()
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for access in &self.missing {
            writeln!(f, "used but not granted: {access}")?;
        }
        for grant in &self.unused {
            writeln!(f, "granted but never used: {grant}")?;
        }
        Ok(())
    }
}

/// Compares grants with the requests made under them.
pub fn compare(grants: &[Grant], used: &[Access]) -> Comparison {
    let missing: BTreeSet<Access> = used
        .iter()
        .filter(|a| !grants.iter().any(|g| g.allows(a)))
        .cloned()
        .collect();
    let unused = grants
        .iter()
        .filter(|g| !used.iter().any(|a| g.allows(a)))
        .cloned()
        .collect();
    Comparison {
        missing: missing.into_iter().collect(),
        unused,
    }
}

fn of_kind<T: serde::de::DeserializeOwned>(
    objects: &[Value],
    kind: &str,
) -> Result<Vec<T>, RbacError> {
    objects
        .iter()
        .filter(|o| {
            o["kind"] == kind
                && o["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("rbac.authorization.k8s.io/"))
        })
        .map(|o| {
            serde_json::from_value(o.clone()).map_err(|source| RbacError::Parse {
                what: crate::render::describe(o),
                source,
            })
        })
        .collect()
}

fn binds(
    subjects: Option<&[k8s_openapi::api::rbac::v1::Subject]>,
    account: &ServiceAccount,
) -> bool {
    subjects.unwrap_or(&[]).iter().any(|s| {
        (s.kind == "ServiceAccount"
            && s.name == account.name
            && s.namespace.as_deref() == Some(account.namespace.as_str()))
            || (s.kind == "User" && s.name == account.username())
    })
}

fn find_cluster_role<'a>(
    roles: &'a [ClusterRole],
    name: &str,
    binding: &str,
) -> Result<&'a ClusterRole, RbacError> {
    roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| RbacError::MissingRole {
            binding: binding.to_owned(),
            role_kind: "ClusterRole".into(),
            role: name.to_owned(),
        })
}

fn expand(role: &ClusterRole, scope: Scope, out: &mut BTreeSet<Grant>) -> Result<(), RbacError> {
    let label = format!(
        "ClusterRole/{}",
        role.metadata.name.as_deref().unwrap_or_default()
    );
    expand_rules(&label, role.rules.as_deref().unwrap_or(&[]), scope, out)
}

fn expand_rules(
    role: &str,
    rules: &[PolicyRule],
    scope: Scope,
    out: &mut BTreeSet<Grant>,
) -> Result<(), RbacError> {
    for rule in rules {
        if rule
            .non_resource_urls
            .as_ref()
            .is_some_and(|u| !u.is_empty())
        {
            return Err(RbacError::NonResource { role: role.into() });
        }
        let groups = rule.api_groups.as_deref().unwrap_or(&[]);
        let resources = rule.resources.as_deref().unwrap_or(&[]);
        let wildcard = |items: &[String]| items.iter().any(|i| i.contains('*'));
        if wildcard(&rule.verbs) || wildcard(groups) || wildcard(resources) {
            return Err(RbacError::Wildcard {
                role: role.into(),
                rule: format!("{rule:?}"),
            });
        }
        for group in groups {
            for resource in resources {
                for verb in &rule.verbs {
                    out.insert(Grant {
                        scope: scope.clone(),
                        group: group.clone(),
                        resource: resource.clone(),
                        verb: verb.clone(),
                        resource_names: rule.resource_names.clone().unwrap_or_default(),
                        role: role.into(),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn access(verb: &str, group: &str, resource: &str, ns: Option<&str>) -> Access {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_owned())),
            None => (resource, None),
        };
        Access {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub,
            namespace: ns.map(Into::into),
            name: None,
        }
    }

    fn objects() -> Vec<Value> {
        vec![
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "op"},
            "rules": [
                {"apiGroups": ["g"], "resources": ["things", "things/status"], "verbs": ["get", "patch"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}
            ]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "op"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "op"},
                "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "sys"}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "lease", "namespace": "sys"},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "lease", "namespace": "sys"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease"},
                "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "sys"}]}),
            // Another account's binding must not leak into op's grants.
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "other"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "op"},
                "subjects": [{"kind": "ServiceAccount", "name": "other", "namespace": "sys"}]}),
        ]
    }

    #[test]
    fn grants_expand_per_verb_and_resource_through_bindings() {
        let grants = grants_of(&ServiceAccount::new("sys", "op"), &objects()).unwrap();
        assert_eq!(grants.len(), 6, "{grants:#?}");
        let nobody = grants_of(&ServiceAccount::new("sys", "nobody"), &objects()).unwrap();
        assert!(nobody.is_empty());
    }

    #[test]
    fn exact_usage_compares_clean() {
        let grants = grants_of(&ServiceAccount::new("sys", "op"), &objects()).unwrap();
        let used = vec![
            access("get", "g", "things", None),
            access("patch", "g", "things", None),
            access("get", "g", "things/status", None),
            access("patch", "g", "things/status", None),
            access("list", "", "nodes", None),
            access("get", "coordination.k8s.io", "leases", Some("sys")),
        ];
        let cmp = compare(&grants, &used);
        assert!(cmp.is_exact(), "{cmp}");
    }

    #[test]
    fn unused_grants_and_missing_grants_are_both_found() {
        let grants = grants_of(&ServiceAccount::new("sys", "op"), &objects()).unwrap();
        let used = vec![
            access("get", "g", "things", None),
            access("patch", "g", "things", None),
            access("get", "g", "things/status", None),
            access("patch", "g", "things/status", None),
            access("list", "", "nodes", None),
            // The Role is namespaced: a lease in another namespace is not granted.
            access("get", "coordination.k8s.io", "leases", Some("elsewhere")),
            access("delete", "g", "things", None),
        ];
        let cmp = compare(&grants, &used);
        assert_eq!(
            cmp.missing,
            vec![
                access("delete", "g", "things", None),
                access("get", "coordination.k8s.io", "leases", Some("elsewhere")),
            ]
        );
        assert_eq!(cmp.unused.len(), 1);
        assert_eq!(cmp.unused[0].resource, "leases");
    }

    #[test]
    fn resource_names_only_allow_named_requests() {
        let grant = Grant {
            scope: Scope::Namespace("sys".into()),
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            verb: "get".into(),
            resource_names: vec!["hostnic".into()],
            role: "Role/sys/lease".into(),
        };
        let mut a = access("get", "coordination.k8s.io", "leases", Some("sys"));
        assert!(!grant.allows(&a));
        a.name = Some("hostnic".into());
        assert!(grant.allows(&a));
    }

    #[test]
    fn wildcards_and_dangling_bindings_are_errors() {
        let mut objs = objects();
        objs[0]["rules"][0]["verbs"] = json!(["*"]);
        assert!(matches!(
            grants_of(&ServiceAccount::new("sys", "op"), &objs),
            Err(RbacError::Wildcard { .. })
        ));
        let mut objs = objects();
        objs.remove(0);
        assert!(matches!(
            grants_of(&ServiceAccount::new("sys", "op"), &objs),
            Err(RbacError::MissingRole { .. })
        ));
    }
}
