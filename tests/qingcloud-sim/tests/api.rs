//! The simulator over real HTTP with hand-signed requests: every action, every error class of
//! the reference's §8, limits, paging, the job state machine, faults, quota and the admin API.

mod common;

use std::time::{Duration, Instant};

use common::{Api, stamp};
use qingcloud::signer;
use qingcloud::wire::{
    DescribeInstancesResponse, DescribeJobsResponse, DescribeNicsResponse, DescribeVxnetsResponse,
    Envelope, JobStatus, NicStatus,
};
use qingcloud_sim::{
    Fault, FaultKind, InstanceSpec, JobLatency, JobOutcome, Latency, NicState, Quota, SimHandle,
    Simulator, VxnetSpec,
};

const VX: &str = "vxnet-pods001";
const SMALL: &str = "vxnet-small01";
const NODE: &str = "i-node0001";
const NODE2: &str = "i-node0002";

fn builder() -> Simulator {
    Simulator::builder()
        .access_key("AKIDTEST", "test/secret+key=")
        .zone("pek3a")
        .vxnet(VxnetSpec::new(VX, "172.22.0.0/24".parse().unwrap()))
        .vxnet(VxnetSpec::new(SMALL, "10.9.0.0/29".parse().unwrap()))
        .instance(InstanceSpec::new(NODE))
        .instance(InstanceSpec::new(NODE2))
        .job_latency(JobLatency {
            pending: Latency::UniformMs(10, 30),
            working: Latency::UniformMs(20, 60),
        })
        .seed(42)
}

async fn start() -> (SimHandle, Api) {
    let sim = builder().start().await.unwrap();
    let api = Api::new(&sim);
    (sim, api)
}

fn secondaries(sim: &SimHandle) -> usize {
    sim.nics().iter().filter(|n| n.nic.role == Some(0)).count()
}

