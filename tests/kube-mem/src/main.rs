//! `kube-mem`: runs the in-memory Kubernetes API server, writes and prints a kubeconfig for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube_mem::{Auth, Identity, KubeMem, Realism};

/// An in-memory Kubernetes API server for tests and the local demo.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (plain http).
    #[arg(long, env = "KUBE_MEM_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory of CRD YAML files to create at start (repeatable).
    #[arg(long = "crds")]
    crd_dirs: Vec<PathBuf>,
    /// Write the admin kubeconfig to this path.
    #[arg(long, env = "KUBE_MEM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Require bearer tokens and enforce RBAC. Repeatable `TOKEN=USER` pairs; USER is a user
    /// name or `system:serviceaccount:NS:NAME`, optionally `@NODE` for a token bound to a pod
    /// on NODE (its identity carries `authentication.kubernetes.io/node-name`, as projected
    /// service-account tokens do since Kubernetes 1.30). The admin token is always accepted.
    #[arg(long = "token", value_name = "TOKEN=USER[@NODE]")]
    tokens: Vec<String>,
    /// Serve HTTPS with a CA made at start (written into the kubeconfig). kubectl sends
    /// bearer tokens only over TLS, so use this with --token when kubectl must authenticate.
    #[arg(long, env = "KUBE_MEM_TLS")]
    tls: bool,
    /// Milliseconds every write takes (an etcd commit; a small real cluster: about 5).
    #[arg(long, env = "KUBE_MEM_WRITE_LATENCY_MS", default_value_t = 0)]
    write_latency_ms: u64,
    /// Milliseconds between a change and its watch event (a small real cluster: about 10).
    #[arg(long, env = "KUBE_MEM_WATCH_DELAY_MS", default_value_t = 0)]
    watch_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Args {
        listen,
        crd_dirs,
        kubeconfig,
        tokens,
        tls,
        write_latency_ms,
        watch_delay_ms,
    } = Args::parse();
    let mut builder = KubeMem::builder().listen(listen);
    for d in crd_dirs {
        builder = builder.with_crds_from_dir(d);
    }
    if !tokens.is_empty() {
        let mut auth = Auth::new();
        for t in tokens {
            let (token, user) = t.split_once('=').context("--token wants TOKEN=USER")?;
            let (user, node) = match user.split_once('@') {
                Some((user, node)) => (user, Some(node)),
                None => (user, None),
            };
            let id = match user
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split_once(':'))
            {
                Some((ns, name)) => Identity::service_account(ns, name),
                None => Identity::user(user),
            };
            let id = match node {
                Some(node) => id.on_node(node),
                None => id,
            };
            auth = auth.token(token, id);
        }
        builder = builder.auth(auth);
    }
    builder = builder.tls(tls).realism(Realism {
        write_latency: Duration::from_millis(write_latency_ms),
        watch_delay: Duration::from_millis(watch_delay_ms),
    });
    let server = builder.start().await.context("start kube-mem")?;
    if let Some(path) = kubeconfig {
        server
            .write_kubeconfig(&path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    print!("{}", server.kubeconfig_yaml());
    tokio::signal::ctrl_c().await.context("wait for ctrl-c")?;
    server.shutdown().await;
    Ok(())
}
