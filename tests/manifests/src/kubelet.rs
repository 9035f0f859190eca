//! What the scheduler and the kubelet decide about a rendered pod spec, modelled on their rules
//! (taints and tolerations, the kubelet's "network not ready" admission, DNS policies, host
//! ports, mount propagation), so the manifests' tests check behaviour instead of fields.

use serde_json::Value;

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: &'static str,
    /// Value ("" for none).
    pub value: &'static str,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: &'static str,
}

impl Taint {
    /// A taint with no value.
    pub const fn new(key: &'static str, effect: &'static str) -> Self {
        Self {
            key,
            value: "",
            effect,
        }
    }
}

/// The taints of a node that joined a cluster with no pod network yet: the kubelet reports
/// NetworkReady=false, the node lifecycle controller taints it not-ready (both effects), cloud
/// providers mark the network unavailable, and kubelets may register with hostnic's startup
/// taint (`--register-with-taints`).
pub fn taints_before_pod_network() -> Vec<Taint> {
    vec![
        Taint::new("node.kubernetes.io/not-ready", "NoSchedule"),
        Taint::new("node.kubernetes.io/not-ready", "NoExecute"),
        Taint::new("node.kubernetes.io/network-unavailable", "NoSchedule"),
        Taint::new("hostnic.qingcloud.com/not-ready", "NoSchedule"),
    ]
}

/// Taints of nodes reserved for cluster services: control-plane nodes and nodes only critical
/// add-ons may use.
pub fn taints_of_reserved_nodes() -> Vec<Taint> {
    vec![
        Taint::new("node-role.kubernetes.io/control-plane", "NoSchedule"),
        Taint {
            key: "CriticalAddonsOnly",
            value: "true",
            effect: "NoSchedule",
        },
    ]
}

/// Whether `toleration` (a pod spec toleration) tolerates `taint`, as the scheduler's
/// `ToleratesTaint`: an empty effect matches every effect, an empty key with `Exists` every key.
pub fn tolerates(toleration: &Value, taint: &Taint) -> bool {
    let s = |f: &str| toleration[f].as_str().unwrap_or("");
    if !s("effect").is_empty() && s("effect") != taint.effect {
        return false;
    }
    if !s("key").is_empty() && s("key") != taint.key {
        return false;
    }
    match s("operator") {
        "Exists" => true,
        "" | "Equal" => s("value") == taint.value,
        _ => false,
    }
}

/// Why the pod cannot be placed on, or is evicted from, a node with `taints`; `None` if it stays.
/// NoExecute tolerations with `tolerationSeconds` only delay the eviction.
pub fn untolerated(spec: &Value, taints: &[Taint]) -> Option<String> {
    let tolerations: Vec<&Value> = spec["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for taint in taints.iter().filter(|t| t.effect != "PreferNoSchedule") {
        let matching: Vec<&&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(format!("does not tolerate {taint:?}"));
        }
        if taint.effect == "NoExecute" && matching.iter().all(|t| t["tolerationSeconds"].is_u64()) {
            return Some(format!("is evicted after tolerationSeconds by {taint:?}"));
        }
    }
    None
}

/// Whether the pod resolves names without cluster DNS (CoreDNS runs in the pod network): the
/// kubelet gives `Default` the node's resolv.conf, and `ClusterFirst` falls back to it for
/// host-network pods; `ClusterFirstWithHostNet` points at the cluster DNS Service.
pub fn dns_without_cluster_dns(spec: &Value) -> bool {
    let host_network = spec["hostNetwork"] == true;
    match spec["dnsPolicy"].as_str().unwrap_or("ClusterFirst") {
        "Default" => true,
        "ClusterFirst" => host_network,
        _ => false,
    }
}

/// Why the pod cannot be scheduled onto a node that has no pod network yet and start there;
/// `None` if it can. The kubelet refuses every pod outside the host network while the runtime
/// reports NetworkReady=false, and without a pod network there is no cluster DNS.
pub fn cannot_start_before_pod_network(spec: &Value) -> Option<String> {
    if spec["hostNetwork"] != true {
        return Some("needs the pod network (no hostNetwork: true)".into());
    }
    if !dns_without_cluster_dns(spec) {
        return Some(format!("dnsPolicy {} needs cluster DNS", spec["dnsPolicy"]));
    }
    untolerated(spec, &taints_before_pod_network())
}

