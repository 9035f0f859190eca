//! Locates the workspace's binaries for tests of other crates, which cargo does not build for
//! them: the README's test command builds them first (`cargo build --workspace --bins`).

use std::path::PathBuf;

/// The target directory the running test or binary was built into (`target/debug`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOSTNIC_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps/, binaries (the demo, the bench) in
    // target/<profile>/.
    let exe = std::env::current_exe().expect("path of the running executable");
    let dir = exe.parent().expect("executable sits in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary, e.g. `bin("hostnic")`. Panics with the command to run when the
/// binary has not been built.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (or set HOSTNIC_BIN_DIR)",
        path.display()
    );
    path
}
