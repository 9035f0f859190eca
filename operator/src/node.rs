//! What the operator needs to know about a Node: its QingCloud instance id and whether it may
//! grow its pools (schedulable and Ready).

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

/// Where the instance id is looked up, in this order:
/// 1. `spec.providerID` (`qingcloud://i-xxx`, `qingcloud:///zone/i-xxx`: the last path segment),
/// 2. the configured node annotation,
/// 3. the configured node label,
/// 4. the node name (a QingCloud VM's default hostname is its instance id).
#[derive(Debug, Clone)]
pub struct InstanceSource {
    /// Annotation key.
    pub annotation: String,
    /// Label key.
    pub label: String,
}

impl InstanceSource {
    /// The node's instance id.
    pub fn instance_of(&self, node: &Node) -> String {
        let from_provider = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(|p| p.strip_prefix("qingcloud://"))
            .and_then(|rest| rest.rsplit('/').find(|seg| !seg.is_empty()))
            .map(str::to_string);
        from_provider
            .or_else(|| node.annotations().get(&self.annotation).cloned())
            .or_else(|| node.labels().get(&self.label).cloned())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| node.name_any())
    }
}

/// Whether the node may get new NICs: not cordoned, and its Ready condition is not False or
/// Unknown (a node without conditions, as fresh test nodes have, counts as ready).
pub fn can_grow(node: &Node) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let not_ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status != "True");
    !cordoned && !not_ready
}

/// Whether `labels` match every key/value of `selector`.
pub fn selected(selector: &std::collections::BTreeMap<String, String>, node: &Node) -> bool {
    let labels = node.labels();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};

    fn src() -> InstanceSource {
        InstanceSource {
            annotation: "node.beta.kubernetes.io/instance-id".into(),
            label: "hostnic.qingcloud.com/instance-id".into(),
        }
    }

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n
    }

    #[test]
    fn provider_id_wins() {
        let mut n = node("i-name");
        n.spec = Some(NodeSpec {
            provider_id: Some("qingcloud:///pek3a/i-prov".into()),
            ..Default::default()
        });
        n.annotations_mut()
            .insert("node.beta.kubernetes.io/instance-id".into(), "i-ann".into());
        assert_eq!(src().instance_of(&n), "i-prov");
        n.spec.as_mut().unwrap().provider_id = Some("qingcloud://i-short".into());
        assert_eq!(src().instance_of(&n), "i-short");
    }

    #[test]
    fn annotation_then_label_then_name() {
        let mut n = node("i-name");
        assert_eq!(src().instance_of(&n), "i-name");
        n.labels_mut()
            .insert("hostnic.qingcloud.com/instance-id".into(), "i-label".into());
        assert_eq!(src().instance_of(&n), "i-label");
        n.annotations_mut().insert(
            "node.beta.kubernetes.io/instance-id".into(),
            " i-ann\n".into(),
        );
        assert_eq!(src().instance_of(&n), "i-ann");
        n.spec = Some(NodeSpec {
            provider_id: Some("aws:///x/i-other".into()),
            ..Default::default()
        });
        assert_eq!(
            src().instance_of(&n),
            "i-ann",
            "foreign provider ids are ignored"
        );
    }

    #[test]
    fn growth_needs_schedulable_and_ready() {
        let mut n = node("a");
        assert!(can_grow(&n));
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert!(!can_grow(&n));
        n.spec = None;
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(!can_grow(&n));
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        assert!(can_grow(&n));
    }

    #[test]
    fn selector_matches_all_labels() {
        let mut n = node("a");
        n.labels_mut().insert("pool".into(), "x".into());
        let mut sel = std::collections::BTreeMap::new();
        assert!(selected(&sel, &n));
        sel.insert("pool".into(), "x".into());
        assert!(selected(&sel, &n));
        sel.insert("zone".into(), "y".into());
        assert!(!selected(&sel, &n));
    }
}
