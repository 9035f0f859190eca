//! Configuration: the QingCloud SDK config file (credentials, zone, endpoint) and the client's
//! own settings (rate limit, timeouts, retries, batching, job polling).
//!
//! The config file is the one every QingCloud tool reads (hostnic mounts it from a Secret), so
//! the keys and defaults are the Go SDK's. Errors name the file and the key but never a value,
//! because the file holds the secret key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The secret access key. Its `Debug` is redacted and it has no `Display`, so it cannot leak
/// into logs or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What is wrong with a config file. Messages name the file and the key, never the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read qingcloud config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a YAML mapping. The parser's message is left out: it may quote the
    /// secret.
    #[error("parse qingcloud config {path}: invalid YAML mapping{}", at(*.line, *.column))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
    },
    /// A required key is absent or empty.
    #[error("qingcloud config {path}: missing required key `{key}`")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// A key has a value of the wrong type or out of range.
    #[error("qingcloud config {path}: key `{key}`: expected {expected}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What was expected, e.g. "an integer 1-65535".
        expected: &'static str,
    },
}

fn at(line: u64, column: u64) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" at line {line}, column {column}")
    }
}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Plain HTTP (the simulator, private clouds).
    Http,
    /// HTTPS (the public cloud).
    Https,
}

impl Protocol {
    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The QingCloud config file, with the Go SDK's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudConfig {
    /// `qy_access_key_id`, sent as `access_key_id`.
    pub access_key_id: String,
    /// `qy_secret_access_key`, the HMAC key.
    pub secret_access_key: Secret,
    /// `zone`, lowercased.
    pub zone: String,
    /// `host`, default `api.qingcloud.com`.
    pub host: String,
    /// `port`, default 443.
    pub port: u16,
    /// `protocol`, default https.
    pub protocol: Protocol,
    /// `uri`, default `/iaas`, repeated slashes collapsed. Signed exactly as sent.
    pub uri: String,
    /// `connection_retries`, default 3: the client makes at most this many retries per call.
    pub connection_retries: u32,
    /// `connection_timeout` (seconds), default 30: TCP connect timeout.
    pub connection_timeout: Duration,
    /// `ca_file` (not a Go SDK key): PEM file of extra CA certificates trusted for HTTPS, in
    /// addition to the platform's roots (private clouds, the simulator). Default none.
    pub ca_file: Option<PathBuf>,
}

impl CloudConfig {
    /// A config with the documented defaults for everything but the three required keys.
    pub fn new(access_key_id: &str, secret_access_key: Secret, zone: &str) -> Self {
        Self {
            access_key_id: access_key_id.to_string(),
            secret_access_key,
            zone: zone.to_ascii_lowercase(),
            host: "api.qingcloud.com".to_string(),
            port: 443,
            protocol: Protocol::Https,
            uri: "/iaas".to_string(),
            connection_retries: 3,
            connection_timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // Scalars are read untyped so that type errors can name the key (serde's own messages
        // would not name the file, and the parser's may quote the secret).
        let map: BTreeMap<String, Option<Scalar>> = serde_saphyr::from_str(text).map_err(|e| {
            let loc = e.location();
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line: loc.map_or(0, |l| l.line()),
                column: loc.map_or(0, |l| l.column()),
            }
        })?;
        let keys = Keys { map: &map, path };
        let mut cfg = Self::new(
            &keys.required("qy_access_key_id")?,
            Secret::new(keys.required("qy_secret_access_key")?),
            &keys.required("zone")?,
        );
        if let Some(host) = keys.string("host")? {
            cfg.host = host;
        }
        if let Some(port) = keys.integer("port", 1, u64::from(u16::MAX), "an integer 1-65535")? {
            cfg.port = u16::try_from(port).unwrap_or(cfg.port);
        }
        if let Some(protocol) = keys.string("protocol")? {
            cfg.protocol = match protocol.to_ascii_lowercase().as_str() {
                "http" => Protocol::Http,
                "https" => Protocol::Https,
                _ => return Err(keys.invalid("protocol", "`http` or `https`")),
            };
        }
        if let Some(uri) = keys.string("uri")? {
            cfg.uri = normalize_uri(&uri);
        }
        if let Some(n) = keys.integer("connection_retries", 0, 100, "an integer 0-100")? {
            cfg.connection_retries = u32::try_from(n).unwrap_or(cfg.connection_retries);
        }
        if let Some(s) = keys.integer("connection_timeout", 1, 3600, "seconds, 1-3600")? {
            cfg.connection_timeout = Duration::from_secs(s);
        }
        cfg.ca_file = keys.string("ca_file")?.map(PathBuf::from);
        Ok(cfg)
    }

