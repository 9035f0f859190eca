//! Network namespace handles and the only place the agent switches a thread's netns.
//!
//! A thread that called `setns` stays in that netns, and tokio moves tasks between its worker
//! threads, so a worker must never switch. Work that needs a netns runs on a fresh
//! `std::thread` that switches, opens its rtnetlink sockets (each socket stays bound to the
//! netns it was opened in), runs its own current-thread runtime and then exits: the thread is
//! never reused, like CNI's discarded locked goroutine. `nix::sched::setns` is a safe wrapper,
//! so no `unsafe` is needed here.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};
use rtnetlink::packet_core::NetlinkMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, MulticastGroup};

use crate::{Error, Result};

/// An open network namespace (`/var/run/netns/x`, `/proc/<pid>/ns/net`). The fd lives as long
/// as this value, so keep it while a netlink request refers to it by fd.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens `path` and checks that it is a namespace file (nsfs or procfs), not an ordinary
    /// file that happens to sit where a netns was.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::NetnsOpen {
            path: path.clone(),
            source,
        })?;
        let fs = fstatfs(&file).map_err(|e| Error::NetnsOpen {
            path: path.clone(),
            source: e.into(),
        })?;
        let fs_type = fs.filesystem_type();
        // A bind-mounted netns is an nsfs file; under /proc only `ns/net` links qualify.
        let is_proc_netns = || {
            std::fs::read_link(&path)
                .is_ok_and(|target| target.to_string_lossy().starts_with("net:["))
        };
        if fs_type != NSFS_MAGIC && !(fs_type == PROC_SUPER_MAGIC && is_proc_netns()) {
            return Err(Error::NotANetns { path });
        }
        Ok(Self { file, path })
    }

    /// The netns of the agent process itself (its main thread never switches).
    pub fn own() -> Result<Self> {
        Self::open("/proc/self/ns/net")
    }

    /// Path the namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which namespace this is (device and inode of its nsfs file): two paths of one netns
    /// give the same id.
    pub fn id(&self) -> Result<NetnsId> {
        let st = nix::sys::stat::fstat(&self.file).map_err(|e| Error::Io {
            context: "stat netns",
            source: e.into(),
        })?;
        Ok(NetnsId(st.st_dev, st.st_ino))
    }

    /// Raw fd for netlink's `IFLA_NET_NS_FD`; valid while `self` lives.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Opens `path`, telling "the namespace is gone" apart from "it could not be opened".
    pub fn probe(path: impl AsRef<Path>) -> Probe {
        match Self::open(path) {
            Ok(ns) => Probe::Open(ns),
            Err(e) if is_gone(&e) => Probe::Gone(e),
            Err(e) => Probe::Unknown(e),
        }
    }
}

/// Identity of a network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetnsId(u64, u64);

/// What opening a recorded netns path says about the namespace.
#[derive(Debug)]
pub enum Probe {
    /// It opened.
    Open(Netns),
    /// Nothing is there (ENOENT) or something that is not a namespace: the runtime removed it.
    Gone(Error),
    /// It could not be opened for another reason (EACCES, EMFILE, ENXIO, a mount not visible
    /// yet...): the pod may still be running, so nothing may be concluded.
    Unknown(Error),
}

