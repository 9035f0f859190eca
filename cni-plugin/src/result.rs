//! The CNI result: built from the agent's [`Attachment`], merged with a `prevResult` when the
//! plugin is chained after another, and printed in the format of the config's cniVersion
//! (0.3.x/0.4.0 tag each ip with `"version"`; 1.1.0 adds interface `mtu`).

use std::net::IpAddr;

use hostnic_agent_api::Attachment;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{CniError, Code};
use crate::version::SpecVersion;

/// A result in version-independent form. Unknown fields of a `prevResult` are dropped, as
/// libcni does when it converts results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CniResult {
    /// Interfaces created by the chain.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses, each pointing at an interface by index.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default)]
    pub dns: Dns,
}

/// An interface in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub mac: String,
    /// MTU (1.1.0 results only).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Netns path; absent for host-side interfaces.
    #[serde(default)]
    pub sandbox: Option<String>,
}

/// An address in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    /// `a.b.c.d/len`.
    pub address: String,
    /// Gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    #[serde(default)]
    pub gw: Option<String>,
}

/// DNS settings in a result or config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

impl CniResult {
    /// Decodes a `prevResult` (any supported version's format).
    pub fn from_prev(value: &Value) -> Result<Self, CniError> {
        Self::deserialize(value).map_err(|e| {
            CniError::new(
                Code::Decoding,
                format!("prevResult is not a CNI result: {e}"),
            )
        })
    }

    /// Appends the agent's attachment: one interface, its address and its routes.
    pub fn push_attachment(&mut self, a: &Attachment) {
        let index = self.interfaces.len();
        self.interfaces.push(Interface {
            name: a.interface.clone(),
            mac: a.mac.clone(),
            mtu: (a.mtu > 0).then_some(a.mtu),
            sandbox: Some(a.sandbox.clone()),
        });
        self.ips.push(IpConfig {
            address: a.address.clone(),
            gateway: (!a.gateway.is_empty()).then(|| a.gateway.clone()),
            interface: Some(index),
        });
        self.routes.extend(a.routes.iter().map(|r| Route {
            dst: r.dst.clone(),
            gw: r.gw.clone(),
        }));
    }

    /// Whether the result holds the attachment's interface in its sandbox with its address:
    /// CHECK's comparison of the runtime's cached result against the agent's view.
    pub fn contains(&self, a: &Attachment) -> Result<(), String> {
        let Some(index) = self
            .interfaces
            .iter()
            .position(|i| i.name == a.interface && i.sandbox.as_deref() == Some(&a.sandbox))
        else {
            return Err(format!(
                "prevResult has no interface {} in sandbox {}",
                a.interface, a.sandbox
            ));
        };
        if !self
            .ips
            .iter()
            .any(|ip| ip.interface == Some(index) && ip.address == a.address)
        {
            return Err(format!(
                "prevResult does not give {} the address {} the agent configured",
                a.interface, a.address
            ));
        }
        Ok(())
    }

    /// The result as JSON in `version`'s format.
    pub fn to_json(&self, version: SpecVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), i.name.clone().into());
                if !i.mac.is_empty() {
                    o.insert("mac".into(), i.mac.clone().into());
                }
                if let (Some(mtu), true) = (i.mtu, version.has_interface_mtu()) {
                    o.insert("mtu".into(), mtu.into());
                }
                if let Some(s) = &i.sandbox {
                    o.insert("sandbox".into(), s.clone().into());
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.has_ip_version_field() {
                    o.insert("version".into(), ip_family(&ip.address).into());
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), i.into());
                }
                o.insert("address".into(), ip.address.clone().into());
                if let Some(gw) = &ip.gateway {
                    o.insert("gateway".into(), gw.clone().into());
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| match &r.gw {
                Some(gw) => json!({"dst": r.dst, "gw": gw}),
                None => json!({"dst": r.dst}),
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), version.as_str().into());
        out.insert("interfaces".into(), interfaces.into());
        out.insert("ips".into(), ips.into());
        out.insert("routes".into(), routes.into());
        out.insert("dns".into(), self.dns.to_json());
        Value::Object(out)
    }
}

