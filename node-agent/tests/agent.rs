//! The agent against the in-memory API server and real network namespaces: HostNics made by
//! the test as the operator would (Available, with nicId/ip/cidr/gateway), veth "NICs" in a
//! node netns, pods as test netns, requests over the agent's unix socket.

mod common;

use std::collections::HashMap;
use std::future::ready;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{
    Lab, POOL, blocking, call, claim_req, error_kind, eventually, health_get, phase, post,
    release_req, start_recovered,
};
use hostnic_agent::args::Args;
use hostnic_agent::run;
use hostnic_agent_api::ErrorKind;
use hostnic_agent_api::{AgentStatus, Attachment, GcRequest, GcResponse, Released, path};
use hostnic_crds::{HostNic, HostNicPhase, NicPool, NicRole};
use hostnic_tests::cni_runtime::{CniFailure, CniRuntime};
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

/// This binary's vxnet, 10.77.0.0/24.
const NET: u8 = 77;

fn mac(i: usize) -> String {
    common::mac(NET, i)
}

fn ip(i: usize) -> String {
    common::ip(NET, i)
}

// === tests ===

#[tokio::test]
async fn claim_check_release_gc_over_the_socket() {
    if !require_root("claim_check_release_gc_over_the_socket") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(3).await;
    // NIC 1's wire ends on the vxnet bridge that carries the gateway address.
    let vxnet = TestNetns::new("vx");
    lab.node.ip(&["link", "set", "hn1p", "netns", vxnet.name()]);
    vxnet.ip(&["link", "add", "br0", "type", "bridge"]);
    vxnet.ip(&["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    vxnet.ip(&["link", "set", "br0", "up"]);
    vxnet.ip(&["link", "set", "hn1p", "master", "br0", "up"]);

    let agent = lab.start_agent_free(3).await;
    let socket = lab.socket();
    let (code, status) = call(&socket, Method::GET, path::STATUS, vec![]).await;
    assert_eq!(code, StatusCode::OK);
    let status: AgentStatus = serde_json::from_value(status).unwrap();
    assert!(status.ready && status.synced, "{status:?}");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let (pod1, att) = lab.pod_claimed("c1").await;
    // The agent picks NICs in name order: NIC 1 is first.
    assert_eq!(att.mac, mac(1));
    assert_eq!(att.address, format!("{}/24", ip(1)));
    assert_eq!(att.gateway, "10.77.0.1");
    assert!(
        att.routes
            .iter()
            .any(|r| r.dst == "10.96.0.0/12" && r.gw.as_deref() == Some("10.77.0.254"))
    );
    assert_eq!(pod1.link_by_mac(&mac(1)).as_deref(), Some("eth0"));
    assert_eq!(pod1.addresses("eth0"), vec![att.address.clone()]);
    assert!(
        pod1.ping("10.77.0.1", 3),
        "pod cannot reach its vxnet gateway"
    );
    let nic = lab.hostnic(&att.hostnic).await;
    assert_eq!(phase(&nic), HostNicPhase::Bound);
    assert_eq!(
        nic.status
            .as_ref()
            .unwrap()
            .pod
            .as_ref()
            .unwrap()
            .container_id,
        "c1"
    );

    // Repeated ADD: same answer, nothing else claimed.
    assert_eq!(lab.claimed(&claim_req(&pod1, "c1")).await, att);
    assert_eq!(
        lab.hostnics()
            .await
            .iter()
            .filter(|n| phase(n) == HostNicPhase::Bound)
            .count(),
        1
    );

    // CHECK passes, then catches a removed route.
    let check = hostnic_agent_api::CheckRequest {
        key: claim_req(&pod1, "c1").key,
        netns: pod1.path().display().to_string(),
        expected: Some(hostnic_agent_api::Expected {
            mac: att.mac.clone(),
            address: att.address.clone(),
            mtu: None,
            routes: att.routes.clone(),
        }),
    };
    let (code, body) = post(&socket, path::CHECK, &check).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    pod1.ip(&["route", "del", "10.96.0.0/12"]);
    let (code, body) = post(&socket, path::CHECK, &check).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(error_kind(&body), ErrorKind::CheckFailed);
    assert!(
        body["message"].as_str().unwrap().contains("10.96.0.0/12"),
        "{body}"
    );
    // A CHECK of a sandbox whose netns is gone: the spec's "unknown container" (3).
    let gone = hostnic_agent_api::CheckRequest {
        netns: "/var/run/netns/hn-no-such-netns".into(),
        ..check.clone()
    };
    let (code, body) = post(&socket, path::CHECK, &gone).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_kind(&body), ErrorKind::UnknownContainer);

    // DEL, DEL again, and containerd's second DEL with no netns.
    let (code, body) = post(&socket, path::RELEASE, &release_req("c1", Some(&pod1))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_value::<Released>(body)
            .unwrap()
            .hostnic
            .as_deref(),
        Some(att.hostnic.as_str())
    );
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert!(lab.node.addresses("hn1").is_empty());
    assert_eq!(pod1.link_by_mac(&mac(1)), None);
    // DEL answers once it is queued on the node; the HostNic write follows.
    wait_phase(&lab, &att.hostnic, HostNicPhase::Released).await;
    let nic = lab.hostnic(&att.hostnic).await;
    assert!(nic.status.as_ref().unwrap().released_at.is_some());
    for req in [
        release_req("c1", Some(&pod1)),
        release_req("c1", None),
        release_req("unknown", None),
    ] {
        let (code, body) = post(&socket, path::RELEASE, &req).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_value::<Released>(body).unwrap().hostnic,
            None
        );
    }

    // GC keeps what the runtime lists and releases the rest.
    let (pod2, pod3) = (TestNetns::new("pod"), TestNetns::new("pod"));
    lab.create_pod("c2").await;
    lab.create_pod("c3").await;
    assert_eq!(
        post(&socket, path::CLAIM, &claim_req(&pod2, "c2")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post(&socket, path::CLAIM, &claim_req(&pod3, "c3")).await.0,
        StatusCode::OK
    );
    let gc = GcRequest {
        network: "hostnic".into(),
        valid_attachments: vec![claim_req(&pod2, "c2").key],
    };
    let (code, body) = post(&socket, path::GC, &gc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let gc: GcResponse = serde_json::from_value(body).unwrap();
    assert_eq!(gc.released, vec![claim_req(&pod3, "c3").key]);
    assert!(pod3.links().iter().all(|l| l.name == "lo"));
    assert_eq!(pod2.links().len(), 2);

    // Health and metrics.
    let health = agent.health_addr.expect("health server runs");
    assert_eq!(health_get(health, "/healthz").await.0, StatusCode::OK);
    assert_eq!(health_get(health, "/readyz").await.0, StatusCode::OK);
    let (code, metrics) = health_get(health, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        metrics.contains("hostnic_agent_claims_total{outcome=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hostnic_agent_releases_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hostnic_agent_claim_duration_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.contains("hostnic_agent_free_nics 0"), "{metrics}");

    // Every Kubernetes call made, test setup (creates, nicpool status) included: the agent's
    // part must stay within the RBAC rules in the report / manifests.
    let agent_rules = [
        "get /pods",
        "get hostnic.qingcloud.com/hostnics",
        "list hostnic.qingcloud.com/hostnics",
        "watch hostnic.qingcloud.com/hostnics",
        "update hostnic.qingcloud.com/hostnics/status",
        "list hostnic.qingcloud.com/nicpools",
        "watch hostnic.qingcloud.com/nicpools",
        "patch hostnic.qingcloud.com/nicpools",
        "create events.k8s.io/events",
        "patch events.k8s.io/events",
    ];
    let setup = [
        "create /pods",
        "create hostnic.qingcloud.com/hostnics",
        "create hostnic.qingcloud.com/nicpools",
        "update hostnic.qingcloud.com/nicpools/status",
    ];
    // The scratch cluster keeps no audit log for the tests.
    let audit = lab.server.as_ref().map(|s| s.audit()).unwrap_or_default();
    for record in audit {
        let perm = record.permission();
        assert!(
            agent_rules.contains(&perm.as_str()) || setup.contains(&perm.as_str()),
            "unexpected API call {perm} ({})",
            record.path
        );
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_and_change_nothing() {
    if !require_root("bad_requests_get_4xx_and_change_nothing") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nic(1).await;
    let _agent = lab.start_agent_free(1).await;
    let before: Vec<_> = lab
        .hostnics()
        .await
        .iter()
        .map(|n| n.resource_version())
        .collect();
    let socket = lab.socket();
    let pod = TestNetns::new("pod");

    let (code, body) = call(&socket, Method::POST, path::CLAIM, b"{not json".to_vec()).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
    );
    let huge = vec![b' '; hostnic_agent_api::MAX_BODY_BYTES + 1];
    let (code, _) = call(&socket, Method::POST, path::CLAIM, huge).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, body) = call(&socket, Method::POST, "/v1/steal", b"{}".to_vec()).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::NOT_FOUND, ErrorKind::InvalidRequest)
    );
    let (code, body) = post(&socket, "/v2/claim", &claim_req(&pod, "c1")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["message"].as_str().unwrap().contains("version"),
        "{body}"
    );
    let (code, _) = call(&socket, Method::GET, path::CLAIM, vec![]).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let mut bad_if = claim_req(&pod, "c1");
    bad_if.key.ifname = "eth0/../x".into();
    let (code, body) = post(&socket, path::CLAIM, &bad_if).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
    );
    let mut bad_ns = claim_req(&pod, "c1");
    bad_ns.netns = "/proc/self/status".into();
    let (code, body) = post(&socket, path::CLAIM, &bad_ns).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
    );
    let (code, _) = call(
        &socket,
        Method::POST,
        path::CLAIM,
        b"{\"container_id\":\"c\"}".to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<_> = lab
        .hostnics()
        .await
        .iter()
        .map(|n| n.resource_version())
        .collect();
    assert_eq!(before, after, "a bad request changed a HostNic");
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert!(pod.links().iter().all(|l| l.name == "lo"));
}

#[tokio::test]
async fn a_claim_with_the_runtimes_pod_facts_makes_no_api_read() {
    if !require_root("a_claim_with_the_runtimes_pod_facts_makes_no_api_read") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let _agent = lab.start_agent_free(1).await;
    // containerd passed the pod's annotations (none names a pool) and kubelet K8S_POD_UID; the
    // pod is not even in the API, so a GET would lose the UID.
    let pod = TestNetns::new("pod");
    let mut req = claim_req(&pod, "c1");
    req.pod.uid = Some("uid-from-cni-args".into());
    req.pod_annotations = true;
    if let Some(server) = &lab.server {
        server.clear_audit();
    }
    lab.claimed(&req).await;
    if let Some(server) = &lab.server {
        let reads: Vec<_> = server
            .audit()
            .into_iter()
            .filter(|r| r.resource == "pods")
            .map(|r| r.permission())
            .collect();
        assert!(reads.is_empty(), "the ADD read the pod: {reads:?}");
    }
    let bound = lab.hostnic(&name).await;
    let recorded = bound.status.and_then(|s| s.pod).and_then(|p| p.uid);
    assert_eq!(recorded.as_deref(), Some("uid-from-cni-args"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_finding_the_pool_empty_waits_for_the_nic_on_its_way() {
    if !require_root("an_add_finding_the_pool_empty_waits_for_the_nic_on_its_way") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    // The operator is attaching the pool's only NIC: no link on the node yet.
    let name = lab.add_hostnic(1).await;
    lab.set_phase(&name, HostNicPhase::Attaching).await;
    let agent = lab.start_agent().await;
    let pod = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c1").await;
    let started = std::time::Instant::now();
    let claim = lab.spawn_claim(claim_req(&pod, "c1"));
    // The ADD is held and the operator told; the answer is not "try again later".
    lab.wait_told().await;
    assert!(!claim.is_finished(), "{:?}", claim.await);

    // The NIC arrives: hot-plugged, then Available.
    lab.node.add_fake_nic("hn1", &mac(1));
    lab.set_phase(&name, HostNicPhase::Available).await;
    let (code, body) = tokio::time::timeout(Duration::from_secs(10), claim)
        .await
        .expect("the held ADD answers once the NIC is there")
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_value::<Attachment>(body).unwrap().mac,
        mac(1)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        lab.says_waiting_within_10s(false).await,
        "the waiting annotation stays after the ADD answered"
    );

    // The pool's one NIC is Bound: the operator owes this node its refill even before the
    // refill's HostNic appears, so the next ADD is held too, and takes the NIC when it comes.
    let second = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c2").await;
    let claim = lab.spawn_claim(claim_req(&second, "c2"));
    lab.wait_told().await;
    assert!(!claim.is_finished(), "{:?}", claim.await);
    lab.add_nic(2).await;
    let (code, body) = tokio::time::timeout(Duration::from_secs(10), claim)
        .await
        .expect("the held ADD answers once the refill is there")
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_value::<Attachment>(body).unwrap().mac,
        mac(2)
    );

    // Nothing on its way when the operator says the pool cannot grow (Degraded): the next ADD
    // answers 11 at once.
    lab.set_pool_degraded(POOL).await;
    let other = TestNetns::new("pod");
    let started = std::time::Instant::now();
    let (code, body) = post(&lab.socket(), path::CLAIM, &claim_req(&other, "c3")).await;
    assert_eq!(error_kind(&body), ErrorKind::TryAgainLater, "{code} {body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(agent);
}

/// A route with gateway `0.0.0.0` goes through the node's own address in the vxnet, read from
/// the node's kernel when the NIC moves: no NicPool status carries per-node data for it. While
/// the node has no address there (its gateway NIC is still being set up), ADD answers 11 and
/// the NIC stays free and home.
#[tokio::test]
async fn routes_via_the_node_take_its_address_from_the_kernel_not_the_pool_status() {
    if !require_root("routes_via_the_node_take_its_address_from_the_kernel_not_the_pool_status") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let pools: Api<NicPool> = Api::all(lab.client.clone());
    assert!(pools.get(POOL).await.unwrap().status.is_none());
    let agent = lab.start_agent_free(1).await;

    lab.set_node_address(None);
    lab.create_pod("c1").await;
    let pod = TestNetns::new("pod");
    let (code, body) = post(&lab.socket(), path::CLAIM, &claim_req(&pod, "c1")).await;
    assert_eq!(error_kind(&body), ErrorKind::TryAgainLater, "{code} {body}");
    assert!(
        body["message"].as_str().unwrap().contains("10.77.0.0/24"),
        "{body}"
    );
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Available);
    assert!(
        lab.node.link_by_mac(&mac(1)).is_some(),
        "the link stayed home"
    );

    lab.set_node_address(Some("10.77.0.250"));
    let att = lab.claimed(&claim_req(&pod, "c1")).await;
    let via_node = hostnic_agent_api::Route {
        dst: "10.96.0.0/12".into(),
        gw: Some("10.77.0.250".into()),
    };
    assert!(att.routes.contains(&via_node), "{:?}", att.routes);
    let routes = pod.ip(&["-4", "route", "show", "10.96.0.0/12"]);
    assert!(routes.contains("via 10.77.0.250 dev eth0"), "{routes}");
    drop(agent);
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_a_nic_twice() {
    if !require_root("concurrent_claims_never_hand_out_a_nic_twice") {
        return;
    }
    const NICS: usize = 5;
    const PODS: usize = 32;
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(NICS).await;
    let _agent = lab.start_agent_free(NICS as u32).await;
    let pods: Vec<Arc<TestNetns>> = (0..PODS).map(|_| Arc::new(TestNetns::new("pod"))).collect();
    for i in 0..PODS {
        lab.create_pod(&format!("c{i}")).await;
    }
    let socket = lab.socket();
    let mut tasks = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let (socket, pod) = (socket.clone(), pod.clone());
        tasks.push(tokio::spawn(async move {
            post(&socket, path::CLAIM, &claim_req(&pod, &format!("c{i}"))).await
        }));
    }
    let mut ok = Vec::new();
    let mut later = 0;
    for t in tasks {
        let (code, body) = t.await.unwrap();
        if code == StatusCode::OK {
            ok.push(serde_json::from_value::<Attachment>(body).unwrap());
        } else {
            assert_eq!(error_kind(&body), ErrorKind::TryAgainLater, "{code} {body}");
            later += 1;
        }
    }
    assert_eq!(ok.len(), NICS);
    assert_eq!(later, PODS - NICS);
    let mut macs: Vec<_> = ok.iter().map(|a| a.mac.clone()).collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), NICS, "a NIC was handed out twice: {ok:?}");
    assert_invariants(&lab, &pods).await;
}

