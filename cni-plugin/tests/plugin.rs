//! The `hostnic` binary executed directly with CNI_* variables against a fake agent: every verb,
//! every version's result format, and every bad input the spec gives an error code for.

mod common;

use std::time::Duration;

use common::{FakeAgent, Reply, api_error, cni_env, net_conf, run_plugin};
use hostnic_agent_api::{AgentStatus, ClaimRequest, ErrorKind, ReleaseRequest, path};
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn version_lists_every_supported_version() {
    let mut env = cni_env("VERSION", "x");
    env.retain(|k, _| k == "CNI_COMMAND");
    for stdin in ["", r#"{"cniVersion": "0.4.0"}"#] {
        let run = run_plugin(&env, stdin);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(
            run.json(),
            json!({"cniVersion": "1.1.0", "supportedVersions": VERSIONS})
        );
    }
}

#[test]
fn add_returns_the_result_in_each_requested_version() {
    let agent = FakeAgent::start();
    for version in VERSIONS {
        let conf = net_conf(
            version,
            &agent,
            json!({"pool": "pool-a", "mtu": 1450, "bindaddr": "0.0.0.0:9000",
                   "ipam": {"routes": [{"dst": "10.96.0.0/12", "gw": "0.0.0.0"}]}}),
        );
        let run = run_plugin(&cni_env("ADD", "ctr-add"), &conf);
        assert_eq!(run.code, 0, "{run:?}");
        let r = run.json();
        assert_eq!(r["cniVersion"], version);
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["interfaces"][0]["mac"], "52:54:aa:00:00:01");
        assert_eq!(r["interfaces"][0]["sandbox"], "/var/run/netns/hn-pod-test");
        assert_eq!(r["ips"][0]["address"], "172.22.0.9/24");
        assert_eq!(r["ips"][0]["gateway"], "172.22.0.1");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "172.22.0.1"}, {"dst": "10.96.0.0/12", "gw": "172.22.0.2"}])
        );
        if version.starts_with('0') {
            assert_eq!(r["ips"][0]["version"], "4", "{version}");
        } else {
            assert!(r["ips"][0].get("version").is_none(), "{version}");
        }
        assert_eq!(
            r["interfaces"][0].get("mtu").cloned(),
            (version == "1.1.0").then(|| json!(1450)),
            "{version}"
        );
        // bindaddr is tolerated, with a warning in the log.
        assert!(run.stderr.contains("bindaddr"), "{run:?}");
    }
    let claims = agent.requests_to(path::CLAIM);
    assert_eq!(claims.len(), VERSIONS.len());
    let claim: ClaimRequest = serde_json::from_value(claims[0].body.clone()).unwrap();
    assert_eq!(claim.key.container_id, "ctr-add");
    assert_eq!(claim.key.ifname, "eth0");
    assert_eq!(claim.netns, "/var/run/netns/hn-pod-test");
    assert_eq!(claim.pod.namespace, "prod");
    assert_eq!(claim.pod.name, "web-0");
    assert_eq!(claim.pod.uid.as_deref(), Some("u-1"));
    assert_eq!(claim.pool.as_deref(), Some("pool-a"));
    assert_eq!(claim.network.as_deref(), Some("hostnic-net"));
    assert_eq!(claim.mtu, Some(1450));
    assert_eq!(claim.routes[0].dst, "10.96.0.0/12");
    assert_eq!(claim.routes[0].gw.as_deref(), Some("0.0.0.0"));
}

/// The annotation the runtime passes and the conflist's pool reach the agent apart, so the
/// agent can let the pod's annotation win also when the runtime passes none.
#[test]
fn add_passes_the_pod_annotation_and_the_conflist_pool_apart() {
    let agent = FakeAgent::start();
    let conf = net_conf(
        "1.0.0",
        &agent,
        json!({"pool": "node-default", "capabilities": {"io.kubernetes.cri.pod-annotations": true},
               "runtimeConfig": {"io.kubernetes.cri.pod-annotations":
                   {"hostnic.qingcloud.com/pool": "fast-pool"}}}),
    );
    assert_eq!(run_plugin(&cni_env("ADD", "c"), &conf).code, 0);
    let claim = &agent.requests_to(path::CLAIM)[0];
    assert_eq!(claim.body["pod_pool"], "fast-pool");
    assert_eq!(claim.body["pool"], "node-default");
    let plain = net_conf("1.0.0", &agent, json!({"pool": "node-default"}));
    assert_eq!(run_plugin(&cni_env("ADD", "c"), &plain).code, 0);
    let claim = &agent.requests_to(path::CLAIM)[1];
    assert!(claim.body.get("pod_pool").is_none(), "{}", claim.body);
}

