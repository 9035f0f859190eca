//! The crate's one error type, classified so callers (and the retry loop) can tell throttling
//! and transient faults from requests that will never succeed.

use crate::config::ConfigError;
use crate::ids::IdError;
use crate::wire::{Action, RetCode};

/// The text of the transient 1400 that CSI and CCM retry.
const LEASE_NOT_READY: &str = "lease info not ready";

/// Words that mark a 2500 as the account's API request quota (requests per hour or day)
/// rather than a resource quota (NIC count). The API documents one code for both and no
/// wording (reference §4); these cover "api request quota exceeded" and throttling texts.
const REQUEST_QUOTA_WORDS: [&str; 4] = ["request", "throttl", "rate limit", "api quota"];

/// Whether a 2500 `message` is about the API request quota. Anything else (a NIC count
/// quota, or an unknown text) is a resource quota: the error that cannot be outwaited by
/// slowing down, so it must not open the client-wide breaker.
pub fn is_request_quota_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    REQUEST_QUOTA_WORDS.iter().any(|w| m.contains(w))
}

/// HTTP status of a gateway's rate limit.
const TOO_MANY_REQUESTS: u16 = 429;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed QingCloud call. No variant carries the secret key or the signed URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with a non-zero `ret_code`.
    #[error("qingcloud {action}: code {code}: {message}")]
    Api {
        /// The action called.
        action: Action,
        /// The API's `ret_code`.
        code: RetCode,
        /// The API's `message`.
        message: String,
    },
    /// The request could not be sent or the response not read (connect, reset, TLS...).
    #[error("qingcloud {action}: transport: {source}")]
    Transport {
        /// The action called.
        action: Action,
        /// The HTTP client's error, with its URL stripped (the URL carries the signature).
        source: reqwest::Error,
        /// True when the connection was never established, so the server cannot have
        /// acted on the request.
        connect: bool,
    },
    /// The server answered with an HTTP status other than 200.
    #[error("qingcloud {action}: HTTP status {status}")]
    Http {
        /// The action called.
        action: Action,
        /// The status code.
        status: u16,
    },
    /// The body was not JSON, or had no `ret_code`, or did not match the action's shape.
    #[error("qingcloud {action}: undecodable response: {reason}")]
    Decode {
        /// The action called.
        action: Action,
        /// What was wrong (never the body itself).
        reason: String,
    },
    /// One request took longer than the configured request timeout.
    #[error("qingcloud {action}: request timed out")]
    Timeout {
        /// The action called.
        action: Action,
    },
    /// The call was rejected before anything was sent (empty NIC list, count out of range...).
    #[error("qingcloud {action}: invalid argument: {reason}")]
    InvalidArgument {
        /// The action that would have been called.
        action: Action,
        /// What was wrong.
        reason: String,
    },
    /// The API returned an id that is not well formed.
    #[error("qingcloud {action}: {source}")]
    InvalidId {
        /// The action called.
        action: Action,
        /// The parse failure.
        source: IdError,
    },
    /// Not sent: the API request quota was exhausted recently, so every call waits for the
    /// cooldown instead of spending more of the quota (see [`crate::ClientSettings`]).
    #[error(
        "qingcloud {action}: not sent, API request quota exhausted ({remaining:?} of cooldown left)"
    )]
    QuotaCooldown {
        /// The action that would have been called.
        action: Action,
        /// Time left before calls are sent again.
        remaining: std::time::Duration,
    },
    /// The client could not be built from its configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Client settings out of range (zero qps, zero batch size...).
    #[error("invalid qingcloud client settings: {0}")]
    Settings(&'static str),
    /// The HTTP client could not be built.
    #[error("build qingcloud http client: {0}")]
    Build(reqwest::Error),
}

