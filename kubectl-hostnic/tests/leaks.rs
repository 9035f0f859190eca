//! `kubectl hostnic leaks` as a process against kube-mem and the QingCloud simulator: a NIC
//! made under the cluster's name that no HostNic owns is listed; one a HostNic owns, and one of
//! a cluster whose name extends ours (`prod-eu` against `prod`), are not.

mod common;

use common::Env;
use common::fixtures::*;
use hostnic_crds::HostNicPhase;
use kube::ResourceExt;
use qingcloud::VxnetId;
use qingcloud_sim::{Simulator, VxnetSpec};

const UID_LEAKED: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
const UID_EU: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f2";

#[tokio::test]
async fn lists_only_this_clusters_unowned_nics() {
    let sim = Simulator::builder()
        .vxnet(VxnetSpec::new(VXNET, "10.10.0.0/24".parse().expect("cidr")))
        .start()
        .await
        .expect("start simulator");
    let env = Env::start().await;
    let config_file = env.dir.path().join("qingcloud.yaml");
    std::fs::write(&config_file, sim.config_yaml()).expect("write config");
    let config = qingcloud::CloudConfig::load(&config_file).expect("config");
    let cloud = qingcloud::Client::new(config, Default::default(), None).expect("client");
    let vxnet = VxnetId::parse(VXNET).expect("vxnet");
    let create = async |name: String| {
        cloud
            .create_nics(&vxnet, 1, Some(&name))
            .await
            .expect("CreateNics")
            .remove(0)
            .id
    };

    // A HostNic whose NIC exists under its name and id.
    let mut w = World::standard();
    w.add(nic(
        "default-n1-a",
        "default",
        "n1",
        HostNicPhase::Creating,
        1,
    ));
    env.load(&w).await;
    let hostnics: kube::Api<hostnic_crds::HostNic> = kube::Api::all(env.client.clone());
    let owned = hostnics.get("default-n1-a").await.expect("get");
    let owned_id = create(format!("hostnic-prod-{}", owned.uid().expect("uid"))).await;
    let mut status = owned.status.clone().unwrap_or_default();
    status.nic_id = Some(owned_id.as_str().to_string());
    hostnics
        .patch_status(
            "default-n1-a",
            &Default::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .expect("record the nic id");
    let leaked = create(format!("hostnic-prod-{UID_LEAKED}")).await;
    let eu = create(format!("hostnic-prod-eu-{UID_EU}")).await;

    let config_arg = config_file.to_string_lossy().to_string();
    let out = env
        .plugin(&["leaks", "--cloud-config", &config_arg, "--cluster", "prod"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert!(rows[0].starts_with(leaked.as_str()), "{}", out.stdout);
    assert!(rows[0].contains(&format!("hostnic-prod-{UID_LEAKED}")));
    let (_, secret) = sim.access_key();
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "never prints credentials"
    );

    let out = env
        .plugin(&[
            "leaks",
            "--cloud-config",
            &config_arg,
            "--cluster",
            "prod-eu",
        ])
        .await;
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert!(rows[0].starts_with(eu.as_str()), "{}", out.stdout);
    sim.shutdown().await;
}
