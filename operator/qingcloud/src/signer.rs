//! Request signing (signature_version 1, HmacSHA256), exactly as the QingCloud API verifies it.
//!
//! Shared by the client (to sign) and the simulator (to verify), so a mismatch between the two
//! can only come from the reference, not from two diverging implementations.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Percent-encodes the UTF-8 bytes of `s`: `A-Z a-z 0-9 - _ . ~` stay literal, every other byte
/// becomes `%XY` with uppercase hex (so space is `%20`, never `+`).
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The canonical query: parameters sorted byte-wise by key (so `nics.10` < `nics.2`), each
/// `encode(key)=encode(value)`, joined by `&`. `params` must not contain `signature`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Stable sort by key bytes only: equal keys (not expected) keep their given order.
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// `METHOD \n path \n canonical_query`, with `path` exactly as sent (e.g. `/iaas/` or `/iaas`).
pub fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    format!("{method}\n{path}\n{}", canonical_query(params))
}

/// Base64 (standard, padded) HMAC-SHA256 of [`string_to_sign`] keyed with the secret access key.
pub fn sign(secret: &str, method: &str, path: &str, params: &[(String, String)]) -> String {
    sign_string(secret, &string_to_sign(method, path, params))
}

/// Base64 HMAC-SHA256 of an already built string to sign (tests use it to sign deliberately
/// wrong strings).
pub fn sign_string(secret: &str, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The reference's worked example, given deliberately out of order.
    fn worked_example() -> Vec<(String, String)> {
        p(&[
            ("zone", "pek3a"),
            ("version", "1"),
            ("action", "DescribeNics"),
            ("access_key_id", "EXAMPLEAKID00000000"),
            ("limit", "100"),
            ("nics.2", "52:54:0e:f0:aa:01"),
            ("nic_name", "pod nic/1+α~"),
            ("nics.1", "52:54:9a:1b:2c:3d"),
            ("offset", "0"),
            ("signature_method", "HmacSHA256"),
            ("signature_version", "1"),
            ("status", "in-use"),
            ("time_stamp", "2024-05-01T08:09:10Z"),
        ])
    }

    const EXAMPLE_SECRET: &str = "ExampleSecretKey/0123456789abcdefXYZ";

    #[test]
    fn encodes_reserved_and_non_ascii_bytes() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode(" "), "%20");
        assert_eq!(percent_encode(":/+=*!"), "%3A%2F%2B%3D%2A%21");
        assert_eq!(percent_encode("α"), "%CE%B1");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn canonical_query_of_worked_example() {
        assert_eq!(
            canonical_query(&worked_example()),
            "access_key_id=EXAMPLEAKID00000000&action=DescribeNics&limit=100\
             &nic_name=pod%20nic%2F1%2B%CE%B1~&nics.1=52%3A54%3A9a%3A1b%3A2c%3A3d\
             &nics.2=52%3A54%3A0e%3Af0%3Aaa%3A01&offset=0&signature_method=HmacSHA256\
             &signature_version=1&status=in-use&time_stamp=2024-05-01T08%3A09%3A10Z\
             &version=1&zone=pek3a"
        );
    }

    #[test]
    fn sorts_keys_bytewise() {
        let q = canonical_query(&p(&[("nics.2", "b"), ("nics.10", "a"), ("nics.1", "c")]));
        assert_eq!(q, "nics.1=c&nics.10=a&nics.2=b");
    }

    #[test]
    fn string_to_sign_has_three_lines() {
        let s = string_to_sign("GET", "/iaas/", &p(&[("b", "2"), ("a", "1")]));
        assert_eq!(s, "GET\n/iaas/\na=1&b=2");
    }

    #[test]
    fn worked_example_get_with_slash() {
        assert_eq!(
            sign(EXAMPLE_SECRET, "GET", "/iaas/", &worked_example()),
            "flY7C9VYsUfF9D/aw99og4s4EEteRmqB2Vc4OFqsKV0="
        );
    }

    #[test]
    fn worked_example_post() {
        assert_eq!(
            sign(EXAMPLE_SECRET, "POST", "/iaas/", &worked_example()),
            "6MvKxf4hdHVvB5yfmu7zgzuqPrl1NHvEFXX/4nDQYZM="
        );
    }

    #[test]
    fn worked_example_get_without_slash() {
        assert_eq!(
            sign(EXAMPLE_SECRET, "GET", "/iaas", &worked_example()),
            "4UO2Bx58LqZB/lCKfBK4V1KnqYM1fYml8HkrRiH14PA="
        );
    }

    fn official(zone: &str) -> Vec<(String, String)> {
        p(&[
            ("access_key_id", "QYACCESSKEYIDEXAMPLE"),
            ("action", "RunInstances"),
            ("count", "1"),
            ("image_id", "centos64x86a"),
            ("instance_name", "demo"),
            ("instance_type", "small_b"),
            ("login_mode", "passwd"),
            ("login_passwd", "QingCloud20130712"),
            ("signature_method", "HmacSHA256"),
            ("signature_version", "1"),
            ("time_stamp", "2013-08-27T14:30:10Z"),
            ("version", "1"),
            ("vxnets.1", "vxnet-0"),
            ("zone", zone),
        ])
    }

    #[test]
    fn official_vector_pek3a() {
        assert_eq!(
            sign("SECRETACCESSKEY", "GET", "/iaas/", &official("pek3a")),
            "byjccvWIvAftaq+oublemagH3bYAlDWxxLFAzAsyslw="
        );
    }

    #[test]
    fn official_vector_pek1() {
        assert_eq!(
            sign("SECRETACCESSKEY", "GET", "/iaas/", &official("pek1")),
            "32bseYy39DOlatuewpeuW5vpmW51sD1A/JdGynqSpP8="
        );
    }
}