/// Each NIC is in at most one place, each Bound HostNic's link is in its pod under its pod
/// name, and no NIC is Bound twice.
async fn assert_invariants(lab: &Lab, pods: &[Arc<TestNetns>]) {
    let mut places: HashMap<String, Vec<String>> = HashMap::new();
    for l in lab.node.links() {
        places.entry(l.mac.clone()).or_default().push("node".into());
    }
    for p in pods {
        for l in p.links() {
            places
                .entry(l.mac.clone())
                .or_default()
                .push(p.name().to_owned());
        }
    }
    let by_path: HashMap<String, &TestNetns> = pods
        .iter()
        .map(|p| (p.path().display().to_string(), &**p))
        .collect();
    for nic in lab.hostnics().await {
        let st = nic.status.clone().unwrap();
        let m = st.nic_id.clone().unwrap();
        let seen = places.get(&m).cloned().unwrap_or_default();
        assert!(seen.len() <= 1, "NIC {m} is in several netns: {seen:?}");
        if st.phase == HostNicPhase::Bound {
            let pod = st.pod.clone().unwrap();
            let ns = by_path.get(&pod.netns).expect("bound to a test pod");
            assert_eq!(
                ns.link_by_mac(&m).as_deref(),
                Some(pod.interface.as_str()),
                "bound NIC {m} not in its pod"
            );
        } else {
            assert_eq!(
                seen,
                vec!["node".to_owned()],
                "free NIC {m} ({:?}) not on the node",
                st.phase
            );
        }
    }
}

