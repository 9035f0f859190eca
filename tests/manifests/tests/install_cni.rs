//! The agent's CNI installer, `manifests/images/install-cni.sh`, run for real against temporary
//! host directories: `plugins` installs `hostnic`, `loopback` and `portmap` atomically
//! (temporary file, then rename); `conflist` writes the conflist only once the agent answers
//! CNI STATUS "ready" through the real `hostnic` plugin, keeps it when the pod stops, and with
//! the uninstall flag removes it; the conflists it writes are ones libcni accepts.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hostnic_manifests_tests::status_agent::StatusAgent;
use hostnic_manifests_tests::{manifests_dir, render};
use hostnic_tests::bins::bin;
use hostnic_tests::cni_runtime::CniRuntime;
use serde_json::Value;

fn script() -> PathBuf {
    manifests_dir().join("images/install-cni.sh")
}

fn conflist_source() -> PathBuf {
    manifests_dir().join("cni/10-hostnic.conflist")
}

fn portmap_conflist_source() -> PathBuf {
    manifests_dir().join("components/portmap/10-hostnic.conflist")
}

/// The reference plugins the image carries come from Debian's containernetworking-plugins.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A node's CNI directories and the image's plugin directory, under one temp dir.
struct Host {
    dir: tempfile::TempDir,
    image_plugins: PathBuf,
    bin_dir: PathBuf,
    conf_dir: PathBuf,
}

impl Host {
    /// The image's plugin directory holds what the agent image ships.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image_plugins = dir.path().join("image/opt/hostnic/bin");
        fs::create_dir_all(&image_plugins).unwrap();
        fs::copy(bin("hostnic"), image_plugins.join("hostnic")).unwrap();
        for p in ["loopback", "portmap"] {
            fs::copy(Path::new(REFERENCE_PLUGINS).join(p), image_plugins.join(p)).unwrap();
        }
        let bin_dir = dir.path().join("opt/cni/bin");
        let conf_dir = dir.path().join("etc/cni/net.d");
        Self {
            dir,
            image_plugins,
            bin_dir,
            conf_dir,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("hostnic.sock")
    }

