//! The probe and metrics server: `/healthz` (the process runs), `/readyz` (it has connected
//! to the API server and is leading or standing by), `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the server reports.
#[derive(Debug)]
pub struct Probes {
    /// Prometheus registry.
    pub registry: Registry,
    /// Set once the operator is up.
    pub ready: AtomicBool,
}

fn respond(probes: &Probes, path: &str) -> Response<Full<Bytes>> {
    let (code, body) = match path {
        "/healthz" => (StatusCode::OK, "ok".to_string()),
        "/readyz" if probes.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ok".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_string()),
        "/metrics" => (StatusCode::OK, crate::metrics::encode(&probes.registry)),
        _ => (StatusCode::NOT_FOUND, "not found".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    if path == "/metrics" {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
    }
    resp
}

/// Binds `addr` (port 0 picks one) and serves until `stop`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    probes: Arc<Probes>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                },
            };
            let probes = probes.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let resp = respond(&probes, req.uri().path());
                    async move { Ok::<_, Infallible>(resp) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(error) = builder.serve_connection(TokioIo::new(stream), svc).await {
                    tracing::debug!(%error, "http connection ended");
                }
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let mut registry = Registry::default();
        let metrics = crate::metrics::Metrics::new(&mut registry);
        metrics.cloud_call("CreateNics", "ok");
        let probes = Arc::new(Probes {
            registry,
            ready: AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), probes.clone(), stop.clone())
            .await
            .unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        probes.ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(
            m.contains("hostnic_operator_cloud_calls_total{action=\"CreateNics\",result=\"ok\"} 1"),
            "{m}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
    }
}