/// A 1.1.0 prevResult's fields the plugin does not interpret come out as they went in.
#[test]
fn add_passes_through_prev_result_fields_it_does_not_know() {
    let agent = FakeAgent::start();
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "vhu0", "mac": "00:11:22:33:44:55", "mtu": 9000,
                        "socketPath": "/run/vhu0.sock", "pciID": "0000:00:1f.6",
                        "sandbox": "/var/run/netns/hn-pod-test"}],
        "ips": [{"interface": 0, "address": "192.168.7.2/24", "gateway": "192.168.7.1"}],
        "routes": [{"dst": "192.168.8.0/24", "gw": "192.168.7.1", "mtu": 1400, "advmss": 1360,
                    "priority": 100, "table": 42, "scope": 0}],
        "dns": {"nameservers": ["10.96.0.10"]},
        "someNewerKey": {"x": 1}
    });
    let conf = net_conf("1.1.0", &agent, json!({"prevResult": prev}));
    let run = run_plugin(&cni_env("ADD", "c"), &conf);
    assert_eq!(run.code, 0, "{run:?}");
    let r = run.json();
    assert_eq!(r["interfaces"][0], prev["interfaces"][0]);
    assert_eq!(r["routes"][0], prev["routes"][0]);
    assert_eq!(r["someNewerKey"], json!({"x": 1}));
    assert_eq!(r["interfaces"][1]["name"], "eth0");
}

#[test]
fn add_after_another_plugin_keeps_its_prev_result() {
    let agent = FakeAgent::start();
    let prev = json!({
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/var/run/netns/hn-pod-test"}],
        "ips": [{"version": "4", "interface": 0, "address": "127.0.0.1/8"}],
        "dns": {"nameservers": ["10.96.0.10"]}
    });
    let conf = net_conf("0.4.0", &agent, json!({"prevResult": prev}));
    let run = run_plugin(&cni_env("ADD", "c"), &conf);
    assert_eq!(run.code, 0, "{run:?}");
    let r = run.json();
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(r["ips"][1]["interface"], 1);
    assert_eq!(r["ips"][1]["version"], "4");
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
}

#[test]
fn del_is_idempotent_and_accepts_an_empty_netns() {
    let agent = FakeAgent::start();
    let conf = net_conf("1.1.0", &agent, json!({}));
    run_plugin(&cni_env("DEL", "ctr-del"), &conf).silent_success();
    run_plugin(&cni_env("DEL", "ctr-del"), &conf).silent_success();
    let mut no_netns = cni_env("DEL", "ctr-del");
    no_netns.insert("CNI_NETNS".into(), String::new());
    run_plugin(&no_netns, &conf).silent_success();
    no_netns.remove("CNI_NETNS");
    no_netns.remove("CNI_ARGS");
    run_plugin(&no_netns, &conf).silent_success();
    let releases: Vec<ReleaseRequest> = agent
        .requests_to(path::RELEASE)
        .into_iter()
        .map(|r| serde_json::from_value(r.body).unwrap())
        .collect();
    assert_eq!(releases.len(), 4);
    assert!(releases.iter().all(|r| r.key.container_id == "ctr-del"));
    assert_eq!(
        releases[0].netns.as_deref(),
        Some("/var/run/netns/hn-pod-test")
    );
    assert_eq!(releases[2].netns, None);
    assert_eq!(releases[3].netns, None);
}