    fn command(&self, mode: &str, conflist: &Path) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg(script())
            .arg(mode)
            .env("HOSTNIC_PLUGIN_DIR", &self.image_plugins)
            .env("HOSTNIC_CONFLIST", conflist)
            .env("HOSTNIC_SOCKET", self.socket())
            // A tenth of the production poll interval (2 s), so a test waits less.
            .env("HOSTNIC_STATUS_POLL", "0.2")
            .env("CNI_BIN_DIR", &self.bin_dir)
            .env("CNI_CONF_DIR", &self.conf_dir);
        cmd
    }

    fn plugins(&self) -> Output {
        self.command("plugins", &conflist_source())
            .output()
            .expect("run install-cni.sh plugins")
    }

    /// Starts `conflist` mode; it runs until stopped.
    fn conflist(&self, conflist: &Path, uninstall: bool) -> Running {
        let child = self
            .command("conflist", conflist)
            .env(
                "HOSTNIC_CNI_UNINSTALL",
                if uninstall { "true" } else { "false" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run install-cni.sh conflist");
        Running(child)
    }

    fn installed_conflist(&self) -> PathBuf {
        self.conf_dir.join("10-hostnic.conflist")
    }

    fn entries(&self) -> Vec<String> {
        let mut names = Vec::new();
        for dir in [&self.bin_dir, &self.conf_dir] {
            for e in fs::read_dir(dir).into_iter().flatten() {
                names.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    }
}

/// The installer in `conflist` mode; killed on drop if the test did not stop it.
struct Running(Child);

impl Running {
    /// SIGTERM, as the kubelet stops a container; returns the exit status and stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.0.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plugins_installs_hostnic_loopback_and_portmap_and_no_conflist() {
    let host = Host::new();
    ok(&host.plugins());
    for p in ["hostnic", "loopback", "portmap"] {
        let installed = host.bin_dir.join(p);
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(host.image_plugins.join(p)).unwrap(),
            "{p}"
        );
        assert_eq!(mode(&installed), 0o755);
    }
    // No conflist before the agent is ready, no temporary files left behind.
    assert_eq!(host.entries(), vec!["hostnic", "loopback", "portmap"]);
}

#[test]
fn plugins_replaces_hostnic_by_rename_and_keeps_the_nodes_own_reference_plugins() {
    let host = Host::new();
    fs::create_dir_all(&host.bin_dir).unwrap();
    let old_bin = host.bin_dir.join("hostnic");
    fs::write(&old_bin, "old plugin").unwrap();
    fs::write(host.bin_dir.join("loopback"), "the node's loopback").unwrap();
    let inode = fs::metadata(&old_bin).unwrap().ino();
    // A running plugin holds the old binary open.
    let mut held = fs::File::open(&old_bin).unwrap();

    ok(&host.plugins());

    // A new inode in place, and the open handle still sees the complete old content: the
    // file was renamed over, not truncated and rewritten.
    assert_ne!(fs::metadata(&old_bin).unwrap().ino(), inode);
    let mut old = String::new();
    held.read_to_string(&mut old).unwrap();
    assert_eq!(old, "old plugin");
    assert_eq!(
        fs::read(&old_bin).unwrap(),
        fs::read(bin("hostnic")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(host.bin_dir.join("loopback")).unwrap(),
        "the node's loopback"
    );
    assert_eq!(host.entries(), vec!["hostnic", "loopback", "portmap"]);
}

#[test]
fn a_missing_plugin_fails_and_installs_nothing() {
    let host = Host::new();
    fs::remove_file(host.image_plugins.join("hostnic")).unwrap();
    let out = host.plugins();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hostnic is missing"));
    assert!(!host.bin_dir.exists() && !host.conf_dir.exists());
}

#[test]
fn the_conflist_is_written_only_once_the_agent_answers_status_ready_and_survives_a_restart() {
    let host = Host::new();
    ok(&host.plugins());
    // The agent is not even running yet.
    let running = host.conflist(&conflist_source(), false);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!host.installed_conflist().exists());

    // Running but not synced: asked several times, the answer stays "not ready".
    let agent = StatusAgent::start(&host.socket()).unwrap();
    wait_until("three STATUS questions", || agent.asked() >= 3);
    assert!(
        !host.installed_conflist().exists(),
        "conflist written while the agent says not ready"
    );

    agent.ready.store(true, Ordering::SeqCst);
    wait_until("the conflist", || host.installed_conflist().exists());
    assert_eq!(
        fs::read(host.installed_conflist()).unwrap(),
        fs::read(conflist_source()).unwrap()
    );
    assert_eq!(mode(&host.installed_conflist()), 0o644);
    let asked = agent.asked();

    // Stopped as a rolling update stops it: exits at once, and the conflist stays so the pods
    // that run keep a network config for their DEL.
    let (status, stderr) = running.stop();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains("waiting for the agent to be ready"),
        "{stderr}"
    );
    assert!(host.installed_conflist().exists());
    assert_eq!(agent.asked(), asked, "it kept asking after it installed");
    assert_eq!(
        host.entries(),
        vec!["10-hostnic.conflist", "hostnic", "loopback", "portmap"]
    );
}

#[test]
fn uninstall_removes_the_conflist_and_the_plugin_and_nothing_else() {
    let host = Host::new();
    ok(&host.plugins());
    fs::create_dir_all(&host.conf_dir).unwrap();
    fs::copy(conflist_source(), host.installed_conflist()).unwrap();
    fs::write(host.conf_dir.join("20-other.conflist"), "{}").unwrap();

    // The agent still runs (it serves the DELs of pods that remain), ready or not.
    let _agent = StatusAgent::start(&host.socket()).unwrap();
    let running = host.conflist(&conflist_source(), true);
    wait_until("the conflist to go", || !host.installed_conflist().exists());
    wait_until("the plugin to go", || {
        !host.bin_dir.join("hostnic").exists()
    });
    // It keeps running, so the DaemonSet rollout that sets the flag completes.
    std::thread::sleep(Duration::from_millis(300));
    let (status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        host.entries(),
        vec!["20-other.conflist", "loopback", "portmap"]
    );
}

#[test]
fn warns_about_a_config_file_that_would_shadow_hostnic() {
    let host = Host::new();
    ok(&host.plugins());
    fs::create_dir_all(&host.conf_dir).unwrap();
    fs::write(host.conf_dir.join("05-other.conflist"), "{}").unwrap();
    fs::write(host.conf_dir.join("99-late.conf"), "{}").unwrap();
    let agent = StatusAgent::start(&host.socket()).unwrap();
    agent.ready.store(true, Ordering::SeqCst);
    let running = host.conflist(&conflist_source(), false);
    wait_until("the conflist", || host.installed_conflist().exists());
    let (_, stderr) = running.stop();
    assert!(
        stderr.contains("05-other.conflist sorts before"),
        "{stderr}"
    );
    assert!(!stderr.contains("99-late.conf"), "{stderr}");
}

/// Installs with both conflists the manifests offer and has libcni (the library container
/// runtimes use) load each from the node's directories: it finds every plugin type only in the
/// installed bin dir, asks each for VERSION, checks the conflist's cniVersion against them and
/// validates the config.
#[test]
fn the_installed_conflists_pass_libcni_validation_with_the_installed_plugins() {
    let cases = [
        (conflist_source(), vec!["io.kubernetes.cri.pod-annotations"]),
        (
            portmap_conflist_source(),
            vec!["io.kubernetes.cri.pod-annotations", "portMappings"],
        ),
    ];
    for (source, want) in cases {
        let host = Host::new();
        ok(&host.plugins());
        let agent = StatusAgent::start(&host.socket()).unwrap();
        agent.ready.store(true, Ordering::SeqCst);
        let running = host.conflist(&source, false);
        wait_until("the conflist", || host.installed_conflist().exists());
        running.stop();

        let cache = tempfile::tempdir().unwrap();
        let mut capabilities = CniRuntime::new([&host.bin_dir], cache.path())
            .validate(&host.installed_conflist())
            .unwrap_or_else(|e| panic!("libcni rejects {}: {e}", source.display()));
        capabilities.sort();
        assert_eq!(capabilities, want, "{}", source.display());
    }
}

/// What a runtime's libcni makes of a conflist's versions: libcni 1.2 and later take the
/// highest of `cniVersions` and `cniVersion` that they implement (up to 1.1.0); older ones
/// read only `cniVersion` (libcni `ConfListFromBytes`).
fn version_chosen(conflist: &Value, libcni_knows_cni_versions: bool) -> String {
    let mut versions: Vec<&str> = vec![conflist["cniVersion"].as_str().unwrap_or_default()];
    if libcni_knows_cni_versions {
        let listed = conflist["cniVersions"].as_array().into_iter().flatten();
        versions.extend(listed.filter_map(Value::as_str));
    }
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap_or(0)).collect() };
    versions
        .into_iter()
        .filter(|v| parse(v) <= parse("1.1.0"))
        .max_by_key(|v| parse(v))
        .unwrap_or_default()
        .to_string()
}

