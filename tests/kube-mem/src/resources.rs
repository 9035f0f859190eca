//! The resource types the server knows: built-in kinds and those defined by CRDs created
//! through the API. Discovery, routing, tables and validation all read from here.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// `.spec.replicas`-style paths a CRD's scale subresource maps to a `Scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleDef {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

/// One `additionalPrinterColumns` entry (or a built-in column).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// Per-version facts of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionDef {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    /// The structural `openAPIV3Schema` (CRDs only).
    pub schema: Option<Value>,
    pub status_subresource: bool,
    pub scale: Option<ScaleDef>,
    pub columns: Vec<Column>,
    /// Field selectors a CRD declares (`selectableFields`), as `spec.node`.
    pub selectable_fields: Vec<String>,
}

/// A resource (group + plural) and how it is served.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    pub group: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<VersionDef>,
    /// Defined by a CRD (stricter update rules, schema validation).
    pub custom: bool,
}

impl ResourceDef {
    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|x| x.name == v && x.served)
    }

    pub fn preferred_version(&self) -> &str {
        self.versions
            .iter()
            .find(|v| v.storage)
            .or(self.versions.first())
            .map_or("v1", |v| v.name.as_str())
    }

    pub fn api_version(&self, v: &str) -> String {
        if self.group.is_empty() {
            v.to_string()
        } else {
            format!("{}/{}", self.group, v)
        }
    }

    /// Where objects are stored: events.k8s.io Events share the core Events' storage.
    pub fn key(&self) -> ResKey {
        if self.is_events_v1() {
            return ResKey {
                group: String::new(),
                plural: "events".into(),
            };
        }
        ResKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    /// Whether this is the CustomResourceDefinition resource itself.
    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }

    /// Access reviews are answered, never stored (create only).
    pub fn is_review(&self) -> bool {
        self.group == "authorization.k8s.io"
    }

    pub fn is_events_v1(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    /// Whether writes to the main resource leave `.status` alone (status subresource).
    pub fn has_status(&self, v: &str) -> bool {
        self.version(v).is_some_and(|v| v.status_subresource)
    }
}

/// Storage key of a resource: group and plural.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResKey {
    pub group: String,
    pub plural: String,
}

fn col(name: &str, type_: &str, json_path: &str, priority: i64) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        format: if name == "Name" {
            "name".into()
        } else {
            String::new()
        },
        description: String::new(),
        priority,
        json_path: json_path.into(),
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        short: &["ns"],
        categories: &[],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        namespaced: false,
        short: &["no"],
        categories: &[],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
        short: &["po"],
        categories: &["all"],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        short: &[],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        short: &["cm"],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        short: &["sa"],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        short: &["svc"],
        categories: &["all"],
        status: true,
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        short: &[],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
        short: &["crd", "crds"],
        categories: &["api-extensions"],
        status: true,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
        short: &[],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        short: &[],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
        short: &[],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        short: &[],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        kind: "ValidatingAdmissionPolicy",
        plural: "validatingadmissionpolicies",
        namespaced: false,
        short: &[],
        categories: &["api-extensions"],
        status: true,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        kind: "ValidatingAdmissionPolicyBinding",
        plural: "validatingadmissionpolicybindings",
        namespaced: false,
        short: &[],
        categories: &["api-extensions"],
        status: false,
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        short: &["deploy"],
        categories: &["all"],
        status: true,
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        namespaced: true,
        short: &["ds"],
        categories: &["all"],
        status: true,
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        namespaced: false,
        short: &[],
        categories: &[],
        status: false,
    },
    Builtin {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SubjectAccessReview",
        plural: "subjectaccessreviews",
        namespaced: false,
        short: &[],
        categories: &[],
        status: false,
    },
];

fn builtin_columns(group: &str, plural: &str) -> Vec<Column> {
    let age = col("Age", "date", ".metadata.creationTimestamp", 0);
    let name = col("Name", "string", ".metadata.name", 0);
    match (group, plural) {
        ("", "pods") => vec![
            name,
            col("Status", "string", ".status.phase", 0),
            col("Node", "string", ".spec.nodeName", 0),
            age,
            col("IP", "string", ".status.podIP", 1),
        ],
        ("", "nodes") => vec![
            name,
            col(
                "Status",
                "string",
                ".status.conditions[?(@.type==\"Ready\")].status",
                0,
            ),
            age,
            col("Version", "string", ".status.nodeInfo.kubeletVersion", 0),
        ],
        ("", "namespaces") => vec![name, col("Status", "string", ".status.phase", 0), age],
        ("", "events") | ("events.k8s.io", "events") => vec![
            name,
            col("Type", "string", ".type", 0),
            col("Reason", "string", ".reason", 0),
            col("Message", "string", ".message", 0),
            age,
        ],
        ("apps", "deployments") => vec![
            name,
            col("Replicas", "integer", ".spec.replicas", 0),
            col("Available", "integer", ".status.availableReplicas", 0),
            age,
        ],
        ("apps", "daemonsets") => vec![
            name,
            col("Desired", "integer", ".status.desiredNumberScheduled", 0),
            col("Ready", "integer", ".status.numberReady", 0),
            age,
        ],
        ("apiextensions.k8s.io", _) => vec![
            name,
            col("Created At", "date", ".metadata.creationTimestamp", 0),
        ],
        _ => vec![name, age],
    }
}