#[tokio::test]
async fn restart_keeps_live_pods_and_releases_half_done_claims() {
    if !require_root("restart_keeps_live_pods_and_releases_half_done_claims") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(3).await;
    let agent = lab.start_agent_free(3).await;
    let live = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c1").await;
    let att = lab.claimed(&claim_req(&live, "c1")).await;
    drop(agent);

    // A claim recorded on the HostNic whose kernel step never ran (killed in between).
    let half = Arc::new(TestNetns::new("pod"));
    let api: Api<HostNic> = Api::all(lab.client.clone());
    let victim = lab.nics[&mac(2)].clone();
    let mut nic = api.get(&victim).await.unwrap();
    let st = nic.status.as_mut().unwrap();
    st.phase = HostNicPhase::Bound;
    st.pod = Some(hostnic_crds::PodRef {
        namespace: "default".into(),
        name: "c2".into(),
        uid: None,
        container_id: "c2".into(),
        netns: half.path().display().to_string(),
        interface: "eth0".into(),
        network: None,
    });
    api.replace_status(&victim, &PostParams::default(), &nic)
        .await
        .unwrap();
    let live_index = live.ip(&["-j", "link", "show", "eth0"]);

    let agent = lab.start_agent().await;
    assert_eq!(phase(&lab.hostnic(&victim).await), HostNicPhase::Released);
    assert_eq!(phase(&lab.hostnic(&att.hostnic).await), HostNicPhase::Bound);
    assert_eq!(
        live.ip(&["-j", "link", "show", "eth0"]),
        live_index,
        "live pod was touched"
    );
    assert_eq!(live.addresses("eth0"), vec![att.address.clone()]);
    // The repeated ADD after the restart still gets the same answer.
    assert_eq!(lab.claimed(&claim_req(&live, "c1")).await, att);
    assert_invariants(&lab, &[live.clone(), half.clone()]).await;
    drop(agent);
}

#[tokio::test]
async fn sweep_releases_nics_of_vanished_pods() {
    if !require_root("sweep_releases_nics_of_vanished_pods") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nic(1).await;
    lab.add_nic(2).await;
    let agent = lab.start_agent_free(2).await;
    let socket = lab.socket();
    let (gone_ns, gone_pod) = (TestNetns::new("pod"), TestNetns::new("pod"));
    lab.create_pod("c1").await;
    lab.create_pod("c2").await;
    let (_, a1) = post(&socket, path::CLAIM, &claim_req(&gone_ns, "c1")).await;
    let (_, a2) = post(&socket, path::CLAIM, &claim_req(&gone_pod, "c2")).await;
    let (a1, a2): (Attachment, Attachment) = (
        serde_json::from_value(a1).unwrap(),
        serde_json::from_value(a2).unwrap(),
    );
    assert_eq!(hostnic_agent::hygiene::sweep(&agent.agent).await, 0);

    drop(gone_ns);
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), "default");
    pods.delete("c2", &DeleteParams::default()).await.unwrap();
    // The pod's netns still exists but its pod is gone: its NIC is brought home and released.
    assert_eq!(hostnic_agent::hygiene::sweep(&agent.agent).await, 1);
    assert_eq!(
        phase(&lab.hostnic(&a2.hostnic).await),
        HostNicPhase::Released
    );
    assert!(lab.node.link_by_mac(&mac(2)).is_some());
    assert!(gone_pod.links().iter().all(|l| l.name == "lo"));
    // The destroyed netns took the link along and it is not home yet (a real NIC comes back
    // by itself, seconds later): without proof, the NIC stays Bound.
    assert_eq!(phase(&lab.hostnic(&a1.hostnic).await), HostNicPhase::Bound);
    nic_comes_home(&lab, 1, "dev1");
    wait_phase(&lab, &a1.hostnic, HostNicPhase::Released).await;
}

/// Puts NIC `i`'s link back on the node under `name`, as the kernel does with a real NIC
/// whose pod netns was destroyed (the veth stand-in vanishes with it instead).
fn nic_comes_home(lab: &Lab, i: usize, name: &str) {
    assert_eq!(
        lab.node.link_by_mac(&mac(i)),
        None,
        "NIC {i} is already home"
    );
    lab.node.add_fake_nic(name, &mac(i));
}

/// Waits (at most 20 s, the link pass reacts to link events) for a HostNic's phase.
async fn wait_phase(lab: &Lab, name: &str, want: HostNicPhase) {
    let became = eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async move { phase(&lab.hostnic(name).await) == want },
    )
    .await;
    if !became {
        panic!(
            "{name} never became {want:?}: {:?}",
            lab.hostnic(name).await.status
        );
    }
}