/// An IPv6 route can never be set up (error 7 at ADD, before the agent is asked), but the DEL
/// the runtime sends after that failed ADD must still succeed.
#[test]
fn ipv6_route_fails_add_but_not_the_teardown_del() {
    let agent = FakeAgent::start();
    let conf = net_conf(
        "1.0.0",
        &agent,
        json!({"ipam": {"routes": [{"dst": "fd00:96::/108"}]}}),
    );
    let msg = run_plugin(&cni_env("ADD", "ctr6"), &conf).cni_error(7);
    assert!(
        msg.contains("fd00:96::/108") && msg.contains("IPv6"),
        "{msg}"
    );
    assert!(agent.requests().is_empty());
    run_plugin(&cni_env("DEL", "ctr6"), &conf).silent_success();
    assert_eq!(agent.requests_to(path::RELEASE).len(), 1);
}

#[test]
fn check_verifies_prev_result_against_the_agent() {
    let agent = FakeAgent::start();
    let add = run_plugin(
        &cni_env("ADD", "ctr-chk"),
        &net_conf("1.0.0", &agent, json!({})),
    );
    let prev = add.json();
    let check = |prev: Option<&Value>, version: &str| {
        let extra = prev.map_or(json!({}), |p| json!({"prevResult": p}));
        run_plugin(
            &cni_env("CHECK", "ctr-chk"),
            &net_conf(version, &agent, extra),
        )
    };
    check(Some(&prev), "1.0.0").silent_success();
    assert_eq!(agent.requests_to(path::CHECK).len(), 1);
    // The agent is told what the cached result says, not left to today's pool.
    assert_eq!(
        agent.requests_to(path::CHECK)[0].body["expected"],
        json!({"mac": "52:54:aa:00:00:01", "address": "172.22.0.9/24",
               "routes": [{"dst": "0.0.0.0/0", "gw": "172.22.0.1"}]})
    );
    assert!(check(None, "1.0.0").cni_error(7).contains("prevResult"));
    let mut stale = prev.clone();
    stale["ips"][0]["address"] = json!("172.22.0.77/24");
    let msg = check(Some(&stale), "1.0.0").cni_error(999);
    assert!(msg.contains("172.22.0.9/24"), "{msg}");
    assert!(check(Some(&prev), "0.3.1").cni_error(1).contains("CHECK"));
    agent.set(|_| {
        api_error(
            409,
            ErrorKind::CheckFailed,
            "eth0 has no address 172.22.0.9/24",
        )
    });
    let msg = check(Some(&prev), "1.0.0").cni_error(999);
    assert!(msg.contains("no address"), "{msg}");
}

/// CHECK with the conflist's MTU and routes: the agent is asked for them, resolved as ADD
/// resolved them (the cached result says which next hop `0.0.0.0` became).
#[test]
fn check_expects_the_conflists_mtu_and_routes() {
    let agent = FakeAgent::start();
    let extra = json!({"mtu": 1400, "ipam": {"routes": [
        {"dst": "10.96.0.0/12", "gw": "0.0.0.0"}, {"dst": "10.200.0.0/16"}]}});
    let add = run_plugin(
        &cni_env("ADD", "ctr-chk"),
        &net_conf("1.1.0", &agent, extra.clone()),
    );
    let mut conf = extra;
    conf["prevResult"] = add.json();
    // A later chained plugin added a route of its own interface.
    conf["prevResult"]["routes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"dst": "10.244.0.0/16", "gw": "192.168.1.1"}));
    run_plugin(
        &cni_env("CHECK", "ctr-chk"),
        &net_conf("1.1.0", &agent, conf.clone()),
    )
    .silent_success();
    let body = &agent.requests_to(path::CHECK)[0].body;
    assert_eq!(body["expected"]["mtu"], 1400);
    assert_eq!(
        body["expected"]["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "172.22.0.1"}, {"dst": "10.96.0.0/12", "gw": "172.22.0.2"},
               {"dst": "10.200.0.0/16", "gw": "172.22.0.1"}])
    );
    // Our interface missing from the cached result fails before asking the agent.
    conf["prevResult"]["interfaces"][0]["name"] = json!("eth9");
    let msg = run_plugin(
        &cni_env("CHECK", "ctr-chk"),
        &net_conf("1.1.0", &agent, conf),
    )
    .cni_error(999);
    assert!(msg.contains("no interface eth0"), "{msg}");
    assert_eq!(agent.requests_to(path::CHECK).len(), 1);
}

fn gc_env() -> std::collections::BTreeMap<String, String> {
    let mut env = cni_env("GC", "");
    env.retain(|k, _| k == "CNI_COMMAND" || k == "CNI_PATH");
    env
}

