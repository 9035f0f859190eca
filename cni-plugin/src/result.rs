//! The CNI result: built from the agent's [`Attachment`], merged with a `prevResult` when the
//! plugin is chained after another, and printed in the format of the config's cniVersion
//! (0.3.x/0.4.0 tag each ip with `"version"`; 1.1.0 adds interface `mtu`). Fields of a
//! prevResult this plugin does not know (1.1.0's `routes[].mtu/advmss/priority/table/scope`,
//! `interfaces[].socketPath/pciID`, anything newer) are kept as they came and printed again:
//! the spec says a plugin MUST pass prevResult through.

use std::net::{IpAddr, Ipv4Addr};

use hostnic_agent_api::{Attachment, Expected, Route as ApiRoute};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{CniError, Code};
use crate::version::SpecVersion;

/// Fields of a result object this plugin does not interpret, passed through unchanged.
pub type Extra = Map<String, Value>;

/// A result in version-independent form.
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
    /// Top-level fields not known here.
    #[serde(flatten)]
    pub extra: Extra,
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
    /// Other fields (`socketPath`, `pciID`, ...).
    #[serde(flatten)]
    pub extra: Extra,
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
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A route in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    #[serde(default)]
    pub gw: Option<String>,
    /// Other fields (`mtu`, `advmss`, `priority`, `table`, `scope`, ...).
    #[serde(flatten)]
    pub extra: Extra,
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
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl CniResult {
    /// Decodes a `prevResult` (any supported version's format).
    pub fn from_prev(value: &Value) -> Result<Self, CniError> {
        let mut result = Self::deserialize(value).map_err(|e| {
            CniError::new(
                Code::Decoding,
                format!("prevResult is not a CNI result: {e}"),
            )
        })?;
        // Both depend on the output version and are written by `to_json`, not passed through.
        result.extra.remove("cniVersion");
        for ip in &mut result.ips {
            ip.extra.remove("version");
        }
        Ok(result)
    }

    /// Appends the agent's attachment: one interface, its address and its routes.
    pub fn push_attachment(&mut self, a: &Attachment) {
        let index = self.interfaces.len();
        self.interfaces.push(Interface {
            name: a.interface.clone(),
            mac: a.mac.clone(),
            mtu: (a.mtu > 0).then_some(a.mtu),
            sandbox: Some(a.sandbox.clone()),
            extra: Extra::new(),
        });
        self.ips.push(IpConfig {
            address: a.address.clone(),
            gateway: (!a.gateway.is_empty()).then(|| a.gateway.clone()),
            interface: Some(index),
            extra: Extra::new(),
        });
        self.routes.extend(a.routes.iter().map(|r| Route {
            dst: r.dst.clone(),
            gw: r.gw.clone(),
            extra: Extra::new(),
        }));
    }

    /// Whether the result holds the attachment's interface in its sandbox with its address:
    /// CHECK's comparison of the runtime's cached result against what the agent recorded.
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

    /// What CHECK expects of interface `ifname` in `sandbox`: its MAC and IPv4 address from
    /// this (cached) result, the MTU (`mtu` from the config, else the result's), and as routes
    /// the result's routes through the interface (next hop in its subnet) plus the config's
    /// `ipam.routes`. Routes of other interfaces, or with no next hop, are left to their
    /// plugins: a later chained plugin may add or own them.
    pub fn expected(
        &self,
        ifname: &str,
        sandbox: &str,
        conf_routes: &[ApiRoute],
        conf_mtu: Option<u32>,
    ) -> Result<Expected, String> {
        let (index, iface) = self
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ifname && i.sandbox.as_deref() == Some(sandbox))
            .ok_or_else(|| format!("prevResult has no interface {ifname} in sandbox {sandbox}"))?;
        let ip = self
            .ips
            .iter()
            .filter(|ip| ip.interface == Some(index))
            .find_map(|ip| Some((ip, V4Net::parse(&ip.address)?)))
            .ok_or_else(|| format!("prevResult gives {ifname} no IPv4 address"))?;
        let (ip, subnet) = ip;
        let mut routes: Vec<ApiRoute> = Vec::new();
        let mut push = |r: ApiRoute| {
            let dst = V4Net::parse(&r.dst).map(V4Net::trunc);
            if !routes
                .iter()
                .any(|have| V4Net::parse(&have.dst).map(V4Net::trunc) == dst && have.gw == r.gw)
            {
                routes.push(r);
            }
        };
        let ours: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| {
                r.gw.as_deref()
                    .and_then(|g| g.parse::<Ipv4Addr>().ok())
                    .is_some_and(|g| subnet.contains(g))
                    && V4Net::parse(&r.dst).is_some()
            })
            .collect();
        for r in &ours {
            push(ApiRoute {
                dst: r.dst.clone(),
                gw: r.gw.clone(),
            });
        }
        for r in conf_routes {
            let dst = V4Net::parse(&r.dst).map(V4Net::trunc);
            let cached = ours
                .iter()
                .find(|have| V4Net::parse(&have.dst).map(V4Net::trunc) == dst);
            let gw = match r.gw.as_deref() {
                // The vxnet gateway, as the agent resolves it on ADD.
                None | Some("") => ip.gateway.clone().unwrap_or_else(|| ANY_GW.to_owned()),
                // The node's address in the vxnet: what ADD resolved it to, else any next hop.
                Some(ANY_GW) => cached
                    .and_then(|c| c.gw.clone())
                    .unwrap_or_else(|| ANY_GW.to_owned()),
                Some(g) => g.to_owned(),
            };
            push(ApiRoute {
                dst: r.dst.clone(),
                gw: Some(gw),
            });
        }
        Ok(Expected {
            mac: iface.mac.clone(),
            address: ip.address.clone(),
            mtu: conf_mtu.or(iface.mtu),
            routes,
        })
    }

    /// The result as JSON in `version`'s format.
    pub fn to_json(&self, version: SpecVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = i.extra.clone();
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
                let mut o = ip.extra.clone();
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
            .map(|r| {
                let mut o = r.extra.clone();
                o.insert("dst".into(), r.dst.clone().into());
                if let Some(gw) = &r.gw {
                    o.insert("gw".into(), gw.clone().into());
                }
                Value::Object(o)
            })
            .collect();
        let mut out = self.extra.clone();
        out.insert("cniVersion".into(), version.as_str().into());
        out.insert("interfaces".into(), interfaces.into());
        out.insert("ips".into(), ips.into());
        out.insert("routes".into(), routes.into());
        out.insert("dns".into(), self.dns.to_json());
        Value::Object(out)
    }
}

