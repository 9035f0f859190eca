//! The network config on stdin: parsed once and validated up front (A4 `parseConfig`), so the
//! verbs work on checked values and every mistake is reported as the spec's error with a message
//! naming the field to fix.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hostnic_agent_api::{AttachmentKey, DEFAULT_SOCKET, MAX_WAIT_FOR_NIC_SECS, Route};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, Code};
use crate::result::{CniResult, Dns};
use crate::version::SpecVersion;

/// Default deadline of one agent request: claims move a link and write the HostNic, which takes
/// milliseconds; seconds mean the agent is stuck and the runtime should retry.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// The pod annotation in which kubelet says where a pod came from (`api`, `file`, `http`).
const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Default of `waitForNicSeconds`: how long an ADD that finds its pool empty may wait for a
/// NIC on its way (the agent's own `--wait-for-nic-seconds` may cap it lower).
pub const DEFAULT_WAIT_FOR_NIC_SECS: u64 = 30;
/// Upper bound of `timeoutSeconds`: container runtimes give a whole sandbox a few minutes.
pub const MAX_TIMEOUT_SECS: u64 = 120;
/// The pod annotation choosing a NicPool (hostnic_crds' constant; the plugin stays kube-free).
pub const POOL_ANNOTATION: &str = "hostnic.qingcloud.com/pool";
/// The capability under which containerd passes pod annotations in `runtimeConfig`.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The config as it arrives; every field optional so that validation can say what is wrong.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    name: Option<String>,
    socket: Option<String>,
    timeout_seconds: Option<u64>,
    wait_for_nic_seconds: Option<u64>,
    log_file: Option<String>,
    pool: Option<String>,
    mtu: Option<u32>,
    ipam: Option<RawIpam>,
    bindaddr: Option<Value>,
    dns: Option<Dns>,
    runtime_config: Option<RuntimeConfig>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<RawAttachment>>,
}

/// The original hostnic's `ipam` section: only `routes` still means something.
#[derive(Deserialize)]
struct RawIpam {
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gw: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// Capability args the runtime passes for capabilities the conflist declares.
#[derive(Deserialize, Default)]
struct RuntimeConfig {
    /// Absent when the runtime does not pass annotations (CRI-O, a conflist without the
    /// capability): only then must the agent read the pod for its pool annotation.
    #[serde(rename = "io.kubernetes.cri.pod-annotations", default)]
    pod_annotations: Option<BTreeMap<String, String>>,
}

/// A validated network config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConf {
    /// cniVersion: the format of the result.
    pub version: SpecVersion,
    /// Network name.
    pub name: String,
    /// The agent's socket.
    pub socket: PathBuf,
    /// Deadline of each agent request.
    pub timeout: Duration,
    /// How long the agent may hold an ADD for a NIC on its way; the claim's deadline is
    /// `timeout` plus this.
    pub wait_for_nic: Duration,
    /// Where to log; stderr when unset.
    pub log_file: Option<PathBuf>,
    /// The config's `pool`: the NicPool of pods without a `hostnic.qingcloud.com/pool`
    /// annotation. The annotation wins even when the runtime does not pass it (the agent reads
    /// the pod), so this is only a default.
    pub pool: Option<String>,
    /// The pod's pool annotation, when the runtime passes pod annotations.
    pub pod_pool: Option<String>,
    /// Whether the runtime passed pod annotations (so no `pod_pool` means no annotation).
    pub pod_annotations: bool,
    /// MTU for the pod interface.
    pub mtu: Option<u32>,
    /// Extra routes (`ipam.routes`), passed to the agent.
    pub routes: Vec<Route>,
    /// DNS settings to report in the result.
    pub dns: Dns,
    /// The previous plugin's result, when chained.
    pub prev_result: Option<CniResult>,
    /// GC: attachments of this network the runtime still knows; `None` when the key is absent
    /// (GC refuses to run then).
    pub valid_attachments: Option<Vec<AttachmentKey>>,
    /// Things that are accepted but worth a log line.
    pub warnings: Vec<String>,
}

