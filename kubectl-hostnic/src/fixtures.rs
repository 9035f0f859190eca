//! Builders of the objects a diagnosis reads, shared by the unit tests and (through `#[path]`)
//! the tests that create them in kube-mem.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::sync::Arc;

use hostnic_crds::{
    CloudJob, HostNic, HostNicPhase, HostNicSpec, HostNicStatus, NicPool, NicPoolSpec,
    NicPoolStatus, NicRole, PodRef,
};
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

pub const AGENT_NS: &str = "hostnic-system";
pub const VXNET: &str = "vxnet-abc1234";

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        ..Default::default()
    }
}

/// A pod in `phase` on `node` (None: not scheduled).
pub fn pod(namespace: &str, name: &str, node: Option<&str>, phase: &str) -> Pod {
    Pod {
        metadata: meta(Some(namespace), name),
        spec: Some(PodSpec {
            node_name: node.map(Into::into),
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    }
}

/// The agent's pod on `node`, Ready or not.
pub fn agent(node: &str, ready: bool) -> Pod {
    let mut p = pod(
        AGENT_NS,
        &format!("hostnic-agent-{node}"),
        Some(node),
        "Running",
    );
    p.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/name".into(),
        "hostnic-agent".into(),
    )]));
    let status = p.status.get_or_insert_with(Default::default);
    status.conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: (!ready).then(|| "ContainersNotReady".into()),
        message: (!ready).then(|| "containers with unready status: [agent]".into()),
        ..Default::default()
    }]);
    p
}

pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = Node {
        metadata: meta(None, name),
        ..Default::default()
    };
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    n
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

/// A pool marked default, selecting nodes with `selector`.
pub fn pool(name: &str, selector: &[(&str, &str)], size: u32) -> NicPool {
    let mut p = NicPool::new(
        name,
        NicPoolSpec {
            vxnets: vec![VXNET.into()],
            node_selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            size,
            max_per_node: 63,
            routes: Vec::new(),
            reclaim_policy: Default::default(),
            quarantine_seconds: 120,
        },
    );
    p.metadata.annotations = Some(BTreeMap::from([(
        hostnic_crds::DEFAULT_POOL_ANNOTATION.into(),
        "true".into(),
    )]));
    p.status = Some(NicPoolStatus {
        conditions: vec![condition("Ready", "False", "Filling", "NICs on their way")],
        ..Default::default()
    });
    p
}

/// `pool` with a Degraded condition.
pub fn degraded(mut p: NicPool, reason: &str, message: &str) -> NicPool {
    let status = p.status.get_or_insert_with(Default::default);
    status
        .conditions
        .push(condition("Degraded", "True", reason, message));
    p
}

/// `pool` with the agent's waiting annotation for `node`.
pub fn waiting(mut p: NicPool, node: &str, since: &str) -> NicPool {
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(hostnic_crds::waiting_annotation(node), since.into());
    p
}

/// A pod NIC of `pool` on `node` in `phase`; from Attaching on it has a cloud id, from
/// Available on its link is on the node.
pub fn nic(name: &str, pool: &str, node: &str, phase: HostNicPhase, n: u8) -> HostNic {
    let mut h = HostNic::new(
        name,
        HostNicSpec {
            pool: pool.into(),
            node: node.into(),
            vxnet: VXNET.into(),
            role: NicRole::Pod,
        },
    );
    let has_id = !matches!(phase, HostNicPhase::Pending | HostNicPhase::Creating);
    let on_node = matches!(phase, HostNicPhase::Available | HostNicPhase::Bound);
    h.status = Some(HostNicStatus {
        phase,
        nic_id: has_id.then(|| format!("52:54:00:00:00:{n:02x}")),
        private_ip: has_id.then(|| format!("10.10.0.{n}")),
        host_interface: on_node.then(|| format!("eth{n}")),
        ..Default::default()
    });
    h
}

/// `nic` Bound to `pod`.
pub fn bound(mut h: HostNic, pod: &Pod) -> HostNic {
    let status = h.status.get_or_insert_with(Default::default);
    status.phase = HostNicPhase::Bound;
    status.pod = Some(PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone(),
        container_id: "c1".into(),
        netns: "/var/run/netns/x".into(),
        interface: "eth0".into(),
        network: Some("hostnic".into()),
    });
    h
}

/// `nic` whose last cloud call failed, after a failed attach job.
pub fn cloud_failed(mut h: HostNic, reason: &str, message: &str) -> HostNic {
    let status = h.status.get_or_insert_with(Default::default);
    status.last_job = Some(CloudJob {
        id: "j-attach01".into(),
        action: "AttachNics".into(),
        status: "failed".into(),
    });
    status
        .conditions
        .push(condition("CloudError", "True", reason, message));
    h
}

/// The objects of one scenario.
#[derive(Debug, Clone)]
pub struct World {
    pub pod: Pod,
    pub node: Option<Node>,
    pub pools: Vec<NicPool>,
    pub nics: Vec<HostNic>,
    pub agents: Vec<Pod>,
}

impl World {
    /// Pod ns/p (Pending) on node n1 (labelled hostnic=on), a Ready agent there, and the
    /// default pool `default` of size 2 selecting the node.
    pub fn standard() -> World {
        World {
            pod: pod("ns", "p", Some("n1"), "Pending"),
            node: Some(node("n1", &[("hostnic", "on")])),
            pools: vec![pool("default", &[("hostnic", "on")], 2)],
            nics: Vec::new(),
            agents: vec![agent("n1", true)],
        }
    }

    pub fn add(&mut self, nic: HostNic) {
        self.nics.push(nic);
    }

    /// The pools and NICs as the commands hold them.
    pub fn arcs(&self) -> (Vec<Arc<NicPool>>, Vec<Arc<HostNic>>) {
        (
            self.pools.iter().cloned().map(Arc::new).collect(),
            self.nics.iter().cloned().map(Arc::new).collect(),
        )
    }
}
