//! The realistic behaviours (issue 11): the `realistic` profile, batch limits, jobs serialized
//! per instance, VPC and instance-state refusals, vxnets without router or DHCP, the
//! `available_ip_count` field, a long job history and HTTPS with a CA made at start. Raw
//! signed HTTP, except for HTTPS, which drives the real client crate.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Api;
use qingcloud::wire::JobStatus;
use qingcloud::{Client, ClientSettings, CloudConfig, JobFilter};
use qingcloud_sim::{
    InstanceJobs, InstanceSpec, JobLatency, Latency, Profile, Quota, Rules, SimConfig, SimHandle,
    Simulator, VxnetSpec,
};
use serde_json::Value;

const PODS: &str = "vxnet-pods001";
const OTHER_VPC: &str = "vxnet-othervp";
const NODE: &str = "i-node0001";
const NODE2: &str = "i-node0002";

/// Realistic profile without TLS (the raw test client speaks HTTP) and with fixed job
/// phases of 100 + 200 ms on a manual clock, so job order is checked without sleeping.
fn realistic() -> Simulator {
    Simulator::builder()
        .profile(Profile::Realistic)
        .configure(|c| {
            c.tls = false;
            c.job_history = 0;
            c.job_latency = JobLatency {
                pending: Latency::FixedMs(100),
                working: Latency::FixedMs(200),
            };
        })
        .manual_clock()
        .vxnet(VxnetSpec::new(PODS, "172.22.0.0/24".parse().unwrap()))
        .instance(InstanceSpec::new(NODE))
        .instance(InstanceSpec::new(NODE2))
}

async fn start(b: Simulator) -> (SimHandle, Api) {
    let sim = b.start().await.unwrap();
    let api = Api::new(&sim);
    (sim, api)
}

fn nic_params(nics: &[String]) -> Vec<(String, String)> {
    nics.iter()
        .enumerate()
        .map(|(i, n)| (format!("nics.{}", i + 1), n.clone()))
        .collect()
}

/// Sends AttachNics (with `instance`) or DetachNics; returns the JSON answer.
async fn job_call(api: &Api, action: &str, instance: Option<&str>, nics: &[String]) -> Value {
    let owned = nic_params(nics);
    let mut p: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(i) = instance {
        p.push(("instance", i));
    }
    api.get(action, &p).await.json()
}

async fn job_status(api: &Api, job: &str) -> String {
    let v = api.ok("DescribeJobs", &[("jobs.1", job)]).await;
    v["job_set"][0]["status"].as_str().unwrap().to_owned()
}

