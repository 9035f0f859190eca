//! The API actions: parameters in, model call, JSON response out (encoded with the client
//! crate's wire types, so both sides agree on field names by construction).

use std::net::Ipv4Addr;
use std::time::Duration;

use qingcloud::wire::{self, Envelope, InstanceStatus, JobStatus, NicStatus};
use serde::Serialize;

use crate::api_error::ApiError;
use crate::faults::Decision;
use crate::model::{JobFaults, Model, NicFilter, PAGE_CAP, Page, VxnetInstance};
use crate::params::Params;

/// Every action the simulator implements.
pub const ACTIONS: [&str; 10] = [
    "CreateNics",
    "AttachNics",
    "DetachNics",
    "DeleteNics",
    "DescribeNics",
    "ModifyNicAttributes",
    "DescribeJobs",
    "DescribeVxnets",
    "DescribeInstances",
    "DescribeVxnetInstances",
];

/// Whether the action starts a job (the job driver must be woken).
pub(crate) fn starts_job(action: &str) -> bool {
    matches!(action, "AttachNics" | "DetachNics")
}

/// Runs one authenticated, zone-checked request; returns the JSON body of the response.
pub(crate) fn run(
    model: &mut Model,
    action: &str,
    p: &Params,
    faults: &Decision,
) -> Result<String, ApiError> {
    let job_faults = JobFaults {
        outcome: faults.job,
        status_lag_polls: faults.status_lag,
        link_delay: Duration::from_millis(faults.link_delay_ms),
    };
    match action {
        "CreateNics" => {
            let vxnet = p.required("vxnet")?;
            model.check_create_target(vxnet)?;
            let ips = p
                .list("private_ips")
                .iter()
                .map(|s| {
                    s.parse::<Ipv4Addr>()
                        .map_err(|_| ApiError::invalid("private_ips", "not an IPv4 address"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let created = model.create_nics(
                vxnet,
                p.int("count", 1)?,
                p.get("nic_name").unwrap_or_default(),
                &ips,
                p.flag("disable_ip")?,
                faults.hide_polls,
            )?;
            let nics = created
                .into_iter()
                .map(|(nic_id, ip)| wire::CreatedNic {
                    nic_id,
                    private_ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
                })
                .collect();
            ok(action, wire::CreateNicsResponse { nics })
        }
        "AttachNics" => {
            let instance = p.required("instance")?;
            let nics = p.required_list("nics")?;
            let job_id = model.attach_nics(instance, &nics, job_faults)?;
            ok(action, wire::JobResponse { job_id })
        }
        "DetachNics" => {
            let nics = p.required_list("nics")?;
            let job_id = model.detach_nics(&nics, job_faults)?;
            ok(action, wire::JobResponse { job_id })
        }
        "DeleteNics" => {
            model.delete_nics(&p.required_list("nics")?)?;
            ok(action, wire::Empty {})
        }
        "ModifyNicAttributes" => {
            let nic = p.required("nic")?;
            let ip = match p.get("private_ip").filter(|s| !s.is_empty()) {
                Some(s) => Some(
                    s.parse::<Ipv4Addr>()
                        .map_err(|_| ApiError::invalid("private_ip", "not an IPv4 address"))?,
                ),
                None => None,
            };
            p.flag("enable_aspoof")?;
            model.modify_nic(
                nic,
                p.get("nic_name"),
                p.get("vxnet").filter(|s| !s.is_empty()),
                ip,
            )?;
            ok(action, wire::Empty {})
        }
        "DescribeNics" => {
            let status = match p.get("status").filter(|s| !s.is_empty()) {
                None => None,
                Some("available") => Some(NicStatus::Available),
                Some("in-use") => Some(NicStatus::InUse),
                Some(_) => return Err(ApiError::invalid("status", "available or in-use")),
            };
            let filter = NicFilter {
                nics: p.list("nics"),
                instances: p.list("instances"),
                vxnets: p.list("vxnets"),
                status,
                name: p
                    .get("nic_name")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            };
            let (total, nic_set) = model.describe_nics(&filter, page(p)?);
            ok(
                action,
                wire::DescribeNicsResponse {
                    nic_set,
                    total_count: Some(total),
                },
            )
        }
        "DescribeJobs" => {
            let statuses = p
                .list("status")
                .iter()
                .map(|s| job_status(s))
                .collect::<Result<Vec<_>, _>>()?;
            let (total, job_set) = model.describe_jobs(
                &p.list("jobs"),
                &statuses,
                p.get("job_action").filter(|s| !s.is_empty()),
                page(p)?,
            );
            ok(
                action,
                wire::DescribeJobsResponse {
                    job_set,
                    total_count: Some(total),
                },
            )
        }
        "DescribeVxnets" => {
            let (total, vxnet_set) =
                model.describe_vxnets(&p.list("vxnets"), p.flag("verbose")?, page(p)?);
            ok(
                action,
                without_null_ip_count(wire::DescribeVxnetsResponse {
                    vxnet_set,
                    total_count: Some(total),
                })?,
            )
        }
        "DescribeInstances" => {
            let statuses = p
                .list("status")
                .iter()
                .map(|s| {
                    serde_json::from_value::<InstanceStatus>(serde_json::Value::String(s.clone()))
                        .ok()
                        .filter(|st| *st != InstanceStatus::Unknown)
                        .ok_or_else(|| ApiError::invalid("status", "unknown instance status"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (total, instance_set) =
                model.describe_instances(&p.list("instances"), &statuses, page(p)?);
            ok(
                action,
                wire::DescribeInstancesResponse {
                    instance_set,
                    total_count: Some(total),
                },
            )
        }
        "DescribeVxnetInstances" => {
            let vxnet = p.required("vxnet")?;
            let (total, instance_set) =
                model.describe_vxnet_instances(vxnet, &p.list("instances"), page(p)?);
            ok(
                action,
                VxnetInstancesResponse {
                    instance_set,
                    total_count: total,
                },
            )
        }
        _ => Err(ApiError::unknown_action(action)),
    }
}

/// DescribeVxnetInstances response body (the client crate has no type for it).
#[derive(Serialize)]
struct VxnetInstancesResponse {
    instance_set: Vec<VxnetInstance>,
    total_count: u64,
}

/// The response with `available_ip_count` left out (not `null`) where the model has none:
/// the real API omits fields it does not report.
fn without_null_ip_count(
    resp: wire::DescribeVxnetsResponse,
) -> Result<serde_json::Value, ApiError> {
    let mut value = serde_json::to_value(resp)
        .map_err(|e| ApiError::new(wire::RetCode::INTERNAL, format!("InternalError, {e}")))?;
    if let Some(set) = value["vxnet_set"].as_array_mut() {
        for v in set.iter_mut().filter_map(|v| v.as_object_mut()) {
            if v.get("available_ip_count").is_some_and(|c| c.is_null()) {
                v.remove("available_ip_count");
            }
        }
    }
    Ok(value)
}

fn ok<T: Serialize>(action: &str, body: T) -> Result<String, ApiError> {
    serde_json::to_string(&Envelope::ok(action, body))
        .map_err(|e| ApiError::new(wire::RetCode::INTERNAL, format!("InternalError, {e}")))
}

/// The JSON body of an error response.
pub(crate) fn error_body(e: &ApiError) -> String {
    serde_json::to_string(&Envelope::error(e.code, e.message.clone()))
        .unwrap_or_else(|_| format!(r#"{{"ret_code":{}}}"#, e.code))
}

/// `offset` (default 0) and `limit` (default 20, 0 = default, capped at 100 silently).
fn page(p: &Params) -> Result<Page, ApiError> {
    let offset = p.int("offset", 0)?;
    let limit = p.int("limit", 20)?;
    if offset < 0 {
        return Err(ApiError::invalid("offset", "must not be negative"));
    }
    if limit < 0 {
        return Err(ApiError::invalid("limit", "must not be negative"));
    }
    let limit = if limit == 0 { 20 } else { limit.unsigned_abs() };
    Ok(Page {
        offset: offset.unsigned_abs(),
        limit: limit.min(PAGE_CAP),
    })
}

fn job_status(s: &str) -> Result<JobStatus, ApiError> {
    match s {
        "pending" => Ok(JobStatus::Pending),
        "working" => Ok(JobStatus::Working),
        "successful" => Ok(JobStatus::Successful),
        "failed" => Ok(JobStatus::Failed),
        "done with failure" => Ok(JobStatus::DoneWithFailure),
        _ => Err(ApiError::invalid("status", "unknown job status")),
    }
}
