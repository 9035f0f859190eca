//! A real CNI runtime for tests: `tests/cni-runtime/main.go`, a small program on libcni (the
//! library containerd and CRI-O use), built once from Debian's Go packages into the target dir.
//! Driving the plugin through it checks what a hand-rolled harness would not: libcni's result
//! parsing and caching, prevResult hand-over to chained plugins, DEL order, VERSION probing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;
use std::{fmt, fs};

use serde_json::Value;

/// Where Debian's containernetworking-plugins put the reference plugins (bridge, portmap...).
pub const DEBIAN_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Where Debian's golang-github-appc-cni-dev puts libcni's source (a GOPATH).
const GOPATH: &str = "/usr/share/gocode";

/// Path of the built driver. Builds it on first use in this process (about 2 s), reusing a
/// binary newer than its source; panics with the install command when Go or libcni is missing.
pub fn driver() -> PathBuf {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER.get_or_init(build).clone()
}

/// The driver's source directory.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cni-runtime")
}

fn build() -> PathBuf {
    let src = source_dir();
    let out_dir = crate::bins::target_dir().join("cni-runtime");
    let bin = out_dir.join("cni-runtime");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let src_time = modified(&src.join("main.go")).unwrap_or(SystemTime::now());
    if modified(&bin).is_some_and(|t| t > src_time) {
        return bin;
    }
    fs::create_dir_all(&out_dir).expect("create the driver's output dir");
    // Concurrent test processes each build to their own file and rename: the rename is atomic.
    let tmp = out_dir.join(format!("cni-runtime.{}.tmp", std::process::id()));
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", out_dir.join("go-cache"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `go` ({e}): apt-get install -y --no-install-recommends golang-go \
                 golang-github-appc-cni-dev golang-github-containerd-go-cni-dev \
                 containernetworking-plugins"
            )
        });
    assert!(
        out.status.success(),
        "building {} failed (are golang-github-appc-cni-dev and golang-go installed?): {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(&tmp, &bin).expect("move the built driver into place");
    bin
}

/// A libcni runtime configuration: plugin dirs, result cache, CNI_ARGS, capability args, and
/// optionally a netns to run in (plugins such as bridge create devices in the caller's netns,
/// so run those inside a test-made netns).
#[derive(Clone, Debug)]
pub struct CniRuntime {
    plugin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    netns: Option<String>,
    cni_args: String,
    capability_args: Option<Value>,
}

/// A failed driver run.
#[derive(Clone, Debug)]
pub struct CniFailure {
    /// The driver's exit code.
    pub exit_code: i32,
    /// The plugin's CNI error (`code`, `msg`, `details`), when a plugin failed.
    pub cni_error: Option<Value>,
    /// What the driver printed on stderr.
    pub stderr: String,
}

impl CniFailure {
    /// The plugin's CNI error code, when a plugin failed.
    pub fn code(&self) -> Option<u64> {
        self.cni_error.as_ref().and_then(|e| e["code"].as_u64())
    }
}

impl fmt::Display for CniFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cni-runtime exited {}: {}",
            self.exit_code,
            self.stderr.trim()
        )
    }
}

impl std::error::Error for CniFailure {}

/// Timings of one phase, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// What `bench` measured for one conflist.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// The conflist's network name.
    pub network: String,
    /// ADD+DEL cycles run.
    pub iterations: u64,
    /// ADD alone.
    pub add: Timing,
    /// DEL alone.
    pub del: Timing,
    /// ADD then DEL.
    pub add_del: Timing,
}