fn ret(v: &Value) -> i64 {
    v["ret_code"].as_i64().unwrap()
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

#[test]
fn realistic_profile_turns_every_rule_on_and_default_stays_lenient() {
    let cfg = SimConfig::with_profile(Profile::Realistic);
    assert_eq!(cfg.nic_batch_limit, Some(5));
    assert_eq!(cfg.rules, Rules::realistic());
    assert_eq!(cfg.rules.instance_jobs, InstanceJobs::Queue);
    assert!(cfg.rules.vpc_check && cfg.rules.routed_create_only);
    assert!(cfg.rules.ip_count_verbose_only);
    assert!(cfg.tls);
    assert!(cfg.job_history >= 1000);
    let Latency::UniformMs(lo, hi) = cfg.job_latency.working else {
        panic!("{:?}", cfg.job_latency)
    };
    assert!(lo >= 1000 && hi <= 5000, "a few seconds: {lo}-{hi}");
    assert_eq!(cfg.quota, Some(Quota::per_hour(2000)));
    assert_eq!(cfg.nic_visibility_lag_ms, 3000);

    let default = SimConfig::default();
    assert_eq!(SimConfig::with_profile(Profile::Default), default);
    assert_eq!(default.nic_batch_limit, None);
    assert_eq!(default.rules, Rules::default());
    assert!(!default.tls && default.job_history == 0);
    assert!(default.quota.is_none() && default.nic_visibility_lag_ms == 0);

    // A config file names the profile; its own keys win over the profile's.
    let cfg = SimConfig::from_yaml("profile: realistic\ntls: false\nseed: 9\n", None).unwrap();
    assert_eq!(
        (cfg.tls, cfg.seed, cfg.nic_batch_limit),
        (false, 9, Some(5))
    );
    assert_eq!(cfg.rules, Rules::realistic());
    // The flag wins over the file's profile.
    let cfg = SimConfig::from_yaml("profile: realistic\n", Some(Profile::Default)).unwrap();
    assert_eq!(cfg, SimConfig::default());
    let cfg = SimConfig::from_yaml(
        "rules: {instance_jobs: refuse}\nnic_batch_limit: 3\n",
        Some(Profile::Realistic),
    )
    .unwrap();
    assert_eq!(cfg.rules.instance_jobs, InstanceJobs::Refuse);
    assert!(
        !cfg.rules.vpc_check,
        "a file's `rules` replaces the whole set"
    );
    assert_eq!(cfg.nic_batch_limit, Some(3));
    assert!(SimConfig::from_yaml("profile: lenient\n", None).is_err());
    assert!(SimConfig::from_yaml("no_such_key: 1\n", None).is_err());
}

#[tokio::test]
async fn at_most_5_nics_per_attach_and_detach_in_the_realistic_profile() {
    let (sim, api) = start(realistic()).await;
    let nics = api.create(PODS, 6).await;
    let v = job_call(&api, "AttachNics", Some(NODE), &nics).await;
    assert_eq!(ret(&v), 1100, "{v}");
    assert!(message(&v).contains("at most 5"), "{v}");
    let job = job_call(&api, "AttachNics", Some(NODE), &nics[..5]).await;
    assert_eq!(ret(&job), 0, "{job}");
    sim.advance(Duration::from_millis(300)).await.unwrap();
    let job = job_call(&api, "AttachNics", Some(NODE), &nics[5..]).await;
    assert_eq!(ret(&job), 0, "{job}");
    sim.advance(Duration::from_millis(300)).await.unwrap();
    assert_eq!(ret(&job_call(&api, "DetachNics", None, &nics).await), 1100);
    assert_eq!(
        ret(&job_call(&api, "DetachNics", None, &nics[..5]).await),
        0
    );

    // The limit is a run-time setting too.
    sim.set_nic_batch_limit(None);
    sim.advance(Duration::from_millis(300)).await.unwrap();
    let all = api.create(PODS, 6).await;
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE2), &all).await),
        0
    );
}

