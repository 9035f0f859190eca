//! The system tests' handle on the libcni driver (`tests/cni-runtime`, a Go program on the
//! library container runtimes use): build it once, then ADD, DEL and bench through its command
//! line, optionally from inside a netns (the bridge baseline must not touch the host's).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// One libcni call's parameters.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The conflist file.
    pub conflist: PathBuf,
    /// CNI_NETNS (empty for a DEL after the netns is gone).
    pub netns: PathBuf,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_ARGS pairs.
    pub cni_args: Vec<(String, String)>,
    /// Plugin directories (CNI_PATH).
    pub plugin_dirs: Vec<PathBuf>,
    /// libcni's result cache (shared by ADD and DEL of one container).
    pub cache_dir: PathBuf,
}

/// Timings of one conflist from the driver's bench mode, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Stats {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// One conflist's bench result.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BenchResult {
    /// Network name of the conflist.
    pub network: String,
    /// Iterations.
    pub iterations: usize,
    /// ADD alone.
    pub add: Stats,
    /// DEL alone.
    pub del: Stats,
    /// ADD then DEL.
    pub add_del: Stats,
}

/// The built driver.
#[derive(Debug, Clone)]
pub struct Driver {
    path: PathBuf,
}

impl Driver {
    /// Builds the driver from Debian's libcni sources (once per process; ~2 s).
    pub fn get() -> Result<Self> {
        static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let built = BUILT.get_or_init(|| build().map_err(|e| format!("{e:#}")));
        match built {
            Ok(path) => Ok(Self { path: path.clone() }),
            Err(e) => bail!("{e}"),
        }
    }

    fn command(&self, inv: &Invocation, in_netns: Option<&Path>) -> Command {
        let mut cmd = match in_netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(&self.path);
                c
            }
            None => Command::new(&self.path),
        };
        let path = std::env::join_paths(&inv.plugin_dirs).unwrap_or_default();
        let args: Vec<String> = inv
            .cni_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        cmd.arg("-path")
            .arg(path)
            .arg("-cache-dir")
            .arg(&inv.cache_dir)
            .arg("-args")
            .arg(args.join(";"));
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<String> {
        let out = cmd
            .output()
            .with_context(|| format!("run cni-runtime {what}"))?;
        if !out.status.success() {
            bail!(
                "libcni {what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn verb(&self, verb: &str, inv: &Invocation) -> Command {
        let mut cmd = self.command(inv, None);
        cmd.arg(verb)
            .arg(&inv.conflist)
            .arg(&inv.container_id)
            .arg(&inv.netns)
            .arg(&inv.ifname);
        cmd
    }

    /// AddNetworkList: returns the CNI result.
    pub fn add(&self, inv: &Invocation) -> Result<serde_json::Value> {
        let out = self.run(self.verb("add", inv), "ADD")?;
        serde_json::from_str(&out).context("CNI result is not JSON")
    }

    /// DelNetworkList.
    pub fn del(&self, inv: &Invocation) -> Result<()> {
        self.run(self.verb("del", inv), "DEL").map(drop)
    }

    /// Bench mode: `n` ADD+DEL cycles of each conflist, taking turns, from inside `in_netns`.
    /// `inv` gives the netns, ifname, args and plugin dirs; `conflists` the networks.
    pub fn bench(
        &self,
        inv: &Invocation,
        conflists: &[PathBuf],
        in_netns: Option<&Path>,
        n: usize,
    ) -> Result<Vec<BenchResult>> {
        let mut cmd = self.command(inv, in_netns);
        cmd.arg("bench")
            .arg("-n")
            .arg(n.to_string())
            .arg(&inv.netns)
            .arg(&inv.ifname)
            .args(conflists);
        let out = self.run(cmd, "bench")?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("bench line {l}")))
            .collect()
    }
}

fn build() -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("cni-runtime");
    let out_dir = crate::bins::target_dir().join("hostnic-e2e");
    std::fs::create_dir_all(&out_dir).context("create driver output dir")?;
    let out = out_dir.join("cni-runtime");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOPATH", "/usr/share/gocode")
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", out_dir.join("go-cache"))
        .output()
        .context("run go build (install golang-go and golang-github-appc-cni-dev)")?;
    if !status.status.success() {
        bail!(
            "building the libcni driver failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    Ok(out)
}
