//! CNI errors: every failure of the plugin becomes one of the spec's error codes, printed as the
//! spec's error JSON on stdout with a non-zero exit, so the runtime (and the operator reading its
//! events) learns what to fix.

use std::fmt;

use hostnic_agent_api::{ApiError, ErrorKind};

use crate::client::ClientError;

/// Error codes of the CNI specification (1.1.0, "Error" section) that this plugin returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 1: the config's cniVersion is not supported.
    IncompatibleVersion,
    /// 3: the container (its netns) is unknown or does not exist.
    UnknownContainer,
    /// 4: a CNI_* environment variable is missing or malformed.
    InvalidEnvironment,
    /// 5: the agent cannot be reached or did not answer in time.
    Io,
    /// 6: stdin or prevResult is not valid JSON of the expected shape.
    Decoding,
    /// 7: the network config is well-formed JSON but invalid.
    InvalidConfig,
    /// 11: no free NIC right now; the runtime should retry.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADDs now.
    NotAvailable,
    /// 999: anything else.
    Other,
}

impl Code {
    /// The numeric code on the wire.
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnknownContainer => 3,
            Code::InvalidEnvironment => 4,
            Code::Io => 5,
            Code::Decoding => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::Other => 999,
        }
    }
}

/// A failure as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    /// Spec error code.
    pub code: Code,
    /// What went wrong and what to fix.
    pub msg: String,
    /// More context, when there is any.
    pub details: Option<String>,
}

impl CniError {
    /// An error with a code and message.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// Code 4.
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidEnvironment, msg)
    }

    /// Code 7.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidConfig, msg)
    }

    /// The spec's error JSON, stamped with the config's cniVersion.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert("cniVersion".into(), cni_version.into());
        obj.insert("code".into(), self.code.number().into());
        obj.insert("msg".into(), self.msg.clone().into());
        if let Some(details) = &self.details {
            obj.insert("details".into(), details.clone().into());
        }
        serde_json::Value::Object(obj).to_string()
    }

    /// Maps a failed agent request to a CNI error. STATUS reports every failure as "plugin not
    /// available" (50); the other verbs distinguish "cannot reach the agent" (5) from what the
    /// agent said.
    pub fn from_client(err: ClientError, for_status: bool) -> Self {
        let mapped = match err {
            ClientError::Api { status, error } => Self::from_api(status, error),
            other => Self::new(Code::Io, other.to_string()),
        };
        if for_status {
            Self {
                code: Code::NotAvailable,
                ..mapped
            }
        } else {
            mapped
        }
    }

    fn from_api(status: u16, error: ApiError) -> Self {
        let code = match error.kind {
            ErrorKind::InvalidRequest => Code::InvalidConfig,
            // An agent that has not synced yet will be able to serve the ADD shortly.
            ErrorKind::TryAgainLater | ErrorKind::NotReady => Code::TryAgainLater,
            ErrorKind::UnknownContainer => Code::UnknownContainer,
            ErrorKind::CheckFailed | ErrorKind::Internal | ErrorKind::Unknown => Code::Other,
        };
        let details = match error.details {
            Some(d) => format!("agent answered {status}: {d}"),
            None => format!("agent answered {status}"),
        };
        Self::new(code, error.message).with_details(details)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}: {}", self.code.number(), self.msg)?;
        if let Some(d) = &self.details {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(kind: ErrorKind) -> ClientError {
        ClientError::Api {
            status: 503,
            error: ApiError {
                kind,
                message: "m".into(),
                details: None,
            },
        }
    }

    #[test]
    fn agent_errors_map_to_codes() {
        let code = |e, status| CniError::from_client(e, status).code.number();
        assert_eq!(code(api(ErrorKind::TryAgainLater), false), 11);
        assert_eq!(code(api(ErrorKind::NotReady), false), 11);
        assert_eq!(code(api(ErrorKind::InvalidRequest), false), 7);
        assert_eq!(code(api(ErrorKind::CheckFailed), false), 999);
        assert_eq!(code(api(ErrorKind::Internal), false), 999);
        assert_eq!(code(api(ErrorKind::UnknownContainer), false), 3);
        assert_eq!(code(api(ErrorKind::Unknown), false), 999);
        assert_eq!(code(ClientError::Timeout { secs: 1 }, false), 5);
        assert_eq!(
            code(
                ClientError::Connect {
                    socket: "/x".into(),
                    source: std::io::ErrorKind::NotFound.into()
                },
                false
            ),
            5
        );
        assert_eq!(code(ClientError::Timeout { secs: 1 }, true), 50);
        assert_eq!(code(api(ErrorKind::NotReady), true), 50);
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::env("CNI_IFNAME is empty").with_details("d");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_IFNAME is empty");
        assert_eq!(v["details"], "d");
        let v: serde_json::Value =
            serde_json::from_str(&CniError::config("x").to_json("1.1.0")).unwrap();
        assert!(v.get("details").is_none());
    }
}
