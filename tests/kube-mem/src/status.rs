//! API errors rendered as `Status` bodies shaped like the real API server's, so clients
//! (kube-rs `ErrorResponse`, kubectl) see the same reasons, codes and causes.

use serde_json::{Value, json};

/// One field-level cause of an `Invalid` error (`details.causes[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    /// The message without the field prefix, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `spec.size` or `spec.vxnets[0]`.
    pub field: String,
}

impl Cause {
    pub fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason,
            message: message.into(),
            field: field.into(),
        }
    }

    /// The `field: message` line the real server prints.
    pub fn line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// An error answered as a `Status` object with an HTTP status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// What an error names: a resource (plural, group) and an object name.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    /// `pods` or `nicpools.hostnic.qingcloud.com`, as the server qualifies resources.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut d = json!({"name": self.name, "kind": self.plural});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(s: Subject<'_>) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", s.qualified_resource(), s.name),
            )
        }
    }

    pub fn already_exists(s: Subject<'_>) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", s.qualified_resource(), s.name),
            )
        }
    }

    pub fn conflict(s: Subject<'_>) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    s.qualified_resource(),
                    s.name
                ),
            )
        }
    }

    /// A precondition (uid or resourceVersion in DeleteOptions) did not hold.
    pub fn precondition(s: Subject<'_>, what: &str) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {what}",
                    s.qualified_resource(),
                    s.name
                ),
            )
        }
    }

    pub fn invalid(s: Subject<'_>, causes: Vec<Cause>) -> Self {
        let lines: Vec<String> = causes.iter().map(Cause::line).collect();
        let joined = if lines.len() == 1 {
            lines[0].clone()
        } else {
            format!("[{}]", lines.join(", "))
        };
        let mut details = json!({
            "name": s.name,
            "kind": s.kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        });
        if !s.group.is_empty() {
            details["group"] = json!(s.group);
        }
        ApiError {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{} \"{}\" is invalid: {joined}", s.qualified_kind(), s.name),
            )
        }
    }

    /// A patch that cannot be applied (e.g. a failed JSON-patch `test`).
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        ApiError {
            details: Some(json!({"causes": [{"message": detail}]})),
            ..Self::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {detail}"),
            )
        }
    }

    /// A server-side apply that would take fields other managers own.
    pub fn apply_conflicts(conflicts: &[(String, Vec<String>)]) -> Self {
        let fields: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": {}", crate::managed::dotted(p)))
            .collect();
        let n = conflicts.len();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": crate::managed::dotted(p)}))
            .collect();
        ApiError {
            details: Some(json!({"causes": causes})),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    fields.join(", ")
                ),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"
            ),
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// An admission denial with the `reason` a policy's validation names and its HTTP code.
    pub fn denied(reason: &'static str, message: impl Into<String>) -> Self {
        let code = match reason {
            "Invalid" => 422,
            "Unauthorized" => 401,
            "RequestEntityTooLarge" => 413,
            _ => 403,
        };
        Self::new(code, reason, message)
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// What API Priority and Fairness answers when a request's priority level is full.
    pub fn too_many_requests() -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.details = Some(json!({"retryAfterSeconds": 1}));
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object the server answers with.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
