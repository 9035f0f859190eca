//! The HTTP client: signs GET (or POST) requests, decodes the envelope, retries transient
//! failures with jittered exponential backoff inside a bounded budget, and takes a
//! rate-limiter token for every attempt. A 2500 about the API request quota stops every call
//! of every clone for a cooldown. Describe filter lists are sent in chunks of the page size,
//! so no request URI grows with the number of ids. Typed calls for the NIC actions live
//! here; job waiting and batching build on them in their own modules.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::config::{ClientSettings, CloudConfig, ConfigError};
use crate::error::{Error, Result};
use crate::ids::{InstanceId, JobId, NicId, VxnetId};
use crate::metrics::Metrics;
use crate::ratelimit::{Priority, RateLimiter};
use crate::signer;
use crate::wire::{
    Action, CreateNicsResponse, DescribeInstancesResponse, DescribeJobsResponse,
    DescribeNicsResponse, DescribeVxnetsResponse, Empty, Envelope, Instance, Job, JobResponse,
    JobStatus, Nic, NicStatus, RetCode, Vxnet,
};

/// The server's page size cap: larger `limit`s are silently reduced to it.
pub const PAGE_LIMIT: u64 = 100;

/// Longest request URI (path and query) sent: gateways commonly refuse longer ones with 414.
/// Chunked filter lists stay far below it; a GET that would exceed it is not sent.
pub const MAX_REQUEST_URI: usize = 8192;

/// Safety stop for a server whose `total_count` never lets paging finish.
const MAX_PAGES: u32 = 10_000;

/// Most NICs one CreateNics call may create (per-vxnet NIC limit).
pub const MAX_CREATE_COUNT: u32 = 252;

/// A QingCloud API client. Cheap to clone; clones share the HTTP connection pool, the rate
/// limiter and the metrics, and differ only in their [`Priority`].
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
    priority: Priority,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: CloudConfig,
    settings: ClientSettings,
    limiter: RateLimiter,
    metrics: Option<Metrics>,
    /// Until when no call is sent: the API request quota was exhausted.
    quota_cooldown: Mutex<Option<tokio::time::Instant>>,
}

/// A NIC returned by CreateNics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNic {
    /// Its id (MAC).
    pub id: NicId,
    /// Its private IP; `None` when the API returned none.
    pub private_ip: Option<IpAddr>,
}

/// DescribeNics filters; empty fields do not filter. No filter at all lists every NIC of the
/// account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicFilter {
    /// Only these NICs.
    pub nics: Vec<NicId>,
    /// Only NICs attached to these instances.
    pub instances: Vec<InstanceId>,
    /// Only NICs in these vxnets.
    pub vxnets: Vec<VxnetId>,
    /// Only NICs in this state.
    pub status: Option<NicStatus>,
    /// Only NICs with this name (exact or substring match: not confirmed, compare yourself).
    pub nic_name: Option<String>,
}

/// DescribeJobs filters; empty fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only these jobs.
    pub jobs: Vec<JobId>,
    /// Only jobs in one of these states.
    pub status: Vec<JobStatus>,
    /// Only jobs started by this action.
    pub job_action: Option<Action>,
}

/// ModifyNicAttributes changes; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicChanges {
    /// New name.
    pub nic_name: Option<String>,
    /// New private IP.
    pub private_ip: Option<IpAddr>,
}

static INSTALL_CRYPTO: Once = Once::new();

