//! The CNI verbs: each reads the checked environment and config, makes one request to the agent
//! and turns the answer into the spec's output. No state is kept here; the agent owns it, except
//! a DEL the agent cannot take now, which waits in the agent's queue directory.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostnic_agent_api::{
    AgentStatus, Attachment, AttachmentKey, CheckRequest, ClaimRequest, DEFAULT_SOCKET, GcRequest,
    GcResponse, ReleaseRequest, Released, path, pending_del,
};
use serde_json::Value;

use crate::client::Client;
use crate::config::{DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS, NetConf, parse_json, raw_version};
use crate::env::{self, AttachmentEnv, Command};
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
            // DEL reads only what it needs and tolerates the rest (see `del`).
            Command::Del => return del(&DelInput::read(self.env, self.stdin)?, log),
            Command::Add => Verb::Add(attachment(log)?),
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
        pod_annotations: conf.pod_annotations,
        wait_for_nic_seconds: conf.wait_for_nic.as_secs(),
        network: Some(conf.name.clone()),
        mtu: conf.mtu,
        routes: conf.routes.clone(),
    };
    // The agent may hold the claim that long while a NIC for an empty pool is on its way.
    let claim_client = client.with_timeout(client.timeout() + conf.wait_for_nic);
    let attachment: Attachment = match claim_client.post(path::CLAIM, &req) {
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

/// What DEL needs, read leniently: the attachment's key (validated, it names the NIC), and from
/// the config only the socket, the timeout and the log file, each falling back to its default
/// when missing or invalid. A config or prevResult that ADD would reject today (a tightened
/// rule, a cached result in an older format, stdin that is not even JSON), a relative netns or
/// malformed CNI_ARGS never make a DEL fail: the runtime can only retry a failed DEL forever.
struct DelInput {
    key: AttachmentKey,
    netns: Option<String>,
    socket: PathBuf,
    timeout: Duration,
    log_file: Option<PathBuf>,
}

impl DelInput {
    fn read(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Self, CniError> {
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        env::validate_container_id(&container_id)?;
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        env::validate_ifname(&ifname)?;
        // containerd's second DEL comes without a netns; the agent also knows the recorded one.
        let netns = get("CNI_NETNS").filter(|n| n.starts_with('/'));
        let conf = parse_json(stdin).unwrap_or(Value::Null);
        let absolute = |key: &str| {
            conf.get(key)
                .and_then(Value::as_str)
                .filter(|p| p.starts_with('/'))
                .map(PathBuf::from)
        };
        let timeout = conf
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .filter(|t| (1..=MAX_TIMEOUT_SECS).contains(t))
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        Ok(Self {
            key: AttachmentKey {
                container_id,
                ifname,
            },
            netns,
            socket: absolute("socket").unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            timeout: Duration::from_secs(timeout),
            log_file: absolute("logFile"),
        })
    }
}

/// DEL: asks the agent to release; when the agent cannot be reached or does not finish, the
/// request is queued in the agent's `pending-del` directory and the DEL succeeds. That is safe:
/// the agent releases queued DELs after its start-up recovery, and until then the NIC stays
/// Bound (a real NIC leaves a destroyed netns by itself, nothing else can take it).
fn del(input: &DelInput, log: &mut Logger) -> Result<(), CniError> {
    let started = Instant::now();
    log.add_context("container_id", &input.key.container_id);
    log.add_context("ifname", &input.key.ifname);
    if let Some(file) = &input.log_file {
        log.to_file(file);
    }
    let req = ReleaseRequest {
        key: input.key.clone(),
        netns: input.netns.clone(),
    };
    let error =
        match Client::new(&input.socket, input.timeout).post::<_, Released>(path::RELEASE, &req) {
            Ok(released) => {
                let hostnic = released.hostnic.as_deref().unwrap_or("none");
                log.log(
                    Level::Info,
                    "released",
                    &[
                        ("hostnic", &hostnic),
                        ("ms", &started.elapsed().as_millis()),
                    ],
                );
                return Ok(());
            }
            Err(e) => e,
        };
    let dir = pending_del::dir(&input.socket);
    match pending_del::queue(&dir, &req) {
        Ok(queued) => {
            log.log(
                Level::Warn,
                "the agent did not take the DEL; queued it for the agent",
                &[
                    ("error", &error),
                    ("queued", &queued.display()),
                    ("ms", &started.elapsed().as_millis()),
                ],
            );
            Ok(())
        }
        Err(io) => Err(CniError::from_client(error, false).with_details(format!(
            "queueing the DEL in {} failed too: {io}",
            dir.display()
        ))),
    }
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
    // Only "not synced" fails STATUS (an unreachable agent failed above): a node without a
    // free NIC still serves (ADD answers 11), and a failed STATUS makes the runtime report the
    // node NotReady. `ready` is not used, so an older agent that still reported "no free NIC"
    // that way cannot fail it either.
    if status.synced {
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
