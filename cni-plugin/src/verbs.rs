//! The CNI verbs: each reads the checked environment and config, makes one request to the agent
//! and turns the answer into the spec's output. No state is kept here; the agent owns it.

use std::io::Write;
use std::time::{Duration, Instant};

use hostnic_agent_api::{
    AgentStatus, Attachment, CheckRequest, ClaimRequest, GcRequest, GcResponse, ReleaseRequest,
    Released, path,
};

use crate::client::Client;
use crate::config::{NetConf, parse_json, raw_version};
use crate::env::{AttachmentEnv, Command};
use crate::error::{CniError, Code};
use crate::log::{Level, Logger};
use crate::version::{self, CURRENT};

/// One invocation of the plugin: what the process was given.
pub struct Invocation<'a> {
    /// Reads an environment variable.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The network config (stdin).
    pub stdin: &'a [u8],
}

impl Invocation<'_> {
    /// The cniVersion to stamp on an error: the config's when it has one, else the newest.
    pub fn error_version(&self) -> String {
        parse_json(self.stdin)
            .ok()
            .map(|v| raw_version(&v).to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| CURRENT.as_str().to_owned())
    }

    /// Runs the verb, writing its output (if any) to `out`.
    pub fn run(&self, out: &mut dyn Write, log: &mut Logger) -> Result<(), CniError> {
        let command = Command::parse((self.env)("CNI_COMMAND").as_deref())?;
        log.add_context("cmd", &format!("{command:?}").to_uppercase());
        // The environment is checked before the config, as libcni's skel does.
        let attachment = |log: &mut Logger| {
            let env = AttachmentEnv::read(command, self.env)?;
            log.add_context("container_id", &env.key.container_id);
            log.add_context("ifname", &env.key.ifname);
            Ok::<_, CniError>(env)
        };
        let verb = match command {
            Command::Version => return write_out(out, &version::version_info()),
            Command::Add => Verb::Add(attachment(log)?),
            Command::Del => Verb::Del(attachment(log)?),
            Command::Check => Verb::Check(attachment(log)?),
            Command::Gc => Verb::Gc,
            Command::Status => Verb::Status,
        };
        let conf = NetConf::from_value(parse_json(self.stdin)?)?;
        if let Some(file) = &conf.log_file {
            log.to_file(file);
        }
        for w in &conf.warnings {
            log.log(Level::Warn, w, &[]);
        }
        let needs = |ok: bool, verb: &str, since: &str| {
            if ok {
                Ok(())
            } else {
                Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "config version {} does not allow {verb}: it exists from cniVersion {since} on",
                        conf.version.as_str()
                    ),
                ))
            }
        };
        let client = Client::new(&conf.socket, conf.timeout);
        let started = Instant::now();
        match verb {
            Verb::Add(env) => {
                conf.require_ipv4_routes()?;
                add(&conf, &env, &client, out, log, started)
            }
            Verb::Del(env) => del(&env, &client, log, started),
            Verb::Check(env) => {
                needs(conf.version.has_check(), "CHECK", "0.4.0")?;
                conf.require_ipv4_routes()?;
                check(&conf, &env, &client, log)
            }
            Verb::Gc => {
                needs(conf.version.has_gc_and_status(), "GC", "1.1.0")?;
                gc(&conf, &client, log)
            }
            Verb::Status => {
                needs(conf.version.has_gc_and_status(), "STATUS", "1.1.0")?;
                status(&client, log)
            }
        }
    }
}

/// A verb that talks to the agent, with the environment it needs.
enum Verb {
    Add(AttachmentEnv),
    Del(AttachmentEnv),
    Check(AttachmentEnv),
    Gc,
    Status,
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CniError> {
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| CniError::new(Code::Io, format!("cannot write the result to stdout: {e}")))
}

fn add(
    conf: &NetConf,
    env: &AttachmentEnv,
    client: &Client,
    out: &mut dyn Write,
    log: &mut Logger,
    started: Instant,
) -> Result<(), CniError> {
    let pod = env.args.pod()?;
    if let Some(infra) = env.args.infra_container_id()
        && infra != env.key.container_id
    {
        log.log(
            Level::Warn,
            "K8S_POD_INFRA_CONTAINER_ID differs from CNI_CONTAINERID",
            &[("infra_container_id", &infra)],
        );
    }
    let req = ClaimRequest {
        key: env.key.clone(),
        netns: env.netns.clone(),
        pod: pod.clone(),
        pool: conf.pool.clone(),
        pod_pool: conf.pod_pool.clone(),
        network: Some(conf.name.clone()),
        mtu: conf.mtu,
        routes: conf.routes.clone(),
    };
    let attachment: Attachment = match client.post(path::CLAIM, &req) {
        Ok(a) => a,
        Err(e) => {
            if e.outcome_unknown() {
                // The claim may complete after we gave up, and the runtime will not DEL after a
                // failed ADD: ask for a release so no NIC stays with a sandbox that never started.
                undo_claim(env, &client.with_timeout(UNDO_TIMEOUT), log);
            }
            return Err(CniError::from_client(e, false));
        }
    };
    let mut result = conf.prev_result.clone().unwrap_or_default();
    result.push_attachment(&attachment);
    if result.dns.is_empty() {
        result.dns = conf.dns.clone();
    }
    if let Err(err) = write_out(out, &result.to_json(conf.version).to_string()) {
        // The runtime will not see the result and will not DEL: give the NIC back now.
        undo_claim(env, client, log);
        return Err(err);
    }
    log.log(
        Level::Info,
        "claimed",
        &[
            ("pod", &format!("{}/{}", pod.namespace, pod.name)),
            ("hostnic", &attachment.hostnic),
            ("address", &attachment.address),
            ("mac", &attachment.mac),
            ("ms", &started.elapsed().as_millis()),
        ],
    );
    Ok(())
}

