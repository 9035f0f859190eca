//! OCI image archives assembled offline from files of this machine: no base image, no
//! registry. A rootfs is laid out in a directory (files, symlinks, directories and the ELF
//! libraries the binaries need, found with `ldd`), packed as one reproducible layer and written
//! as an OCI image layout tarball that `ctr images import`, `docker load` and `podman load` read.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// What one path in the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A copy of a file of this machine, with this mode.
    File {
        /// The file copied.
        source: PathBuf,
        /// Its permission bits in the image.
        mode: u32,
    },
    /// A symbolic link to this target.
    Symlink(String),
    /// An empty directory (0755).
    Dir,
}

/// An image to build: its name, its paths and its config.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Full reference, e.g. `ghcr.io/yunify/hostnic-agent:v0.1.0`.
    pub name: String,
    /// (absolute path in the image, what it is), in creation order.
    pub entries: Vec<(String, Entry)>,
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// USER, if not root.
    pub user: Option<String>,
    /// Environment, `NAME=value`.
    pub env: Vec<String>,
}

impl ImageSpec {
    /// Adds, at the same path, every shared library the ELF files among the entries load
    /// (their NEEDED entries and the program interpreter, resolved by `ldd` on this machine),
    /// except those of `host_only` paths: binaries that never run inside the image.
    pub fn with_needed_libraries(mut self, host_only: &[&str]) -> Result<Self> {
        let mut libs = BTreeSet::new();
        for (path, entry) in &self.entries {
            if let Entry::File { source, .. } = entry
                && !host_only.contains(&path.as_str())
                && is_elf(source)?
            {
                libs.extend(needed_libraries(source)?);
            }
        }
        let present: BTreeSet<String> = self.entries.iter().map(|(p, _)| p.clone()).collect();
        for lib in libs {
            let path = lib.display().to_string();
            if !present.contains(&path) {
                self.entries.push((
                    path,
                    Entry::File {
                        source: lib,
                        mode: 0o755,
                    },
                ));
            }
        }
        Ok(self)
    }
}

fn is_elf(path: &Path) -> Result<bool> {
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok(bytes.starts_with(b"\x7fELF"))
}

/// The libraries `binary` loads, as `ldd` resolves them here; none for a static binary.
pub fn needed_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd (Debian package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd exits 1 for static executables ("not a dynamic executable").
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {err}", binary.display());
    }
    parse_ldd(&text)
}

/// The library paths in `ldd` output: `name => /path (addr)` and the interpreter's
/// `/path (addr)`; the vDSO has no file. A library ldd cannot find is an error.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("ldd: {} not found", name.trim());
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Builds `spec` under `work` and writes its OCI archive to `archive`; returns the manifest
/// digest.
pub fn write_archive(spec: &ImageSpec, work: &Path, archive: &Path) -> Result<String> {
    let rootfs = work.join("rootfs");
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    for d in [&rootfs, &blobs] {
        fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    // The image's root directory gets this mode (a temp dir is 0700: uid 65532 could not
    // even reach its entrypoint).
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)).context("chmod rootfs")?;
    for (path, entry) in &spec.entries {
        let rel = path
            .strip_prefix('/')
            .with_context(|| format!("{path} is not absolute"))?;
        let dest = rootfs.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        match entry {
            Entry::File { source, mode } => {
                fs::copy(source, &dest)
                    .with_context(|| format!("copy {} to {path}", source.display()))?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))
                    .with_context(|| format!("chmod {path}"))?;
            }
            Entry::Symlink(target) => std::os::unix::fs::symlink(target, &dest)
                .with_context(|| format!("symlink {path}"))?,
            Entry::Dir => fs::create_dir_all(&dest).with_context(|| format!("create {path}"))?,
        }
    }
    let layer_tar = work.join("layer.tar");
    // One layer.
    reproducible_tar(&rootfs, &layer_tar, &["."])?;
    let layer = fs::read(&layer_tar).context("read layer")?;
    let layer_digest = put_blob(&blobs, &layer)?;
    let mut config = serde_json::json!({
        "Entrypoint": spec.entrypoint,
        "Env": spec.env,
    });
    if let Some(user) = &spec.user {
        config["User"] = serde_json::json!(user);
    }
    let config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [&layer_digest]},
    })
    .to_string();
    let config_digest = put_blob(&blobs, config.as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": &layer_digest,
            "size": layer.len(),
        }],
    })
    .to_string();
    let manifest_digest = put_blob(&blobs, manifest.as_bytes())?;
    let tag = spec.name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": &manifest_digest,
            "size": manifest.len(),
            // ctr names the image after the first, docker and podman after the second.
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    fs::write(layout.join("index.json"), index.to_string()).context("write index.json")?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .context("write oci-layout")?;
    // docker load reads manifest.json (the docker-archive format) next to the OCI layout.
    let docker = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex_of(&config_digest)),
        "RepoTags": [spec.name],
        "Layers": [format!("blobs/sha256/{}", hex_of(&layer_digest))],
    }]);
    fs::write(layout.join("manifest.json"), docker.to_string()).context("write manifest.json")?;
    reproducible_tar(
        &layout,
        archive,
        &["oci-layout", "index.json", "manifest.json", "blobs"],
    )?;
    Ok(manifest_digest)
}

/// Tars `members` of `dir` into `archive` reproducibly: sorted names, owner root, fixed times.
fn reproducible_tar(dir: &Path, archive: &Path, members: &[&str]) -> Result<()> {
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(archive)
        .args(members))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn put_blob(blobs: &Path, data: &[u8]) -> Result<String> {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut f = fs::File::create(blobs.join(&hex)).context("create blob")?;
    f.write_all(data).context("write blob")?;
    Ok(format!("sha256:{hex}"))
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Runs `cmd`; fails with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_files_to_copy() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f94)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f94)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f94)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }
}
