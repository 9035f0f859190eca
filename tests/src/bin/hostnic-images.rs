//! `hostnic-images`: builds the operator and agent images as OCI archives from this workspace's
//! binaries, offline (no base image, no registry): `ctr -n k8s.io images import`, `docker load`
//! or `podman load` them on a node. The README (Images) gives the build commands before it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use hostnic_tests::{images, oci};

#[derive(Parser)]
#[command(about = "Build hostnic's images as OCI archives, offline")]
struct Args {
    /// Directory with hostnic-operator and hostnic-agent.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The hostnic CNI plugin (it runs on the node: link it statically, README Images).
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release-cni/hostnic"
    )]
    plugin: PathBuf,
    /// Directory with the reference plugins loopback and portmap.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_plugins: PathBuf,
    /// Repository of both images (as kustomization.yaml `images:` newName without the name).
    #[arg(long, default_value = "ghcr.io/yunify")]
    registry: String,
    /// Tag of both images.
    #[arg(long, default_value = "v0.1.0")]
    tag: String,
    /// Where the archives go.
    #[arg(long, default_value = "target/images")]
    out: PathBuf,
}

fn build(args: &Args) -> Result<()> {
    let inputs = images::Inputs {
        repo_root: std::env::current_dir().context("current directory")?,
        bin_dir: args.bin_dir.clone(),
        plugin: args.plugin.clone(),
        cni_plugins: args.cni_plugins.clone(),
    };
    if !oci::needed_libraries(&inputs.plugin)?.is_empty() {
        eprintln!(
            "warning: {} is dynamically linked; it runs on the node, whose C library may differ",
            inputs.plugin.display()
        );
    }
    std::fs::create_dir_all(&args.out).context("create the output directory")?;
    let specs = [
        (
            "hostnic-operator",
            images::operator as fn(&images::Inputs, &str) -> Result<oci::ImageSpec>,
        ),
        ("hostnic-agent", images::agent),
    ];
    for (name, spec) in specs {
        let reference = format!("{}/{name}:{}", args.registry, args.tag);
        let spec = spec(&inputs, &reference)?;
        let work = tempfile::tempdir().context("temp dir")?;
        let archive = args.out.join(format!("{name}.oci.tar"));
        let digest = oci::write_archive(&spec, work.path(), &archive)?;
        println!("{reference} {digest} {}", archive.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match build(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostnic-images: {e:#}");
            ExitCode::FAILURE
        }
    }
}