/// The DELs queued in the lab agent's journal.
fn queued_dels(lab: &Lab) -> Vec<String> {
    let dir = hostnic_agent_api::pending_del::dir(&lab.socket());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits (at most 20 s) until no DEL is queued.
async fn wait_queue_empty(lab: &Lab) {
    let drained = eventually(Duration::from_secs(20), Duration::from_millis(50), || {
        ready(queued_dels(lab).is_empty())
    })
    .await;
    assert!(drained, "queued DELs never drained: {:?}", queued_dels(lab));
}

/// Runs `ip -n <netns> args`.
fn ip_n(netns: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip -n {netns} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPv4 addresses of `link` in `netns`.
fn addresses_in(netns: &str, link: &str) -> Vec<String> {
    let json = ip_n(netns, &["-j", "-4", "addr", "show", "dev", link]);
    let links: Vec<Value> = serde_json::from_str(&json).unwrap();
    links
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Makes a live pod netns's path unopenable without ending the netns: the namespace stays
/// reachable under `<name>-keep`, and its path becomes a unix socket (open: ENXIO), like a
/// netns path the agent's mount cannot see or open. Restored on drop.
struct Unopenable {
    path: PathBuf,
    keep: String,
    _socket: std::os::unix::net::UnixListener,
}

impl Unopenable {
    fn new(pod: &TestNetns) -> Self {
        let keep = format!("{}-keep", pod.name());
        let keep_path = Path::new("/var/run/netns").join(&keep);
        std::fs::write(&keep_path, "").unwrap();
        sh(&[
            "mount",
            "--bind",
            pod.path().to_str().unwrap(),
            keep_path.to_str().unwrap(),
        ]);
        sh(&["umount", pod.path().to_str().unwrap()]);
        std::fs::remove_file(pod.path()).unwrap();
        let socket = std::os::unix::net::UnixListener::bind(pod.path()).unwrap();
        assert!(std::fs::File::open(pod.path()).is_err());
        Self {
            path: pod.path(),
            keep,
            _socket: socket,
        }
    }

    /// The netns name that still reaches the namespace.
    fn keep(&self) -> &str {
        &self.keep
    }
}

impl Drop for Unopenable {
    fn drop(&mut self) {
        let keep_path = Path::new("/var/run/netns").join(&self.keep);
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::write(&self.path, "");
        let _ = std::process::Command::new("mount")
            .args(["--bind"])
            .arg(&keep_path)
            .arg(&self.path)
            .status();
        let _ = std::process::Command::new("umount")
            .arg(&keep_path)
            .status();
        let _ = std::fs::remove_file(&keep_path);
    }
}

fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

#[tokio::test]
async fn restart_keeps_running_pods_whatever_changed_meanwhile() {
    if !require_root("restart_keeps_running_pods_whatever_changed_meanwhile") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(3).await;
    let agent = lab.start_agent_free(3).await;
    let pods: Vec<Arc<TestNetns>> = (0..3).map(|_| Arc::new(TestNetns::new("pod"))).collect();
    let mut atts = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        lab.create_pod(&format!("c{i}")).await;
        let (code, body) = post(
            &lab.socket(),
            path::CLAIM,
            &claim_req(pod, &format!("c{i}")),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        atts.push(serde_json::from_value::<Attachment>(body).unwrap());
    }
    let intact = |netns: &str, att: &Attachment| {
        assert_eq!(
            addresses_in(netns, "eth0"),
            vec![att.address.clone()],
            "pod {netns} lost eth0 or its address"
        );
    };
    // 1. A route is added to the pool, then the agent restarts (every upgrade does).
    drop(agent);
    let pools: Api<NicPool> = Api::all(lab.client.clone());
    let mut pool = pools.get(POOL).await.unwrap();
    pool.spec.routes.push(hostnic_crds::Route {
        destination: "192.168.0.0/16".into(),
        gateway: "0.0.0.0".into(),
    });
    pools
        .replace(POOL, &PostParams::default(), &pool)
        .await
        .unwrap();
    let agent = lab.start_agent().await;
    for (pod, att) in pods.iter().zip(&atts) {
        intact(pod.name(), att);
        assert_eq!(phase(&lab.hostnic(&att.hostnic).await), HostNicPhase::Bound);
    }
    drop(agent);
    // 2. The operator replaced the node's gateway NIC: a new address in the vxnet.
    lab.set_node_address(Some("10.77.0.253"));
    // 3. One pod's netns path cannot be opened (not "gone": it may still run).
    let hidden = Unopenable::new(&pods[2]);
    let agent = lab.start_agent().await;
    for (i, att) in atts.iter().enumerate() {
        let netns = if i == 2 {
            hidden.keep()
        } else {
            pods[i].name()
        };
        intact(netns, att);
        assert_eq!(phase(&lab.hostnic(&att.hostnic).await), HostNicPhase::Bound);
    }
    // The repeated ADD gets what the claim applied then, not what the pool says today.
    assert_eq!(lab.claimed(&claim_req(&pods[0], "c0")).await, atts[0]);
    // The sweep does not take an unopenable netns as gone, even once its pod left the API:
    // the NIC is not provably home, so it stays Bound and in the pod.
    let api_pods: Api<Pod> = Api::namespaced(lab.client.clone(), "default");
    api_pods
        .delete("c2", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(hostnic_agent::hygiene::sweep(&agent.agent).await, 0);
    intact(hidden.keep(), &atts[2]);
    assert_eq!(
        phase(&lab.hostnic(&atts[2].hostnic).await),
        HostNicPhase::Bound
    );
    drop(agent);
    drop(hidden);
}

#[tokio::test]
async fn release_without_the_link_home_keeps_the_nic_bound_until_it_returns() {
    if !require_root("release_without_the_link_home_keeps_the_nic_bound_until_it_returns") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let agent = lab.start_agent_free(1).await;
    let (pod, _) = lab.pod_claimed("c1").await;
    // The runtime destroyed the netns before its DEL: the link went with it.
    drop(pod);
    let (code, body) = post(&lab.socket(), path::RELEASE, &release_req("c1", None)).await;
    assert_eq!(code, StatusCode::OK, "DEL must complete: {body}");
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Bound);
    assert_eq!(
        link_ready_reason(&lab, &name).await,
        ("False".into(), "InPod".into())
    );
    assert_eq!(queued_dels(&lab), vec!["c1_eth0".to_owned()]);
    // Still unproven on the next retry.
    assert_eq!(agent.agent.drain_queued().await, 1);
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Bound);
    // The link comes home: the link event is the proof.
    nic_comes_home(&lab, 1, "dev1");
    wait_phase(&lab, &name, HostNicPhase::Released).await;
    let st = lab.hostnic(&name).await.status.unwrap();
    assert_eq!(st.host_interface.as_deref(), Some("dev1"));
    // What the operator checks before it recycles or deletes a Released NIC.
    assert_eq!(
        link_ready_reason(&lab, &name).await,
        ("True".into(), "LinkPresent".into())
    );
    wait_queue_empty(&lab).await;
}

/// The `LinkReady` condition's status and reason.
async fn link_ready_reason(lab: &Lab, name: &str) -> (String, String) {
    let st = lab.hostnic(name).await.status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "LinkReady")
        .expect("LinkReady condition");
    (c.status.clone(), c.reason.clone())
}

// === the real binary, killed mid-claim ===

/// The agent binary as a child process; killed with SIGKILL on drop.
struct AgentProcess(std::process::Child);

impl AgentProcess {
    fn spawn(lab: &Lab) -> Self {
        Self::spawn_with(lab, &[])
    }

    /// Spawns the agent with extra environment variables.
    fn spawn_with(lab: &Lab, env: &[(&str, String)]) -> Self {
        let kubeconfig = lab.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, lab.kubeconfig_yaml()).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hostnic-agent"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("KUBECONFIG", &kubeconfig)
            .env("NODE_NAME", &lab.node_name)
            .env("RUST_LOG", "hostnic_agent=info")
            .arg("--node-netns")
            .arg(lab.node.path())
            .arg("--socket")
            .arg(lab.socket())
            .args(["--health-addr", "127.0.0.1:0", "--link-scan-seconds", "1"])
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(lab.dir.path().join("agent.log"))
                    .unwrap(),
            )
            .spawn()
            .expect("start hostnic-agent");
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends SIGTERM, as kubelet does when it stops the pod.
    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    fn is_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit on its own; panics after `within`.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let until = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < until,
                "agent did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the agent on the lab's socket reports `free` free NICs and has synced.
async fn wait_ready(lab: &Lab, free: u32) {
    let ready = eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async move {
            if lab.socket().exists()
                && let Ok(Ok(stream)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::UnixStream::connect(lab.socket()),
                )
                .await
            {
                drop(stream);
                let (code, body) = call(&lab.socket(), Method::GET, path::STATUS, vec![]).await;
                return code == StatusCode::OK
                    && serde_json::from_value::<AgentStatus>(body)
                        .is_ok_and(|s| s.synced && s.free_nics >= free);
            }
            false
        },
    )
    .await;
    if !ready {
        let log = std::fs::read_to_string(lab.dir.path().join("agent.log")).unwrap_or_default();
        panic!("agent never became ready; its log:\n{log}");
    }
}

