//! Validated identifiers of QingCloud resources, so a VxNet id can never be passed where a NIC
//! id is expected and a malformed id fails before it costs an API call.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id. Carries the offending text: ids are not secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}")]
pub struct IdError {
    /// Which id type was being parsed ("nic", "job", ...).
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
}

/// A NIC id: the NIC's MAC address, normalised to lowercase `xx:xx:xx:xx:xx:xx`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NicId(String);

impl NicId {
    /// Parses a MAC in either case; the result is lowercase.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let lower = s.trim().to_ascii_lowercase();
        let ok = lower.len() == 17
            && lower.split(':').count() == 6
            && lower
                .split(':')
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        if ok {
            Ok(Self(lower))
        } else {
            Err(IdError {
                kind: "nic",
                value: s.to_string(),
            })
        }
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The six MAC octets (for matching kernel links).
    pub fn octets(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        for (slot, octet) in out.iter_mut().zip(self.0.split(':')) {
            // Validated in `parse`: always two hex digits.
            *slot = u8::from_str_radix(octet, 16).unwrap_or_default();
        }
        out
    }
}

/// Declares an id newtype whose values start with a fixed prefix (`j-`, `i-`, `vxnet-`).
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses an id: the prefix followed by at least one ASCII alphanumeric character.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let s = s.trim();
                match s.strip_prefix($prefix) {
                    Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                        Ok(Self(s.to_string()))
                    }
                    _ => Err(IdError { kind: $kind, value: s.to_string() }),
                }
            }

            /// The id as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl_common!($name);
    };
}

/// Display, FromStr and String conversions shared by every id type.
macro_rules! impl_common {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

impl_common!(NicId);

prefixed_id!(
    /// A job id, `j-xxxxxxxx`.
    JobId,
    "job",
    "j-"
);
prefixed_id!(
    /// An instance (VM) id, `i-xxxxxxxx`.
    InstanceId,
    "instance",
    "i-"
);
prefixed_id!(
    /// A VxNet id, `vxnet-xxxxxxx` (`vxnet-0` is the basic network).
    VxnetId,
    "vxnet",
    "vxnet-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_id_is_normalised_and_validated() {
        let id = NicId::parse("52:54:9A:1B:2C:3D").unwrap();
        assert_eq!(id.as_str(), "52:54:9a:1b:2c:3d");
        assert_eq!(id.octets(), [0x52, 0x54, 0x9a, 0x1b, 0x2c, 0x3d]);
        for bad in [
            "",
            "52:54:9a:1b:2c",
            "52:54:9a:1b:2c:3d:00",
            "52-54-9a-1b-2c-3d",
            "52:54:9a:1b:2c:zz",
            "5:254:9a:1b:2c:3d",
        ] {
            assert!(NicId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixed_ids_check_their_prefix() {
        assert_eq!(JobId::parse("j-abcd1234").unwrap().as_str(), "j-abcd1234");
        assert_eq!(
            InstanceId::parse(" i-ogbndull\n").unwrap().as_str(),
            "i-ogbndull"
        );
        assert_eq!(VxnetId::parse("vxnet-0").unwrap().to_string(), "vxnet-0");
        assert!(JobId::parse("i-abcd1234").is_err());
        assert!(InstanceId::parse("i-").is_err());
        assert!(VxnetId::parse("vxnet-a b").is_err());
        let err = VxnetId::parse("net-1").unwrap_err();
        assert_eq!(err.to_string(), r#"invalid vxnet id "net-1""#);
    }

    #[test]
    fn serde_validates() {
        let id: NicId = serde_json::from_str(r#""52:54:00:AA:bb:01""#).unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            r#""52:54:00:aa:bb:01""#
        );
        assert!(serde_json::from_str::<NicId>(r#""nope""#).is_err());
        assert!(serde_json::from_str::<JobId>(r#""x-1""#).is_err());
    }
}
