//! `hostnic-agent`: parses flags, sets up JSON logs, runs the agent until SIGTERM or SIGINT,
//! then stops gracefully.

use anyhow::Context;
use clap::Parser;
use hostnic_agent::args::Args;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "text" {
        logs.init();
    } else {
        logs.json().flatten_event(true).init();
    }
    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let running = hostnic_agent::run::start(&args, client)
        .await
        .context("start agent")?;
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    running
        .shutdown(std::time::Duration::from_secs(args.shutdown_grace_seconds))
        .await;
    tracing::info!("stopped");
    Ok(())
}
