//! `why POD`: the chain pod -> node and agent -> pool -> HostNic -> cloud NIC, and the one
//! thing that keeps the pod from its NIC. A pure function over fetched objects.

use std::sync::Arc;

use hostnic_crds::{HostNic, HostNicPhase, NicPool, NicRole};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::fill::{Fill, waiting_since};

/// Label of the agent DaemonSet's pods (`manifests/agent.yaml`).
pub const AGENT_LABEL: (&str, &str) = ("app.kubernetes.io/name", "hostnic-agent");

/// What the diagnosis looks at.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    /// The pod's node, if it is scheduled and the node exists.
    pub node: Option<&'a Node>,
    pub pools: &'a [Arc<NicPool>],
    pub nics: &'a [Arc<HostNic>],
    /// The agent's pods (any node).
    pub agents: &'a [Pod],
}

/// What keeps a pod from its NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The pod has no node yet: its ADD has not started.
    NotScheduled,
    /// The pod's node object is gone.
    NodeGone { node: String },
    /// No pool serves the pod on its node (the agent's or our reason).
    NoPool { node: String, reason: String },
    /// The node's agent is missing or not Ready, so no ADD can claim a NIC.
    AgentNotReady { node: String, detail: String },
    /// The pool's operator reports it cannot converge.
    PoolDegraded {
        pool: String,
        reason: String,
        message: String,
    },
    /// A NIC of the pool on the node is stuck: Failed, or its last cloud call failed.
    NicStuck {
        nic: String,
        phase: HostNicPhase,
        error: String,
    },
    /// The pool has no free NIC on the node.
    NoFreeNic {
        pool: String,
        node: String,
        fill: Fill,
        /// When the pod's ADD (or another) began waiting, per the agent's annotation.
        waiting_since: Option<String>,
    },
    /// Free NICs are there but none is the pod's: its ADD has not come (or failed elsewhere).
    Unclaimed {
        pool: String,
        node: String,
        available: u32,
    },
}

/// The diagnosis' conclusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The pod holds a Bound NIC; `running` tells whether the pod also runs (if not, what
    /// holds it is not hostnic's doing).
    Fine {
        nic: String,
        running: bool,
    },
    /// The pod runs in the node's network namespace: it gets no NIC, none is missing.
    HostNetwork,
    Blocked(Blocker),
}

/// The walk's lines and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub chain: Vec<String>,
    pub verdict: Verdict,
}

impl Diagnosis {
    /// Printed form: the chain, then the verdict line.
    pub fn render(&self) -> String {
        let mut out: String = self.chain.iter().map(|l| format!("{l}\n")).collect();
        out.push_str(&self.verdict.line());
        out.push('\n');
        out
    }
}

impl Verdict {
    pub fn is_blocked(&self) -> bool {
        matches!(self, Verdict::Blocked(_))
    }

    /// The one line saying what blocks the pod, or that it is fine.
    pub fn line(&self) -> String {
        match self {
            Verdict::Fine { nic, running: true } => {
                format!("ok: pod Running with HostNic {nic} Bound")
            }
            Verdict::Fine {
                nic,
                running: false,
            } => format!(
                "ok: HostNic {nic} is Bound to the pod; it is not Running for a reason outside hostnic (kubectl describe pod)"
            ),
            Verdict::HostNetwork => {
                "ok: the pod uses the host network; hostnic gives it no NIC".into()
            }
            Verdict::Blocked(b) => format!("blocked: {}", b.line()),
        }
    }
}