impl Error {
    /// The API's `ret_code`, if the API answered.
    pub fn code(&self) -> Option<RetCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when repeating the same request later may succeed: 5000, 5100, 5300, transport
    /// errors, timeouts, HTTP 5xx and 429 and undecodable bodies, and the one transient 1400
    /// ("lease info not ready yet" on freshly created resources). Not
    /// 1100/1200/1300/1400/2100/2500.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { code, message, .. } => match *code {
                RetCode::INTERNAL | RetCode::SERVER_BUSY | RetCode::UPGRADING => true,
                RetCode::PERMISSION_DENIED => message.contains(LEASE_NOT_READY),
                _ => false,
            },
            Self::Transport { .. } | Self::Timeout { .. } | Self::Decode { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == TOO_MANY_REQUESTS,
            Self::QuotaCooldown { .. }
            | Self::InvalidArgument { .. }
            | Self::InvalidId { .. }
            | Self::Config(_)
            | Self::Settings(_)
            | Self::Build(_) => false,
        }
    }

    /// True when the server may not have acted on the request at all, so even a
    /// non-idempotent call (CreateNics) can be repeated without risking duplicates: the API
    /// refused it with 5000/5100/5300, or the connection never opened.
    pub fn is_retryable_without_side_effects(&self) -> bool {
        match self {
            Self::Api { .. } => self.is_retryable(),
            Self::Transport { connect, .. } => *connect,
            _ => false,
        }
    }

    /// True when the cloud asks us to slow down: 2500 about the API request quota, 5100
    /// (server busy), HTTP 429, or a call held back by the quota cooldown.
    pub fn is_throttled(&self) -> bool {
        match self {
            Self::Api { code, .. } if *code == RetCode::SERVER_BUSY => true,
            Self::Http { status, .. } => *status == TOO_MANY_REQUESTS,
            Self::QuotaCooldown { .. } => true,
            _ => self.is_request_quota(),
        }
    }

    /// True for a 2500 about the API request quota: the whole account must pause.
    pub fn is_request_quota(&self) -> bool {
        matches!(self, Self::Api { code, message, .. }
            if *code == RetCode::QUOTA_EXCEEDED && is_request_quota_message(message))
    }

    /// True for a 2500 about a resource quota (the account's NIC count): waiting does not
    /// help until someone raises the quota or frees resources.
    pub fn is_resource_quota(&self) -> bool {
        matches!(self, Self::Api { code, message, .. }
            if *code == RetCode::QUOTA_EXCEEDED && !is_request_quota_message(message))
    }

    /// True for 2100 ResourceNotFound ("already gone" for detach and delete).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(RetCode::NOT_FOUND)
    }

    /// True for 1400 PermissionDenied (resource in a state that forbids the operation).
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(RetCode::PERMISSION_DENIED)
    }

    /// A short, low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Api { .. } if self.is_throttled() => "throttled",
            Self::Api { .. } if self.is_resource_quota() => "resource_quota",
            Self::Api { .. } => "api",
            Self::QuotaCooldown { .. } => "quota_cooldown",
            Self::Transport { .. } => "transport",
            Self::Http { .. } => "http",
            Self::Decode { .. } => "decode",
            Self::Timeout { .. } => "timeout",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::InvalidId { .. } => "invalid_id",
            Self::Config(_) => "config",
            Self::Settings(_) => "settings",
            Self::Build(_) => "build",
        }
    }

    /// The `code` label of the error counter: the ret_code, or the failure class.
    pub(crate) fn code_label(&self) -> String {
        match self {
            Self::Api { code, .. } => code.to_string(),
            Self::Http { status, .. } => format!("http_{status}"),
            other => other.metric_label().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i32) -> Error {
        Error::Api {
            action: Action::DescribeNics,
            code: RetCode(code),
            message: String::new(),
        }
    }

    #[test]
    fn lease_not_ready_is_the_only_retryable_1400() {
        let lease = Error::Api {
            action: Action::AttachNics,
            code: RetCode::PERMISSION_DENIED,
            message: "PermissionDenied, resource lease info not ready yet, please try later".into(),
        };
        assert!(lease.is_retryable());
        assert!(lease.is_retryable_without_side_effects());
        assert!(lease.is_permission_denied());
        let busy = Error::Api {
            action: Action::AttachNics,
            code: RetCode::PERMISSION_DENIED,
            message: "PermissionDenied, nic [52:54:00:00:00:01] is in-use".into(),
        };
        assert!(!busy.is_retryable());
    }

    #[test]
    fn api_codes_are_classified() {
        for code in [5000, 5100, 5300] {
            assert!(api(code).is_retryable(), "{code}");
            assert!(api(code).is_retryable_without_side_effects(), "{code}");
        }
        for code in [1100, 1101, 1200, 1300, 1400, 2100, 2110, 2500, 5200] {
            assert!(!api(code).is_retryable(), "{code}");
        }
        assert!(api(5100).is_throttled());
        assert!(!api(5000).is_throttled());
        assert!(api(2100).is_not_found());
        assert!(api(1400).is_permission_denied());
        assert_eq!(api(5100).metric_label(), "throttled");
        assert_eq!(api(1400).metric_label(), "api");
        assert_eq!(api(1400).code_label(), "1400");
    }

    #[test]
    fn request_quota_and_resource_quota_2500_are_told_apart() {
        let quota = |message: &str| Error::Api {
            action: Action::CreateNics,
            code: RetCode::QUOTA_EXCEEDED,
            message: message.into(),
        };
        let api = quota("QuotaExceeded, api request quota exceeded, please try later");
        assert!(api.is_request_quota() && api.is_throttled() && !api.is_resource_quota());
        assert_eq!(api.metric_label(), "throttled");
        for text in [
            "QuotaExceeded, resource quota of [nic] exceeded: have [10], quota [10]",
            "QuotaExceeded, nic count exceeds your quota",
            "",
        ] {
            let res = quota(text);
            assert!(res.is_resource_quota(), "{text}");
            assert!(!res.is_throttled() && !res.is_retryable(), "{text}");
            assert_eq!(res.metric_label(), "resource_quota");
        }
        let http429 = Error::Http {
            action: Action::DescribeNics,
            status: 429,
        };
        assert!(http429.is_throttled() && http429.is_retryable());
        assert!(!http429.is_retryable_without_side_effects());
    }

    #[test]
    fn non_api_errors_are_classified() {
        let http = |status| Error::Http {
            action: Action::AttachNics,
            status,
        };
        assert!(http(502).is_retryable());
        assert!(http(500).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(!http(503).is_retryable_without_side_effects());
        assert_eq!(http(503).code_label(), "http_503");
        let decode = Error::Decode {
            action: Action::AttachNics,
            reason: "not JSON".into(),
        };
        assert!(decode.is_retryable());
        assert!(!decode.is_retryable_without_side_effects());
        let timeout = Error::Timeout {
            action: Action::CreateNics,
        };
        assert!(timeout.is_retryable());
        assert!(!timeout.is_retryable_without_side_effects());
        assert_eq!(timeout.metric_label(), "timeout");
        let invalid = Error::InvalidArgument {
            action: Action::AttachNics,
            reason: "no NICs".into(),
        };
        assert!(!invalid.is_retryable());
        assert_eq!(invalid.code(), None);
    }
}