/// Ends the quarantine of every Released HostNic, as the operator does.
async fn return_released(lab: &Lab) {
    let api: Api<HostNic> = Api::all(lab.client.clone());
    for mut nic in lab.hostnics().await {
        let st = nic.status.as_mut().unwrap();
        if st.phase == HostNicPhase::Released {
            st.phase = HostNicPhase::Available;
            st.pod = None;
            st.released_at = None;
            api.replace_status(&nic.name_any(), &PostParams::default(), &nic)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_claim_and_restarted_keeps_the_invariants() {
    if !require_root("killed_mid_claim_and_restarted_keeps_the_invariants") {
        return;
    }
    const NICS: usize = 8;
    const PODS: usize = 6;
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(NICS).await;
    let mut all_pods: Vec<Arc<TestNetns>> = Vec::new();
    let mut agent = AgentProcess::spawn(&lab);
    // Kill points: right after the first answer, and after fixed delays that land mid-claim.
    for (round, kill_after_ms) in [None, Some(5), Some(25)].into_iter().enumerate() {
        wait_ready(&lab, 1).await;
        let pods: Vec<Arc<TestNetns>> =
            (0..PODS).map(|_| Arc::new(TestNetns::new("pod"))).collect();
        for i in 0..PODS {
            lab.create_pod(&format!("r{round}c{i}")).await;
        }
        let socket = lab.socket();
        let tasks: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (socket, pod) = (socket.clone(), pod.clone());
                tokio::spawn(async move {
                    post(
                        &socket,
                        path::CLAIM,
                        &claim_req(&pod, &format!("r{round}c{i}")),
                    )
                    .await
                })
            })
            .collect();
        match kill_after_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => {
                while !tasks.iter().any(|t| t.is_finished()) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        agent.kill();
        let mut answered = 0;
        for t in tasks {
            if matches!(t.await, Ok((StatusCode::OK, _))) {
                answered += 1;
            }
        }
        let bound_before = lab
            .hostnics()
            .await
            .iter()
            .filter(|n| phase(n) == HostNicPhase::Bound)
            .count();
        all_pods.extend(pods);

        agent = AgentProcess::spawn(&lab);
        wait_ready(&lab, 0).await;
        assert_invariants(&lab, &all_pods).await;
        let nics = lab.hostnics().await;
        let count = |p| nics.iter().filter(|n| phase(n) == p).count();
        let (bound, released) = (count(HostNicPhase::Bound), count(HostNicPhase::Released));
        eprintln!(
            "round {round}: killed after {answered} answered claims ({bound_before} recorded); \
             after restart {bound} bound, {released} released"
        );
        assert!(bound >= answered, "an answered claim was lost");
        return_released(&lab).await;
    }
}

// === through libcni and the hostnic plugin ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcni_add_check_del_through_the_plugin() {
    if !require_root("libcni_add_check_del_through_the_plugin") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nic(1).await;
    let _agent = lab.start_agent_free(1).await;
    lab.create_pod("p1").await;
    let pod = TestNetns::new("pod");
    let conflist = lab.conflist("hostnic.conflist", json!({}));
    let rt = Arc::new(
        lab.runtime("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID=ctr1"),
    );
    let netns = pod.path();
    // One libcni verb for `ctr1` as `eth0`, off the runtime's threads.
    let verb = |netns: PathBuf, f: fn(&CniRuntime, &Path, &Path) -> Result<Value, CniFailure>| {
        let (rt, conflist) = (rt.clone(), conflist.clone());
        blocking(move || f(&rt, &conflist, &netns))
    };

    let result = verb(netns.clone(), |rt, c, n| rt.add(c, "ctr1", n, "eth0"))
        .await
        .expect("ADD");
    assert_eq!(result["interfaces"][0]["name"], "eth0", "{result}");
    assert_eq!(
        result["ips"][0]["address"],
        format!("{}/24", ip(1)),
        "{result}"
    );
    assert_eq!(pod.link_by_mac(&mac(1)).as_deref(), Some("eth0"));

    let check =
        |rt: &CniRuntime, c: &Path, n: &Path| rt.check(c, "ctr1", n, "eth0").map(|()| Value::Null);
    verb(netns.clone(), check).await.expect("CHECK");
    pod.ip(&["addr", "flush", "dev", "eth0"]);
    let failed = verb(netns.clone(), check).await.is_err();
    assert!(failed, "CHECK missed a removed address");

    for netns in [netns.clone(), PathBuf::new()] {
        verb(netns, |rt, c, n| {
            rt.del(c, "ctr1", n, "eth0").map(|()| Value::Null)
        })
        .await
        .expect("DEL");
    }
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    wait_phase(&lab, &lab.nics[&mac(1)], HostNicPhase::Released).await;
}

// === gateway NICs and figures ===

#[tokio::test]
async fn gateway_nics_are_configured_on_the_node_and_never_claimed() {
    if !require_root("gateway_nics_are_configured_on_the_node_and_never_claimed") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(9).await;
    let api: Api<HostNic> = Api::all(lab.client.clone());
    let mut nic = api.get(&name).await.unwrap();
    nic.spec.role = NicRole::Gateway;
    let nic = api
        .replace(&name, &PostParams::default(), &nic)
        .await
        .unwrap();
    assert_eq!(nic.spec.role, NicRole::Gateway);
    let agent = lab.start_agent().await;
    let configured = eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        ready(lab.node.addresses("hn9") == vec![format!("{}/24", ip(9))])
    })
    .await;
    assert!(configured, "gateway NIC configured");
    assert!(
        lab.node
            .links()
            .iter()
            .find(|l| l.name == "hn9")
            .unwrap()
            .up
    );
    // No free NIC is no reason to be unready: ADD answers "try again later" for that, while an
    // unready agent would make the runtime report the whole node NotReady.
    let status = agent.agent.status();
    assert_eq!((status.free_nics, status.ready), (0, true), "{status:?}");
    let (code, body) = health_get(agent.health_addr.unwrap(), "/readyz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let pod = TestNetns::new("pod");
    lab.create_pod("c1").await;
    let (code, body) = post(&lab.socket(), path::CLAIM, &claim_req(&pod, "c1")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_kind(&body), ErrorKind::TryAgainLater);
}

/// Prints claim and release round-trip times over the socket (no timing assertions).
#[tokio::test]
async fn claim_and_release_figures() {
    if !require_root("claim_and_release_figures") {
        return;
    }
    const N: usize = 12;
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(N).await;
    let _agent = lab.start_agent_free(N as u32).await;
    let pods: Vec<TestNetns> = (0..N).map(|_| TestNetns::new("pod")).collect();
    for i in 0..N {
        lab.create_pod(&format!("c{i}")).await;
    }
    let socket = lab.socket();
    let (mut claims, mut releases) = (Vec::new(), Vec::new());
    for (i, pod) in pods.iter().enumerate() {
        let t = std::time::Instant::now();
        let (code, body) = post(&socket, path::CLAIM, &claim_req(pod, &format!("c{i}"))).await;
        claims.push(t.elapsed());
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    for (i, pod) in pods.iter().enumerate() {
        let t = std::time::Instant::now();
        let (code, body) = post(
            &socket,
            path::RELEASE,
            &release_req(&format!("c{i}"), Some(pod)),
        )
        .await;
        releases.push(t.elapsed());
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    for (what, mut v) in [("claim", claims), ("release", releases)] {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
            v.len(),
            ms(v[v.len() / 2]),
            ms(v[(v.len() * 99 / 100).min(v.len() - 1)]),
            ms(v[v.len() - 1])
        );
    }
}

#[tokio::test]
async fn a_claim_failing_in_the_kernel_is_undone_and_reported() {
    if !require_root("a_claim_failing_in_the_kernel_is_undone_and_reported") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let _agent = lab.start_agent_free(1).await;
    let pod = TestNetns::new("pod");
    lab.create_pod("c1").await;
    let mut req = claim_req(&pod, "c1");
    // The kernel refuses a next hop outside the pod's subnet: the last step fails.
    req.routes.push(hostnic_agent_api::Route {
        dst: "10.200.0.0/16".into(),
        gw: Some("192.168.99.1".into()),
    });
    let (code, body) = post(&lab.socket(), path::CLAIM, &req).await;
    assert_eq!(
        (code, error_kind(&body)),
        (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("add route"),
        "{body}"
    );
    let nic = lab.hostnic(&name).await;
    assert_eq!(phase(&nic), HostNicPhase::Available);
    assert_eq!(nic.status.unwrap().pod, None);
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert!(pod.links().iter().all(|l| l.name == "lo"));

    // The NIC is free again and the next claim gets it; the failure is a Warning on it, the
    // success no event (#17.2: no API write per claim on the hot path).
    lab.claimed(&claim_req(&pod, "c1")).await;
    let failed = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            events_about(&lab, "HostNic", &name)
                .await
                .iter()
                .any(|e| e.reason.as_deref() == Some("ClaimFailed"))
        },
    )
    .await;
    assert!(failed, "a ClaimFailed event");
    let reasons: Vec<_> = events_about(&lab, "HostNic", &name)
        .await
        .into_iter()
        .map(|e| (e.type_, e.reason))
        .collect();
    assert_eq!(
        reasons,
        [(Some("Warning".into()), Some("ClaimFailed".into()))],
        "only the failure is an event"
    );
}

