//! The admin endpoints (`/admin/...`, JSON, unsigned): inspection, counters, faults and
//! run-time settings for tests and demos that drive the simulator from outside the process.
//! The routes are listed in the crate documentation.

use std::time::Duration;

use crate::wire::InstanceStatus;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::config::{InstanceSpec, JobLatency, Quota, Rules};
use crate::faults::Fault;
use crate::server::{CallStats, HttpResponse, json};
use crate::sim::Shared;

fn reply(value: serde_json::Value) -> HttpResponse {
    json(StatusCode::OK, value.to_string())
}

fn bad(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    json(status, json!({ "error": message.to_string() }).to_string())
}

/// Boxed error: a response is large and this is the cold path.
fn parse<T: DeserializeOwned>(body: &str) -> Result<T, Box<HttpResponse>> {
    serde_json::from_str(body).map_err(|e| Box::new(bad(StatusCode::BAD_REQUEST, e)))
}

fn to_value<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `{"running": bool}` (start/stop) or `{"status": "suspended"}` (any instance status).
#[derive(Deserialize)]
#[serde(untagged)]
enum InstanceChange {
    Running { running: bool },
    Status { status: InstanceStatus },
}

impl InstanceChange {
    fn status(self) -> InstanceStatus {
        match self {
            Self::Running { running: true } => InstanceStatus::Running,
            Self::Running { running: false } => InstanceStatus::Stopped,
            Self::Status { status } => status,
        }
    }
}

#[derive(Deserialize)]
struct Advance {
    ms: u64,
}

/// Routes one admin request.
pub(crate) async fn handle(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: &str,
) -> HttpResponse {
    let route = path.trim_start_matches("/admin/").trim_end_matches('/');
    let segments: Vec<&str> = route.split('/').collect();
    let result = match (method.as_str(), segments.as_slice()) {
        ("GET", ["nics"]) => Ok(reply(to_value(shared.lock().model.nic_infos()))),
        ("GET", ["jobs"]) => Ok(reply(to_value(shared.lock().model.job_views()))),
        ("GET", ["vxnets"]) => {
            let mut vxnets = to_value(shared.lock().model.vxnet_views());
            if let Some(list) = vxnets.as_array_mut() {
                for v in list {
                    let id = v["vxnet_id"].as_str().unwrap_or_default().to_owned();
                    v["netns"] = to_value(shared.vxnet_netns(&id));
                    let router = v["vpc_router_id"].as_str().unwrap_or_default().to_owned();
                    v["router_netns"] = to_value(shared.router_netns(&router));
                }
            }
            Ok(reply(vxnets))
        }
        ("GET", ["instances"]) => Ok(reply(to_value(shared.lock().model.instance_infos()))),
        ("POST", ["instances"]) => {
            parse::<InstanceSpec>(body).map(|spec| match shared.lock().model.add_instance(&spec) {
                Ok(id) => reply(json!({ "instance_id": id })),
                Err(e) => bad(StatusCode::CONFLICT, e),
            })
        }
        ("PUT", ["instances", id]) => parse::<InstanceChange>(body).map(|change| {
            match shared.lock().model.set_instance_status(id, change.status()) {
                Ok(()) => reply(json!({})),
                Err(e) => bad(StatusCode::NOT_FOUND, e.message),
            }
        }),
        ("GET", ["calls"]) => Ok(reply(to_value(shared.lock().calls.clone()))),
        ("POST", ["calls", "reset"]) => {
            shared.lock().calls = CallStats::default();
            Ok(reply(json!({})))
        }
        ("GET", ["faults"]) => Ok(reply(to_value(shared.lock().faults.list()))),
        ("POST", ["faults"]) => {
            parse::<Fault>(body).map(|f| reply(json!({ "id": shared.lock().faults.add(f) })))
        }
        ("DELETE", ["faults"]) => {
            shared.lock().faults.clear();
            Ok(reply(json!({})))
        }
        ("DELETE", ["faults", id]) => match id.parse::<u64>() {
            Ok(id) if shared.lock().faults.remove(id) => Ok(reply(json!({}))),
            _ => Ok(bad(StatusCode::NOT_FOUND, format!("no fault {id}"))),
        },
        ("PUT", ["quota"]) => parse::<Option<Quota>>(body).map(|q| {
            let now = shared.clock.now();
            shared.lock().set_quota(q, now);
            reply(json!({}))
        }),
        ("GET", ["rules"]) => Ok(reply(to_value(shared.lock().model.rules()))),
        ("PUT", ["rules"]) => parse::<Rules>(body).map(|r| {
            shared.lock().model.set_rules(r);
            reply(json!({}))
        }),
        ("PUT", ["nic-batch-limit"]) => parse::<Option<usize>>(body).map(|l| {
            shared.lock().model.set_batch_limit(l);
            reply(json!({}))
        }),
        ("PUT", ["job-latency"]) => parse::<JobLatency>(body).map(|l| {
            shared.lock().model.set_latency(l);
            reply(json!({}))
        }),
        ("POST", ["advance"]) => match parse::<Advance>(body) {
            Ok(a) if shared.clock.advance(Duration::from_millis(a.ms)) => {
                shared.tick().await;
                Ok(reply(json!({})))
            }
            Ok(_) => Ok(bad(StatusCode::CONFLICT, "the clock is not manual")),
            Err(e) => Err(e),
        },
        _ => Ok(bad(
            StatusCode::NOT_FOUND,
            format!("no admin route {method} {path}"),
        )),
    };
    result.unwrap_or_else(|e| *e)
}