#[tokio::test]
async fn every_action_through_its_lifecycle() {
    let (sim, api) = start().await;

    let v: Envelope<DescribeVxnetsResponse> = serde_json::from_value(
        api.ok("DescribeVxnets", &[("vxnets.1", VX), ("verbose", "1")])
            .await,
    )
    .unwrap();
    assert_eq!(v.action.as_deref(), Some("DescribeVxnetsResponse"));
    let router = v.body.vxnet_set[0].router.clone().unwrap();
    assert_eq!(router.manager_ip, "172.22.0.1");
    assert_eq!(router.ip_network, "172.22.0.0/24");
    assert_eq!(
        (router.dyn_ip_start.as_str(), router.dyn_ip_end.as_str()),
        ("172.22.0.2", "172.22.0.254")
    );
    assert_eq!(
        v.body.vxnet_set[0].instance_ids,
        vec![NODE.to_string(), NODE2.to_string()]
    );

    let created = api
        .ok(
            "CreateNics",
            &[
                ("vxnet", VX),
                ("count", "2"),
                ("nic_name", "hostnic pool/1"),
            ],
        )
        .await;
    let nics: Vec<String> = created["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["nic_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nics.len(), 2);
    for n in &nics {
        assert!(
            n.starts_with("52:54:") && n.len() == 17 && *n == n.to_lowercase(),
            "{n}"
        );
    }

    // POST with a form body whose order and space encoding differ from the canonical query.
    let mut params = api.params(
        "DescribeNics",
        &[("nic_name", "hostnic pool/1"), ("status", "available")],
    );
    let sig = signer::sign(&api.secret, "POST", "/iaas", &params);
    params.reverse();
    let mut body: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", signer::percent_encode(v).replace("%20", "+")))
        .collect();
    body.push(format!("signature={}", signer::percent_encode(&sig)));
    let r = api.send("POST", "/iaas", body.join("&")).await.unwrap();
    assert_eq!(r.content_type, "application/json");
    let listed: Envelope<DescribeNicsResponse> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(listed.ret_code.map(|c| c.0), Some(0), "{}", r.body);
    assert_eq!(listed.body.total_count, Some(2));
    assert!(
        listed
            .body
            .nic_set
            .iter()
            .all(|n| n.status == NicStatus::Available && n.attached_to().is_none())
    );

    let job = api.job("AttachNics", Some(NODE), &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    let jobs: Envelope<DescribeJobsResponse> =
        serde_json::from_value(api.ok("DescribeJobs", &[("jobs.1", &job)]).await).unwrap();
    let j = &jobs.body.job_set[0];
    assert_eq!(
        (j.job_action.as_str(), j.status),
        ("AttachNics", JobStatus::Successful)
    );
    assert_eq!(j.directive_nics(), nics);
    assert!(j.resource_ids.contains(NODE));

    let listed: Envelope<DescribeNicsResponse> = serde_json::from_value(
        api.ok(
            "DescribeNics",
            &[("instances.1", NODE), ("status", "in-use")],
        )
        .await,
    )
    .unwrap();
    let seqs: Vec<(Option<u8>, Option<u32>)> = listed
        .body
        .nic_set
        .iter()
        .map(|n| (n.role, n.sequence))
        .collect();
    assert_eq!(
        seqs,
        vec![(Some(1), Some(0)), (Some(0), Some(1)), (Some(0), Some(2))]
    );

    let inst: Envelope<DescribeInstancesResponse> =
        serde_json::from_value(api.ok("DescribeInstances", &[("instances.1", NODE)]).await)
            .unwrap();
    assert_eq!(inst.body.instance_set[0].vxnets.len(), 3);
    let vi = api
        .ok(
            "DescribeVxnetInstances",
            &[("vxnet", VX), ("instances.1", NODE)],
        )
        .await;
    assert_eq!(vi["total_count"], 3);
    assert_eq!(vi["instance_set"][1]["nic_id"], nics[0].as_str());

    api.ok(
        "ModifyNicAttributes",
        &[("nic", &nics[0]), ("nic_name", "renamed")],
    )
    .await;
    let named = api.ok("DescribeNics", &[("nic_name", "renamed")]).await;
    assert_eq!(named["nic_set"][0]["nic_id"], nics[0].as_str());

    let job = api.job("DetachNics", None, &nics).await;
    assert_eq!(api.wait_job(&job).await, "successful");
    api.ok("DeleteNics", &[("nics.1", &nics[0]), ("nics.2", &nics[1])])
        .await;
    assert_eq!(secondaries(&sim), 0, "no leaked NICs");

    let calls = sim.calls();
    assert_eq!(calls.action("AttachNics"), 1);
    assert_eq!(calls.action("DeleteNics"), 1);
    assert!(calls.total >= 12);
    sim.reset_calls();
    assert_eq!(sim.calls().total, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn signature_mismatches_are_1200() {
    let (_sim, api) = start().await;
    let p = api.params("DescribeNics", &[("nic_name", "a b")]);
    let send = |sig: String, query: String| {
        let api = &api;
        async move {
            api.send(
                "GET",
                "/iaas/",
                format!("{query}&signature={}", signer::percent_encode(&sig)),
            )
            .await
            .unwrap()
        }
    };
    let q = signer::canonical_query(&p);

    let good = signer::sign(&api.secret, "GET", "/iaas/", &p);
    assert_eq!(send(good.clone(), q.clone()).await.ret_code(), 0);

    // Wrong key.
    assert_eq!(
        send(signer::sign("other", "GET", "/iaas/", &p), q.clone())
            .await
            .ret_code(),
        1200
    );
    // Signed over the other path.
    assert_eq!(
        send(signer::sign(&api.secret, "GET", "/iaas", &p), q.clone())
            .await
            .ret_code(),
        1200
    );
    // Signed as POST, sent as GET.
    assert_eq!(
        send(signer::sign(&api.secret, "POST", "/iaas/", &p), q.clone())
            .await
            .ret_code(),
        1200
    );
    // '+' for space in the string to sign.
    let plus = q.replace("%20", "+");
    let sts = format!("GET\n/iaas/\n{plus}");
    assert_eq!(
        send(hmac_b64(&api.secret, &sts), q.clone())
            .await
            .ret_code(),
        1200
    );
    // Lowercase hex escapes in the string to sign.
    let sts = format!("GET\n/iaas/\n{}", lower_hex(&q));
    assert_ne!(lower_hex(&q), q);
    assert_eq!(
        send(hmac_b64(&api.secret, &sts), q.clone())
            .await
            .ret_code(),
        1200
    );
    // Unknown key id.
    let mut p2 = api.params("DescribeNics", &[("access_key_id", "NOSUCHKEY")]);
    let sig = signer::sign(&api.secret, "GET", "/iaas/", &p2);
    p2.push(("signature".into(), sig));
    let r = api
        .send("GET", "/iaas/", signer::canonical_query(&p2))
        .await
        .unwrap();
    assert_eq!(r.ret_code(), 1200);
    assert_eq!(r.json()["message"], "AuthFailure, signature not matched");
    // A tampered parameter.
    let tampered = q.replace("a%20b", "a%20c");
    assert_eq!(send(good, tampered).await.ret_code(), 1200);
}

/// `%3A` → `%3a`: the escapes a sloppy client would produce.
fn lower_hex(q: &str) -> String {
    let mut out = String::new();
    let mut left = 0;
    for c in q.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// HMAC-SHA256 in base64 of an arbitrary string to sign (the signer only signs canonical
/// strings, and these tests need wrong ones).
fn hmac_b64(secret: &str, sts: &str) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn freshness_required_parameters_and_actions() {
    let (_sim, api) = start().await;
    let old = stamp(61 + 5);
    assert_eq!(
        api.get("DescribeNics", &[("time_stamp", &old)])
            .await
            .ret_code(),
        1300
    );
    assert_eq!(
        api.get("DescribeNics", &[("time_stamp", &stamp(30))])
            .await
            .ret_code(),
        0
    );
    assert_eq!(
        api.get("DescribeNics", &[("time_stamp", "2024-05-01 08:09:10")])
            .await
            .ret_code(),
        1100
    );
    assert_eq!(
        api.get("DescribeNics", &[("zone", "")]).await.ret_code(),
        1100
    );
    assert_eq!(
        api.get("DescribeNics", &[("zone", "sh1a")])
            .await
            .ret_code(),
        1100
    );
    assert_eq!(api.get("CreateNics", &[]).await.ret_code(), 1100);
    assert_eq!(
        api.get("AttachNics", &[("instance", NODE)])
            .await
            .ret_code(),
        1100
    );
    assert_eq!(
        api.get("AttachNics", &[("nics.1", "52:54:00:00:00:01")])
            .await
            .ret_code(),
        1100
    );
    assert_eq!(api.get("DetachNics", &[]).await.ret_code(), 1100);
    assert_eq!(api.get("DeleteNics", &[]).await.ret_code(), 1100);
    assert_eq!(api.get("ModifyNicAttributes", &[]).await.ret_code(), 1100);
    assert_eq!(
        api.get("DescribeVxnetInstances", &[]).await.ret_code(),
        1100
    );
    assert_eq!(
        api.get("CreateNics", &[("vxnet", VX), ("count", "x")])
            .await
            .ret_code(),
        1100
    );
    assert_eq!(
        api.get("DescribeNics", &[("status", "busy")])
            .await
            .ret_code(),
        1100
    );
    assert_eq!(
        api.get("DescribeJobs", &[("status.1", "nope")])
            .await
            .ret_code(),
        1100
    );
    assert_eq!(
        api.get("DescribeNics", &[("offset", "-1")])
            .await
            .ret_code(),
        1100
    );
    let r = api.get("RunInstances", &[]).await;
    assert_eq!(r.ret_code(), 1101);
    assert_eq!(r.content_type, "application/json");
    // Extra parameters such as the Python SDK's req_id are ignored.
    assert_eq!(
        api.get(
            "DescribeNics",
            &[("req_id", "0123456789abcdef0123456789abcdef")]
        )
        .await
        .ret_code(),
        0
    );
    // Other paths are not the API.
    let r = api.signed("GET", "/iaas/v2", "DescribeNics", &[]).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (404, "application/json")
    );
}

#[tokio::test]
async fn state_rules_are_1400_and_unknown_ids_2100() {
    let (sim, api) = start().await;
    let nics = api.create(VX, 2).await;
    let unknown = "52:54:00:00:00:00".to_string();
    let primary = sim
        .nics()
        .into_iter()
        .find(|n| n.instance.as_deref() == Some(NODE))
        .unwrap()
        .nic
        .nic_id;

    assert_eq!(
        api.get("DetachNics", &[("nics.1", &nics[0])])
            .await
            .ret_code(),
        1400
    );
    assert_eq!(
        api.get("DetachNics", &[("nics.1", &primary)])
            .await
            .ret_code(),
        1400
    );
    assert_eq!(
        api.get("DeleteNics", &[("nics.1", &primary)])
            .await
            .ret_code(),
        1400
    );

    let job = api.job("AttachNics", Some(NODE), &nics[..1]).await;
    // Attaching: busy for every other operation.
    let r = api.get("DeleteNics", &[("nics.1", &nics[0])]).await;
    assert_eq!(r.ret_code(), 1400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("PermissionDenied, ")
    );
    assert_eq!(
        api.get("AttachNics", &[("instance", NODE2), ("nics.1", &nics[0])])
            .await
            .ret_code(),
        1400
    );
    api.wait_job(&job).await;
    // In use on this or another instance.
    assert_eq!(
        api.get("AttachNics", &[("instance", NODE2), ("nics.1", &nics[0])])
            .await
            .ret_code(),
        1400
    );
    assert_eq!(
        api.get("AttachNics", &[("instance", NODE), ("nics.1", &nics[0])])
            .await
            .ret_code(),
        1400
    );
    assert_eq!(
        api.get("DeleteNics", &[("nics.1", &nics[0])])
            .await
            .ret_code(),
        1400
    );
    // Instance not running.
    sim.set_instance_running(NODE2, false).unwrap();
    assert_eq!(
        api.get("AttachNics", &[("instance", NODE2), ("nics.1", &nics[1])])
            .await
            .ret_code(),
        1400
    );
    sim.set_instance_running(NODE2, true).unwrap();

    for (action, p) in [
        (
            "AttachNics",
            vec![("instance", NODE), ("nics.1", unknown.as_str())],
        ),
        (
            "AttachNics",
            vec![("instance", "i-nosuch00"), ("nics.1", nics[1].as_str())],
        ),
        ("DetachNics", vec![("nics.1", unknown.as_str())]),
        (
            "DeleteNics",
            vec![("nics.1", nics[1].as_str()), ("nics.2", unknown.as_str())],
        ),
        (
            "ModifyNicAttributes",
            vec![("nic", unknown.as_str()), ("nic_name", "x")],
        ),
        ("CreateNics", vec![("vxnet", "vxnet-nosuch0")]),
    ] {
        let r = api.get(action, &p).await;
        assert_eq!(r.ret_code(), 2100, "{action}: {}", r.body);
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("ResourceNotFound, ")
        );
    }
    // All-or-nothing: the failed DeleteNics above did not delete nics[1].
    assert!(sim.nics().iter().any(|n| n.nic.nic_id == nics[1]));

    for (action, p, set) in [
        ("DescribeNics", ("nics.1", unknown.as_str()), "nic_set"),
        ("DescribeNics", ("instances.1", "i-nosuch00"), "nic_set"),
        ("DescribeJobs", ("jobs.1", "j-nosuch00"), "job_set"),
        ("DescribeVxnets", ("vxnets.1", "vxnet-nosuch0"), "vxnet_set"),
        (
            "DescribeInstances",
            ("instances.1", "i-nosuch00"),
            "instance_set",
        ),
        (
            "DescribeVxnetInstances",
            ("vxnet", "vxnet-nosuch0"),
            "instance_set",
        ),
    ] {
        let v = api.ok(action, &[p]).await;
        assert_eq!(
            (v["total_count"].as_u64(), v[set].as_array().map(Vec::len)),
            (Some(0), Some(0)),
            "{action}"
        );
    }
}

#[tokio::test]
async fn capacity_limits_use_the_configured_code() {
    let sim = builder()
        .configure(|c| c.capacity_error_code = 2500)
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    let nics = api.create(VX, 64).await;
    let job = api.job("AttachNics", Some(NODE), &nics[..63]).await;
    let r = api
        .get("AttachNics", &[("instance", NODE), ("nics.1", &nics[63])])
        .await;
    assert_eq!(r.ret_code(), 2500, "64th secondary NIC: {}", r.body);
    assert_eq!(api.wait_job(&job).await, "successful");
    assert_eq!(
        api.get("AttachNics", &[("instance", NODE), ("nics.1", &nics[63])])
            .await
            .ret_code(),
        2500
    );
    assert_eq!(
        api.ok("AttachNics", &[("instance", NODE2), ("nics.1", &nics[63])])
            .await["ret_code"],
        0
    );

    // 2 primaries + 64 so far; 252 per vxnet.
    api.create(VX, 186).await;
    assert_eq!(
        api.get("CreateNics", &[("vxnet", VX)]).await.ret_code(),
        2500
    );
    assert_eq!(
        api.get("CreateNics", &[("vxnet", SMALL), ("count", "253")])
            .await
            .ret_code(),
        2500
    );
    assert_eq!(
        api.get("CreateNics", &[("vxnet", SMALL), ("count", "0")])
            .await
            .ret_code(),
        1100
    );
    // 10.9.0.0/29: pool .2-.6.
    assert_eq!(
        api.get("CreateNics", &[("vxnet", SMALL), ("count", "6")])
            .await
            .ret_code(),
        2500
    );
    let v = api
        .ok(
            "CreateNics",
            &[("vxnet", SMALL), ("private_ips.1", "10.9.0.6")],
        )
        .await;
    assert_eq!(v["nics"][0]["private_ip"], "10.9.0.6");
    assert_eq!(
        api.get(
            "CreateNics",
            &[("vxnet", SMALL), ("private_ips.1", "10.9.0.6")]
        )
        .await
        .ret_code(),
        2500
    );
    assert_eq!(
        api.get(
            "CreateNics",
            &[("vxnet", SMALL), ("private_ips.1", "10.9.0.1")]
        )
        .await
        .ret_code(),
        1100
    );
    let v = api
        .ok("CreateNics", &[("vxnet", SMALL), ("count", "4")])
        .await;
    assert_eq!(v["nics"][3]["private_ip"], "10.9.0.5");
    assert_eq!(
        api.get("CreateNics", &[("vxnet", SMALL)]).await.ret_code(),
        2500
    );
    let v = api
        .ok("CreateNics", &[("vxnet", SMALL), ("disable_ip", "1")])
        .await;
    assert_eq!(v["nics"][0]["private_ip"], "");
}

#[tokio::test]
async fn optional_nic_batch_limit() {
    let sim = builder()
        .configure(|c| c.nic_batch_limit = Some(5))
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    let nics = api.create(VX, 6).await;
    let keys: Vec<String> = (1..=6).map(|i| format!("nics.{i}")).collect();
    let p: Vec<(&str, &str)> = keys
        .iter()
        .map(String::as_str)
        .zip(nics.iter().map(String::as_str))
        .collect();
    let mut attach = p.clone();
    attach.push(("instance", NODE));
    assert_eq!(api.get("AttachNics", &attach).await.ret_code(), 1100);
    let job = api.job("AttachNics", Some(NODE), &nics[..5]).await;
    api.wait_job(&job).await;
    assert_eq!(api.get("DetachNics", &p).await.ret_code(), 1100);
    // DeleteNics is not a job: no limit.
    let more = api.create(VX, 6).await;
    let keys: Vec<String> = (1..=6).map(|i| format!("nics.{i}")).collect();
    let p: Vec<(&str, &str)> = keys
        .iter()
        .map(String::as_str)
        .zip(more.iter().map(String::as_str))
        .collect();
    assert_eq!(api.get("DeleteNics", &p).await.ret_code(), 0);
}

#[tokio::test]
async fn paging_caps_limit_at_100_and_reports_total() {
    let (_sim, api) = start().await;
    api.create(VX, 150).await;
    let v = api.ok("DescribeNics", &[("limit", "500")]).await;
    assert_eq!(
        (
            v["total_count"].as_u64(),
            v["nic_set"].as_array().unwrap().len()
        ),
        (Some(152), 100)
    );
    let v = api
        .ok("DescribeNics", &[("limit", "100"), ("offset", "100")])
        .await;
    assert_eq!(v["nic_set"].as_array().unwrap().len(), 52);
    let v = api.ok("DescribeNics", &[]).await;
    assert_eq!(v["nic_set"].as_array().unwrap().len(), 20, "default limit");
    let v = api
        .ok(
            "DescribeNics",
            &[("vxnets.1", VX), ("status", "available"), ("offset", "149")],
        )
        .await;
    assert_eq!(
        (
            v["total_count"].as_u64(),
            v["nic_set"].as_array().unwrap().len()
        ),
        (Some(150), 1)
    );
}

#[tokio::test]
async fn job_state_machine_on_a_manual_clock() {
    let sim = builder()
        .manual_clock()
        .job_latency(JobLatency {
            pending: Latency::FixedMs(1000),
            working: Latency::FixedMs(2000),
        })
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    let status = |job: String| {
        let api = &api;
        async move {
            api.ok("DescribeJobs", &[("jobs.1", &job)]).await["job_set"][0]["status"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let nics = api.create(VX, 4).await;
    let job = api.job("AttachNics", Some(NODE), &nics[..1]).await;
    assert_eq!(status(job.clone()).await, "pending");
    sim.advance(Duration::from_millis(999)).await.unwrap();
    assert_eq!(status(job.clone()).await, "pending");
    // The admin endpoint moves the same clock.
    assert_eq!(admin(&api, "POST", "advance", r#"{"ms":1}"#).await.0, 200);
    assert_eq!(status(job.clone()).await, "working");
    let nic = |id: &str| sim.nics().into_iter().find(|n| n.nic.nic_id == id).unwrap();
    assert_eq!(nic(&nics[0]).state, NicState::Attaching);
    assert_eq!(
        nic(&nics[0]).nic.status,
        qingcloud_sim::wire::NicStatus::Available
    );
    sim.advance(Duration::from_millis(2000)).await.unwrap();
    assert_eq!(status(job.clone()).await, "successful");
    assert_eq!(
        nic(&nics[0]).nic.status,
        qingcloud_sim::wire::NicStatus::InUse
    );
    let st = api.ok("DescribeJobs", &[("status.1", "successful")]).await;
    assert_eq!(st["total_count"], 1);

    // Injected outcomes.
    sim.inject(
        Fault::new(FaultKind::Job(JobOutcome::Failed))
            .on("AttachNics")
            .next(1),
    );
    let failed = api.job("AttachNics", Some(NODE), &nics[1..2]).await;
    sim.inject(Fault::new(FaultKind::Job(JobOutcome::DoneWithFailure)).next(1));
    let partial = api.job("AttachNics", Some(NODE2), &nics[2..4]).await;
    sim.inject(Fault::new(FaultKind::Job(JobOutcome::NeverFinish)).next(1));
    let stuck = api.job("DetachNics", None, &nics[..1]).await;
    sim.advance(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(status(failed).await, "failed");
    assert_eq!(status(partial).await, "done with failure");
    assert_eq!(status(stuck).await, "working");
    assert_eq!(nic(&nics[1]).state, NicState::Available);
    assert_eq!(
        (nic(&nics[2]).state, nic(&nics[3]).state),
        (NicState::InUse, NicState::Available)
    );
    assert_eq!(nic(&nics[0]).state, NicState::Detaching);
    assert_eq!(
        api.get("DeleteNics", &[("nics.1", &nics[0])])
            .await
            .ret_code(),
        1400
    );
    // On a real clock advancing is refused.
    let (real, _) = start().await;
    assert!(real.advance(Duration::from_secs(1)).await.is_err());
}

#[tokio::test]
async fn injected_faults() {
    let (sim, api) = start().await;
    sim.inject(Fault::error(5100).on("DescribeNics").next(2));
    for _ in 0..2 {
        let r = api.get("DescribeNics", &[]).await;
        assert_eq!(r.ret_code(), 5100);
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("ServerBusy")
        );
    }
    assert_eq!(api.get("DescribeNics", &[]).await.ret_code(), 0);
    assert!(sim.faults().is_empty(), "used-up rules go away");

    sim.inject(Fault::error(1400).on("AttachNics").next(1));
    let nics = api.create(VX, 1).await;
    let r = api
        .get("AttachNics", &[("instance", NODE), ("nics.1", &nics[0])])
        .await;
    assert_eq!(r.ret_code(), 1400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("lease info not ready")
    );
    assert_eq!(
        sim.nics()
            .iter()
            .find(|n| n.nic.nic_id == nics[0])
            .unwrap()
            .state,
        NicState::Available
    );

    sim.inject(Fault::new(FaultKind::HttpStatus(503)).next(1));
    let r = api.get("DescribeJobs", &[]).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (503, "application/json")
    );

    sim.inject(Fault::new(FaultKind::NonJson).next(1));
    let r = api.get("DescribeJobs", &[]).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "application/json")
    );
    assert!(serde_json::from_str::<serde_json::Value>(&r.body).is_err());

    sim.inject(Fault::new(FaultKind::MissingRetCode).next(1));
    let r = api.get("DescribeJobs", &[]).await;
    assert!(r.json().get("ret_code").is_none());

    sim.inject(Fault::new(FaultKind::Reset).next(1));
    let mut p = api.params("DescribeJobs", &[]);
    let sig = signer::sign(&api.secret, "GET", "/iaas/", &p);
    p.push(("signature".into(), sig));
    assert!(
        api.send("GET", "/iaas/", signer::canonical_query(&p))
            .await
            .is_err()
    );

    sim.inject(
        Fault::new(FaultKind::DelayMs(300))
            .on("DescribeVxnets")
            .next(1),
    );
    let t = Instant::now();
    assert_eq!(api.get("DescribeVxnets", &[]).await.ret_code(), 0);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Eventual consistency: new NICs invisible for 2 matching DescribeNics calls.
    sim.inject(Fault::new(FaultKind::HideNewNics(2)).next(1));
    let late = api.create(VX, 1).await;
    let seen = |v: serde_json::Value| v["total_count"].as_u64().unwrap();
    assert_eq!(
        seen(api.ok("DescribeNics", &[("nics.1", &late[0])]).await),
        0
    );
    assert_eq!(
        seen(api.ok("DescribeNics", &[("nics.1", &late[0])]).await),
        0
    );
    assert_eq!(
        seen(api.ok("DescribeNics", &[("nics.1", &late[0])]).await),
        1
    );

    // A lost response: the NICs exist although the client saw 5000.
    let before = secondaries(&sim);
    sim.inject(Fault::error(5000).on("CreateNics").next(1).after_effect());
    assert_eq!(
        api.get("CreateNics", &[("vxnet", VX), ("count", "3")])
            .await
            .ret_code(),
        5000
    );
    assert_eq!(secondaries(&sim), before + 3);

    // Probability faults are reproducible with the same seed.
    let pattern = |sim: SimHandle| async move {
        let api = Api::new(&sim);
        sim.inject(Fault::error(5000).probability(0.5));
        let mut v = Vec::new();
        for _ in 0..16 {
            v.push(api.get("DescribeJobs", &[]).await.ret_code());
        }
        v
    };
    let a = pattern(builder().start().await.unwrap()).await;
    let b = pattern(builder().start().await.unwrap()).await;
    assert_eq!(a, b);
    assert!(a.contains(&0) && a.contains(&5000), "{a:?}");

    let calls = sim.calls();
    assert!(calls.by_ret_code[&5100] >= 2);
    assert!(calls.by_ret_code[&5000] >= 1);
}

#[tokio::test]
async fn account_rate_quota_is_2500() {
    let sim = builder()
        .configure(|c| {
            c.quota = Some(Quota {
                requests: 3,
                window_ms: 600_000,
            })
        })
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    for _ in 0..3 {
        assert_eq!(api.get("DescribeNics", &[]).await.ret_code(), 0);
    }
    let r = api.get("DescribeNics", &[]).await;
    assert_eq!(r.ret_code(), 2500);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("QuotaExceeded")
    );
    sim.set_quota(None);
    assert_eq!(api.get("DescribeNics", &[]).await.ret_code(), 0);
    sim.set_quota(Some(Quota {
        requests: 1,
        window_ms: 50,
    }));
    assert_eq!(api.get("DescribeNics", &[]).await.ret_code(), 0);
    assert_eq!(api.get("DescribeNics", &[]).await.ret_code(), 2500);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        api.get("DescribeNics", &[]).await.ret_code(),
        0,
        "a new window"
    );
}

async fn admin(api: &Api, method: &str, route: &str, body: &str) -> (u16, serde_json::Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{}/admin/{route}", api.host))
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn admin_endpoints() {
    let (sim, api) = start().await;
    let nics = api.create(VX, 2).await;

    let (s, list) = admin(&api, "GET", "nics", "").await;
    assert_eq!(s, 200);
    let listed: Vec<qingcloud_sim::NicInfo> = serde_json::from_value(list).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(
        listed
            .iter()
            .any(|n| n.nic.nic_id == nics[0] && n.state == NicState::Available)
    );

    let (_, calls) = admin(&api, "GET", "calls", "").await;
    assert_eq!(calls["by_action"]["CreateNics"], 1);
    assert_eq!(calls["by_ret_code"]["0"], 1);
    admin(&api, "POST", "calls/reset", "").await;
    assert_eq!(admin(&api, "GET", "calls", "").await.1["total"], 0);

    let (s, id) = admin(
        &api,
        "POST",
        "faults",
        r#"{"action":"DescribeJobs","kind":{"api_error":{"code":5000}},"trigger":{"next":5}}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(api.get("DescribeJobs", &[]).await.ret_code(), 5000);
    assert_eq!(
        admin(&api, "GET", "faults", "").await.1[0]["fault"]["trigger"]["next"],
        4
    );
    let (s, _) = admin(&api, "DELETE", &format!("faults/{}", id["id"]), "").await;
    assert_eq!(s, 200);
    assert_eq!(api.get("DescribeJobs", &[]).await.ret_code(), 0);
    assert_eq!(
        admin(&api, "POST", "faults", r#"{"kind":"bogus"}"#).await.0,
        400
    );

    assert_eq!(
        admin(
            &api,
            "PUT",
            &format!("instances/{NODE}"),
            r#"{"running":false}"#
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.get("AttachNics", &[("instance", NODE), ("nics.1", &nics[0])])
            .await
            .ret_code(),
        1400
    );
    assert_eq!(
        admin(&api, "PUT", "instances/i-nosuch00", r#"{"running":false}"#)
            .await
            .0,
        404
    );

    let (s, v) = admin(
        &api,
        "POST",
        "instances",
        r#"{"id":"i-node0003","node_netns":"hn-x"}"#,
    )
    .await;
    assert_eq!((s, v["instance_id"].as_str()), (200, Some("i-node0003")));
    let (_, insts) = admin(&api, "GET", "instances", "").await;
    assert_eq!(insts[2]["node_netns"], "hn-x");
    assert_eq!(insts[2]["vxnets"][0]["role"], 1);
    assert_eq!(sim.instances().len(), 3);

    assert_eq!(
        admin(&api, "PUT", "quota", r#"{"requests":0,"window_ms":60000}"#)
            .await
            .0,
        200
    );
    assert_eq!(api.get("DescribeNics", &[]).await.ret_code(), 2500);
    assert_eq!(admin(&api, "PUT", "quota", "null").await.0, 200);
    assert_eq!(api.get("DescribeNics", &[]).await.ret_code(), 0);

    assert_eq!(
        admin(
            &api,
            "PUT",
            "job-latency",
            r#"{"pending":{"fixed_ms":0},"working":{"fixed_ms":0}}"#
        )
        .await
        .0,
        200
    );
    assert_eq!(admin(&api, "POST", "advance", r#"{"ms":10}"#).await.0, 409);
    let (_, vx) = admin(&api, "GET", "vxnets", "").await;
    assert_eq!(vx[0]["vxnet_id"], VX);
    assert!(vx[0]["netns"].is_null(), "hot-plug is off");
    assert_eq!(
        admin(&api, "GET", "jobs", "")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(admin(&api, "GET", "nope", "").await.0, 404);
}

#[tokio::test]
async fn config_yaml_points_at_the_simulator() {
    let (sim, _api) = start().await;
    let yaml = sim.config_yaml();
    assert!(yaml.contains("qy_access_key_id: 'AKIDTEST'"));
    assert!(yaml.contains(&format!("port: {}", sim.addr().port())));
    assert!(yaml.contains("protocol: 'http'") && yaml.contains("zone: 'pek3a'"));
    assert_eq!(sim.url(), format!("http://{}/iaas", sim.addr()));
}

/// 500 instances, 3 NICs each over 8 vxnets, requests 16 at a time; prints throughput.
#[tokio::test]
async fn scale_500_instances_without_hotplug() {
    let mut b = Simulator::builder().job_latency(JobLatency {
        pending: Latency::UniformMs(5, 20),
        working: Latency::UniformMs(10, 40),
    });
    for v in 0..8 {
        b = b.vxnet(VxnetSpec::new(
            &format!("vxnet-scale{v:02}"),
            format!("10.{v}.0.0/24").parse().unwrap(),
        ));
    }
    for i in 0..500 {
        let mut spec = InstanceSpec::new(&format!("i-s{i:07}"));
        spec.vxnet = Some(format!("vxnet-scale{:02}", i % 8));
        b = b.instance(spec);
    }
    let sim = b.start().await.unwrap();
    let api = std::sync::Arc::new(Api::new(&sim));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut jobs = Vec::new();
    for chunk in (0..500).collect::<Vec<_>>().chunks(16) {
        for &i in chunk {
            let api = api.clone();
            tasks.spawn(async move {
                let nics = api.create(&format!("vxnet-scale{:02}", i % 8), 3).await;
                api.job("AttachNics", Some(&format!("i-s{i:07}")), &nics)
                    .await
            });
        }
        while let Some(job) = tasks.join_next().await {
            jobs.push(job.unwrap());
        }
    }
    let submitted = started.elapsed();
    for job in &jobs {
        assert_eq!(api.wait_job(job).await, "successful");
    }
    let mut seen = 0;
    let mut offset = 0;
    loop {
        let v = api
            .ok(
                "DescribeNics",
                &[
                    ("status", "in-use"),
                    ("limit", "100"),
                    ("offset", &offset.to_string()),
                ],
            )
            .await;
        let page = v["nic_set"].as_array().unwrap().len();
        seen += page;
        offset += page;
        if offset as u64 >= v["total_count"].as_u64().unwrap() {
            break;
        }
    }
    assert_eq!(seen, 2000, "500 primaries + 1500 secondaries in use");
    let calls = sim.calls();
    eprintln!(
        "scale: 1000 create/attach calls in {:?} ({:.0} req/s, debug build); all done in {:?}; {} calls total, {:.2} per secondary NIC",
        submitted,
        1000.0 / submitted.as_secs_f64(),
        started.elapsed(),
        calls.total,
        calls.total as f64 / 1500.0
    );
}

/// The reference's worked example, sent byte for byte (its 2024 time_stamp needs a huge
/// tolerance): the server must accept the published signatures for GET `/iaas/`, GET `/iaas`
/// and POST, and reject the GET signature on the other path.
#[tokio::test]
async fn reference_worked_example_verbatim() {
    let sim = Simulator::builder()
        .access_key(
            "EXAMPLEAKID00000000",
            "ExampleSecretKey/0123456789abcdefXYZ",
        )
        .zone("pek3a")
        .configure(|c| c.timestamp_tolerance_s = 20 * 365 * 24 * 3600)
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    let query = "access_key_id=EXAMPLEAKID00000000&action=DescribeNics&limit=100\
        &nic_name=pod%20nic%2F1%2B%CE%B1~&nics.1=52%3A54%3A9a%3A1b%3A2c%3A3d\
        &nics.2=52%3A54%3A0e%3Af0%3Aaa%3A01&offset=0&signature_method=HmacSHA256\
        &signature_version=1&status=in-use&time_stamp=2024-05-01T08%3A09%3A10Z&version=1&zone=pek3a";
    let get_slash = "flY7C9VYsUfF9D%2Faw99og4s4EEteRmqB2Vc4OFqsKV0%3D";
    let get_bare = "4UO2Bx58LqZB%2FlCKfBK4V1KnqYM1fYml8HkrRiH14PA%3D";
    let post = "6MvKxf4hdHVvB5yfmu7zgzuqPrl1NHvEFXX%2F4nDQYZM%3D";
    let send = |method: &'static str, path: &'static str, sig: &'static str| {
        let api = &api;
        async move {
            api.send(method, path, format!("{query}&signature={sig}"))
                .await
                .unwrap()
                .ret_code()
        }
    };
    assert_eq!(send("GET", "/iaas/", get_slash).await, 0);
    assert_eq!(send("GET", "/iaas", get_bare).await, 0);
    assert_eq!(send("POST", "/iaas/", post).await, 0);
    assert_eq!(send("GET", "/iaas", get_slash).await, 1200);
    assert_eq!(send("POST", "/iaas/", get_slash).await, 1200);
}

#[tokio::test]
async fn request_uris_over_the_limit_get_414() {
    let (sim, api) = start().await;
    // 400 instance ids in one GET: ~12 KB of query, over the default 8 KB.
    let names: Vec<String> = (1..=400).map(|i| format!("instances.{i}")).collect();
    let ids: Vec<String> = (1..=400).map(|i| format!("i-{i:08}")).collect();
    let params: Vec<(&str, &str)> = names
        .iter()
        .zip(&ids)
        .map(|(n, id)| (n.as_str(), id.as_str()))
        .collect();
    let raw = api.get("DescribeInstances", &params).await;
    assert_eq!(raw.status, 414, "{}", raw.body);
    let calls = sim.calls();
    assert_eq!(
        (
            calls.total,
            calls.uri_too_long,
            calls.action("DescribeInstances")
        ),
        (1, 1, 1)
    );
    // The same list in a POST body is not a URI: answered.
    let raw = api
        .signed("POST", "/iaas/", "DescribeInstances", &params)
        .await;
    assert_eq!((raw.status, raw.ret_code()), (200, 0), "{}", raw.body);
    // A short GET is answered, and the limit can be turned off.
    assert_eq!(
        api.get("DescribeInstances", &params[..100]).await.status,
        200
    );
    sim.shutdown().await;
    let sim = builder()
        .configure(|c| c.max_uri_len = None)
        .start()
        .await
        .unwrap();
    let raw = Api::new(&sim).get("DescribeInstances", &params).await;
    assert_eq!((raw.status, raw.ret_code()), (200, 0));
    sim.shutdown().await;
}
