//! When this operator started each HostNic's attach or detach job: the grace of its link
//! report (the link appearing, or going) counts from there.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

/// Per HostNic, the attach job it recorded and when. Kept in memory only: after a restart
/// the start is unknown, and the job is polled at once (the fallback is always safe).
#[derive(Debug, Default)]
pub struct LinkWait {
    started: Mutex<HashMap<String, (String, Timestamp)>>,
}

impl LinkWait {
    /// `hostnic` recorded attach job `job` at `at`.
    pub fn start(&self, hostnic: &str, job: &str, at: Timestamp) {
        self.lock()
            .insert(hostnic.to_string(), (job.to_string(), at));
    }

    /// When `hostnic` recorded `job` (None: another job, or not by this operator).
    pub fn started(&self, hostnic: &str, job: &str) -> Option<Timestamp> {
        self.lock()
            .get(hostnic)
            .filter(|(j, _)| j == job)
            .map(|(_, at)| *at)
    }

    /// `hostnic` waits for no link report any more (attached, failed or gone).
    pub fn done(&self, hostnic: &str) {
        self.lock().remove(hostnic);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Timestamp)>> {
        self.started.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_known_for_its_own_job_only() {
        let w = LinkWait::default();
        let at = Timestamp::from_second(1000).unwrap();
        assert_eq!(w.started("a", "j-1"), None);
        w.start("a", "j-1", at);
        assert_eq!(w.started("a", "j-1"), Some(at));
        assert_eq!(
            w.started("a", "j-2"),
            None,
            "a later job starts its own grace"
        );
        assert_eq!(w.started("b", "j-1"), None);
        w.done("a");
        assert_eq!(w.started("a", "j-1"), None);
    }
}
