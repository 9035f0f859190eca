//! An in-memory Kubernetes API server for tests and the local demo.
//!
//! It speaks real HTTP (plain http on a local address) and the API conventions this project
//! and kubectl rely on: discovery, CRUD with resourceVersions and 409 conflicts, merge / JSON /
//! strategic (built-ins) / apply patches, watches with resume, bookmarks and 410 Gone, label
//! and field selectors, CRDs that become served resources (status and scale subresources,
//! structural-schema pruning, defaulting and validation), finalizers, cascading deletion,
//! Table output, optional bearer-token auth with RBAC, and an audit log of every request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_mem::Error> {
//! let server = kube_mem::KubeMem::builder().with_crds_from_dir("crds").start().await?;
//! let client = server.client().await?;          // a kube::Client for it
//! server.write_kubeconfig("/tmp/kubeconfig")?;    // for kubectl or other processes
//! # drop(client); server.shutdown().await; Ok(()) }
//! ```

mod admission;
pub mod audit;
pub mod auth;
mod discovery;
mod events;
mod formats;
mod jsonpath;
mod managed;
mod openapi;
mod patch;
mod protobuf;
mod realism;
mod resources;
mod schema;
mod selector;
mod server;
pub mod status;
mod store;
mod table;
mod typed;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use audit::AuditRecord;
pub use auth::{Attributes, Auth, Identity};
pub use realism::{Realism, Throttled};
pub use status::ApiError;

use server::Shared;
use store::{Store, Target};

/// Errors of starting and using the server from a test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("parse CRD file {path}: {message}")]
    CrdFile { path: PathBuf, message: String },
    #[error("load {what}: {source}")]
    Load { what: String, source: ApiError },
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("tls: {0}")]
    Tls(#[from] throwaway_tls::TlsError),
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Token of the admin identity written into [`KubeMemHandle::kubeconfig_yaml`].
pub const ADMIN_TOKEN: &str = "kube-mem-admin-token";

/// Entry point: `KubeMem::builder()`.
#[derive(Debug)]
pub struct KubeMem;

impl KubeMem {
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// Configures a server before it starts.
#[derive(Debug)]
pub struct Builder {
    listen: SocketAddr,
    crd_dirs: Vec<PathBuf>,
    objects: Vec<Value>,
    auth: Option<Auth>,
    tls: bool,
    history_limit: usize,
    bookmark_interval: Duration,
    realism: Realism,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            crd_dirs: Vec::new(),
            objects: Vec::new(),
            auth: None,
            tls: false,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(10),
            realism: Realism::default(),
        }
    }
}

impl Builder {
    /// Address to listen on (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Creates every CRD in `*.yaml`/`*.yml`/`*.json` files of `dir` at start.
    pub fn with_crds_from_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.crd_dirs.push(dir.into());
        self
    }

    /// Creates an object at start (any served kind, e.g. Nodes), after the CRDs.
    pub fn with_object(mut self, obj: Value) -> Self {
        self.objects.push(obj);
        self
    }

    /// Requires bearer tokens and authorizes with RBAC. The admin token [`ADMIN_TOKEN`] is
    /// always added (it bypasses RBAC, like `system:masters`).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth.token(ADMIN_TOKEN, Identity::admin()));
        self
    }

    /// Serve HTTPS with a CA made at start (kubeconfigs carry it). Default off. Turn it on
    /// with [`Self::auth`] when kubectl must authenticate: it sends bearer tokens only over
    /// TLS (kube-rs clients send them over plain HTTP too).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// How many changes watches can resume over (default 10000); older versions get 410.
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n.max(1);
        self
    }

    /// How often watches that allow bookmarks get a BOOKMARK (default 10 s).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// Write latency and watch delivery delay (default: instant). Use
    /// [`Realism::etcd_like`] wherever API round trips could hide on a critical path.
    pub fn realism(mut self, r: Realism) -> Self {
        self.realism = r;
        self
    }

    pub async fn start(self) -> Result<KubeMemHandle, Error> {
        let mut store = Store::new(self.history_limit);
        for dir in &self.crd_dirs {
            for crd in read_crd_dir(dir)? {
                create_object(&mut store, crd)?;
            }
        }
        for obj in self.objects {
            create_object(&mut store, obj)?;
        }
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(Error::io(format!("bind {}", self.listen)))?;
        let addr = listener.local_addr().map_err(Error::io("local address"))?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            auth: self.auth,
            audit: Default::default(),
            shutdown: CancellationToken::new(),
            bookmark_interval: self.bookmark_interval,
            server_address: addr.to_string(),
            live: realism::Live::new(self.realism),
        });
        let tls = if self.tls {
            Some(throwaway_tls::generate("kube-mem", addr.ip())?)
        } else {
            None
        };
        let task = tokio::spawn(serve(
            listener,
            shared.clone(),
            tls.as_ref().map(|t| t.acceptor.clone()),
        ));
        info!(%addr, "kube-mem listening");
        Ok(KubeMemHandle {
            ca_pem: tls.map(|t| t.ca_pem),
            shared,
            addr,
            task: Mutex::new(Some(task)),
        })
    }
}

