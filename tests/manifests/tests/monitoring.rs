//! `manifests/monitoring/`, the kustomize component for the Prometheus Operator: it renders
//! into an overlay of the install, its monitors select the operator's and the agents' pods and
//! ports, its rules pass `promtool` (syntax and unit tests of the alerts), and every metric its
//! rules and dashboard name is exported by the real operator and agent.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use hostnic_manifests_tests::promql::{exported_names, names_in_expr};
use hostnic_manifests_tests::{manifests_dir, render};
use hostnic_tests::cluster::{Cluster, ClusterConfig, wait_for};
use hostnic_tests::http;
use hostnic_tests::privilege::{require_root, require_tool};
use serde_json::{Value, json};

fn component_dir() -> PathBuf {
    manifests_dir().join("monitoring")
}

/// The component's objects, rendered alone.
fn component() -> Vec<Value> {
    render::kustomize(&component_dir()).expect("kubectl kustomize manifests/monitoring")
}

fn only<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// The PrometheusRule's spec: a promtool rules file.
fn rules_spec(objs: &[Value]) -> &Value {
    let rules = only(objs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    &rules[0]["spec"]
}

/// The dashboard of the ConfigMap the Grafana sidecar loads.
fn dashboard(objs: &[Value]) -> Value {
    let maps: Vec<&Value> = only(objs, "ConfigMap")
        .into_iter()
        .filter(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(
        maps.len(),
        1,
        "one ConfigMap with the Grafana sidecar's label"
    );
    let data = maps[0]["data"].as_object().expect("data");
    assert_eq!(data.len(), 1);
    let (file, json) = data.iter().next().unwrap();
    assert!(file.ends_with(".json"), "{file}");
    serde_json::from_str(json.as_str().unwrap()).expect("the dashboard is JSON")
}

/// Every PromQL expression of the rules and the dashboard, each with where it is.
fn expressions(objs: &[Value]) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for group in rules_spec(objs)["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            exprs.push((
                format!("rule {name}"),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for panel in dashboard(objs)["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push((
                format!("panel {:?}", panel["title"].as_str().unwrap()),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    exprs
}

#[test]
fn the_component_renders_into_an_overlay_and_selects_the_pods_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    let base = render::kustomize(&manifests_dir()).unwrap();
    let objs =
        render::kustomize_with_components(dir.path(), &manifests_dir(), &["monitoring"]).unwrap();
    let added: Vec<&Value> = objs.iter().filter(|o| !base.contains(o)).collect();
    let kinds: BTreeSet<String> = added
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"]))
        .collect();
    assert_eq!(objs.len(), base.len() + 4, "added: {kinds:?}");
    for o in &added {
        assert_eq!(
            o["metadata"]["namespace"],
            "hostnic-system",
            "{}",
            render::describe(o)
        );
    }

    // Each PodMonitor selects the pods of one workload, on a port its container names.
    let monitors = only(&objs, "PodMonitor");
    assert_eq!(monitors.len(), 2);
    for (kind, name) in [
        ("Deployment", "hostnic-operator"),
        ("DaemonSet", "hostnic-agent"),
    ] {
        let workload = objs
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap();
        let template = &workload["spec"]["template"];
        let selecting: Vec<&&Value> = monitors
            .iter()
            .filter(|m| {
                m["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| template["metadata"]["labels"][k] == *v)
            })
            .collect();
        assert_eq!(selecting.len(), 1, "one PodMonitor selects {kind}/{name}");
        let ports: Vec<&Value> = template["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .map(|p| &p["name"])
            .collect();
        for endpoint in selecting[0]["spec"]["podMetricsEndpoints"]
            .as_array()
            .unwrap()
        {
            assert!(
                ports.contains(&&endpoint["port"]),
                "{kind}/{name} has no port {} ({ports:?})",
                endpoint["port"]
            );
            assert_eq!(endpoint["path"], "/metrics");
        }
    }

    // Every alert says what, why and how bad, and waits before firing.
    for group in rules_spec(&objs)["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = &rule["alert"];
            for field in ["summary", "description"] {
                assert!(
                    rule["annotations"][field]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name} lacks {field}"
                );
            }
            assert!(
                ["critical", "warning", "info"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            assert!(rule["for"].is_string(), "{name} lacks `for`");
        }
    }
    assert!(!expressions(&objs).is_empty());
}

#[test]
fn the_rules_pass_promtool_check_and_unit_tests() {
    if !require_tool(
        "the_rules_pass_promtool_check_and_unit_tests",
        "promtool",
        "prometheus",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads the spec as written by serde.
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        serde_json::to_string(rules_spec(&component())).unwrap(),
    )
    .unwrap();
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let checked = promtool(&["check", "rules", "rules.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");

    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/monitoring-alerts.test.yaml");
    std::fs::copy(&tests, dir.path().join("alerts.test.yaml")).unwrap();
    promtool(&["test", "rules", "alerts.test.yaml"]);
}

/// The names in `exprs` that `exported` lacks, with where they are used.
fn unknown_metrics(exprs: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    exprs
        .iter()
        .flat_map(|(place, expr)| {
            let names = names_in_expr(expr);
            assert!(!names.is_empty(), "{place} names no metric: {expr}");
            names
                .into_iter()
                .filter(|n| !exported.contains(n))
                .map(move |n| format!("{place}: {n}"))
        })
        .collect()
}

#[test]
fn a_rule_naming_a_metric_nobody_exports_is_caught() {
    let exported = exported_names("# TYPE hostnic_agent_synced gauge\nhostnic_agent_synced 1\n");
    let exprs = [
        ("ok".to_owned(), "hostnic_agent_synced == 0".to_owned()),
        (
            "typo".to_owned(),
            "max by (node) (hostnic_agent_sync) == 0".to_owned(),
        ),
    ];
    assert_eq!(
        unknown_metrics(&exprs, &exported),
        ["typo: hostnic_agent_sync"]
    );
}

#[test]
fn every_metric_the_rules_and_dashboard_name_is_exported() {
    if !require_root("every_metric_the_rules_and_dashboard_name_is_exported") {
        return;
    }
    // One node is enough: the operator and one agent, each scraped on its own port.
    let config = ClusterConfig {
        nodes: 1,
        ..Default::default()
    };
    let cluster = Cluster::start(config, &mut |_| {}).expect("start the system");
    // A refused CreateNics and a failed attach job: the cloud error and reconcile failure
    // series exist (families without samples are not printed at all), then the pool fills.
    cluster
        .sim
        .add_faults(&[
            json!({"action": "CreateNics", "kind": {"api_error": {"code": 1400}}, "trigger": {"next": 1}}),
            json!({"action": "AttachNics", "kind": {"job": "failed"}, "trigger": {"next": 1}}),
        ])
        .unwrap();
    cluster
        .apply_pool("mon", 1, &cluster.config().vxnet_ids())
        .unwrap();
    let scrape = |addr| {
        http::request(addr, "GET", "/metrics", None)
            .ok()
            .filter(|(code, _)| *code == 200)
            .map(|(_, body)| body)
    };
    let agent_addr = cluster.nodes[0].health_addr;
    // The pool's Ready condition is a series once the operator has reconciled it; the agent's
    // synced gauge reads 1 once it serves.
    let mut texts = (String::new(), String::new());
    let up = wait_for(
        "the pool Ready and the agent synced",
        Duration::from_secs(60),
        || {
            texts = (
                scrape(cluster.metrics_addr).unwrap_or_default(),
                scrape(agent_addr).unwrap_or_default(),
            );
            let (operator, agent) = &texts;
            Ok(operator
                .contains("hostnic_operator_pool_condition{pool=\"mon\",condition=\"Ready\"} 1")
                && operator.contains("code=\"1400\"")
                && operator.contains("hostnic_operator_reconcile_failures_total{")
                && agent.contains("hostnic_agent_synced 1"))
        },
    );
    if let Err(e) = up {
        panic!(
            "{e:#}\noperator:\n{}\nagent:\n{}\n{}",
            texts.0,
            texts.1,
            cluster.logs(40)
        );
    }
    let mut exported = exported_names(&texts.0);
    exported.extend(exported_names(&texts.1));
    let unknown = unknown_metrics(&expressions(&component()), &exported);
    assert!(
        unknown.is_empty(),
        "metrics nobody exports: {unknown:#?}\nexported: {exported:#?}"
    );
}
