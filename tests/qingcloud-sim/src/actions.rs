//! The API actions: parameters in, model call, JSON response out (encoded with the
//! simulator's own [`crate::wire`], so a client that disagrees with the reference fails).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::wire::{self, InstanceStatus, JobStatus, NicStatus, RetCode};
use serde::Serialize;

use crate::api_error::ApiError;
use crate::faults::Decision;
use crate::model::{JobFaults, Model, NicFilter, PAGE_CAP, Page};
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
            ok(action, &wire::CreateNics { nics })
        }
        "AttachNics" => {
            let instance = p.required("instance")?;
            let nics = p.required_list("nics")?;
            let job_id = model.attach_nics(instance, &nics, job_faults)?;
            ok(action, &wire::JobStarted { job_id })
        }
        "DetachNics" => {
            let nics = p.required_list("nics")?;
            let job_id = model.detach_nics(&nics, job_faults)?;
            ok(action, &wire::JobStarted { job_id })
        }
        "DeleteNics" => {
            model.delete_nics(&p.required_list("nics")?)?;
            ok(action, &wire::NoFields {})
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
            ok(action, &wire::NoFields {})
        }
        "DescribeNics" => {
            let status = match p.get("status").filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(
                    NicStatus::parse(s)
                        .ok_or_else(|| ApiError::invalid("status", "available or in-use"))?,
                ),
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
            listing(action, wire::NicSet { nic_set }, total)
        }
        "DescribeJobs" => {
            let statuses = p
                .list("status")
                .iter()
                .map(|s| {
                    JobStatus::parse(s)
                        .ok_or_else(|| ApiError::invalid("status", "unknown job status"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (total, job_set) = model.describe_jobs(
                &p.list("jobs"),
                &statuses,
                p.get("job_action").filter(|s| !s.is_empty()),
                page(p)?,
            );
            listing(action, wire::JobSet { job_set }, total)
        }
        "DescribeVxnets" => {
            let (total, vxnet_set) =
                model.describe_vxnets(&p.list("vxnets"), p.flag("verbose")?, page(p)?);
            listing(action, wire::VxnetSet { vxnet_set }, total)
        }
        "DescribeInstances" => {
            let statuses = p
                .list("status")
                .iter()
                .map(|s| {
                    InstanceStatus::parse(s)
                        .ok_or_else(|| ApiError::invalid("status", "unknown instance status"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (total, instance_set) =
                model.describe_instances(&p.list("instances"), &statuses, page(p)?);
            listing(action, wire::InstanceSet { instance_set }, total)
        }
        "DescribeVxnetInstances" => {
            let vxnet = p.required("vxnet")?;
            let (total, instance_set) =
                model.describe_vxnet_instances(vxnet, &p.list("instances"), page(p)?);
            listing(action, wire::InstanceSet { instance_set }, total)
        }
        _ => Err(ApiError::unknown_action(action)),
    }
}

fn ok<T: Serialize>(action: &str, body: &T) -> Result<String, ApiError> {
    wire::success(action, body)
        .map_err(|e| ApiError::new(RetCode::INTERNAL, format!("InternalError, {e}")))
}

fn listing<T: Serialize>(action: &str, set: T, total_count: u64) -> Result<String, ApiError> {
    ok(action, &wire::Listing { set, total_count })
}

/// The JSON body of an error response.
pub(crate) fn error_body(e: &ApiError) -> String {
    wire::failure(e.code, &e.message)
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
