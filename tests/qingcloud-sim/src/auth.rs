//! Request authentication: the common parameters, the signature (recomputed with the
//! simulator's own signer over the decoded, re-canonicalized parameters) and time_stamp
//! freshness.

use std::time::Duration;

use jiff::Timestamp;

use crate::api_error::ApiError;
use crate::clock::parse_time;
use crate::config::AccessKey;
use crate::params::Params;
use crate::signer;

/// Parameters every request must carry (1100 when one is missing).
const COMMON: [&str; 6] = [
    "action",
    "access_key_id",
    "time_stamp",
    "signature_method",
    "signature_version",
    "signature",
];

/// Checks a request's credentials. `path` is the request path exactly as received.
pub(crate) fn verify(
    params: &Params,
    method: &str,
    path: &str,
    keys: &[AccessKey],
    now: Timestamp,
    tolerance: Duration,
) -> Result<(), ApiError> {
    for p in COMMON {
        params.required(p)?;
    }
    let key_id = params.required("access_key_id")?;
    let key = keys
        .iter()
        .find(|k| k.id == key_id)
        .ok_or_else(ApiError::auth)?;
    if params.get("signature_method") != Some("HmacSHA256") {
        return Err(ApiError::invalid(
            "signature_method",
            "only HmacSHA256 is supported",
        ));
    }
    if params.get("signature_version") != Some("1") {
        return Err(ApiError::invalid("signature_version", "must be 1"));
    }
    let expected = signer::signature(&key.secret, method, path, &params.signed_pairs());
    if params.get("signature") != Some(expected.as_str()) {
        return Err(ApiError::auth());
    }
    let stamp = params.required("time_stamp")?;
    let sent = parse_time(stamp)
        .ok_or_else(|| ApiError::invalid("time_stamp", "expected YYYY-MM-DDThh:mm:ssZ"))?;
    let skew = now.duration_since(sent).unsigned_abs();
    if skew > tolerance {
        return Err(ApiError::expired());
    }
    if let Some(expires) = params.get("expires").filter(|e| !e.is_empty()) {
        let expires = parse_time(expires)
            .ok_or_else(|| ApiError::invalid("expires", "expected YYYY-MM-DDThh:mm:ssZ"))?;
        if expires < now {
            return Err(ApiError::expired());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::format_time;

    const SECRET: &str = "ExampleSecretKey/0123456789abcdefXYZ";

    fn keys() -> Vec<AccessKey> {
        vec![AccessKey {
            id: "AKID".into(),
            secret: SECRET.into(),
        }]
    }

    fn signed(method: &str, path: &str, stamp: &str, extra: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(String, String)> = [
            ("action", "DescribeNics"),
            ("access_key_id", "AKID"),
            ("time_stamp", stamp),
            ("signature_method", "HmacSHA256"),
            ("signature_version", "1"),
            ("zone", "pek3a"),
            ("nic_name", "a b+c"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = signer::signature(SECRET, method, path, &pairs);
        pairs.push(("signature".into(), sig));
        signer::canonical(&pairs)
    }

    fn check(query: &str, method: &str, path: &str, now: Timestamp) -> Result<(), ApiError> {
        verify(
            &Params::parse(query).unwrap(),
            method,
            path,
            &keys(),
            now,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn accepts_a_good_signature_on_either_path() {
        let now = Timestamp::now();
        let stamp = format_time(now);
        for path in ["/iaas", "/iaas/"] {
            check(&signed("GET", path, &stamp, &[]), "GET", path, now).unwrap();
        }
        check(
            &signed("POST", "/iaas/", &stamp, &[]),
            "POST",
            "/iaas/",
            now,
        )
        .unwrap();
    }

    #[test]
    fn rejects_wrong_path_method_or_key() {
        let now = Timestamp::now();
        let q = signed("GET", "/iaas/", &format_time(now), &[]);
        assert_eq!(check(&q, "GET", "/iaas", now).unwrap_err().code.0, 1200);
        assert_eq!(check(&q, "POST", "/iaas/", now).unwrap_err().code.0, 1200);
        let other = q.replace("access_key_id=AKID", "access_key_id=OTHER");
        assert_eq!(
            check(&other, "GET", "/iaas/", now).unwrap_err().code.0,
            1200
        );
    }

    #[test]
    fn freshness() {
        let now = Timestamp::now();
        let old = format_time(now - jiff::SignedDuration::from_secs(61));
        assert_eq!(
            check(&signed("GET", "/iaas/", &old, &[]), "GET", "/iaas/", now)
                .unwrap_err()
                .code
                .0,
            1300
        );
        let q = signed("GET", "/iaas/", "2024-05-01 08:09:10", &[]);
        assert_eq!(check(&q, "GET", "/iaas/", now).unwrap_err().code.0, 1100);
        let stamp = format_time(now);
        let past = format_time(now - jiff::SignedDuration::from_secs(5));
        let q = signed("GET", "/iaas/", &stamp, &[("expires", &past)]);
        assert_eq!(check(&q, "GET", "/iaas/", now).unwrap_err().code.0, 1300);
    }

    #[test]
    fn missing_common_parameter_is_1100() {
        let now = Timestamp::now();
        let q = signed("GET", "/iaas/", &format_time(now), &[]);
        let q: String = q
            .split('&')
            .filter(|p| !p.starts_with("signature_method="))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(check(&q, "GET", "/iaas/", now).unwrap_err().code.0, 1100);
    }
}
