//! Wiring: opens the node netns, starts the watches, the socket and health servers, recovery
//! and the background loops. Used by `main` and by tests that run the agent in-process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::args::Args;
use crate::claims::Agent;
use crate::journal::Journal;
use crate::kube_io::KubeIo;
use crate::metrics::Metrics;
use crate::netns::Netns;
use crate::watch::View;
use crate::{Result, health, hostnet, hygiene, link_events, server};

/// A running agent; dropping it stops every task (the socket file stays, as after a crash).
pub struct Running {
    /// The agent's state.
    pub agent: Arc<Agent>,
    /// Socket path.
    pub socket: PathBuf,
    /// Address the health server listens on, unless its port was taken.
    pub health_addr: Option<std::net::SocketAddr>,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until start-up recovery is done (STATUS reports synced).
    pub async fn wait_recovered(&self) {
        while !self.agent.status().synced {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Running {
    /// Graceful stop: stops accepting on the socket, waits up to `grace` for the requests in
    /// flight (their answers written) and for the background steps (a link pass, sweep or
    /// release), then stops every task. Whatever `grace` cuts off is undone at the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        // The server closes the socket to new clients at once and ends once every connection
        // has written its answer; a request whose client went away still counts until done.
        self.agent.requests.stop();
        let served = tokio::time::timeout_at(deadline, &mut self.server).await;
        if served.is_err()
            || tokio::time::timeout_at(deadline, self.agent.requests.idle())
                .await
                .is_err()
        {
            tracing::warn!(
                inflight = self.agent.requests.inflight(),
                "grace period over with requests in flight; the next start undoes what they left"
            );
            return;
        }
        let agent = self.agent.clone();
        let serial = tokio::time::timeout_at(deadline, agent.gate.write()).await;
        drop(self);
        drop(serial);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the agent with `args` on `client`.
pub async fn start(args: &Args, client: kube::Client) -> Result<Running> {
    let Args {
        node_name,
        node_netns,
        socket,
        health_addr,
        sweep_seconds,
        link_scan_seconds,
        shutdown_grace_seconds: _,
        uninstall,
        wait_for_nic_seconds,
        log_format: _,
    } = args.clone();
    let node_netns = Arc::new(match node_netns {
        Some(path) => Netns::open(path)?,
        None => Netns::own()?,
    });
    let kube = KubeIo::new(client.clone(), &node_name);
    let (view, mut tasks) = View::start(client, &node_name);
    let agent = Arc::new(Agent::new(
        view,
        kube,
        node_netns,
        Arc::new(Metrics::default()),
        Journal::for_socket(&socket)?,
        Duration::from_secs(wait_for_nic_seconds),
    ));

    let listener = server::bind(&socket)?;
    let server = tokio::spawn(server::serve(listener, agent.clone()));
    // Health is for probes and scraping; the CNI socket matters more, so a taken port only
    // costs the health endpoints (and says so loudly).
    let health_addr = match tokio::net::TcpListener::bind(health_addr).await {
        Ok(health) => {
            let addr = health.local_addr().ok();
            tasks.push(tokio::spawn(health::serve(health, agent.clone())));
            addr
        }
        Err(error) => {
            tracing::error!(%health_addr, %error, "cannot serve /healthz, /readyz and /metrics");
            None
        }
    };
    // Subscribed before recovery so that links plugged meanwhile wake the first passes too.
    let link_events = Arc::new(Notify::new());
    tasks.push(tokio::spawn(link_events::watch_loop(
        agent.node_netns.clone(),
        link_events.clone(),
    )));
    // Service route host side: kept right while installed, removed once on uninstall.
    tasks.push(if uninstall {
        tokio::spawn(hostnet::remove_once(agent.node_netns.clone()))
    } else {
        tokio::spawn(hostnet::keep_loop(
            agent.view.clone(),
            agent.node_netns.clone(),
            hostnet::INTERVAL,
        ))
    });
    let a = agent.clone();
    tasks.push(tokio::spawn(async move {
        a.recover().await;
        let scan = tokio::spawn(hygiene::report_links_loop(
            a.clone(),
            Duration::from_secs(link_scan_seconds.max(1)),
            link_events,
        ));
        let sweep = tokio::spawn(hygiene::sweep_loop(
            a.clone(),
            Duration::from_secs(sweep_seconds.max(1)),
        ));
        let queue = tokio::spawn(hygiene::queue_loop(a, QUEUE_RETRY));
        let _ = tokio::join!(scan, sweep, queue);
    }));
    tracing::info!(node = %node_name, socket = %socket.display(), health_addr = ?health_addr, "agent started");
    Ok(Running {
        agent,
        socket,
        health_addr,
        server,
        tasks,
    })
}

/// How often queued DELs are retried: they wait for the API or for a link to come home, and
/// the NIC rests in quarantine after its release anyway.
const QUEUE_RETRY: Duration = Duration::from_secs(5);