impl Blocker {
    fn line(&self) -> String {
        match self {
            Blocker::NotScheduled => "the pod is not scheduled to a node yet".into(),
            Blocker::NodeGone { node } => format!("node {node} does not exist"),
            Blocker::NoPool { node, reason } => format!("no pool selects node {node}: {reason}"),
            Blocker::AgentNotReady { node, detail } => {
                format!("the hostnic agent is not ready on node {node}: {detail}")
            }
            Blocker::PoolDegraded {
                pool,
                reason,
                message,
            } => format!("pool {pool} is Degraded ({reason}): {message}"),
            Blocker::NicStuck { nic, phase, error } => {
                format!("HostNic {nic} is stuck in {phase:?}: {error}")
            }
            Blocker::NoFreeNic {
                pool,
                node,
                fill,
                waiting_since,
            } => {
                let waits = match waiting_since {
                    Some(t) => format!("an ADD on the node waits for one since {t}"),
                    None => "no ADD waits (the pod's ADD gave up or has not come)".into(),
                };
                format!(
                    "no free NIC of pool {pool} on node {node} (available {}, bound {}, in progress {}, failed {}); {waits}",
                    fill.available, fill.bound, fill.in_progress, fill.failed
                )
            }
            Blocker::Unclaimed {
                pool,
                node,
                available,
            } => format!(
                "{available} free NIC(s) of pool {pool} on node {node}, none claimed by the pod: its ADD has not reached the agent (kubectl describe pod, agent logs)"
            ),
        }
    }
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn pool_conditions(pool: &NicPool) -> &[Condition] {
    pool.status
        .as_ref()
        .map_or(&[], |s| s.conditions.as_slice())
}

fn nic_conditions(nic: &HostNic) -> &[Condition] {
    nic.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
}

fn phase(nic: &HostNic) -> HostNicPhase {
    nic.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Whether `nic` is Bound to `pod` (same namespace and name, and uid when both know it: a
/// pod recreated under the same name is another pod).
fn bound_to(nic: &HostNic, pod: &Pod) -> bool {
    let Some(held) = nic.status.as_ref().and_then(|s| s.pod.as_ref()) else {
        return false;
    };
    let uid_ok = match (&held.uid, &pod.metadata.uid) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    phase(nic) == HostNicPhase::Bound
        && uid_ok
        && Some(held.namespace.as_str()) == pod.metadata.namespace.as_deref()
        && Some(held.name.as_str()) == pod.metadata.name.as_deref()
}

fn selects(pool: &NicPool, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    pool.spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// One line about a HostNic and one about its cloud NIC.
fn nic_lines(nic: &HostNic) -> [String; 2] {
    let s = nic.status.clone().unwrap_or_default();
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let hostnic = format!(
        "hostnic {}  phase {:?}  role {:?}  ip {}",
        nic.name_any(),
        s.phase,
        nic.spec.role,
        or_dash(s.private_ip)
    );
    let job = s
        .last_job
        .as_ref()
        .map(|j| format!("{} {} {}", j.id, j.action, j.status));
    let mut cloud = format!(
        "cloud   nic {}  instance {}  last job {}",
        or_dash(s.nic_id),
        or_dash(s.instance),
        or_dash(job)
    );
    if let Some(e) = cloud_error(nic) {
        cloud.push_str(&format!("  CloudError {e}"));
    }
    [hostnic, cloud]
}

/// The NIC's last cloud error (the CloudError condition while True), as `reason: message`.
fn cloud_error(nic: &HostNic) -> Option<String> {
    condition(nic_conditions(nic), "CloudError")
        .filter(|c| c.status == "True")
        .map(|c| format!("{}: {}", c.reason, c.message))
}

/// The agent pod on `node` and whether it is Ready, or why not.
fn agent_state(agents: &[Pod], node: &str) -> Result<String, String> {
    let on_node: Vec<&Pod> = agents
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .collect();
    let Some(agent) = on_node.first() else {
        return Err(format!(
            "no pod labelled {}={} on the node",
            AGENT_LABEL.0, AGENT_LABEL.1
        ));
    };
    let status = agent.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready");
    match ready {
        Some(c) if c.status == "True" => Ok(format!("agent {} Ready", agent.name_any())),
        Some(c) => Err(format!(
            "pod {} Ready={} {}",
            agent.name_any(),
            c.status,
            [c.reason, c.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")
        )
        .trim_end()
        .to_string()),
        None => Err(format!(
            "pod {} is {} and reports no Ready condition",
            agent.name_any(),
            status.phase.unwrap_or_else(|| "Unknown".into())
        )),
    }
}

/// Walks from the pod to what blocks it.
pub fn diagnose(input: &Inputs<'_>) -> Diagnosis {
    let mut chain = Vec::new();
    let verdict = walk(input, &mut chain);
    Diagnosis { chain, verdict }
}

fn walk(input: &Inputs<'_>, chain: &mut Vec<String>) -> Verdict {
    let pod = input.pod;
    let pod_phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    chain.push(format!(
        "pod     {}/{}  phase {pod_phase}  node {}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        node_name.as_deref().unwrap_or("-")
    ));
    if let Some(nic) = input.nics.iter().find(|n| bound_to(n, pod)) {
        chain.extend(nic_lines(nic));
        return Verdict::Fine {
            nic: nic.name_any(),
            running: pod_phase == "Running",
        };
    }
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Verdict::HostNetwork;
    }
    let Some(node_name) = node_name else {
        return Verdict::Blocked(Blocker::NotScheduled);
    };
    let Some(node) = input.node else {
        return Verdict::Blocked(Blocker::NodeGone { node: node_name });
    };
    let blocked = Verdict::Blocked;
    let agent = agent_state(input.agents, &node_name);
    chain.push(format!(
        "node    {node_name}  {}",
        agent.as_deref().unwrap_or_else(|e| e)
    ));

    let on_node: Vec<Arc<HostNic>> = input
        .nics
        .iter()
        .filter(|n| n.spec.node == node_name)
        .cloned()
        .collect();
    let annotation = pod
        .annotations()
        .get(hostnic_crds::POD_POOL_ANNOTATION)
        .map(String::as_str);
    // The CNI config's `pool` is on the node, out of sight: only the annotation and the
    // default are considered, as for a conflist without one.
    let chosen = hostnic_agent::decide::choose_pool(annotation, None, input.pools, &on_node);
    let pool = match chosen {
        Ok(name) => input.pools.iter().find(|p| p.name_any() == name),
        Err(reason) => {
            return blocked(Blocker::NoPool {
                node: node_name,
                reason,
            });
        }
    };
    let Some(pool) = pool.filter(|p| selects(p, node)) else {
        let reason = match pool {
            Some(p) => format!(
                "the pod's pool {} has nodeSelector {:?}, which the node's labels do not match",
                p.name_any(),
                p.spec.node_selector
            ),
            None => "the chosen pool does not exist".into(),
        };
        return blocked(Blocker::NoPool {
            node: node_name,
            reason,
        });
    };
    let conds = pool_conditions(pool);
    let cond_state = |t: &str| condition(conds, t).map_or("-".to_string(), |c| c.status.clone());
    chain.push(format!(
        "pool    {}  selects the node  size {}  Ready {}  Degraded {}",
        pool.name_any(),
        pool.spec.size,
        cond_state("Ready"),
        cond_state("Degraded")
    ));
    if let Err(detail) = agent {
        return blocked(Blocker::AgentNotReady {
            node: node_name,
            detail,
        });
    }
    let pool_name = pool.name_any();
    let fill = Fill::of(on_node.iter().map(AsRef::as_ref), &pool_name, &node_name);
    if fill.available > 0 {
        return blocked(Blocker::Unclaimed {
            pool: pool_name,
            node: node_name,
            available: fill.available,
        });
    }
    if let Some(c) = condition(conds, "Degraded").filter(|c| c.status == "True") {
        return blocked(Blocker::PoolDegraded {
            pool: pool_name,
            reason: c.reason.clone(),
            message: c.message.clone(),
        });
    }
    let stuck = on_node.iter().find(|n| {
        n.spec.role == NicRole::Pod
            && n.spec.pool == pool_name
            && phase(n) != HostNicPhase::Bound
            && (phase(n) == HostNicPhase::Failed || cloud_error(n).is_some())
    });
    if let Some(nic) = stuck {
        chain.extend(nic_lines(nic));
        let error = cloud_error(nic).unwrap_or_else(|| "no cloud error recorded".into());
        return blocked(Blocker::NicStuck {
            nic: nic.name_any(),
            phase: phase(nic),
            error,
        });
    }
    blocked(Blocker::NoFreeNic {
        waiting_since: waiting_since(pool, &node_name).map(str::to_string),
        pool: pool_name,
        node: node_name,
        fill,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use HostNicPhase::*;

    fn diagnosis(w: &World) -> Diagnosis {
        let (pools, nics) = w.arcs();
        diagnose(&Inputs {
            pod: &w.pod,
            node: w.node.as_ref(),
            pools: &pools,
            nics: &nics,
            agents: &w.agents,
        })
    }

    impl World {
        fn diagnose(&self) -> Diagnosis {
            diagnosis(self)
        }

        fn blocker(&self) -> Blocker {
            match self.diagnose().verdict {
                Verdict::Blocked(b) => b,
                fine => panic!("expected a blocker, got {fine:?}"),
            }
        }
    }

    #[test]
    fn running_pod_with_its_bound_nic_is_fine() {
        let mut w = World::standard();
        w.pod = pod("ns", "p", Some("n1"), "Running");
        w.pod.metadata.uid = Some("u-1".into());
        w.add(bound(
            nic("default-n1-a", "default", "n1", Bound, 1),
            &w.pod,
        ));
        let d = w.diagnose();
        assert_eq!(
            d.verdict,
            Verdict::Fine {
                nic: "default-n1-a".into(),
                running: true
            }
        );
        assert!(!d.verdict.is_blocked());
        let text = d.render();
        assert!(text.contains("52:54:00:00:00:01"), "{text}");
        assert!(
            text.ends_with("ok: pod Running with HostNic default-n1-a Bound\n"),
            "{text}"
        );
    }

    #[test]
    fn a_claim_of_an_earlier_pod_of_the_same_name_is_not_this_pods() {
        let mut w = World::standard();
        let mut earlier = w.pod.clone();
        earlier.metadata.uid = Some("u-old".into());
        w.pod.metadata.uid = Some("u-new".into());
        w.add(bound(
            nic("default-n1-a", "default", "n1", Bound, 1),
            &earlier,
        ));
        assert!(matches!(w.blocker(), Blocker::NoFreeNic { .. }));
    }

    #[test]
    fn host_network_pods_need_no_nic() {
        let mut w = World::standard();
        w.pools.clear();
        if let Some(spec) = w.pod.spec.as_mut() {
            spec.host_network = Some(true);
        }
        assert_eq!(w.diagnose().verdict, Verdict::HostNetwork);
    }

    #[test]
    fn unscheduled_pod() {
        let mut w = World::standard();
        w.pod = pod("ns", "p", None, "Pending");
        assert_eq!(w.blocker(), Blocker::NotScheduled);
    }

    #[test]
    fn no_pool_selects_the_node() {
        let mut w = World::standard();
        w.node = Some(node("n1", &[]));
        let Blocker::NoPool { node, reason } = w.blocker() else {
            panic!("{:?}", w.blocker())
        };
        assert_eq!(node, "n1");
        assert!(reason.contains("nodeSelector"), "{reason}");
        w.pools.clear();
        assert!(matches!(w.blocker(), Blocker::NoPool { .. }));
        assert!(
            w.diagnose()
                .verdict
                .line()
                .starts_with("blocked: no pool selects node n1")
        );
    }

    #[test]
    fn agent_missing_or_not_ready() {
        let mut w = World::standard();
        w.agents = vec![agent("n1", false), agent("n2", true)];
        let Blocker::AgentNotReady { detail, .. } = w.blocker() else {
            panic!("{:?}", w.blocker())
        };
        assert!(detail.contains("ContainersNotReady"), "{detail}");
        w.agents.remove(0);
        let Blocker::AgentNotReady { detail, .. } = w.blocker() else {
            panic!("{:?}", w.blocker())
        };
        assert!(detail.contains("no pod labelled"), "{detail}");
    }

    #[test]
    fn degraded_pool_with_its_reason() {
        let mut w = World::standard();
        w.pools = vec![degraded(
            pool("default", &[("hostnic", "on")], 2),
            "QuotaExceeded",
            "NIC quota of the account is used up",
        )];
        assert_eq!(
            w.blocker(),
            Blocker::PoolDegraded {
                pool: "default".into(),
                reason: "QuotaExceeded".into(),
                message: "NIC quota of the account is used up".into()
            }
        );
    }

    #[test]
    fn nic_stuck_with_its_cloud_error() {
        let mut w = World::standard();
        w.add(cloud_failed(
            nic("default-n1-a", "default", "n1", Attaching, 1),
            "2100",
            "instance i-n1 busy",
        ));
        let d = w.diagnose();
        assert!(
            d.render().contains("last job j-attach01 AttachNics failed"),
            "{}",
            d.render()
        );
        assert_eq!(
            d.verdict,
            Verdict::Blocked(Blocker::NicStuck {
                nic: "default-n1-a".into(),
                phase: Attaching,
                error: "2100: instance i-n1 busy".into()
            })
        );
    }

    #[test]
    fn no_free_nic_with_counts_and_the_waiting_add() {
        let mut w = World::standard();
        let other = pod("ns", "q", Some("n1"), "Running");
        w.add(bound(nic("a", "default", "n1", Bound, 1), &other));
        w.add(nic("b", "default", "n1", Creating, 2));
        w.add(nic("c", "default", "n2", Available, 3));
        let Blocker::NoFreeNic {
            fill,
            waiting_since,
            ..
        } = w.blocker()
        else {
            panic!("{:?}", w.blocker())
        };
        assert_eq!(
            fill,
            Fill {
                available: 0,
                bound: 1,
                in_progress: 1,
                failed: 0
            }
        );
        assert_eq!(waiting_since, None);
        let since = "2026-12-02T05:00:00Z";
        w.pools = vec![waiting(
            pool("default", &[("hostnic", "on")], 2),
            "n1",
            since,
        )];
        let line = w.diagnose().verdict.line();
        assert!(
            line.contains("available 0, bound 1, in progress 1, failed 0"),
            "{line}"
        );
        assert!(
            line.contains(&format!("waits for one since {since}")),
            "{line}"
        );
    }

    #[test]
    fn free_nic_not_claimed() {
        let mut w = World::standard();
        w.add(nic("a", "default", "n1", Available, 1));
        assert_eq!(
            w.blocker(),
            Blocker::Unclaimed {
                pool: "default".into(),
                node: "n1".into(),
                available: 1
            }
        );
    }
}
