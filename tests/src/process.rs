//! Child processes of the system under test (API server, simulator, operator, agents): each logs
//! to its own file, can be killed with SIGKILL and restarted with the same command line (the
//! chaos test does both), and is killed when dropped so nothing outlives a failed test.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::interrupt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How to (re)start one component.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Short name for messages and the log file (`<name>.log`).
    pub name: String,
    /// Executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(OsString, OsString)>,
    /// Whether it cleans up after itself on SIGTERM (so an interrupted run sends that first).
    pub graceful: bool,
}

impl Spec {
    /// A spec with no arguments yet.
    pub fn new(name: &str, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            graceful: false,
        }
    }

    /// Marks it as cleaning up after itself on SIGTERM.
    pub fn graceful(mut self) -> Self {
        self.graceful = true;
        self
    }

    /// Appends an argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running (or killed) child process; SIGKILLed on drop.
#[derive(Debug)]
pub struct Proc {
    spec: Spec,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Proc {
    /// Starts the process, appending its stdout and stderr to `<log_dir>/<name>.log`.
    pub fn start(spec: Spec, log_dir: &Path) -> Result<Self> {
        let log = log_dir.join(format!("{}.log", spec.name));
        let mut me = Self {
            spec,
            log,
            child: None,
            starts: 0,
        };
        me.spawn()?;
        Ok(me)
    }

    fn spawn(&mut self) -> Result<()> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let child = Command::new(&self.spec.program)
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("clone log handle")?)
            .stderr(file)
            .spawn()
            .with_context(|| {
                format!("start {} ({})", self.spec.name, self.spec.program.display())
            })?;
        interrupt::add_pid(child.id(), self.spec.graceful);
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (false once it exited or was killed).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, as a crash would: no graceful shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            interrupt::remove_pid(c.id());
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`: for components that clean up
    /// after themselves on shutdown (the simulator removes its netns and links).
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        interrupt::remove_pid(c.id());
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(c.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts it again with the same command line (kills it first if still running).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Replaces it as a rolling update replaces a pod: SIGTERM, up to `grace` to finish, then
    /// the same command line again.
    pub fn replace(&mut self, grace: Duration) -> Result<()> {
        self.terminate(grace);
        self.spawn()
    }

    /// Replaces it as [`Proc::replace`] does, with `key=value` added to its environment: a
    /// DaemonSet rolled by `kubectl set env`.
    pub fn replace_with_env(&mut self, grace: Duration, key: &str, value: &str) -> Result<()> {
        self.spec.env.push((key.into(), value.into()));
        self.replace(grace)
    }

    /// Times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Peak resident memory (VmHWM) of the running process in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