/// The ports the pod binds on its node: every container port of a host-network pod, and the
/// `hostPort`s of any other.
pub fn node_ports(spec: &Value) -> Vec<u64> {
    let host_network = spec["hostNetwork"] == true;
    let mut ports: Vec<u64> = containers(spec)
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| {
            if host_network {
                p["containerPort"].as_u64()
            } else {
                p["hostPort"].as_u64()
            }
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Every container and init container of a pod spec.
pub fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    let init = spec["initContainers"].as_array().into_iter().flatten();
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(init)
}

/// Whether two pods of this template can never run on one node: a required pod anti-affinity
/// term on the node's hostname whose selector matches the template's own labels.
pub fn one_per_node(template: &Value) -> bool {
    let labels = &template["metadata"]["labels"];
    template["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|term| term["topologyKey"] == "kubernetes.io/hostname")
        .any(|term| {
            let selector = &term["labelSelector"];
            let match_labels = selector["matchLabels"].as_object();
            selector["matchExpressions"].is_null()
                && match_labels.is_some_and(|m| {
                    !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v)
                })
        })
}

/// Whether a process in the container that opens `host_path` sees the host's file there, also
/// when the host mounts it after the container started: a mount of a hostPath volume at its own path covering `host_path`, with
/// HostToContainer propagation (so mounts the host makes later show up). `/var/run` is a
/// symlink to `/run` on the host and in the image, and propagation needs the real mount, so
/// both the path and the volume are compared in their `/run` form and the volume must name it.
pub fn sees_later_host_mount(spec: &Value, container: &Value, host_path: &str) -> bool {
    let canonical = |p: &str| match p.strip_prefix("/var/run/") {
        Some(rest) => format!("/run/{rest}"),
        None => p.to_owned(),
    };
    let path = canonical(host_path);
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["mountPropagation"] == "HostToContainer")
        .any(|m| {
            let mount_path = m["mountPath"].as_str().unwrap_or_default();
            let source = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == m["name"])
                .and_then(|v| v["hostPath"]["path"].as_str());
            let covers = path == mount_path || path.starts_with(&format!("{mount_path}/"));
            covers && source == Some(mount_path) && canonical(mount_path) == mount_path
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn toleration_matching_follows_the_scheduler() {
        let t = Taint::new("node.kubernetes.io/not-ready", "NoExecute");
        assert!(tolerates(&json!({"operator": "Exists"}), &t));
        assert!(tolerates(
            &json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}),
            &t
        ));
        assert!(!tolerates(
            &json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}),
            &t
        ));
        assert!(!tolerates(
            &json!({"key": "other", "operator": "Exists"}),
            &t
        ));
        let valued = Taint {
            key: "CriticalAddonsOnly",
            value: "true",
            effect: "NoSchedule",
        };
        assert!(tolerates(
            &json!({"key": "CriticalAddonsOnly", "value": "true"}),
            &valued
        ));
        assert!(!tolerates(&json!({"key": "CriticalAddonsOnly"}), &valued));
        let timed = json!({"tolerations": [{"operator": "Exists", "tolerationSeconds": 300}]});
        assert!(untolerated(&timed, &[t]).is_some());
    }

    #[test]
    fn propagation_needs_the_real_mount_at_its_own_path() {
        let spec = |mount: &str, host: &str| {
            json!({"volumes": [{"name": "n", "hostPath": {"path": host}}],
                   "containers": [{"volumeMounts": [
                       {"name": "n", "mountPath": mount, "mountPropagation": "HostToContainer"}]}]})
        };
        let ok = spec("/run/netns", "/run/netns");
        assert!(sees_later_host_mount(
            &ok,
            &ok["containers"][0],
            "/var/run/netns/cni-1"
        ));
        let symlinked = spec("/var/run/netns", "/var/run/netns");
        assert!(!sees_later_host_mount(
            &symlinked,
            &symlinked["containers"][0],
            "/var/run/netns/x"
        ));
        let elsewhere = spec("/host/netns", "/run/netns");
        assert!(!sees_later_host_mount(
            &elsewhere,
            &elsewhere["containers"][0],
            "/run/netns/x"
        ));
    }
}
