//! Decides whether a test that needs root may run: skip on a developer laptop, fail in CI.

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