#[tokio::test]
async fn jobs_of_one_instance_queue_behind_each_other() {
    let (sim, api) = start(realistic()).await;
    let nics = api.create(PODS, 4).await;
    let first = api.job("AttachNics", Some(NODE), &nics[..1]).await;
    let second = api.job("AttachNics", Some(NODE), &nics[1..2]).await;
    let elsewhere = api.job("AttachNics", Some(NODE2), &nics[2..3]).await;
    sim.advance(Duration::from_millis(150)).await.unwrap();
    assert_eq!(job_status(&api, &first).await, "working");
    assert_eq!(job_status(&api, &second).await, "pending", "queued");
    assert_eq!(
        job_status(&api, &elsewhere).await,
        "working",
        "other instance"
    );
    sim.advance(Duration::from_millis(150)).await.unwrap();
    assert_eq!(job_status(&api, &first).await, "successful");
    assert_eq!(job_status(&api, &elsewhere).await, "successful");
    assert_eq!(
        job_status(&api, &second).await,
        "pending",
        "starts when first ends"
    );
    // A detach on the instance queues behind the second attach.
    let detach = api.job("DetachNics", None, &nics[..1]).await;
    sim.advance(Duration::from_millis(100)).await.unwrap();
    assert_eq!(job_status(&api, &second).await, "working");
    assert_eq!(job_status(&api, &detach).await, "pending");
    sim.advance(Duration::from_millis(200)).await.unwrap();
    assert_eq!(job_status(&api, &second).await, "successful");
    assert_eq!(job_status(&api, &detach).await, "pending");
    sim.advance(Duration::from_millis(300)).await.unwrap();
    assert_eq!(job_status(&api, &detach).await, "successful");

    // Behind a job that never ends, the queue never moves.
    sim.inject(
        qingcloud_sim::Fault::new(qingcloud_sim::FaultKind::Job(
            qingcloud_sim::JobOutcome::NeverFinish,
        ))
        .on("AttachNics")
        .next(1),
    );
    let stuck = api.job("AttachNics", Some(NODE2), &nics[3..4]).await;
    let behind = api.job("DetachNics", None, &nics[2..3]).await;
    sim.advance(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(job_status(&api, &stuck).await, "working");
    assert_eq!(job_status(&api, &behind).await, "pending");

    // Concurrent (the default): the second job runs at once.
    sim.set_rules(Rules {
        instance_jobs: InstanceJobs::Concurrent,
        ..Rules::realistic()
    });
    let more = api.create(PODS, 1).await;
    let free = api.job("DetachNics", None, &nics[1..2]).await;
    let at_once = api.job("AttachNics", Some(NODE), &more).await;
    sim.advance(Duration::from_millis(150)).await.unwrap();
    assert_eq!(job_status(&api, &free).await, "working");
    assert_eq!(job_status(&api, &at_once).await, "working");
}

#[tokio::test]
async fn jobs_of_a_busy_instance_can_be_refused_instead() {
    let (sim, api) = start(realistic().configure(|c| {
        c.rules.instance_jobs = InstanceJobs::Refuse;
    }))
    .await;
    let nics = api.create(PODS, 3).await;
    let first = api.job("AttachNics", Some(NODE), &nics[..1]).await;
    let v = job_call(&api, "AttachNics", Some(NODE), &nics[1..2]).await;
    assert_eq!(ret(&v), 1400, "{v}");
    assert!(message(&v).starts_with("PermissionDenied, "), "{v}");
    assert!(message(&v).contains(&first), "names the running job: {v}");
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE2), &nics[1..2]).await),
        0,
        "another instance is not busy"
    );
    sim.advance(Duration::from_millis(300)).await.unwrap();
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE), &nics[2..]).await),
        0
    );
    // A detach of a NIC of the busy instance is refused too.
    assert_eq!(
        ret(&job_call(&api, "DetachNics", None, &nics[..1]).await),
        1400
    );
    sim.advance(Duration::from_millis(300)).await.unwrap();
    assert_eq!(
        ret(&job_call(&api, "DetachNics", None, &nics[..1]).await),
        0
    );
}

#[tokio::test]
async fn attach_is_refused_across_vpcs() {
    let (sim, api) =
        start(realistic().vxnet(
            VxnetSpec::new(OTHER_VPC, "172.30.0.0/24".parse().unwrap()).router("rtr-othervpc"),
        ))
        .await;
    let vxnets = api.ok("DescribeVxnets", &[]).await;
    let router = |id: &str| {
        vxnets["vxnet_set"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["vxnet_id"] == id)
            .map(|v| v["vpc_router_id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(router(OTHER_VPC), "rtr-othervpc");
    assert!(router(PODS).starts_with("rtr-") && router(PODS) != "rtr-othervpc");

    let foreign = api.create(OTHER_VPC, 1).await;
    let v = job_call(&api, "AttachNics", Some(NODE), &foreign).await;
    assert_eq!(ret(&v), 1400, "{v}");
    assert!(message(&v).starts_with("PermissionDenied, "), "{v}");
    assert!(message(&v).contains("rtr-othervpc"), "{v}");
    // Same VPC: fine; and with the rule off the foreign NIC attaches.
    let local = api.create(PODS, 1).await;
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE), &local).await),
        0
    );
    sim.set_rules(Rules {
        vpc_check: false,
        ..Rules::realistic()
    });
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE2), &foreign).await),
        0
    );
}

