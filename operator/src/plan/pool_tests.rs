use super::*;
use hostnic_crds::Route;
use std::sync::Arc;

fn spec(size: u32) -> NicPoolSpec {
    super::super::fixtures::pool_spec(&["vxnet-a", "vxnet-b"], size)
}

fn node() -> NodeView {
    NodeView {
        name: "n1".into(),
        exists: true,
        selected: true,
        can_grow: true,
        instance_id: Some("i-1".into()),
        instance: Some(InstanceView {
            nics: vec![InstanceNic {
                nic_id: "52:54:00:00:00:01".into(),
                vxnet: "vxnet-a".into(),
                private_ip: Some("10.0.0.2".into()),
                primary: true,
            }],
            running: true,
        }),
        foreign_nics: 0,
        other_pools_slots: 0,
        pod_nic_ids: Arc::default(),
        pod_waiting: false,
    }
}

fn nic(name: &str, phase: HostNicPhase) -> NicView {
    NicView {
        name: name.into(),
        phase,
        role: NicRole::Pod,
        vxnet: "vxnet-a".into(),
        nic_id: Some(format!("52:54:00:00:01:{:02x}", name.len())),
        ip: Some("10.0.1.1".into()),
        deleting: false,
        refused: false,
        link_home: true,
    }
}

fn budget() -> VxnetBudget {
    VxnetBudget::new([("vxnet-a".to_string(), 100), ("vxnet-b".to_string(), 100)])
}

fn clock() -> Clock {
    Clock {
        now: Timestamp::from_second(10_000).unwrap(),
        shrink_delay: Duration::from_secs(60),
        early_batch: None,
    }
}

fn run(spec: &NicPoolSpec, node: &NodeView, nics: &[NicView]) -> NodeDecision {
    decide_node(spec, node, nics, &mut budget(), None, clock())
}

#[test]
fn empty_node_fills_to_size() {
    let d = run(&spec(3), &node(), &[]);
    assert_eq!(d.create.len(), 3);
    assert!(d.delete.is_empty());
    assert!(d.blockers.is_empty());
}

#[test]
fn incoming_nics_count_so_it_never_overshoots() {
    let nics = [
        nic("a", HostNicPhase::Pending),
        nic("b", HostNicPhase::Creating),
        nic("c", HostNicPhase::Attaching),
    ];
    let d = run(&spec(3), &node(), &nics);
    assert!(d.create.is_empty());
    let d = run(&spec(4), &node(), &nics);
    assert_eq!(d.create.len(), 1);
}

#[test]
fn released_nics_count_as_supply_bound_ones_do_not() {
    let nics = [
        nic("a", HostNicPhase::Bound),
        nic("b", HostNicPhase::Released),
        nic("c", HostNicPhase::Available),
    ];
    let d = run(&spec(2), &node(), &nics);
    assert!(
        d.create.is_empty(),
        "the NIC resting in quarantine comes back: no replacement"
    );
    assert_eq!(d.status.available, 1);
    assert_eq!(d.status.bound, 1);
    assert_eq!(d.status.in_progress, 1);
    let d = run(&spec(3), &node(), &nics);
    assert_eq!(d.create.len(), 1, "the bound one is not supply");
}

#[test]
fn a_waiting_pod_does_not_wait_out_the_quarantine() {
    // All free NICs rest in quarantine (minutes) while an ADD waits (seconds): a new one.
    let nics = [
        nic("a", HostNicPhase::Bound),
        nic("b", HostNicPhase::Released),
    ];
    let waiting = NodeView {
        pod_waiting: true,
        ..node()
    };
    assert!(run(&spec(1), &node(), &nics).create.is_empty());
    assert_eq!(run(&spec(1), &waiting, &nics).create.len(), 1);
}

