//! The CRD types: wire format, defaults, the generated schema's bounds, and that the YAML
//! committed under `crds/` is what the types generate.

use hostnic_crds::{
    HostNic, HostNicPhase, HostNicSpec, HostNicStatus, NicPool, NicPoolSpec, NicRole, PodRef,
    ReclaimPolicy, crd_files, hostnic_crd, nicpool_crd,
};
use serde_json::{Value, json};

fn nicpool_schema() -> Value {
    let crd = serde_json::to_value(nicpool_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_yaml_matches_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in crd_files().unwrap() {
        let committed = std::fs::read_to_string(dir.join(file.file_name)).unwrap_or_default();
        assert!(
            committed == file.yaml,
            "crds/{} is stale: run `cargo run -p hostnic-crds --bin crdgen -- crds` and commit",
            file.file_name
        );
    }
}

#[test]
fn nicpool_defaults_fill_a_minimal_spec() {
    let spec: NicPoolSpec = serde_json::from_value(json!({"vxnets": ["vxnet-abc1234"]})).unwrap();
    assert_eq!(spec.size, 3);
    assert_eq!(spec.max_per_node, 63);
    assert_eq!(spec.quarantine_seconds, 120);
    assert_eq!(spec.reclaim_policy, ReclaimPolicy::Delete);
    assert!(spec.routes.is_empty() && spec.node_selector.is_empty());
}

#[test]
fn nicpool_round_trips_in_camel_case() {
    let json = json!({
        "apiVersion": "hostnic.qingcloud.com/v1alpha1",
        "kind": "NicPool",
        "metadata": {"name": "default"},
        "spec": {
            "vxnets": ["vxnet-abc1234", "vxnet-def5678"],
            "nodeSelector": {"hostnic": "on"},
            "size": 5,
            "maxPerNode": 20,
            "routes": [{"destination": "10.96.0.0/12", "gateway": "0.0.0.0"}],
            "reclaimPolicy": "Retain",
            "quarantineSeconds": 30
        }
    });
    let pool: NicPool = serde_json::from_value(json.clone()).unwrap();
    assert!(pool.spec.routes[0].via_node());
    assert_eq!(serde_json::to_value(&pool).unwrap(), json);
}

#[test]
fn hostnic_status_round_trips() {
    let mut nic = HostNic::new(
        "default-node1-abcde",
        HostNicSpec {
            pool: "default".into(),
            node: "node1".into(),
            vxnet: "vxnet-abc1234".into(),
            role: NicRole::Pod,
        },
    );
    nic.status = Some(HostNicStatus {
        phase: HostNicPhase::Bound,
        nic_id: Some("52:54:9a:1b:2c:3d".into()),
        private_ip: Some("172.22.0.9".into()),
        pod: Some(PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: None,
            container_id: "c1".into(),
            netns: "/var/run/netns/p".into(),
            interface: "eth0".into(),
            network: Some("hostnic".into()),
        }),
        ..Default::default()
    });
    let json = serde_json::to_value(&nic).unwrap();
    assert_eq!(json["status"]["phase"], "Bound");
    assert_eq!(json["status"]["nicId"], "52:54:9a:1b:2c:3d");
    assert_eq!(json["status"]["pod"]["containerId"], "c1");
    assert_eq!(json["status"]["pod"]["network"], "hostnic");
    assert_eq!(json["spec"]["role"], "Pod");
    let back: HostNic = serde_json::from_value(json).unwrap();
    assert_eq!(back.status, nic.status);
}

#[test]
fn phases_classify_incoming_and_outgoing() {
    use HostNicPhase::*;
    let incoming: Vec<_> = [
        Pending, Creating, Attaching, Available, Bound, Released, Detaching, Deleting, Failed,
    ]
    .into_iter()
    .filter(|p| p.is_incoming())
    .collect();
    assert_eq!(incoming, vec![Pending, Creating, Attaching]);
    assert!(Detaching.is_outgoing() && Deleting.is_outgoing() && !Failed.is_outgoing());
}

