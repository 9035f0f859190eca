//! The client over real HTTP against a scripted stub server (a few lines of tokio, no HTTP
//! framework): signing as received by a server, paging, retries, error classes, job waiting
//! and metrics. The full protocol is exercised against the simulator in
//! `tests/qingcloud-sim/tests/client.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qingcloud::wire::JobStatus;
use qingcloud::{
    Client, ClientSettings, CloudConfig, Error, JobOutcome, Metrics, NicFilter, NicId, Protocol,
    RetCode, Secret,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "StubSecret/0123+";

/// A received request: method, path and decoded query parameters.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    params: Vec<(String, String)>,
}

impl Request {
    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn action(&self) -> &str {
        self.get("action").unwrap_or("")
    }
}

/// What the stub answers.
enum Reply {
    Json(String),
    Status(u16),
    Raw(&'static str),
    Hang,
}

type Handler = dyn Fn(&Request, usize) -> Reply + Send + Sync;

struct Stub {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Stub {
    /// Serves `handler(request, index)`; rejects (with 1200) any request whose signature
    /// does not verify, so every test also checks signing.
    async fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (handler, seen) = (Arc::clone(&handler), Arc::clone(&seen));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    let method = head.split(' ').next().unwrap_or("").to_string();
                    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                    let req = Request {
                        method,
                        path: path.to_string(),
                        params: query
                            .split('&')
                            .filter(|s| !s.is_empty())
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                                (decode(k), decode(v))
                            })
                            .collect(),
                    };
                    let index = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(req.clone());
                        seen.len() - 1
                    };
                    let reply = if verify(&req) {
                        handler(&req, index)
                    } else {
                        Reply::Json(
                            r#"{"ret_code":1200,"message":"AuthFailure, signature not matched"}"#
                                .into(),
                        )
                    };
                    let (status, ctype, body) = match reply {
                        Reply::Json(b) => (200, "application/json", b),
                        Reply::Status(s) => (s, "text/plain", "error".to_string()),
                        Reply::Raw(b) => (200, "text/html", b.to_string()),
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        Self { port, requests }
    }

    fn client(&self, tweak: impl FnOnce(&mut ClientSettings)) -> Client {
        self.client_with(tweak, None)
    }

    fn client_with(
        &self,
        tweak: impl FnOnce(&mut ClientSettings),
        metrics: Option<Metrics>,
    ) -> Client {
        let mut cfg = CloudConfig::new("STUBKEY", Secret::new(SECRET), "pek3a");
        cfg.host = "127.0.0.1".into();
        cfg.port = self.port;
        cfg.protocol = Protocol::Http;
        cfg.uri = "/iaas/".into();
        let mut settings = fast_settings();
        tweak(&mut settings);
        Client::new(cfg, settings, metrics).unwrap()
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn fast_settings() -> ClientSettings {
    ClientSettings {
        qps: 10_000.0,
        burst: 10_000,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        request_timeout: Duration::from_secs(5),
        job_poll_interval: Duration::from_millis(5),
        ..ClientSettings::default()
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn verify(req: &Request) -> bool {
    let Some(sig) = req.get("signature") else {
        return false;
    };
    let params: Vec<(String, String)> = req
        .params
        .iter()
        .filter(|(k, _)| k != "signature")
        .cloned()
        .collect();
    qingcloud::signer::sign(SECRET, &req.method, &req.path, &params) == sig
}

fn nic_json(i: usize) -> String {
    format!(
        r#"{{"nic_id":"52:54:00:00:{:02x}:{:02x}","status":"available","vxnet_id":"vxnet-abc1234","private_ip":"10.0.0.{}"}}"#,
        i / 256,
        i % 256,
        i % 250
    )
}

fn api_error(code: i32) -> Reply {
    Reply::Json(format!(
        r#"{{"ret_code":{code},"message":"Code{code}, injected"}}"#
    ))
}

#[tokio::test]
async fn requests_carry_the_common_signed_parameters() {
    let stub = Stub::start(|_, _| {
        Reply::Json(
            r#"{"action":"DescribeVxnetsResponse","ret_code":0,"total_count":0,"vxnet_set":[]}"#
                .into(),
        )
    })
    .await;
    let vxnets = stub
        .client(|_| {})
        .describe_vxnets(&["vxnet-abc1234".parse().unwrap()])
        .await
        .unwrap();
    assert!(vxnets.is_empty());
    let req = &stub.requests()[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.path, "/iaas/");
    assert_eq!(req.action(), "DescribeVxnets");
    for (k, v) in [
        ("zone", "pek3a"),
        ("access_key_id", "STUBKEY"),
        ("signature_method", "HmacSHA256"),
        ("signature_version", "1"),
        ("version", "1"),
        ("vxnets.1", "vxnet-abc1234"),
        ("offset", "0"),
        ("limit", "100"),
    ] {
        assert_eq!(req.get(k), Some(v), "{k}");
    }
    let ts = req.get("time_stamp").unwrap();
    assert!(
        jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%SZ", ts).is_ok(),
        "{ts}"
    );
    // The signature is the last parameter, as both SDKs send it.
    assert_eq!(req.params.last().unwrap().0, "signature");
}

#[tokio::test]
async fn describe_pages_until_total_count() {
    let stub = Stub::start(|req, _| {
        let offset: usize = req.get("offset").unwrap().parse().unwrap();
        let limit: usize = req.get("limit").unwrap().parse::<usize>().unwrap().min(100);
        let set: Vec<String> = (offset..(offset + limit).min(250)).map(nic_json).collect();
        Reply::Json(format!(
            r#"{{"ret_code":0,"total_count":250,"nic_set":[{}]}}"#,
            set.join(",")
        ))
    })
    .await;
    let nics = stub
        .client(|_| {})
        .describe_nics(&NicFilter::default())
        .await
        .unwrap();
    assert_eq!(nics.len(), 250);
    assert_eq!(nics[249].nic_id, "52:54:00:00:00:f9");
    let offsets: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| r.get("offset").unwrap().to_string())
        .collect();
    assert_eq!(offsets, ["0", "100", "200"]);
}

#[tokio::test]
async fn rows_shifted_between_pages_are_kept_once() {
    // The second page starts one row early, as if a NIC had been inserted before it.
    let stub = Stub::start(|req, _| {
        let offset: usize = req.get("offset").unwrap().parse().unwrap();
        let start = offset.saturating_sub(1);
        let set: Vec<String> = (start..(offset + 100).min(150)).map(nic_json).collect();
        Reply::Json(format!(
            r#"{{"ret_code":0,"total_count":150,"nic_set":[{}]}}"#,
            set.join(",")
        ))
    })
    .await;
    let nics = stub
        .client(|_| {})
        .describe_nics(&NicFilter::default())
        .await
        .unwrap();
    assert_eq!(nics.len(), 150);
}

#[tokio::test]
async fn busy_and_internal_errors_are_retried() {
    let stub = Stub::start(|_, i| match i {
        0 => api_error(5100),
        1 => api_error(5000),
        _ => Reply::Json(r#"{"ret_code":0,"job_id":"j-abcd1234"}"#.into()),
    })
    .await;
    let job = stub
        .client(|_| {})
        .attach_nics(
            &"i-abcd1234".parse().unwrap(),
            &[NicId::parse("52:54:00:00:00:01").unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(job.as_str(), "j-abcd1234");
    assert_eq!(stub.requests().len(), 3);
}

#[tokio::test]
async fn retries_stop_after_connection_retries() {
    let stub = Stub::start(|_, _| api_error(5100)).await;
    let err = stub.client(|_| {}).describe_jobs(&[]).await.unwrap_err();
    assert_eq!(err.code(), Some(RetCode::SERVER_BUSY));
    assert!(err.is_throttled());
    // connection_retries defaults to 3: four attempts.
    assert_eq!(stub.requests().len(), 4);
}

#[tokio::test]
async fn retry_budget_bounds_the_sleeping() {
    let stub = Stub::start(|_, _| api_error(5000)).await;
    let client = stub.client(|s| {
        s.backoff_base = Duration::from_secs(10);
        s.backoff_max = Duration::from_secs(10);
        s.retry_budget = Duration::from_secs(1);
    });
    let err = client.describe_jobs(&[]).await.unwrap_err();
    assert_eq!(err.code(), Some(RetCode::INTERNAL));
    // The first backoff (5-10 s) already exceeds the 1 s budget.
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    for code in [1100, 1200, 1300, 1400, 2100, 2500] {
        let stub = Stub::start(move |_, _| api_error(code)).await;
        let err = stub
            .client(|_| {})
            .delete_nics(&[NicId::parse("52:54:00:00:00:01").unwrap()])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(RetCode(code)));
        assert!(
            err.to_string().contains(&format!("Code{code}, injected")),
            "{err}"
        );
        assert_eq!(stub.requests().len(), 1, "{code}");
    }
}

#[tokio::test]
async fn http_5xx_and_non_json_are_retried_http_4xx_is_not() {
    let stub = Stub::start(|_, i| match i {
        0 => Reply::Status(502),
        1 => Reply::Raw("<html>gateway</html>"),
        2 => Reply::Json(r#"{"action":"DescribeJobsResponse"}"#.into()),
        _ => Reply::Json(r#"{"ret_code":0,"job_set":[],"total_count":0}"#.into()),
    })
    .await;
    stub.client(|_| {}).describe_jobs(&[]).await.unwrap();
    assert_eq!(stub.requests().len(), 4);

    let stub = Stub::start(|_, _| Reply::Status(404)).await;
    let err = stub.client(|_| {}).describe_jobs(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 404, .. }), "{err}");
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn create_nics_is_not_repeated_after_an_ambiguous_failure() {
    let stub = Stub::start(|_, i| match i {
        0 => api_error(5100),
        1 => Reply::Status(502),
        _ => Reply::Json(r#"{"ret_code":0,"nics":[]}"#.into()),
    })
    .await;
    let err = stub
        .client(|_| {})
        .create_nics(&"vxnet-abc1234".parse().unwrap(), 2, Some("pool"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: 502, .. }), "{err}");
    assert_eq!(stub.requests().len(), 2);
    let req = &stub.requests()[0];
    assert_eq!(req.get("count"), Some("2"));
    assert_eq!(req.get("nic_name"), Some("pool"));
}

#[tokio::test]
async fn create_nics_returns_typed_nics() {
    let stub = Stub::start(|_, _| {
        Reply::Json(r#"{"ret_code":0,"nics":[{"nic_id":"52:54:AA:00:00:01","private_ip":"10.0.0.5"},{"nic_id":"52:54:aa:00:00:02","private_ip":null}]}"#.into())
    })
    .await;
    let nics = stub
        .client(|_| {})
        .create_nics(&"vxnet-abc1234".parse().unwrap(), 2, None)
        .await
        .unwrap();
    assert_eq!(nics[0].id.as_str(), "52:54:aa:00:00:01");
    assert_eq!(nics[0].private_ip, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(nics[1].private_ip, None);
    let err = stub
        .client(|_| {})
        .create_nics(&"vxnet-abc1234".parse().unwrap(), 253, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn request_timeout_is_a_retryable_timeout() {
    let stub = Stub::start(|_, _| Reply::Hang).await;
    let client = stub.client(|s| s.request_timeout = Duration::from_millis(200));
    let err = client.describe_jobs(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(stub.requests().len(), 4);
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let stub = Stub {
        port,
        requests: Arc::default(),
    };
    let err = stub.client(|_| {}).describe_jobs(&[]).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport { connect: true, .. }),
        "{err}"
    );
    assert!(err.is_retryable_without_side_effects());
    assert!(!err.to_string().contains("signature"), "{err}");
}

fn job_reply(status: &str) -> Reply {
    Reply::Json(format!(
        r#"{{"ret_code":0,"total_count":1,"job_set":[{{"job_id":"j-abcd1234","job_action":"AttachNics","status":"{status}"}}]}}"#
    ))
}

#[tokio::test]
async fn wait_job_reports_terminal_states() {
    for (last, expected) in [
        ("successful", JobOutcome::Succeeded),
        ("failed", JobOutcome::Failed(JobStatus::Failed)),
        (
            "done with failure",
            JobOutcome::Failed(JobStatus::DoneWithFailure),
        ),
    ] {
        let stub = Stub::start(move |_, i| match i {
            0 => job_reply("pending"),
            1 => Reply::Json(r#"{"ret_code":0,"total_count":0,"job_set":[]}"#.into()),
            2 => job_reply("working"),
            _ => job_reply(last),
        })
        .await;
        let outcome = stub
            .client(|_| {})
            .wait_job(&"j-abcd1234".parse().unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(outcome, expected);
        assert_eq!(stub.requests()[0].get("jobs.1"), Some("j-abcd1234"));
    }
}

#[tokio::test]
async fn wait_job_tolerates_busy_and_times_out_as_unknown() {
    let stub = Stub::start(|_, i| {
        if i % 2 == 0 {
            api_error(5100)
        } else {
            job_reply("working")
        }
    })
    .await;
    // No retries inside a poll: every 5100 reaches wait_job itself.
    let mut client = stub.client(|_| {});
    let mut cfg = client.config().clone();
    cfg.connection_retries = 0;
    client = Client::new(cfg, client.settings().clone(), None).unwrap();
    let outcome = client
        .wait_job(&"j-abcd1234".parse().unwrap(), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(outcome, JobOutcome::Unknown);
    assert!(stub.requests().len() >= 2);
}

#[tokio::test]
async fn wait_job_returns_permanent_errors() {
    let stub = Stub::start(|_, _| api_error(1200)).await;
    let err = stub
        .client(|_| {})
        .wait_job(&"j-abcd1234".parse().unwrap(), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(RetCode::AUTH_FAILURE));
}

#[tokio::test]
async fn batched_detach_makes_one_call_per_batch() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let stub = Stub::start(move |_, _| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Reply::Json(format!(r#"{{"ret_code":0,"job_id":"j-{n:08}"}}"#))
    })
    .await;
    let nics: Vec<NicId> = (0..7)
        .map(|i| NicId::parse(&format!("52:54:00:00:00:{i:02x}")).unwrap())
        .collect();
    let report = stub
        .client(|s| s.max_batch = 3)
        .detach_nics_batched(&nics)
        .await;
    assert!(report.is_complete());
    assert_eq!(report.done.len(), 3);
    let reqs = stub.requests();
    assert_eq!(reqs[0].get("nics.3"), Some("52:54:00:00:00:02"));
    assert_eq!(reqs[0].get("nics.4"), None);
    assert_eq!(reqs[2].get("nics.1"), Some("52:54:00:00:00:06"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn metrics_count_requests_and_errors() {
    let stub = Stub::start(|_, i| match i {
        0 => api_error(5100),
        _ => Reply::Json(r#"{"ret_code":0,"job_set":[],"total_count":0}"#.into()),
    })
    .await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    stub.client_with(|_| {}, Some(metrics))
        .describe_jobs(&[])
        .await
        .unwrap();
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    assert!(
        out.contains(r#"qingcloud_api_requests_total{action="DescribeJobs"} 2"#),
        "{out}"
    );
    assert!(
        out.contains(r#"qingcloud_api_errors_total{action="DescribeJobs",code="5100"} 1"#),
        "{out}"
    );
    assert!(
        out.contains(r#"qingcloud_ratelimit_wait_seconds_count{priority="refill"} 2"#),
        "{out}"
    );
}

#[tokio::test]
async fn secret_never_shows_in_debug_or_errors() {
    let stub = Stub::start(|_, _| Reply::Status(500)).await;
    let client = stub.client(|_| {});
    assert!(!format!("{client:?}").contains(SECRET));
    let err = client.describe_jobs(&[]).await.unwrap_err();
    assert!(!format!("{err:?}").contains(SECRET));
    assert!(!err.to_string().contains(SECRET));
}

#[tokio::test]
async fn the_rate_limiter_paces_requests() {
    let stub =
        Stub::start(|_, _| Reply::Json(r#"{"ret_code":0,"job_set":[],"total_count":0}"#.into()))
            .await;
    let client = stub.client(|s| {
        s.qps = 20.0;
        s.burst = 2;
    });
    let start = std::time::Instant::now();
    for _ in 0..6 {
        client.describe_jobs(&[]).await.unwrap();
    }
    let took = start.elapsed();
    // Two from the burst, then one per 50 ms: at least 200 ms for the other four.
    println!("6 requests at qps 20 / burst 2 took {took:?}");
    assert!(took >= Duration::from_millis(195), "{took:?}");
}
