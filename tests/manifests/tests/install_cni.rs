//! The agent's init container: `manifests/images/install-cni.sh` installs the `hostnic` plugin
//! and the conflist atomically (temporary file, then rename), and the conflist it writes is one
//! libcni (the library container runtimes use) accepts, naming the binary it installed.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hostnic_manifests_tests::manifests_dir;
use hostnic_tests::bins::bin;
use hostnic_tests::cni_runtime::CniRuntime;
use serde_json::Value;

fn script() -> PathBuf {
    manifests_dir().join("images/install-cni.sh")
}

fn conflist_source() -> PathBuf {
    manifests_dir().join("cni/10-hostnic.conflist")
}

struct Host {
    _dir: tempfile::TempDir,
    bin_dir: PathBuf,
    conf_dir: PathBuf,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join("opt/cni/bin");
        let conf_dir = dir.path().join("etc/cni/net.d");
        Self {
            _dir: dir,
            bin_dir,
            conf_dir,
        }
    }

    fn install(&self, plugin: &Path, conflist: &Path) -> Output {
        Command::new("sh")
            .arg(script())
            .env("HOSTNIC_PLUGIN", plugin)
            .env("HOSTNIC_CONFLIST", conflist)
            .env("CNI_BIN_DIR", &self.bin_dir)
            .env("CNI_CONF_DIR", &self.conf_dir)
            .output()
            .expect("run install-cni.sh")
    }

    fn entries(&self) -> Vec<String> {
        let mut names = Vec::new();
        for dir in [&self.bin_dir, &self.conf_dir] {
            for e in fs::read_dir(dir).unwrap() {
                names.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn installs_the_plugin_and_conflist_into_fresh_host_dirs() {
    let host = Host::new();
    let plugin = bin("hostnic");
    let out = host.install(&plugin, &conflist_source());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let installed = host.bin_dir.join("hostnic");
    let conf = host.conf_dir.join("10-hostnic.conflist");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&plugin).unwrap());
    assert_eq!(
        fs::read(&conf).unwrap(),
        fs::read(conflist_source()).unwrap()
    );
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(mode(&conf), 0o644);
    // No temporary files left behind.
    assert_eq!(host.entries(), vec!["10-hostnic.conflist", "hostnic"]);
}

#[test]
fn replaces_old_files_by_rename_never_in_place() {
    let host = Host::new();
    fs::create_dir_all(&host.bin_dir).unwrap();
    fs::create_dir_all(&host.conf_dir).unwrap();
    let old_bin = host.bin_dir.join("hostnic");
    let old_conf = host.conf_dir.join("10-hostnic.conflist");
    fs::write(&old_bin, "old plugin").unwrap();
    fs::write(&old_conf, "old conflist").unwrap();
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    let (bin_inode, conf_inode) = (inode(&old_bin), inode(&old_conf));
    // A reader (a runtime loading the config, a running plugin) holds the old files open.
    let mut held_bin = fs::File::open(&old_bin).unwrap();
    let mut held_conf = fs::File::open(&old_conf).unwrap();

    let out = host.install(&bin("hostnic"), &conflist_source());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // New inodes in place, and the open handles still see the complete old content: the
    // files were renamed over, not truncated and rewritten.
    assert_ne!(inode(&old_bin), bin_inode);
    assert_ne!(inode(&old_conf), conf_inode);
    let (mut b, mut c) = (String::new(), String::new());
    held_bin.read_to_string(&mut b).unwrap();
    held_conf.read_to_string(&mut c).unwrap();
    assert_eq!((b.as_str(), c.as_str()), ("old plugin", "old conflist"));
    assert_eq!(host.entries(), vec!["10-hostnic.conflist", "hostnic"]);
}

#[test]
fn warns_about_a_config_file_that_would_shadow_hostnic() {
    let host = Host::new();
    fs::create_dir_all(&host.conf_dir).unwrap();
    fs::write(host.conf_dir.join("05-other.conflist"), "{}").unwrap();
    fs::write(host.conf_dir.join("99-late.conf"), "{}").unwrap();
    let out = host.install(&bin("hostnic"), &conflist_source());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("05-other.conflist sorts before"),
        "{stderr}"
    );
    assert!(!stderr.contains("99-late.conf"), "{stderr}");
}

#[test]
fn a_missing_source_fails_and_installs_nothing() {
    let host = Host::new();
    let out = host.install(Path::new("/nonexistent/hostnic"), &conflist_source());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hostnic is missing"));
    assert!(!host.bin_dir.exists() && !host.conf_dir.exists());
}

#[test]
fn the_installed_conflist_passes_libcni_validation_and_names_the_installed_binary() {
    let host = Host::new();
    let out = host.install(&bin("hostnic"), &conflist_source());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = host.conf_dir.join("10-hostnic.conflist");

    let conflist: Value = serde_json::from_slice(&fs::read(&conf).unwrap()).unwrap();
    let plugins = conflist["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0]["type"], "hostnic");
    assert!(host.bin_dir.join("hostnic").is_file());

    // libcni finds the plugin only in the installed dir, asks it for VERSION, checks the
    // conflist's cniVersion against it and validates the config.
    let cache = tempfile::tempdir().unwrap();
    let capabilities = CniRuntime::new([&host.bin_dir], cache.path())
        .validate(&conf)
        .unwrap_or_else(|e| panic!("libcni rejects the installed conflist: {e}"));
    assert_eq!(capabilities, vec!["io.kubernetes.cri.pod-annotations"]);

    // And the DaemonSet's ConfigMap carries exactly this file.
    let objs = hostnic_manifests_tests::render::kustomize(&manifests_dir()).unwrap();
    let cm = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the conflist ConfigMap");
    assert_eq!(
        cm["data"]["10-hostnic.conflist"]
            .as_str()
            .unwrap()
            .as_bytes(),
        fs::read(conflist_source()).unwrap()
    );
}