#[test]
fn a_nic_returning_from_quarantine_is_kept_for_the_next_pod() {
    // Size 2: a pod released "b" (resting) and another pod took "c": one free, one resting.
    let resting = [
        nic("a", HostNicPhase::Available),
        nic("b", HostNicPhase::Released),
        nic("c", HostNicPhase::Bound),
    ];
    let d = run(&spec(2), &node(), &resting);
    assert!(d.create.is_empty() && d.delete.is_empty());
    // "b" is back and no pod came: one surplus, kept through the shrink delay.
    let back = [
        nic("a", HostNicPhase::Available),
        nic("b", HostNicPhase::Available),
        nic("c", HostNicPhase::Available),
    ];
    let c = Clock {
        shrink_delay: Duration::from_secs(600),
        ..clock()
    };
    let d = decide_node(&spec(2), &node(), &back, &mut budget(), None, c);
    assert!(d.create.is_empty() && d.delete.is_empty());
    assert_eq!(d.recheck_after, Some(Duration::from_secs(600)));
}

#[test]
fn max_per_node_caps_growth() {
    let mut s = spec(3);
    s.max_per_node = 4;
    let nics = [
        nic("a", HostNicPhase::Bound),
        nic("b", HostNicPhase::Bound),
        nic("c", HostNicPhase::Available),
    ];
    let d = run(&s, &node(), &nics);
    assert_eq!(d.create.len(), 1);
    assert_eq!(d.blockers, vec![Blocker::MaxPerNode]);
}

#[test]
fn free_slots_of_the_vm_cap_growth() {
    let mut n = node();
    let inst = n.instance.as_mut().unwrap();
    for i in 0..61 {
        inst.nics.push(InstanceNic {
            nic_id: format!("52:54:00:00:02:{i:02x}"),
            vxnet: "vxnet-a".into(),
            private_ip: None,
            primary: false,
        });
    }
    n.foreign_nics = 61;
    n.other_pools_slots = 1;
    let d = run(&spec(3), &n, &[]);
    assert_eq!(d.create.len(), 1, "63 - 61 foreign - 1 of another pool");
    assert_eq!(d.blockers, vec![Blocker::InstanceFull]);
}

#[test]
fn own_nics_are_counted_from_hostnics_not_the_cached_instance() {
    // The cached DescribeInstances predates our 60 NICs: they are counted from HostNics.
    let mut n = node();
    n.foreign_nics = 1;
    let nics: Vec<NicView> = (0..60)
        .map(|i| nic(&format!("n{i:02}"), HostNicPhase::Bound))
        .collect();
    let d = run(&spec(5), &n, &nics);
    assert_eq!(d.create.len(), 2, "63 - 1 foreign - 60 ours");
    assert_eq!(d.blockers, vec![Blocker::InstanceFull]);
}

#[test]
fn stopped_or_refusing_instances_are_reported_and_not_grown() {
    let mut n = node();
    n.instance.as_mut().unwrap().running = false;
    let d = run(&spec(2), &n, &[]);
    assert!(d.create.is_empty());
    assert_eq!(d.blockers, vec![Blocker::InstanceStopped]);
    let mut refused = nic("a", HostNicPhase::Attaching);
    refused.refused = true;
    let d = run(&spec(1), &node(), &[refused]);
    assert!(d.create.is_empty());
    assert_eq!(d.blockers, vec![Blocker::InstanceRefused]);
    assert!(Blocker::InstanceRefused.degrades());
}

#[test]
fn most_free_vxnet_first_and_exhaustion_blocks() {
    let mut b = VxnetBudget::new([("vxnet-a".to_string(), 1), ("vxnet-b".to_string(), 2)]);
    let d = decide_node(&spec(5), &node(), &[], &mut b, None, clock());
    let v: Vec<&str> = d.create.iter().map(|c| c.vxnet.as_str()).collect();
    assert_eq!(v, ["vxnet-b", "vxnet-a", "vxnet-b"]);
    assert_eq!(d.blockers, vec![Blocker::VxnetExhausted]);
    // The budget is shared: the next node gets nothing.
    let d2 = decide_node(&spec(1), &node(), &[], &mut b, None, clock());
    assert!(d2.create.is_empty());
    assert_eq!(d2.blockers, vec![Blocker::VxnetExhausted]);
}

