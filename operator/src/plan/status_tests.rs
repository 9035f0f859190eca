use super::*;
use hostnic_crds::{HostNicPhase, NicRole};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn spec(size: u32) -> NicPoolSpec {
    super::super::fixtures::pool_spec(&["vxnet-a"], size)
}

fn node(name: &str) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        selected: true,
        can_grow: true,
    }
}

fn nic(node: &str, name: &str, phase: HostNicPhase) -> (String, NicView) {
    (
        node.into(),
        NicView {
            name: name.into(),
            phase,
            role: NicRole::Pod,
            vxnet: "vxnet-a".into(),
            nic_id: None,
            ip: None,
            deleting: false,
            refused: false,
            link_home: true,
        },
    )
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn gateway() -> NodeGateway {
    NodeGateway {
        vxnet: "vxnet-a".into(),
        ip: "10.0.0.2".into(),
        nic_id: "52:54:00:00:00:01".into(),
        hostnic: None,
    }
}

#[test]
fn counts_per_node_and_totals() {
    use HostNicPhase::*;
    let mut deleting = nic("a", "a4", Available);
    deleting.1.deleting = true;
    let mut gw = nic("a", "a5", Available);
    gw.1.role = NicRole::Gateway;
    let nics = vec![
        nic("a", "a1", Available),
        nic("a", "a2", Bound),
        nic("a", "a3", Failed),
        deleting,
        gw,
        nic("b", "b1", Available),
        nic("b", "b2", Creating),
        // A node the selector no longer matches: counted in the totals, not in nodes.
        nic("gone", "g1", Bound),
    ];
    let f = fresh(&spec(1), &[node("a"), node("b")], &nics);
    assert_eq!(
        f.totals,
        Totals {
            nodes: 2,
            warm_per_node: 1,
            available: 2,
            bound: 2,
            in_progress: 2,
            failed: 1,
        }
    );
    let (selected, a) = &f.nodes[0];
    assert!(selected);
    assert_eq!(
        (
            a.node.as_str(),
            a.available,
            a.bound,
            a.in_progress,
            a.failed
        ),
        ("a", 1, 1, 1, 1),
        "gateway NICs are not pod supply"
    );
    let names: Vec<(bool, &str)> = f.nodes.iter().map(|(s, n)| (*s, n.node.as_str())).collect();
    assert_eq!(names, vec![(true, "a"), (true, "b"), (false, "gone")]);
    assert!(f.ready.status);
}

#[test]
fn ready_only_when_every_schedulable_node_is_full() {
    use HostNicPhase::*;
    let s = spec(2);
    let full = vec![nic("a", "a1", Available), nic("a", "a2", Available)];
    let f = fresh(&s, &[node("a")], &full);
    assert_eq!(
        f.ready,
        Cond::new("Ready", true, "Warm", "every node has 2 free NICs")
    );
    // One claim: the node is short, so the pool is not Ready.
    let claimed = vec![nic("a", "a1", Available), nic("a", "a2", Bound)];
    let f = fresh(&s, &[node("a")], &claimed);
    assert_eq!((f.ready.status, f.ready.reason), (false, "Filling"));
    assert_eq!(f.totals.warm_per_node, 1);
    // A selected node without any NIC is short too.
    let f = fresh(&s, &[node("a"), node("b")], &full);
    assert!(!f.ready.status);
    assert_eq!(f.totals.warm_per_node, 0);
    // A cordoned node short of NICs is not grown on purpose: it does not hold Ready back.
    let cordoned = NodeFacts {
        can_grow: false,
        ..node("b")
    };
    assert!(fresh(&s, &[node("a"), cordoned], &full).ready.status);
    // Nodes the selector does not match do not count.
    let other = NodeFacts {
        selected: false,
        ..node("b")
    };
    let f = fresh(&s, &[node("a"), other], &full);
    assert!(f.ready.status);
    assert_eq!(f.totals.nodes, 1);
    // No selected node: vacuously warm, as the reconcile's rule.
    assert!(fresh(&s, &[], &[]).ready.status);
}

#[test]
fn compose_keeps_what_the_reconcile_owns() {
    use HostNicPhase::*;
    let s = spec(1);
    let published = NicPoolStatus {
        observed_generation: Some(3),
        node_status: vec![NodePoolStatus {
            node: "a".into(),
            instance: Some("i-a".into()),
            available: 5,
            gateways: vec![gateway()],
            ..Default::default()
        }],
        conditions: conditions::set(
            &conditions::set(
                &[],
                &Cond::new("Degraded", true, "VxnetExhausted", "x"),
                Some(3),
                t(100),
            ),
            &Cond::new("Ready", false, "Filling", "y"),
            Some(3),
            t(100),
        ),
        ..Default::default()
    };
    let f = fresh(&s, &[node("a")], &[nic("a", "a1", Available)]);
    // No reconcile yet in this term: instance, gateways and Degraded stay as published.
    let c = compose(&published, Some(4), &f, None, t(200));
    assert_eq!(c.observed_generation, Some(3));
    assert_eq!(c.node_status[0].instance.as_deref(), Some("i-a"));
    assert_eq!(c.node_status[0].gateways, vec![gateway()]);
    assert_eq!(c.node_status[0].available, 1);
    assert_eq!(c.available, 1);
    assert!(conditions::is_true(&c.conditions, "Degraded"));
    let ready: &Condition = c.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(ready.last_transition_time.0, t(200));
    assert_eq!(ready.observed_generation, Some(4));
    // The same counts again change nothing (no write).
    assert_eq!(compose(&c, Some(4), &f, None, t(300)), c);

    // A reconcile's facts replace the published ones; its Ready is ignored.
    let owned = Owned::new(
        Some(4),
        false,
        vec![
            Cond::new("Ready", false, "Filling", "stale"),
            Cond::new("Degraded", false, "AsExpected", ""),
        ],
        [("a".to_string(), (Some("i-a2".to_string()), vec![]))].into(),
    );
    assert!(owned.conds.iter().all(|c| c.type_ != "Ready"));
    // A node newly selected, which that reconcile did not see: its published part stays.
    let mut before = c.clone();
    before.node_status.push(NodePoolStatus {
        node: "b".into(),
        instance: Some("i-b".into()),
        gateways: vec![gateway()],
        ..Default::default()
    });
    let two = fresh(&s, &[node("a"), node("b")], &[nic("a", "a1", Available)]);
    let kept = compose(&before, Some(4), &two, Some(&owned), t(300));
    assert_eq!(kept.node_status[1].gateways, vec![gateway()]);
    assert_eq!(kept.node_status[1].instance.as_deref(), Some("i-b"));
    let c = compose(&c, Some(4), &f, Some(&owned), t(300));
    assert_eq!(c.observed_generation, Some(4));
    assert_eq!(c.node_status[0].instance.as_deref(), Some("i-a2"));
    assert!(c.node_status[0].gateways.is_empty());
    assert!(!conditions::is_true(&c.conditions, "Degraded"));
    assert!(conditions::is_true(&c.conditions, "Ready"));
}

#[test]
fn an_invalid_spec_publishes_no_counts() {
    let s = spec(1);
    let f = fresh(&s, &[node("a")], &[nic("a", "a1", HostNicPhase::Available)]);
    let conds = vec![
        Cond::new("Ready", false, "InvalidSpec", "bad"),
        Cond::new("Degraded", true, "InvalidSpec", "bad"),
    ];
    let owned = Owned::new(Some(2), true, conds, BTreeMap::new());
    let c = compose(&NicPoolStatus::default(), Some(2), &f, Some(&owned), t(1));
    assert_eq!((c.available, c.nodes), (0, 0));
    assert!(c.node_status.is_empty());
    assert_eq!(
        conditions::reason(&c.conditions, "Ready"),
        Some("InvalidSpec")
    );
    // A new leader before its first reconcile keeps it invalid for that generation...
    assert_eq!(compose(&c, Some(2), &f, None, t(2)), c);
    // ...but not for a new one.
    let c = compose(&c, Some(3), &f, None, t(2));
    assert_eq!(c.available, 1);
    assert!(conditions::is_true(&c.conditions, "Ready"));
}
