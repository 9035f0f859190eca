//! Stand-in agents for the operator-at-scale benchmark: with hot-plug off no link ever appears,
//! so for every attached HostNic of any node this reports the link as present (hostInterface and
//! LinkReady=True), which is the agent's whole part in making a NIC Available. One background
//! thread plays every node's agent, writing with optimistic concurrency like the real one.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use hostnic_crds::{HostNic, HostNicPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::stand_in::{Control, StandIn};

/// The running stand-in; stopped on drop.
pub struct FakeAgents(StandIn);

impl FakeAgents {
    /// Starts reporting links for the cluster behind `kubeconfig`.
    pub fn start(kubeconfig: &Path) -> Result<Self> {
        StandIn::start(kubeconfig, run).map(Self)
    }

    /// Links reported so far.
    pub fn reports(&self) -> u64 {
        self.0.done()
    }
}

async fn run(client: Client, control: Control) {
    let api: Api<HostNic> = Api::all(client);
    while !control.stopping() {
        if let Ok(list) = api.list(&ListParams::default()).await {
            let todo: Vec<HostNic> = list.items.into_iter().filter(needs_report).collect();
            let done = futures::stream::iter(todo)
                .map(|nic| report(&api, nic))
                .buffer_unordered(16)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await;
            control.count(done as u64);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An attached (or attaching, with a NIC id) HostNic whose link is not reported yet.
fn needs_report(nic: &HostNic) -> bool {
    let Some(status) = &nic.status else {
        return false;
    };
    let attached = matches!(
        status.phase,
        HostNicPhase::Attaching | HostNicPhase::Available
    ) && status.nic_id.is_some();
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "LinkReady" && c.status == "True");
    attached && !ready
}

/// Writes hostInterface and LinkReady=True with the object's resourceVersion; a conflict just
/// means the next pass retries.
async fn report(api: &Api<HostNic>, mut nic: HostNic) -> bool {
    let name = nic.name_any();
    let Some(status) = nic.status.as_mut() else {
        return false;
    };
    let mac = status.nic_id.clone().unwrap_or_default();
    let hex = mac.replace(':', "");
    status.host_interface = Some(format!("nic{}", hex.get(6..).unwrap_or(&hex)));
    status.conditions.retain(|c| c.type_ != "LinkReady");
    status.conditions.push(Condition {
        type_: "LinkReady".into(),
        status: "True".into(),
        reason: "LinkPresent".into(),
        message: "fake agent (benchmark without hot-plug)".into(),
        last_transition_time: Time(jiff::Timestamp::now()),
        observed_generation: nic.metadata.generation,
    });
    api.replace_status(&name, &PostParams::default(), &nic)
        .await
        .is_ok()
}
