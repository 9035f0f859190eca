//! `hostnic-agent` (skeleton).

use clap::Parser;

/// Per-node agent: hands pre-attached NICs to pods through the CNI plugin.
#[derive(Parser, Debug)]
#[command(name = "hostnic-agent", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}
