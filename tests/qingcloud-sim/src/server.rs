//! The HTTP side: accepts connections, routes `/iaas` and `/iaas/` to the API pipeline and
//! `/admin/...` to the admin endpoints, and turns injected transport faults into real ones
//! (status codes, broken bodies, closed connections).
//!
//! API pipeline order: decode → count the call → authenticate (1100/1200/1300) → quota (2500)
//! → faults → zone (1100) → action (1101, 1100, 1400, 2100, capacity).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::actions::{self, error_body};
use crate::api_error::ApiError;
use crate::faults::ResponseFault;
use crate::params::Params;
use crate::sim::Shared;
use crate::{admin, auth};

/// Requests received, per action and per `ret_code` answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Every request to the API path, whatever its fate.
    pub total: u64,
    /// By `action` parameter (`""` when absent).
    pub by_action: BTreeMap<String, u64>,
    /// By `ret_code` of JSON answers (transport faults are not counted here).
    pub by_ret_code: BTreeMap<i32, u64>,
    /// Requests refused with HTTP 414 for their URI length (also in `total`).
    #[serde(default)]
    pub uri_too_long: u64,
}

impl CallStats {
    /// Calls of one action.
    pub fn action(&self, action: &str) -> u64 {
        self.by_action.get(action).copied().unwrap_or(0)
    }
}

/// The closed connection of a `reset` fault (hyper drops the connection on a service error).
#[derive(Debug, thiserror::Error)]
#[error("injected connection reset")]
pub(crate) struct Reset;

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// A JSON response (the API always answers `application/json`, errors included).
pub(crate) fn json(status: StatusCode, body: String) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    /// The API and the admin endpoints.
    All,
    /// Only `/admin/...` (the plain-HTTP admin port of a TLS simulator).
    AdminOnly,
}

/// Serves (over TLS when `tls` is given) until `cancel` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    surface: Surface,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, shared, surface, cancel).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        _ = cancel.cancelled() => return,
                        h = acceptor.accept(stream) => h,
                    };
                    match handshake {
                        Ok(stream) => serve_connection(stream, shared, surface, cancel).await,
                        Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    shared: Arc<Shared>,
    surface: Surface,
    cancel: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(shared.clone(), surface, req));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = cancel.cancelled() => {}
        result = conn => if let Err(error) = result {
            tracing::debug!(%error, "connection ended");
        },
    }
}

async fn handle(
    shared: Arc<Shared>,
    surface: Surface,
    req: Request<Incoming>,
) -> Result<HttpResponse, Reset> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/admin/") {
        let method = req.method().clone();
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(resp) => return Ok(resp),
        };
        return Ok(admin::handle(&shared, &method, &path, &body).await);
    }
    if surface == Surface::AdminOnly {
        // The API is reachable only over the main (TLS) port.
        return Ok(json(
            StatusCode::NOT_FOUND,
            r#"{"message":"not found: this port serves only /admin/"}"#.into(),
        ));
    }
    if path != "/iaas" && path != "/iaas/" {
        return Ok(json(
            StatusCode::NOT_FOUND,
            r#"{"message":"not found: the API lives at /iaas"}"#.into(),
        ));
    }
    let method = req.method().clone();
    if let Some(resp) = uri_too_long(&shared, &req) {
        return Ok(resp);
    }
    let text = if method == Method::GET {
        req.uri().query().unwrap_or_default().to_owned()
    } else if method == Method::POST {
        match read_body(req).await {
            Ok(b) => b,
            Err(resp) => return Ok(resp),
        }
    } else {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            error_body(&ApiError::invalid("method", "GET or POST")),
        ));
    };
    let (reply, delay) = process(&shared, method.as_str(), &path, &text);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match reply {
        Reply::Json(body) => Ok(json(StatusCode::OK, body)),
        Reply::Fault(kind, action) => render_fault(kind, &action),
    }
}

