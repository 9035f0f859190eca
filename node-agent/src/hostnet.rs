//! The node's kernel settings and nat rule that pods routing the Service CIDR through a node NIC need.
//!
//! A pool route with gateway `0.0.0.0` sends a pod's Service traffic to the node's NIC in the
//! pod's vxnet, where kube-proxy DNATs it to a backend. When the backend is in a vxnet too, it
//! answers the pod directly over the vxnet (or through the VPC router), never through this
//! node, so the pod gets a reply from the backend's address instead of the ClusterIP and the
//! connection never opens. kube-proxy masquerades only sources outside its `clusterCIDR`, and
//! a hostnic cluster declares its vxnets as the pod network (or nothing). So the agent
//! masquerades, in the node netns, every DNATed connection whose original destination is such
//! a route's destination (chain [`CHAIN`], hooked first into nat `POSTROUTING`): the backend
//! then answers this node, which undoes both translations. Pod-to-pod traffic is not DNATed
//! and keeps its source.
//!
//! The node also forwards that traffic out of the NIC it came in on, and answers on one NIC
//! for traffic that arrived on another. Hence the sysctls ([`conf_writes`]): no ICMP redirects
//! (forwarding back out of the NIC makes the kernel send the pod one per connection, naming
//! the backend as the next hop; useless at best), loose instead of strict
//! reverse-path filtering, and ARP answered and announced per NIC.
//!
//! The node must forward IPv4 (`net.ipv4.ip_forward=1`, as kubeadm requires): checked, and
//! logged as an error when off. kube-proxy needs no particular setting.
//!
//! The rules are made with the `iptables` command (nft backend; it also worked with kube-proxy
//! rules written by iptables-legacy, measured once), run on a thread inside the node netns;
//! `/proc/sys/net` is per netns too.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hostnic_crds::NicPool;
use ipnet::Ipv4Net;

use crate::netns::{self, Netns};
use crate::watch::View;
use crate::{Error, Result};

/// The agent's own nat chain, jumped to first from `POSTROUTING`.
pub const CHAIN: &str = "HOSTNIC-POSTROUTING";

/// How often the rules and sysctls are checked and repaired; pool route edits and new NICs
/// are picked up at the next pass.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// The destinations pods send through a node NIC: every pool route with gateway `0.0.0.0`
/// (the Service CIDR), over all pools, since any pool of any node may route through its node.
pub fn via_node_destinations(pools: &[Arc<NicPool>]) -> BTreeSet<Ipv4Net> {
    pools
        .iter()
        .flat_map(|p| p.spec.routes.iter())
        .filter(|r| r.via_node())
        // The CRD validates the pattern; a route that still does not parse gives no rule.
        .filter_map(|r| r.destination.parse::<Ipv4Net>().ok())
        .map(|net| net.trunc())
        .collect()
}

/// The chain's rules, in the canonical form `iptables -S` prints them, so the installed chain
/// can be compared line by line.
pub fn chain_rules(destinations: &BTreeSet<Ipv4Net>) -> Vec<String> {
    destinations
        .iter()
        .map(|dst| {
            // --random-fully as kube-proxy: source ports picked at random avoid the insert
            // races of many connections to one backend.
            format!(
                "-A {CHAIN} -m conntrack --ctstate DNAT --ctorigdst {dst} -j MASQUERADE --random-fully"
            )
        })
        .collect()
}

/// The jump into [`CHAIN`], as `iptables -S POSTROUTING` prints it.
fn jump_rule() -> String {
    format!("-A POSTROUTING -j {CHAIN}")
}

/// What must change in the nat table, given `iptables -t nat -S` of `POSTROUTING` and of
/// [`CHAIN`] (`None`: the chain does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    /// The chain's content is wrong or missing: rewrite it (atomically, with the jump).
    pub rewrite_chain: bool,
    /// The jump is missing from `POSTROUTING`.
    pub add_jump: bool,
}

impl NatPlan {
    /// Compares what is installed with `want`.
    pub fn new(postrouting: &str, chain: Option<&str>, want: &[String]) -> Self {
        let have: Vec<&str> = chain
            .map(|c| c.lines().filter(|l| l.starts_with("-A ")).collect())
            .unwrap_or_default();
        let jump = jump_rule();
        Self {
            rewrite_chain: chain.is_none()
                || have != want.iter().map(String::as_str).collect::<Vec<_>>(),
            add_jump: !postrouting.lines().any(|l| l == jump),
        }
    }

