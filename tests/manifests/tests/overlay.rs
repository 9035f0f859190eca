//! The README's way to install with real credentials: an overlay that replaces the Secret's
//! content from a file kept out of git and sets the cluster name. It must render offline, keep
//! every other object, and roll the operator onto the new Secret.

use hostnic_manifests_tests::{manifests_dir, render};
use serde_json::Value;

/// The Secret's data, decoded the way the API server does (line breaks skipped).
fn decode(b64: &str) -> String {
    use base64::Engine;
    let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(clean)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn the_readme_overlay_replaces_the_credentials_and_names_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().canonicalize().unwrap();
    let base = manifests_dir().canonicalize().unwrap();
    let config = "qy_access_key_id: 'KEYID'\nqy_secret_access_key: 'SECRET'\nzone: 'pek3a'\n";
    std::fs::write(overlay.join("config.yaml"), config).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {}
secretGenerator:
  - name: qingcloud-config
    namespace: hostnic-system
    behavior: replace
    files:
      - config.yaml
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: hostnic-operator, namespace: hostnic-system}}
      spec:
        template:
          spec:
            containers:
              - name: operator
                env:
                  - name: HOSTNIC_CLUSTER_NAME
                    value: prod-pek3a-1
",
            render::relative(&overlay, &base).display()
        ),
    )
    .unwrap();

    let base_objs = render::kustomize(&base).unwrap();
    let objs = render::kustomize(&overlay).unwrap();
    assert_eq!(objs.len(), base_objs.len());

    let secrets: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Secret").collect();
    assert_eq!(secrets.len(), 1);
    let secret_name = secrets[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        decode(secrets[0]["data"]["config.yaml"].as_str().unwrap()),
        config
    );

    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["volumes"][0]["secret"]["secretName"], secret_name);
    let base_deploy = base_objs
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert_ne!(
        base_deploy["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], secret_name,
        "new credentials must change the Secret name, so the operator rolls"
    );
    let env = spec["containers"][0]["env"].as_array().unwrap();
    let cluster = env
        .iter()
        .find(|e| e["name"] == "HOSTNIC_CLUSTER_NAME")
        .unwrap();
    assert_eq!(cluster["value"], "prod-pek3a-1");
    // The patch merged by name: the downward-API variables are still there.
    assert!(env.iter().any(|e| e["name"] == "POD_NAME"));
}

/// The README's remote base names this repository (the workspace's `repository`), not another.
#[test]
fn the_readme_overlay_names_this_repository_as_its_remote_base() {
    let root = hostnic_manifests_tests::repo_root();
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let repository = cargo
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .map(|r| r.trim_matches('"'))
        .expect("the workspace Cargo.toml names its repository");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let remote = readme
        .lines()
        .find_map(|l| {
            l.split("# or ")
                .nth(1)
                .filter(|r| r.contains("//manifests"))
        })
        .expect("the README's overlay shows a remote base");
    assert!(
        remote.starts_with(&format!("{repository}//manifests?ref=")),
        "README remote base {remote} is not {repository}//manifests"
    );
}