/// HTTP 414 for a request URI (path and query) over the configured limit, counted as a
/// call (it reached the front end) but never seen by the API.
fn uri_too_long(shared: &Shared, req: &Request<Incoming>) -> Option<HttpResponse> {
    let limit = shared.config.max_uri_len?;
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len <= limit {
        return None;
    }
    let action = req
        .uri()
        .query()
        .and_then(|q| Params::parse(q).ok())
        .and_then(|p| p.get("action").map(str::to_owned))
        .unwrap_or_default();
    let mut st = shared.lock();
    st.calls.total += 1;
    st.calls.uri_too_long += 1;
    *st.calls.by_action.entry(action).or_default() += 1;
    Some(json(
        StatusCode::URI_TOO_LONG,
        format!(r#"{{"message":"request URI of {len} bytes exceeds {limit}"}}"#),
    ))
}

async fn read_body(req: Request<Incoming>) -> Result<String, HttpResponse> {
    let bytes = Limited::new(req.into_body(), 4 << 20)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| {
            json(
                StatusCode::BAD_REQUEST,
                error_body(&ApiError::invalid("body", "unreadable")),
            )
        })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        json(
            StatusCode::OK,
            error_body(&ApiError::invalid("body", "not UTF-8")),
        )
    })
}

enum Reply {
    Json(String),
    Fault(ResponseFault, String),
}

/// The synchronous part of an API request, under the state lock.
fn process(shared: &Shared, method: &str, path: &str, text: &str) -> (Reply, u64) {
    let mut st = shared.lock();
    let st = &mut *st;
    let params = Params::parse(text);
    let action = params
        .as_ref()
        .ok()
        .and_then(|p| p.get("action"))
        .unwrap_or_default()
        .to_owned();
    st.calls.total += 1;
    *st.calls.by_action.entry(action.clone()).or_default() += 1;

    let mut delay = 0;
    let result = (|| {
        let params = params?;
        auth::verify(
            &params,
            method,
            path,
            &shared.config.access_keys,
            Timestamp::now(),
            Duration::from_secs(shared.config.timestamp_tolerance_s),
        )?;
        if !st.quota_admits(shared.clock.now()) {
            return Err(ApiError::rate_quota());
        }
        let decision = st.faults.decide(&action, &mut st.model.rng);
        delay = decision.delay_ms;
        if let Some((kind, false)) = &decision.response {
            return Ok(Reply::Fault(kind.clone(), action.clone()));
        }
        let zone = params.required("zone")?;
        if zone != st.model.zone() {
            return Err(ApiError::invalid(
                "zone",
                &format!("zone [{zone}] is not served here"),
            ));
        }
        let result = actions::run(&mut st.model, &action, &params, &decision);
        if result.is_ok() && actions::starts_job(&action) {
            shared.wake.notify_one();
        }
        match decision.response {
            // A lost response: whatever the action did, the client sees the fault.
            Some((kind, true)) => Ok(Reply::Fault(kind, action.clone())),
            _ => result.map(Reply::Json),
        }
    })();
    let code = match &result {
        Ok(Reply::Json(_)) => Some(0),
        Ok(Reply::Fault(ResponseFault::ApiError { code, .. }, _)) => Some(*code),
        Ok(Reply::Fault(..)) => None,
        Err(e) => Some(e.code.0),
    };
    if let Some(code) = code {
        *st.calls.by_ret_code.entry(code).or_default() += 1;
    }
    let reply = result.unwrap_or_else(|e| Reply::Json(error_body(&e)));
    tracing::debug!(%action, ?code, "api call");
    (reply, delay)
}

fn render_fault(kind: ResponseFault, action: &str) -> Result<HttpResponse, Reset> {
    Ok(match kind {
        ResponseFault::ApiError { code, message } => {
            let mut e = ApiError::injected(code);
            if let Some(m) = message {
                e.message = m;
            }
            json(StatusCode::OK, error_body(&e))
        }
        ResponseFault::HttpStatus(status) => json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            r#"{"message":"injected HTTP error"}"#.into(),
        ),
        ResponseFault::NonJson => json(
            StatusCode::OK,
            "<html><body>502 Bad Gateway</body></html>".into(),
        ),
        ResponseFault::MissingRetCode => json(
            StatusCode::OK,
            format!(r#"{{"action":"{action}Response"}}"#),
        ),
        ResponseFault::Reset => return Err(Reset),
    })
}
