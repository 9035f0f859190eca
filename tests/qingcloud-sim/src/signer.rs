//! The simulator's own implementation of signature_version 1 (reference §2), used to verify
//! requests; written apart from the client's signer so the two check each other.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Step 3: UTF-8 bytes, unreserved `A-Z a-z 0-9 - _ . ~` literal, all else `%XY` uppercase.
pub(crate) fn escape(text: &str) -> String {
    text.bytes()
        .fold(String::with_capacity(text.len()), |mut out, b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
            out
        })
}

/// Steps 2-4: pairs sorted by the key's bytes, escaped, `k=v` joined by `&`.
pub(crate) fn canonical(pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted
        .into_iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Steps 5-6: base64 of HMAC-SHA256(secret, `METHOD\npath\ncanonical`).
pub(crate) fn signature(
    secret: &str,
    method: &str,
    path: &str,
    pairs: &[(String, String)],
) -> String {
    let text = format!("{method}\n{path}\n{}", canonical(pairs));
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC keys may have any length"));
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const WORKED_SECRET: &str = "ExampleSecretKey/0123456789abcdefXYZ";

    /// The reference's worked example (§2), deliberately unsorted.
    fn worked() -> Vec<(String, String)> {
        pairs(&[
            ("time_stamp", "2024-05-01T08:09:10Z"),
            ("nics.2", "52:54:0e:f0:aa:01"),
            ("access_key_id", "EXAMPLEAKID00000000"),
            ("zone", "pek3a"),
            ("action", "DescribeNics"),
            ("limit", "100"),
            ("nic_name", "pod nic/1+α~"),
            ("nics.1", "52:54:9a:1b:2c:3d"),
            ("offset", "0"),
            ("signature_method", "HmacSHA256"),
            ("signature_version", "1"),
            ("status", "in-use"),
            ("version", "1"),
        ])
    }

    /// The docs' official vector (§2) in `zone`.
    fn official(zone: &str) -> Vec<(String, String)> {
        pairs(&[
            ("zone", zone),
            ("vxnets.1", "vxnet-0"),
            ("version", "1"),
            ("time_stamp", "2013-08-27T14:30:10Z"),
            ("signature_version", "1"),
            ("signature_method", "HmacSHA256"),
            ("login_passwd", "QingCloud20130712"),
            ("login_mode", "passwd"),
            ("instance_type", "small_b"),
            ("instance_name", "demo"),
            ("image_id", "centos64x86a"),
            ("count", "1"),
            ("action", "RunInstances"),
            ("access_key_id", "QYACCESSKEYIDEXAMPLE"),
        ])
    }

    #[test]
    fn escapes_as_the_reference_lists() {
        assert_eq!(escape("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(escape(" :/+=*!"), "%20%3A%2F%2B%3D%2A%21");
        assert_eq!(escape("α"), "%CE%B1");
    }

    #[test]
    fn sorts_keys_as_bytes() {
        let q = canonical(&pairs(&[
            ("nics.2", "b"),
            ("nics.10", "a"),
            ("nics.1", "c"),
        ]));
        assert_eq!(q, "nics.1=c&nics.10=a&nics.2=b");
    }

    #[test]
    fn worked_example_canonical_query() {
        assert_eq!(
            canonical(&worked()),
            "access_key_id=EXAMPLEAKID00000000&action=DescribeNics&limit=100\
             &nic_name=pod%20nic%2F1%2B%CE%B1~&nics.1=52%3A54%3A9a%3A1b%3A2c%3A3d\
             &nics.2=52%3A54%3A0e%3Af0%3Aaa%3A01&offset=0&signature_method=HmacSHA256\
             &signature_version=1&status=in-use&time_stamp=2024-05-01T08%3A09%3A10Z\
             &version=1&zone=pek3a"
        );
    }

    #[test]
    fn worked_example_get_iaas_slash() {
        assert_eq!(
            signature(WORKED_SECRET, "GET", "/iaas/", &worked()),
            "flY7C9VYsUfF9D/aw99og4s4EEteRmqB2Vc4OFqsKV0="
        );
    }

    #[test]
    fn worked_example_post_iaas_slash() {
        assert_eq!(
            signature(WORKED_SECRET, "POST", "/iaas/", &worked()),
            "6MvKxf4hdHVvB5yfmu7zgzuqPrl1NHvEFXX/4nDQYZM="
        );
    }

    #[test]
    fn worked_example_get_iaas_no_slash() {
        assert_eq!(
            signature(WORKED_SECRET, "GET", "/iaas", &worked()),
            "4UO2Bx58LqZB/lCKfBK4V1KnqYM1fYml8HkrRiH14PA="
        );
    }

    #[test]
    fn official_vector_zone_pek3a() {
        assert_eq!(
            signature("SECRETACCESSKEY", "GET", "/iaas/", &official("pek3a")),
            "byjccvWIvAftaq+oublemagH3bYAlDWxxLFAzAsyslw="
        );
    }

    #[test]
    fn official_vector_zone_pek1() {
        assert_eq!(
            signature("SECRETACCESSKEY", "GET", "/iaas/", &official("pek1")),
            "32bseYy39DOlatuewpeuW5vpmW51sD1A/JdGynqSpP8="
        );
    }
}