/// Every event in the lab about the `kind` object `name`.
async fn events_about(lab: &Lab, kind: &str, name: &str) -> Vec<Event> {
    Api::<Event>::all(lab.client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .collect()
}

/// The value of the sample `series` (name and labels as printed) on the agent's `/metrics`.
async fn sample(agent: &run::Running, series: &str) -> Option<f64> {
    let (code, text) = health_get(agent.health_addr.expect("health server runs"), "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn claims_publish_no_normal_event() {
    if !require_root("claims_publish_no_normal_event") {
        return;
    }
    const N: usize = 3;
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(N).await;
    let agent = lab.start_agent_free(N as u32).await;
    let mut pods = Vec::new();
    for i in 0..N {
        pods.push(lab.pod_claimed(&format!("c{i}")).await);
    }
    // Events are published off the claim's path: give any a moment to land (the old per-claim
    // `Claimed` event did within milliseconds).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = Api::<Event>::all(lab.client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let normal: Vec<_> = events
        .iter()
        .filter(|e| e.type_.as_deref() != Some("Warning"))
        .map(|e| (&e.reason, &e.regarding))
        .collect();
    assert!(normal.is_empty(), "events other than Warnings: {normal:?}");
    assert_eq!(
        sample(
            &agent,
            "hostnic_agent_claim_duration_seconds_count{path=\"warm\"}"
        )
        .await,
        Some(N as f64)
    );
    assert_eq!(sample(&agent, "hostnic_agent_synced").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_add_warns_on_the_pod_and_pool() {
    if !require_root("a_waiting_add_warns_on_the_pod_and_pool") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    // The operator is attaching the pool's only NIC: an ADD waits for it.
    let name = lab.add_hostnic(1).await;
    lab.set_phase(&name, HostNicPhase::Attaching).await;
    let agent = lab.start_agent().await;
    let pod = TestNetns::new("pod");
    lab.create_pod("c1").await;
    // The runtime gives up on the ADD after 1 s (scaled down from 30 so the test can repeat it)
    // and retries: each attempt waits, none may add an event object.
    const ATTEMPTS: usize = 3;
    let mut req = claim_req(&pod, "c1");
    req.wait_for_nic_seconds = 1;
    for _ in 0..ATTEMPTS {
        let (code, body) = lab.claim(&req).await;
        assert_eq!(error_kind(&body), ErrorKind::TryAgainLater, "{code} {body}");
    }
    let uid = Api::<Pod>::namespaced(lab.client.clone(), "default")
        .get("c1")
        .await
        .unwrap()
        .metadata
        .uid;
    let aggregated = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let on_pod = events_about(&lab, "Pod", "c1").await;
            on_pod.len() == 1 && on_pod[0].series.as_ref().map(|s| s.count) == Some(ATTEMPTS as i32)
        },
    )
    .await;
    let on_pod = events_about(&lab, "Pod", "c1").await;
    assert!(
        aggregated,
        "one event in a series of {ATTEMPTS}: {on_pod:#?}"
    );
    let ev = &on_pod[0];
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.reason.as_deref(), Some("WaitingForNic"));
    assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
    let regarding = ev.regarding.as_ref().unwrap();
    assert_eq!(regarding.namespace.as_deref(), Some("default"));
    assert_eq!(regarding.uid, uid);
    let note = ev.note.as_deref().unwrap_or_default();
    assert!(
        note.contains(POOL) && note.contains(&lab.node_name),
        "the note names the pool and the node: {note}"
    );
    // The pool hears of it too, once per episode (each timed-out ADD ended one).
    let on_pool = events_about(&lab, "NicPool", POOL).await;
    assert_eq!(on_pool.len(), 1, "{on_pool:#?}");
    assert_eq!(on_pool[0].reason.as_deref(), Some("WaitingForNic"));
    assert!(
        on_pool[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("default/c1") && n.contains(&lab.node_name)),
        "{:?}",
        on_pool[0].note
    );

    // The claim latency tells the waited claims from the warm ones, in buckets from 1 ms to
    // beyond the longest wait.
    let waited = "hostnic_agent_claim_duration_seconds";
    assert_eq!(
        sample(&agent, &format!("{waited}_count{{path=\"waited\"}}")).await,
        Some(ATTEMPTS as f64)
    );
    assert_eq!(
        sample(
            &agent,
            &format!("{waited}_bucket{{le=\"0.512\",path=\"waited\"}}")
        )
        .await,
        Some(0.0),
        "a waited claim took its 1 s"
    );
    assert_eq!(
        sample(
            &agent,
            &format!("{waited}_bucket{{le=\"0.001\",path=\"waited\"}}")
        )
        .await,
        Some(0.0)
    );
    assert_eq!(
        sample(
            &agent,
            &format!("{waited}_bucket{{le=\"65.536\",path=\"waited\"}}")
        )
        .await,
        Some(ATTEMPTS as f64)
    );
    assert_eq!(
        sample(
            &agent,
            "hostnic_agent_claims_total{outcome=\"no_free_nic\"}"
        )
        .await,
        Some(ATTEMPTS as f64),
    );
    assert_eq!(sample(&agent, "hostnic_agent_synced").await, Some(1.0));
}

/// The `LinkReady` condition's status of HostNic `name`, if reported.
async fn link_ready(lab: &Lab, name: &str) -> Option<String> {
    lab.hostnic(name)
        .await
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "LinkReady")
        .map(|c| c.status)
}

/// Waits up to `within` for HostNic `name`'s `LinkReady` to become `want`.
async fn wait_link_ready(lab: &Lab, name: &str, want: &str, within: Duration) {
    let became = eventually(within, Duration::from_millis(50), || async move {
        link_ready(lab, name).await.as_deref() == Some(want)
    })
    .await;
    if !became {
        let status = lab.hostnic(name).await.status;
        panic!("LinkReady of {name} never became {want} within {within:?}: {status:?}");
    }
}

/// With the periodic scan an hour away, a NIC plugged into (or pulled from) the node after
/// its HostNic exists is still reported at once: link events wake the link pass.
#[tokio::test]
async fn hot_plugged_link_is_reported_without_waiting_for_the_scan() {
    if !require_root("hot_plugged_link_is_reported_without_waiting_for_the_scan") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_hostnic(5).await;
    let args = Args {
        link_scan_seconds: 3600,
        ..lab.args()
    };
    let agent = start_recovered(&args, lab.client.clone()).await;
    wait_link_ready(&lab, &name, "False", Duration::from_secs(10)).await;
    // Let the pass that the agent's own status write triggers go by, so only a link event
    // can wake the next one.
    tokio::time::sleep(Duration::from_secs(1)).await;

    lab.node.add_fake_nic("hn5", &mac(5));
    wait_link_ready(&lab, &name, "True", Duration::from_secs(5)).await;
    let nic = lab.hostnic(&name).await;
    assert_eq!(
        nic.status.and_then(|s| s.host_interface).as_deref(),
        Some("hn5")
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.node.ip(&["link", "del", "hn5"]);
    wait_link_ready(&lab, &name, "False", Duration::from_secs(5)).await;
    drop(agent);
}

// === DEL always completes ===

/// Runs the built `hostnic` plugin's DEL for `container` against the lab's socket.
fn plugin_del(lab: &Lab, container: &str, netns: Option<&TestNetns>) -> std::process::Output {
    use std::io::Write;
    let conf = json!({"cniVersion": "1.0.0", "name": "hostnic", "type": "hostnic",
                      "socket": lab.socket(), "timeoutSeconds": 2});
    let mut child = std::process::Command::new(hostnic_tests::bins::bin("hostnic"))
        .env("CNI_COMMAND", "DEL")
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_NETNS",
            netns
                .map(|n| n.path().display().to_string())
                .unwrap_or_default(),
        )
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dels_queued_while_the_agent_was_down_are_released_after_recovery() {
    if !require_root("dels_queued_while_the_agent_was_down_are_released_after_recovery") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let agent = lab.start_agent_free(1).await;
    let (pod, _) = lab.pod_claimed("c1").await;
    drop(agent);
    // The agent is down (an upgrade, a crash): the runtime's DEL still succeeds.
    let del = plugin_del(&lab, "c1", Some(&pod));
    assert!(del.status.success(), "{del:?}");
    assert_eq!(queued_dels(&lab), vec!["c1_eth0".to_owned()]);
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Bound);
    // Once back and recovered, the agent finishes it: the NIC is home and Released.
    let agent = lab.start_agent().await;
    wait_phase(&lab, &name, HostNicPhase::Released).await;
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert!(pod.links().iter().all(|l| l.name == "lo"));
    wait_queue_empty(&lab).await;
    drop(agent);
}

