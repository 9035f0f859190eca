//! Errors the simulated API answers with (`ret_code` + message), in the wording real
//! clients match on (`PermissionDenied`, `ResourceNotFound`, ...).

use crate::wire::RetCode;

/// An API-level failure: HTTP 200 with a non-zero `ret_code`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ret_code {code}: {message}")]
pub struct ApiError {
    /// The `ret_code`.
    pub code: RetCode,
    /// The `message`, `"<Name>, <details>"`.
    pub message: String,
}

impl ApiError {
    /// An error with an explicit code and message.
    pub fn new(code: RetCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// 1100: a required parameter is missing.
    pub fn missing(param: &str) -> Self {
        Self::new(
            RetCode::MALFORMED,
            format!("InvalidRequestFormat, parameter [{param}] is required"),
        )
    }

    /// 1100: a parameter has a bad value.
    pub fn invalid(param: &str, why: &str) -> Self {
        Self::new(
            RetCode::MALFORMED,
            format!("InvalidParameterValue, parameter [{param}]: {why}"),
        )
    }

    /// 1101: unknown action.
    pub fn unknown_action(action: &str) -> Self {
        Self::new(
            RetCode::UNKNOWN_ACTION,
            format!("InvalidAction, action [{action}] is not supported"),
        )
    }

    /// 1200: unknown key or signature mismatch.
    pub fn auth() -> Self {
        Self::new(RetCode::AUTH_FAILURE, "AuthFailure, signature not matched")
    }

    /// 1300: `time_stamp` too far from the server clock, or `expires` passed.
    pub fn expired() -> Self {
        Self::new(
            RetCode::EXPIRED,
            "RequestExpired, the request has expired, check time_stamp",
        )
    }

    /// 1400: the resource's state forbids the operation.
    pub fn denied(why: impl std::fmt::Display) -> Self {
        Self::new(
            RetCode::PERMISSION_DENIED,
            format!("PermissionDenied, {why}"),
        )
    }

    /// 2100: unknown resource.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            RetCode::NOT_FOUND,
            format!("ResourceNotFound, resource [{id}] of type [{kind}] not found"),
        )
    }

    /// A capacity error with the configured code (1400, 2500 or 5200: unconfirmed upstream).
    pub fn capacity(code: i32, why: impl std::fmt::Display) -> Self {
        let name = match code {
            1400 => "PermissionDenied",
            2500 => "QuotaExceeded",
            _ => "InsufficientResources",
        };
        Self::new(RetCode(code), format!("{name}, {why}"))
    }

    /// 2500: the account's API request quota is used up.
    pub fn rate_quota() -> Self {
        Self::new(
            RetCode::QUOTA_EXCEEDED,
            "QuotaExceeded, api request quota exceeded, please try later",
        )
    }

    /// 2500: a CreateNics would exceed the account's NIC count quota. Worded apart from
    /// [`ApiError::rate_quota`]: same code, a different fix (raise the quota, free NICs).
    pub fn nic_quota(have: usize, asked: usize, quota: usize) -> Self {
        Self::new(
            RetCode::QUOTA_EXCEEDED,
            format!(
                "QuotaExceeded, resource quota of [nic] exceeded: have [{have}], asked [{asked}], quota [{quota}]"
            ),
        )
    }

    /// The message an injected error with `code` carries when none is given.
    pub fn injected(code: i32) -> Self {
        let message = match code {
            1400 => "PermissionDenied, resource lease info not ready yet, please try later",
            2500 => "QuotaExceeded, api request quota exceeded, please try later",
            5000 => "InternalError, internal error, please try later",
            5100 => "ServerBusy, server is busy, please try later",
            5200 => "InsufficientResources, insufficient backend resources",
            5300 => "ServiceUpgrading, service is being upgraded, please try later",
            _ => "InjectedError, injected by the simulator",
        };
        Self::new(RetCode(code), message)
    }
}
