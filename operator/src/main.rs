//! `hostnic-operator` (skeleton).

use clap::Parser;

/// Reconciles NicPool and HostNic resources against the QingCloud API.
#[derive(Parser, Debug)]
#[command(name = "hostnic-operator", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}
