//! The real kubectl (1.32, /usr/bin/kubectl) against the server: CRDs, printer columns, short
//! names, categories, scale, patch, apply, describe, explain, delete. Also runs against a real
//! cluster with `HOSTNIC_TEST_KUBECONFIG`.

mod common;

use std::path::Path;
use tokio::process::Command;

use common::*;
use serde_json::Value;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    kubeconfig: std::path::PathBuf,
    /// A private discovery cache, so a server on a reused port is never confused with another.
    cache: tempfile::TempDir,
    dir: tempfile::TempDir,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(env: &Env) -> Option<Kubectl> {
        if !Path::new(KUBECTL).exists() {
            assert!(std::env::var_os("CI").is_none(), "kubectl missing in CI");
            println!("skipped: no {KUBECTL}");
            return None;
        }
        Some(Kubectl {
            kubeconfig: env.kubeconfig.clone(),
            cache: tempfile::tempdir().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// Runs kubectl without blocking the runtime (the server may run on the same one).
    async fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .await
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Runs and asserts success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o.stdout
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into()
    }
}

/// Upper-cased printer column names of a CRD file, as kubectl prints them.
fn printer_columns(crd_file: &Path) -> Vec<String> {
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(crd_file).unwrap()).unwrap();
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0)
        .map(|c| c["name"].as_str().unwrap().to_uppercase())
        .collect()
}

#[tokio::test]
async fn kubectl_manages_hostnic_resources() {
    let env = Env::start().await;
    let Some(k) = Kubectl::new(&env) else { return };
    let crds = repo_crds();
    let nicpools_crd = crds.join("hostnic.qingcloud.com_nicpools.yaml");
    let hostnics_crd = crds.join("hostnic.qingcloud.com_hostnics.yaml");
    let applied = k
        .run(&[
            "apply",
            "-f",
            &nicpools_crd.to_string_lossy(),
            "-f",
            &hostnics_crd.to_string_lossy(),
        ])
        .await;
    assert!(applied.ok, "{}", applied.stderr);
    assert!(
        !applied.stderr.contains("Warning"),
        "the API server accepts every format of our CRDs: {}",
        applied.stderr
    );
    let applied = applied.stdout;
    warns_about_unrecognized_formats(&k).await;
    assert!(
        applied.contains(
            "customresourcedefinition.apiextensions.k8s.io/nicpools.hostnic.qingcloud.com"
        ),
        "{applied}"
    );
    eventually("nicpools served", || async {
        k.run(&["get", "nicpools"]).await.ok
    })
    .await;

    let pool = unique("pool");
    let manifest = format!(
        "apiVersion: hostnic.qingcloud.com/v1alpha1\nkind: NicPool\nmetadata:\n  name: {pool}\nspec:\n  vxnets: [vxnet-abc]\n"
    );
    let f = k.file("pool.yaml", &manifest);
    assert!(
        k.ok(&["apply", "-f", &f])
            .await
            .contains(&format!("nicpool.hostnic.qingcloud.com/{pool} created"))
    );

    let table = k.ok(&["get", "nicpools,hostnics"]).await;
    let header = table.lines().next().unwrap();
    for col in printer_columns(&nicpools_crd) {
        assert!(header.contains(&col), "column {col} in {header:?}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&pool))
        .unwrap_or_else(|| panic!("row for {pool} in {table}"));
    assert!(
        row.contains("[\"vxnet-abc\"]"),
        "array cells print as JSON: {row}"
    );
    assert!(
        row.trim_end().ends_with('s'),
        "AGE column from a date column: {row}"
    );

    assert!(
        k.ok(&["get", "np", &pool, "-o", "name"])
            .await
            .contains(&pool),
        "short name np"
    );
    k.ok(&["get", "hn"]).await;
    k.ok(&["get", "hostnic"]).await;
    kubectl_names_hostnics(&k, &hostnics_crd).await;
    let all = k.ok(&["get", "hostnic-all", "-o", "name"]).await;
    assert!(
        all.contains(&format!("nicpool.hostnic.qingcloud.com/{pool}")),
        "the category lists NicPools too: {all}"
    );
    assert!(
        k.ok(&["get", "nicpool", &pool, "-o", "wide"])
            .await
            .contains(&pool)
    );

    assert!(
        k.ok(&["scale", "nicpool", &pool, "--replicas=5"])
            .await
            .contains("scaled")
    );
    assert_eq!(
        k.ok(&["get", "nicpool", &pool, "-o", "jsonpath={.spec.size}"])
            .await,
        "5"
    );

    let bad = k
        .run(&[
            "patch",
            "nicpool",
            &pool,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"size":70}}"#,
        ])
        .await;
    assert!(
        !bad.ok && bad.stderr.contains("spec.size: Invalid value: 70"),
        "{}",
        bad.stderr
    );
    k.ok(&[
        "patch",
        "nicpool",
        &pool,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"team":"net"}}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "nicpool",
        &pool,
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/size","value":4}]"#,
    ])
    .await;
    assert!(
        k.ok(&["get", "nicpools", "-l", "team=net", "-o", "name"])
            .await
            .contains(&pool)
    );
    assert_eq!(
        k.ok(&["get", "nicpool", &pool, "-o", "jsonpath={.spec.size}"])
            .await,
        "4"
    );

    let resized = k.file(
        "pool2.yaml",
        &manifest.replace("vxnets: [vxnet-abc]", "vxnets: [vxnet-abc]\n  size: 2"),
    );
    assert!(
        k.ok(&["apply", "-f", &resized])
            .await
            .contains("configured")
    );
    let json: Value =
        serde_json::from_str(&k.ok(&["get", "nicpool", &pool, "-o", "json"]).await).unwrap();
    assert_eq!(json["spec"]["size"], 2);
    assert_eq!(
        json["metadata"]["labels"]["team"], "net",
        "client-side apply keeps fields it does not own"
    );

    let described = k.ok(&["describe", "nicpool", &pool]).await;
    assert!(
        described.contains(&format!("Name:         {pool}")) && described.contains("Spec:"),
        "{described}"
    );
    let explained = k.ok(&["explain", "nicpool.spec.size"]).await;
    assert!(explained.contains("FIELD: size <integer>"), "{explained}");

    assert!(
        k.ok(&["delete", "nicpool", &pool])
            .await
            .contains("deleted")
    );
    let gone = k.run(&["get", "nicpool", &pool]).await;
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
    env.cleanup().await;
}