/// Decodes stdin as a JSON object (error 6 otherwise).
pub fn parse_json(stdin: &[u8]) -> Result<Value, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::Decoding,
            format!("the network config on stdin is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            Code::Decoding,
            "the network config on stdin must be a JSON object",
        ));
    }
    Ok(value)
}

/// The raw `cniVersion` string of a decoded config ("" when missing or not a string).
pub fn raw_version(value: &Value) -> &str {
    value
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl NetConf {
    /// Validates a decoded config.
    pub fn from_value(value: Value) -> Result<Self, CniError> {
        let version = SpecVersion::parse(raw_version(&value))?;
        let raw = RawConf::deserialize(&value).map_err(|e| field_error(&value, e))?;
        let mut warnings = Vec::new();

        let name = raw.name.unwrap_or_default();
        validate_network_name(&name)?;

        let socket = PathBuf::from(raw.socket.as_deref().unwrap_or(DEFAULT_SOCKET));
        if !socket.is_absolute() {
            return Err(CniError::config(format!(
                "\"socket\" {:?} must be an absolute path (the agent's socket, default {DEFAULT_SOCKET})",
                socket.display()
            )));
        }
        let timeout_secs = raw.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
            return Err(CniError::config(format!(
                "\"timeoutSeconds\" {timeout_secs} is out of range: use 1 to {MAX_TIMEOUT_SECS} \
                 (default {DEFAULT_TIMEOUT_SECS})"
            )));
        }
        let log_file = match raw.log_file.filter(|f| !f.is_empty()) {
            Some(f) if !f.starts_with('/') => {
                return Err(CniError::config(format!(
                    "\"logFile\" {f:?} must be an absolute path"
                )));
            }
            other => other.map(PathBuf::from),
        };
        let wait_secs = raw
            .wait_for_nic_seconds
            .unwrap_or(DEFAULT_WAIT_FOR_NIC_SECS);
        if wait_secs > MAX_WAIT_FOR_NIC_SECS {
            return Err(CniError::config(format!(
                "\"waitForNicSeconds\" {wait_secs} is out of range: use 0 to {MAX_WAIT_FOR_NIC_SECS}"
            )));
        }
        if let Some(mtu) = raw.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(CniError::config(format!(
                "\"mtu\" {mtu} is out of range: use 68 to 65535, or leave it out to keep the NIC's"
            )));
        }
        let config_pool = raw.pool.filter(|p| !p.is_empty());
        if let Some(p) = &config_pool {
            validate_pool_name(p, "\"pool\"")?;
        }
        let mut annotations = raw.runtime_config.unwrap_or_default().pod_annotations;
        // A static pod (config source "file" or "http") has no Pod of its own in the API, only
        // a mirror that kubelet may not have made yet: the agent looks it up as before.
        let pod_annotations = annotations.as_ref().is_some_and(|a| {
            a.get(CONFIG_SOURCE_ANNOTATION)
                .is_none_or(|source| source == "api")
        });
        let annotation_pool = annotations
            .as_mut()
            .and_then(|a| a.remove(POOL_ANNOTATION))
            .filter(|p| !p.is_empty());
        if let Some(p) = &annotation_pool {
            validate_pool_name(p, &format!("pod annotation {POOL_ANNOTATION}"))?;
        }
        let routes = raw
            .ipam
            .map(|i| i.routes)
            .unwrap_or_default()
            .into_iter()
            .map(validate_route)
            .collect::<Result<Vec<_>, _>>()?;
        if raw.bindaddr.is_some() {
            warnings.push(
                "\"bindaddr\" is ignored: the plugin talks to the node-agent over the unix \
                 socket named by \"socket\""
                    .to_owned(),
            );
        }
        let prev_result = raw
            .prev_result
            .as_ref()
            .map(CniResult::from_prev)
            .transpose()?;
        // Passed on unvalidated: an entry dropped here would make the agent release a live
        // attachment, and the agent only compares keys. An absent key stays absent: it is not
        // "nothing is valid".
        let valid_attachments = raw.valid_attachments.map(|list| {
            list.into_iter()
                .map(|a| AttachmentKey {
                    container_id: a.container_id,
                    ifname: a.ifname,
                })
                .collect()
        });

        Ok(Self {
            version,
            name,
            socket,
            timeout: Duration::from_secs(timeout_secs),
            wait_for_nic: Duration::from_secs(wait_secs),
            log_file,
            pool: config_pool,
            pod_pool: annotation_pool,
            pod_annotations,
            mtu: raw.mtu,
            routes,
            dns: raw.dns.unwrap_or_default(),
            prev_result,
            valid_attachments,
            warnings,
        })
    }
}

