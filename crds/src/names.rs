//! Names and label values derived from other names (a node's, a pool's), valid at any legal
//! input length: kept as they are when they fit, else cut and ended with a hash of the whole,
//! so two long inputs that share a prefix still differ. The operator and the agent derive the
//! same value from the same name (the agent selects its node's HostNics by it), whatever build.
//! Also the cloud names of NICs, `hostnic-<cluster>-<HostNic uid>`, which the operator and
//! `kubectl hostnic leaks` parse with the same functions.

use sha2::{Digest, Sha256};

/// Longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE: usize = 63;

/// Longest object name (a DNS subdomain).
pub const MAX_NAME: usize = 253;

/// Hex digits of the hash that ends a shortened value (40 bits: a collision among the names
/// of one cluster is not a practical concern).
const HASH_DIGITS: usize = 10;

fn hash_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..HASH_DIGITS].to_string()
}

/// `s` cut to `max` bytes: its prefix (without a trailing `-` or `.`, which no name or label
/// value may end with), `-`, and the hash of all of `s`. `s` itself when it fits.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    // Node and pool names are DNS subdomains (ASCII), so a byte cut is a char cut.
    let keep = max - HASH_DIGITS - 1;
    let prefix = s[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{}", hash_hex(s))
}

/// The label value standing for `name` (a node or pool name): `name` itself up to 63 bytes.
pub fn label_value(name: &str) -> String {
    bounded(name, MAX_LABEL_VALUE)
}

/// An object name `<base>-<suffix>` of at most 253 bytes that always keeps `suffix` whole
/// (it is what makes the name unique); a long `base` is shortened with its hash.
pub fn object_name(base: &str, suffix: &str) -> String {
    let room = MAX_NAME - suffix.len() - 1;
    format!("{}-{suffix}", bounded(base, room))
}

/// Prefix of the cloud names of `cluster`'s NICs, `hostnic-<cluster>-`: a NIC is named by it
/// and its HostNic's uid, which is how a crashed create is adopted and how GC (and `kubectl
/// hostnic leaks`) tells this cluster's NICs from others'.
pub fn nic_prefix(cluster: &str) -> String {
    format!("hostnic-{cluster}-")
}

/// Length of a UUID in its canonical text form (8-4-4-4-12 hex digits).
const UUID_LEN: usize = 36;

/// Whether `s` is a canonical lowercase UUID, as Kubernetes writes `metadata.uid`.
pub fn is_uuid(s: &str) -> bool {
    s.len() == UUID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// The HostNic uid a NIC name carries if it is exactly `<prefix><uuid>`, the name this
/// cluster gives its NICs. Anything else (another cluster whose name extends ours, retained
/// NICs, hand-made names) is not ours.
pub fn owned_uid<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix).filter(|rest| is_uuid(rest))
}

/// The cluster name of a NIC named by some hostnic operator, `hostnic-<cluster>-<uuid>`.
pub fn hostnic_cluster(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("hostnic-")?;
    let cut = rest.len().checked_sub(UUID_LEN + 1)?;
    let (cluster, tail) = rest.split_at(cut);
    (!cluster.is_empty() && tail.starts_with('-') && is_uuid(&tail[1..])).then_some(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_label_value(v: &str) -> bool {
        let ends_ok = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
        v.len() <= MAX_LABEL_VALUE
            && ends_ok(v.chars().next())
            && ends_ok(v.chars().last())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    #[test]
    fn nic_names_belong_to_exactly_one_cluster() {
        let uid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
        let eu = format!("hostnic-prod-eu-{uid}");
        assert_eq!(owned_uid(&eu, &nic_prefix("prod-eu")), Some(uid));
        assert_eq!(
            owned_uid(&eu, &nic_prefix("prod")),
            None,
            "prod-eu is not prod's"
        );
        assert_eq!(hostnic_cluster(&eu), Some("prod-eu"));
    }

    #[test]
    fn short_names_are_kept() {
        assert_eq!(label_value("node-1"), "node-1");
        let exact = "a".repeat(63);
        assert_eq!(label_value(&exact), exact);
        assert_eq!(object_name("pool-node", "abcde"), "pool-node-abcde");
    }

    #[test]
    fn long_names_become_valid_distinct_stable_values() {
        // A node name of 253 (the longest), and two of 70 sharing their first 69 bytes, cut
        // right after a dot (which the value may not end with).
        let longest = format!("{}.example", "n".repeat(244));
        let a = format!("{}.compute-internal-a", "x".repeat(51));
        let b = format!("{}.compute-internal-b", "x".repeat(51));
        for name in [&longest, &a, &b] {
            let v = label_value(name);
            assert!(valid_label_value(&v), "{v:?} from {name:?}");
            assert_eq!(v, label_value(name), "stable");
        }
        assert_ne!(label_value(&a), label_value(&b));
        // Pinned: an agent and an operator of different builds must agree.
        assert_eq!(
            label_value(&a),
            format!("{}-{}", "x".repeat(51), hash_hex(&a))
        );
    }

    #[test]
    fn object_names_keep_their_suffix_at_any_base_length() {
        let base = format!("{}-{}", "p".repeat(253), "n".repeat(253));
        let name = object_name(&base, "abcde");
        assert!(name.len() <= MAX_NAME, "{}", name.len());
        assert!(name.ends_with("-abcde"), "{name}");
        assert_ne!(
            object_name(&base, "abcde"),
            object_name(&format!("{base}x"), "abcde")
        );
    }
}
