//! No Docker engine runs here, so the Dockerfile is checked by reading it against the
//! workspace: the packages and profiles it builds exist, the binaries it copies are what those
//! packages produce, and the paths the manifests run (entrypoints, the CNI installer, the
//! plugin it installs, the non-root user) are what the images contain.

use std::collections::BTreeMap;
use std::process::Command;

use hostnic_manifests_tests::{manifests_dir, render, repo_root};
use serde_json::Value;

fn dockerfile() -> String {
    std::fs::read_to_string(manifests_dir().join("images/Dockerfile")).unwrap()
}

/// Instructions with line continuations joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// Stage name -> its instructions.
fn stages(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut stages = BTreeMap::new();
    let mut name = String::new();
    for ins in instructions(text) {
        if ins.starts_with("FROM ") {
            name = ins.split_whitespace().last().unwrap().to_owned();
        }
        stages
            .entry(name.clone())
            .or_insert_with(Vec::new)
            .push(ins);
    }
    stages
}

/// Workspace package -> its binary targets.
fn workspace_bins() -> BTreeMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success());
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), bins)
        })
        .collect()
}

fn words(ins: &str) -> Vec<&str> {
    ins.split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn the_builder_builds_existing_packages_with_existing_profiles() {
    let text = dockerfile();
    let stages = stages(&text);
    let builder = stages.get("builder").expect("a builder stage");
    let bins = workspace_bins();
    let cargo_toml = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let mut built = Vec::new();
    let commands = builder.iter().flat_map(|i| i.split(';'));
    for ins in commands.filter(|c| c.contains("cargo build")) {
        let w = words(ins);
        for (i, word) in w.iter().enumerate() {
            if *word == "-p" {
                let pkg = w[i + 1];
                assert!(
                    bins.contains_key(pkg),
                    "the Dockerfile builds unknown package {pkg}"
                );
                built.extend(bins[pkg].iter().cloned());
            }
            if *word == "--profile" {
                let profile = w[i + 1];
                assert!(
                    cargo_toml.contains(&format!("[profile.{profile}]")),
                    "profile {profile} is not in Cargo.toml"
                );
            }
        }
        assert!(w.contains(&"--locked"), "builds must use Cargo.lock: {ins}");
    }
    built.sort();
    assert_eq!(built, vec!["hostnic", "hostnic-agent", "hostnic-operator"]);
    // The plugin alone, small and static: its own invocation with the CNI profile.
    let plugin_build = builder
        .iter()
        .flat_map(|i| i.split(';'))
        .find(|c| c.contains("-p hostnic-cni"))
        .unwrap();
    assert!(plugin_build.contains("--profile release-cni") && plugin_build.contains("musl"));

    // The toolchain is at least the workspace's rust-version.
    let want: String = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let have = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .unwrap();
    let v = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        v(have) >= v(&want),
        "RUST_VERSION {have} < rust-version {want}"
    );
}

/// What each build stage leaves in /out: `cp SRC... /out/` keeps names, `cp SRC /out/NAME`
/// renames.
fn produced(stages: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (stage, ins) in stages {
        let files: &mut Vec<String> = out.entry(stage.clone()).or_default();
        for cp in ins.iter().flat_map(|i| i.split(';')) {
            let w = words(cp);
            if w.first() != Some(&"cp") {
                continue;
            }
            let dest = *w.last().unwrap();
            match dest.strip_prefix("/out/") {
                Some("") => files.extend(
                    w[1..w.len() - 1]
                        .iter()
                        .map(|src| src.rsplit('/').next().unwrap().trim_matches('"').to_owned()),
                ),
                Some(name) => files.push(name.to_owned()),
                None => {}
            }
        }
    }
    out
}

