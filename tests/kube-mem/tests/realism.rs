//! The timing and load behaviour a real API server shows: writes that take an etcd commit,
//! watch events that arrive later than the write's answer, and 429s from API Priority and
//! Fairness. Lower bounds only: they hold on any machine, however slow.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hostnic_tests::http::{self, Response};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube_mem::{KubeMem, Realism, Throttled};
use serde_json::json;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test]
async fn writes_take_the_commit_latency_and_watchers_see_them_later() {
    let realism = Realism {
        write_latency: Duration::from_millis(40),
        watch_delay: Duration::from_millis(80),
    };
    let server = KubeMem::builder().realism(realism).start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "default");
    let rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version;
    let mut events = cms
        .watch(&WatchParams::default(), &rv.unwrap())
        .await
        .unwrap()
        .boxed();

    let t = Instant::now();
    cms.get_opt("a").await.unwrap();
    let read = t.elapsed();
    let t = Instant::now();
    cms.create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    let written = t.elapsed();
    assert!(
        written >= realism.write_latency,
        "a write answered in {written:?}"
    );
    assert!(
        read < realism.write_latency,
        "reads are not delayed: {read:?}"
    );

    let ev = events.try_next().await.unwrap().expect("an event");
    let seen = t.elapsed();
    assert!(matches!(ev, WatchEvent::Added(_)), "{ev:?}");
    assert!(
        seen >= realism.write_latency + realism.watch_delay,
        "the watch saw the write {seen:?} after it was sent"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn throttled_requests_get_429_with_retry_after_until_the_budget_is_spent() {
    let server = KubeMem::builder().start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "default");
    let path = "/api/v1/namespaces/default/configmaps";

    server.throttle(Throttled::Writes, 1);
    cms.list(&Default::default())
        .await
        .expect("reads pass a write throttle");
    assert_eq!(server.throttled(), 0);
    // kube-rs 5 retries 429s by itself, after the server's Retry-After (as client-go does),
    // so one rejection costs the caller a second, not an error.
    let t = Instant::now();
    cms.create(&PostParams::default(), &config_map("b"))
        .await
        .expect("retried");
    assert_eq!(server.throttled(), 1, "the write was rejected once");
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "the client waited for Retry-After"
    );

    server.throttle(Throttled::All, 1);
    let resp = raw_get(server.addr(), path).await;
    assert!(resp.head.starts_with("HTTP/1.1 429"), "{resp:?}");
    assert_eq!(resp.status, 429, "{resp:?}");
    assert!(
        resp.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{resp:?}"
    );
    assert!(
        resp.body.contains(r#""reason":"TooManyRequests""#),
        "{resp:?}"
    );
    assert!(
        raw_get(server.addr(), path)
            .await
            .head
            .starts_with("HTTP/1.1 200"),
        "only one was armed"
    );
    assert_eq!(server.throttled(), 2);
    server.shutdown().await;
}

/// A plain HTTP/1.1 GET through the harness's client, to see the status line and headers as a
/// client library would; blocking, so it runs off the runtime that serves it.
async fn raw_get(addr: SocketAddr, path: &str) -> Response {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || http::exchange(addr, "GET", &path, None))
        .await
        .expect("GET thread")
        .expect("GET")
}

#[tokio::test]
async fn realism_can_change_while_the_server_runs() {
    let server = KubeMem::builder().start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "default");
    server.set_realism(Realism {
        write_latency: Duration::from_millis(60),
        ..Default::default()
    });
    let t = Instant::now();
    cms.create(&PostParams::default(), &config_map("c"))
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(60));
    server.shutdown().await;
}
