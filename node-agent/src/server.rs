//! The CNI plugin's unix socket: HTTP/1.1 with JSON bodies (see `hostnic-agent-api`).
//!
//! The socket is created 0600 in a 0700 directory, so only root reaches it. Requests are
//! validated before anything changes: bodies over `MAX_BODY_BYTES`, bad JSON, unknown paths or
//! versions and wrong methods get a 4xx [`ApiError`]. Each request runs in its own task, so a
//! client that hangs up mid-claim cannot cancel a claim halfway, and is counted in flight so a
//! graceful stop lets it finish (see [`crate::shutdown`]).

use std::convert::Infallible;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use hostnic_agent_api::{API_VERSION, ApiError, ErrorKind, MAX_BODY_BYTES, path};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;

use crate::claims::Agent;
use crate::{Error, Result};

/// Binds the socket: creates the parent directory (0700) if needed, removes a stale socket
/// left by a previous run and sets the socket's mode to 0600.
pub fn bind(socket: &Path) -> Result<UnixListener> {
    let io = |context| move |source| Error::Io { context, source };
    if let Some(dir) = socket.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create socket directory"))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(socket).map_err(io("remove stale socket"))?;
        }
        Ok(_) => {
            return Err(Error::Io {
                context: "socket path exists and is not a socket",
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(socket).map_err(io("bind socket"))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod socket"))?;
    Ok(listener)
}

/// Serves requests on `listener` until the agent stops taking requests (see
/// [`crate::shutdown::Requests::stop`]) or the task is aborted. On a stop it closes the socket
/// to new clients at once, and returns once every connection has written its answer: a
/// request counts as done only when its client has it, so a graceful stop cuts no reply off.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept on the agent socket failed");
                    continue;
                }
            },
            () = agent.requests.stopping() => break,
        };
        let agent = agent.clone();
        let svc = service_fn(move |req| {
            let agent = agent.clone();
            async move { Ok::<_, Infallible>(handle(agent, req).await) }
        });
        let conn = graceful.watch(
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
        );
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "socket connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

type Reply = Response<Full<Bytes>>;

fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn api_error(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Reply {
    json(
        status,
        &ApiError {
            kind,
            message: message.into(),
            details: None,
        },
    )
}

/// The HTTP status for an agent error.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorKind::TryAgainLater | ErrorKind::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::CheckFailed => StatusCode::CONFLICT,
        ErrorKind::UnknownContainer => StatusCode::NOT_FOUND,
        ErrorKind::Internal | ErrorKind::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn from_result<T: Serialize>(result: Result<T>) -> Reply {
    match result {
        Ok(body) => json(StatusCode::OK, &body),
        Err(e) => {
            let kind = e.kind();
            json(
                status_of(kind),
                &ApiError {
                    kind,
                    message: e.to_string(),
                    details: Some(e.metric_label().to_owned()),
                },
            )
        }
    }
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> std::result::Result<T, Reply> {
    let too_big = || {
        api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::InvalidRequest,
            format!("request body over {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_big());
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_big()),
        Err(e) => {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                ErrorKind::InvalidRequest,
                format!("reading request body: {e}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest,
            format!("malformed JSON request: {e}"),
        )
    })
}

/// Runs an agent call in its own task so the client going away cannot cancel it halfway.
async fn detached<T, F>(fut: F) -> Reply
where
    T: Serialize + Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(result) => from_result(result),
        Err(e) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            format!("request task failed: {e}"),
        ),
    }
}

const KNOWN: [&str; 5] = [
    path::CLAIM,
    path::RELEASE,
    path::CHECK,
    path::GC,
    path::STATUS,
];

/// Why a path is not served: another API version of a known verb, or nothing known at all.
fn unknown_path(uri: &str) -> String {
    let version = uri
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let rest = uri.trim_start_matches('/').trim_start_matches(version);
    if !version.is_empty()
        && version != API_VERSION
        && !rest.is_empty()
        && KNOWN.iter().any(|k| k.ends_with(rest))
    {
        format!("unsupported API version {version:?}; this agent speaks {API_VERSION}")
    } else {
        format!("unknown path {uri}")
    }
}

async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Reply {
    let (method, uri) = (req.method().clone(), req.uri().path().to_owned());
    if !KNOWN.contains(&uri.as_str()) {
        return api_error(
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidRequest,
            unknown_path(&uri),
        );
    }
    let want = if uri == path::STATUS {
        Method::GET
    } else {
        Method::POST
    };
    if method != want {
        return api_error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            format!("{uri} takes {want}, not {method}"),
        );
    }
    if uri == path::STATUS {
        return json(StatusCode::OK, &agent.status());
    }
    let Some(inflight) = agent.requests.enter() else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NotReady,
            "the agent is stopping",
        );
    };
    // The guard moves into the detached task: the request counts until its work is done.
    match uri.as_str() {
        path::CLAIM => match body(req).await {
            Ok(r) => {
                detached(async move {
                    let _inflight = inflight;
                    agent.claim(r).await
                })
                .await
            }
            Err(reply) => reply,
        },
        path::RELEASE => match body(req).await {
            Ok(r) => {
                detached(async move {
                    let _inflight = inflight;
                    agent.release(r).await
                })
                .await
            }
            Err(reply) => reply,
        },
        path::CHECK => match body(req).await {
            Ok(r) => {
                detached(async move {
                    let _inflight = inflight;
                    agent.check(r).await
                })
                .await
            }
            Err(reply) => reply,
        },
        path::GC => match body(req).await {
            Ok(r) => {
                detached(async move {
                    let _inflight = inflight;
                    agent.gc(r).await
                })
                .await
            }
            Err(reply) => reply,
        },
        other => api_error(
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidRequest,
            unknown_path(other),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_private_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/hostnic/hostnic.sock");
        let first = bind(&socket).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&socket), 0o600);
        assert_eq!(mode(socket.parent().unwrap()), 0o700);
        // A crashed agent leaves its socket behind; the next one takes the path over.
        drop(first);
        bind(&socket).unwrap();
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "x").unwrap();
        assert!(bind(&file).is_err(), "a regular file must not be removed");
        assert!(file.exists());
    }

    #[test]
    fn unknown_paths_say_whether_only_the_version_is_wrong() {
        assert!(unknown_path("/v2/claim").contains("unsupported API version \"v2\""));
        assert_eq!(unknown_path("/v1/steal"), "unknown path /v1/steal");
        assert_eq!(unknown_path("/"), "unknown path /");
        assert_eq!(unknown_path("/v2/"), "unknown path /v2/");
    }
}