/// A CRD with a format the apiserver does not know is accepted with a `Warning` header, which
/// kubectl prints (our CRDs above must not get one).
async fn warns_about_unrecognized_formats(k: &Kubectl) {
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gauges.formats.kube-mem.hostnic.io\nspec:\n  group: formats.kube-mem.hostnic.io\n  names: {kind: Gauge, plural: gauges, singular: gauge}\n  scope: Cluster\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          n: {type: integer, format: uint32, minimum: 0}\n          at: {type: string, format: date-time}\n";
    let f = k.file("gauges.yaml", crd);
    let out = k.run(&["apply", "-f", &f]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "Warning: unrecognized format \"uint32\"",
        "only the unknown format"
    );
    k.ok(&["delete", "-f", &f]).await;
}

/// A HostNic by its singular name, plural and short name (a category named like the singular
/// would make kubectl expand `hostnic NAME` into every kind of the category), and its ROLE
/// column telling a gateway NIC from a pod NIC.
async fn kubectl_names_hostnics(k: &Kubectl, hostnics_crd: &Path) {
    let nic = unique("nic");
    let manifest = format!(
        "apiVersion: hostnic.qingcloud.com/v1alpha1\nkind: HostNic\nmetadata:\n  name: {nic}\nspec:\n  pool: p\n  node: n1\n  vxnet: vxnet-abc\n  role: Gateway\n"
    );
    k.ok(&["apply", "-f", &k.file("nic.yaml", &manifest)]).await;
    for resource in ["hostnic", "hostnics", "hn"] {
        let got = k.ok(&["get", resource, &nic, "-o", "name"]).await;
        assert_eq!(
            got.trim(),
            format!("hostnic.hostnic.qingcloud.com/{nic}"),
            "kubectl get {resource} {nic}"
        );
    }
    let table = k.ok(&["get", "hostnic", &nic]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let columns = printer_columns(hostnics_crd);
    assert!(
        header[1..].iter().eq(columns.iter()),
        "{header:?} vs {columns:?}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let role = header
        .iter()
        .position(|c| *c == "ROLE")
        .expect("ROLE column");
    assert_eq!(row[role], "Gateway", "{table}");
    k.ok(&["delete", "hostnic", &nic]).await;
}

#[tokio::test]
async fn kubectl_builtins_and_widget_columns() {
    let env = Env::start().await;
    let Some(k) = Kubectl::new(&env) else { return };
    let ns = env.ns.clone();
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: {ns}\ndata:\n  a: \"1\"\n"
    );
    let f = k.file("cm.yaml", &cm);
    assert!(
        k.ok(&["apply", "-f", &f])
            .await
            .contains("configmap/cfg created")
    );
    let typo = k.file("cm-typo.yaml", &cm.replace("\ndata:", "\ndataa:"));
    let bad = k.run(&["apply", "-f", &typo]).await;
    assert!(
        !bad.ok && bad.stderr.contains("unknown field \"dataa\""),
        "built-ins are validated too: {}",
        bad.stderr
    );
    let f2 = k.file("cm2.yaml", &cm.replace("a: \"1\"", "a: \"2\"\n  b: \"3\""));
    assert!(
        k.ok(&["apply", "-f", &f2])
            .await
            .contains("configmap/cfg configured"),
        "strategic merge patch of a built-in"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "cfg",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.a}{.data.b}"
        ])
        .await,
        "23"
    );
    k.ok(&["label", "cm", "cfg", "-n", &ns, "x=y"]).await;
    assert!(
        k.ok(&["get", "cm", "-n", &ns, "-l", "x=y", "-o", "name"])
            .await
            .contains("configmap/cfg")
    );
    assert!(k.ok(&["get", "namespaces"]).await.contains(&ns));

    // Typed-client commands send protobuf bodies.
    k.ok(&[
        "create",
        "configmap",
        "gen",
        "-n",
        &ns,
        "--from-literal=k=v",
    ])
    .await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "-n",
        &ns,
        "--from-literal=p=q",
    ])
    .await;
    k.ok(&["create", "serviceaccount", "bot", "-n", &ns]).await;
    assert_eq!(
        k.ok(&["get", "cm", "gen", "-n", &ns, "-o", "jsonpath={.data.k}"])
            .await,
        "v"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "sec",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.p}"
        ])
        .await,
        "cQ=="
    );
    k.ok(&["get", "sa", "bot", "-n", &ns]).await;

    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: d}}\n  template:\n    metadata:\n      labels: {{app: d}}\n    spec:\n      containers:\n      - {{name: c, image: busybox}}\n"
    );
    let fd = k.file("d.yaml", &deploy);
    k.ok(&["apply", "-f", &fd]).await;
    // Re-apply with a changed container list: kubectl sends a strategic merge patch.
    let changed = deploy.replace(
        "      - {name: c, image: busybox}\n",
        "      - {name: c, image: busybox:2, ports: [{containerPort: 80}, {containerPort: 81}]}\n      - {name: s, image: sidecar}\n",
    );
    let fd2 = k.file("d2.yaml", &changed);
    k.ok(&["apply", "-f", &fd2]).await;
    let changed2 = changed.replace(
        "[{containerPort: 80}, {containerPort: 81}]",
        "[{containerPort: 443}, {containerPort: 80}]",
    );
    let fd3 = k.file("d3.yaml", &changed2);
    k.ok(&["apply", "-f", &fd3]).await;
    let got = k
        .ok(&["get", "deployment", "d", "-n", &ns, "-o", "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[*].containerPort}"])
        .await;
    assert_eq!(got, "c s busybox:2 443 80");
    k.ok(&["scale", "deployment", "d", "-n", &ns, "--replicas=3"])
        .await;
    assert_eq!(
        k.ok(&[
            "get",
            "deployment",
            "d",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "3"
    );

    let w = format!(
        "apiVersion: conformance.kube-mem.hostnic.io/v1\nkind: Widget\nmetadata:\n  name: wid\n  namespace: {ns}\nspec:\n  color: red\n  tags: [a, b]\n"
    );
    // kubectl validates strictly on the server: unknown fields are errors, or warnings.
    let typo = k.file(
        "typo.yaml",
        &w.replace("  color: red\n", "  color: red\n  bogus: 1\n"),
    );
    let strict = k.run(&["apply", "-f", &typo]).await;
    assert!(
        !strict.ok
            && strict
                .stderr
                .contains("strict decoding error: unknown field \"spec.bogus\""),
        "{}",
        strict.stderr
    );
    let warned = k.run(&["apply", "--validate=warn", "-f", &typo]).await;
    assert!(
        warned.ok && warned.stderr.contains("unknown field \"spec.bogus\""),
        "{}",
        warned.stderr
    );
    k.ok(&["delete", "-f", &typo]).await;
    let f = k.file("w.yaml", &w);
    k.ok(&["apply", "-f", &f]).await;
    let table = k.ok(&["get", "wd", "-n", &ns]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        vec!["NAME", "COLOR", "REPLICAS", "TAGS", "READY", "AGE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    // READY has no value yet: kubectl prints an empty cell, so only AGE follows the tags.
    assert_eq!(&row[..4], &["wid", "red", "1", "[\"a\",\"b\"]"]);
    assert_eq!(row.len(), 5, "{row:?}");
    assert!(
        k.ok(&["get", "kmtest", "-n", &ns, "-o", "name"])
            .await
            .contains("widget.conformance.kube-mem.hostnic.io/wid"),
        "category"
    );

    // RBAC through kubectl: impersonation (--as) and SelfSubjectAccessReview (auth can-i).
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: wr\n  namespace: {ns}\nrules:\n- apiGroups: [conformance.kube-mem.hostnic.io]\n  resources: [widgets]\n  verbs: [get, list]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: wr\n  namespace: {ns}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: wr}}\nsubjects:\n- {{kind: ServiceAccount, name: bot, namespace: {ns}}}\n"
    );
    let fr = k.file("rbac.yaml", &rbac);
    k.ok(&["apply", "-f", &fr]).await;
    let bot = format!("--as=system:serviceaccount:{ns}:bot");
    assert_eq!(
        k.ok(&["auth", "can-i", "list", "widgets", "-n", &ns, &bot])
            .await
            .trim(),
        "yes"
    );
    let no = k
        .run(&["auth", "can-i", "delete", "widgets", "-n", &ns, &bot])
        .await;
    assert_eq!(no.stdout.trim(), "no");
    assert!(
        k.ok(&["get", "widgets", "-n", &ns, &bot])
            .await
            .contains("wid")
    );
    let denied = k.run(&["delete", "widget", "wid", "-n", &ns, &bot]).await;
    assert!(
        !denied.ok && denied.stderr.contains("forbidden"),
        "{}",
        denied.stderr
    );
    // Roles made by kubectl's generators (protobuf bodies) grant too.
    k.ok(&[
        "create",
        "role",
        "wd-deleter",
        "--verb=delete",
        "--resource=widgets",
        "-n",
        &ns,
    ])
    .await;
    let sa = format!("--serviceaccount={ns}:bot");
    k.ok(&[
        "create",
        "rolebinding",
        "wd-deleter",
        "--role=wd-deleter",
        &sa,
        "-n",
        &ns,
    ])
    .await;
    assert_eq!(
        k.ok(&["auth", "can-i", "delete", "widgets", "-n", &ns, &bot])
            .await
            .trim(),
        "yes"
    );

    k.ok(&["delete", "-f", &f]).await;
    k.ok(&["delete", "-f", &f2]).await;
    env.cleanup().await;
}
