//! The `hostnic-operator` binary itself: flags, credentials from a file, JSON logs without the
//! secret, /healthz /readyz /metrics, leader election, and a clean exit on SIGTERM that hands
//! the Lease back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

const T: Duration = Duration::from_secs(30);

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_runs_serves_and_stops_on_sigterm() {
    let env = Env::start(Setup::default()).await;
    hostnic_tests::scratch::ensure_namespace(&env.client, "hostnic-system")
        .await
        .expect("namespace");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, env.operator_kubeconfig()).expect("write");
    let cloud = dir.path().join("config.yaml");
    std::fs::write(&cloud, env.sim.config_yaml()).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = dir.path().join("operator.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hostnic-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUST_LOG")
        .args(["--cluster-name", "test", "--identity", "bin-1"])
        .arg(format!("--cloud-config={}", cloud.display()))
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .args([
            "--lease-namespace",
            "hostnic-system",
            "--lease-seconds",
            "3",
            "--lease-renew-deadline-seconds",
            "2",
            "--lease-retry-period-seconds",
            "1",
        ])
        .args([
            "--cloud-qps",
            "1000",
            "--cloud-burst",
            "1000",
            "--batch-window-ms",
            "50",
        ])
        .args([
            "--job-poll-seconds",
            "0.1",
            "--shrink-delay-seconds",
            "0",
            "--cloud-cache-seconds",
            "1",
        ])
        .args(["--gc-interval-seconds", "1", "--gc-grace-seconds", "0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the operator binary");

    eventually("healthz", T, || async {
        http_get(port, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;
    env.create_pool("web", spec(&[VX_A], 2)).await;
    env.converged("web", &["i-node0001"], 2, T).await;
    assert!(http_get(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    let metrics = http_get(port, "/metrics").expect("metrics");
    for needle in [
        "hostnic_operator_leader 1",
        // Both NICs from one create batch.
        "hostnic_operator_cloud_calls_total{action=\"CreateNics\",result=\"ok\"} 1",
        "hostnic_operator_nics_created_total 2",
        "hostnic_operator_pool_nics{pool=\"web\",node=\"i-node0001\",state=\"available\"} 2",
        "qingcloud_api_requests_total{action=\"AttachNics\"}",
        "hostnic_operator_reconcile_duration_seconds_count{controller=\"hostnic\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < T, "operator did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
    let holder = Api::<Lease>::namespaced(env.client.clone(), "hostnic-system")
        .get("hostnic-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease is handed back on shutdown");

    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains(env.sim.access_key().1),
        "the secret key leaked into the logs"
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
    assert!(text.contains("shutting down"));
    env.shutdown().await;
}
