//! `hostnic-operator`: parses flags, starts logs, the probe/metrics server, leader election
//! and the controllers, and stops them gracefully on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hostnic_crds::NicPool;
use hostnic_operator::args::Args;
use hostnic_operator::cloud::batch::BatchConfig;
use hostnic_operator::cloud::qingcloud::QingCloud;
use hostnic_operator::controller::Checkpoint;
use hostnic_operator::http::{self, Probes};
use hostnic_operator::lease::Timing;
use hostnic_operator::metrics::Metrics;
use hostnic_operator::run::{LeaseConfig, Operator, kube_config};
use hostnic_operator::telemetry;
use kube::api::ListParams;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(&args.log);
    let settings = args.settings();
    let Args {
        cluster_name,
        cloud_config,
        metrics_addr,
        lease_namespace,
        lease_name,
        identity,
        lease_seconds,
        lease_renew_deadline_seconds,
        lease_retry_period_seconds,
        instance_annotation: _,
        instance_label: _,
        cloud_qps,
        cloud_burst,
        max_attach_batch,
        max_detach_batch,
        max_delete_batch,
        max_create_batch: _,
        batch_window_ms,
        batch_round_wait_ms,
        job_poll_seconds: _,
        link_grace_seconds: _,
        job_timeout_seconds,
        shrink_delay_seconds: _,
        cloud_cache_seconds: _,
        visibility_grace_seconds: _,
        gc_interval_seconds: _,
        gc_settle_seconds: _,
        cloud_quota_cooldown_seconds,
        gc_grace_seconds: _,
        gc_dry_run: _,
        resync_seconds: _,
        concurrency: _,
        backoff_throttled_seconds: _,
        backoff_transient_seconds: _,
        backoff_permanent_seconds: _,
        backoff_max_seconds: _,
        log: _,
    } = args;
    // The fields marked `_` reach the reconcilers through `settings`.
    let identity = identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("hostnic-operator-{}", std::process::id()));
    tracing::info!(%cluster_name, %identity, config = %cloud_config.display(), "starting");

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let cloud_metrics = qingcloud::Metrics::register(&mut registry);
    let config = qingcloud::CloudConfig::load(&cloud_config)
        .with_context(|| format!("read cloud credentials from {}", cloud_config.display()))?;
    let client_settings = qingcloud::ClientSettings {
        qps: cloud_qps,
        burst: cloud_burst,
        max_batch: max_attach_batch,
        job_timeout: Duration::from_secs(job_timeout_seconds),
        quota_cooldown: Duration::from_secs(cloud_quota_cooldown_seconds),
        ..Default::default()
    };
    let cloud = qingcloud::Client::new(config, client_settings, Some(cloud_metrics))
        .context("build the QingCloud client")?;

    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let timing = Timing::new(
        secs(lease_seconds),
        secs(lease_renew_deadline_seconds),
        secs(lease_retry_period_seconds),
    )
    .context("lease timing")?;

    let inferred = kube::Config::infer()
        .await
        .context("find the Kubernetes API (in-cluster or kubeconfig)")?;
    let client =
        kube::Client::try_from(kube_config(inferred)).context("build the Kubernetes client")?;
    // Fail fast, and say how to fix it, when the CRDs are missing.
    kube::Api::<NicPool>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("list NicPools: are the CRDs installed? kubectl apply -k crds/")?;

    let stop = CancellationToken::new();
    let probes = Arc::new(Probes {
        registry,
        ready: Default::default(),
    });
    let bound = http::serve(metrics_addr, probes.clone(), stop.clone())
        .await
        .with_context(|| format!("bind {metrics_addr}"))?;
    tracing::info!(addr = %bound, "serving /healthz /readyz /metrics");

    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
        on_signal.cancel();
    });

    let cloud = Arc::new(QingCloud::new(cloud));
    hostnic_operator::gc::check_cluster_name(&cluster_name, cloud.as_ref()).await?;

    let operator = Operator {
        client,
        cloud,
        settings,
        batch: BatchConfig {
            window: Duration::from_millis(batch_window_ms),
            max_attach: max_attach_batch,
            max_detach: max_detach_batch,
            max_delete: max_delete_batch,
            round_wait: Duration::from_millis(batch_round_wait_ms),
        },
        identity,
        lease: Some(LeaseConfig {
            namespace: lease_namespace,
            name: lease_name,
            timing,
        }),
        checkpoint: Arc::new(Checkpoint::default()),
        metrics,
    };
    probes.ready.store(true, Ordering::Relaxed);
    operator.run(stop).await;
    tracing::info!("stopped");
    Ok(())
}