impl NetConf {
    /// ADD and CHECK set up or verify `ipam.routes`, and pod NICs carry only IPv4 (QingCloud
    /// vxnets are IPv4): an IPv6 route could never be set up, so it is a config error (7)
    /// before the agent is asked. DEL, GC and STATUS do not use the routes and accept such a
    /// config, so a sandbox whose ADD failed on it can still be torn down.
    pub fn require_ipv4_routes(&self) -> Result<(), CniError> {
        let v6 = self.routes.iter().find(|r| {
            r.dst
                .split('/')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|a| a.is_ipv6())
        });
        match v6 {
            None => Ok(()),
            Some(r) => {
                let shown = match &r.gw {
                    Some(gw) => format!("{{dst {:?}, gw {gw:?}}}", r.dst),
                    None => format!("{{dst {:?}}}", r.dst),
                };
                Err(CniError::config(format!(
                    "ipam.routes: route {shown} is IPv6, but pod NICs carry only IPv4 \
                     (QingCloud vxnets are IPv4); remove it"
                )))
            }
        }
    }
}

/// serde's error on a `Value` does not say which field is wrong; every field of [`RawConf`] is
/// optional, so deserializing each top-level key alone finds it.
fn field_error(value: &Value, err: serde_json::Error) -> CniError {
    let culprit = value.as_object().and_then(|obj| {
        obj.iter().find_map(|(k, v)| {
            let alone = Value::Object([(k.clone(), v.clone())].into_iter().collect());
            RawConf::deserialize(&alone).err().map(|e| (k, e))
        })
    });
    match culprit {
        Some((key, e)) => CniError::config(format!("invalid network config: field {key:?}: {e}")),
        None => CniError::config(format!("invalid network config: {err}")),
    }
}

/// libcni's rule for network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::config(format!(
            "network \"name\" {name:?} is missing or invalid: use letters, digits, '_', '.', '-'"
        )))
    }
}

/// NicPool names are Kubernetes object names (DNS subdomain).
fn validate_pool_name(pool: &str, what: &str) -> Result<(), CniError> {
    let ok = pool.len() <= 253
        && pool
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && pool.starts_with(|c: char| c.is_ascii_alphanumeric())
        && pool.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(CniError::config(format!(
            "{what} {pool:?} is not a valid NicPool name (lowercase letters, digits, '-', '.')"
        )))
    }
}

