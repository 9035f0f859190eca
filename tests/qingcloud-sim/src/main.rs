//! `qingcloud-sim`: runs the simulator for the local demo or for developing against QingCloud
//! without an account. Prints the endpoint and a client config file, then serves until
//! SIGINT/SIGTERM and removes every netns it made.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use qingcloud_sim::{
    AccessKey, InstanceSpec, Latency, Profile, Quota, SimConfig, Simulator, VxnetSpec,
};

/// A strict QingCloud IaaS API simulator (NIC actions) with hot-plug into network namespaces.
///
/// Flags override the config file. Admin endpoints: see the crate docs (`/admin/nics`,
/// `/admin/jobs`, `/admin/calls`, `/admin/faults`, ...).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// YAML config file (fields of `SimConfig`: listen, zone, access_keys, vxnets, instances,
    /// job_latency, seed, hotplug, capacity_error_code, quota, ...).
    #[arg(long, env = "QINGCLOUD_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Base settings, overridden by the config file and the other flags: `realistic` makes
    /// jobs of a few seconds serialized per instance, 5 NICs per attach/detach, VPC and DHCP
    /// rules, a long job history and HTTPS (default: the config file's `profile`, else
    /// `default`).
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Serve HTTPS with a CA made at start.
    #[arg(long)]
    tls: bool,
    /// Where to write the CA certificate (PEM) when serving HTTPS.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Also serve the admin endpoints (only them) over plain HTTP here.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Zone served.
    #[arg(long)]
    zone: Option<String>,
    /// Access key id accepted (with --secret-access-key; replaces the configured keys).
    #[arg(long, requires = "secret_access_key")]
    access_key_id: Option<String>,
    /// Secret of --access-key-id.
    #[arg(long, env = "QINGCLOUD_SIM_SECRET", hide_env_values = true)]
    secret_access_key: Option<String>,
    /// A vxnet, `CIDR` or `ID=CIDR` (repeatable).
    #[arg(long = "vxnet", value_name = "[ID=]CIDR")]
    vxnets: Vec<String>,
    /// An instance, `ID` or `ID=NETNS` to map it to a node netns (repeatable).
    #[arg(long = "instance", value_name = "ID[=NETNS]")]
    instances: Vec<String>,
    /// Make attached NICs real links in the instances' netns (needs root).
    #[arg(long)]
    hotplug: bool,
    /// Random seed (ids, latencies, fault probabilities).
    #[arg(long)]
    seed: Option<u64>,
    /// Time jobs stay pending, `MS` or `MIN-MAX`.
    #[arg(long, value_name = "MS[-MS]")]
    pending_ms: Option<String>,
    /// Time jobs stay working, `MS` or `MIN-MAX`.
    #[arg(long, value_name = "MS[-MS]")]
    working_ms: Option<String>,
    /// ret_code of capacity errors (1400, 2500 or 5200).
    #[arg(long)]
    capacity_error_code: Option<i32>,
    /// Most NICs per AttachNics/DetachNics call (more → 1100).
    #[arg(long)]
    nic_batch_limit: Option<usize>,
    /// Account request quota, `REQUESTS/WINDOW_MS` (e.g. 2000/3600000).
    #[arg(long, value_name = "N/MS")]
    quota: Option<String>,
    /// Account NIC count quota: CreateNics beyond it → 2500 "resource quota ... exceeded".
    #[arg(long)]
    nic_quota: Option<usize>,
    /// Longest request URI accepted (longer → HTTP 414); 0 accepts any length. Default 8192.
    #[arg(long)]
    max_uri_len: Option<usize>,
    /// Print the effective config as YAML and exit.
    #[arg(long)]
    dump_config: bool,
}

fn latency(s: &str) -> anyhow::Result<Latency> {
    Ok(match s.split_once('-') {
        Some((a, b)) => Latency::UniformMs(a.trim().parse()?, b.trim().parse()?),
        None => Latency::FixedMs(s.trim().parse()?),
    })
}

fn build_config(args: Args) -> anyhow::Result<(SimConfig, bool)> {
    let Args {
        config,
        profile,
        tls,
        ca_file,
        admin_listen,
        listen,
        zone,
        access_key_id,
        secret_access_key,
        vxnets,
        instances,
        hotplug,
        seed,
        pending_ms,
        working_ms,
        capacity_error_code,
        nic_batch_limit,
        quota,
        nic_quota,
        max_uri_len,
        dump_config,
    } = args;
    let mut cfg = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            SimConfig::from_yaml(&text, profile)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("parse {}", path.display()))?
        }
        None => SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            ..SimConfig::with_profile(profile.unwrap_or_default())
        },
    };
    cfg.tls |= tls;
    if ca_file.is_some() {
        cfg.tls_ca_file = ca_file;
    }
    if admin_listen.is_some() {
        cfg.admin_listen = admin_listen;
    }
    if let Some(listen) = listen {
        cfg.listen = listen;
    }
    if let Some(zone) = zone {
        cfg.zone = zone;
    }
    if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
        cfg.access_keys = vec![AccessKey { id, secret }];
    }
    for v in vxnets {
        let (id, cidr) = match v.split_once('=') {
            Some((id, cidr)) => (Some(id.to_owned()), cidr),
            None => (None, v.as_str()),
        };
        let cidr = cidr
            .parse()
            .with_context(|| format!("--vxnet {v}: bad CIDR"))?;
        let mut spec = VxnetSpec::new("", cidr);
        spec.id = id;
        cfg.vxnets.push(spec);
    }
    for i in instances {
        let spec = match i.split_once('=') {
            Some((id, ns)) => InstanceSpec::new(id).node_netns(ns),
            None => InstanceSpec::new(&i),
        };
        cfg.instances.push(spec);
    }
    cfg.hotplug |= hotplug;
    if let Some(seed) = seed {
        cfg.seed = seed;
    }
    if let Some(p) = pending_ms {
        cfg.job_latency.pending = latency(&p).context("--pending-ms")?;
    }
    if let Some(w) = working_ms {
        cfg.job_latency.working = latency(&w).context("--working-ms")?;
    }
    if let Some(code) = capacity_error_code {
        cfg.capacity_error_code = code;
    }
    if nic_batch_limit.is_some() {
        cfg.nic_batch_limit = nic_batch_limit;
    }
    if nic_quota.is_some() {
        cfg.nic_quota = nic_quota;
    }
    if let Some(len) = max_uri_len {
        cfg.max_uri_len = Some(len).filter(|l| *l > 0);
    }
    if let Some(q) = quota {
        let Some((n, ms)) = q.split_once('/') else {
            bail!("--quota {q}: expected REQUESTS/WINDOW_MS");
        };
        cfg.quota = Some(Quota {
            requests: n.parse().context("--quota requests")?,
            window_ms: ms.parse().context("--quota window")?,
        });
    }
    Ok((cfg, dump_config))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (cfg, dump) = build_config(Args::parse())?;
    if dump {
        print!("{}", serde_saphyr::to_string(&cfg)?);
        return Ok(());
    }
    // Before the banner: whoever reads it may signal at once, and an uninstalled handler
    // would let the signal kill the process without removing its netns.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let sim = Simulator::from_config(cfg).start().await?;
    let banner = format!(
        "endpoint: {}\nadmin: {}/admin/nics\n--- client config (qingcloud config.yaml) ---\n{}---\n",
        sim.url(),
        sim.admin_url(),
        sim.config_yaml()
    );
    // One write, and a closed stdout is no reason to stop serving.
    let mut stdout = std::io::stdout();
    if let Err(error) = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(%error, "cannot print the endpoint");
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
