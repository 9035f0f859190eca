//! Figures (printed, never asserted): request rates and watch latency of kube-mem through a
//! kube::Client on this machine. `cargo test -p kube-mem --test throughput -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

#[tokio::test]
#[ignore = "figures only: run with --ignored --nocapture"]
async fn request_rates_and_watch_latency() {
    let env = Env::start().await;
    if !env.local() {
        println!("skipped: figures are for kube-mem");
        return env.cleanup().await;
    }
    let cms: kube::Api<ConfigMap> = env.api();
    const N: usize = 300;
    let rate = |what: &str, n: usize, t: Duration| {
        println!("{what}: {n} in {t:?} = {:.0}/s", n as f64 / t.as_secs_f64())
    };

    let t = Instant::now();
    for i in 0..N {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}}),
        )
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    rate("create", N, t.elapsed());

    let t = Instant::now();
    for i in 0..N {
        cms.get(&format!("cm-{i}")).await.unwrap();
    }
    rate("get", N, t.elapsed());

    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            cms.list(&ListParams::default()).await.unwrap().items.len(),
            N
        );
    }
    rate(&format!("list of {N}"), 20, t.elapsed());

    let rv = cms
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let mut latency = Duration::ZERO;
    let t = Instant::now();
    for i in 0..N {
        let sent = Instant::now();
        cms.patch(
            &format!("cm-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"p": "1"}})),
        )
        .await
        .unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                WatchEvent::Modified(_) => break,
                _ => continue,
            }
        }
        latency += sent.elapsed();
    }
    rate("patch + its watch event", N, t.elapsed());
    println!("patch-to-watch-event mean: {:?}", latency / N as u32);
    env.cleanup().await;
}
