//! The QingCloud client (`operator/qingcloud`) against the simulator over real HTTP: every
//! action, and every error class the client must tell apart. Requests the client would never
//! send (bad signatures, stale time stamps, missing parameters) are built by hand and sent
//! over a raw TCP connection.

use std::path::Path;
use std::time::Duration;

use qingcloud::wire::{InstanceStatus, JobStatus, NicStatus};
use qingcloud::{
    Client, ClientSettings, CloudConfig, Error, InstanceId, JobFilter, JobOutcome, NicChanges,
    NicFilter, NicId, RetCode, VxnetId,
};
use qingcloud_sim::{
    Fault, FaultKind, InstanceSpec, JobOutcome as SimJobOutcome, Quota, SimHandle, Simulator,
    VxnetSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VXNET: &str = "vxnet-pods001";
const NODE: &str = "i-node0001";
const STOPPED: &str = "i-stopped1";

fn vxnet() -> VxnetId {
    VXNET.parse().unwrap()
}

fn node() -> InstanceId {
    NODE.parse().unwrap()
}

async fn sim() -> SimHandle {
    Simulator::builder()
        .vxnet(VxnetSpec::new(VXNET, "172.22.0.0/24".parse().unwrap()))
        .instance(InstanceSpec::new(NODE))
        .instance(InstanceSpec {
            running: false,
            ..InstanceSpec::new(STOPPED)
        })
        .configure(|c| {
            c.job_latency.pending = qingcloud_sim::Latency::FixedMs(20);
            c.job_latency.working = qingcloud_sim::Latency::FixedMs(40);
        })
        .start()
        .await
        .unwrap()
}

/// Fast retries and polling, no client-side rate limiting.
fn settings() -> ClientSettings {
    ClientSettings {
        qps: 10_000.0,
        burst: 10_000,
        backoff_base: Duration::from_millis(2),
        backoff_max: Duration::from_millis(10),
        job_poll_interval: Duration::from_millis(20),
        ..ClientSettings::default()
    }
}

/// A client configured from the simulator's config file, as the operator would be.
fn client(sim: &SimHandle) -> Client {
    client_with(sim, settings())
}

fn client_with(sim: &SimHandle, settings: ClientSettings) -> Client {
    let cfg = CloudConfig::from_yaml(&sim.config_yaml(), Path::new("sim.yaml")).unwrap();
    Client::new(cfg, settings, None).unwrap()
}

fn secondaries(sim: &SimHandle) -> Vec<qingcloud_sim::NicInfo> {
    sim.nics()
        .into_iter()
        .filter(|n| n.nic.role != Some(1))
        .collect()
}

async fn create(c: &Client, n: u32, name: &str) -> Vec<NicId> {
    c.create_nics(&vxnet(), n, Some(name))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect()
}

async fn attach(c: &Client, nics: &[NicId]) {
    let job = c.attach_nics(&node(), nics).await.unwrap();
    assert_eq!(
        c.wait_job(&job, Duration::from_secs(10)).await.unwrap(),
        JobOutcome::Succeeded
    );
}

// === every action ===

#[tokio::test]
async fn full_nic_lifecycle() {
    let sim = sim().await;
    let c = client(&sim);

    // The real API leaves available_ip_count out unless asked for verbose rows: the client
    // must ask, or every vxnet looks full.
    sim.set_rules(qingcloud_sim::Rules {
        ip_count_verbose_only: true,
        ..Default::default()
    });
    let vxnets = c.describe_vxnets(&[vxnet()]).await.unwrap();
    assert_eq!(vxnets.len(), 1);
    assert!(
        vxnets[0].available_ip_count.is_some_and(|n| n > 0),
        "{:?}",
        vxnets[0].available_ip_count
    );
    let router = vxnets[0]
        .router
        .as_ref()
        .expect("vxnet in a VPC has a router");
    assert_eq!(router.ip_network, "172.22.0.0/24");
    assert!(!router.manager_ip.is_empty());

    let instances = c.describe_instances(&[node()]).await.unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].status, InstanceStatus::Running);
    let primaries = instances[0].vxnets.len();

    let created = c
        .create_nics(&vxnet(), 3, Some("hostnic_test"))
        .await
        .unwrap();
    assert_eq!(created.len(), 3);
    assert!(
        created
            .iter()
            .all(|n| n.id.as_str().starts_with("52:54:") && n.private_ip.is_some())
    );
    let ids: Vec<NicId> = created.iter().map(|n| n.id.clone()).collect();

    let listed = c
        .describe_nics(&NicFilter {
            nics: ids.clone(),
            status: Some(NicStatus::Available),
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|n| n.nic_name == "hostnic_test"
            && n.vxnet_id == VXNET
            && n.attached_to().is_none())
    );
    let by_name = c
        .describe_nics(&NicFilter {
            nic_name: Some("hostnic_test".into()),
            vxnets: vec![vxnet()],
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_name.len(), 3);

    attach(&c, &ids).await;
    let attached = c
        .describe_nics(&NicFilter {
            instances: vec![node()],
            ..NicFilter::default()
        })
        .await
        .unwrap();
    let attached_ids: Vec<&str> = attached.iter().map(|n| n.nic_id.as_str()).collect();
    for id in &ids {
        assert!(attached_ids.contains(&id.as_str()), "{id} attached");
    }
    assert!(
        attached
            .iter()
            .all(|n| n.status == NicStatus::InUse && n.attached_to() == Some(NODE))
    );
    let instances = c.describe_instances(&[node()]).await.unwrap();
    assert_eq!(instances[0].vxnets.len(), primaries + 3);

    let job = c.attach_nics(&node(), &ids[..1]).await;
    assert!(
        job.unwrap_err().is_permission_denied(),
        "attaching an in-use NIC is 1400"
    );

    c.modify_nic_attributes(
        &ids[0],
        &NicChanges {
            nic_name: Some("renamed".into()),
            ..NicChanges::default()
        },
    )
    .await
    .unwrap();
    let renamed = c
        .describe_nics(&NicFilter {
            nics: vec![ids[0].clone()],
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(renamed[0].nic_name, "renamed");

    let jobs_before = sim.jobs().len();
    let job = c.detach_nics(&ids).await.unwrap();
    let listed_jobs = c.describe_jobs(std::slice::from_ref(&job)).await.unwrap();
    assert_eq!(listed_jobs.len(), 1);
    assert_eq!(listed_jobs[0].job_action, "DetachNics");
    let mut directive = listed_jobs[0].directive_nics();
    directive.sort();
    let mut expected: Vec<String> = ids.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(directive, expected);
    assert_eq!(
        c.wait_job(&job, Duration::from_secs(10)).await.unwrap(),
        JobOutcome::Succeeded
    );
    assert_eq!(sim.jobs().len(), jobs_before + 1);

    c.delete_nics(&ids).await.unwrap();
    assert!(secondaries(&sim).is_empty(), "no leaked NICs");
    let gone = c
        .describe_nics(&NicFilter {
            nics: ids,
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert!(gone.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn post_requests_work_too() {
    let sim = sim().await;
    let c = client_with(
        &sim,
        ClientSettings {
            post: true,
            ..settings()
        },
    );
    let ids = create(&c, 2, "posted name").await;
    attach(&c, &ids).await;
    let found = c
        .describe_nics(&NicFilter {
            nic_name: Some("posted name".into()),
            status: Some(NicStatus::InUse),
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn batched_calls_respect_max_batch() {
    let sim = sim().await;
    let c = client_with(
        &sim,
        ClientSettings {
            max_batch: 5,
            ..settings()
        },
    );
    let ids = create(&c, 12, "batch").await;
    sim.reset_calls();
    let report = c.attach_nics_batched(&node(), &ids).await;
    assert!(report.is_complete(), "{:?}", report.error());
    assert_eq!(sim.calls().action("AttachNics"), 3);
    for (_, job) in &report.done {
        assert_eq!(
            c.wait_job(job, Duration::from_secs(10)).await.unwrap(),
            JobOutcome::Succeeded
        );
    }
    assert!(
        secondaries(&sim)
            .iter()
            .all(|n| n.nic.status == qingcloud_sim::wire::NicStatus::InUse)
    );

    let report = c.detach_nics_batched(&ids).await;
    assert!(report.is_complete());
    assert_eq!(sim.calls().action("DetachNics"), 3);
    for (_, job) in &report.done {
        c.wait_job(job, Duration::from_secs(10)).await.unwrap();
    }
    let report = c.delete_nics_batched(&ids).await;
    assert!(report.is_complete());
    assert_eq!(sim.calls().action("DeleteNics"), 3);
    assert!(secondaries(&sim).is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn describe_pages_beyond_the_cap_of_100() {
    let sim = sim().await;
    let c = client(&sim);
    let ids = create(&c, 230, "many").await;
    assert_eq!(ids.len(), 230);
    sim.reset_calls();
    let nics = c
        .describe_nics(&NicFilter {
            vxnets: vec![vxnet()],
            ..NicFilter::default()
        })
        .await
        .unwrap();
    // 230 secondaries plus the primary NICs of the two instances.
    assert_eq!(nics.len(), 232);
    assert_eq!(sim.calls().action("DescribeNics"), 3);
    let mut seen: Vec<&str> = nics.iter().map(|n| n.nic_id.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 232, "no NIC twice");
    sim.shutdown().await;
}

// === API error classes ===

#[tokio::test]
async fn permission_denied_and_not_found() {
    let sim = sim().await;
    let c = client(&sim);
    let ids = create(&c, 2, "deny").await;

    let err = c
        .attach_nics(&STOPPED.parse().unwrap(), &ids[..1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(RetCode::PERMISSION_DENIED), "{err}");
    assert!(!err.is_retryable());

    let err = c.detach_nics(&ids[..1]).await.unwrap_err();
    assert!(
        err.is_permission_denied(),
        "detaching an available NIC: {err}"
    );

    attach(&c, &ids[..1]).await;
    let err = c.delete_nics(&ids[..1]).await.unwrap_err();
    assert!(err.is_permission_denied(), "deleting an in-use NIC: {err}");

    let unknown = NicId::parse("52:54:ff:ff:ff:ff").unwrap();
    sim.reset_calls();
    for err in [
        c.detach_nics(std::slice::from_ref(&unknown))
            .await
            .unwrap_err(),
        c.delete_nics(std::slice::from_ref(&unknown))
            .await
            .unwrap_err(),
        c.attach_nics(&"i-nosuch00".parse().unwrap(), &ids[1..])
            .await
            .unwrap_err(),
        c.modify_nic_attributes(&unknown, &NicChanges::default())
            .await
            .unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err}");
        assert!(!err.is_retryable());
    }
    assert_eq!(sim.calls().total, 4, "2100 is not retried");
    // Describe with unknown ids is not an error.
    let none = c
        .describe_nics(&NicFilter {
            nics: vec![unknown],
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_is_1200_and_not_retried() {
    let sim = sim().await;
    let mut cfg = CloudConfig::from_yaml(&sim.config_yaml(), Path::new("sim.yaml")).unwrap();
    cfg.secret_access_key = qingcloud::Secret::new("not-the-secret");
    let c = Client::new(cfg, settings(), None).unwrap();
    let err = c.describe_jobs(&[]).await.unwrap_err();
    assert_eq!(err.code(), Some(RetCode::AUTH_FAILURE), "{err}");
    assert!(!err.to_string().contains("not-the-secret"));
    assert_eq!(sim.calls().total, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn quota_exceeded_is_2500_throttled_and_not_retried() {
    let sim = sim().await;
    let c = client(&sim);
    sim.set_quota(Some(Quota {
        requests: 2,
        window_ms: 3_600_000,
    }));
    c.describe_jobs(&[]).await.unwrap();
    c.describe_jobs(&[]).await.unwrap();
    let err = c.describe_jobs(&[]).await.unwrap_err();
    assert_eq!(err.code(), Some(RetCode::QUOTA_EXCEEDED), "{err}");
    assert!(err.is_throttled() && err.is_request_quota() && !err.is_retryable());
    assert_eq!(sim.calls().total, 3);
    // The cooldown: no further request reaches the API, from this clone or any other.
    for handle in [c.clone(), c.with_priority(qingcloud::Priority::Urgent)] {
        let err = handle
            .describe_nics(&NicFilter::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::QuotaCooldown { .. }), "{err}");
        assert!(err.is_throttled());
    }
    assert_eq!(sim.calls().total, 3, "nothing sent during the cooldown");
    sim.shutdown().await;
}

#[tokio::test]
async fn quota_cooldown_ends_and_calls_resume() {
    let sim = sim().await;
    let c = client_with(
        &sim,
        ClientSettings {
            // 300 s in production; 200 ms so the test sees the end of it.
            quota_cooldown: Duration::from_millis(200),
            ..settings()
        },
    );
    sim.set_quota(Some(Quota {
        requests: 0,
        window_ms: 3_600_000,
    }));
    assert!(c.describe_jobs(&[]).await.unwrap_err().is_request_quota());
    sim.set_quota(None);
    assert!(matches!(
        c.describe_jobs(&[]).await,
        Err(Error::QuotaCooldown { .. })
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    c.describe_jobs(&[]).await.unwrap();
    assert_eq!(sim.calls().total, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn request_quota_defaults_to_2000_per_hour() {
    assert_eq!(
        Quota::default(),
        Quota {
            requests: 2000,
            window_ms: 3_600_000
        }
    );
    let from_yaml: qingcloud_sim::SimConfig = serde_json::from_str(r#"{"quota": {}}"#).unwrap();
    assert_eq!(from_yaml.quota, Some(Quota::per_hour(2000)));
    assert_eq!(
        qingcloud_sim::SimConfig::default().quota,
        None,
        "off unless configured"
    );
}

#[tokio::test]
async fn nic_quota_is_a_resource_2500_worded_apart_from_the_request_quota() {
    let sim = Simulator::builder()
        .vxnet(VxnetSpec::new(VXNET, "172.22.0.0/24".parse().unwrap()))
        .instance(InstanceSpec::new(NODE))
        // The primary NIC counts: room for 2 more.
        .configure(|c| c.nic_quota = Some(3))
        .start()
        .await
        .unwrap();
    let c = client(&sim);
    c.create_nics(&vxnet(), 2, Some("a")).await.unwrap();
    let err = c.create_nics(&vxnet(), 1, Some("b")).await.unwrap_err();
    assert_eq!(err.code(), Some(RetCode::QUOTA_EXCEEDED), "{err}");
    assert!(err.is_resource_quota() && !err.is_request_quota(), "{err}");
    assert!(!err.is_throttled() && !err.is_retryable());
    // No cooldown: the client keeps working.
    c.describe_nics(&NicFilter::default()).await.unwrap();
    assert_eq!(sim.calls().total, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn filter_lists_of_500_ids_are_chunked_under_the_uri_limit() {
    let mut b = Simulator::builder().vxnet(VxnetSpec::new(VXNET, "172.22.0.0/24".parse().unwrap()));
    let ids: Vec<InstanceId> = (0..500)
        .map(|i| format!("i-{i:08}").parse().unwrap())
        .collect();
    // At most 252 NICs per vxnet: the primaries go to two vxnets.
    b = b.vxnet(VxnetSpec::new(
        "vxnet-pods002",
        "172.23.0.0/24".parse().unwrap(),
    ));
    for (i, id) in ids.iter().enumerate() {
        let mut spec = InstanceSpec::new(id.as_str());
        spec.vxnet = Some(if i % 2 == 0 { VXNET } else { "vxnet-pods002" }.into());
        b = b.instance(spec);
    }
    let sim = b.start().await.unwrap();
    // The client chunks the list to the page size: 5 requests, all under 8 KB, all answered
    // (one request with 500 ids is ~15 KB: api.rs shows the simulator refusing it).
    let c = client(&sim);
    let found = c.describe_instances(&ids).await.unwrap();
    assert_eq!(found.len(), 500);
    let calls = sim.calls();
    assert_eq!((calls.total, calls.uri_too_long), (5, 0), "{calls:?}");
    // The NIC filters too (the 500 primary NICs, by id and by instance).
    let nics: Vec<NicId> = found
        .iter()
        .flat_map(|i| i.vxnets.iter().map(|v| v.nic_id.parse().unwrap()))
        .collect();
    let by_id = c
        .describe_nics(&NicFilter {
            nics: nics.clone(),
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_id.len(), 500);
    let by_instance = c
        .describe_nics(&NicFilter {
            instances: ids.clone(),
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_instance.len(), 500);
    assert_eq!(sim.calls().uri_too_long, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn transient_api_errors_are_retried() {
    let sim = sim().await;
    let c = client(&sim);
    sim.inject(Fault::error(5100).on("CreateNics").next(1));
    sim.inject(Fault::error(5000).on("CreateNics").next(1));
    let ids = create(&c, 1, "retry").await;
    assert_eq!(ids.len(), 1);
    assert_eq!(sim.calls().action("CreateNics"), 3);
    assert_eq!(
        secondaries(&sim).len(),
        1,
        "refused attempts created nothing"
    );

    sim.reset_calls();
    sim.inject(Fault::error(5100).on("DescribeNics"));
    let err = c.describe_nics(&NicFilter::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(RetCode::SERVER_BUSY));
    assert_eq!(
        sim.calls().action("DescribeNics"),
        4,
        "connection_retries 3 = 4 attempts"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn lease_not_ready_is_retried_other_1400s_are_not() {
    let sim = sim().await;
    let c = client(&sim);
    let ids = create(&c, 1, "lease").await;
    sim.reset_calls();
    // The simulator's default 1400 message is "lease info not ready yet, please try later".
    sim.inject(Fault::error(1400).on("AttachNics").next(1));
    attach(&c, &ids).await;
    assert_eq!(sim.calls().action("AttachNics"), 2);
    // Attaching it again is a real 1400 (in use): answered at once.
    let err = c.attach_nics(&node(), &ids).await.unwrap_err();
    assert!(err.is_permission_denied() && !err.is_retryable(), "{err}");
    assert_eq!(sim.calls().action("AttachNics"), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn transport_faults_are_retried() {
    let sim = sim().await;
    let c = client(&sim);
    for kind in [
        FaultKind::HttpStatus(503),
        FaultKind::HttpStatus(502),
        FaultKind::NonJson,
        FaultKind::MissingRetCode,
        FaultKind::Reset,
    ] {
        sim.clear_faults();
        sim.reset_calls();
        sim.inject(Fault::new(kind.clone()).on("DescribeVxnets").next(1));
        let vxnets = c
            .describe_vxnets(&[])
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(vxnets.len(), 1);
        assert_eq!(sim.calls().action("DescribeVxnets"), 2, "{kind:?}");
    }
    // Every attempt failing surfaces the class of the last failure.
    sim.clear_faults();
    sim.inject(Fault::new(FaultKind::HttpStatus(503)).on("DescribeVxnets"));
    let err = c.describe_vxnets(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 503, .. }), "{err}");
    sim.clear_faults();
    sim.inject(Fault::new(FaultKind::NonJson).on("DescribeVxnets"));
    let err = c.describe_vxnets(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn http_429_is_throttling_retried_after_a_backoff() {
    let sim = sim().await;
    let c = client(&sim);
    sim.inject(
        Fault::new(FaultKind::HttpStatus(429))
            .on("DescribeVxnets")
            .next(1),
    );
    assert_eq!(c.describe_vxnets(&[]).await.unwrap().len(), 1);
    assert_eq!(sim.calls().action("DescribeVxnets"), 2);
    sim.inject(Fault::new(FaultKind::HttpStatus(429)).on("DescribeVxnets"));
    let err = c.describe_vxnets(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 429, .. }), "{err}");
    assert!(err.is_throttled() && !err.is_request_quota());
    // Not the request quota: no cooldown, the next call goes out.
    sim.clear_faults();
    c.describe_vxnets(&[]).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn create_after_a_lost_response_is_not_repeated() {
    let sim = sim().await;
    let c = client(&sim);
    // The cloud creates the NIC but the answer is lost: a retry would leak a second NIC.
    sim.inject(
        Fault::new(FaultKind::HttpStatus(502))
            .on("CreateNics")
            .next(1)
            .after_effect(),
    );
    let err = c
        .create_nics(&vxnet(), 1, Some("lost-answer"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: 502, .. }), "{err}");
    assert_eq!(sim.calls().action("CreateNics"), 1);
    // The caller finds it by name instead.
    let found = c
        .describe_nics(&NicFilter {
            nic_name: Some("lost-answer".into()),
            ..NicFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(secondaries(&sim).len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn request_timeout_is_reported_as_timeout() {
    let sim = sim().await;
    let c = client_with(
        &sim,
        ClientSettings {
            request_timeout: Duration::from_millis(200),
            ..settings()
        },
    );
    sim.inject(Fault::new(FaultKind::DelayMs(2_000)).on("DescribeJobs"));
    let err = c.describe_jobs(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    sim.clear_faults();
    sim.inject(
        Fault::new(FaultKind::DelayMs(2_000))
            .on("DescribeJobs")
            .next(1),
    );
    c.describe_jobs(&[]).await.unwrap();
    sim.shutdown().await;
}

// === jobs ===

#[tokio::test]
async fn job_failures_and_timeouts() {
    let sim = sim().await;
    let c = client(&sim);
    let ids = create(&c, 4, "jobs").await;
    for (outcome, expected) in [
        (SimJobOutcome::Failed, JobOutcome::Failed(JobStatus::Failed)),
        (
            SimJobOutcome::DoneWithFailure,
            JobOutcome::Failed(JobStatus::DoneWithFailure),
        ),
    ] {
        sim.inject(Fault::new(FaultKind::Job(outcome)).on("AttachNics").next(1));
        let job = c.attach_nics(&node(), &ids[..2]).await.unwrap();
        assert_eq!(
            c.wait_job(&job, Duration::from_secs(10)).await.unwrap(),
            expected
        );
        // Undo whatever the partial job attached.
        let attached: Vec<NicId> = c
            .describe_nics(&NicFilter {
                nics: ids.clone(),
                status: Some(NicStatus::InUse),
                ..NicFilter::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|n| NicId::parse(&n.nic_id).unwrap())
            .collect();
        if !attached.is_empty() {
            let job = c.detach_nics(&attached).await.unwrap();
            c.wait_job(&job, Duration::from_secs(10)).await.unwrap();
        }
    }

    sim.inject(
        Fault::new(FaultKind::Job(SimJobOutcome::NeverFinish))
            .on("AttachNics")
            .next(1),
    );
    let job = c.attach_nics(&node(), &ids[2..3]).await.unwrap();
    assert_eq!(
        c.wait_job(&job, Duration::from_millis(500)).await.unwrap(),
        JobOutcome::Unknown,
        "a timeout is unknown, never failure"
    );

    // Unfinished jobs can be listed without paging through the account's history.
    let running = c
        .describe_jobs_filtered(&JobFilter {
            status: vec![JobStatus::Pending, JobStatus::Working],
            job_action: Some(qingcloud::Action::AttachNics),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].job_id, job.as_str());
    assert!(sim.jobs().len() > 3);

    // 5100 while polling is tolerated.
    sim.inject(Fault::error(5100).on("DescribeJobs").next(6));
    let job = c.attach_nics(&node(), &ids[3..]).await.unwrap();
    assert_eq!(
        c.wait_job(&job, Duration::from_secs(10)).await.unwrap(),
        JobOutcome::Succeeded
    );
    sim.shutdown().await;
}

// === hand-built requests ===

/// Sends `GET path?query` and returns the JSON answer's ret_code.
async fn raw_get(sim: &SimHandle, path: &str, query: &str) -> i32 {
    let mut sock = TcpStream::connect(sim.addr()).await.unwrap();
    let req = format!(
        "GET {path}?{query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        sim.addr()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    sock.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    i32::try_from(v["ret_code"].as_i64().unwrap()).unwrap()
}

fn now_stamp(offset_s: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset_s))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Common parameters plus `extra`, with an optional override of `time_stamp`.
fn params(
    sim: &SimHandle,
    action: &str,
    extra: &[(&str, &str)],
    time_stamp: &str,
) -> Vec<(String, String)> {
    let (id, _) = sim.access_key();
    let mut p: Vec<(String, String)> = [
        ("action", action),
        ("zone", sim.zone()),
        ("access_key_id", id),
        ("time_stamp", time_stamp),
        ("signature_method", "HmacSHA256"),
        ("signature_version", "1"),
        ("version", "1"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    p.sort();
    p
}

/// The query as sent: canonical parameters plus the given signature.
fn query(p: &[(String, String)], signature: &str) -> String {
    format!(
        "{}&signature={}",
        qingcloud::signer::canonical_query(p),
        qingcloud::signer::percent_encode(signature)
    )
}

#[tokio::test]
async fn hand_built_requests_are_judged_strictly() {
    let sim = sim().await;
    let (_, secret) = sim.access_key();
    let secret = secret.to_string();
    let extra = [("nic_name", "pod nic/1+x"), ("vxnets.1", VXNET)];
    let p = params(&sim, "DescribeNics", &extra, &now_stamp(0));
    let canonical = qingcloud::signer::canonical_query(&p);

    // Control: the same hand-built request, signed right, succeeds on both paths.
    let good = qingcloud::signer::sign(&secret, "GET", "/iaas/", &p);
    assert_eq!(raw_get(&sim, "/iaas/", &query(&p, &good)).await, 0);
    let good_no_slash = qingcloud::signer::sign(&secret, "GET", "/iaas", &p);
    assert_eq!(raw_get(&sim, "/iaas", &query(&p, &good_no_slash)).await, 0);

    // 1200: wrong key.
    let wrong_key = qingcloud::signer::sign("wrong-secret", "GET", "/iaas/", &p);
    assert_eq!(raw_get(&sim, "/iaas/", &query(&p, &wrong_key)).await, 1200);
    // 1200: unknown access key id.
    let mut unknown_id = p.clone();
    unknown_id
        .iter_mut()
        .find(|(k, _)| k == "access_key_id")
        .unwrap()
        .1 = "NOSUCHKEY".into();
    let sig = qingcloud::signer::sign(&secret, "GET", "/iaas/", &unknown_id);
    assert_eq!(
        raw_get(&sim, "/iaas/", &query(&unknown_id, &sig)).await,
        1200
    );
    // 1200: '+' for space in the string to sign.
    assert!(canonical.contains("%20"));
    let plus = qingcloud::signer::sign_string(
        &secret,
        &format!("GET\n/iaas/\n{}", canonical.replace("%20", "+")),
    );
    assert_eq!(raw_get(&sim, "/iaas/", &query(&p, &plus)).await, 1200);
    // 1200: lowercase hex in the string to sign.
    let lower = lowercase_escapes(&canonical);
    assert_ne!(lower, canonical);
    let lower = qingcloud::signer::sign_string(&secret, &format!("GET\n/iaas/\n{lower}"));
    assert_eq!(raw_get(&sim, "/iaas/", &query(&p, &lower)).await, 1200);
    // 1200: signed for another path than the one sent.
    assert_eq!(raw_get(&sim, "/iaas", &query(&p, &good)).await, 1200);
    // 1200: signed as POST, sent as GET.
    let post = qingcloud::signer::sign(&secret, "POST", "/iaas/", &p);
    assert_eq!(raw_get(&sim, "/iaas/", &query(&p, &post)).await, 1200);

    // 1300: a time stamp ten minutes old.
    let old = params(&sim, "DescribeNics", &extra, &now_stamp(-600));
    let sig = qingcloud::signer::sign(&secret, "GET", "/iaas/", &old);
    assert_eq!(raw_get(&sim, "/iaas/", &query(&old, &sig)).await, 1300);

    // 1100: required parameter missing (CreateNics without vxnet), malformed time stamp.
    let missing = params(&sim, "CreateNics", &[("count", "1")], &now_stamp(0));
    let sig = qingcloud::signer::sign(&secret, "GET", "/iaas/", &missing);
    assert_eq!(raw_get(&sim, "/iaas/", &query(&missing, &sig)).await, 1100);
    let bad_time = params(&sim, "DescribeNics", &[], "yesterday");
    let sig = qingcloud::signer::sign(&secret, "GET", "/iaas/", &bad_time);
    assert_eq!(raw_get(&sim, "/iaas/", &query(&bad_time, &sig)).await, 1100);

    // 1101: unknown action.
    let unknown = params(&sim, "LaunchRocket", &[], &now_stamp(0));
    let sig = qingcloud::signer::sign(&secret, "GET", "/iaas/", &unknown);
    assert_eq!(raw_get(&sim, "/iaas/", &query(&unknown, &sig)).await, 1101);

    assert!(
        secondaries(&sim).is_empty(),
        "rejected requests changed nothing"
    );
    sim.shutdown().await;
}

/// Rewrites every `%XY` escape with lowercase hex digits.
fn lowercase_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        out.push('%');
        out.push_str(&rest[i + 1..i + 3].to_ascii_lowercase());
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}
