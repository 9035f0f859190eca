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