/// Deadline of the release that undoes a claim whose outcome is unknown.
const UNDO_TIMEOUT: Duration = Duration::from_secs(2);

/// Best-effort release after a failed ADD; a failure is only logged (the agent's own hygiene
/// releases NICs of sandboxes that do not exist).
fn undo_claim(env: &AttachmentEnv, client: &Client, log: &mut Logger) {
    let req = ReleaseRequest {
        key: env.key.clone(),
        netns: Some(env.netns.clone()),
    };
    match client.post::<_, Released>(path::RELEASE, &req) {
        Ok(r) => log.log(
            Level::Warn,
            "released the claim of a failed ADD",
            &[("hostnic", &r.hostnic.as_deref().unwrap_or("none"))],
        ),
        Err(e) => log.log(
            Level::Warn,
            "could not release the claim of a failed ADD",
            &[("error", &e)],
        ),
    }
}

fn del(
    env: &AttachmentEnv,
    client: &Client,
    log: &mut Logger,
    started: Instant,
) -> Result<(), CniError> {
    let req = ReleaseRequest {
        key: env.key.clone(),
        // containerd's second DEL comes without a netns; the agent handles it.
        netns: (!env.netns.is_empty()).then(|| env.netns.clone()),
    };
    let released: Released = client
        .post(path::RELEASE, &req)
        .map_err(|e| CniError::from_client(e, false))?;
    let hostnic = released.hostnic.as_deref().unwrap_or("none");
    log.log(
        Level::Info,
        "released",
        &[
            ("hostnic", &hostnic),
            ("ms", &started.elapsed().as_millis()),
        ],
    );
    Ok(())
}

fn check(
    conf: &NetConf,
    env: &AttachmentEnv,
    client: &Client,
    log: &mut Logger,
) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::config("CHECK needs prevResult (the runtime passes the cached ADD result)")
    })?;
    // The cached result and the config say what must be there, not today's NicPool: a pool
    // edit or a replaced gateway NIC must not fail CHECK for pods set up before it.
    let expected = prev
        .expected(&env.key.ifname, &env.netns, &conf.routes, conf.mtu)
        .map_err(|why| CniError::new(Code::Other, format!("CHECK failed: {why}")))?;
    let req = CheckRequest {
        key: env.key.clone(),
        netns: env.netns.clone(),
        expected: Some(expected),
    };
    let attachment: Attachment = client
        .post(path::CHECK, &req)
        .map_err(|e| CniError::from_client(e, false))?;
    // What the agent recorded at claim time against the cached result.
    prev.contains(&attachment).map_err(|why| {
        CniError::new(Code::Other, format!("CHECK failed: {why}"))
            .with_details(format!("agent reports hostnic {}", attachment.hostnic))
    })?;
    log.log(Level::Info, "checked", &[("hostnic", &attachment.hostnic)]);
    Ok(())
}

fn gc(conf: &NetConf, client: &Client, log: &mut Logger) -> Result<(), CniError> {
    // Without the list every attachment would look stale: refuse rather than release them all.
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::config(
            "GC needs \"cni.dev/valid-attachments\" (the attachments the runtime still \
             knows); nothing was released",
        )
    })?;
    let req = GcRequest {
        network: conf.name.clone(),
        valid_attachments: valid,
    };
    let resp: GcResponse = client
        .post(path::GC, &req)
        .map_err(|e| CniError::from_client(e, false))?;
    let released: Vec<String> = resp
        .released
        .iter()
        .map(|k| format!("{}/{}", k.container_id, k.ifname))
        .collect();
    log.log(
        Level::Info,
        "gc done",
        &[
            ("network", &conf.name),
            ("valid", &req.valid_attachments.len()),
            ("released", &released.join(",")),
        ],
    );
    if resp.failed.is_empty() {
        return Ok(());
    }
    // The spec: carry on with the others, then report the errors to the runtime.
    let failed: Vec<String> = resp
        .failed
        .iter()
        .map(|f| format!("{}/{}: {}", f.key.container_id, f.key.ifname, f.error))
        .collect();
    Err(CniError::new(
        Code::Other,
        format!(
            "GC of network {} could not release {} stale attachment(s): {}",
            conf.name,
            failed.len(),
            failed.join("; ")
        ),
    )
    .with_details(format!("released: {}", released.join(","))))
}

fn status(client: &Client, log: &mut Logger) -> Result<(), CniError> {
    let status: AgentStatus = client
        .get(path::STATUS)
        .map_err(|e| CniError::from_client(e, true))?;
    if status.ready {
        return Ok(());
    }
    let reason = status
        .reason
        .unwrap_or_else(|| "the agent reports not ready".to_owned());
    log.log(Level::Warn, "not ready", &[("reason", &reason)]);
    Err(CniError::new(
        Code::NotAvailable,
        format!("hostnic-agent is not ready: {reason}"),
    )
    .with_details(format!(
        "synced={} free_nics={} incoming_nics={}",
        status.synced, status.free_nics, status.incoming_nics
    )))
}