#[test]
fn nicpool_schema_bounds_what_the_api_server_can_check() {
    let spec = &nicpool_schema()["properties"]["spec"];
    let props = &spec["properties"];
    assert_eq!(spec["required"], json!(["vxnets"]));
    assert_eq!(props["size"]["maximum"], 63.0);
    assert_eq!(props["size"]["minimum"], 0.0);
    assert_eq!(props["maxPerNode"]["minimum"], 1.0);
    assert_eq!(props["maxPerNode"]["maximum"], 63.0);
    assert_eq!(props["vxnets"]["minItems"], 1);
    assert_eq!(props["vxnets"]["items"]["pattern"], "^vxnet-[a-z0-9]+$");
    assert_eq!(props["reclaimPolicy"]["enum"], json!(["Delete", "Retain"]));
    let route = &props["routes"]["items"]["properties"];
    assert!(
        route["destination"]["pattern"]
            .as_str()
            .unwrap()
            .ends_with("/(3[0-2]|[12]?[0-9])$")
    );
}

#[test]
fn patterns_accept_and_reject_what_they_should() {
    let re = |p: &str| regex::Regex::new(p).unwrap();
    let mac = re(hostnic_crds::MAC_PATTERN);
    assert!(mac.is_match("52:54:9a:1b:2c:3d"));
    assert!(!mac.is_match("52:54:9A:1B:2C:3D") && !mac.is_match("52:54:9a:1b:2c"));
    let ip = re(hostnic_crds::IPV4_PATTERN);
    assert!(ip.is_match("172.22.0.9") && ip.is_match("0.0.0.0"));
    assert!(!ip.is_match("256.1.1.1") && !ip.is_match("1.2.3") && !ip.is_match("01.2.3.4"));
    let cidr = re(hostnic_crds::IPV4_CIDR_PATTERN);
    assert!(cidr.is_match("10.96.0.0/12") && cidr.is_match("0.0.0.0/0"));
    assert!(!cidr.is_match("10.96.0.0/33") && !cidr.is_match("10.96.0.0"));
    let vxnet = re(hostnic_crds::VXNET_ID_PATTERN);
    assert!(
        vxnet.is_match("vxnet-ytuyg2q") && !vxnet.is_match("vxnet-") && !vxnet.is_match("vpc-1")
    );
}

#[test]
fn crds_are_cluster_scoped_with_short_names_and_scale() {
    let pool = serde_json::to_value(nicpool_crd()).unwrap();
    let nic = serde_json::to_value(hostnic_crd()).unwrap();
    assert_eq!(pool["spec"]["scope"], "Cluster");
    assert_eq!(nic["spec"]["scope"], "Cluster");
    assert_eq!(pool["spec"]["names"]["shortNames"], json!(["np"]));
    assert_eq!(nic["spec"]["names"]["shortNames"], json!(["hn"]));
    assert_eq!(
        nic["spec"]["names"]["categories"],
        json!([hostnic_crds::CATEGORY])
    );
    assert_eq!(
        pool["spec"]["names"]["categories"],
        json!([hostnic_crds::CATEGORY])
    );
    let scale = &pool["spec"]["versions"][0]["subresources"]["scale"];
    assert_eq!(scale["specReplicasPath"], ".spec.size");
    assert_eq!(scale["statusReplicasPath"], ".status.warmPerNode");
    let columns: Vec<_> = nic["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_uppercase())
        .collect();
    assert_eq!(
        columns,
        ["NODE", "VXNET", "ROLE", "IP", "MAC", "PHASE", "POD", "AGE"]
    );
}

/// Every `format` in a schema (a string under the key `format`), with its JSON pointer.
fn formats(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("format", Value::String(f)) => out.push((at.clone(), f.clone())),
                    _ => formats(child, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                formats(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn schema_formats_are_ones_the_api_server_recognises() {
    // The apiserver warns `unrecognized format "uint32"` for formats outside OpenAPI's numeric
    // ones and its string-format registry.
    let recognised = [
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "date",
        "date-time",
    ];
    for crd in [nicpool_crd(), hostnic_crd()] {
        let crd = serde_json::to_value(crd).unwrap();
        let mut found = Vec::new();
        formats(&crd, String::new(), &mut found);
        assert!(!found.is_empty());
        for (at, f) in &found {
            assert!(recognised.contains(&f.as_str()), "{at}: format {f:?}");
        }
    }
    let status = &nicpool_schema()["properties"]["status"]["properties"];
    assert_eq!(
        status["available"]["format"], "int64",
        "a u32 needs 64 bits"
    );
    assert_eq!(
        status["available"]["minimum"], 0.0,
        "unsigned keeps its floor"
    );
    let per_node = &status["nodeStatus"]["items"]["properties"];
    assert_eq!(per_node["bound"]["minimum"], 0.0);
}
