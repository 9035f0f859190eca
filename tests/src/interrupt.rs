//! Cleanup when the demo or the bench is interrupted (Ctrl-C, SIGTERM): the process would die
//! without running any `Drop`, leaving child processes, network namespaces and temp dirs behind.
//! Everything worth cleaning is registered here while it exists; a watcher thread removes what is
//! still registered when a signal arrives, then exits with 130.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Default)]
struct Registry {
    /// Child processes to kill (pid, whether it cleans up after itself on SIGTERM).
    pids: BTreeSet<(u32, bool)>,
    /// Network namespaces to delete.
    netns: BTreeSet<String>,
    /// Working directories to remove.
    dirs: BTreeSet<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: BTreeSet::new(),
    netns: BTreeSet::new(),
    dirs: BTreeSet::new(),
});

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Remembers a child process; `graceful` ones get SIGTERM (and time to clean up) first.
pub fn add_pid(pid: u32, graceful: bool) {
    with(|r| r.pids.insert((pid, graceful)));
}

/// Forgets a child process (it has been stopped).
pub fn remove_pid(pid: u32) {
    with(|r| r.pids.retain(|(p, _)| *p != pid));
}

/// Remembers a netns to delete.
pub fn add_netns(name: &str) {
    with(|r| r.netns.insert(name.to_owned()));
}

/// Forgets a netns (it has been deleted).
pub fn remove_netns(name: &str) {
    with(|r| r.netns.remove(name));
}

/// Remembers a working directory to remove.
pub fn add_dir(dir: &Path) {
    with(|r| r.dirs.insert(dir.to_owned()));
}

/// Forgets a working directory (it has been removed).
pub fn remove_dir(dir: &Path) {
    with(|r| r.dirs.remove(dir));
}

/// Starts the watcher thread: on SIGINT or SIGTERM it stops the registered processes, deletes the
/// registered netns and exits with 130. Call once, early in `main`.
pub fn install() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("\ninterrupted: stopping the components and deleting the namespaces");
        cleanup();
        std::process::exit(130);
    });
}

fn cleanup() {
    let (pids, netns, dirs) = with(|r| (r.pids.clone(), r.netns.clone(), r.dirs.clone()));
    for (pid, graceful) in &pids {
        if let Ok(pid) = i32::try_from(*pid) {
            let signal = if *graceful {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
    if pids.iter().any(|(_, graceful)| *graceful) {
        // The simulator removes its links and vxnet netns on SIGTERM.
        std::thread::sleep(Duration::from_secs(2));
    }
    for name in &netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