    /// `protocol://host:port`, without the path.
    pub fn base_url(&self) -> String {
        format!("{}://{}:{}", self.protocol.as_str(), self.host, self.port)
    }
}

/// Collapses repeated slashes and makes the path absolute (the Go SDK does the same).
fn normalize_uri(uri: &str) -> String {
    let mut out = String::from("/");
    for c in uri.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// A YAML scalar value, kept untyped until we know which key it belongs to.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Str(String),
    Other(serde::de::IgnoredAny),
}

struct Keys<'a> {
    map: &'a BTreeMap<String, Option<Scalar>>,
    path: &'a Path,
}

impl Keys<'_> {
    fn invalid(&self, key: &'static str, expected: &'static str) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key,
            expected,
        }
    }

    /// A string key; numbers are accepted as their text (a numeric-looking key id must work),
    /// empty values count as absent.
    fn string(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        let s = match self.map.get(key) {
            None | Some(None) => return Ok(None),
            Some(Some(Scalar::Str(s))) => s.trim().to_string(),
            Some(Some(Scalar::Int(i))) => i.to_string(),
            Some(Some(Scalar::Other(_))) => {
                return Err(self.invalid(key, "a string"));
            }
        };
        Ok(Some(s).filter(|s| !s.is_empty()))
    }

    fn required(&self, key: &'static str) -> Result<String, ConfigError> {
        self.string(key)?.ok_or_else(|| ConfigError::Missing {
            path: self.path.to_path_buf(),
            key,
        })
    }

    fn integer(
        &self,
        key: &'static str,
        min: u64,
        max: u64,
        expected: &'static str,
    ) -> Result<Option<u64>, ConfigError> {
        let n = match self.map.get(key) {
            None | Some(None) => return Ok(None),
            Some(Some(Scalar::Int(i))) => u64::try_from(*i).ok(),
            Some(Some(Scalar::Str(s))) if s.trim().is_empty() => return Ok(None),
            Some(Some(Scalar::Str(s))) => s.trim().parse::<u64>().ok(),
            Some(Some(_)) => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(self.invalid(key, expected)),
        }
    }
}

