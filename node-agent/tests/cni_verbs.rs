//! The agent's side of CNI GC, CHECK and pool choice as the spec and the runtimes expect them,
//! against the in-memory API server and real network namespaces (veth "NICs" in a node netns),
//! over the agent's socket and through libcni with the `hostnic` plugin.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Lab, blocking, eventually, phase, post};
use hostnic_agent_api::{
    ApiError, Attachment, ClaimRequest, ErrorKind, GcRequest, GcResponse, path,
};
use hostnic_crds::HostNicPhase;
use hostnic_tests::cni_runtime::{CniFailure, CniRuntime};
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use http::StatusCode;
use serde_json::json;

/// This binary's vxnet, 10.78.0.0/24.
const NET: u8 = 78;

fn mac(i: usize) -> String {
    common::mac(NET, i)
}

fn ip(i: usize) -> String {
    common::ip(NET, i)
}

/// A claim on `network` that does not wait for a NIC on its way.
fn claim_req(pod: &TestNetns, container: &str, network: Option<&str>) -> ClaimRequest {
    ClaimRequest {
        wait_for_nic_seconds: 0,
        network: network.map(str::to_owned),
        ..common::claim_req(pod, container)
    }
}

/// libcni's CheckNetworkList for container `ctr1` as `eth0`.
async fn check_via_libcni(
    rt: &Arc<CniRuntime>,
    conflist: &Path,
    netns: &Path,
) -> Result<(), CniFailure> {
    let (rt, conflist, netns) = (rt.clone(), conflist.to_owned(), netns.to_owned());
    blocking(move || rt.check(&conflist, "ctr1", &netns, "eth0")).await
}