/// The kinds every server has before any CRD is created.
pub fn builtins() -> Vec<Arc<ResourceDef>> {
    BUILTINS
        .iter()
        .map(|b| {
            Arc::new(ResourceDef {
                group: b.group.into(),
                kind: b.kind.into(),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                namespaced: b.namespaced,
                short_names: b.short.iter().map(|s| s.to_string()).collect(),
                categories: b.categories.iter().map(|s| s.to_string()).collect(),
                versions: vec![VersionDef {
                    name: b.version.into(),
                    served: true,
                    storage: true,
                    schema: None,
                    status_subresource: b.status,
                    // Deployments scale like a CRD with spec/status replicas paths.
                    scale: (b.group == "apps" && b.plural == "deployments").then(|| ScaleDef {
                        spec_replicas_path: ".spec.replicas".into(),
                        status_replicas_path: ".status.replicas".into(),
                        label_selector_path: None,
                    }),
                    columns: builtin_columns(b.group, b.plural),
                    selectable_fields: Vec::new(),
                }],
                custom: false,
            })
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The resource a CRD object defines, or `None` if the CRD is malformed.
pub fn from_crd(crd: &Value) -> Option<ResourceDef> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?.to_string();
    let kind = names.get("kind")?.as_str()?.to_string();
    let versions = spec
        .get("versions")?
        .as_array()?
        .iter()
        .map(|v| {
            let sub = v.get("subresources");
            let mut columns = vec![col("Name", "string", ".metadata.name", 0)];
            match v.get("additionalPrinterColumns").and_then(Value::as_array) {
                Some(cols) if !cols.is_empty() => columns.extend(cols.iter().map(|c| Column {
                    name: str_of(c, "name"),
                    type_: str_of(c, "type"),
                    format: str_of(c, "format"),
                    description: str_of(c, "description"),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    json_path: str_of(c, "jsonPath"),
                })),
                _ => columns.push(col("Age", "date", ".metadata.creationTimestamp", 0)),
            }
            VersionDef {
                name: str_of(v, "name"),
                served: v.get("served").and_then(Value::as_bool).unwrap_or(true),
                storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                status_subresource: sub.and_then(|s| s.get("status")).is_some(),
                scale: sub.and_then(|s| s.get("scale")).map(|s| ScaleDef {
                    spec_replicas_path: str_of(s, "specReplicasPath"),
                    status_replicas_path: str_of(s, "statusReplicasPath"),
                    label_selector_path: s
                        .get("labelSelectorPath")
                        .and_then(Value::as_str)
                        .map(String::from),
                }),
                columns,
                selectable_fields: v
                    .get("selectableFields")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                            .map(|p| p.trim_start_matches('.').to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    Some(ResourceDef {
        group: spec.get("group")?.as_str()?.to_string(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map_or_else(|| kind.to_lowercase(), String::from),
        kind,
        plural,
        namespaced: spec.get("scope").and_then(Value::as_str) == Some("Namespaced"),
        short_names: strings(names.get("shortNames").unwrap_or(&Value::Null)),
        categories: strings(names.get("categories").unwrap_or(&Value::Null)),
        versions,
        custom: true,
    })
}

/// Built-in kinds plus the CRD-defined ones, looked up by group, version and plural.
#[derive(Debug, Clone)]
pub struct Registry {
    builtins: Vec<Arc<ResourceDef>>,
    /// CRD name -> the resource it defines.
    crds: BTreeMap<String, Arc<ResourceDef>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            builtins: builtins(),
            crds: BTreeMap::new(),
        }
    }
}

impl Registry {
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceDef>> {
        self.builtins.iter().chain(self.crds.values())
    }

    pub fn find(&self, group: &str, plural: &str) -> Option<&Arc<ResourceDef>> {
        self.all().find(|d| d.group == group && d.plural == plural)
    }

    /// The resource served at `group/version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceDef>> {
        self.find(group, plural)
            .filter(|d| d.version(version).is_some())
    }

    pub fn set_crd(&mut self, crd_name: &str, def: Option<ResourceDef>) {
        match def {
            Some(d) => self.crds.insert(crd_name.to_string(), Arc::new(d)),
            None => self.crds.remove(crd_name),
        };
    }

    /// Groups in discovery order (core first, then built-in groups, then CRD groups), each
    /// with its versions.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.all() {
            let idx = match out.iter().position(|(g, _)| *g == d.group) {
                Some(i) => i,
                None => {
                    out.push((d.group.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            for v in d.versions.iter().filter(|v| v.served) {
                if !out[idx].1.contains(&v.name) {
                    out[idx].1.push(v.name.clone());
                }
            }
        }
        out
    }
}
