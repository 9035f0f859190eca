//! Test helpers: a hand-built signed HTTP client (raw requests, so the tests check the wire, not
//! a client library), a netns fixture deleted on drop, and the root check.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::Command;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qingcloud::signer;
use qingcloud_sim::SimHandle;
use rand::Rng;
use serde_json::Value;

/// The API's timestamp format, `seconds_ago` in the past.
pub fn stamp(seconds_ago: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds_ago))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A response: HTTP status, content type, body.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn ret_code(&self) -> i64 {
        self.json()["ret_code"].as_i64().expect("ret_code")
    }
}

/// Signs and sends requests by hand.
pub struct Api {
    pub host: String,
    pub key_id: String,
    pub secret: String,
    pub zone: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    pub fn new(sim: &SimHandle) -> Self {
        let (id, secret) = sim.access_key();
        Self {
            host: sim.addr().to_string(),
            key_id: id.to_owned(),
            secret: secret.to_owned(),
            zone: sim.zone().to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Common parameters plus `params`, unsigned.
    pub fn params(&self, action: &str, params: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = vec![
            ("action".into(), action.into()),
            ("zone".into(), self.zone.clone()),
            ("access_key_id".into(), self.key_id.clone()),
            ("time_stamp".into(), stamp(0)),
            ("signature_method".into(), "HmacSHA256".into()),
            ("signature_version".into(), "1".into()),
            ("version".into(), "1".into()),
        ];
        for (k, v) in params {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.to_string()));
        }
        all
    }

    /// Sends `query_or_body` as GET query or POST form body to `path`.
    pub async fn send(&self, method: &str, path: &str, text: String) -> Result<Raw, String> {
        let req = if method == "GET" {
            hyper::Request::get(format!("http://{}{path}?{text}", self.host))
                .body(Full::new(Bytes::new()))
        } else {
            hyper::Request::post(format!("http://{}{path}", self.host))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(text)))
        }
        .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Raw {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// A correctly signed GET to `/iaas/`.
    pub async fn get(&self, action: &str, params: &[(&str, &str)]) -> Raw {
        self.signed("GET", "/iaas/", action, params).await
    }

    /// A correctly signed request.
    pub async fn signed(
        &self,
        method: &str,
        path: &str,
        action: &str,
        params: &[(&str, &str)],
    ) -> Raw {
        let mut all = self.params(action, params);
        let sig = signer::sign(&self.secret, method, path, &all);
        all.push(("signature".into(), sig));
        self.send(method, path, signer::canonical_query(&all))
            .await
            .expect("request")
    }

    /// A signed GET expected to succeed; returns the JSON body.
    pub async fn ok(&self, action: &str, params: &[(&str, &str)]) -> Value {
        let r = self.get(action, params).await;
        assert_eq!(r.ret_code(), 0, "{action}: {}", r.body);
        r.json()
    }

    /// Creates `n` NICs in `vxnet`; returns their ids.
    pub async fn create(&self, vxnet: &str, n: usize) -> Vec<String> {
        let v = self
            .ok("CreateNics", &[("vxnet", vxnet), ("count", &n.to_string())])
            .await;
        v["nics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["nic_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Starts AttachNics or DetachNics; returns the job id.
    pub async fn job(&self, action: &str, instance: Option<&str>, nics: &[String]) -> String {
        let keys: Vec<String> = (1..=nics.len()).map(|i| format!("nics.{i}")).collect();
        let mut p: Vec<(&str, &str)> = keys
            .iter()
            .map(String::as_str)
            .zip(nics.iter().map(String::as_str))
            .collect();
        if let Some(i) = instance {
            p.push(("instance", i));
        }
        self.ok(action, &p).await["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Polls DescribeJobs until the job is terminal (generous bound, real clock).
    pub async fn wait_job(&self, job: &str) -> String {
        for _ in 0..400 {
            let v = self.ok("DescribeJobs", &[("jobs.1", job)]).await;
            let status = v["job_set"][0]["status"].as_str().unwrap().to_owned();
            if !matches!(status.as_str(), "pending" | "working") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {job} never finished");
    }
}

/// Whether a privileged test may run (skips without root, fails in CI without root).
pub fn require_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root and CI is set"
    );
    eprintln!("{test}: skipped (needs root)");
    false
}

/// A netns made for one test, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(6)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect();
        let ns = Self {
            name: format!("hn-{tag}-{suffix}"),
        };
        run(&["netns", "add", &ns.name]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Name of the link with this MAC and no master.
    pub fn link_by_mac(&self, mac: &str) -> Option<String> {
        let links: Vec<Value> = serde_json::from_str(&self.ip(&["-j", "link", "show"])).unwrap();
        links
            .iter()
            .find(|l| {
                l["address"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(mac))
                    && l.get("master").is_none()
            })
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
    }

    pub fn ping(&self, addr: &str) -> bool {
        Command::new("ip")
            .args([
                "netns", "exec", &self.name, "ping", "-c", "1", "-W", "2", addr,
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a netns of this name exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/var/run/netns").join(name).exists()
}