/// Two hostnic networks on one node (e.g. Multus' `net1` next to `eth0`) and a claim from
/// before network names were recorded: GC of one network takes only its own stale
/// attachments, and a GC without a network name is refused.
#[tokio::test]
async fn gc_collects_only_its_own_networks_attachments() {
    if !require_root("gc_collects_only_its_own_networks_attachments") {
        return;
    }
    let mut lab = Lab::new(NET).await;
    lab.create_pool("pool-a", true, &[], "10.78.0.254").await;
    for i in 1..=4 {
        lab.add_nic_in("pool-a", i).await;
    }
    let _agent = lab.start_agent_free(4).await;
    let socket = lab.socket();
    let pods: Vec<TestNetns> = (0..4).map(|_| TestNetns::new("pod")).collect();
    let mut atts = Vec::new();
    for (i, network) in [Some("hostnic"), Some("hostnic"), Some("fast"), None]
        .into_iter()
        .enumerate()
    {
        let c = format!("c{i}");
        lab.create_pod(&c).await;
        atts.push(lab.claimed(&claim_req(&pods[i], &c, network)).await);
    }
    let recorded = lab
        .hostnic(&atts[2].hostnic)
        .await
        .status
        .unwrap()
        .pod
        .unwrap();
    assert_eq!(recorded.network.as_deref(), Some("fast"));

    // An older plugin's GC names no network: refused, nothing released.
    let old = GcRequest {
        network: String::new(),
        valid_attachments: vec![],
    };
    let (code, body) = post(&socket, path::GC, &old).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");

    // "hostnic" knows c0 only: c1 is stale; fast's c2 and the unnamed c3 are not its own.
    let gc = GcRequest {
        network: "hostnic".into(),
        valid_attachments: vec![claim_req(&pods[0], "c0", None).key],
    };
    let (code, body) = post(&socket, path::GC, &gc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let resp: GcResponse = serde_json::from_value(body).unwrap();
    assert_eq!(resp.released, vec![claim_req(&pods[1], "c1", None).key]);
    assert!(resp.failed.is_empty());
    let phases: Vec<_> = phases_of(&lab, &atts).await;
    assert_eq!(
        phases,
        [
            HostNicPhase::Bound,
            HostNicPhase::Released,
            HostNicPhase::Bound,
            HostNicPhase::Bound
        ]
    );
    assert_eq!(pods[2].link_by_mac(&mac(3)).as_deref(), Some("eth0"));
    assert_eq!(pods[3].link_by_mac(&mac(4)).as_deref(), Some("eth0"));
}

async fn phases_of(lab: &Lab, atts: &[Attachment]) -> Vec<HostNicPhase> {
    let mut out = Vec::new();
    for a in atts {
        out.push(phase(&lab.hostnic(&a.hostnic).await));
    }
    out
}

/// A release GC cannot do (the NIC cannot come home: its host name and the fallback name are
/// both taken on the node) is reported back, and GC still releases the others.
#[tokio::test]
async fn gc_reports_release_errors_and_goes_on() {
    if !require_root("gc_reports_release_errors_and_goes_on") {
        return;
    }
    let mut lab = Lab::new(NET).await;
    lab.create_pool("pool-a", true, &[], "10.78.0.254").await;
    lab.add_nic_in("pool-a", 1).await;
    lab.add_nic_in("pool-a", 2).await;
    let _agent = lab.start_agent_free(2).await;
    let socket = lab.socket();
    let (p1, p2) = (TestNetns::new("pod"), TestNetns::new("pod"));
    lab.create_pod("c1").await;
    lab.create_pod("c2").await;
    let a1 = lab.claimed(&claim_req(&p1, "c1", Some("hostnic"))).await;
    let a2 = lab.claimed(&claim_req(&p2, "c2", Some("hostnic"))).await;
    assert_eq!(a1.mac, mac(1));
    // Squat both names NIC 1 could come home under.
    lab.node
        .ip(&["link", "add", "hn1", "type", "veth", "peer", "name", "sq1"]);
    let fallback = hostnic_agent::attach::fallback_name(&mac(1));
    lab.node.ip(&[
        "link", "add", &fallback, "type", "veth", "peer", "name", "sq2",
    ]);

    let gc = GcRequest {
        network: "hostnic".into(),
        valid_attachments: vec![],
    };
    let (code, body) = post(&socket, path::GC, &gc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let resp: GcResponse = serde_json::from_value(body).unwrap();
    assert_eq!(resp.released, vec![claim_req(&p2, "c2", None).key]);
    assert_eq!(resp.failed.len(), 1, "{resp:?}");
    assert_eq!(resp.failed[0].key, claim_req(&p1, "c1", None).key);
    assert!(resp.failed[0].error.contains(&a1.hostnic), "{resp:?}");
    // Where the kernel left NIC 1's link decides its phase, never the failed answer alone: the
    // move and the rename are one request, and a kernel may move the link before the rename
    // fails. Still in the pod: Bound. On the node (under its pod name): its link event
    // releases it. Never Released with the link in the pod.
    let expected = if p1.link_by_mac(&mac(1)).is_some() {
        HostNicPhase::Bound
    } else {
        HostNicPhase::Released
    };
    let settled = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { phase(&lab.hostnic(&a1.hostnic).await) == expected },
    )
    .await;
    assert!(
        settled,
        "NIC 1 is {:?} with its link {} the pod",
        phase(&lab.hostnic(&a1.hostnic).await),
        if expected == HostNicPhase::Bound {
            "in"
        } else {
            "out of"
        }
    );
    assert_eq!(
        phase(&lab.hostnic(&a2.hostnic).await),
        HostNicPhase::Released
    );
}

/// CHECK through libcni compares against the cached result and the conflist: a NicPool route
/// added after the claim, or a new node gateway address, does not fail it; a route a later
/// plugin added is fine; a wrong MTU or a missing conflist route is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_follows_the_cached_result_not_todays_pool() {
    if !require_root("check_follows_the_cached_result_not_todays_pool") {
        return;
    }
    let mut lab = Lab::new(NET).await;
    lab.create_pool("pool-a", true, &["10.96.0.0/12"], "10.78.0.254")
        .await;
    lab.add_nic_in("pool-a", 1).await;
    let _agent = lab.start_agent_free(1).await;
    lab.create_pod("p1").await;
    let pod = TestNetns::new("pod");
    let conflist = lab.conflist(
        "hostnic.conflist",
        json!({"mtu": 1400, "ipam": {"routes": [{"dst": "10.200.0.0/16"}]}}),
    );
    let rt = Arc::new(lab.runtime("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1"));
    let netns = pod.path();
    let check = || check_via_libcni(&rt, &conflist, &netns);
    let result = {
        let (rt, conflist, netns) = (rt.clone(), conflist.clone(), netns.clone());
        blocking(move || rt.add(&conflist, "ctr1", &netns, "eth0").expect("ADD")).await
    };
    assert_eq!(
        result["ips"][0]["address"],
        format!("{}/24", ip(1)),
        "{result}"
    );
    assert!(
        pod.ip(&["-j", "link", "show", "eth0"])
            .contains("\"mtu\":1400")
    );
    check().await.expect("CHECK right after ADD");

    // The pool gains a route and the node's gateway NIC is replaced (new address).
    lab.update_pool("pool-a", &["10.96.0.0/12", "10.100.0.0/16"], "10.78.0.253")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check().await.expect("CHECK after the NicPool changed");
    // A later chained plugin's route through eth0.
    pod.ip(&[
        "route",
        "add",
        "10.244.0.0/16",
        "via",
        "10.78.0.9",
        "dev",
        "eth0",
    ]);
    check().await.expect("CHECK with an extra route");

    pod.ip(&["link", "set", "eth0", "mtu", "1500"]);
    let err = check().await.expect_err("CHECK misses a changed MTU");
    assert!(err.stderr.contains("MTU 1500, expected 1400"), "{err}");
    pod.ip(&["link", "set", "eth0", "mtu", "1400"]);
    check().await.expect("CHECK with the MTU restored");

    pod.ip(&["route", "del", "10.200.0.0/16"]);
    let err = check().await.expect_err("CHECK misses a conflist route");
    assert!(err.stderr.contains("10.200.0.0/16"), "{err}");
}

