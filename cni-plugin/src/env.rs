//! The CNI_* environment the runtime sets: which verb, which sandbox, which interface, and the
//! Kubernetes pod from CNI_ARGS. Validated here so every verb gets the same checks (spec
//! "Parameters"; the rules follow libcni's skel and utils).

use std::collections::BTreeMap;

use hostnic_agent_api::{AttachmentKey, PodInfo};

use crate::error::CniError;

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

/// The CNI verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach a NIC to a sandbox.
    Add,
    /// Detach it.
    Del,
    /// Verify it.
    Check,
    /// Release attachments the runtime no longer knows.
    Gc,
    /// Is the plugin ready for ADDs.
    Status,
    /// Which spec versions the plugin speaks.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(value: Option<&str>) -> Result<Self, CniError> {
        match value {
            None | Some("") => Err(CniError::env(
                "CNI_COMMAND is not set: hostnic is a CNI plugin run by a container runtime \
                 (set CNI_COMMAND to ADD, DEL, CHECK, GC, STATUS or VERSION)",
            )),
            Some("ADD") => Ok(Command::Add),
            Some("DEL") => Ok(Command::Del),
            Some("CHECK") => Ok(Command::Check),
            Some("GC") => Ok(Command::Gc),
            Some("STATUS") => Ok(Command::Status),
            Some("VERSION") => Ok(Command::Version),
            Some(other) => Err(CniError::env(format!(
                "unknown CNI_COMMAND {other:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"
            ))),
        }
    }
}

/// The variables of a per-attachment verb (ADD, DEL, CHECK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentEnv {
    /// CNI_CONTAINERID and CNI_IFNAME.
    pub key: AttachmentKey,
    /// CNI_NETNS; empty only for DEL (the runtime may have removed the netns already).
    pub netns: String,
    /// CNI_ARGS.
    pub args: CniArgs,
}

impl AttachmentEnv {
    /// Reads and validates the variables `command` needs, through `get` (the process
    /// environment in production, a map in tests).
    pub fn read(command: Command, get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        validate_container_id(&container_id)?;
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        validate_ifname(&ifname)?;
        let netns = get("CNI_NETNS").unwrap_or_default();
        if netns.is_empty() && command != Command::Del {
            return Err(CniError::env(
                "CNI_NETNS is not set: ADD and CHECK need the path of the sandbox's network \
                 namespace",
            ));
        }
        if !netns.is_empty() && !netns.starts_with('/') {
            return Err(CniError::env(format!(
                "CNI_NETNS {netns:?} is not an absolute path: the agent runs in another \
                 directory and needs the full path of the netns"
            )));
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(Self {
            key: AttachmentKey {
                container_id,
                ifname,
            },
            netns,
            args,
        })
    }
}

/// Checks CNI_CONTAINERID as libcni does: non-empty, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return Err(CniError::env("CNI_CONTAINERID is not set or empty"));
    };
    let ok = first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?} has invalid characters: use letters, digits, '_', '.', '-', \
             starting with a letter or digit"
        )))
    }
}

/// Checks CNI_IFNAME as the kernel and libcni do.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("is not set or empty".to_owned())
    } else if name.len() > MAX_IFNAME_LEN {
        Some(format!("is longer than {MAX_IFNAME_LEN} bytes"))
    } else if name == "." || name == ".." {
        Some("may not be '.' or '..'".to_owned())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("may not contain '/', ':' or whitespace".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(CniError::env(format!(
            "CNI_IFNAME {name:?} {p}: it must be a valid Linux interface name such as eth0"
        ))),
    }
}

/// CNI_ARGS: `KEY=VALUE` pairs separated by `;`, in any order. The Kubernetes keys are read;
/// every other key is ignored whatever `IgnoreUnknown` says, since this plugin has no other
/// arguments that could be misspelt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: BTreeMap<String, String>,
}