#[test]
fn exceeded_nic_quota_blocks_with_its_own_reason() {
    let mut b = budget().quota_exceeded();
    let d = decide_node(&spec(2), &node(), &[], &mut b, None, clock());
    assert!(d.create.is_empty());
    assert_eq!(d.blockers, vec![Blocker::QuotaExceeded]);
    let (_, conds) = summarize(&spec(2), &[(true, d)], None);
    let degraded = conds.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status, degraded.reason), (true, "QuotaExceeded"));
}

#[test]
fn cordoned_or_not_ready_is_not_grown_nor_shrunk() {
    let mut n = node();
    n.can_grow = false;
    let d = run(&spec(3), &n, &[nic("a", HostNicPhase::Available)]);
    assert!(d.create.is_empty() && d.delete.is_empty());
    assert_eq!(d.blockers, vec![Blocker::NotSchedulable]);
    // A surplus that lasted far beyond the shrink delay stays too.
    let surplus = [
        nic("a", HostNicPhase::Available),
        nic("b", HostNicPhase::Available),
        nic("c", HostNicPhase::Available),
    ];
    let c = clock();
    let long_ago = c.now - Duration::from_secs(3600);
    let d = decide_node(&spec(1), &n, &surplus, &mut budget(), Some(long_ago), c);
    assert!(d.create.is_empty(), "{d:?}");
    assert!(d.delete.is_empty(), "{d:?}");
}

#[test]
fn unknown_instance_blocks_growth() {
    let mut n = node();
    n.instance = None;
    let d = run(&spec(1), &n, &[]);
    assert!(d.create.is_empty());
    assert_eq!(d.blockers, vec![Blocker::InstanceUnknown]);
}

#[test]
fn shrink_waits_for_the_hysteresis_then_deletes_free_only() {
    let nics = [
        nic("a", HostNicPhase::Available),
        nic("b", HostNicPhase::Available),
        nic("c", HostNicPhase::Available),
        nic("d", HostNicPhase::Bound),
    ];
    let c = clock();
    let d = decide_node(&spec(1), &node(), &nics, &mut budget(), None, c);
    assert!(d.delete.is_empty());
    assert_eq!(d.surplus_since, Some(c.now));
    assert_eq!(d.recheck_after, Some(Duration::from_secs(60)));
    let later = Clock {
        now: c.now + Duration::from_secs(61),
        ..c
    };
    let d = decide_node(&spec(1), &node(), &nics, &mut budget(), Some(c.now), later);
    assert_eq!(d.delete, vec!["c".to_string(), "b".to_string()]);
    assert!(d.surplus_since.is_none());
}

#[test]
fn shrink_deletes_only_free_nics_whose_link_is_proven_home() {
    let mut unproven = nic("c", HostNicPhase::Available);
    unproven.link_home = false;
    let nics = [
        nic("a", HostNicPhase::Available),
        nic("b", HostNicPhase::Available),
        unproven,
    ];
    let c = clock();
    let later = Clock {
        now: c.now + Duration::from_secs(61),
        ..c
    };
    let d = decide_node(&spec(0), &node(), &nics, &mut budget(), Some(c.now), later);
    assert_eq!(d.delete, vec!["b".to_string(), "a".to_string()]);
    assert_eq!(
        d.surplus_since,
        Some(c.now),
        "the surplus timer keeps running for the unproven one"
    );
}

#[test]
fn only_nics_detached_without_a_wait_join_the_detach_round() {
    assert!(joins_detach_round(&nic("a", HostNicPhase::Available), true));
    assert!(joins_detach_round(&nic("a", HostNicPhase::Released), true));
    let mut unproven = nic("a", HostNicPhase::Released);
    unproven.link_home = false;
    assert!(!joins_detach_round(&unproven, true));
    assert!(joins_detach_round(&unproven, false));
    assert!(!joins_detach_round(&nic("a", HostNicPhase::Bound), true));
    assert!(joins_detach_round(&nic("a", HostNicPhase::Bound), false));
    for p in [
        HostNicPhase::Pending,
        HostNicPhase::Creating,
        HostNicPhase::Attaching,
        HostNicPhase::Failed,
        HostNicPhase::Detaching,
    ] {
        assert!(!joins_detach_round(&nic("a", p), true), "{p:?}");
    }
}

