//! Uniquely named network namespaces for tests ("nodes" and "pods"), deleted on drop even when
//! the test fails. Tests never touch the host's own netns.

use std::path::PathBuf;
use std::process::{Command, Output};

use rand::Rng;

/// Prefix of every netns a hostnic test creates, so leftovers are easy to find.
pub const PREFIX: &str = "hn-";

/// A network namespace created for one test (`ip netns add`), deleted with everything in it on
/// drop.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Creates `hn-<tag>-<random>` with `lo` up. Panics if it cannot (tests only).
    pub fn new(tag: &str) -> Self {
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(6)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect();
        let name = format!("{PREFIX}{tag}-{suffix}");
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The netns name under `/var/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The netns path, as a CNI runtime passes it in `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs `ip -n <netns> <args>`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command inside the netns and returns its output, whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// Adds a veth pair inside the netns whose end `name` carries `mac`: a stand-in for a
    /// hot-plugged cloud NIC (this kernel has no dummy links). Returns the peer's name.
    pub fn add_fake_nic(&self, name: &str, mac: &str) -> String {
        let peer = format!("{name}p");
        self.ip(&[
            "link", "add", name, "address", mac, "type", "veth", "peer", "name", &peer,
        ]);
        self.ip(&["link", "set", &peer, "up"]);
        peer
    }

    /// The name of the link with this MAC (case-insensitive) and no master, if any.
    pub fn link_by_mac(&self, mac: &str) -> Option<String> {
        self.links()
            .into_iter()
            .find(|l| l.mac.eq_ignore_ascii_case(mac) && !l.has_master)
            .map(|l| l.name)
    }

    /// Every link in the netns.
    pub fn links(&self) -> Vec<Link> {
        let json = self.ip(&["-j", "link", "show"]);
        let links: Vec<serde_json::Value> = serde_json::from_str(&json).expect("ip -j link output");
        links
            .iter()
            .map(|l| Link {
                name: l["ifname"].as_str().unwrap_or_default().to_owned(),
                mac: l["address"].as_str().unwrap_or_default().to_owned(),
                has_master: l.get("master").is_some(),
                up: l["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "UP")),
            })
            .collect()
    }

    /// IPv4 addresses (`a.b.c.d/len`) on a link of the netns.
    pub fn addresses(&self, link: &str) -> Vec<String> {
        let json = self.ip(&["-j", "-4", "addr", "show", "dev", link]);
        let links: Vec<serde_json::Value> = serde_json::from_str(&json).expect("ip -j addr output");
        links
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| {
                format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or_default(),
                    a["prefixlen"]
                )
            })
            .collect()
    }

    /// Whether `ping -c1` from inside the netns reaches `addr` within `timeout_s` seconds.
    pub fn ping(&self, addr: &str, timeout_s: u32) -> bool {
        self.exec("ping", &["-c", "1", "-W", &timeout_s.to_string(), addr])
            .status
            .success()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !matches!(&deleted, Ok(out) if out.status.success()) {
            eprintln!("warning: could not delete netns {}: {deleted:?}", self.name);
        }
    }
}

/// A link as `ip -j link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// MAC address as the kernel prints it (lowercase).
    pub mac: String,
    /// Whether the link is enslaved (e.g. to a bridge).
    pub has_master: bool,
    /// Whether the link is administratively up.
    pub up: bool,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privilege::require_root;

    #[test]
    fn netns_with_a_fake_nic_is_removed_on_drop() {
        if !require_root("netns_with_a_fake_nic_is_removed_on_drop") {
            return;
        }
        let ns = TestNetns::new("fixture");
        let name = ns.name().to_owned();
        ns.add_fake_nic("nic0", "52:54:AA:00:00:01");
        assert_eq!(ns.link_by_mac("52:54:aa:00:00:01").as_deref(), Some("nic0"));
        ns.ip(&["addr", "add", "10.9.0.2/24", "dev", "nic0"]);
        assert_eq!(ns.addresses("nic0"), vec!["10.9.0.2/24".to_owned()]);
        drop(ns);
        assert!(!PathBuf::from("/var/run/netns").join(name).exists());
    }
}
