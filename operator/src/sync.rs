//! The operator's one way to take a std mutex.

use std::sync::{Mutex, MutexGuard};

/// The guard, poisoned or not: no holder panics halfway through a write of what these guard
/// (maps of calls, rounds and batches), so a poisoned lock still holds consistent data.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
