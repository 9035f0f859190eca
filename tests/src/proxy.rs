//! A TCP proxy between one client and one server that can be told to stop forwarding, in both
//! directions, without closing anything: connections stay open and new ones are accepted and
//! then ignored, as when the network drops packets (a partition, a half-open connection). It
//! also records when it forwarded bytes to the server, so a test can tell when a client last
//! sent anything.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy; dropping it closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    stalled: watch::Sender<bool>,
    sent: Arc<Mutex<Vec<Instant>>>,
    shutdown: CancellationToken,
}

impl Proxy {
    /// Forwards connections made to [`Proxy::addr`] to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stalled, _) = watch::channel(false);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (s, log, stop) = (stalled.clone(), sent.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok((c, _)) => c,
                        Err(_) => continue,
                    },
                };
                tokio::spawn(connection(
                    client,
                    target,
                    s.subscribe(),
                    log.clone(),
                    stop.clone(),
                ));
            }
        });
        Self {
            addr,
            stalled,
            sent,
            shutdown,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing is forwarded either way and nothing is closed.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// When bytes were forwarded to the server, oldest first.
    pub fn sent(&self) -> Vec<Instant> {
        self.sent.lock().expect("proxy log").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    stalled: watch::Receiver<bool>,
    sent: Arc<Mutex<Vec<Instant>>>,
    stop: CancellationToken,
) {
    let hold = async {
        if *stalled.borrow() {
            // Accepted, never answered.
            std::future::pending::<()>().await;
        }
        let Ok(server) = TcpStream::connect(target).await else {
            return;
        };
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        tokio::join!(
            pump(cr, sw, stalled.clone(), Some(sent)),
            pump(sr, cw, stalled.clone(), None),
        );
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = hold => {}
    }
}

/// Copies `from` to `to` until EOF; once stalled, holds both ends open forever.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
    sent: Option<Arc<Mutex<Vec<Instant>>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            _ = stalled.wait_for(|s| *s) => Ok(usize::MAX),
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if n == usize::MAX || *stalled.borrow() {
            // What was read is dropped, like a packet lost on the way.
            std::future::pending::<()>().await;
        }
        if let Some(log) = &sent {
            log.lock().expect("proxy log").push(Instant::now());
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
