//! The CNI spec versions the plugin speaks, and what differs between them for this plugin.

use crate::error::{CniError, Code};

/// A supported `cniVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecVersion {
    /// 0.3.0
    V0_3_0,
    /// 0.3.1
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops the ip `version` field.
    V1_0_0,
    /// 1.1.0: adds GC, STATUS and interface `mtu`.
    V1_1_0,
}

/// Every supported version, oldest first, as VERSION reports them.
pub const SUPPORTED: [SpecVersion; 5] = [
    SpecVersion::V0_3_0,
    SpecVersion::V0_3_1,
    SpecVersion::V0_4_0,
    SpecVersion::V1_0_0,
    SpecVersion::V1_1_0,
];

/// The newest version, used where no config says otherwise.
pub const CURRENT: SpecVersion = SpecVersion::V1_1_0;

impl SpecVersion {
    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a config's `cniVersion`; anything unsupported is error 1.
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        if let Some(v) = SUPPORTED.into_iter().find(|v| v.as_str() == raw) {
            return Ok(v);
        }
        let what = if raw.is_empty() {
            "the config has no cniVersion (so 0.1.0 is assumed)".to_owned()
        } else {
            format!("cniVersion {raw:?} is not supported")
        };
        Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "incompatible CNI versions: {what}; set cniVersion to one of {}",
                supported_list()
            ),
        ))
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= SpecVersion::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn has_gc_and_status(self) -> bool {
        self >= SpecVersion::V1_1_0
    }

    /// Results before 1.0.0 carry `"version": "4"|"6"` on each ip.
    pub fn has_ip_version_field(self) -> bool {
        self < SpecVersion::V1_0_0
    }

    /// Interfaces carry `mtu` from 1.1.0 on.
    pub fn has_interface_mtu(self) -> bool {
        self >= SpecVersion::V1_1_0
    }
}

/// "0.3.0, 0.3.1, ..." for messages.
pub fn supported_list() -> String {
    SUPPORTED.map(SpecVersion::as_str).join(", ")
}

/// The VERSION verb's output.
pub fn version_info() -> String {
    serde_json::json!({
        "cniVersion": CURRENT.as_str(),
        "supportedVersions": SUPPORTED.map(SpecVersion::as_str),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(SpecVersion::parse("0.4.0").unwrap(), SpecVersion::V0_4_0);
        assert!(SpecVersion::parse("0.4.0").unwrap().has_check());
        assert!(!SpecVersion::V0_3_1.has_check());
        assert!(!SpecVersion::V1_0_0.has_gc_and_status());
        assert!(SpecVersion::V0_4_0.has_ip_version_field());
        assert!(!SpecVersion::V1_0_0.has_ip_version_field());
        for bad in ["", "0.2.0", "2.0.0", "1.0"] {
            let e = SpecVersion::parse(bad).unwrap_err();
            assert_eq!(e.code, Code::IncompatibleVersion);
            assert!(e.msg.contains("1.1.0"), "{}", e.msg);
        }
    }

    #[test]
    fn version_info_lists_all() {
        let v: serde_json::Value = serde_json::from_str(&version_info()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