    /// Nothing to do.
    pub fn is_noop(&self) -> bool {
        !self.rewrite_chain && !self.add_jump
    }

    /// The `iptables-restore --noflush` input that makes the table right: declaring the chain
    /// flushes it, and the jump goes first so that no earlier `RETURN`/`ACCEPT` skips it.
    pub fn restore_input(&self, want: &[String]) -> String {
        let mut s = String::from("*nat\n");
        s.push_str(&format!(":{CHAIN} - [0:0]\n"));
        for rule in want {
            s.push_str(rule);
            s.push('\n');
        }
        if self.add_jump {
            s.push_str(&format!("-I POSTROUTING 1 -j {CHAIN}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// A sysctl of `/proc/sys/net/ipv4/conf/<scope>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conf {
    /// Reverse-path filter: the kernel uses the highest of `all` and the interface's value.
    RpFilter,
    /// Which ARP requests to answer: the highest of `all` and the interface's value applies.
    ArpIgnore,
    /// Which source address ARP requests use: the highest of `all` and the interface's applies.
    ArpAnnounce,
    /// Send ICMP redirects: on when `all` or the interface says so.
    SendRedirects,
}

impl Conf {
    fn file(self) -> &'static str {
        match self {
            Self::RpFilter => "rp_filter",
            Self::ArpIgnore => "arp_ignore",
            Self::ArpAnnounce => "arp_announce",
            Self::SendRedirects => "send_redirects",
        }
    }

    /// The value to write at `scope` (`all`, `default` or an interface) given the current one,
    /// or `None` when it is fine as it is. Only ever loosens what breaks a multi-NIC node and
    /// never undoes a stricter choice the node's owner made for ARP.
    pub fn wanted(self, scope: &str, current: u8) -> Option<u8> {
        let all = scope == "all";
        match self {
            // Strict (1) drops what arrives on one NIC and is answered through another (a pod
            // reaching the node's primary address); loose (2) still drops unroutable sources.
            Self::RpFilter => (current == 1).then_some(2),
            // 1: answer only for addresses of the NIC asked; the highest value wins, so `all`.
            Self::ArpIgnore => (all && current < 1).then_some(1),
            // 2: the best local address of the NIC as the ARP source; `all` as above.
            Self::ArpAnnounce => (all && current < 2).then_some(2),
            // Forwarding back out of the NIC it came in on is normal here; any scope left on
            // turns redirects on for that NIC.
            Self::SendRedirects => (current != 0).then_some(0),
        }
    }
}

/// Every setting the node needs.
pub const CONFS: [Conf; 4] = [
    Conf::RpFilter,
    Conf::ArpIgnore,
    Conf::ArpAnnounce,
    Conf::SendRedirects,
];

/// The writes that make `current` (scope, setting, value) right.
pub fn conf_writes(current: &[(String, Conf, u8)]) -> Vec<(String, Conf, u8)> {
    current
        .iter()
        .filter_map(|(scope, conf, value)| {
            conf.wanted(scope, *value)
                .map(|new| (scope.clone(), *conf, new))
        })
        .collect()
}

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The nat table was written.
    pub nat_changed: bool,
    /// Sysctls written: `<scope>/<name>=<value>`.
    pub sysctls: Vec<String>,
}

/// Makes the node netns right for `destinations`: sysctls, then the chain and its jump. Runs
/// in `node`; idempotent (a second pass changes nothing).
pub async fn ensure(node: Arc<Netns>, destinations: BTreeSet<Ipv4Net>) -> Result<Applied> {
    netns::run_in(vec![node], move |_| async move {
        let sysctls = ensure_confs(Path::new(CONF_DIR))?;
        let want = chain_rules(&destinations);
        let plan = NatPlan::new(
            &iptables(&["-t", "nat", "-S", "POSTROUTING"])?,
            chain_listing()?.as_deref(),
            &want,
        );
        if !plan.is_noop() {
            restore(&plan.restore_input(&want))?;
        }
        Ok(Applied {
            nat_changed: !plan.is_noop(),
            sysctls,
        })
    })
    .await
}

/// Whether the node forwards IPv4 (`net.ipv4.ip_forward`): without it no Service traffic of a
/// pod gets past the node's NIC. The agent only checks it: kubeadm requires it of every node,
/// and writing it resets every interface's `forwarding`, which is the node owner's choice.
pub async fn forwarding(node: Arc<Netns>) -> Result<bool> {
    netns::run_in(vec![node], move |_| async move {
        let text = std::fs::read_to_string(IP_FORWARD).map_err(|source| Error::Io {
            context: "read net.ipv4.ip_forward",
            source,
        })?;
        Ok(text.trim() == "1")
    })
    .await
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Removes the jump and the chain from the node netns (uninstall); nothing to do when they are
/// gone. The sysctls stay: they are what a multi-NIC node needs anyway, and the values before
/// the agent are not known after a restart.
pub async fn remove(node: Arc<Netns>) -> Result<bool> {
    netns::run_in(vec![node], move |_| async move {
        if chain_listing()?.is_none() {
            return Ok(false);
        }
        let jump = jump_rule();
        let jumps = iptables(&["-t", "nat", "-S", "POSTROUTING"])?
            .lines()
            .filter(|l| *l == jump)
            .count();
        let mut input = String::from("*nat\n");
        for _ in 0..jumps {
            input.push_str(&format!("-D POSTROUTING -j {CHAIN}\n"));
        }
        input.push_str(&format!("-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n"));
        restore(&input)?;
        Ok(true)
    })
    .await
}

/// Keeps the node right for as long as the agent runs: a pass once the pools are known, then
/// every `interval`. A failed pass is logged and retried; the claim path does not depend on it.
pub async fn keep_loop(view: Arc<View>, node: Arc<Netns>, interval: Duration) {
    view.wait_synced().await;
    loop {
        let destinations = via_node_destinations(&view.pools());
        if !destinations.is_empty() && matches!(forwarding(node.clone()).await, Ok(false)) {
            tracing::error!(
                destinations = ?destinations,
                "net.ipv4.ip_forward is 0 on this node: pods cannot reach Services through it"
            );
        }
        match ensure(node.clone(), destinations.clone()).await {
            Ok(applied) if applied.nat_changed || !applied.sysctls.is_empty() => tracing::info!(
                chain = CHAIN,
                destinations = ?destinations,
                nat_changed = applied.nat_changed,
                sysctls = ?applied.sysctls,
                "host networking for the Service route set"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(
                %error,
                "cannot set host networking: pods routing Services through this node cannot reach Services backed in their vxnet"
            ),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Uninstall: removes the nat chain once (logged), instead of [`keep_loop`].
pub async fn remove_once(node: Arc<Netns>) {
    match remove(node).await {
        Ok(removed) => tracing::info!(chain = CHAIN, removed, "uninstall: host nat rule removed"),
        Err(error) => {
            tracing::error!(%error, chain = CHAIN, "uninstall: cannot remove host nat rule")
        }
    }
}

const CONF_DIR: &str = "/proc/sys/net/ipv4/conf";

/// Reads every setting of every scope under `dir` and writes what [`conf_writes`] says.
fn ensure_confs(dir: &Path) -> Result<Vec<String>> {
    let io = |context: &'static str| move |source| Error::Io { context, source };
    let mut current = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list ipv4 conf scopes"))? {
        let scope = entry.map_err(io("list ipv4 conf scopes"))?.file_name();
        let scope = scope.to_string_lossy().into_owned();
        for conf in CONFS {
            // An interface that went away meanwhile has nothing to set.
            let Ok(text) = std::fs::read_to_string(conf_path(dir, &scope, conf)) else {
                continue;
            };
            if let Ok(value) = text.trim().parse::<u8>() {
                current.push((scope.clone(), conf, value));
            }
        }
    }
    let mut written = Vec::new();
    for (scope, conf, value) in conf_writes(&current) {
        match std::fs::write(conf_path(dir, &scope, conf), value.to_string()) {
            Ok(()) => written.push(format!("{scope}/{}={value}", conf.file())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    context: "write ipv4 conf sysctl",
                    source,
                });
            }
        }
    }
    Ok(written)
}

fn conf_path(dir: &Path, scope: &str, conf: Conf) -> PathBuf {
    dir.join(scope).join(conf.file())
}

/// `iptables -S` of [`CHAIN`], or `None` when the chain does not exist.
fn chain_listing() -> Result<Option<String>> {
    let out = run(Command::new("iptables").args(["-w", "-t", "nat", "-S", CHAIN]))?;
    Ok(out.status.success().then(|| stdout(&out)))
}

/// Runs `iptables -w <args>`, failing on a non-zero exit.
fn iptables(args: &[&str]) -> Result<String> {
    let out = run(Command::new("iptables").arg("-w").args(args))?;
    if !out.status.success() {
        return Err(command_failed("iptables", &out));
    }
    Ok(stdout(&out))
}

/// Feeds `input` to `iptables-restore --noflush` (one atomic transaction).
fn restore(input: &str) -> Result<()> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io {
            context: "run iptables-restore",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|source| Error::Io {
                context: "write to iptables-restore",
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Io {
        context: "wait for iptables-restore",
        source,
    })?;
    if !out.status.success() {
        return Err(command_failed("iptables-restore", &out));
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            context: "run iptables",
            source,
        })
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn command_failed(what: &'static str, out: &Output) -> Error {
    Error::Io {
        context: what,
        source: std::io::Error::other(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<Ipv4Net> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn destinations_are_the_via_node_routes_of_every_pool() {
        use hostnic_crds::{NicPoolSpec, Route};
        let pool = |routes: &[(&str, &str)]| {
            let spec: NicPoolSpec = serde_json::from_value(serde_json::json!({
                "vxnets": ["vxnet-abc1234"],
                "routes": routes
                    .iter()
                    .map(|(d, g)| Route { destination: (*d).into(), gateway: (*g).into() })
                    .collect::<Vec<_>>(),
            }))
            .unwrap();
            Arc::new(NicPool::new("p", spec))
        };
        let pools = [
            pool(&[("10.96.0.0/12", "0.0.0.0"), ("172.16.0.0/16", "10.0.0.9")]),
            pool(&[("10.96.1.2/12", "0.0.0.0"), ("10.200.0.0/16", "0.0.0.0")]),
        ];
        assert_eq!(
            via_node_destinations(&pools),
            nets(&["10.96.0.0/12", "10.200.0.0/16"])
        );
    }

    #[test]
    fn plan_is_a_noop_only_when_chain_and_jump_match() {
        let want = chain_rules(&nets(&["10.96.0.0/12"]));
        let chain = format!("-N {CHAIN}\n{}\n", want[0]);
        let post = format!(
            "-P POSTROUTING ACCEPT\n-A POSTROUTING -j {CHAIN}\n-A POSTROUTING -j KUBE-POSTROUTING\n"
        );
        assert!(NatPlan::new(&post, Some(&chain), &want).is_noop());

        let plan = NatPlan::new("-P POSTROUTING ACCEPT\n", None, &want);
        assert_eq!(
            plan,
            NatPlan {
                rewrite_chain: true,
                add_jump: true
            }
        );
        let input = plan.restore_input(&want);
        assert!(
            input.contains(&format!("-I POSTROUTING 1 -j {CHAIN}\n")),
            "{input}"
        );

        let stale = format!("-N {CHAIN}\n-A {CHAIN} -j MASQUERADE\n");
        let plan = NatPlan::new(&post, Some(&stale), &want);
        assert!(plan.rewrite_chain && !plan.add_jump);
        assert!(!plan.restore_input(&want).contains("POSTROUTING 1"));
    }

    #[test]
    fn sysctls_only_loosen_what_breaks_a_multi_nic_node() {
        use Conf::*;
        let current: Vec<(String, Conf, u8)> = vec![
            ("all".into(), RpFilter, 1),
            ("eth0".into(), RpFilter, 0),
            ("eth1".into(), RpFilter, 2),
            ("all".into(), ArpIgnore, 0),
            ("eth1".into(), ArpIgnore, 0),
            ("all".into(), ArpAnnounce, 2),
            ("all".into(), SendRedirects, 1),
            ("eth1".into(), SendRedirects, 1),
            ("lo".into(), SendRedirects, 0),
        ];
        assert_eq!(
            conf_writes(&current),
            vec![
                ("all".into(), RpFilter, 2),
                ("all".into(), ArpIgnore, 1),
                ("all".into(), SendRedirects, 0),
                ("eth1".into(), SendRedirects, 0),
            ]
        );
        // A stricter ARP choice of the node's owner stays.
        assert_eq!(ArpIgnore.wanted("all", 2), None);
    }
}
