//! The agent's side of CNI STATUS on its unix socket (`GET /v1/status`, as the `hostnic`
//! plugin asks it), for tests of the CNI installer: it answers "not ready" until told
//! otherwise and counts the questions.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

/// The stand-in; stops serving and removes its socket on drop.
pub struct StatusAgent {
    /// What it answers.
    pub ready: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    socket: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatusAgent {
    /// Serves on `socket`.
    pub fn start(socket: &Path) -> Result<Self> {
        let listener =
            UnixListener::bind(socket).with_context(|| format!("bind {}", socket.display()))?;
        listener
            .set_nonblocking(true)
            .context("non-blocking accept")?;
        let ready = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, a, s) = (ready.clone(), asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if answer(stream, r.load(Ordering::SeqCst)).is_ok() {
                            a.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            ready,
            asked,
            stop,
            socket: socket.to_owned(),
            thread: Some(thread),
        })
    }

    /// STATUS questions answered so far.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

/// Reads one request and answers it: the status for `GET /v1/status`, 404 for anything else.
fn answer(stream: UnixStream, ready: bool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    if !request_line.starts_with("GET /v1/status ") {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Err(std::io::Error::other(request_line));
    }
    let body = serde_json::json!({
        "ready": ready,
        "reason": if ready { None } else { Some("syncing HostNics") },
        "synced": ready,
        "free_nics": 0,
        "incoming_nics": 0,
    })
    .to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

impl Drop for StatusAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.socket);
    }
}
