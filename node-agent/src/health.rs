//! Health and metrics over HTTP on a local TCP port: `/healthz` (the process serves),
//! `/readyz` (CNI STATUS would say ready) and `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::claims::Agent;

/// Serves health and metrics on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, agent: Arc<Agent>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(handle(&agent, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn handle(agent: &Agent, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let s = agent.status();
            match s.reason {
                None => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
                Some(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{why}\n"),
                ),
            }
        }
        "/metrics" => {
            agent.status();
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                agent.metrics.encode(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}
