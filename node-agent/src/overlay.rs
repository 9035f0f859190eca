//! The agent's own HostNic writes laid over the reflector's view until the watch delivers them.
//!
//! Writes chain: a link report, then a claim, then a release may each build on the one before
//! while the watch still shows an object older than all of them. So every resourceVersion the
//! chain replaced or went through is remembered, and the overlay stands while the reflector
//! shows any of them; once it shows another version (our latest, or someone else's newer write)
//! the reflector is caught up and wins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hostnic_crds::HostNic;
use kube::ResourceExt;

/// One object's chain of our writes.
#[derive(Debug)]
struct Chain {
    /// Versions older than `latest` that the chain replaced or wrote.
    older: HashSet<Option<String>>,
    /// Our latest write.
    latest: Arc<HostNic>,
}

/// Our writes not yet seen through the watch, by HostNic name.
#[derive(Debug, Default)]
pub struct Overlay {
    chains: HashMap<String, Chain>,
}

impl Overlay {
    /// Remembers our write of `written`, which replaced version `replaced`.
    pub fn record(&mut self, replaced: Option<String>, written: HostNic) {
        let written = Arc::new(written);
        match self.chains.get_mut(&written.name_any()) {
            Some(chain) => {
                // Both were current before this write succeeded, so both are older than it.
                chain.older.insert(chain.latest.resource_version());
                chain.older.insert(replaced);
                chain.latest = written;
            }
            None => {
                self.chains.insert(
                    written.name_any(),
                    Chain {
                        older: HashSet::from([replaced]),
                        latest: written,
                    },
                );
            }
        }
    }

    /// The reflector's objects `seen` with our newer writes in their place; forgets chains the
    /// reflector has caught up with and those of objects it no longer shows.
    pub fn apply(&mut self, seen: Vec<Arc<HostNic>>) -> Vec<Arc<HostNic>> {
        let mut present = HashSet::with_capacity(seen.len());
        let out = seen
            .into_iter()
            .map(|nic| {
                let name = nic.name_any();
                let behind = self
                    .chains
                    .get(&name)
                    .filter(|c| c.older.contains(&nic.resource_version()))
                    .map(|c| c.latest.clone());
                if behind.is_none() {
                    self.chains.remove(&name);
                }
                present.insert(name);
                behind.unwrap_or(nic)
            })
            .collect();
        self.chains.retain(|name, _| present.contains(name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_crds::{HostNicPhase, HostNicSpec, HostNicStatus, NicRole};

    fn version(rv: &str, phase: HostNicPhase) -> HostNic {
        let mut nic = HostNic::new(
            "nic",
            HostNicSpec {
                pool: "p".into(),
                node: "n".into(),
                vxnet: "v".into(),
                role: NicRole::Pod,
            },
        );
        nic.metadata.resource_version = Some(rv.into());
        nic.status = Some(HostNicStatus {
            phase,
            ..Default::default()
        });
        nic
    }

    fn shown(overlay: &mut Overlay, seen: &HostNic) -> (String, HostNicPhase) {
        let out = overlay.apply(vec![Arc::new(seen.clone())]);
        let nic = &out[0];
        (
            nic.resource_version().unwrap_or_default(),
            nic.status.as_ref().map(|s| s.phase).unwrap_or_default(),
        )
    }

    #[test]
    fn chained_writes_stand_until_the_watch_shows_the_last() {
        use HostNicPhase::{Available, Bound, Released};
        let mut overlay = Overlay::default();
        let rv0 = version("0", Available);
        // A link report writes 1, a claim builds on it and writes 2 (Bound), a release 3.
        overlay.record(Some("0".into()), version("1", Available));
        overlay.record(Some("1".into()), version("2", Bound));
        // The watch still shows 0, then 1: the claim stays visible, never the stale Available.
        assert_eq!(shown(&mut overlay, &rv0), ("2".into(), Bound));
        assert_eq!(
            shown(&mut overlay, &version("1", Available)),
            ("2".into(), Bound)
        );
        overlay.record(Some("2".into()), version("3", Released));
        assert_eq!(
            shown(&mut overlay, &version("2", Bound)),
            ("3".into(), Released)
        );
        // Caught up: the reflector's object is shown and the chain forgotten.
        assert_eq!(
            shown(&mut overlay, &version("3", Released)),
            ("3".into(), Released)
        );
        assert_eq!(shown(&mut overlay, &rv0), ("0".into(), Available));
    }

    #[test]
    fn someone_elses_newer_write_wins_and_vanished_objects_are_forgotten() {
        let mut overlay = Overlay::default();
        overlay.record(Some("0".into()), version("1", HostNicPhase::Bound));
        let theirs = version("7", HostNicPhase::Available);
        assert_eq!(
            shown(&mut overlay, &theirs),
            ("7".into(), HostNicPhase::Available)
        );
        assert!(overlay.chains.is_empty());
        overlay.record(Some("7".into()), version("8", HostNicPhase::Bound));
        assert!(overlay.apply(vec![]).is_empty());
        assert!(overlay.chains.is_empty());
    }
}
