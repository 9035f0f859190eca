//! Renders a kustomization with `kubectl kustomize` (offline: no cluster, no network) and
//! splits the output into one JSON value per object.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("run kubectl kustomize: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("kubectl kustomize {dir} failed: {stderr}")]
    Kustomize { dir: String, stderr: String },
    #[error("write the overlay's kustomization: {0}")]
    Overlay(#[source] std::io::Error),
    #[error("parse rendered YAML: {0}")]
    Yaml(#[from] serde_saphyr::Error),
}

/// The kubectl binary: `$KUBECTL` or `kubectl` on the PATH.
pub fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// Renders the kustomization in `dir` into its objects, in kustomize's output order.
pub fn kustomize(dir: &Path) -> Result<Vec<Value>, RenderError> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        // No kubeconfig: proves rendering needs no cluster.
        .env("KUBECONFIG", "/dev/null")
        .output()
        .map_err(RenderError::Spawn)?;
    if !out.status.success() {
        return Err(RenderError::Kustomize {
            dir: dir.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    parse_documents(&String::from_utf8_lossy(&out.stdout))
}

/// Renders, from the directory `overlay`, an overlay of the kustomization `base` that adds the
/// `components` (paths inside `base`), as a user's overlay does (README, Install).
pub fn kustomize_with_components(
    overlay: &Path,
    base: &Path,
    components: &[&str],
) -> Result<Vec<Value>, RenderError> {
    let overlay = overlay.canonicalize().map_err(RenderError::Overlay)?;
    let base = base.canonicalize().map_err(RenderError::Overlay)?;
    let base = relative(&overlay, &base);
    let mut text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n",
        base.display()
    );
    for c in components {
        text.push_str(&format!("  - {}\n", base.join(c).display()));
    }
    std::fs::write(overlay.join("kustomization.yaml"), text).map_err(RenderError::Overlay)?;
    kustomize(&overlay)
}

/// The absolute path `to` relative to the absolute directory `from` (kustomize refuses
/// absolute paths to bases and components).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let depth = from
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut rel = PathBuf::new();
    for _ in 0..depth {
        rel.push("..");
    }
    rel.join(to.strip_prefix("/").unwrap_or(to))
}

/// Splits a multi-document YAML stream into objects, skipping empty documents.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, RenderError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `kind/namespace/name` of an object, for messages.
pub fn describe(obj: &Value) -> String {
    let meta = &obj["metadata"];
    format!(
        "{}/{}{}",
        obj["kind"].as_str().unwrap_or("?"),
        meta["namespace"]
            .as_str()
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default(),
        meta["name"].as_str().unwrap_or("?")
    )
}