#[test]
fn surplus_that_disappears_resets_the_timer() {
    let nics = [nic("a", HostNicPhase::Available)];
    let d = decide_node(
        &spec(1),
        &node(),
        &nics,
        &mut budget(),
        Some(clock().now),
        clock(),
    );
    assert!(d.surplus_since.is_none() && d.delete.is_empty() && d.create.is_empty());
}

#[test]
fn shrinking_drops_pending_nics_at_once() {
    let nics = [
        nic("a", HostNicPhase::Pending),
        nic("b", HostNicPhase::Pending),
        nic("c", HostNicPhase::Attaching),
    ];
    let d = run(&spec(1), &node(), &nics);
    assert_eq!(d.delete, vec!["b".to_string(), "a".to_string()]);
    assert!(d.create.is_empty());
}

#[test]
fn failed_nics_are_deleted_and_replaced() {
    let nics = [
        nic("a", HostNicPhase::Failed),
        nic("b", HostNicPhase::Available),
    ];
    let d = run(&spec(2), &node(), &nics);
    assert_eq!(d.delete, vec!["a".to_string()]);
    assert_eq!(d.create.len(), 1);
    assert_eq!(d.status.failed, 1);
}

#[test]
fn deleted_node_loses_everything_even_bound() {
    let mut n = node();
    n.exists = false;
    let mut gone = nic("c", HostNicPhase::Available);
    gone.deleting = true;
    let d = run(
        &spec(2),
        &n,
        &[
            nic("a", HostNicPhase::Bound),
            nic("b", HostNicPhase::Available),
            gone,
        ],
    );
    assert_eq!(d.delete, vec!["a".to_string(), "b".to_string()]);
    assert!(d.create.is_empty());
}

#[test]
fn deselected_node_keeps_bound_until_released() {
    let mut n = node();
    n.selected = false;
    let d = run(
        &spec(2),
        &n,
        &[
            nic("a", HostNicPhase::Bound),
            nic("b", HostNicPhase::Released),
        ],
    );
    assert_eq!(d.delete, vec!["b".to_string()]);
}

#[test]
fn gateway_reuses_the_primary_nic() {
    let mut s = spec(1);
    s.vxnets = vec!["vxnet-a".into()];
    s.routes = vec![Route {
        destination: "10.96.0.0/12".into(),
        gateway: "0.0.0.0".into(),
    }];
    let d = run(&s, &node(), &[]);
    assert_eq!(d.status.gateways.len(), 1);
    assert_eq!(d.status.gateways[0].ip, "10.0.0.2");
    assert_eq!(d.status.gateways[0].hostnic, None);
    assert!(d.create.iter().all(|c| c.role == NicRole::Pod));
}

#[test]
fn gateway_nic_is_created_when_the_node_has_none_in_the_vxnet() {
    let mut s = spec(1);
    s.vxnets = vec!["vxnet-b".into()];
    s.routes = vec![Route {
        destination: "10.96.0.0/12".into(),
        gateway: "0.0.0.0".into(),
    }];
    let d = run(&s, &node(), &[]);
    assert_eq!(
        d.create[0],
        NewNic {
            vxnet: "vxnet-b".into(),
            role: NicRole::Gateway
        }
    );
    assert_eq!(d.create.len(), 2);
    assert!(d.status.gateways.is_empty());
    // Once it is Available it is published, and not created again.
    let mut g = nic("gw", HostNicPhase::Available);
    g.role = NicRole::Gateway;
    g.vxnet = "vxnet-b".into();
    let d = run(&s, &node(), &[g]);
    assert_eq!(d.status.gateways[0].hostnic.as_deref(), Some("gw"));
    assert!(d.create.iter().all(|c| c.role == NicRole::Pod));
    assert_eq!(
        d.status.available, 0,
        "gateway NICs are not counted as free pod NICs"
    );
}

