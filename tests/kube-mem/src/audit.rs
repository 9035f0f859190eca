//! The audit log: one record per request (who, what, allowed or not, the answer's code), so a
//! test can list what each component really used and compare it with its RBAC roles.

use std::sync::Mutex;

use serde::Serialize;

use crate::auth::{Attributes, Identity};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Order of arrival, from 1.
    pub seq: u64,
    pub user: String,
    pub groups: Vec<String>,
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection (HTTP
    /// method in lower case for non-resource paths).
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path for non-resource requests (discovery, openapi), empty otherwise.
    pub path: String,
    /// Whether authorization allowed the request.
    pub allowed: bool,
    /// The HTTP status answered (200 for a watch that started).
    pub code: u16,
}

impl AuditRecord {
    /// `verb group/resource[/subresource]`, e.g. `patch hostnic.qingcloud.com/hostnics/status`:
    /// the shape RBAC rules speak in.
    pub fn permission(&self) -> String {
        let res = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        format!("{} {}/{}", self.verb, self.api_group, res)
    }
}

/// Thread-safe, append-only list of records.
#[derive(Debug, Default)]
pub struct AuditLog {
    records: Mutex<Vec<AuditRecord>>,
}

impl AuditLog {
    pub fn record(&self, id: &Identity, a: &Attributes, allowed: bool, code: u16) {
        let mut r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let seq = r.len() as u64 + 1;
        r.push(AuditRecord {
            seq,
            user: id.user.clone(),
            groups: id.groups.clone(),
            verb: a.verb.clone(),
            api_group: a.api_group.clone(),
            resource: a.resource.clone(),
            subresource: a.subresource.clone(),
            namespace: a.namespace.clone(),
            name: a.name.clone(),
            path: a.path.clone(),
            allowed,
            code,
        });
    }

    pub fn snapshot(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