impl Client {
    /// Builds a client. `metrics`, when given, records every request.
    pub fn new(
        config: CloudConfig,
        settings: ClientSettings,
        metrics: Option<Metrics>,
    ) -> Result<Self> {
        if !(settings.qps.is_finite() && settings.qps > 0.0) {
            return Err(Error::Settings("qps must be a positive number"));
        }
        if settings.burst == 0 {
            return Err(Error::Settings("burst must be at least 1"));
        }
        if settings.max_batch == 0 {
            return Err(Error::Settings("max_batch must be at least 1"));
        }
        // reqwest is built without a default crypto provider; whoever installs one first wins
        // (the operator's kube client may already have), so the result is ignored.
        INSTALL_CRYPTO.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let mut http = reqwest::Client::builder()
            .connect_timeout(config.connection_timeout)
            .timeout(settings.request_timeout);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(Error::Build)?;
            // Merged with the platform roots, so the production verifier path is the one used.
            http = http.tls_certs_merge(certs);
        }
        let http = http.build().map_err(Error::Build)?;
        let limiter = RateLimiter::new(settings.qps, settings.burst);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                settings,
                limiter,
                metrics,
                quota_cooldown: Mutex::new(None),
            }),
            priority: Priority::Refill,
        })
    }

    /// A clone whose calls take rate-limiter tokens at `priority` (the default is `Refill`).
    pub fn with_priority(&self, priority: Priority) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            priority,
        }
    }

    /// The priority of this handle's calls.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The settings the client was built with.
    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// The account configuration (zone, endpoint; the secret stays redacted in Debug).
    pub fn config(&self) -> &CloudConfig {
        &self.inner.config
    }

    // === typed calls ===

    /// CreateNics: `count` (1-252) new `available` NICs in `vxnet`, named `nic_name`.
    /// Not idempotent: it is retried only when the server cannot have acted on the request,
    /// so after an ambiguous failure look the NICs up by name.
    pub async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        nic_name: Option<&str>,
    ) -> Result<Vec<NewNic>> {
        let action = Action::CreateNics;
        if !(1..=MAX_CREATE_COUNT).contains(&count) {
            return Err(invalid(
                action,
                format!("count {count} is not in 1-{MAX_CREATE_COUNT}"),
            ));
        }
        let mut p = Params::default();
        p.push("vxnet", vxnet);
        p.push("count", count);
        if let Some(name) = nic_name {
            p.push("nic_name", name);
        }
        let resp: CreateNicsResponse = self.call(action, p).await?;
        resp.nics
            .into_iter()
            .map(|n| {
                let id = NicId::parse(&n.nic_id)
                    .map_err(|source| Error::InvalidId { action, source })?;
                let private_ip = match n.private_ip.trim() {
                    "" => None,
                    ip => Some(ip.parse().map_err(|_| Error::Decode {
                        action,
                        reason: format!("private_ip of {id} is not an IP address"),
                    })?),
                };
                Ok(NewNic { id, private_ip })
            })
            .collect()
    }

    /// AttachNics: one job attaching all `nics` (not empty) to `instance`. See
    /// [`Client::attach_nics_batched`] for lists longer than `max_batch`.
    pub async fn attach_nics(&self, instance: &InstanceId, nics: &[NicId]) -> Result<JobId> {
        let action = Action::AttachNics;
        let mut p = Params::default();
        p.push("instance", instance);
        p.list(action, "nics", nics, true)?;
        self.job_call(action, p).await
    }

    /// DetachNics: one job detaching all `nics` (not empty).
    pub async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId> {
        let action = Action::DetachNics;
        let mut p = Params::default();
        p.list(action, "nics", nics, true)?;
        self.job_call(action, p).await
    }

    /// DeleteNics: deletes detached `nics` (not empty). 2100 means one of them is gone.
    pub async fn delete_nics(&self, nics: &[NicId]) -> Result<()> {
        let action = Action::DeleteNics;
        let mut p = Params::default();
        p.list(action, "nics", nics, true)?;
        self.call::<Empty>(action, p).await.map(|_| ())
    }

    /// ModifyNicAttributes: renames a NIC and/or changes its private IP.
    pub async fn modify_nic_attributes(&self, nic: &NicId, changes: &NicChanges) -> Result<()> {
        let action = Action::ModifyNicAttributes;
        let mut p = Params::default();
        p.push("nic", nic);
        if let Some(name) = &changes.nic_name {
            p.push("nic_name", name);
        }
        if let Some(ip) = &changes.private_ip {
            p.push("private_ip", ip);
        }
        self.call::<Empty>(action, p).await.map(|_| ())
    }

    /// DescribeNics: every NIC matching `filter`, paging until `total_count`.
    pub async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<Nic>> {
        let action = Action::DescribeNics;
        let mut p = Params::default();
        let lists = [
            chunked("nics", &filter.nics),
            chunked("instances", &filter.instances),
            chunked("vxnets", &filter.vxnets),
        ];
        match filter.status {
            Some(NicStatus::Available) => p.push("status", "available"),
            Some(NicStatus::InUse) => p.push("status", "in-use"),
            Some(NicStatus::Unknown) => {
                return Err(invalid(action, "cannot filter on status unknown".into()));
            }
            None => {}
        }
        if let Some(name) = &filter.nic_name {
            p.push("nic_name", name);
        }
        self.describe_all(action, p, &lists, |r: DescribeNicsResponse| {
            (r.nic_set, r.total_count)
        })
        .await
    }

    /// DescribeJobs: the given jobs (all jobs of the account when empty).
    pub async fn describe_jobs(&self, jobs: &[JobId]) -> Result<Vec<Job>> {
        self.describe_jobs_filtered(&JobFilter {
            jobs: jobs.to_vec(),
            ..JobFilter::default()
        })
        .await
    }

    /// DescribeJobs with filters, e.g. the unfinished ones: `status: [Pending, Working]`
    /// (cheaper than listing every job the account ever ran).
    pub async fn describe_jobs_filtered(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let action = Action::DescribeJobs;
        let mut p = Params::default();
        let lists = [chunked("jobs", &filter.jobs)];
        if filter.status.contains(&JobStatus::Unknown) {
            return Err(invalid(action, "cannot filter on status unknown".into()));
        }
        let status: Vec<&str> = filter.status.iter().map(|s| s.as_str()).collect();
        p.list(action, "status", &status, false)?;
        if let Some(a) = filter.job_action {
            p.push("job_action", a);
        }
        self.describe_all(action, p, &lists, |r: DescribeJobsResponse| {
            (r.job_set, r.total_count)
        })
        .await
    }

    /// DescribeVxnets: the given vxnets (all when empty), with their routers.
    pub async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>> {
        let action = Action::DescribeVxnets;
        let lists = [chunked("vxnets", vxnets)];
        // The API leaves available_ip_count out unless asked for verbose rows.
        let mut p = Params::default();
        p.push("verbose", 1);
        self.describe_all(action, p, &lists, |r: DescribeVxnetsResponse| {
            (r.vxnet_set, r.total_count)
        })
        .await
    }

    /// DescribeInstances: the given instances (all when empty), with their NICs.
    pub async fn describe_instances(&self, instances: &[InstanceId]) -> Result<Vec<Instance>> {
        let action = Action::DescribeInstances;
        let lists = [chunked("instances", instances)];
        self.describe_all(
            action,
            Params::default(),
            &lists,
            |r: DescribeInstancesResponse| (r.instance_set, r.total_count),
        )
        .await
    }

    // === plumbing ===

    async fn job_call(&self, action: Action, p: Params) -> Result<JobId> {
        let resp: JobResponse = self.call(action, p).await?;
        JobId::parse(&resp.job_id).map_err(|source| Error::InvalidId { action, source })
    }

    /// Fetches every page of a Describe action, once per combination of filter-list chunks
    /// (filters combine with AND, so the union over chunk combinations is the full answer).
    /// Rows that moved to a later page while paging (a resource created meanwhile shifts the
    /// order), or that several chunks return, are kept once.
    async fn describe_all<R, I>(
        &self,
        action: Action,
        filters: Params,
        lists: &[Chunked],
        split: impl Fn(R) -> (Vec<I>, Option<u64>),
    ) -> Result<Vec<I>>
    where
        R: DeserializeOwned,
        I: Keyed,
    {
        let mut items: Vec<I> = Vec::new();
        let mut seen = HashSet::new();
        for query in chunk_combinations(filters, lists) {
            self.page_through(action, query, &split, &mut items, &mut seen)
                .await?;
        }
        Ok(items)
    }

    /// Pages one filtered Describe query into `items`.
    async fn page_through<R, I>(
        &self,
        action: Action,
        filters: Params,
        split: &impl Fn(R) -> (Vec<I>, Option<u64>),
        items: &mut Vec<I>,
        seen: &mut HashSet<String>,
    ) -> Result<()>
    where
        R: DeserializeOwned,
        I: Keyed,
    {
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let mut p = filters.clone();
            p.push("offset", offset);
            p.push("limit", PAGE_LIMIT);
            let (page, total) = split(self.call(action, p).await?);
            let len = page.len();
            for item in page {
                if seen.insert(item.key().to_string()) {
                    items.push(item);
                }
            }
            match next_offset(offset, len, total) {
                Some(next) => offset = next,
                None => return Ok(()),
            }
        }
        Err(Error::Decode {
            action,
            reason: format!("paging did not end after {MAX_PAGES} pages"),
        })
    }

    /// Refuses to send while the API request quota cooldown runs.
    fn check_quota_cooldown(&self, action: Action) -> Result<()> {
        let until = *self
            .inner
            .quota_cooldown
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        match until {
            Some(until) if until > now => Err(Error::QuotaCooldown {
                action,
                remaining: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// The account's API request quota is used up: every clone stops sending for the
    /// cooldown, since each further request would only be refused and counted.
    fn open_quota_cooldown(&self, action: Action) {
        let cooldown = self.inner.settings.quota_cooldown;
        warn!(action = %action, cooldown_s = cooldown.as_secs(), "API request quota exhausted: pausing every QingCloud call");
        *self
            .inner
            .quota_cooldown
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now() + cooldown);
    }

    /// One logical call: rate limit, send, classify, retry within the budget.
    #[tracing::instrument(level = "debug", skip_all, fields(action = %action, priority = self.priority.as_str()))]
    async fn call<T: DeserializeOwned>(&self, action: Action, params: Params) -> Result<T> {
        let settings = &self.inner.settings;
        let attempts = self.inner.config.connection_retries.saturating_add(1);
        let mut slept = Duration::ZERO;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.check_quota_cooldown(action)?;
            let waited = self.inner.limiter.acquire(self.priority).await;
            // The cooldown may have opened while this call waited for its token.
            self.check_quota_cooldown(action)?;
            let start = tokio::time::Instant::now();
            let result = self.send::<T>(action, &params.0).await;
            if let Some(m) = &self.inner.metrics {
                m.limiter_wait(self.priority, waited);
                m.request(action, start.elapsed(), result.as_ref().err());
            }
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if err.is_throttled() {
                self.inner.limiter.penalize();
            }
            if err.is_request_quota() {
                self.open_quota_cooldown(action);
                return Err(err);
            }
            // A CreateNics the server may have executed must not run twice.
            let retryable = if action == Action::CreateNics {
                err.is_retryable_without_side_effects()
            } else {
                err.is_retryable()
            };
            if !retryable || attempt >= attempts {
                return Err(err);
            }
            let delay = backoff_delay(
                attempt,
                settings.backoff_base,
                settings.backoff_max,
                rand::random(),
            );
            if slept + delay > settings.retry_budget {
                return Err(err);
            }
            warn!(action = %action, attempt, error = %err, delay_ms = delay.as_millis() as u64, "retrying qingcloud call");
            tokio::time::sleep(delay).await;
            slept += delay;
        }
    }

    /// One HTTP request.
    async fn send<T: DeserializeOwned>(
        &self,
        action: Action,
        params: &[(String, String)],
    ) -> Result<T> {
        let cfg = &self.inner.config;
        let time_stamp = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut all: Vec<(String, String)> = params.to_vec();
        for (k, v) in [
            ("action", action.as_str()),
            ("zone", cfg.zone.as_str()),
            ("access_key_id", cfg.access_key_id.as_str()),
            ("time_stamp", time_stamp.as_str()),
            ("signature_method", "HmacSHA256"),
            ("signature_version", "1"),
            ("version", "1"),
        ] {
            all.push((k.to_string(), v.to_string()));
        }
        let method = if self.inner.settings.post {
            "POST"
        } else {
            "GET"
        };
        let signature = signer::sign(cfg.secret_access_key.expose(), method, &cfg.uri, &all);
        // Sent exactly as signed: canonical order, signature last.
        let query = format!(
            "{}&signature={}",
            signer::canonical_query(&all),
            signer::percent_encode(&signature)
        );
        let endpoint = format!("{}{}", cfg.base_url(), cfg.uri);
        if !self.inner.settings.post {
            let len = cfg.uri.len() + 1 + query.len();
            if len > MAX_REQUEST_URI {
                return Err(invalid(
                    action,
                    format!("request URI of {len} bytes exceeds {MAX_REQUEST_URI}"),
                ));
            }
        }
        debug!(action = %action, method, "qingcloud request");
        let request = if self.inner.settings.post {
            self.inner
                .http
                .post(endpoint)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(query)
        } else {
            self.inner.http.get(format!("{endpoint}?{query}"))
        };
        let resp = request.send().await.map_err(|e| transport(action, e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Error::Http { action, status });
        }
        let body = resp.bytes().await.map_err(|e| transport(action, e))?;
        decode(action, &body)
    }
}

/// Rows of Describe answers, identified by their id.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for Nic {
    fn key(&self) -> &str {
        &self.nic_id
    }
}