/// A TCP proxy in front of the API server that can be cut (existing connections too) and
/// restored, to make the API unreachable for the agent only.
struct ApiProxy {
    addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let task = tokio::spawn({
            let (up, conns) = (up.clone(), conns.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    conns.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    }));
                }
            }
        });
        Self {
            addr,
            up,
            conns,
            task,
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.set_up(false);
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_completes_while_the_api_is_down_and_is_recorded_once_it_is_back() {
    if !require_root("del_completes_while_the_api_is_down_and_is_recorded_once_it_is_back") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let proxy = ApiProxy::start(lab.api_addr().await).await;
    let proxied = lab.client_via(proxy.addr).await;
    let agent = start_recovered(&lab.args(), proxied).await;
    lab.wait_free(&agent, 1).await;
    let (pod, _) = lab.pod_claimed("c1").await;

    proxy.set_up(false);
    let (code, body) = post(&lab.socket(), path::RELEASE, &release_req("c1", Some(&pod))).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "DEL must complete without the API: {body}"
    );
    // The kernel step is done; the Released write waits in the queue.
    assert_eq!(lab.node.link_by_mac(&mac(1)).as_deref(), Some("hn1"));
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Bound);
    assert_eq!(queued_dels(&lab), vec!["c1_eth0".to_owned()]);

    proxy.set_up(true);
    wait_phase(&lab, &name, HostNicPhase::Released).await;
    wait_queue_empty(&lab).await;
    drop(agent);
}

// === graceful stop and kills at exact steps ===

/// The agent binary with a test pause point armed at `point`; returns it and the marker file
/// that appears when a claim reaches the point (remove it to let the claim go on).
fn spawn_paused(lab: &Lab, point: &str) -> (AgentProcess, PathBuf) {
    let marker = lab.dir.path().join(format!("{point}.paused"));
    let agent = AgentProcess::spawn_with(
        lab,
        &[(
            hostnic_agent::test_hooks::PAUSE_ENV,
            format!("{point}={}", marker.display()),
        )],
    );
    (agent, marker)
}

async fn wait_for_file(path: &Path) {
    let appeared = eventually(Duration::from_secs(20), Duration::from_millis(10), || {
        ready(path.exists())
    })
    .await;
    assert!(appeared, "{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_an_add_waiting_for_a_nic_at_once() {
    if !require_root("sigterm_answers_an_add_waiting_for_a_nic_at_once") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_hostnic(1).await;
    lab.set_phase(&name, HostNicPhase::Attaching).await;
    let mut agent = AgentProcess::spawn(&lab);
    wait_ready(&lab, 0).await;
    let pod = Arc::new(TestNetns::new("pod"));
    let claim = lab.spawn_claim(claim_req(&pod, "c1"));
    lab.wait_told().await;
    let stopped = std::time::Instant::now();
    agent.terminate();
    // The held ADD answers "try again later" rather than holding the stop for its grace.
    let (code, body) = tokio::time::timeout(Duration::from_secs(5), claim)
        .await
        .expect("the waiting ADD answers when the agent stops")
        .unwrap();
    assert_eq!(error_kind(&body), ErrorKind::TryAgainLater, "{code} {body}");
    assert!(agent.wait_exit(Duration::from_secs(5)).success());
    assert!(stopped.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_lets_the_claim_in_flight_finish_then_exits() {
    if !require_root("sigterm_stops_accepting_lets_the_claim_in_flight_finish_then_exits") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    lab.add_nic(2).await;
    let (mut agent, marker) = spawn_paused(&lab, hostnic_agent::test_hooks::CLAIM_ATTACHED);
    wait_ready(&lab, 2).await;
    let pod = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c1").await;
    let claim = lab.spawn_claim(claim_req(&pod, "c1"));
    wait_for_file(&marker).await;
    agent.terminate();
    // New requests are refused while the claim in flight still runs.
    let refused = eventually(Duration::from_secs(10), Duration::from_millis(10), || {
        let socket = lab.socket();
        async move { tokio::net::UnixStream::connect(socket).await.is_err() }
    })
    .await;
    assert!(refused, "the socket stops accepting on SIGTERM");
    assert!(agent.is_running(), "exited with a request in flight");
    assert!(!claim.is_finished());
    std::fs::remove_file(&marker).unwrap();
    let (code, body) = claim.await.unwrap();
    assert_eq!(
        code,
        StatusCode::OK,
        "the claim in flight must finish: {body}"
    );
    let status = agent.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Bound);
    assert_invariants(&lab, &[pod]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_no_longer_than_the_grace_period_and_the_cut_claim_is_undone() {
    if !require_root("sigterm_waits_no_longer_than_the_grace_period_and_the_cut_claim_is_undone") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let marker = lab.dir.path().join("recorded.paused");
    let mut agent = AgentProcess::spawn_with(
        &lab,
        &[
            (
                hostnic_agent::test_hooks::PAUSE_ENV,
                format!(
                    "{}={}",
                    hostnic_agent::test_hooks::CLAIM_RECORDED,
                    marker.display()
                ),
            ),
            // One second instead of 20: the claim stays paused, so the whole grace is waited.
            ("HOSTNIC_SHUTDOWN_GRACE_SECONDS", "1".into()),
        ],
    );
    wait_ready(&lab, 1).await;
    let pod = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c1").await;
    let claim = lab.spawn_claim(claim_req(&pod, "c1"));
    wait_for_file(&marker).await;
    agent.terminate();
    agent.wait_exit(Duration::from_secs(20));
    assert_ne!(claim.await.unwrap().0, StatusCode::OK);
    let _ = std::fs::remove_file(&marker);
    let _agent = AgentProcess::spawn(&lab);
    wait_ready(&lab, 0).await;
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Released);
    assert_invariants(&lab, &[pod]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_each_claim_step_the_restart_undoes_or_keeps_the_claim() {
    if !require_root("killed_at_each_claim_step_the_restart_undoes_or_keeps_the_claim") {
        return;
    }
    use hostnic_agent::test_hooks::{CLAIM_ATTACHED, CLAIM_RECORDED};
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(2).await;
    let mut pods = Vec::new();
    for (round, point) in [CLAIM_RECORDED, CLAIM_ATTACHED].into_iter().enumerate() {
        let (mut agent, marker) = spawn_paused(&lab, point);
        wait_ready(&lab, 1).await;
        let pod = Arc::new(TestNetns::new("pod"));
        pods.push(pod.clone());
        let container = format!("k{round}");
        lab.create_pod(&container).await;
        let claim = lab.spawn_claim(claim_req(&pod, &container));
        wait_for_file(&marker).await;
        // The claim is written on the HostNic (its write goes on while the kernel step waits
        // at CLAIM_RECORDED; for CLAIM_ATTACHED it is configured in the pod) but not answered:
        // kill -9 exactly there.
        let bound = bound_to(&lab, &container).await;
        agent.kill();
        assert_eq!(
            claim.await.unwrap().0.as_u16(),
            599,
            "answered before the kill"
        );
        std::fs::remove_file(&marker).unwrap();

        let _agent = AgentProcess::spawn(&lab);
        wait_ready(&lab, 0).await;
        assert_invariants(&lab, &pods).await;
        let nic = lab.hostnic(&bound.name_any()).await;
        let bound_to_it = lab
            .hostnics()
            .await
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.pod.as_ref())
                    .is_some_and(|p| p.container_id == container)
                    && phase(n) == HostNicPhase::Bound
            })
            .count();
        if point == CLAIM_RECORDED {
            // The link never moved: the claim is undone and the NIC is home.
            assert_eq!(phase(&nic), HostNicPhase::Released, "{point}");
            assert_eq!(bound_to_it, 0);
            assert!(lab.node.link_by_mac(&mac_of(&nic)).is_some());
        } else {
            // The pod is configured: kept, and the runtime's retried ADD gets that NIC.
            assert_eq!(phase(&nic), HostNicPhase::Bound, "{point}");
            assert_eq!(bound_to_it, 1, "a double claim");
            let att = lab.claimed(&claim_req(&pod, &container)).await;
            assert_eq!(att.hostnic, nic.name_any());
            assert_eq!(pod.addresses("eth0"), vec![att.address]);
        }
        drop(_agent);
        return_released(&lab).await;
    }
}

/// The HostNic bound to `container`, waiting up to 10 s for the claim's write.
async fn bound_to(lab: &Lab, container: &str) -> HostNic {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = lab.hostnics().await.into_iter().find(|n| {
            phase(n) == HostNicPhase::Bound
                && n.status
                    .as_ref()
                    .and_then(|s| s.pod.as_ref())
                    .is_some_and(|p| p.container_id == container)
        });
        match found {
            Some(nic) => return nic,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None => panic!("no HostNic bound to {container}"),
        }
    }
}

/// A claim stuck in its kernel step holds up no claim of another NIC: claims of different
/// NICs run in parallel (the old node-wide lock made the second wait for the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_stuck_midway_holds_up_no_claim_of_another_nic() {
    if !require_root("a_claim_stuck_midway_holds_up_no_claim_of_another_nic") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    lab.add_nics(2).await;
    let (_agent, marker) = spawn_paused(&lab, hostnic_agent::test_hooks::CLAIM_RECORDED);
    wait_ready(&lab, 2).await;
    let (stuck_pod, pod) = (
        Arc::new(TestNetns::new("pod")),
        Arc::new(TestNetns::new("pod")),
    );
    lab.create_pod("c1").await;
    lab.create_pod("c2").await;
    let stuck = lab.spawn_claim(claim_req(&stuck_pod, "c1"));
    wait_for_file(&marker).await;
    let (code, body) =
        tokio::time::timeout(Duration::from_secs(10), lab.claim(&claim_req(&pod, "c2")))
            .await
            .expect("the second claim waited for the stuck one");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        !stuck.is_finished(),
        "the first claim was not held at its hook"
    );
    std::fs::remove_file(&marker).unwrap();
    let (code, body) = stuck.await.unwrap();
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_invariants(&lab, &[stuck_pod, pod]).await;
}