/// `ipam.routes[]`: `dst` a CIDR, `gw` an address of the same family where `0.0.0.0` means "the
/// node's NIC in the pod's vxnet" (the agent substitutes it). IPv6 is refused by
/// [`NetConf::require_ipv4_routes`] for the verbs that use the routes.
fn validate_route(r: RawRoute) -> Result<Route, CniError> {
    let bad = |what: String| {
        CniError::config(format!(
            "ipam.routes: {what}; each route is {{\"dst\": \"10.96.0.0/12\", \"gw\": \"0.0.0.0\"}} \
             (gw 0.0.0.0 = the node's NIC in the pod's vxnet)"
        ))
    };
    let (addr, len) = r
        .dst
        .split_once('/')
        .ok_or_else(|| bad(format!("dst {:?} is not a CIDR", r.dst)))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| bad(format!("dst {:?} is not a CIDR", r.dst)))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if !len.parse::<u8>().is_ok_and(|l| l <= max) {
        return Err(bad(format!("dst {:?} has a bad prefix length", r.dst)));
    }
    if let Some(gw) = &r.gw {
        let gw_addr: IpAddr = gw
            .parse()
            .map_err(|_| bad(format!("gw {gw:?} is not an IP address")))?;
        if gw_addr.is_ipv4() != addr.is_ipv4() {
            return Err(bad(format!(
                "gw {gw:?} and dst {:?} differ in family",
                r.dst
            )));
        }
    }
    Ok(Route {
        dst: r.dst,
        gw: r.gw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::from_value(v)
    }

    fn minimal() -> Value {
        json!({"cniVersion": "1.1.0", "name": "hostnic", "type": "hostnic"})
    }

    fn with(extra: Value) -> Value {
        let mut v = minimal();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn defaults() {
        let c = parse(minimal()).unwrap();
        assert_eq!(c.version, SpecVersion::V1_1_0);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        assert_eq!(
            c.wait_for_nic,
            Duration::from_secs(DEFAULT_WAIT_FOR_NIC_SECS)
        );
        assert_eq!((c.pool, c.pod_pool, c.mtu), (None, None, None));
        assert_eq!(c.log_file, None);
        assert!(c.routes.is_empty() && c.warnings.is_empty() && c.prev_result.is_none());
    }

    #[test]
    fn all_fields() {
        let c = parse(with(json!({
            "socket": "/tmp/a.sock", "timeoutSeconds": 3, "logFile": "/var/log/hostnic.log",
            "pool": "pool-a", "mtu": 1450, "bindaddr": "127.0.0.1:31080",
            "ipam": {"routes": [{"dst": "10.96.0.0/12", "gw": "0.0.0.0"}, {"dst": "10.0.0.0/8"}]},
            "dns": {"nameservers": ["10.96.0.10"]},
            "someFutureField": true
        })))
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/hostnic.log")));
        assert_eq!(c.pool.as_deref(), Some("pool-a"));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(
            c.routes,
            vec![
                Route {
                    dst: "10.96.0.0/12".into(),
                    gw: Some("0.0.0.0".into())
                },
                Route {
                    dst: "10.0.0.0/8".into(),
                    gw: None
                }
            ]
        );
        assert_eq!(c.dns.nameservers, vec!["10.96.0.10".to_owned()]);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("bindaddr"));
    }

    #[test]
    fn pod_annotation_pool_and_config_pool_are_kept_apart() {
        // The agent decides (the annotation wins); the config's pool is only a default, so it
        // must not mask the annotation when the runtime passes none.
        let c = parse(with(json!({
            "pool": "node-default",
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {
                "hostnic.qingcloud.com/pool": "fast", "other": "x"}}
        })))
        .unwrap();
        assert_eq!(c.pod_pool.as_deref(), Some("fast"));
        assert_eq!(c.pool.as_deref(), Some("node-default"));
        assert!(c.pod_annotations);
        let c = parse(with(json!({"pool": "node-default", "runtimeConfig": {}}))).unwrap();
        assert_eq!(
            (c.pool.as_deref(), c.pod_pool, c.pod_annotations),
            (Some("node-default"), None, false)
        );
        // Annotations passed without the pool's: the pod has none, the agent need not look.
        let c = parse(with(json!({
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"other": "x"}}
        })))
        .unwrap();
        assert_eq!((c.pod_pool, c.pod_annotations), (None, true));
        let source = |source: &str| {
            parse(with(
                json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {
                "kubernetes.io/config.source": source}}}),
            ))
            .unwrap()
            .pod_annotations
        };
        assert!(source("api"));
        // A static pod: the agent must find its mirror in the API rather than trust its UID.
        assert!(!source("file"));
    }

    #[test]
    fn invalid_values_are_code_7_naming_the_field() {
        let cases = [
            (json!({"socket": "relative.sock"}), "socket"),
            (json!({"timeoutSeconds": 0}), "timeoutSeconds"),
            (json!({"timeoutSeconds": 100000}), "timeoutSeconds"),
            (json!({"waitForNicSeconds": 61}), "waitForNicSeconds"),
            (json!({"mtu": 10}), "mtu"),
            (json!({"mtu": "big"}), "field \"mtu\": invalid type"),
            (
                json!({"ipam": {"routes": [{"gw": "0.0.0.0"}]}}),
                "field \"ipam\": missing field `dst`",
            ),
            (json!({"logFile": "hostnic.log"}), "logFile"),
            (json!({"pool": "Bad_Pool"}), "pool"),
            (json!({"name": ""}), "name"),
            (json!({"name": "a b"}), "name"),
            (
                json!({"ipam": {"routes": [{"dst": "10.96.0.0"}]}}),
                "ipam.routes",
            ),
            (
                json!({"ipam": {"routes": [{"dst": "10.96.0.0/33"}]}}),
                "ipam.routes",
            ),
            (
                json!({"ipam": {"routes": [{"dst": "10.96.0.0/12", "gw": "x"}]}}),
                "ipam.routes",
            ),
            (
                json!({"ipam": {"routes": [{"dst": "10.96.0.0/12", "gw": "fd00::1"}]}}),
                "family",
            ),
            (
                json!({"cni.dev/valid-attachments": {"containerID": "a", "ifname": "eth0"}}),
                "valid-attachments",
            ),
            (
                json!({"cni.dev/valid-attachments": [{"containerID": "a"}]}),
                "valid-attachments",
            ),
        ];
        for (extra, needle) in cases {
            let err = parse(with(extra.clone())).unwrap_err();
            assert_eq!(err.code, Code::InvalidConfig, "{extra}");
            assert!(err.msg.contains(needle), "{extra}: {}", err.msg);
        }
        let mut no_name = minimal();
        no_name.as_object_mut().unwrap().remove("name");
        assert_eq!(parse(no_name).unwrap_err().code, Code::InvalidConfig);
    }

    #[test]
    fn ipv6_routes_are_refused_for_the_verbs_that_use_routes() {
        for (routes, needle) in [
            (
                json!([{"dst": "fd00:96::/108"}]),
                "route {dst \"fd00:96::/108\"} is IPv6",
            ),
            (
                json!([{"dst": "10.96.0.0/12"}, {"dst": "fd00:96::/108", "gw": "fd00::1"}]),
                "gw \"fd00::1\"} is IPv6",
            ),
        ] {
            let c = parse(with(json!({"ipam": {"routes": routes}}))).unwrap();
            let err = c.require_ipv4_routes().unwrap_err();
            assert_eq!(err.code, Code::InvalidConfig);
            assert!(err.msg.contains(needle), "{}", err.msg);
        }
        let v4 = parse(with(json!({"ipam": {"routes": [{"dst": "10.96.0.0/12"}]}}))).unwrap();
        v4.require_ipv4_routes().unwrap();
    }

    #[test]
    fn version_problems_are_code_1() {
        for v in [
            json!({"name": "n"}),
            json!({"cniVersion": "0.2.0", "name": "n"}),
        ] {
            assert_eq!(parse(v).unwrap_err().code, Code::IncompatibleVersion);
        }
    }

    #[test]
    fn bad_json_is_code_6() {
        assert_eq!(parse_json(b"{").unwrap_err().code, Code::Decoding);
        assert_eq!(parse_json(b"[1]").unwrap_err().code, Code::Decoding);
        assert_eq!(parse_json(b"").unwrap_err().code, Code::Decoding);
        let v = parse_json(br#"{"cniVersion": "0.4.0"}"#).unwrap();
        assert_eq!(raw_version(&v), "0.4.0");
        let bad_prev = with(json!({"prevResult": {"interfaces": 5}}));
        assert_eq!(parse(bad_prev).unwrap_err().code, Code::Decoding);
    }

    #[test]
    fn valid_attachments_for_gc() {
        let c = parse(with(json!({"cni.dev/valid-attachments": [
            {"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"},
            {"containerID": "odd:id", "ifname": "eth0"}]})))
        .unwrap();
        // Even ids this plugin would refuse in CNI_CONTAINERID are kept: dropping one would
        // make the agent release it.
        let valid = c.valid_attachments.unwrap();
        assert_eq!(valid.len(), 3);
        assert_eq!(valid[1].container_id, "c2");
        assert_eq!(valid[1].ifname, "net1");
        // Absent is not the same as empty: GC refuses to guess.
        assert_eq!(parse(minimal()).unwrap().valid_attachments, None);
        let empty = parse(with(json!({"cni.dev/valid-attachments": []}))).unwrap();
        assert_eq!(empty.valid_attachments, Some(vec![]));
    }
}
