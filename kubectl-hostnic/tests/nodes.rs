//! `kubectl hostnic nodes` as a process against kube-mem: its counts are the HostNics'.

mod common;

use std::collections::BTreeMap;

use common::Env;
use common::fixtures::*;
use hostnic_crds::{HostNic, HostNicPhase, HostNicPhase::*};
use kube::Api;
use kube::api::ListParams;

#[tokio::test]
async fn table_matches_the_hostnics() {
    let mut w = World::standard();
    w.pools.push(pool("other", &[], 1));
    let p = w.pod.clone();
    for (i, (pool, node, phase)) in [
        ("default", "n1", Available),
        ("default", "n1", Available),
        ("default", "n1", Bound),
        ("default", "n1", Attaching),
        ("default", "n2", Failed),
        ("default", "n2", Released),
        ("other", "n2", Available),
    ]
    .into_iter()
    .enumerate()
    {
        let h = nic(&format!("{pool}-{node}-{i}"), pool, node, phase, i as u8);
        w.add(if phase == Bound { bound(h, &p) } else { h });
    }
    let env = Env::start().await;
    env.load(&w).await;
    let out = env.plugin(&["nodes"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");

    // Expected from the HostNics as the API returns them.
    let listed = Api::<HostNic>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list");
    let mut want: BTreeMap<(String, String), [u32; 4]> = BTreeMap::new();
    for n in &listed.items {
        let phase = n.status.as_ref().map(|s| s.phase).unwrap_or_default();
        let slot = match phase {
            HostNicPhase::Available => 0,
            HostNicPhase::Bound => 1,
            HostNicPhase::Failed => 3,
            _ => 2,
        };
        want.entry((n.spec.pool.clone(), n.spec.node.clone()))
            .or_default()[slot] += 1;
    }
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "POOL",
            "NODE",
            "SIZE",
            "AVAILABLE",
            "BOUND",
            "IN-PROGRESS",
            "FAILED",
            "WAITING-SINCE"
        ]
    );
    let got: BTreeMap<(String, String), [u32; 4]> = lines
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| c[i].parse::<u32>().expect("count");
            (
                (c[0].to_string(), c[1].to_string()),
                [n(3), n(4), n(5), n(6)],
            )
        })
        .collect();
    assert_eq!(got, want, "{}", out.stdout);
    assert_eq!(want.len(), 3);

    // kubectl finds the plugin on PATH; the plugin finds the cluster through $KUBECONFIG.
    if let Some(via_kubectl) = env.kubectl_hostnic(&["nodes"]).await {
        assert_eq!(via_kubectl.code, Some(0), "{via_kubectl:?}");
        assert_eq!(via_kubectl.stdout, out.stdout);
    }
}

#[tokio::test]
async fn context_flag_picks_the_kubeconfig_context() {
    let env = Env::start().await;
    env.load(&World::standard()).await;
    // kube-mem's kubeconfig names its one context `kube-mem`.
    let out = env.plugin(&["nodes", "--context", "kube-mem"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = env.plugin(&["nodes", "--context", "elsewhere"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("elsewhere"), "{}", out.stderr);
}