#[tokio::test]
async fn attach_is_refused_to_stopped_and_suspended_instances() {
    let (sim, api) = start(realistic()).await;
    let nics = api.create(PODS, 1).await;
    for status in [r#"{"status":"suspended"}"#, r#"{"running":false}"#] {
        let (code, _) = admin(&sim, "PUT", &format!("instances/{NODE}"), status).await;
        assert_eq!(code, 200);
        let v = job_call(&api, "AttachNics", Some(NODE), &nics).await;
        assert_eq!(ret(&v), 1400, "{status}: {v}");
        assert!(message(&v).contains("is not running"), "{v}");
        let shown = api.ok("DescribeInstances", &[("instances.1", NODE)]).await;
        assert_ne!(shown["instance_set"][0]["status"], "running", "{status}");
    }
    let (code, _) = admin(
        &sim,
        "PUT",
        &format!("instances/{NODE}"),
        r#"{"running":true}"#,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE), &nics).await),
        0
    );
    let (code, _) = admin(
        &sim,
        "PUT",
        "instances/i-nosuch00",
        r#"{"status":"stopped"}"#,
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn create_is_refused_in_vxnets_without_router_or_dhcp() {
    let (sim, api) = start(
        realistic()
            .vxnet(VxnetSpec::new("vxnet-novpc00", "10.1.0.0/24".parse().unwrap()).outside_vpc())
            .vxnet(VxnetSpec::new("vxnet-nodhcp0", "10.2.0.0/24".parse().unwrap()).without_dhcp()),
    )
    .await;
    let v = api
        .ok(
            "DescribeVxnets",
            &[("vxnets.1", "vxnet-novpc00"), ("vxnets.2", "vxnet-nodhcp0")],
        )
        .await;
    let set = v["vxnet_set"].as_array().unwrap();
    let novpc = set
        .iter()
        .find(|v| v["vxnet_id"] == "vxnet-novpc00")
        .unwrap();
    assert!(novpc["router"].is_null(), "{novpc}");
    assert_eq!(novpc["vxnet_type"], 0);
    assert_eq!(novpc["vpc_router_id"], "");
    let nodhcp = set
        .iter()
        .find(|v| v["vxnet_id"] == "vxnet-nodhcp0")
        .unwrap();
    assert_eq!(nodhcp["router"]["dyn_ip_start"], "", "{nodhcp}");
    assert_eq!(nodhcp["router"]["dyn_ip_end"], "");
    assert_eq!(nodhcp["vxnet_type"], 1);

    for (vxnet, why) in [
        ("vxnet-novpc00", "not in a vpc"),
        ("vxnet-nodhcp0", "no dhcp"),
    ] {
        let r = api.get("CreateNics", &[("vxnet", vxnet)]).await;
        assert_eq!(r.ret_code(), 1400, "{}", r.body);
        assert!(
            r.json()["message"].as_str().unwrap().contains(why),
            "{}",
            r.body
        );
    }
    assert_eq!(
        api.get("CreateNics", &[("vxnet", "vxnet-nosuch0")])
            .await
            .ret_code(),
        2100
    );
    sim.set_rules(Rules::default());
    assert_eq!(api.create("vxnet-novpc00", 1).await.len(), 1);
    assert_eq!(api.create("vxnet-nodhcp0", 1).await.len(), 1);
}

#[tokio::test]
async fn available_ip_count_only_when_verbose() {
    let (sim, api) = start(realistic()).await;
    let quiet = api.get("DescribeVxnets", &[("verbose", "0")]).await;
    assert_eq!(quiet.ret_code(), 0);
    assert!(
        !quiet.body.contains("available_ip_count"),
        "absent, not null: {}",
        quiet.body
    );
    let verbose = api.ok("DescribeVxnets", &[("verbose", "1")]).await;
    // 172.22.0.0/24: 253 DHCP addresses, two taken by the primaries.
    assert_eq!(verbose["vxnet_set"][0]["available_ip_count"], 251);
    sim.set_rules(Rules::default());
    let lenient = api.ok("DescribeVxnets", &[]).await;
    assert_eq!(lenient["vxnet_set"][0]["available_ip_count"], 251);
}

#[tokio::test]
async fn the_job_history_is_long_and_pages_at_100() {
    let (sim, api) = start(realistic().configure(|c| c.job_history = 250)).await;
    let nics = api.create(PODS, 1).await;
    let mine = api.job("AttachNics", Some(NODE), &nics).await;
    let all = api.ok("DescribeJobs", &[("limit", "100")]).await;
    assert_eq!(all["total_count"], 251);
    let page = all["job_set"].as_array().unwrap();
    assert_eq!(page.len(), 100);
    assert_eq!(page[0]["job_id"], mine.as_str(), "newest first");
    let last = api
        .ok("DescribeJobs", &[("limit", "100"), ("offset", "200")])
        .await;
    let tail = last["job_set"].as_array().unwrap();
    assert_eq!(tail.len(), 51);
    // The past lies before the simulator started, spread over weeks.
    let oldest = tail.last().unwrap()["create_time"].as_str().unwrap();
    let newest = page[1]["create_time"].as_str().unwrap();
    let days = |a: &str, b: &str| {
        let a: jiff::Timestamp = a.parse().unwrap();
        let b: jiff::Timestamp = b.parse().unwrap();
        b.duration_since(a).as_hours() / 24
    };
    assert!(days(oldest, newest) >= 7, "{oldest} .. {newest}");
    assert!(days(newest, &common::stamp(0)) >= 0);
    assert!(
        tail.iter()
            .all(|j| matches!(j["job_action"].as_str(), Some("AttachNics" | "DetachNics")))
    );

    // status.N filters: the running job alone, or the failed part of the history.
    let running = api
        .ok(
            "DescribeJobs",
            &[("status.1", "pending"), ("status.2", "working")],
        )
        .await;
    assert_eq!(running["total_count"], 1);
    assert_eq!(running["job_set"][0]["job_id"], mine.as_str());
    let failed = api.ok("DescribeJobs", &[("status.1", "failed")]).await;
    let failed_n = failed["total_count"].as_u64().unwrap();
    let ok_n = api.ok("DescribeJobs", &[("status.1", "successful")]).await["total_count"]
        .as_u64()
        .unwrap();
    assert!(failed_n > 0 && ok_n > 0);
    assert_eq!(failed_n + ok_n, 250);
    sim.advance(Duration::from_millis(300)).await.unwrap();
    let running = api
        .ok(
            "DescribeJobs",
            &[("status.1", "pending"), ("status.2", "working")],
        )
        .await;
    assert_eq!(running["total_count"], 0);
    assert_eq!(
        api.get("DescribeJobs", &[("status.1", "bogus")])
            .await
            .ret_code(),
        1100
    );
}

#[tokio::test]
async fn the_client_pays_one_call_per_100_jobs_of_history() {
    let sim = realistic()
        .configure(|c| c.job_history = 1000)
        .start()
        .await
        .unwrap();
    let client = client_for(&sim.config_yaml());
    sim.reset_calls();
    let all = client.describe_jobs(&[]).await.unwrap();
    assert_eq!(all.len(), 1000);
    assert_eq!(sim.calls().action("DescribeJobs"), 10);
    sim.reset_calls();
    let running = client
        .describe_jobs_filtered(&JobFilter {
            status: vec![JobStatus::Pending, JobStatus::Working],
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(running.is_empty());
    assert_eq!(sim.calls().action("DescribeJobs"), 1);
}

fn client_for(yaml: &str) -> Client {
    let cfg = CloudConfig::from_yaml(yaml, Path::new("sim.yaml")).unwrap();
    Client::new(
        cfg,
        ClientSettings {
            qps: 10_000.0,
            burst: 10_000,
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(10),
            retry_budget: Duration::from_millis(50),
            ..ClientSettings::default()
        },
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn https_with_a_ca_made_at_start_drives_the_real_client() {
    let sim = Simulator::builder()
        .profile(Profile::Realistic)
        .configure(|c| c.job_history = 0)
        .vxnet(VxnetSpec::new(PODS, "172.22.0.0/24".parse().unwrap()))
        .instance(InstanceSpec::new(NODE))
        .start()
        .await
        .unwrap();
    assert!(sim.url().starts_with("https://"), "{}", sim.url());
    let ca_file = sim.ca_file().expect("a CA file").to_owned();
    let pem = std::fs::read_to_string(&ca_file).unwrap();
    assert_eq!(Some(pem.as_str()), sim.ca_pem());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let yaml = sim.config_yaml();
    assert!(yaml.contains("protocol: 'https'"), "{yaml}");

    // The client trusts the simulator's CA through the config file's `ca_file`.
    let dir = std::env::temp_dir().join(format!("qc-sim-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let cfg = CloudConfig::load(&path).unwrap();
    assert_eq!(cfg.ca_file.as_deref(), Some(ca_file.as_path()));
    let client = client_for(&yaml);
    let vxnet = PODS.parse().unwrap();
    let created = client.create_nics(&vxnet, 2, Some("tls")).await.unwrap();
    assert_eq!(created.len(), 2);
    let vxnets = client.describe_vxnets(&[vxnet]).await.unwrap();
    assert_eq!(vxnets.len(), 1);
    assert!(
        vxnets[0].available_ip_count.is_some_and(|n| n > 0),
        "the client asks for verbose rows, without which the realistic profile leaves it out"
    );
    assert_eq!(sim.calls().by_ret_code.get(&0), Some(&2));

    // Without the CA the certificate is not trusted: a transport error, nothing served.
    let untrusted: String = yaml
        .lines()
        .filter(|l| !l.starts_with("ca_file:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let err = client_for(&untrusted)
        .describe_vxnets(&[])
        .await
        .unwrap_err();
    assert!(matches!(err, qingcloud::Error::Transport { .. }), "{err:?}");
    // Plain HTTP to the TLS port is not answered either.
    let plain = untrusted.replace("protocol: 'https'", "protocol: 'http'");
    assert!(client_for(&plain).describe_vxnets(&[]).await.is_err());
    assert_eq!(sim.calls().total, 2, "no request got through unverified");

    // A missing CA file is a config error naming the file.
    let missing = yaml.replace(&ca_file.display().to_string(), "/nonexistent/ca.pem");
    let cfg = CloudConfig::from_yaml(&missing, Path::new("sim.yaml")).unwrap();
    let err = Client::new(cfg, ClientSettings::default(), None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    // The CA file the simulator made goes away with it.
    sim.shutdown().await;
    assert!(!ca_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn rules_are_read_and_set_through_the_admin_api() {
    let (sim, api) = start(realistic()).await;
    let (code, rules) = admin(&sim, "GET", "rules", "").await;
    assert_eq!(code, 200);
    assert_eq!(
        rules,
        serde_json::json!({"instance_jobs": "queue", "vpc_check": true,
            "routed_create_only": true, "ip_count_verbose_only": true})
    );
    let (code, _) = admin(&sim, "PUT", "rules", r#"{"instance_jobs":"refuse"}"#).await;
    assert_eq!(code, 200);
    assert_eq!(
        sim.rules(),
        Rules {
            instance_jobs: InstanceJobs::Refuse,
            ..Rules::default()
        }
    );
    let (code, _) = admin(&sim, "PUT", "nic-batch-limit", "2").await;
    assert_eq!(code, 200);
    let nics = api.create(PODS, 3).await;
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE), &nics).await),
        1100
    );
    let (code, _) = admin(&sim, "PUT", "nic-batch-limit", "null").await;
    assert_eq!(code, 200);
    assert_eq!(
        ret(&job_call(&api, "AttachNics", Some(NODE), &nics).await),
        0
    );
    let (code, _) = admin(&sim, "PUT", "rules", r#"{"bogus":1}"#).await;
    assert_eq!(code, 400);
}

async fn admin(sim: &SimHandle, method: &str, route: &str, body: &str) -> (u16, Value) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}/admin/{route}", sim.base_url()))
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_tls_simulator_can_keep_a_plain_http_admin_port() {
    let sim = Simulator::builder()
        .profile(Profile::Realistic)
        .configure(|c| {
            c.job_history = 0;
            c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .vxnet(VxnetSpec::new(PODS, "172.22.0.0/24".parse().unwrap()))
        .instance(InstanceSpec::new(NODE))
        .start()
        .await
        .unwrap();
    let admin_url = sim.admin_url();
    assert!(admin_url.starts_with("http://") && admin_url != sim.base_url());
    let (code, nics) = plain_get(&format!("{admin_url}/admin/nics")).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(nics.as_array().map(Vec::len), Some(1), "the primary NIC");
    // The admin port does not serve the API, and the API port speaks only TLS.
    let (code, _) = plain_get(&format!("{admin_url}/iaas?action=DescribeNics"))
        .await
        .unwrap();
    assert_eq!(code, 404);
    let plain_api = sim.base_url().replace("https://", "http://");
    assert!(plain_get(&format!("{plain_api}/admin/nics")).await.is_err());
    // The real client over TLS still works.
    let client = client_for(&sim.config_yaml());
    assert_eq!(
        client
            .describe_nics(&Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn plain_get(url: &str) -> Result<(u16, Value), String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.get(url.parse().map_err(|e| format!("{e}"))?),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}