impl CniRuntime {
    /// A runtime finding plugins in `plugin_dirs` and caching results in `cache_dir` (use a
    /// per-test directory: CHECK and DEL read what ADD cached there).
    pub fn new(
        plugin_dirs: impl IntoIterator<Item = impl Into<PathBuf>>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            plugin_dirs: plugin_dirs.into_iter().map(Into::into).collect(),
            cache_dir: cache_dir.into(),
            netns: None,
            cni_args: String::new(),
            capability_args: None,
        }
    }

    /// Runs the driver inside the named netns (`ip netns exec`).
    pub fn in_netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_owned());
        self
    }

    /// CNI_ARGS, e.g. `K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p`.
    pub fn cni_args(mut self, args: &str) -> Self {
        self.cni_args = args.to_owned();
        self
    }

    /// Capability args (a JSON object), passed to plugins that declare the capability.
    pub fn capability_args(mut self, args: Value) -> Self {
        self.capability_args = Some(args);
        self
    }

    /// `AddNetworkList`: the result JSON.
    pub fn add(
        &self,
        conflist: &Path,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<Value, CniFailure> {
        let out = self.run(&self.attachment_args("add", conflist, container_id, netns, ifname))?;
        Ok(serde_json::from_str(&out).expect("cni-runtime add prints the result JSON"))
    }

    /// `CheckNetworkList` (uses the result ADD cached).
    pub fn check(
        &self,
        conflist: &Path,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<(), CniFailure> {
        self.run(&self.attachment_args("check", conflist, container_id, netns, ifname))
            .map(drop)
    }

    /// `DelNetworkList`; `netns` may be empty (as containerd's second DEL).
    pub fn del(
        &self,
        conflist: &Path,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<(), CniFailure> {
        self.run(&self.attachment_args("del", conflist, container_id, netns, ifname))
            .map(drop)
    }

    /// `ValidateNetworkList`: the capabilities the conflist declares.
    pub fn validate(&self, conflist: &Path) -> Result<Vec<String>, CniFailure> {
        let out = self.run(&["validate".to_owned(), path_str(conflist)])?;
        let v: Value = serde_json::from_str(&out).expect("cni-runtime validate prints JSON");
        Ok(v["capabilities"]
            .as_array()
            .map(|caps| {
                caps.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `iterations` ADD+DEL cycles per conflist (taking turns), each with a fresh container id
    /// and, as a runtime gives every sandbox, a fresh netns: a sibling of `netns` (named after
    /// it), made before the ADD and deleted after the DEL, untimed.
    pub fn bench(
        &self,
        iterations: u32,
        netns: &Path,
        ifname: &str,
        conflists: &[&Path],
    ) -> Result<Vec<BenchResult>, CniFailure> {
        let mut args = vec![
            "bench".to_owned(),
            "-n".to_owned(),
            iterations.to_string(),
            "-fresh".to_owned(),
            path_str(netns),
            ifname.to_owned(),
        ];
        args.extend(conflists.iter().map(|p| path_str(p)));
        let out = self.run(&args)?;
        Ok(out
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("cni-runtime bench prints JSON");
                let timing = |k: &str| Timing {
                    p50_ms: v[k]["p50_ms"].as_f64().unwrap_or_default(),
                    p99_ms: v[k]["p99_ms"].as_f64().unwrap_or_default(),
                    mean_ms: v[k]["mean_ms"].as_f64().unwrap_or_default(),
                };
                BenchResult {
                    network: v["network"].as_str().unwrap_or_default().to_owned(),
                    iterations: v["iterations"].as_u64().unwrap_or_default(),
                    add: timing("add"),
                    del: timing("del"),
                    add_del: timing("add_del"),
                }
            })
            .collect())
    }

    fn attachment_args(
        &self,
        verb: &str,
        conflist: &Path,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Vec<String> {
        vec![
            verb.to_owned(),
            path_str(conflist),
            container_id.to_owned(),
            path_str(netns),
            ifname.to_owned(),
        ]
    }

    /// Runs the driver with the runtime's flags; stdout on success.
    fn run(&self, args: &[String]) -> Result<String, CniFailure> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(driver());
                c
            }
            None => Command::new(driver()),
        };
        let path = std::env::join_paths(&self.plugin_dirs).expect("plugin dirs without ':'");
        cmd.arg("-path")
            .arg(path)
            .arg("-cache-dir")
            .arg(&self.cache_dir)
            .arg("-args")
            .arg(&self.cni_args);
        if let Some(caps) = &self.capability_args {
            cmd.arg("-cap").arg(caps.to_string());
        }
        let out: Output = cmd.args(args).output().expect("run cni-runtime");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(CniFailure {
                exit_code: out.status.code().unwrap_or(-1),
                cni_error: serde_json::from_str(stdout.trim()).ok(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_validates_a_debian_plugin_conflist() {
        let dir = std::env::temp_dir().join(format!("hn-cni-runtime-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let conflist = dir.join("lo.conflist");
        fs::write(
            &conflist,
            r#"{"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"},
                {"type": "portmap", "capabilities": {"portMappings": true}}]}"#,
        )
        .unwrap();
        let rt = CniRuntime::new([DEBIAN_PLUGIN_DIR], dir.join("cache"));
        let caps = rt.validate(&conflist);
        let missing = rt.validate(&dir.join("none.conflist"));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(caps.unwrap(), vec!["portMappings".to_owned()]);
        let err = missing.unwrap_err();
        assert_eq!(err.exit_code, 1);
        assert!(err.stderr.contains("none.conflist"), "{err}");
    }
}