/// The pod's pool annotation beats the conflist's `pool` although the runtime passes no
/// annotations; a named pool that does not exist is a config error naming it; a netns that
/// does not exist is "container unknown".
#[tokio::test]
async fn pool_annotation_wins_and_bad_names_say_what_to_fix() {
    if !require_root("pool_annotation_wins_and_bad_names_say_what_to_fix") {
        return;
    }
    let mut lab = Lab::new(NET).await;
    lab.create_pool("pool-a", true, &[], "10.78.0.254").await;
    lab.create_pool("pool-b", false, &[], "10.78.0.254").await;
    lab.add_nic_in("pool-a", 1).await;
    lab.add_nic_in("pool-b", 2).await;
    let _agent = lab.start_agent_free(2).await;
    let socket = lab.socket();
    let pod = TestNetns::new("pod");

    lab.create_pod_for("c1", Some("pool-b")).await;
    let mut req = claim_req(&pod, "c1", Some("hostnic"));
    req.pool = Some("pool-a".into());
    let att = lab.claimed(&req).await;
    assert_eq!(
        att.mac,
        mac(2),
        "the conflist's pool beat the pod annotation"
    );

    let other = TestNetns::new("pod");
    lab.create_pod_for("c2", Some("pool-typo")).await;
    let mut req = claim_req(&other, "c2", Some("hostnic"));
    req.pool = Some("pool-a".into());
    let (code, body) = post(&socket, path::CLAIM, &req).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let err: ApiError = serde_json::from_value(body).unwrap();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("\"pool-typo\""), "{}", err.message);

    let mut gone = claim_req(&other, "c2", Some("hostnic"));
    gone.netns = "/var/run/netns/hn-no-such-netns".into();
    let (code, body) = post(&socket, path::CLAIM, &gone).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let err: ApiError = serde_json::from_value(body).unwrap();
    assert_eq!(err.kind, ErrorKind::UnknownContainer);
    // Nothing was claimed by either refusal.
    let nic = lab
        .hostnic(&format!("pool-a-{}-00001", lab.node_name))
        .await;
    assert_eq!(phase(&nic), HostNicPhase::Available);
}

/// A NIC whose link left the node after the agent last saw it (unplugged; the link pass runs
/// only after a debounce) does not fail the ADD: the claim is undone and the next free NIC
/// serves the pod.
#[tokio::test]
async fn a_vanished_link_makes_the_claim_take_the_next_free_nic() {
    if !require_root("a_vanished_link_makes_the_claim_take_the_next_free_nic") {
        return;
    }
    let mut lab = Lab::new(NET).await;
    lab.create_pool("pool-a", true, &[], "10.78.0.254").await;
    let first = lab.add_nic_in("pool-a", 1).await;
    lab.add_nic_in("pool-a", 2).await;
    let _agent = lab.start_agent_free(2).await;
    let pod = TestNetns::new("pod");
    lab.create_pod("c1").await;
    // The claim goes in before the link pass (100 ms after the link event) can report it.
    lab.node.ip(&["link", "del", "hn1"]);
    let att = lab.claimed(&claim_req(&pod, "c1", Some("hostnic"))).await;
    assert_eq!(att.mac, mac(2));
    assert_eq!(pod.link_by_mac(&mac(2)).as_deref(), Some("eth0"));
    let nic = lab.hostnic(&first).await;
    assert_ne!(phase(&nic), HostNicPhase::Bound);
    assert_eq!(nic.status.unwrap().pod, None);
}