/// A route gateway meaning "any next hop" in CHECK (and "the node's NIC" in a config route).
const ANY_GW: &str = "0.0.0.0";

/// An IPv4 prefix, for telling which result routes go through our interface (the plugin stays
/// std-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct V4Net {
    addr: u32,
    len: u8,
}

impl V4Net {
    fn parse(cidr: &str) -> Option<Self> {
        let (addr, len) = cidr.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some(Self {
            addr: u32::from(addr),
            len,
        })
    }

    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    fn trunc(self) -> Self {
        Self {
            addr: self.addr & self.mask(),
            len: self.len,
        }
    }

    fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.addr & self.mask()
    }
}

impl Dns {
    fn to_json(&self) -> Value {
        let mut o = self.extra.clone();
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
    use serde_json::json;

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

    /// A 1.1.0 prevResult with every field the spec added, and some it may add later.
    fn rich_prev() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "vhost0", "mac": "00:11:22:33:44:55", "mtu": 9000,
                            "socketPath": "/run/vhost0.sock", "pciID": "0000:00:1f.6",
                            "sandbox": "/var/run/netns/p1"}],
            "ips": [{"interface": 0, "address": "192.168.7.2/24", "gateway": "192.168.7.1",
                     "futureIpField": {"a": 1}}],
            "routes": [{"dst": "192.168.8.0/24", "gw": "192.168.7.1", "mtu": 1400,
                        "advmss": 1360, "priority": 100, "table": 42, "scope": 0}],
            "dns": {"nameservers": ["10.96.0.10"], "futureDnsField": true},
            "futureTopLevel": ["x"]
        })
    }

    #[test]
    fn prev_result_passes_through_fields_it_does_not_know() {
        let mut r = CniResult::from_prev(&rich_prev()).unwrap();
        r.push_attachment(&attachment());
        let v = r.to_json(SpecVersion::V1_1_0);
        let i0 = &v["interfaces"][0];
        assert_eq!(i0["socketPath"], "/run/vhost0.sock");
        assert_eq!(i0["pciID"], "0000:00:1f.6");
        assert_eq!(i0["mtu"], 9000);
        assert_eq!(v["ips"][0]["futureIpField"], json!({"a": 1}));
        assert_eq!(
            v["routes"][0],
            json!({"dst": "192.168.8.0/24", "gw": "192.168.7.1", "mtu": 1400,
                   "advmss": 1360, "priority": 100, "table": 42, "scope": 0})
        );
        assert_eq!(v["dns"]["futureDnsField"], true);
        assert_eq!(v["futureTopLevel"], json!(["x"]));
        // Ours are appended after and carry none of them.
        assert_eq!(
            v["interfaces"][1],
            json!({"name": "eth0", "mac": "52:54:aa:00:00:01",
            "mtu": 1450, "sandbox": "/var/run/netns/p1"})
        );
        assert_eq!(
            v["routes"][1],
            json!({"dst": "0.0.0.0/0", "gw": "172.22.0.1"})
        );
        // What depends on the output version is written for that version, never passed on.
        let old = r.to_json(SpecVersion::V0_4_0);
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        let prev04 = json!({"cniVersion": "0.4.0", "interfaces": [],
            "ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        let v10 = CniResult::from_prev(&prev04)
            .unwrap()
            .to_json(SpecVersion::V1_0_0);
        assert_eq!(v10["ips"][0], json!({"address": "10.0.0.2/24"}));
        assert_eq!(v10["cniVersion"], "1.0.0");
    }

    fn conf_route(dst: &str, gw: Option<&str>) -> hostnic_agent_api::Route {
        hostnic_agent_api::Route {
            dst: dst.into(),
            gw: gw.map(str::to_owned),
        }
    }

    #[test]
    fn check_expects_our_interface_and_our_routes_only() {
        let mut r = CniResult::from_prev(&rich_prev()).unwrap();
        r.push_attachment(&attachment());
        // A later chained plugin added a route through our interface and one elsewhere.
        r.routes.push(Route {
            dst: "10.244.0.0/16".into(),
            gw: Some("172.22.0.7".into()),
            extra: Extra::new(),
        });
        let e = r.expected("eth0", "/var/run/netns/p1", &[], None).unwrap();
        assert_eq!(e.mac, "52:54:aa:00:00:01");
        assert_eq!(e.address, "172.22.0.9/24");
        assert_eq!(e.mtu, Some(1450));
        let dsts: Vec<_> = e.routes.iter().map(|r| r.dst.as_str()).collect();
        // The other interface's 192.168.8.0/24 is not ours to check.
        assert_eq!(dsts, ["0.0.0.0/0", "10.96.0.0/12", "10.244.0.0/16"]);

        // The config's own routes: resolved as ADD resolves them, or any next hop when the
        // cached result does not say which.
        let e = r
            .expected(
                "eth0",
                "/var/run/netns/p1",
                &[
                    conf_route("10.96.0.0/12", Some("0.0.0.0")),
                    conf_route("10.200.0.0/16", None),
                    conf_route("10.201.0.0/16", Some("0.0.0.0")),
                    conf_route("10.202.0.0/16", Some("172.22.0.5")),
                ],
                Some(1400),
            )
            .unwrap();
        assert_eq!(e.mtu, Some(1400));
        assert_eq!(
            e.routes[3..],
            [
                conf_route("10.200.0.0/16", Some("172.22.0.1")),
                conf_route("10.201.0.0/16", Some("0.0.0.0")),
                conf_route("10.202.0.0/16", Some("172.22.0.5")),
            ]
        );
        assert_eq!(e.routes.len(), 6, "{:?}", e.routes);

        assert!(
            r.expected("eth1", "/var/run/netns/p1", &[], None)
                .unwrap_err()
                .contains("no interface eth1")
        );
        assert!(r.expected("eth0", "/var/run/netns/p2", &[], None).is_err());
    }
}
