//! The offline images (`hostnic-images`): built from this workspace's binaries with no base
//! image, imported with `ctr images import` into a private containerd, and run by runc with a
//! read-only root filesystem: the operator as its image user, the agent, and the agent image's
//! CNI installer, whose shell and tools must all be in the image, installing the plugins into
//! a host directory as the DaemonSet's init container does.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hostnic_tests::bins::{bin, target_dir};
use hostnic_tests::containerd::{CniSetup, Containerd};
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;
use hostnic_tests::{images, oci};

const NAMESPACE: &str = "hostnic-images-test";

struct Ctr {
    socket: PathBuf,
}

impl Ctr {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", NAMESPACE])
            .args(args)
            .output()
            .expect("run ctr")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn build(dir: &Path, name: &str, spec: oci::ImageSpec) -> PathBuf {
    let work = dir.join(format!("{name}-work"));
    let archive = dir.join(format!("{name}.oci.tar"));
    oci::write_archive(&spec, &work, &archive).unwrap();
    archive
}

#[test]
fn the_offline_images_import_into_containerd_and_run_read_only() {
    if !require_root("the_offline_images_import_into_containerd_and_run_read_only") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("hn-images-")
        .tempdir()
        .unwrap();
    let inputs = images::Inputs {
        repo_root: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        bin_dir: target_dir(),
        plugin: bin("hostnic"),
        cni_plugins: PathBuf::from("/usr/lib/cni"),
    };
    let operator_ref = "registry.local/hostnic/hostnic-operator:test";
    let agent_ref = "registry.local/hostnic/hostnic-agent:test";
    let operator = build(
        dir.path(),
        "operator",
        images::operator(&inputs, operator_ref).unwrap(),
    );
    let agent = build(
        dir.path(),
        "agent",
        images::agent(&inputs, agent_ref).unwrap(),
    );

    // A containerd of our own (the CNI config is irrelevant: ctr run uses none).
    let node = TestNetns::new("images");
    let cni = CniSetup {
        conflist_name: "99-loopback.conflist".into(),
        conflist: r#"{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}"#.into(),
        plugins: vec![],
    };
    let containerd = Containerd::start(&node.path(), &cni).unwrap();
    // Containerd::start serves its socket here.
    let ctr = Ctr {
        socket: containerd.dir().join("containerd.sock"),
    };
    for archive in [&operator, &agent] {
        ctr.ok(&["images", "import", &archive.display().to_string()]);
    }
    let listed = ctr.ok(&["images", "ls", "-q"]);
    for r in [operator_ref, agent_ref] {
        assert!(listed.lines().any(|l| l == r), "{r} not imported: {listed}");
    }

    // The operator, as the image's user (65532), read-only: every library it loads is there.
    let help = ctr.ok(&[
        "run",
        "--rm",
        "--read-only",
        operator_ref,
        "hn-img-operator",
        images::OPERATOR_BIN,
        "--help",
    ]);
    assert!(help.contains("--metrics-addr"), "{help}");
    // The agent too.
    let help = ctr.ok(&[
        "run",
        "--rm",
        "--read-only",
        agent_ref,
        "hn-img-agent",
        images::AGENT_BIN,
        "--help",
    ]);
    assert!(help.contains("--health-addr"), "{help}");

    // The init container's command, with the host's CNI bin dir mounted where the DaemonSet
    // mounts it: the script's shell and tools run from the image.
    let host_bin = dir.path().join("host-opt-cni-bin");
    fs::create_dir_all(&host_bin).unwrap();
    let mount = format!(
        "type=bind,src={},dst=/host/opt/cni/bin,options=rbind:rw",
        host_bin.display()
    );
    ctr.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--mount",
        &mount,
        agent_ref,
        "hn-img-install",
        images::INSTALLER,
        "plugins",
    ]);
    for (name, source) in [
        ("hostnic", inputs.plugin.clone()),
        ("loopback", inputs.cni_plugins.join("loopback")),
        ("portmap", inputs.cni_plugins.join("portmap")),
    ] {
        assert_eq!(
            fs::read(host_bin.join(name)).unwrap(),
            fs::read(&source).unwrap(),
            "{name}"
        );
    }
    ctr.ok(&["images", "rm", operator_ref, agent_ref]);
    drop(containerd);
}
