//! hostnic's two images as [`oci`](crate::oci) specs, built offline from this machine's files:
//! the same paths, entrypoints and users as `manifests/images/Dockerfile` (a test compares
//! them), with what the Dockerfile's base images provide taken from the build host instead: the
//! ELF libraries the binaries load, the CA bundle, and for the agent the shell and the few
//! tools the CNI installer script runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::oci::{Entry, ImageSpec};

/// Operator binary in the image.
pub const OPERATOR_BIN: &str = "/usr/local/bin/hostnic-operator";
/// Agent binary in the image.
pub const AGENT_BIN: &str = "/usr/local/bin/hostnic-agent";
/// The CNI installer script in the image.
pub const INSTALLER: &str = "/usr/local/bin/hostnic-install-cni";
/// Where the agent image keeps the CNI plugins its installer copies to the node.
pub const PLUGIN_DIR: &str = "/opt/hostnic/bin";
/// The operator's user, as distroless `nonroot`.
pub const OPERATOR_USER: &str = "65532:65532";
/// What the installer script runs besides shell built-ins.
pub const INSTALLER_TOOLS: &[&str] = &["cp", "chmod", "mv", "rm", "mkdir", "sort", "head", "sleep"];

const PATH_ENV: &str = "PATH=/usr/local/bin:/usr/bin:/bin";
/// The agent also runs `iptables` from `/usr/sbin`, as on Debian.
const AGENT_PATH_ENV: &str = "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/bin";
/// Debian's `iptables` (nft backend): one multi-call binary and the extensions it loads.
const XTABLES_MULTI: &str = "/usr/sbin/xtables-nft-multi";
const XTABLES_EXTENSIONS: &str = "/usr/lib/x86_64-linux-gnu/xtables";
/// The names the agent runs `iptables` by, all the multi-call binary.
pub const IPTABLES_TOOLS: &[&str] = &["iptables", "iptables-restore"];
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The files the images are made of.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The repository root (for the installer script).
    pub repo_root: PathBuf,
    /// Directory with `hostnic-operator` and `hostnic-agent`.
    pub bin_dir: PathBuf,
    /// The `hostnic` CNI plugin.
    pub plugin: PathBuf,
    /// Directory with the reference plugins `loopback` and `portmap` (Debian:
    /// containernetworking-plugins, `/usr/lib/cni`).
    pub cni_plugins: PathBuf,
}

fn file(source: impl Into<PathBuf>, mode: u32) -> Entry {
    Entry::File {
        source: source.into(),
        mode,
    }
}

fn must_exist(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        bail!("{} is missing", path.display());
    }
    Ok(path.to_owned())
}

/// The operator image: its binary, the CA bundle (reqwest verifies api.qingcloud.com with the
/// platform's roots), a passwd naming uid 65532, and the libraries; runs as 65532.
pub fn operator(inputs: &Inputs, name: &str) -> Result<ImageSpec> {
    let entries = vec![
        (
            OPERATOR_BIN.to_owned(),
            file(must_exist(&inputs.bin_dir.join("hostnic-operator"))?, 0o755),
        ),
        (
            CA_BUNDLE.to_owned(),
            file(must_exist(Path::new(CA_BUNDLE))?, 0o644),
        ),
        ("/tmp".to_owned(), Entry::Dir),
    ];
    ImageSpec {
        name: name.to_owned(),
        entries,
        entrypoint: vec![OPERATOR_BIN.to_owned()],
        user: Some(OPERATOR_USER.to_owned()),
        env: vec![PATH_ENV.to_owned(), format!("SSL_CERT_FILE={CA_BUNDLE}")],
    }
    .with_needed_libraries(&[])
}

/// The agent image: its binary, the CNI plugins, the installer script, `/bin/sh` (dash) and the
/// installer's tools, `/var/run` -> `/run` (the agent opens `/var/run/netns/...` paths the
/// runtime passes), and the libraries; runs as root.
pub fn agent(inputs: &Inputs, name: &str) -> Result<ImageSpec> {
    let plugin = |p: &str| format!("{PLUGIN_DIR}/{p}");
    let mut entries = vec![
        (
            AGENT_BIN.to_owned(),
            file(must_exist(&inputs.bin_dir.join("hostnic-agent"))?, 0o755),
        ),
        (plugin("hostnic"), file(must_exist(&inputs.plugin)?, 0o755)),
    ];
    for p in ["loopback", "portmap"] {
        entries.push((
            plugin(p),
            file(must_exist(&inputs.cni_plugins.join(p))?, 0o755),
        ));
    }
    entries.push((
        INSTALLER.to_owned(),
        file(
            must_exist(&inputs.repo_root.join("manifests/images/install-cni.sh"))?,
            0o755,
        ),
    ));
    // A merged-/usr layout as Debian's: /bin is /usr/bin.
    entries.push(("/bin".to_owned(), Entry::Symlink("usr/bin".into())));
    entries.push(("/usr/bin/dash".to_owned(), file(tool("dash")?, 0o755)));
    entries.push(("/usr/bin/sh".to_owned(), Entry::Symlink("dash".into())));
    for t in INSTALLER_TOOLS {
        entries.push((format!("/usr/bin/{t}"), file(tool(t)?, 0o755)));
    }
    entries.extend(iptables()?);
    entries.push(("/run".to_owned(), Entry::Dir));
    entries.push(("/var/run".to_owned(), Entry::Symlink("../run".into())));
    entries.push(("/tmp".to_owned(), Entry::Dir));
    ImageSpec {
        name: name.to_owned(),
        entries,
        entrypoint: vec![AGENT_BIN.to_owned()],
        user: None,
        env: vec![AGENT_PATH_ENV.to_owned()],
    }
    // loopback and portmap only run on the node, never in the image.
    .with_needed_libraries(&[&plugin("loopback"), &plugin("portmap")])
}

/// This machine's `iptables` (Debian package, nft backend) as the Dockerfile installs it: the
/// multi-call binary under its names, and every extension (listing a chain loads the
/// extension of each match in it, and kube-proxy's and other rules use many).
fn iptables() -> Result<Vec<(String, Entry)>> {
    let mut entries = vec![(
        XTABLES_MULTI.to_owned(),
        file(must_exist(Path::new(XTABLES_MULTI))?, 0o755),
    )];
    for name in IPTABLES_TOOLS {
        entries.push((
            format!("/usr/sbin/{name}"),
            Entry::Symlink("xtables-nft-multi".into()),
        ));
    }
    let dir = std::fs::read_dir(XTABLES_EXTENSIONS)
        .with_context(|| format!("{XTABLES_EXTENSIONS} (Debian package iptables)"))?;
    let mut extensions = Vec::new();
    for e in dir {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "so") {
            extensions.push(path);
        }
    }
    extensions.sort();
    entries.extend(
        extensions
            .into_iter()
            .map(|p| (p.display().to_string(), file(p, 0o644))),
    );
    Ok(entries)
}

/// A tool of this machine, from `/usr/bin` or `/bin`.
fn tool(name: &str) -> Result<PathBuf> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not in /usr/bin or /bin"))
}
