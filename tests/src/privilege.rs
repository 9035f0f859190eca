//! Decides whether a test that needs root or a tool may run: skip on a developer laptop, fail
//! in CI.

use std::process::Command;

/// Whether the current process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Returns true when a privileged test may go on. Without root it prints "skipped" and returns
/// false, unless the `CI` environment variable is set: CI runs as root, so a skip there would hide
/// a broken test, and this panics instead.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root and CI is set: refusing to skip"
    );
    eprintln!("{test}: skipped (needs root)");
    false
}

/// Whether `tool` is on the PATH.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns true when a test needing `tool` (from `package`) may go on. Without it, it prints
/// "skipped" and returns false, unless `CI` is set: CI installs every tool (`.ci/run`), so a
/// missing one there is a broken setup, and this panics instead.
pub fn require_tool(test: &str, tool: &str, package: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs `{tool}` (install {package}) and CI is set: refusing to skip"
    );
    eprintln!("{test}: skipped (needs `{tool}`: install {package})");
    false
}
