//! The QingCloud simulator as a child process (`qingcloud-sim --config`), with its admin
//! endpoints for what tests inspect (NICs, call counts) and inject (faults).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bins::bin;
use crate::cluster::{ClusterConfig, Node, free_port, wait_for};
use crate::http;
use crate::process::{Proc, Spec};

/// A running simulator.
#[derive(Debug)]
pub struct Sim {
    proc: Proc,
    /// The QingCloud API (HTTPS in the realistic profile).
    api: SocketAddr,
    /// The admin endpoints (plain HTTP; the API's own port when that is plain HTTP too).
    addr: SocketAddr,
    /// The CA the API's certificate chains to, when it serves HTTPS.
    ca_file: Option<std::path::PathBuf>,
}

impl Sim {
    /// Writes the simulator's config (vxnets, one instance per node mapped to its netns) and
    /// starts it.
    pub fn start(dir: &Path, config: &ClusterConfig, nodes: &[Node]) -> Result<Self> {
        let api = free_port()?;
        let realistic = config.sim_profile == "realistic";
        let primaries = &config.primary_vxnets;
        let instances: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut instance = serde_json::json!({
                    "id": n.instance,
                    "name": n.name,
                    "node_netns": n.netns.as_ref().map(|ns| ns.path()),
                });
                if !primaries.is_empty() {
                    let per_vxnet = nodes.len().div_ceil(primaries.len());
                    instance["vxnet"] = primaries[i / per_vxnet].0.clone().into();
                }
                instance
            })
            .collect();
        let vxnets: Vec<_> = config
            .vxnets
            .iter()
            .chain(primaries)
            .map(|(id, cidr)| serde_json::json!({"id": id, "cidr": cidr}))
            .collect();
        let (pending, working) = config.job_latency_ms;
        // JSON is YAML: the simulator reads its config file as YAML.
        let mut sim_config = serde_json::json!({
            "profile": config.sim_profile,
            "listen": api.to_string(),
            "vxnets": vxnets,
            "instances": instances,
            "job_latency": {"pending": {"fixed_ms": pending}, "working": {"fixed_ms": working}},
            "seed": config.seed,
            "hotplug": config.hotplug,
        });
        // The realistic profile serves HTTPS: the operator trusts the CA the simulator makes at
        // start, the harness reads the admin endpoints over a second, plain-HTTP port.
        let (addr, ca_file) = if realistic {
            let admin = free_port()?;
            let ca = dir.join("qingcloud-sim-ca.pem");
            sim_config["admin_listen"] = admin.to_string().into();
            sim_config["tls_ca_file"] = ca.display().to_string().into();
            (admin, Some(ca))
        } else {
            (api, None)
        };
        let path = dir.join("qingcloud-sim.yaml");
        std::fs::write(&path, serde_json::to_string_pretty(&sim_config)?)
            .context("write simulator config")?;
        let proc = Proc::start(
            Spec::new("qingcloud-sim", bin("qingcloud-sim"))
                .graceful()
                .env("RUST_LOG", "info")
                .arg("--config")
                .arg(&path),
            dir,
        )?;
        let sim = Self {
            proc,
            api,
            addr,
            ca_file,
        };
        wait_for("the simulator to answer", Duration::from_secs(20), || {
            Ok(sim.nics().is_ok())
        })
        .with_context(|| sim.proc.log_tail(20))?;
        Ok(sim)
    }

    /// Address of the admin endpoints.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operator's cloud config (qingcloud-sdk-go style YAML) for this simulator.
    pub fn cloud_config_yaml(&self, key_id: &str, secret: &str) -> String {
        let (protocol, ca) = match &self.ca_file {
            Some(ca) => ("https", format!("ca_file: '{}'\n", ca.display())),
            None => ("http", String::new()),
        };
        format!(
            "qy_access_key_id: '{key_id}'\nqy_secret_access_key: '{secret}'\nzone: 'pek3a'\n\
             host: '{}'\nport: {}\nprotocol: '{protocol}'\nuri: '/iaas'\nconnection_retries: 3\n\
             connection_timeout: 10\n{ca}",
            self.api.ip(),
            self.api.port()
        )
    }

    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// Stops the simulator gracefully, so it removes the links and netns it made.
    pub fn stop(&mut self) {
        self.proc.terminate(Duration::from_secs(10));
    }

    /// Every NIC the simulated account has except the instances' primary NICs (role 1), as the
    /// admin endpoint shows it.
    pub fn nics(&self) -> Result<Vec<serde_json::Value>> {
        Ok(self
            .all_nics()?
            .into_iter()
            .filter(|n| !is_primary(n))
            .collect())
    }

    /// The instances' primary NICs: instance id → (MAC, private IP). The simulator plugs each
    /// into its node netns as the VM's own addressed NIC.
    pub fn primary_nics(&self) -> Result<BTreeMap<String, (String, String)>> {
        Ok(self
            .all_nics()?
            .iter()
            .filter(|n| is_primary(n))
            .filter_map(|n| {
                let field = |k: &str| n[k].as_str().map(str::to_owned);
                Some((
                    field("instance_id")?,
                    (field("nic_id")?.to_ascii_lowercase(), field("private_ip")?),
                ))
            })
            .collect())
    }

    /// The MACs of the instances' primary NICs: the links in node netns that are the VM's own.
    pub fn primary_macs(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .primary_nics()?
            .into_values()
            .map(|(mac, _)| mac)
            .collect())
    }

    fn all_nics(&self) -> Result<Vec<serde_json::Value>> {
        let v = http::get_json(self.addr, "/admin/nics")?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Ids (lowercase MACs) of every NIC the simulated account has.
    pub fn nic_ids(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .nics()?
            .iter()
            .filter_map(|n| n["nic_id"].as_str())
            .map(str::to_ascii_lowercase)
            .collect())
    }

    /// Names of the netns the simulator made for hot-plug: one per vxnet, one per VPC router.
    pub fn vxnet_netns(&self) -> Result<Vec<String>> {
        let v = http::get_json(self.addr, "/admin/vxnets")?;
        let names: BTreeSet<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|x| [&x["netns"], &x["router_netns"]])
            .filter_map(|ns| ns.as_str().map(str::to_owned))
            .collect();
        Ok(names.into_iter().collect())
    }

    /// API calls served so far, per action.
    pub fn calls(&self) -> Result<BTreeMap<String, u64>> {
        let v = http::get_json(self.addr, "/admin/calls")?;
        serde_json::from_value(v["by_action"].clone()).context("call counts")
    }

    /// Total API requests served so far (whatever their fate).
    pub fn total_calls(&self) -> Result<u64> {
        let v = http::get_json(self.addr, "/admin/calls")?;
        v["total"].as_u64().context("calls.total")
    }

    /// Adds fault rules (the simulator's `Fault` JSON shape).
    pub fn add_faults(&self, faults: &[serde_json::Value]) -> Result<()> {
        for f in faults {
            http::send_json(self.addr, "POST", "/admin/faults", f)?;
        }
        Ok(())
    }

    /// Lifts the simulated account's API request quota (the realistic profile's 2000 an hour):
    /// for runs that count calls at a scale whose fill would otherwise stop at the quota.
    pub fn lift_request_quota(&self) -> Result<()> {
        http::send_json(self.addr, "PUT", "/admin/quota", &serde_json::Value::Null)?;
        Ok(())
    }

    /// Sets how the simulator runs a second job on a busy instance (`rules.instance_jobs`:
    /// `queue`, `refuse` or `concurrent`), keeping its other rules.
    pub fn set_instance_jobs(&self, mode: &str) -> Result<()> {
        let mut rules = http::get_json(self.addr, "/admin/rules")?;
        rules["instance_jobs"] = mode.into();
        http::send_json(self.addr, "PUT", "/admin/rules", &rules)?;
        Ok(())
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) -> Result<()> {
        http::send_json(self.addr, "DELETE", "/admin/faults", &serde_json::json!({}))?;
        Ok(())
    }
}

/// Role 1: an instance's own NIC, not one the operator made.
fn is_primary(nic: &serde_json::Value) -> bool {
    nic["role"].as_u64() == Some(1)
}
