//! Log lines for the operator, in `key=value` form, to the config's `logFile` or to stderr:
//! stdout belongs to the CNI result, so nothing else may ever be printed there.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Normal outcome.
    Info,
    /// Accepted but worth fixing.
    Warn,
    /// The verb failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Where lines go.
#[derive(Debug)]
pub struct Logger {
    file: Option<File>,
    /// Fields put on every line (the verb, the container).
    context: String,
}

impl Logger {
    /// A logger writing to stderr.
    pub fn stderr() -> Self {
        Self {
            file: None,
            context: String::new(),
        }
    }

    /// Switches to appending to `path`; if it cannot be opened, stays on stderr and says so.
    pub fn to_file(&mut self, path: &Path) {
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => self.file = Some(f),
            Err(e) => self.log(
                Level::Warn,
                "cannot open logFile, logging to stderr",
                &[("log_file", &path.display()), ("error", &e)],
            ),
        }
    }

    /// Adds a field to every following line.
    pub fn add_context(&mut self, key: &str, value: &dyn Display) {
        self.context.push(' ');
        push_field(&mut self.context, key, value);
    }

    /// Writes one line. Logging never fails the verb.
    pub fn log(&mut self, level: Level, msg: &str, fields: &[(&str, &dyn Display)]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = format!(
            "ts={}.{:03} level={} plugin=hostnic",
            now.as_secs(),
            now.subsec_millis(),
            level.as_str()
        );
        line.push_str(&self.context);
        line.push(' ');
        push_field(&mut line, "msg", &msg);
        for (k, v) in fields {
            line.push(' ');
            push_field(&mut line, k, v);
        }
        line.push('\n');
        let _ = match &mut self.file {
            Some(f) => f.write_all(line.as_bytes()),
            None => io::stderr().write_all(line.as_bytes()),
        };
    }
}

/// `key=value`, quoting values with spaces, quotes or `=`.
fn push_field(line: &mut String, key: &str, value: &dyn Display) {
    let value = value.to_string();
    line.push_str(key);
    line.push('=');
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
        line.push_str(&format!("{value:?}"));
    } else {
        line.push_str(&value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_when_needed() {
        let mut s = String::new();
        push_field(&mut s, "msg", &"no free NIC");
        s.push(' ');
        push_field(&mut s, "ns", &"prod");
        assert_eq!(s, r#"msg="no free NIC" ns=prod"#);
    }

    #[test]
    fn writes_to_the_log_file() {
        let path = std::env::temp_dir().join(format!("hostnic-log-test-{}", std::process::id()));
        let mut log = Logger::stderr();
        log.to_file(&path);
        log.add_context("cmd", &"ADD");
        log.log(Level::Warn, "bindaddr ignored", &[("n", &3)]);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            text.contains(r#"level=warn plugin=hostnic cmd=ADD msg="bindaddr ignored" n=3"#),
            "{text}"
        );
    }
}