#[test]
fn gc_sends_the_network_and_the_valid_attachments() {
    let agent = FakeAgent::start();
    let env = gc_env();
    let conf = net_conf(
        "1.1.0",
        &agent,
        json!({"cni.dev/valid-attachments": [
            {"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "eth0"}]}),
    );
    run_plugin(&env, &conf).silent_success();
    let gc = agent.requests_to(path::GC);
    assert_eq!(
        gc[0].body,
        json!({"network": "hostnic-net", "valid_attachments": [
            {"container_id": "c1", "ifname": "eth0"}, {"container_id": "c2", "ifname": "eth0"}]})
    );
    let old = net_conf("1.0.0", &agent, json!({}));
    assert!(run_plugin(&env, &old).cni_error(1).contains("GC"));
    assert_eq!(agent.requests_to(path::GC).len(), 1);
}

/// GC and STATUS exactly as libcni 1.2 runs them from the shipped conflist: every CNI_*
/// variable present, the per-attachment ones empty (`args(action, &RuntimeConf{})`), and the
/// plugin's section with the list's `name` and chosen `cniVersion` injected (plus the valid
/// attachments for GC), capabilities and all.
#[test]
fn gc_and_status_as_libcni_runs_them_from_the_shipped_conflist() {
    let agent = FakeAgent::start();
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../manifests/cni/10-hostnic.conflist"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut plugin = shipped["plugins"][0].clone();
    plugin["name"] = shipped["name"].clone();
    plugin["cniVersion"] = json!("1.1.0");
    plugin["socket"] = json!(agent.socket().to_str().unwrap());
    let env = |command: &str| -> std::collections::BTreeMap<String, String> {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", ""),
            ("CNI_NETNS", ""),
            ("CNI_ARGS", ""),
            ("CNI_IFNAME", ""),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    };
    run_plugin(&env("STATUS"), &plugin.to_string()).silent_success();
    let mut gc = plugin.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    run_plugin(&env("GC"), &gc.to_string()).silent_success();
    assert_eq!(
        agent.requests_to(path::GC)[0].body,
        json!({"network": "hostnic", "valid_attachments": [{"container_id": "c1", "ifname": "eth0"}]})
    );
}

/// GC without `cni.dev/valid-attachments`, or with a malformed one, is error 7 and the agent is
/// never asked: a missing list must not read as "every attachment is stale".
#[test]
fn gc_without_a_valid_list_is_error_7_and_releases_nothing() {
    let agent = FakeAgent::start();
    let env = gc_env();
    let cases = [
        (json!({}), "valid-attachments"),
        (
            json!({"cni.dev/valid-attachments": null}),
            "valid-attachments",
        ),
        (
            json!({"cni.dev/valid-attachments": "c1"}),
            "valid-attachments",
        ),
        (
            json!({"cni.dev/valid-attachments": {"containerID": "c1", "ifname": "eth0"}}),
            "valid-attachments",
        ),
        (
            json!({"cni.dev/valid-attachments": [{"containerID": "c1"}]}),
            "ifname",
        ),
        (
            json!({"cni.dev/valid-attachments": [{"ifname": "eth0"}]}),
            "containerID",
        ),
    ];
    for (extra, needle) in cases {
        let run = run_plugin(&env, &net_conf("1.1.0", &agent, extra.clone()));
        let msg = run.cni_error(7);
        assert!(msg.contains(needle), "{extra}: {msg}");
    }
    assert!(agent.requests().is_empty(), "{:?}", agent.requests());
}

/// Releases the agent could not do come back as a GC error naming them.
#[test]
fn gc_reports_failed_releases() {
    let agent = FakeAgent::with(|_| {
        Reply::Json(
            200,
            json!({"released": [{"container_id": "c1", "ifname": "eth0"}],
                   "failed": [{"container_id": "c2", "ifname": "eth0",
                               "error": "hostnic x: move link: File exists"}]}),
        )
    });
    let conf = net_conf("1.1.0", &agent, json!({"cni.dev/valid-attachments": []}));
    let run = run_plugin(&gc_env(), &conf);
    let msg = run.cni_error(999);
    assert!(msg.contains("c2/eth0: hostnic x: move link"), "{msg}");
    assert!(run.json()["details"].as_str().unwrap().contains("c1/eth0"));
}

/// STATUS fails (50) only while the agent is unreachable or not synced: a full node, or one no
/// pool selects, still serves, and a failed STATUS would make the runtime report it NotReady.
#[test]
fn status_fails_only_when_the_agent_is_unreachable_or_unsynced() {
    let agent = FakeAgent::start();
    let mut env = cni_env("STATUS", "");
    env.retain(|k, _| k == "CNI_COMMAND" || k == "CNI_PATH");
    let conf = net_conf("1.1.0", &agent, json!({}));
    run_plugin(&env, &conf).silent_success();
    let reply = |status: AgentStatus| {
        let body = serde_json::to_value(status).unwrap();
        move |_: &common::Recorded| Reply::Json(200, body.clone())
    };
    // No free NIC and none on its way, as an agent of the previous version reports it.
    agent.set(reply(AgentStatus {
        ready: false,
        reason: Some("no free NIC on this node and none on its way".into()),
        synced: true,
        free_nics: 0,
        incoming_nics: 0,
    }));
    run_plugin(&env, &conf).silent_success();
    agent.set(reply(AgentStatus {
        ready: false,
        reason: Some("agent has not synced HostNics and the kernel yet".into()),
        synced: false,
        free_nics: 3,
        incoming_nics: 0,
    }));
    assert!(run_plugin(&env, &conf).cni_error(50).contains("not synced"));
    agent.set(|_| api_error(503, ErrorKind::NotReady, "HostNics not synced yet"));
    assert!(run_plugin(&env, &conf).cni_error(50).contains("not synced"));
    let gone = conf.replace(
        agent.socket().to_str().unwrap(),
        "/nonexistent/hostnic.sock",
    );
    assert!(
        run_plugin(&env, &gone)
            .cni_error(50)
            .contains("/nonexistent/hostnic.sock")
    );
    assert!(
        run_plugin(&env, &net_conf("1.0.0", &agent, json!({})))
            .cni_error(1)
            .contains("STATUS")
    );
}

/// The queued DEL of `container` next to `socket`, if any.
fn queued_del(socket: &std::path::Path, container: &str) -> Option<ReleaseRequest> {
    let file = socket
        .parent()
        .unwrap()
        .join("pending-del")
        .join(format!("{container}_eth0"));
    let bytes = std::fs::read(file).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn agent_down_fails_add_with_an_io_error_and_queues_del() {
    let agent = FakeAgent::start();
    let gone = agent.dir().join("gone/x.sock");
    let conf = net_conf("1.0.0", &agent, json!({}))
        .replace(agent.socket().to_str().unwrap(), gone.to_str().unwrap());
    let msg = run_plugin(&cni_env("ADD", "c"), &conf).cni_error(5);
    assert!(msg.contains(gone.to_str().unwrap()), "{msg}");
    assert!(msg.contains("agent"), "{msg}");
    assert_eq!(queued_del(&gone, "c"), None, "ADD queues nothing");
    // DEL must complete without the agent: kubelet would keep the pod Terminating otherwise.
    let run = run_plugin(&cni_env("DEL", "c"), &conf);
    run.silent_success();
    assert!(run.stderr.contains("queued"), "{run:?}");
    let queued = queued_del(&gone, "c").expect("DEL queued for the agent");
    assert_eq!(queued.key.container_id, "c");
    assert_eq!(queued.key.ifname, "eth0");
    assert_eq!(queued.netns.as_deref(), Some("/var/run/netns/hn-pod-test"));
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&agent.dir().join("gone/pending-del")), 0o700);
}

#[test]
fn del_is_queued_when_the_agent_is_not_ready_or_too_slow() {
    let agent = FakeAgent::with(|_| api_error(503, ErrorKind::NotReady, "not recovered yet"));
    let conf = net_conf("1.0.0", &agent, json!({"timeoutSeconds": 1}));
    run_plugin(&cni_env("DEL", "not-ready"), &conf).silent_success();
    assert!(queued_del(agent.socket(), "not-ready").is_some());
    agent.set(|req| Reply::Slow(Duration::from_secs(3), Box::new(common::healthy(req))));
    run_plugin(&cni_env("DEL", "slow"), &conf).silent_success();
    assert!(queued_del(agent.socket(), "slow").is_some());
    assert_eq!(agent.requests_to(path::RELEASE).len(), 2);
}

/// A cached config or prevResult that ADD would reject now, a relative netns or malformed
/// CNI_ARGS never fail a DEL: it still reaches the agent.
#[test]
fn del_tolerates_what_add_would_reject() {
    let agent = FakeAgent::start();
    let with_env = |k: &str, v: &str| {
        let mut env = cni_env("DEL", "ctr");
        env.insert(k.into(), v.into());
        env
    };
    let good = net_conf("1.0.0", &agent, json!({}));
    let cases: Vec<(&str, _, String)> = vec![
        (
            "bad CNI_ARGS",
            with_env("CNI_ARGS", "K8S_POD_NAME"),
            good.clone(),
        ),
        (
            "no pod args",
            with_env("CNI_ARGS", "IgnoreUnknown=1"),
            good.clone(),
        ),
        ("relative netns", with_env("CNI_NETNS", "ns1"), good.clone()),
        (
            "old version",
            cni_env("DEL", "ctr"),
            good.replace("1.0.0", "0.2.0"),
        ),
        (
            "no version",
            cni_env("DEL", "ctr"),
            good.replace("\"cniVersion\":\"1.0.0\",", ""),
        ),
        (
            "bad timeout",
            cni_env("DEL", "ctr"),
            net_conf("1.0.0", &agent, json!({"timeoutSeconds": 0})),
        ),
        (
            "bad mtu type",
            cni_env("DEL", "ctr"),
            net_conf("1.0.0", &agent, json!({"mtu": "jumbo"})),
        ),
        (
            "bad route",
            cni_env("DEL", "ctr"),
            net_conf(
                "1.0.0",
                &agent,
                json!({"ipam": {"routes": [{"dst": "svc"}]}}),
            ),
        ),
        (
            "bad pool",
            cni_env("DEL", "ctr"),
            net_conf("1.0.0", &agent, json!({"pool": "Not_A_Pool"})),
        ),
        (
            "bad prevResult",
            cni_env("DEL", "ctr"),
            net_conf("1.0.0", &agent, json!({"prevResult": {"ips": 1}})),
        ),
    ];
    for (i, (what, env, stdin)) in cases.iter().enumerate() {
        let run = run_plugin(env, stdin);
        assert_eq!(run.code, 0, "{what}: {run:?}");
        assert_eq!(
            agent.requests_to(path::RELEASE).len(),
            i + 1,
            "{what}: DEL did not reach the agent"
        );
    }
    let relative: ReleaseRequest =
        serde_json::from_value(agent.requests_to(path::RELEASE)[2].body.clone()).unwrap();
    assert_eq!(relative.netns, None, "a relative netns is not passed on");
    assert!(queued_del(agent.socket(), "ctr").is_none());
    // What names the attachment is still checked.
    let mut bad_id = cni_env("DEL", "a/b");
    bad_id.insert("CNI_CONTAINERID".into(), "a/b".into());
    run_plugin(&bad_id, &good).cni_error(4);
}

#[test]
fn agent_slow_times_out_with_an_io_error() {
    let agent =
        FakeAgent::with(|req| Reply::Slow(Duration::from_secs(3), Box::new(common::healthy(req))));
    // Granting no wait for a NIC on its way, the claim's deadline is timeoutSeconds alone.
    let conf = net_conf(
        "1.0.0",
        &agent,
        json!({"timeoutSeconds": 1, "waitForNicSeconds": 0}),
    );
    let msg = run_plugin(&cni_env("ADD", "c"), &conf).cni_error(5);
    assert!(msg.contains("timeoutSeconds"), "{msg}");
    // The claim may still complete: the plugin asked for it to be undone.
    let releases = agent.requests_to(path::RELEASE);
    assert_eq!(releases.len(), 1, "{:?}", agent.requests());
    assert_eq!(releases[0].body["container_id"], "c");
}

#[test]
fn agent_garbage_is_an_io_error() {
    let agent = FakeAgent::with(|_| Reply::Garbage);
    let conf = net_conf("1.0.0", &agent, json!({}));
    let msg = run_plugin(&cni_env("ADD", "c"), &conf).cni_error(5);
    assert!(msg.contains("bad response"), "{msg}");
}

#[test]
fn agent_errors_map_to_cni_codes() {
    let agent =
        FakeAgent::with(|_| api_error(503, ErrorKind::TryAgainLater, "no free NIC in pool-a"));
    let conf = net_conf("1.0.0", &agent, json!({}));
    let msg = run_plugin(&cni_env("ADD", "c"), &conf).cni_error(11);
    assert!(msg.contains("no free NIC"), "{msg}");
    agent.set(|_| api_error(400, ErrorKind::InvalidRequest, "no NicPool named x"));
    run_plugin(&cni_env("ADD", "c"), &conf).cni_error(7);
    agent.set(|_| api_error(404, ErrorKind::UnknownContainer, "open netns /x: not found"));
    assert!(
        run_plugin(&cni_env("ADD", "c"), &conf)
            .cni_error(3)
            .contains("/x")
    );
    // A kind from a newer agent is still an error with its message, not a bad response.
    agent.set(|_| {
        Reply::Json(
            500,
            json!({"kind": "something_newer", "message": "newer agent says no"}),
        )
    });
    assert!(
        run_plugin(&cni_env("ADD", "c"), &conf)
            .cni_error(999)
            .contains("newer agent says no")
    );
    // The agent answered: it rolled back itself, so no release is sent.
    assert!(agent.requests_to(path::RELEASE).is_empty());
    agent.set(|_| api_error(500, ErrorKind::Internal, "netlink: EBUSY"));
    let run = run_plugin(&cni_env("ADD", "c"), &conf);
    run.cni_error(999);
    assert!(run.json()["details"].as_str().unwrap().contains("500"));
}

/// Every bad input gets its spec error code, and the agent is never asked anything.
#[test]
fn bad_inputs_get_their_error_codes_and_change_nothing() {
    let agent = FakeAgent::start();
    let good = net_conf("1.0.0", &agent, json!({}));
    let with_env = |k: &str, v: Option<&str>| {
        let mut env = cni_env("ADD", "ctr");
        match v {
            Some(v) => env.insert(k.into(), v.into()),
            None => env.remove(k),
        };
        env
    };
    let cases: Vec<(&str, _, String, u32, &str)> = vec![
        (
            "no CNI_COMMAND",
            with_env("CNI_COMMAND", None),
            good.clone(),
            4,
            "CNI_COMMAND",
        ),
        (
            "unknown CNI_COMMAND",
            with_env("CNI_COMMAND", Some("UPDATE")),
            good.clone(),
            4,
            "UPDATE",
        ),
        (
            "no netns",
            with_env("CNI_NETNS", None),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "relative netns",
            with_env("CNI_NETNS", Some("ns1")),
            good.clone(),
            4,
            "CNI_NETNS",
        ),
        (
            "no container id",
            with_env("CNI_CONTAINERID", None),
            good.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "bad container id",
            with_env("CNI_CONTAINERID", Some("a/b")),
            good.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "no ifname",
            with_env("CNI_IFNAME", None),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "long ifname",
            with_env("CNI_IFNAME", Some("eth0123456789012")),
            good.clone(),
            4,
            "longer",
        ),
        (
            "slash ifname",
            with_env("CNI_IFNAME", Some("a/b")),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "space ifname",
            with_env("CNI_IFNAME", Some("a b")),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "dot ifname",
            with_env("CNI_IFNAME", Some("..")),
            good.clone(),
            4,
            "CNI_IFNAME",
        ),
        (
            "no pod args",
            with_env("CNI_ARGS", Some("IgnoreUnknown=1")),
            good.clone(),
            4,
            "K8S_POD_NAME",
        ),
        (
            "bad CNI_ARGS",
            with_env("CNI_ARGS", Some("K8S_POD_NAME")),
            good.clone(),
            4,
            "KEY=VALUE",
        ),
        (
            "bad JSON",
            with_env("X", Some("")),
            "{\"cniVersion\":".into(),
            6,
            "JSON",
        ),
        (
            "not an object",
            with_env("X", Some("")),
            "[]".into(),
            6,
            "object",
        ),
        (
            "old version",
            with_env("X", Some("")),
            good.replace("1.0.0", "0.2.0"),
            1,
            "0.2.0",
        ),
        (
            "no version",
            with_env("X", Some("")),
            good.replace("\"cniVersion\":\"1.0.0\",", ""),
            1,
            "cniVersion",
        ),
        (
            "bad timeout",
            with_env("X", Some("")),
            net_conf("1.0.0", &agent, json!({"timeoutSeconds": 0})),
            7,
            "timeoutSeconds",
        ),
        (
            "bad mtu type",
            with_env("X", Some("")),
            net_conf("1.0.0", &agent, json!({"mtu": "jumbo"})),
            7,
            "mtu",
        ),
        (
            "bad route",
            with_env("X", Some("")),
            net_conf(
                "1.0.0",
                &agent,
                json!({"ipam": {"routes": [{"dst": "svc"}]}}),
            ),
            7,
            "ipam.routes",
        ),
        (
            "IPv6 route",
            with_env("X", Some("")),
            net_conf(
                "1.0.0",
                &agent,
                json!({"ipam": {"routes": [{"dst": "fd00:96::/108", "gw": "fd00::1"}]}}),
            ),
            7,
            "fd00:96::/108",
        ),
        (
            "relative socket",
            with_env("X", Some("")),
            net_conf("1.0.0", &agent, json!({"socket": "a.sock"})),
            7,
            "socket",
        ),
        (
            "bad prevResult",
            with_env("X", Some("")),
            net_conf("1.0.0", &agent, json!({"prevResult": {"ips": 1}})),
            6,
            "prevResult",
        ),
    ];
    for (what, env, stdin, code, needle) in cases {
        let run = run_plugin(&env, &stdin);
        let msg = run.cni_error(code);
        assert!(msg.contains(needle), "{what}: {msg}");
        // Logs go to stderr, never stdout.
        assert!(run.stderr.contains("level=error"), "{what}: {run:?}");
    }
    assert!(agent.requests().is_empty(), "{:?}", agent.requests());
}

#[test]
fn error_json_carries_the_config_version() {
    let agent = FakeAgent::with(|_| api_error(503, ErrorKind::TryAgainLater, "later"));
    let run = run_plugin(&cni_env("ADD", "c"), &net_conf("0.3.1", &agent, json!({})));
    assert_eq!(run.json()["cniVersion"], "0.3.1");
}

#[test]
fn log_file_gets_the_logs_and_stderr_stays_quiet() {
    let agent = FakeAgent::start();
    let log = agent.dir().join("hostnic.log");
    let conf = net_conf("1.0.0", &agent, json!({"logFile": log}));
    let run = run_plugin(&cni_env("ADD", "ctr-log"), &conf);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cmd=ADD container_id=ctr-log ifname=eth0 msg=claimed"),
        "{text}"
    );
    assert!(text.contains("pod=prod/web-0"), "{text}");
}

/// The plugin's own cost, without a runtime library: ADD+DEL executed directly against the fake
/// agent, next to two executions of `/bin/true` (the floor of fork+exec). Prints figures only.
/// `HOSTNIC_BENCH_ITERATIONS` sets the count (default 50).
#[test]
fn bench_direct_exec() {
    let n: usize = std::env::var("HOSTNIC_BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let agent = FakeAgent::start();
    let conf = net_conf("1.0.0", &agent, json!({}));
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let mut plugin = Vec::with_capacity(n);
    let mut floor = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-{i}");
        let start = std::time::Instant::now();
        assert_eq!(run_plugin(&cni_env("ADD", &id), &conf).code, 0);
        assert_eq!(run_plugin(&cni_env("DEL", &id), &conf).code, 0);
        plugin.push(start.elapsed().as_secs_f64() * 1000.0);
        let start = std::time::Instant::now();
        for _ in 0..2 {
            let status = std::process::Command::new("/bin/true").status().unwrap();
            assert!(status.success());
        }
        floor.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "bench direct n={n} plugin ADD+DEL p50={:.2}ms, 2x /bin/true p50={:.2}ms ({})",
        median(plugin),
        median(floor),
        common::plugin_bin().display()
    );
    assert_eq!(agent.requests_to(path::CLAIM).len(), n);
}