#[test]
fn pod_nics_never_serve_as_gateway() {
    let mut s = spec(0);
    s.vxnets = vec!["vxnet-b".into()];
    s.routes = vec![Route {
        destination: "10.96.0.0/12".into(),
        gateway: "0.0.0.0".into(),
    }];
    let mut n = node();
    n.instance.as_mut().unwrap().nics.push(InstanceNic {
        nic_id: "52:54:00:00:09:09".into(),
        vxnet: "vxnet-b".into(),
        private_ip: Some("10.1.0.9".into()),
        primary: false,
    });
    n.pod_nic_ids = Arc::new(["52:54:00:00:09:09".to_string()].into());
    let d = run(&s, &n, &[]);
    assert_eq!(
        d.create,
        vec![NewNic {
            vxnet: "vxnet-b".into(),
            role: NicRole::Gateway
        }]
    );
}

#[test]
fn validation_rejects_bad_specs() {
    let known: HashSet<String> = ["vxnet-a".to_string(), "vxnet-b".to_string()].into();
    assert!(validate(&spec(3), &known).is_ok());
    let mut s = spec(10);
    s.max_per_node = 5;
    assert!(validate(&s, &known).unwrap_err().contains("maxPerNode"));
    let mut s = spec(1);
    s.vxnets.push("vxnet-zzz".into());
    assert!(validate(&s, &known).unwrap_err().contains("vxnet-zzz"));
    let mut s = spec(1);
    s.vxnets = vec!["vxnet-a".into(), "vxnet-a".into()];
    assert!(validate(&s, &known).is_err());
}

#[test]
fn summary_conditions() {
    let s = spec(2);
    let full = run(
        &s,
        &node(),
        &[
            nic("a", HostNicPhase::Available),
            nic("b", HostNicPhase::Available),
        ],
    );
    let (t, c) = summarize(&s, &[(true, full.clone())], None);
    assert_eq!((t.nodes, t.warm_per_node, t.available), (1, 2, 2));
    assert_eq!(
        c[0],
        Cond::new("Ready", true, "Warm", "every node has 2 free NICs")
    );
    assert!(!c[1].status && !c[2].status);

    let mut b = VxnetBudget::default();
    let starved = decide_node(&s, &node(), &[], &mut b, None, clock());
    let (t, c) = summarize(&s, &[(true, full), (true, starved)], None);
    assert_eq!(t.warm_per_node, 0);
    assert!(!c[0].status);
    assert_eq!((c[2].status, c[2].reason), (true, "VxnetExhausted"));

    let (_, c) = summarize(&s, &[], Some("bad"));
    assert_eq!(c[2].reason, "InvalidSpec");
}

#[test]
fn only_a_node_that_grows_or_seeks_a_gateway_needs_its_vm_described() {
    let unread = NodeView {
        instance: None,
        ..node()
    };
    let needs = |s: &NicPoolSpec, nics: &[NicView]| {
        needs_instance(s, &unread, nics, &budget(), None, clock())
    };
    let full = [
        nic("a", HostNicPhase::Available),
        nic("b", HostNicPhase::Bound),
        nic("c", HostNicPhase::Released),
        nic("d", HostNicPhase::Attaching),
    ];
    assert!(!needs(&spec(3), &full), "converged: nothing to read");
    assert!(needs(&spec(4), &full), "growing takes the VM's free slots");
    assert!(needs(&spec(3), &full[..2]), "a deficit grows");
    let cordoned = NodeView {
        can_grow: false,
        ..unread.clone()
    };
    assert!(!needs_instance(
        &spec(4),
        &cordoned,
        &full,
        &budget(),
        None,
        clock()
    ));
    let mut via_node = spec(3);
    via_node.vxnets = vec!["vxnet-a".into()];
    via_node.routes = vec![Route {
        destination: "10.96.0.0/12".into(),
        gateway: "0.0.0.0".into(),
    }];
    assert!(
        needs(&via_node, &full),
        "its gateway is among the VM's NICs"
    );
    // The decision made with the VM described agrees on what the idle one skipped.
    let d = run(&spec(3), &node(), &full);
    assert!(d.create.is_empty() && d.delete.is_empty() && d.blockers.is_empty());
}