impl Keyed for Job {
    fn key(&self) -> &str {
        &self.job_id
    }
}

impl Keyed for Vxnet {
    fn key(&self) -> &str {
        &self.vxnet_id
    }
}

impl Keyed for Instance {
    fn key(&self) -> &str {
        &self.instance_id
    }
}

fn invalid(action: Action, reason: String) -> Error {
    Error::InvalidArgument { action, reason }
}

fn transport(action: Action, e: reqwest::Error) -> Error {
    if e.is_connect() {
        Error::Transport {
            action,
            connect: true,
            source: e.without_url(),
        }
    } else if e.is_timeout() {
        Error::Timeout { action }
    } else {
        Error::Transport {
            action,
            connect: false,
            source: e.without_url(),
        }
    }
}

/// Decodes an envelope: non-JSON or a missing `ret_code` is a decode error, a non-zero
/// `ret_code` an API error.
pub(crate) fn decode<T: DeserializeOwned>(action: Action, body: &[u8]) -> Result<T> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| Error::Decode {
        action,
        reason: "body is not JSON".into(),
    })?;
    // Read the code first, so an error envelope is reported as such even if other fields
    // have unexpected types.
    let head: Envelope<Empty> =
        serde_json::from_value(value.clone()).map_err(|e| Error::Decode {
            action,
            reason: format!("bad envelope: {e}"),
        })?;
    match head.ret_code {
        None => Err(Error::Decode {
            action,
            reason: "no ret_code".into(),
        }),
        Some(RetCode::OK) => serde_json::from_value::<Envelope<T>>(value)
            .map(|env| env.body)
            .map_err(|e| Error::Decode {
                action,
                reason: format!("unexpected response shape: {e}"),
            }),
        Some(code) => Err(Error::Api {
            action,
            code,
            message: head.message.unwrap_or_default(),
        }),
    }
}

