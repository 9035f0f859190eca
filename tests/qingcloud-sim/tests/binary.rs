//! The `qingcloud-sim` binary: flags, the example config file, and a clean exit on SIGTERM
//! (removing its vxnet netns when hot-plug is on).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{netns_exists, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_qingcloud-sim");

/// The child, killed if the test fails before it exits.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            terminate(&self.0);
            let _ = self.0.wait();
        }
    }
}

fn terminate(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
}

/// Starts the binary and reads the endpoint line it prints.
fn start(args: &[&str]) -> (Sim, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qingcloud-sim");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let url = first
        .strip_prefix("endpoint: ")
        .expect("endpoint line")
        .to_owned();
    let rest: Vec<String> = lines.take(4).map(|l| l.unwrap()).collect();
    assert!(
        rest.iter().any(|l| l.starts_with("qy_access_key_id: ")),
        "{rest:?}"
    );
    (Sim(child), url)
}

async fn get(url: &str) -> serde_json::Value {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("qingcloud-sim "));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    let out = Command::new(BIN)
        .args(["--quota", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn example_config_parses_and_dumps() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/sim.example.yaml");
    let out = Command::new(BIN)
        .args(["--config", example, "--seed", "9", "--dump-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped = String::from_utf8_lossy(&out.stdout);
    assert!(
        dumped.contains("vxnet-pods002") && dumped.contains("seed: 9"),
        "{dumped}"
    );
}

#[test]
fn realistic_profile_from_the_flag_or_the_file() {
    let dump = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--dump-config")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let flag = dump(&["--profile", "realistic"]);
    for want in [
        "tls: true",
        "nic_batch_limit: 5",
        "instance_jobs: queue",
        "vpc_check: true",
    ] {
        assert!(flag.contains(want), "{want}: {flag}");
    }
    assert!(dump(&[]).contains("tls: false"));
    let dir = std::env::temp_dir().join(format!("qc-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sim.yaml");
    std::fs::write(&file, "profile: realistic\nnic_batch_limit: 3\n").unwrap();
    let from_file = dump(&["--config", file.to_str().unwrap()]);
    assert!(from_file.contains("nic_batch_limit: 3"), "{from_file}");
    assert!(
        from_file.contains("routed_create_only: true"),
        "{from_file}"
    );
    // The dump is itself a valid config file.
    std::fs::write(&file, &flag).unwrap();
    assert_eq!(dump(&["--config", file.to_str().unwrap()]), flag);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn realistic_profile_serves_https_and_writes_the_ca() {
    let ca = std::env::temp_dir().join(format!("qc-sim-bin-ca-{}.pem", std::process::id()));
    let (mut sim, url) = start(&[
        "--profile",
        "realistic",
        "--listen",
        "127.0.0.1:0",
        "--vxnet",
        "vxnet-flag001=10.7.0.0/24",
        "--instance",
        "i-flag0001",
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    terminate(&sim.0);
    assert!(sim.0.wait().unwrap().success());
    assert!(
        ca.exists(),
        "a CA file the caller named is left for the caller"
    );
    let _ = std::fs::remove_file(&ca);
}

#[tokio::test]
async fn serves_from_flags_and_exits_on_sigterm() {
    let (mut sim, url) = start(&[
        "--listen",
        "127.0.0.1:0",
        "--vxnet",
        "vxnet-flag001=10.7.0.0/24",
        "--instance",
        "i-flag0001",
        "--pending-ms",
        "5",
        "--working-ms",
        "5-10",
    ]);
    let admin = url.replace("/iaas", "/admin/instances");
    let instances = get(&admin).await;
    assert_eq!(instances[0]["instance_id"], "i-flag0001");
    assert_eq!(instances[0]["vxnets"][0]["private_ip"], "10.7.0.2");
    terminate(&sim.0);
    assert!(sim.0.wait().unwrap().success());
}

#[tokio::test]
async fn hotplug_netns_removed_on_sigterm() {
    if !require_root("hotplug_netns_removed_on_sigterm") {
        return;
    }
    let (mut sim, url) = start(&[
        "--listen",
        "127.0.0.1:0",
        "--vxnet",
        "vxnet-flag001=10.7.0.0/24",
        "--hotplug",
    ]);
    let vxnets = get(&url.replace("/iaas", "/admin/vxnets")).await;
    let ns = vxnets[0]["netns"].as_str().expect("vxnet netns").to_owned();
    assert!(ns.starts_with(&format!("hn-vx-{}-", sim.0.id())), "{ns}");
    assert!(netns_exists(&ns));
    terminate(&sim.0);
    assert!(sim.0.wait().unwrap().success());
    assert!(!netns_exists(&ns), "netns {ns} left behind");
}
