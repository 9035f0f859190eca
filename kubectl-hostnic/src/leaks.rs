//! `leaks`: cloud NICs named as this cluster's (`hostnic-<cluster>-<uid>`, parsed by the
//! operator's own [`hostnic_crds::names::owned_uid`]) that no HostNic owns. Read-only: one
//! paged DescribeNics, nothing is changed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hostnic_crds::names::{nic_prefix, owned_uid};
use hostnic_crds::{CREATE_BATCH_LABEL, HostNic};
use kube::ResourceExt;
use qingcloud::wire::Nic;
use qingcloud::{ClientSettings, CloudConfig, NicFilter};

use crate::table;

/// The NICs of `cloud` named for `cluster` that no HostNic owns. A HostNic owns a NIC by its
/// recorded id, or, before the id is recorded (a create in flight), by the name the operator
/// adopts it under: its uid, or its create batch's id (the operator's GC keeps the same).
pub fn find<'a>(cloud: &'a [Nic], cluster: &str, hostnics: &[Arc<HostNic>]) -> Vec<&'a Nic> {
    let prefix = nic_prefix(cluster);
    let ids: HashSet<&str> = hostnics
        .iter()
        .filter_map(|h| h.status.as_ref()?.nic_id.as_deref())
        .collect();
    let uids: HashSet<&str> = hostnics
        .iter()
        .filter(|h| h.status.as_ref().is_none_or(|s| s.nic_id.is_none()))
        .flat_map(|h| {
            h.metadata
                .uid
                .as_deref()
                .into_iter()
                .chain(h.labels().get(CREATE_BATCH_LABEL).map(String::as_str))
        })
        .collect();
    cloud
        .iter()
        .filter(|n| owned_uid(&n.nic_name, &prefix).is_some_and(|uid| !uids.contains(uid)))
        .filter(|n| !ids.contains(n.nic_id.as_str()))
        .collect()
}

/// Every NIC of the account, read with the operator's config file. The whole account, not
/// the pools' vxnets: a leak may sit in a vxnet no pool uses any more; and the API's name
/// filter is not documented as a prefix match, so names are compared here. The file's
/// content (the secret) is never printed: the client's errors leave it out.
pub async fn cloud_nics(config: &Path) -> anyhow::Result<Vec<Nic>> {
    let config = CloudConfig::load(config)?;
    let client = qingcloud::Client::new(config, ClientSettings::default(), None)
        .context("build the QingCloud client")?;
    client
        .describe_nics(&NicFilter::default())
        .await
        .context("DescribeNics")
}

/// The table `kubectl hostnic leaks` prints, or a line saying there is none.
pub fn render(leaks: &[&Nic], cluster: &str) -> String {
    if leaks.is_empty() {
        return format!("no leaked NICs of cluster {cluster}\n");
    }
    let header = ["NIC", "NAME", "VXNET", "STATUS", "INSTANCE", "CREATED"];
    let rows: Vec<Vec<String>> = leaks
        .iter()
        .map(|n| {
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            vec![
                n.nic_id.clone(),
                n.nic_name.clone(),
                dash(&n.vxnet_id),
                format!("{:?}", n.status),
                dash(&n.instance_id),
                dash(&n.create_time),
            ]
        })
        .collect();
    table::render(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::nic;
    use hostnic_crds::HostNicPhase;

    const U1: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
    const U2: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f2";
    const U3: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f3";
    const U4: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f4";
    const U5: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f5";

    fn cloud(id: &str, name: &str) -> Nic {
        Nic {
            nic_id: id.into(),
            nic_name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_this_clusters_unowned_nics_are_leaks() {
        let nics = [
            cloud("52:54:00:00:00:01", &format!("hostnic-prod-{U1}")),
            cloud("52:54:00:00:00:02", &format!("hostnic-prod-{U2}")),
            cloud("52:54:00:00:00:03", &format!("hostnic-prod-{U3}")),
            cloud("52:54:00:00:00:04", &format!("hostnic-prod-eu-{U1}")),
            cloud("52:54:00:00:00:05", "hostnic-prod-handmade"),
            cloud("52:54:00:00:00:06", &format!("hostnic-prod-{U5}")),
        ];
        // Owned by its recorded id, and (a create in flight) by the uid in the name.
        let by_id = nic("a", "p", "n1", HostNicPhase::Available, 1);
        let mut by_uid = nic("b", "p", "n1", HostNicPhase::Creating, 9);
        by_uid.metadata.uid = Some(U2.into());
        // A member of a create batch, by the batch's id; U3 is also the uid of a HostNic whose
        // NIC is recorded: a NIC under its name is a duplicate, a leak.
        let mut by_batch = nic("c", "p", "n1", HostNicPhase::Creating, 10);
        by_batch.metadata.uid = Some(U4.into());
        by_batch.status = None;
        by_batch
            .labels_mut()
            .insert(CREATE_BATCH_LABEL.into(), U5.into());
        let mut recorded = nic("d", "p", "n1", HostNicPhase::Available, 11);
        recorded.metadata.uid = Some(U3.into());
        let hostnics = [by_id, by_uid, by_batch, recorded].map(Arc::new);
        let found: Vec<&str> = find(&nics, "prod", &hostnics)
            .iter()
            .map(|n| n.nic_id.as_str())
            .collect();
        assert_eq!(found, ["52:54:00:00:00:03"]);
        let eu: Vec<&str> = find(&nics, "prod-eu", &hostnics)
            .iter()
            .map(|n| n.nic_id.as_str())
            .collect();
        assert_eq!(eu, ["52:54:00:00:00:04"]);
    }
}
