//! `leaks`: cloud NICs named as this cluster's (`hostnic-<cluster>-<uid>`, parsed by the
//! operator's own [`hostnic_crds::names::owned_uid`]) that no HostNic owns. Read-only: one
//! DescribeNics by name, nothing is changed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hostnic_crds::HostNic;
use hostnic_crds::names::{nic_prefix, owned_uid};
use qingcloud::wire::Nic;
use qingcloud::{ClientSettings, CloudConfig, NicFilter};

use crate::table;

/// The NICs of `cloud` named for `cluster` that no HostNic owns. A HostNic owns a NIC by its
/// recorded id, or, before the id is recorded (a create in flight), by the uid in its name,
/// which is how the operator adopts it.
pub fn find<'a>(cloud: &'a [Nic], cluster: &str, hostnics: &[Arc<HostNic>]) -> Vec<&'a Nic> {
    let prefix = nic_prefix(cluster);
    let ids: HashSet<&str> = hostnics
        .iter()
        .filter_map(|h| h.status.as_ref()?.nic_id.as_deref())
        .collect();
    let uids: HashSet<&str> = hostnics
        .iter()
        .filter_map(|h| h.metadata.uid.as_deref())
        .collect();
    cloud
        .iter()
        .filter(|n| owned_uid(&n.nic_name, &prefix).is_some_and(|uid| !uids.contains(uid)))
        .filter(|n| !ids.contains(n.nic_id.as_str()))
        .collect()
}

/// Every cloud NIC whose name contains this cluster's prefix, read with the operator's config
/// file. The file's content (the secret) is never printed: the client's errors leave it out.
pub async fn cloud_nics(config: &Path, cluster: &str) -> anyhow::Result<Vec<Nic>> {
    let config = CloudConfig::load(config)?;
    let client = qingcloud::Client::new(config, ClientSettings::default(), None)
        .context("build the QingCloud client")?;
    let filter = NicFilter {
        nic_name: Some(nic_prefix(cluster)),
        ..Default::default()
    };
    client
        .describe_nics(&filter)
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
            let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
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
