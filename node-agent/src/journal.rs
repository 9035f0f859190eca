//! The node's own record of claims and of DELs still to do, as small JSON files in the state
//! directory next to the socket (`/run/hostnic`, tmpfs: it lives exactly as long as the pods).
//!
//! A claim is recorded before its link moves and again, with what was applied (address, routes,
//! MTU), once the pod's interface is configured. Recovery trusts that record, never today's
//! NicPool: a pod whose claim completed keeps its NIC whatever the pool says now, and a claim
//! interrupted before it completed is undone. Each file is written whole and renamed into place.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hostnic_agent_api::{Attachment, AttachmentKey, ReleaseRequest, pending_del};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How far a claim got.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Recorded on the HostNic; the link may be anywhere between the node and the pod.
    Moving,
    /// The link is in the pod, configured as `attachment` says.
    Attached,
}

/// One claim as this node made it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The HostNic.
    pub hostnic: String,
    /// The attachment it is bound to.
    pub key: AttachmentKey,
    /// The pod netns path.
    pub netns: String,
    /// How far the claim got.
    pub stage: Stage,
    /// What was applied in the pod, once [`Stage::Attached`]: the answer to a repeated ADD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
}

/// The state directory's claim records and DEL queue.
#[derive(Debug)]
pub struct Journal {
    claims: PathBuf,
    pending_del: PathBuf,
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

impl Journal {
    /// The journal of the agent serving `socket`: `claims/` and `pending-del/` next to it.
    pub fn for_socket(socket: &Path) -> Result<Self> {
        let pending_del = pending_del::dir(socket);
        let claims = pending_del.with_file_name("claims");
        for dir in [&claims, &pending_del] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("create journal directory"))?;
        }
        Ok(Self {
            claims,
            pending_del,
        })
    }

    fn claim_path(&self, hostnic: &str) -> PathBuf {
        self.claims.join(format!("{hostnic}.json"))
    }

    /// Records (or replaces) the claim of `record.hostnic`.
    pub fn record_claim(&self, record: &ClaimRecord) -> Result<()> {
        let body = serde_json::to_vec(record).map_err(|e| io("encode claim record")(e.into()))?;
        let path = self.claim_path(&record.hostnic);
        let tmp = self.claims.join(format!(".{}.tmp", record.hostnic));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("write claim record"))?;
        file.write_all(&body).map_err(io("write claim record"))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io("rename claim record"))
    }

    /// The recorded claim of `hostnic`, if it is for `key`.
    pub fn claim(&self, hostnic: &str, key: &AttachmentKey) -> Option<ClaimRecord> {
        self.record_of(hostnic).filter(|r| &r.key == key)
    }

    /// The recorded claim of `hostnic`, whatever its attachment.
    pub fn record_of(&self, hostnic: &str) -> Option<ClaimRecord> {
        let bytes = std::fs::read(self.claim_path(hostnic)).ok()?;
        match serde_json::from_slice::<ClaimRecord>(&bytes) {
            Ok(r) => Some(r),
            Err(error) => {
                tracing::warn!(hostnic, %error, "unreadable claim record; ignoring it");
                None
            }
        }
    }

    /// Forgets the claim of `hostnic` (released, reverted or stale).
    pub fn forget_claim(&self, hostnic: &str) {
        match std::fs::remove_file(self.claim_path(hostnic)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(hostnic, %error, "could not remove claim record"),
        }
    }

    /// HostNic names with a claim record.
    pub fn claimed(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.claims) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (!name.starts_with('.'))
                    .then(|| name.strip_suffix(".json").map(str::to_owned))
                    .flatten()
            })
            .collect()
    }

    /// Queues a DEL to retry later.
    pub fn queue_release(&self, req: &ReleaseRequest) -> Result<()> {
        pending_del::queue(&self.pending_del, req)
            .map(drop)
            .map_err(io("queue DEL"))
    }

    /// Every queued DEL; malformed entries are logged and dropped.
    pub fn queued_releases(&self) -> Vec<ReleaseRequest> {
        pending_del::list(&self.pending_del)
            .into_iter()
            .filter_map(|(path, req)| match req {
                Ok(r) => Some(r),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "dropping malformed queued DEL");
                    let _ = std::fs::remove_file(&path);
                    None
                }
            })
            .collect()
    }

    /// Whether a DEL of `key` is queued.
    pub fn is_queued(&self, key: &AttachmentKey) -> bool {
        self.pending_del.join(pending_del::file_name(key)).exists()
    }

    /// Removes the queued DEL of `key`, if any.
    pub fn dequeue_release(&self, key: &AttachmentKey) {
        let path = self.pending_del.join(pending_del::file_name(key));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "could not remove queued DEL")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> AttachmentKey {
        AttachmentKey {
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn claims_and_queued_dels_survive_a_new_journal() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/hostnic.sock");
        let j = Journal::for_socket(&socket).unwrap();
        let record = ClaimRecord {
            hostnic: "hn-1".into(),
            key: key("c1"),
            netns: "/var/run/netns/p".into(),
            stage: Stage::Moving,
            attachment: None,
        };
        j.record_claim(&record).unwrap();
        j.queue_release(&ReleaseRequest {
            key: key("c2"),
            netns: None,
        })
        .unwrap();
        let j = Journal::for_socket(&socket).unwrap();
        assert_eq!(j.claim("hn-1", &key("c1")), Some(record));
        assert_eq!(j.claim("hn-1", &key("other")), None);
        assert_eq!(j.claimed(), vec!["hn-1".to_owned()]);
        assert_eq!(j.queued_releases()[0].key, key("c2"));
        j.forget_claim("hn-1");
        j.dequeue_release(&key("c2"));
        assert!(j.claimed().is_empty());
        assert!(j.queued_releases().is_empty());
        // Queued next to the socket, where the plugin finds the same directory.
        assert!(dir.path().join("run/pending-del").is_dir());
        std::fs::write(dir.path().join("run/pending-del/junk"), "{").unwrap();
        assert!(j.queued_releases().is_empty());
        assert!(!dir.path().join("run/pending-del/junk").exists());
    }
}