impl Dns {
    fn to_json(&self) -> Value {
        let mut o = Map::new();
        if !self.nameservers.is_empty() {
            o.insert("nameservers".into(), self.nameservers.clone().into());
        }
        if let Some(d) = &self.domain {
            o.insert("domain".into(), d.clone().into());
        }
        if !self.search.is_empty() {
            o.insert("search".into(), self.search.clone().into());
        }
        if !self.options.is_empty() {
            o.insert("options".into(), self.options.clone().into());
        }
        Value::Object(o)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// "4" or "6" for an `addr/len` string (0.3.x/0.4.0 results).
fn ip_family(cidr: &str) -> &'static str {
    let addr = cidr.split('/').next().unwrap_or_default();
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => "6",
        _ => "4",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_agent_api::Route as ApiRoute;

    fn attachment() -> Attachment {
        Attachment {
            hostnic: "pool-a-node1-x1y2z".into(),
            interface: "eth0".into(),
            mac: "52:54:aa:00:00:01".into(),
            sandbox: "/var/run/netns/p1".into(),
            mtu: 1450,
            address: "172.22.0.9/24".into(),
            gateway: "172.22.0.1".into(),
            routes: vec![
                ApiRoute {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("172.22.0.1".into()),
                },
                ApiRoute {
                    dst: "10.96.0.0/12".into(),
                    gw: Some("172.22.0.2".into()),
                },
            ],
        }
    }

    fn result() -> CniResult {
        let mut r = CniResult::default();
        r.push_attachment(&attachment());
        r
    }

    #[test]
    fn v1_1_result_has_mtu_and_no_ip_version() {
        let v = result().to_json(SpecVersion::V1_1_0);
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "mac": "52:54:aa:00:00:01", "mtu": 1450,
                                "sandbox": "/var/run/netns/p1"}],
                "ips": [{"interface": 0, "address": "172.22.0.9/24", "gateway": "172.22.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "172.22.0.1"},
                           {"dst": "10.96.0.0/12", "gw": "172.22.0.2"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn v1_0_result_has_neither() {
        let v = result().to_json(SpecVersion::V1_0_0);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["ips"][0]["interface"], 0);
    }

    #[test]
    fn old_results_tag_ip_version() {
        for version in [
            SpecVersion::V0_3_0,
            SpecVersion::V0_3_1,
            SpecVersion::V0_4_0,
        ] {
            let v = result().to_json(version);
            assert_eq!(v["cniVersion"], version.as_str());
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][0]["interface"], 0);
            assert!(v["interfaces"][0].get("mtu").is_none());
        }
        assert_eq!(ip_family("fd00::5/64"), "6");
    }

    #[test]
    fn prev_result_round_trips_and_gets_our_interface_appended() {
        let prev = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "lo", "sandbox": "/var/run/netns/p1"}],
            "ips": [{"version": "4", "interface": 0, "address": "127.0.0.1/8"}],
            "routes": [],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        });
        let mut r = CniResult::from_prev(&prev).unwrap();
        r.push_attachment(&attachment());
        let v = r.to_json(SpecVersion::V0_4_0);
        assert_eq!(v["interfaces"][1]["name"], "eth0");
        assert_eq!(v["ips"][1]["interface"], 1);
        assert_eq!(v["ips"][0]["address"], "127.0.0.1/8");
        assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
        // Our own output read back gives the same result (1.1.0 keeps every field).
        let v11 = r.to_json(SpecVersion::V1_1_0);
        assert_eq!(CniResult::from_prev(&v11).unwrap(), r);
    }

    #[test]
    fn bad_prev_result_is_decoding_error() {
        let e = CniResult::from_prev(&json!({"ips": "x"})).unwrap_err();
        assert_eq!(e.code, Code::Decoding);
    }

    #[test]
    fn contains_checks_interface_sandbox_and_address() {
        let r = result();
        r.contains(&attachment()).unwrap();
        let mut moved = attachment();
        moved.sandbox = "/var/run/netns/other".into();
        assert!(r.contains(&moved).is_err());
        let mut readdressed = attachment();
        readdressed.address = "172.22.0.10/24".into();
        assert!(
            r.contains(&readdressed)
                .unwrap_err()
                .contains("172.22.0.10/24")
        );
    }
}