fn is_gone(e: &Error) -> bool {
    match e {
        Error::NotANetns { .. } => true,
        Error::NetnsOpen { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Runs `work` on a new OS thread with one rtnetlink handle per namespace in `namespaces`, in
/// that order. Each handle's socket is opened after switching into its netns; the thread ends
/// in the last netns, so `/proc/sys/net` writes inside `work` apply there. The namespaces are
/// kept open until `work` finishes.
pub async fn run_in<T, F, Fut>(namespaces: Vec<Arc<Netns>>, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Vec<Handle>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hostnic-netns".into())
        .spawn(move || {
            // The receiver only goes away when the caller was cancelled; nothing to tell then.
            let _ = tx.send(on_thread(&namespaces, work));
        })
        .map_err(|source| Error::Io {
            context: "spawn netns thread",
            source,
        })?;
    rx.await.map_err(|_| Error::NetnsThreadDied)?
}

fn on_thread<T, F, Fut>(namespaces: &[Arc<Netns>], work: F) -> Result<T>
where
    F: FnOnce(Vec<Handle>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = thread_runtime()?;
    // netlink-sys registers its socket with the reactor of the runtime entered at creation.
    let _entered = rt.enter();
    let mut handles = Vec::with_capacity(namespaces.len());
    for ns in namespaces {
        enter(ns)?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Io {
            context: "open rtnetlink socket",
            source,
        })?;
        rt.spawn(conn);
        handles.push(handle);
    }
    rt.block_on(work(handles))
}

/// Calls `on_message` with every rtnetlink message of `groups` in `ns`, on a new OS thread
/// whose socket is opened inside `ns` (see the module doc). Returns `Ok(())` when the kernel
/// side of the subscription ends, an error when it cannot be set up. Dropping the returned
/// future ends the thread (and closes its socket) within a moment; `ns` stays open until then.
pub async fn subscribe_in<F>(
    ns: Arc<Netns>,
    groups: Vec<MulticastGroup>,
    on_message: F,
) -> Result<()>
where
    F: FnMut(&NetlinkMessage<RouteNetlinkMessage>) + Send + 'static,
{
    let (mut tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hostnic-nsevent".into())
        .spawn(move || {
            let result = subscribed(&ns, &groups, on_message, tx.closed());
            // The receiver only goes away when the caller was cancelled; nothing to tell then.
            let _ = tx.send(result);
        })
        .map_err(|source| Error::Io {
            context: "spawn netns event thread",
            source,
        })?;
    rx.await.map_err(|_| Error::NetnsThreadDied)?
}

fn subscribed<F>(
    ns: &Netns,
    groups: &[MulticastGroup],
    mut on_message: F,
    cancelled: impl Future<Output = ()>,
) -> Result<()>
where
    F: FnMut(&NetlinkMessage<RouteNetlinkMessage>),
{
    let rt = thread_runtime()?;
    let _entered = rt.enter();
    enter(ns)?;
    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(groups).map_err(|source| Error::Io {
            context: "subscribe to rtnetlink multicast groups",
            source,
        })?;
    rt.spawn(conn);
    rt.block_on(async move {
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some((message, _)) => on_message(&message),
                    None => return Ok(()),
                },
                () = &mut cancelled => return Ok(()),
            }
        }
    })
}

/// A current-thread runtime for one netns thread.
fn thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "build netns thread runtime",
            source,
        })
}

/// Switches the calling thread into `ns`; only for threads that [`run_in`] or
/// [`subscribe_in`] made and that end with their work.
fn enter(ns: &Netns) -> Result<()> {
    setns(ns.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Io {
        context: "enter netns",
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            Netns::open(file.path()),
            Err(Error::NotANetns { .. })
        ));
    }

    #[test]
    fn other_proc_files_are_not_a_netns() {
        assert!(matches!(
            Netns::open("/proc/self/status"),
            Err(Error::NotANetns { .. })
        ));
    }

    #[test]
    fn own_netns_opens() {
        Netns::own().unwrap();
    }

    #[test]
    fn only_a_missing_path_or_a_non_namespace_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Netns::probe(dir.path().join("missing")),
            Probe::Gone(_)
        ));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(Netns::probe(&file), Probe::Gone(_)));
        // A path that exists but cannot be opened (a socket: ENXIO) says nothing.
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(matches!(Netns::probe(&socket), Probe::Unknown(_)));
        // So does a path through something that is not a directory (ENOTDIR).
        assert!(matches!(
            Netns::probe(file.join("below")),
            Probe::Unknown(_)
        ));
        assert!(matches!(Netns::probe("/proc/self/ns/net"), Probe::Open(_)));
    }
}