fn read_crd_dir(dir: &Path) -> Result<Vec<Value>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(format!("read {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).map_err(Error::io(format!("read {}", f.display())))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| Error::CrdFile {
            path: f.clone(),
            message: e.to_string(),
        })?;
        out.extend(
            docs.into_iter().filter(|d| {
                d.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
            }),
        );
    }
    Ok(out)
}

/// Creates `obj` through the store, as a POST to its collection would.
fn create_object(store: &mut Store, obj: Value) -> Result<(), Error> {
    let what = format!(
        "{} {}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    );
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap_or_default();
    let def = store
        .registry
        .all()
        .find(|d| d.group == group && d.kind == kind && d.version(version).is_some())
        .cloned();
    let def = def.ok_or_else(|| Error::Load {
        what: what.clone(),
        source: ApiError::bad_request(format!("no resource for {api_version} {kind}")),
    })?;
    let namespace = def.namespaced.then(|| {
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    });
    let t = Target {
        def,
        version: version.to_string(),
        namespace,
        name: None,
        subresource: None,
    };
    store
        .create(&t, obj, &store::WriteOpts::default())
        .map(|_| ())
        .map_err(|source| Error::Load { what, source })
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        match tls {
                            None => serve_connection(stream, shared).await,
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(stream) => serve_connection(stream, shared).await,
                                Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                            },
                        }
                    });
                }
                Err(error) => warn!(%error, "accept failed"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| server::handle(shared.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    if let Err(error) = conn.await {
        tracing::debug!(%error, "connection ended");
    }
}

/// A running server. Dropping it stops the server.
#[derive(Debug)]
pub struct KubeMemHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The CA of the server certificate, when serving HTTPS.
    ca_pem: Option<String>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl KubeMemHandle {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The PEM of the CA that signed the server certificate (HTTPS only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig for the admin identity (token [`ADMIN_TOKEN`] when auth is on).
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(self.shared.auth.as_ref().map(|_| ADMIN_TOKEN))
    }

    /// A kubeconfig that authenticates with `token` (None: no credentials).
    pub fn kubeconfig_yaml_for(&self, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => "    {}\n".to_string(),
        };
        use base64::Engine;
        let ca = match &self.ca_pem {
            Some(pem) => format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            ),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-mem\n  cluster:\n{ca}    server: {}\ncontexts:\n- name: kube-mem\n  context:\n    cluster: kube-mem\n    user: kube-mem\n    namespace: default\ncurrent-context: kube-mem\nusers:\n- name: kube-mem\n  user:\n{user}",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig_yaml())
            .map_err(Error::io(format!("write {}", path.display())))
    }

    /// A kube::Client for the admin identity.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_from_yaml(&self.kubeconfig_yaml()).await
    }

    /// A kube::Client that authenticates with `token`.
    pub async fn client_for(&self, token: &str) -> Result<kube::Client, Error> {
        client_from_yaml(&self.kubeconfig_yaml_for(Some(token))).await
    }

    /// Every request so far.
    pub fn audit(&self) -> Vec<AuditRecord> {
        self.shared.audit.snapshot()
    }

    pub fn clear_audit(&self) {
        self.shared.audit.clear();
    }

    /// Whether the stored RBAC objects let `who` do `what` (what `kubectl auth can-i` asks).
    pub fn authorize(&self, who: &Identity, what: &auth::Attributes) -> bool {
        auth::authorize(&self.shared.store(), who, what)
    }

    /// Drops the watch-event history: watches from any earlier version then get 410 Gone.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Changes write latency and watch delay for requests and watches from now on.
    pub fn set_realism(&self, r: Realism) {
        self.shared.live.set(r);
    }

    /// Answers the next `requests` requests of the kind `which` with 429 TooManyRequests and
    /// `Retry-After: 1`, as API Priority and Fairness does when a priority level is full.
    pub fn throttle(&self, which: Throttled, requests: u64) {
        self.shared.live.throttle.arm(which, requests);
    }

    /// How many requests were answered 429 so far.
    pub fn throttled(&self) -> u64 {
        self.shared.live.throttle.rejected()
    }

    /// Stops accepting, ends watches and closes connections.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            // A panicked server task has nothing left to clean up.
            let _ = t.await;
        }
    }
}

impl Drop for KubeMemHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Builds a kube::Client from kubeconfig text (also for `HOSTNIC_TEST_KUBECONFIG`-style files).
pub async fn client_from_yaml(yaml: &str) -> Result<kube::Client, Error> {
    let kc =
        kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Shapes a Namespace object, handy for `with_object`.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}
