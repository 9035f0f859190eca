//! HostNics the pool pass created or deleted that the reflector does not show yet. The pass
//! reads the HostNic store, not a LIST of every HostNic (and Node) per pass; the store lags the
//! pass's own writes by the watch, and a pass reading it alone would create a node's NICs again
//! (or delete another victim) in that window. Each write is laid over the store until the store
//! shows it, as client-go's controllers expect their own creations and deletions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostnic_crds::HostNic;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::sync::lock;

/// Longest a write is laid over a store that does not show it: the watch delivers in
/// milliseconds, so a write still unseen after this was undone meanwhile (a created HostNic
/// already deleted and gone, both events delivered) and must not linger as a phantom.
const UNSEEN_FOR: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Write {
    /// The object the API answered the create with.
    Created(Arc<HostNic>),
    /// A delete was sent for it.
    Deleted,
}

/// The pass's writes not yet seen in the store, by HostNic name.
#[derive(Debug, Default)]
pub struct OwnWrites(Mutex<HashMap<String, (Write, Instant)>>);

impl OwnWrites {
    /// The pass created `h` (as the API answered).
    pub fn created(&self, h: HostNic) {
        lock(&self.0).insert(h.name_any(), (Write::Created(Arc::new(h)), Instant::now()));
    }

    /// The pass sent the delete of `name`.
    pub fn deleted(&self, name: &str) {
        lock(&self.0).insert(name.to_string(), (Write::Deleted, Instant::now()));
    }

    /// The store's HostNics with the writes it does not show yet laid over them: a created one
    /// it lacks is added, a deleted one it shows alive is shown being deleted. Writes the store
    /// shows (or too old to be shown) are forgotten.
    pub fn overlay(&self, store: Vec<Arc<HostNic>>) -> Vec<Arc<HostNic>> {
        self.overlay_at(store, Instant::now())
    }

    fn overlay_at(&self, mut store: Vec<Arc<HostNic>>, now: Instant) -> Vec<Arc<HostNic>> {
        let mut writes = lock(&self.0);
        if writes.is_empty() {
            return store;
        }
        // Indexed once: a fill leaves a write per HostNic to look up in a store of as many.
        let index: HashMap<String, usize> = store
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name_any(), i))
            .collect();
        writes.retain(|name, (write, at)| {
            if now.duration_since(*at) > UNSEEN_FOR {
                return false;
            }
            match (write, index.get(name).copied()) {
                (Write::Created(_), Some(_)) => false,
                (Write::Created(h), None) => {
                    store.push(h.clone());
                    true
                }
                (Write::Deleted, None) => false,
                (Write::Deleted, Some(i)) if store[i].metadata.deletion_timestamp.is_some() => {
                    false
                }
                (Write::Deleted, Some(i)) => {
                    let mut h = (*store[i]).clone();
                    h.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
                    store[i] = Arc::new(h);
                    true
                }
            }
        });
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_crds::{HostNicSpec, NicRole};

    fn hn(name: &str) -> Arc<HostNic> {
        Arc::new(HostNic::new(
            name,
            HostNicSpec {
                pool: "p".into(),
                node: "n".into(),
                vxnet: "vxnet-a".into(),
                role: NicRole::Pod,
            },
        ))
    }

    fn names(v: &[Arc<HostNic>]) -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|h| h.name_any()).collect();
        n.sort();
        n
    }

    #[test]
    fn a_creation_shows_until_the_store_has_it() {
        let w = OwnWrites::default();
        w.created((*hn("b")).clone());
        let now = Instant::now();
        assert_eq!(names(&w.overlay_at(vec![hn("a")], now)), ["a", "b"]);
        // Seen once: forgotten, so the store alone speaks from then on (deleted and gone).
        assert_eq!(
            names(&w.overlay_at(vec![hn("a"), hn("b")], now)),
            ["a", "b"]
        );
        assert_eq!(names(&w.overlay_at(vec![hn("a")], now)), ["a"]);
    }

    #[test]
    fn a_deletion_shows_until_the_store_has_it_deleting_or_gone() {
        let w = OwnWrites::default();
        w.deleted("a");
        let now = Instant::now();
        let got = w.overlay_at(vec![hn("a")], now);
        assert!(got[0].metadata.deletion_timestamp.is_some());
        let mut deleting = (*hn("a")).clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let got = w.overlay_at(vec![Arc::new(deleting)], now);
        assert!(got[0].metadata.deletion_timestamp.is_some());
        // Seen deleting: forgotten.
        assert!(
            w.overlay_at(vec![hn("a")], now)[0]
                .metadata
                .deletion_timestamp
                .is_none()
        );
    }

    #[test]
    fn a_write_never_seen_is_dropped_after_the_bound() {
        let w = OwnWrites::default();
        w.created((*hn("b")).clone());
        let later = Instant::now() + UNSEEN_FOR + Duration::from_secs(1);
        assert!(w.overlay_at(Vec::new(), later).is_empty());
    }
}