/// The next page's offset, or `None` when paging is done: after an empty page, once
/// `total_count` items were seen, or (without a total) after a short page.
pub(crate) fn next_offset(offset: u64, page_len: usize, total: Option<u64>) -> Option<u64> {
    let next = offset + u64::try_from(page_len).unwrap_or(u64::MAX);
    match total {
        _ if page_len == 0 => None,
        Some(total) => (next < total).then_some(next),
        None => (page_len as u64 >= PAGE_LIMIT).then_some(next),
    }
}

/// Delay before retry number `attempt` (1-based): `base·2^(attempt-1)` capped at `max`, with
/// "equal jitter" (a uniformly random half of it added to the other half), so retries of
/// many callers spread out but never collapse to zero. `unit` is a random number in [0, 1).
pub(crate) fn backoff_delay(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    cap / 2 + (cap / 2).mul_f64(unit.clamp(0.0, 1.0))
}

/// A Describe filter list (`name.1`, `name.2`...), sent at most [`PAGE_LIMIT`] items per
/// request.
struct Chunked {
    name: &'static str,
    items: Vec<String>,
}

fn chunked<T: AsRef<str>>(name: &'static str, items: &[T]) -> Chunked {
    Chunked {
        name,
        items: items.iter().map(|i| i.as_ref().to_string()).collect(),
    }
}