/// Runtimes send STATUS and GC only for a conflist of CNI 1.1.0 or later, and libcni 1.1
/// (containerd 1.6 and 1.7) cannot read a 1.1.0 result. Each shipped conflist therefore says
/// 1.0.0 to old runtimes and offers 1.1.0 to new ones, and the plugin speaks both. With only
/// `"cniVersion": "1.0.0"`, no runtime ever sent hostnic a STATUS or a GC.
#[test]
fn the_conflists_offer_cni_1_1_0_to_runtimes_that_speak_it_and_1_0_0_to_older_ones() {
    let out = Command::new(bin("hostnic"))
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut stdin) = c.stdin.take() {
                std::io::Write::write_all(&mut stdin, br#"{"cniVersion":"1.1.0"}"#)?;
            }
            c.wait_with_output()
        })
        .unwrap();
    let version: Value = serde_json::from_slice(&out.stdout).unwrap();
    let supported: Vec<&str> = version["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for source in [conflist_source(), portmap_conflist_source()] {
        let conflist: Value = serde_json::from_slice(&fs::read(&source).unwrap()).unwrap();
        let old = version_chosen(&conflist, false);
        let new = version_chosen(&conflist, true);
        assert_eq!(old, "1.0.0", "{}: libcni 1.1 reads", source.display());
        assert_eq!(new, "1.1.0", "{}: libcni 1.2 reads", source.display());
        for v in [old, new] {
            assert!(supported.contains(&v.as_str()), "{v} not in {supported:?}");
        }
    }
}

/// The portmap variant is the default conflist with portmap chained after it, so the two cannot
/// drift apart; the DaemonSet's ConfigMap carries the default, the component the variant.
#[test]
fn the_portmap_component_chains_portmap_after_the_default_conflist() {
    let read = |p: PathBuf| -> Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let (default, portmap) = (read(conflist_source()), read(portmap_conflist_source()));
    let mut want = default.clone();
    want["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    assert_eq!(portmap, want);

    let configmap = |objs: &[Value]| -> String {
        objs.iter()
            .find(|o| o["kind"] == "ConfigMap")
            .expect("the conflist ConfigMap")["data"]["10-hostnic.conflist"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let base = render::kustomize(&manifests_dir()).unwrap();
    assert_eq!(
        configmap(&base).as_bytes(),
        fs::read(conflist_source()).unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let with_portmap =
        render::kustomize_with_components(dir.path(), &manifests_dir(), &["components/portmap"])
            .unwrap();
    assert_eq!(
        configmap(&with_portmap).as_bytes(),
        fs::read(portmap_conflist_source()).unwrap()
    );
}