/// Stages that are images (they have an ENTRYPOINT), as opposed to build stages.
fn image_stages(stages: &BTreeMap<String, Vec<String>>) -> Vec<&String> {
    stages
        .iter()
        .filter(|(_, ins)| ins.iter().any(|i| i.starts_with("ENTRYPOINT ")))
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn every_copied_artifact_is_produced_and_every_entrypoint_exists() {
    let text = dockerfile();
    let stages = stages(&text);
    let produced = produced(&stages);
    let images = image_stages(&stages);
    assert_eq!(images, vec!["agent", "operator"]);
    for name in images {
        let ins = &stages[name];
        let mut files = Vec::new();
        for i in ins.iter().filter(|i| i.starts_with("COPY ")) {
            let w = words(i);
            let (src, dst) = (w[w.len() - 2], w[w.len() - 1]);
            match w.iter().find_map(|w| w.strip_prefix("--from=")) {
                Some(from) => {
                    let file = src.strip_prefix("/out/").unwrap();
                    assert!(
                        produced[from].iter().any(|p| p == file),
                        "{name}: copies {src}, which stage {from} does not produce ({produced:?})"
                    );
                }
                None => assert!(
                    repo_root().join(src).is_file(),
                    "{name}: copies missing {src}"
                ),
            }
            files.push(dst.to_owned());
        }
        let entrypoint = ins
            .iter()
            .find_map(|i| i.strip_prefix("ENTRYPOINT "))
            .unwrap();
        let entry: Vec<String> = serde_json::from_str(entrypoint).unwrap();
        assert!(
            files.contains(&entry[0]),
            "{name}: ENTRYPOINT {} is not copied in",
            entry[0]
        );
    }
}

#[test]
fn the_images_fit_what_the_manifests_run() {
    let text = dockerfile();
    let stages = stages(&text);
    let objs = render::kustomize(&manifests_dir()).unwrap();
    let workload =
        |kind: &str| &objs.iter().find(|o| o["kind"] == kind).unwrap()["spec"]["template"]["spec"];

    // Operator: the Deployment runs as uid 65532, and so does the image.
    let operator = &stages["operator"];
    assert!(operator.iter().any(|i| i == "USER 65532:65532"));
    assert_eq!(
        workload("Deployment")["securityContext"]["runAsUser"],
        65532
    );

    // Agent: the init container's command and the plugin the installer copies by default.
    let agent = stages["agent"].join("\n");
    let init = &workload("DaemonSet")["initContainers"][0];
    let command = init["command"][0].as_str().unwrap();
    assert!(
        agent.contains(&format!(" {command}")),
        "the agent image lacks {command}"
    );
    // Every plugin the installer installs, where it looks for them by default.
    let installer = std::fs::read_to_string(manifests_dir().join("images/install-cni.sh")).unwrap();
    let plugin_dir = installer
        .lines()
        .find_map(|l| l.strip_prefix("plugin_dir=${HOSTNIC_PLUGIN_DIR:-"))
        .unwrap()
        .trim_end_matches('}');
    for plugin in ["hostnic", "loopback", "portmap"] {
        assert!(
            agent.contains(&format!("/out/{plugin} {plugin_dir}/{plugin}")),
            "the agent image lacks {plugin_dir}/{plugin}"
        );
    }
    // The installer is a POSIX shell script: the agent's base image must have a shell.
    assert!(installer.starts_with("#!/bin/sh"));
    assert!(!stages["agent"][0].contains("distroless"));

    // kustomization `images:` names the two stages' images.
    let kustomization =
        std::fs::read_to_string(manifests_dir().join("kustomization.yaml")).unwrap();
    for image in ["hostnic-operator", "hostnic-agent"] {
        assert!(kustomization.contains(&format!("- name: {image}")));
    }
}

/// The offline builder (`hostnic-images`) and the Dockerfile make the same images: every file
/// a Dockerfile image stage copies is in the offline image at the same path, from a file of the
/// same name (the same repository file for files of the repository), with the same mode where
/// the Dockerfile sets one; the entrypoints and users are equal; and whatever else the offline
/// image carries is what the Dockerfile's base images provide (libraries, CA bundle, shell and
/// tools, `/tmp`, `/run`).
#[test]
fn the_offline_builder_makes_the_images_the_dockerfile_makes() {
    use hostnic_tests::bins::{bin, target_dir};
    use hostnic_tests::images;
    use hostnic_tests::oci::Entry;

    let text = dockerfile();
    let stages = stages(&text);
    let inputs = images::Inputs {
        repo_root: repo_root(),
        bin_dir: target_dir(),
        plugin: bin("hostnic"),
        cni_plugins: "/usr/lib/cni".into(),
    };
    let specs = [
        (
            "operator",
            images::operator(&inputs, "x/hostnic-operator:t").unwrap(),
        ),
        (
            "agent",
            images::agent(&inputs, "x/hostnic-agent:t").unwrap(),
        ),
    ];
    for (stage, spec) in specs {
        let ins = &stages[stage];
        let mut copied = Vec::new();
        for i in ins.iter().filter(|i| i.starts_with("COPY ")) {
            let w = words(i);
            let (src, dst) = (w[w.len() - 2], w[w.len() - 1]);
            copied.push(dst.to_owned());
            let entry = spec
                .entries
                .iter()
                .find(|(p, _)| p == dst)
                .map(|(_, e)| e)
                .unwrap_or_else(|| panic!("{stage}: the offline image lacks {dst}"));
            let Entry::File { source, mode } = entry else {
                panic!("{stage}: {dst} is not a file in the offline image");
            };
            let name = src.rsplit('/').next().unwrap();
            assert_eq!(
                source.file_name().unwrap().to_str().unwrap(),
                name,
                "{stage}: {dst} comes from another file"
            );
            if !i.contains("--from=") {
                assert_eq!(
                    source.canonicalize().unwrap(),
                    repo_root().join(src).canonicalize().unwrap()
                );
            }
            if let Some(m) = w.iter().find_map(|w| w.strip_prefix("--chmod=")) {
                assert_eq!(*mode, u32::from_str_radix(m, 8).unwrap(), "{stage}: {dst}");
            }
        }
        let entrypoint: Vec<String> = serde_json::from_str(
            ins.iter()
                .find_map(|i| i.strip_prefix("ENTRYPOINT "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(spec.entrypoint, entrypoint, "{stage}");
        let user = ins
            .iter()
            .find_map(|i| i.strip_prefix("USER "))
            .map(str::to_owned);
        assert_eq!(spec.user, user, "{stage}");
        let base_file = |p: &str| {
            [
                "/lib/",
                "/lib64/",
                "/usr/lib/",
                "/usr/bin/",
                "/etc/ssl/certs/",
            ]
            .iter()
            .any(|d| p.starts_with(d))
                || ["/tmp", "/run", "/var/run", "/bin"].contains(&p)
        };
        let installed = apt_installed(ins);
        for (path, _) in &spec.entries {
            assert!(
                copied.contains(path) || base_file(path) || installed_by(path, &installed),
                "{stage}: the offline image has {path}, which the Dockerfile image does not"
            );
        }
    }
}

/// The Debian packages a stage's `RUN` instructions `apt-get install`.
fn apt_installed(ins: &[String]) -> Vec<String> {
    ins.iter()
        .filter(|i| i.starts_with("RUN "))
        .flat_map(|i| i.split(';'))
        .filter_map(|c| c.trim().strip_prefix("apt-get install"))
        .flat_map(|args| words(args).into_iter().filter(|w| !w.starts_with('-')))
        .map(str::to_owned)
        .collect()
}

/// Whether `path` of this machine (through its symlinks, e.g. Debian's alternatives) belongs
/// to one of `packages`, as `dpkg -S` tells.
fn installed_by(path: &str, packages: &[String]) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let out = std::process::Command::new("dpkg")
        .arg("-S")
        .arg(&real)
        .output()
        .expect("run dpkg -S");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .any(|(pkgs, _)| {
            pkgs.split(", ").any(|p| {
                packages
                    .iter()
                    .any(|want| want == p.split(':').next().unwrap_or(p))
            })
        })
}
