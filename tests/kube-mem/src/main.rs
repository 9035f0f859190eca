//! `kube-mem`: runs the in-memory Kubernetes API server, writes and prints a kubeconfig for it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube_mem::{Auth, Identity, KubeMem};

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
    /// name or `system:serviceaccount:NS:NAME`. The admin token is always accepted.
    #[arg(long = "token", value_name = "TOKEN=USER")]
    tokens: Vec<String>,
    /// Serve HTTPS with a CA made at start (written into the kubeconfig). kubectl sends
    /// bearer tokens only over TLS, so use this with --token when kubectl must authenticate.
    #[arg(long, env = "KUBE_MEM_TLS")]
    tls: bool,
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
    } = Args::parse();
    let mut builder = KubeMem::builder().listen(listen);
    for d in crd_dirs {
        builder = builder.with_crds_from_dir(d);
    }
    if !tokens.is_empty() {
        let mut auth = Auth::new();
        for t in tokens {
            let (token, user) = t.split_once('=').context("--token wants TOKEN=USER")?;
            let id = match user
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split_once(':'))
            {
                Some((ns, name)) => Identity::service_account(ns, name),
                None => Identity::user(user),
            };
            auth = auth.token(token, id);
        }
        builder = builder.auth(auth);
    }
    builder = builder.tls(tls);
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