/// The pool's HostNics on a node: `free` Available, `bound` Bound, `resting` Released.
fn node_nics(free: usize, bound: usize, resting: usize) -> Vec<NicView> {
    let mut out = Vec::new();
    for (n, prefix, phase) in [
        (free, "free", HostNicPhase::Available),
        (bound, "bound", HostNicPhase::Bound),
        (resting, "resting", HostNicPhase::Released),
    ] {
        out.extend((0..n).map(|i| nic(&format!("{prefix}{i}"), phase)));
    }
    out
}

#[test]
fn a_refill_waits_for_more_claims_only_while_they_can_join_its_round() {
    // One claim of a pool of 3: two free NICs left, more claims may come.
    assert!(!refill_is_due(3, &node_nics(2, 1, 0), false, 5));
    // The last free NIC taken: no claim can land there before the refill does.
    assert!(refill_is_due(1, &node_nics(0, 1, 0), false, 5));
    // A whole attach batch missing: later claims go to a round of their own.
    assert!(!refill_is_due(10, &node_nics(6, 4, 0), false, 5));
    assert!(refill_is_due(10, &node_nics(5, 5, 0), false, 5));
    // Nothing missing: a resting NIC is supply, however empty the node is now.
    assert!(!refill_is_due(1, &node_nics(0, 1, 1), false, 5));
    // ... unless an ADD waits.
    assert!(refill_is_due(1, &node_nics(0, 1, 1), true, 5));
    // NICs on their way count: the refill already runs.
    let mut nics = node_nics(0, 1, 0);
    nics.push(nic("coming", HostNicPhase::Attaching));
    assert!(!refill_is_due(1, &nics, false, 5));
}

/// An early pass (a claim it did not wait for) creates whole attach rounds on a node that
/// still has a free NIC and leaves the rest to the gathered pass; an empty node, or a gathered
/// pass, gets everything it lacks.
#[test]
fn an_early_pass_creates_whole_attach_rounds_while_the_node_has_a_free_nic() {
    let early = Clock {
        early_batch: Some(5),
        ..clock()
    };
    let grow = |nics: &[NicView], c: Clock| {
        let d = decide_node(&spec(10), &node(), nics, &mut budget(), None, c);
        (d.create.len(), d.deferred)
    };
    // Six claimed of ten, four free: one round of five now, one NIC later.
    assert_eq!(grow(&node_nics(4, 6, 0), early), (5, 1));
    // Three claimed: nothing now (three more claims may fill the round).
    assert_eq!(grow(&node_nics(7, 3, 0), early), (0, 3));
    // The node is empty: everything, no claim can come to fill a round.
    assert_eq!(grow(&node_nics(0, 10, 0), early), (10, 0));
    // A gathered pass: everything.
    assert_eq!(grow(&node_nics(4, 6, 0), clock()), (6, 0));
}

/// NICs being created for a pod that waited stay when the wait ends: the resting NICs that
/// then count as supply again come back only after their quarantine. Dropping the pending ones
/// made a burst of restarts create, drop and create NICs again; a real surplus (a smaller
/// pool) still drops them at once.
#[test]
fn pending_nics_outlast_the_wait_they_were_made_for() {
    let mut nics = node_nics(0, 1, 2);
    nics.push(nic("new0", HostNicPhase::Pending));
    nics.push(nic("new1", HostNicPhase::Pending));
    let d = decide_node(&spec(3), &node(), &nics, &mut budget(), None, clock());
    assert!(d.delete.is_empty() && d.create.is_empty(), "{d:?}");
    let d = decide_node(&spec(1), &node(), &nics, &mut budget(), None, clock());
    assert_eq!(d.delete, ["new1"]);
}
