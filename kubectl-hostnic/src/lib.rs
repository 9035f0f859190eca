//! `kubectl hostnic`: a kubectl plugin (the binary `kubectl-hostnic` on PATH) that explains
//! hostnic's state from the objects it keeps, with the kubeconfig's credentials:
//!
//! - `why POD [-n NS]` walks pod -> node and its agent -> NicPool -> HostNic -> cloud NIC
//!   and job, prints the chain and one line saying what blocks the pod (not scheduled, no
//!   pool selects the node, agent not ready, pool Degraded, NIC stuck with its cloud error,
//!   no free NIC with the counts and whether an ADD waits) or that it is fine (its NIC is
//!   Bound, or it runs in the host network); exit code 1 when blocked.
//! - `nodes` prints a table per pool and node: size, available, bound, in progress, failed
//!   and since when an ADD waits.
//! - `leaks --cloud-config FILE --cluster NAME` lists the cloud NICs named as the cluster's
//!   that no HostNic owns, read with the operator's own config file; read-only.
//!
//! Any command exits 2 when it cannot read what it needs (no cluster, pod not found, cloud
//! error). The diagnoses are pure functions over fetched objects ([`why::diagnose`],
//! [`nodes::rows`], [`leaks::find`]); [`fetch`] and [`leaks::cloud_nics`] do the I/O.

pub mod args;
pub mod fetch;
pub mod fill;
#[cfg(test)]
mod fixtures;
pub mod leaks;
pub mod nodes;
pub mod table;
pub mod why;

use std::process::ExitCode;

use args::{Args, Command};

/// Runs one command, printing its result; the exit code says whether `why` found a blocker.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        kubeconfig,
        context,
        command,
    } = args;
    let client = fetch::client(kubeconfig.as_deref(), context.as_deref()).await?;
    match command {
        Command::Why { pod, namespace } => {
            let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let view = fetch::pod_view(&client, &namespace, &pod).await?;
            let (pools, nics) = fetch::pools_and_nics(&client).await?;
            let diagnosis = why::diagnose(&why::Inputs {
                pod: &view.pod,
                node: view.node.as_ref(),
                pools: &pools,
                nics: &nics,
                agents: &view.agents,
            });
            print!("{}", diagnosis.render());
            Ok(if diagnosis.verdict.is_blocked() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Nodes => {
            let (pools, nics) = fetch::pools_and_nics(&client).await?;
            print!("{}", nodes::render(&nodes::rows(&pools, &nics)));
            Ok(ExitCode::SUCCESS)
        }
        Command::Leaks {
            cloud_config,
            cluster,
        } => {
            let (_, nics) = fetch::pools_and_nics(&client).await?;
            let cloud = leaks::cloud_nics(&cloud_config).await?;
            print!(
                "{}",
                leaks::render(&leaks::find(&cloud, &cluster, &nics), &cluster)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