/// How the client behaves, independent of the account: rate limit, timeouts, retries,
/// batching and job polling. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSettings {
    /// Sustained requests per second. The account quota is about 2000 requests per hour
    /// (0.55/s), shared by everything using the key: default 0.5.
    pub qps: f64,
    /// Bucket size: requests allowed in a burst after idling. Default 20.
    pub burst: u32,
    /// Timeout of one HTTP request (one attempt). Default 30 s.
    pub request_timeout: Duration,
    /// First retry delay; doubles per attempt, with full jitter. Default 1 s.
    pub backoff_base: Duration,
    /// Upper bound of one retry delay. Default 20 s.
    pub backoff_max: Duration,
    /// Total time a call may spend sleeping between retries. Default 60 s.
    pub retry_budget: Duration,
    /// NICs per AttachNics/DetachNics/DeleteNics call. Default 5 (hostnic issue #74).
    pub max_batch: usize,
    /// Interval between DescribeJobs polls. Default 5 s.
    pub job_poll_interval: Duration,
    /// How long `wait_job` polls before answering "unknown". Default 300 s (hostnic's).
    pub job_timeout: Duration,
    /// Send parameters in a form-encoded POST body instead of the query string. Default
    /// false (GET, as the Go SDK does); both are signed and accepted by the API.
    pub post: bool,
    /// How long no call is sent after a 2500 about the API request quota (the quota is
    /// counted per hour or per day, so retrying sooner only burns requests). Default 5 min.
    pub quota_cooldown: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            qps: 0.5,
            burst: 20,
            request_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(20),
            retry_budget: Duration::from_secs(60),
            max_batch: 5,
            job_poll_interval: Duration::from_secs(5),
            job_timeout: Duration::from_secs(300),
            post: false,
            quota_cooldown: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "VerySecretValue/123";

    fn parse(text: &str) -> Result<CloudConfig, ConfigError> {
        CloudConfig::from_yaml(text, Path::new("/etc/qingcloud/config.yaml"))
    }

    #[test]
    fn minimal_file_gets_sdk_defaults() {
        let cfg = parse(&format!(
            "qy_access_key_id: 'AKID'\nqy_secret_access_key: '{SECRET}'\nzone: 'PEK3A'\n"
        ))
        .unwrap();
        assert_eq!(cfg.access_key_id, "AKID");
        assert_eq!(cfg.secret_access_key.expose(), SECRET);
        assert_eq!(cfg.zone, "pek3a");
        assert_eq!(cfg.host, "api.qingcloud.com");
        assert_eq!(cfg.port, 443);
        assert_eq!(cfg.protocol, Protocol::Https);
        assert_eq!(cfg.uri, "/iaas");
        assert_eq!(cfg.connection_retries, 3);
        assert_eq!(cfg.connection_timeout, Duration::from_secs(30));
        assert_eq!(cfg.base_url(), "https://api.qingcloud.com:443");
    }

    #[test]
    fn all_keys_are_read() {
        let cfg = parse(
            "qy_access_key_id: AKID\nqy_secret_access_key: s\nzone: sh1a\nhost: 127.0.0.1\n\
             port: '8080'\nprotocol: HTTP\nuri: //iaas//\nconnection_retries: 0\n\
             connection_timeout: 5\nlog_level: debug\n",
        )
        .unwrap();
        assert_eq!(cfg.base_url(), "http://127.0.0.1:8080");
        assert_eq!(cfg.uri, "/iaas/");
        assert_eq!(cfg.connection_retries, 0);
        assert_eq!(cfg.connection_timeout, Duration::from_secs(5));
        assert_eq!(cfg.ca_file, None);
        let cfg =
            parse("qy_access_key_id: A\nqy_secret_access_key: s\nzone: a\nca_file: /x/ca.pem\n")
                .unwrap();
        assert_eq!(cfg.ca_file, Some(PathBuf::from("/x/ca.pem")));
    }

    #[test]
    fn missing_key_names_file_and_key() {
        let err = parse(&format!(
            "qy_access_key_id: AKID\nqy_secret_access_key: {SECRET}\n"
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/qingcloud/config.yaml"), "{msg}");
        assert!(msg.contains("`zone`"), "{msg}");
        assert!(!msg.contains(SECRET));

        let err = parse("qy_access_key_id: AKID\nqy_secret_access_key: ''\nzone: a\n").unwrap_err();
        assert!(err.to_string().contains("`qy_secret_access_key`"), "{err}");
    }

    #[test]
    fn invalid_value_names_key_not_value() {
        let base = format!("qy_access_key_id: AKID\nqy_secret_access_key: {SECRET}\nzone: a\n");
        for (extra, key) in [
            ("port: 70000", "`port`"),
            ("port: abc", "`port`"),
            ("protocol: ftp", "`protocol`"),
            ("connection_timeout: -1", "`connection_timeout`"),
            ("host: [a, b]", "`host`"),
        ] {
            let msg = parse(&format!("{base}{extra}\n")).unwrap_err().to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(msg.contains("config.yaml"), "{msg}");
            assert!(!msg.contains(SECRET), "{msg}");
        }
        let msg = parse(&format!(
            "qy_access_key_id: AKID\nqy_secret_access_key: [{SECRET}]\nzone: a\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("`qy_secret_access_key`"), "{msg}");
        assert!(!msg.contains(SECRET), "{msg}");
    }

    #[test]
    fn syntax_error_does_not_quote_the_file() {
        let err = parse(&format!("qy_secret_access_key: {SECRET}\n  - : [\n")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
        assert!(!msg.contains(SECRET), "{msg}");
    }

    #[test]
    fn secret_is_redacted_in_debug() {
        let cfg = CloudConfig::new("AKID", Secret::new(SECRET), "pek3a");
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains(SECRET), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn load_reports_unreadable_file() {
        let err = CloudConfig::load(Path::new("/nonexistent/qc.yaml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/qc.yaml"));
    }
}
