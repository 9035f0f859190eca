//! Test support: a fake node-agent (a std `UnixListener` thread answering canned responses and
//! recording every request) and a runner that executes the built `hostnic` binary with CNI_*
//! variables, as a runtime would.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hostnic_agent_api::{
    AgentStatus, ApiError, Attachment, ClaimRequest, ErrorKind, GcRequest, GcResponse, Released,
    Route, path,
};
use serde_json::{Value, json};

/// A request the fake agent received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Decoded JSON body (`Null` when empty).
    pub body: Value,
}

/// What the fake agent answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status and JSON body.
    Json(u16, Value),
    /// Wait, then answer.
    Slow(Duration, Box<Reply>),
    /// Send bytes that are not HTTP, then close.
    Garbage,
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A fake node-agent on a unix socket in a temp dir, stopped on drop.
pub struct FakeAgent {
    dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Mutex<Arc<Handler>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The attachment the default fake agent hands out for a claim.
pub fn attachment_for(req: &ClaimRequest) -> Attachment {
    let mut routes = vec![Route {
        dst: "0.0.0.0/0".into(),
        gw: Some("172.22.0.1".into()),
    }];
    routes.extend(req.routes.iter().map(|r| Route {
        dst: r.dst.clone(),
        gw: match r.gw.as_deref() {
            Some("0.0.0.0") => Some("172.22.0.2".into()),
            other => other.map(str::to_owned),
        },
    }));
    Attachment {
        hostnic: "pool-a-node1-abcde".into(),
        interface: req.key.ifname.clone(),
        mac: "52:54:aa:00:00:01".into(),
        sandbox: req.netns.clone(),
        mtu: req.mtu.unwrap_or(1500),
        address: "172.22.0.9/24".into(),
        gateway: "172.22.0.1".into(),
        routes,
    }
}

/// An ApiError reply.
pub fn api_error(status: u16, kind: ErrorKind, message: &str) -> Reply {
    Reply::Json(
        status,
        serde_json::to_value(ApiError {
            kind,
            message: message.into(),
            details: None,
        })
        .unwrap(),
    )
}

/// The default behaviour: a healthy agent with NICs to give.
pub fn healthy(req: &Recorded) -> Reply {
    let ok = |v: Value| Reply::Json(200, v);
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", path::CLAIM) => {
            let claim: ClaimRequest = serde_json::from_value(req.body.clone()).unwrap();
            ok(serde_json::to_value(attachment_for(&claim)).unwrap())
        }
        ("POST", path::CHECK) => {
            // The check request carries the same key and netns as the claim did.
            let claim = ClaimRequest {
                key: serde_json::from_value(req.body.clone()).unwrap(),
                netns: req.body["netns"].as_str().unwrap().into(),
                pod: Default::default(),
                pool: None,
                pod_pool: None,
                pod_annotations: false,
                wait_for_nic_seconds: 0,
                network: None,
                mtu: None,
                routes: vec![],
            };
            ok(serde_json::to_value(attachment_for(&claim)).unwrap())
        }
        ("POST", path::RELEASE) => ok(serde_json::to_value(Released { hostnic: None }).unwrap()),
        ("POST", path::GC) => {
            serde_json::from_value::<GcRequest>(req.body.clone()).unwrap();
            ok(serde_json::to_value(GcResponse::default()).unwrap())
        }
        ("GET", path::STATUS) => ok(serde_json::to_value(AgentStatus {
            ready: true,
            reason: None,
            synced: true,
            free_nics: 3,
            incoming_nics: 0,
        })
        .unwrap()),
        _ => api_error(404, ErrorKind::InvalidRequest, "no such endpoint"),
    }
}

impl FakeAgent {
    /// Starts a healthy fake agent.
    pub fn start() -> Self {
        Self::with(healthy)
    }

    /// Starts a fake agent answering with `handler`.
    pub fn with(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hn-agent-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("hostnic.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Arc<Handler>>> = Arc::new(Mutex::new(Arc::new(handler)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, handler, stop) = (requests.clone(), handler.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, handler) = (requests.clone(), handler.clone());
                    // One thread per connection, so a slow reply does not hold up the next.
                    thread::spawn(move || serve(conn, &requests, &handler));
                }
            })
        };
        Self {
            dir,
            socket,
            requests,
            handler,
            stop,
            thread: Some(thread),
        }
    }

    /// Replaces the behaviour.
    pub fn set(&self, handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    /// The socket path to put in the config.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A scratch directory that lives as long as the agent.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests received so far to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: UnixStream, requests: &Mutex<Vec<Recorded>>, handler: &Mutex<Arc<Handler>>) {
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let recorded = Recorded {
        method,
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    requests.lock().unwrap().push(recorded.clone());
    let handler = handler.lock().unwrap().clone();
    let mut reply = handler(&recorded);
    let mut conn = reader.into_inner();
    loop {
        match reply {
            Reply::Slow(d, next) => {
                thread::sleep(d);
                reply = *next;
            }
            Reply::Garbage => {
                let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
                return;
            }
            Reply::Json(status, body) => {
                let body = body.to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                return;
            }
        }
    }
}

/// The outcome of one plugin execution.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (panics if it is not exactly one JSON document).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts the run failed with the spec's error JSON and this code; returns the message.
    pub fn cni_error(&self, code: u32) -> String {
        assert_ne!(self.code, 0, "expected failure: {self:?}");
        let v = self.json();
        assert_eq!(v["code"], code, "{self:?}");
        assert!(v["cniVersion"].is_string(), "{self:?}");
        v["msg"].as_str().unwrap().to_owned()
    }

    /// Asserts success with no output (DEL, CHECK, GC, STATUS).
    pub fn silent_success(&self) {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
    }
}

/// The plugin under test: cargo's build of it, or the one in `HOSTNIC_BIN_DIR` (e.g.
/// `target/release-cni`, to test and measure the shipped build).
pub fn plugin_bin() -> PathBuf {
    std::env::var_os("HOSTNIC_BIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_hostnic")),
        |dir| PathBuf::from(dir).join("hostnic"),
    )
}

/// Runs the plugin with exactly these environment variables and stdin.
pub fn run_plugin(env: &BTreeMap<String, String>, stdin: &str) -> Run {
    let mut child = Command::new(plugin_bin())
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// CNI_* variables for a per-attachment verb, with Kubernetes CNI_ARGS.
pub fn cni_env(command: &str, container_id: &str) -> BTreeMap<String, String> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container_id),
        ("CNI_NETNS", "/var/run/netns/hn-pod-test"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u-1",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A network config for the plugin talking to `agent`, with extra fields merged in.
pub fn net_conf(version: &str, agent: &FakeAgent, extra: Value) -> String {
    let mut conf = json!({
        "cniVersion": version,
        "name": "hostnic-net",
        "type": "hostnic",
        "socket": agent.socket(),
        "timeoutSeconds": 5,
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf.to_string()
}
