//! Locks by key: work on one NIC (or one attachment, or one pod netns) never overlaps, while
//! work on different ones runs in parallel.
//!
//! A claim used to hold one node-wide lock across its API write and its netns move, so twenty
//! pods starting at once on a node waited for each other. Each key's lock is made on first use
//! and dropped when nobody holds or awaits it, so the map stays as small as the work in flight.
//! Hand-rolled: the few crates offering this are unmaintained or pull in a second runtime, and
//! it is a map of tokio mutexes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

type Map<K> = Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>;

/// Async locks by key.
#[derive(Debug)]
pub struct Locks<K> {
    map: Map<K>,
}

impl<K> Default for Locks<K> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

/// One key's lock, held until dropped.
#[derive(Debug)]
pub struct Held<K: Eq + Hash> {
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
    map: Map<K>,
}

fn map_of<K>(map: &Map<K>) -> MutexGuard<'_, HashMap<K, Arc<tokio::sync::Mutex<()>>>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Eq + Hash + Clone> Locks<K> {
    fn entry(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        map_of(&self.map).entry(key.clone()).or_default().clone()
    }

    fn held(&self, key: K, guard: OwnedMutexGuard<()>) -> Held<K> {
        Held {
            key,
            guard: Some(guard),
            map: self.map.clone(),
        }
    }

    /// Takes `key`'s lock if nobody holds it.
    pub fn try_lock(&self, key: &K) -> Option<Held<K>> {
        let lock = self.entry(key);
        match lock.try_lock_owned() {
            Ok(guard) => Some(self.held(key.clone(), guard)),
            // Someone holds it, so the entry stays until they drop it.
            Err(_) => None,
        }
    }

    /// Takes `key`'s lock, waiting for whoever holds it.
    pub async fn lock(&self, key: K) -> Held<K> {
        let guard = self.entry(&key).lock_owned().await;
        self.held(key, guard)
    }

    /// Whether someone holds or awaits `key`'s lock.
    #[cfg(test)]
    fn is_busy(&self, key: &K) -> bool {
        map_of(&self.map).contains_key(key)
    }
}

/// Removes `key`'s entry when only the map refers to it: nobody holds or awaits it.
fn forget_if_unused<K: Eq + Hash>(map: &Map<K>, key: &K) {
    let mut map = map_of(map);
    if map.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
        map.remove(key);
    }
}

impl<K: Eq + Hash> Drop for Held<K> {
    fn drop(&mut self) {
        // Unlock first, so the count below no longer includes this guard.
        drop(self.guard.take());
        forget_if_unused(&self.map, &self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_is_exclusive_and_others_are_free() {
        let locks = Locks::default();
        let a = locks.try_lock(&"a").expect("free");
        assert!(locks.try_lock(&"a").is_none(), "held twice");
        let b = locks.try_lock(&"b").expect("another key is free");
        drop(b);
        let waiter = {
            let started = std::sync::Arc::new(tokio::sync::Notify::new());
            let locks = &locks;
            let (got, ()) = tokio::join!(
                async {
                    started.notify_one();
                    locks.lock("a").await
                },
                async {
                    started.notified().await;
                    tokio::task::yield_now().await;
                    assert!(locks.is_busy(&"a"));
                    drop(a);
                }
            );
            got
        };
        assert!(locks.try_lock(&"a").is_none());
        drop(waiter);
        assert!(!locks.is_busy(&"a"), "an unused lock stays in the map");
        assert!(!locks.is_busy(&"b"));
        assert!(map_of(&locks.map).is_empty());
    }
}