/// DEL answers once its release is queued, before the link leaves the pod: the NIC stays
/// Bound until it is home. An agent killed then finishes the release from its journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_del_answers_before_the_link_is_home_and_a_kill_then_loses_nothing() {
    if !require_root("a_del_answers_before_the_link_is_home_and_a_kill_then_loses_nothing") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let (mut agent, marker) = spawn_paused(&lab, hostnic_agent::test_hooks::RELEASE_ANSWERED);
    wait_ready(&lab, 1).await;
    let pod = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c1").await;
    lab.claimed(&claim_req(&pod, "c1")).await;
    let (code, body) = tokio::time::timeout(
        Duration::from_secs(10),
        post(&lab.socket(), path::RELEASE, &release_req("c1", Some(&pod))),
    )
    .await
    .expect("the DEL waited for the link");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["hostnic"], name.as_str());
    wait_for_file(&marker).await;
    // Answered, and the link is still in the pod: the NIC must stay Bound meanwhile.
    assert_eq!(pod.link_by_mac(&mac(1)).as_deref(), Some("eth0"));
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Bound);
    assert_eq!(queued_dels(&lab), vec!["c1_eth0".to_owned()]);
    agent.kill();
    std::fs::remove_file(&marker).unwrap();
    let _agent = AgentProcess::spawn(&lab);
    wait_phase(&lab, &name, HostNicPhase::Released).await;
    wait_queue_empty(&lab).await;
    assert!(
        lab.node.link_by_mac(&mac(1)).is_some(),
        "the link is not home"
    );
    assert_invariants(&lab, &[pod]).await;
}

/// Killed after its link moved into the pod but before its HostNic write landed, a claim is
/// undone at the next start from the node journal alone: the link comes home, the NIC is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_hostnic_write_the_restart_brings_the_moved_link_home() {
    if !require_root("killed_before_the_hostnic_write_the_restart_brings_the_moved_link_home") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let name = lab.add_nic(1).await;
    let (mut agent, marker) = spawn_paused(&lab, hostnic_agent::test_hooks::CLAIM_WRITING);
    wait_ready(&lab, 1).await;
    let pod = Arc::new(TestNetns::new("pod"));
    lab.create_pod("c1").await;
    let claim = lab.spawn_claim(claim_req(&pod, "c1"));
    wait_for_file(&marker).await;
    let moved = eventually(Duration::from_secs(10), Duration::from_millis(10), || {
        ready(pod.link_by_mac(&mac(1)).is_some())
    })
    .await;
    assert!(moved, "the link never moved while the write waited");
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Available);
    agent.kill();
    assert_eq!(
        claim.await.unwrap().0.as_u16(),
        599,
        "answered before the kill"
    );
    std::fs::remove_file(&marker).unwrap();
    let _agent = AgentProcess::spawn(&lab);
    wait_ready(&lab, 1).await;
    assert!(
        pod.links().iter().all(|l| l.mac != mac(1)),
        "the link stayed in the pod"
    );
    assert!(
        lab.node.link_by_mac(&mac(1)).is_some(),
        "the link is not home"
    );
    assert_eq!(phase(&lab.hostnic(&name).await), HostNicPhase::Available);
    assert_invariants(&lab, &[pod]).await;
}

fn mac_of(nic: &HostNic) -> String {
    nic.status.as_ref().unwrap().nic_id.clone().unwrap()
}

/// The Service route's nat rule for the lab pool's via-node route: installed by a started
/// agent in its node netns, removed by one started for uninstall (HOSTNIC_CNI_UNINSTALL).
#[tokio::test]
async fn the_agent_installs_the_service_masquerade_and_removes_it_on_uninstall() {
    if !require_root("the_agent_installs_the_service_masquerade_and_removes_it_on_uninstall") {
        return;
    }
    let lab = Lab::with_pool(NET).await;
    let rule = format!(
        "-A {} -m conntrack --ctstate DNAT --ctorigdst 10.96.0.0/12 -j MASQUERADE --random-fully",
        hostnic_agent::hostnet::CHAIN
    );
    let agent = lab.start_agent().await;
    wait_nat(&lab.node, &rule, true).await;
    drop(agent);
    let args = Args {
        uninstall: true,
        ..lab.args()
    };
    let agent = run::start(&args, lab.client.clone()).await.unwrap();
    wait_nat(&lab.node, hostnic_agent::hostnet::CHAIN, false).await;
    drop(agent);
}

/// Waits up to 10 s until the nat table of `ns` contains `text` or, with `want` false, not.
async fn wait_nat(ns: &TestNetns, text: &str, want: bool) {
    let nat =
        || String::from_utf8_lossy(&ns.exec("iptables", &["-t", "nat", "-S"]).stdout).into_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nat().contains(text) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text:?} in the nat table != {want}:\n{}",
            nat()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An ADD whose pod read hangs (the API server stalled, its connection open: a partition, an
/// overloaded server) answers "try again later" once the agent's read deadline passes, well
/// inside the plugin's default 10 s, and claims nothing. On the old code the read waited for
/// as long as the connection stayed open, so the plugin's own clock ran out (an I/O error, 5).
#[tokio::test]
async fn a_claim_whose_pod_read_hangs_is_try_again_later() {
    if !require_root("a_claim_whose_pod_read_hangs_is_try_again_later") {
        return;
    }
    let mut lab = Lab::with_pool(NET).await;
    let nic = lab.add_nic(1).await;
    let proxy = hostnic_tests::proxy::Proxy::start(lab.api_addr().await).await;
    let client = lab.client_via(proxy.addr()).await;
    let agent = start_recovered(&lab.args(), client).await;
    lab.wait_free(&agent, 1).await;
    let pod = TestNetns::new("pod");
    lab.create_pod("c1").await;
    proxy.stall();
    let answer =
        tokio::time::timeout(Duration::from_secs(10), lab.claim(&claim_req(&pod, "c1"))).await;
    let (code, body) = answer.expect("no answer within the plugin's default 10 s");
    assert_ne!(code, StatusCode::OK, "{body}");
    assert_eq!(error_kind(&body), ErrorKind::TryAgainLater, "{body}");
    assert!(
        body.to_string().contains("get pod"),
        "the error names the call: {body}"
    );
    assert_eq!(phase(&lab.hostnic(&nic).await), HostNicPhase::Available);
    drop(proxy);
    drop(agent);
}

/// A node no NicPool selects (none exists yet) is synced, and the real plugin's CNI STATUS
/// succeeds against it: a runtime turns a failed STATUS into NetworkReady=false, which would
/// make the node NotReady and evict its pods for want of a pool.
#[tokio::test]
async fn status_succeeds_on_a_node_no_pool_selects() {
    if !require_root("status_succeeds_on_a_node_no_pool_selects") {
        return;
    }
    let lab = Lab::new(NET).await;
    let agent = lab.start_agent().await;
    let synced = eventually(Duration::from_secs(20), Duration::from_millis(50), || {
        ready(agent.agent.status().synced)
    })
    .await;
    assert!(synced, "{:?}", agent.agent.status());
    assert_eq!(agent.agent.status().free_nics, 0);
    let conf = json!({"cniVersion": "1.1.0", "name": "hostnic", "type": "hostnic",
                      "socket": lab.socket()});
    let out = blocking(move || {
        let mut child = std::process::Command::new(hostnic_tests::bins::bin("hostnic"))
            .env_clear()
            .env("CNI_COMMAND", "STATUS")
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            conf.to_string().as_bytes(),
        )
        .unwrap();
        child.wait_with_output().unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "STATUS failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(agent);
}