/// Every combination of one chunk per list added to `base` (an empty list filters nothing
/// and adds no parameter).
fn chunk_combinations(base: Params, lists: &[Chunked]) -> Vec<Params> {
    let size = usize::try_from(PAGE_LIMIT).unwrap_or(usize::MAX);
    let mut out = vec![base];
    for list in lists.iter().filter(|l| !l.items.is_empty()) {
        out = out
            .into_iter()
            .flat_map(|p| {
                list.items.chunks(size).map(move |chunk| {
                    let mut q = p.clone();
                    for (i, item) in chunk.iter().enumerate() {
                        q.push(&format!("{}.{}", list.name, i + 1), item);
                    }
                    q
                })
            })
            .collect();
    }
    out
}

/// Request parameters in the order added (signing sorts them).
#[derive(Clone, Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn push(&mut self, key: &str, value: impl ToString) {
        self.0.push((key.to_string(), value.to_string()));
    }

    /// A list as `name.1`, `name.2`...; an empty list is omitted (or rejected if required).
    fn list<T: AsRef<str>>(
        &mut self,
        action: Action,
        name: &str,
        items: &[T],
        required: bool,
    ) -> Result<()> {
        if required && items.is_empty() {
            return Err(invalid(action, format!("`{name}` must not be empty")));
        }
        for (i, item) in items.iter().enumerate() {
            self.push(&format!("{name}.{}", i + 1), item.as_ref());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_follows_total_count() {
        assert_eq!(next_offset(0, 100, Some(250)), Some(100));
        assert_eq!(next_offset(100, 100, Some(250)), Some(200));
        assert_eq!(next_offset(200, 50, Some(250)), None);
        assert_eq!(next_offset(0, 3, Some(3)), None);
        // A server that reports more than it returns must not loop forever.
        assert_eq!(next_offset(100, 0, Some(250)), None);
        // Without a total: continue only after a full page.
        assert_eq!(next_offset(0, 100, None), Some(100));
        assert_eq!(next_offset(100, 99, None), None);
        assert_eq!(next_offset(0, 0, None), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(20);
        assert_eq!(backoff_delay(1, base, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, base, max, 0.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(3, base, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(10, base, max, 1.0), max);
        assert_eq!(backoff_delay(10, base, max, 0.0), max / 2);
        assert_eq!(
            backoff_delay(u32::MAX, base, max, 0.5),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn list_parameters_are_numbered_from_one() {
        let mut p = Params::default();
        let nics = [
            NicId::parse("52:54:00:00:00:01").unwrap(),
            NicId::parse("52:54:00:00:00:02").unwrap(),
        ];
        p.list(Action::AttachNics, "nics", &nics, true).unwrap();
        p.list::<NicId>(Action::DescribeNics, "vxnets", &[], false)
            .unwrap();
        assert_eq!(
            p.0,
            vec![
                ("nics.1".to_string(), "52:54:00:00:00:01".to_string()),
                ("nics.2".to_string(), "52:54:00:00:00:02".to_string()),
            ]
        );
        let err = p
            .list::<NicId>(Action::AttachNics, "nics", &[], true)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }));
    }

    #[test]
    fn filter_lists_are_chunked_to_the_page_size() {
        let ids: Vec<String> = (0..250).map(|i| format!("i-{i:08}")).collect();
        let vx = ["vxnet-a".to_string(), "vxnet-b".to_string()];
        let mut base = Params::default();
        base.push("status", "in-use");
        let queries = chunk_combinations(
            base,
            &[
                chunked("instances", &ids),
                chunked("nics", &[] as &[String]),
                chunked("vxnets", &vx),
            ],
        );
        // 3 chunks of instances (100, 100, 50), each with the 2 vxnets.
        assert_eq!(queries.len(), 3);
        let mut sent = Vec::new();
        for q in &queries {
            let n =
                q.0.iter()
                    .filter(|(k, _)| k.starts_with("instances."))
                    .count();
            assert!(n <= 100);
            assert!(q.0.iter().any(|(k, v)| k == "vxnets.2" && v == "vxnet-b"));
            assert!(q.0.iter().all(|(k, _)| !k.starts_with("nics.")));
            assert!(q.0.contains(&("status".into(), "in-use".into())));
            sent.extend(
                q.0.iter()
                    .filter(|(k, _)| k.starts_with("instances."))
                    .map(|(_, v)| v.clone()),
            );
        }
        assert_eq!(sent, ids);
        assert!(
            queries[2]
                .0
                .contains(&("instances.50".into(), "i-00000249".into()))
        );
        assert_eq!(
            chunk_combinations(Params::default(), &[chunked("jobs", &[] as &[String])]).len(),
            1
        );
    }

    #[test]
    fn decode_classifies_bodies() {
        let ok: JobResponse = decode(
            Action::AttachNics,
            br#"{"action":"AttachNicsResponse","ret_code":0,"job_id":"j-1"}"#,
        )
        .unwrap();
        assert_eq!(ok.job_id, "j-1");
        let api = decode::<JobResponse>(
            Action::AttachNics,
            br#"{"ret_code":1400,"message":"PermissionDenied, x"}"#,
        )
        .unwrap_err();
        assert_eq!(api.code(), Some(RetCode::PERMISSION_DENIED));
        assert!(api.to_string().contains("PermissionDenied, x"));
        // An error envelope whose other fields have odd types is still an API error.
        let api = decode::<JobResponse>(Action::AttachNics, br#"{"ret_code":5100,"job_id":7}"#)
            .unwrap_err();
        assert_eq!(api.code(), Some(RetCode::SERVER_BUSY));
        for body in [
            &b"<html>502</html>"[..],
            b"",
            br#"{"action":"AttachNicsResponse"}"#,
            b"[1]",
        ] {
            let err = decode::<JobResponse>(Action::AttachNics, body).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
            assert!(err.is_retryable());
        }
        let err =
            decode::<JobResponse>(Action::AttachNics, br#"{"ret_code":0,"job_id":7}"#).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn rejects_bad_settings() {
        let cfg = CloudConfig::new("AK", crate::config::Secret::new("s"), "pek3a");
        for settings in [
            ClientSettings {
                qps: 0.0,
                ..ClientSettings::default()
            },
            ClientSettings {
                qps: f64::NAN,
                ..ClientSettings::default()
            },
            ClientSettings {
                burst: 0,
                ..ClientSettings::default()
            },
            ClientSettings {
                max_batch: 0,
                ..ClientSettings::default()
            },
        ] {
            assert!(matches!(
                Client::new(cfg.clone(), settings, None),
                Err(Error::Settings(_))
            ));
        }
        let c = Client::new(cfg, ClientSettings::default(), None).unwrap();
        assert_eq!(c.priority(), Priority::Refill);
        assert_eq!(
            c.with_priority(Priority::Urgent).priority(),
            Priority::Urgent
        );
    }
}