impl CniArgs {
    /// Parses CNI_ARGS; a pair without `=` is an error (code 4).
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let mut pairs = BTreeMap::new();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(CniError::env(format!(
                    "CNI_ARGS has {pair:?}, which is not KEY=VALUE (pairs are separated by ';')"
                )));
            };
            pairs.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(Self { pairs })
    }

    /// A non-empty value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The pod, from K8S_POD_NAMESPACE, K8S_POD_NAME and (optionally) K8S_POD_UID.
    pub fn pod(&self) -> Result<PodInfo, CniError> {
        match (self.get("K8S_POD_NAMESPACE"), self.get("K8S_POD_NAME")) {
            (Some(namespace), Some(name)) => Ok(PodInfo {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: self.get("K8S_POD_UID").map(str::to_owned),
            }),
            _ => Err(CniError::env(
                "CNI_ARGS lacks K8S_POD_NAMESPACE and K8S_POD_NAME: hostnic gives NICs to \
                 Kubernetes pods, and the runtime (kubelet's CRI) passes both",
            )),
        }
    }

    /// K8S_POD_INFRA_CONTAINER_ID, the sandbox container (logged, for matching runtime logs).
    pub fn infra_container_id(&self) -> Option<&str> {
        self.get("K8S_POD_INFRA_CONTAINER_ID")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const OK: [(&str, &str); 4] = [
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/var/run/netns/p"),
        ("CNI_ARGS", "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns"),
    ];

    #[test]
    fn commands_parse_and_unknown_is_code_4() {
        assert_eq!(Command::parse(Some("ADD")).unwrap(), Command::Add);
        assert_eq!(Command::parse(Some("GC")).unwrap(), Command::Gc);
        assert_eq!(
            Command::parse(None).unwrap_err().code,
            Code::InvalidEnvironment
        );
        let e = Command::parse(Some("add")).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnvironment);
        assert!(e.msg.contains("\"add\""), "{}", e.msg);
    }

    #[test]
    fn reads_a_complete_environment() {
        let e = AttachmentEnv::read(Command::Add, env(&OK)).unwrap();
        assert_eq!(e.key.container_id, "abc123");
        assert_eq!(e.key.ifname, "eth0");
        assert_eq!(e.netns, "/var/run/netns/p");
        assert_eq!(e.args.pod().unwrap().name, "p");
    }

    #[test]
    fn netns_is_required_except_for_del() {
        let vars: Vec<_> = OK
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        for cmd in [Command::Add, Command::Check] {
            let err = AttachmentEnv::read(cmd, env(&vars)).unwrap_err();
            assert_eq!(err.code, Code::InvalidEnvironment);
            assert!(err.msg.contains("CNI_NETNS"));
        }
        assert_eq!(
            AttachmentEnv::read(Command::Del, env(&vars)).unwrap().netns,
            ""
        );
        let mut rel = vars.clone();
        rel.push(("CNI_NETNS", "netns/p"));
        assert!(AttachmentEnv::read(Command::Add, env(&rel)).is_err());
    }

    #[test]
    fn bad_interface_names_are_code_4() {
        for bad in [
            "",
            "a234567890123456",
            "a/b",
            "a b",
            "a\tb",
            ".",
            "..",
            "eth0:1",
        ] {
            let err = validate_ifname(bad).unwrap_err();
            assert_eq!(err.code, Code::InvalidEnvironment, "{bad:?}");
        }
        for good in ["eth0", "a23456789012345", "net-1.2", "..."] {
            validate_ifname(good).unwrap();
        }
    }

    #[test]
    fn container_ids_follow_libcni() {
        validate_container_id("0a_b.c-d").unwrap();
        for bad in ["", "-a", "a/b", "a b"] {
            assert_eq!(
                validate_container_id(bad).unwrap_err().code,
                Code::InvalidEnvironment,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cni_args_any_order_unknown_keys_ignored() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_UID=u1;FOO=bar;K8S_POD_INFRA_CONTAINER_ID=c9;\
             K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=prod",
        )
        .unwrap();
        let pod = a.pod().unwrap();
        assert_eq!(
            pod,
            PodInfo {
                namespace: "prod".into(),
                name: "web-0".into(),
                uid: Some("u1".into())
            }
        );
        assert_eq!(a.infra_container_id(), Some("c9"));
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(
            CniArgs::parse("K8S_POD_NAME=p;;")
                .unwrap()
                .get("K8S_POD_NAME"),
            Some("p")
        );
    }

    #[test]
    fn malformed_or_incomplete_cni_args() {
        assert_eq!(
            CniArgs::parse("K8S_POD_NAME").unwrap_err().code,
            Code::InvalidEnvironment
        );
        let only_name = CniArgs::parse("K8S_POD_NAME=p").unwrap();
        assert_eq!(only_name.pod().unwrap_err().code, Code::InvalidEnvironment);
        let empty_ns = CniArgs::parse("K8S_POD_NAME=p;K8S_POD_NAMESPACE=").unwrap();
        assert!(empty_ns.pod().is_err());
    }
}
