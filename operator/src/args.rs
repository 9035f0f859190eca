//! Command-line flags with environment fallbacks: the operator's whole configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::controller::coalesce::Window;

/// Reconciles NicPool and HostNic resources against the QingCloud API.
#[derive(Parser, Debug, Clone)]
#[command(name = "hostnic-operator", version, about)]
pub struct Args {
    /// Name of this cluster; cloud NICs are named `hostnic-<cluster-name>-<HostNic uid>`, which
    /// is how a crashed create is adopted and how GC recognises this cluster's NICs.
    #[arg(long, env = "HOSTNIC_CLUSTER_NAME", default_value = "kubernetes")]
    pub cluster_name: String,

    /// QingCloud SDK config file (qy_access_key_id, qy_secret_access_key, zone, host...),
    /// usually mounted from a Secret. Its content is never logged.
    #[arg(
        long,
        env = "HOSTNIC_CLOUD_CONFIG",
        default_value = "/etc/qingcloud/config.yaml"
    )]
    pub cloud_config: PathBuf,

    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "HOSTNIC_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "HOSTNIC_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "HOSTNIC_LEASE_NAME", default_value = "hostnic-operator")]
    pub lease_name: String,

    /// This replica's identity in the Lease (defaults to the pod name from $POD_NAME or the
    /// hostname).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Seconds a Lease is valid without renewal: how long the other replicas wait, after they
    /// last saw it change, before taking over (client-go's LeaseDuration).
    #[arg(long, env = "HOSTNIC_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u32,

    /// Seconds the leader keeps leading without a successful renewal; must be below
    /// --lease-seconds (client-go's RenewDeadline).
    #[arg(
        long,
        env = "HOSTNIC_LEASE_RENEW_DEADLINE_SECONDS",
        default_value_t = 10
    )]
    pub lease_renew_deadline_seconds: u32,

    /// Seconds between attempts to acquire or renew the Lease; must be below the renew
    /// deadline (client-go's RetryPeriod).
    #[arg(long, env = "HOSTNIC_LEASE_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub lease_retry_period_seconds: u32,

    /// Node annotation holding the node's QingCloud instance id (checked after
    /// spec.providerID, before the label and the node name).
    #[arg(
        long,
        env = "HOSTNIC_INSTANCE_ANNOTATION",
        default_value = "node.beta.kubernetes.io/instance-id"
    )]
    pub instance_annotation: String,

    /// Node label holding the instance id (checked after the annotation).
    #[arg(
        long,
        env = "HOSTNIC_INSTANCE_LABEL",
        default_value = "hostnic.qingcloud.com/instance-id"
    )]
    pub instance_label: String,

    /// Sustained QingCloud requests per second (the account quota is ~2000/hour, shared).
    #[arg(long, env = "HOSTNIC_CLOUD_QPS", default_value_t = 0.5)]
    pub cloud_qps: f64,

    /// QingCloud request burst after idling.
    #[arg(long, env = "HOSTNIC_CLOUD_BURST", default_value_t = 20)]
    pub cloud_burst: u32,

    /// Most NICs per AttachNics call (the API may refuse more than 5).
    #[arg(long, env = "HOSTNIC_MAX_ATTACH_BATCH", default_value_t = 5)]
    pub max_attach_batch: usize,

    /// Most NICs per DetachNics call (the API may refuse more than 5, as for AttachNics).
    #[arg(long, env = "HOSTNIC_MAX_DETACH_BATCH", default_value_t = 5)]
    pub max_detach_batch: usize,

    /// Most NICs per DeleteNics call. DeleteNics is not tied to an instance's hot-plug and no
    /// limit is documented; a call refused for its size is split and the limit lowered.
    #[arg(long, env = "HOSTNIC_MAX_DELETE_BATCH", default_value_t = 100)]
    pub max_delete_batch: usize,

    /// Most NICs one CreateNics makes (its `count`: the API takes 1 to 252). The NICs a pool
    /// pass adds in one vxnet, across nodes, are created in batches of at most this.
    #[arg(long, env = "HOSTNIC_MAX_CREATE_BATCH", default_value_t = qingcloud::client::MAX_CREATE_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(qingcloud::client::MAX_CREATE_COUNT)))]
    pub max_create_batch: u32,

    /// Milliseconds the first request of a batch waits for others.
    #[arg(long, env = "HOSTNIC_BATCH_WINDOW_MS", default_value_t = 200)]
    pub batch_window_ms: u64,

    /// Longest milliseconds a round the pool planned (the NICs it creates or deletes on a node
    /// in one pass) waits, after its latest member asked, for a member that does not ask; a
    /// complete round never waits, and a member that fails or goes leaves its round at once,
    /// so this bounds only a member that stalls (its CreateNics throttled). Filling 500 nodes
    /// on 2 cores, a node's members reached their round more than 10 s apart: at 10 s, 626
    /// AttachNics went out for 500 rounds, at 30 s 500.
    #[arg(long, env = "HOSTNIC_BATCH_ROUND_WAIT_MS", default_value_t = 30_000)]
    pub batch_round_wait_ms: u64,

    /// Seconds between polls of a running attach/detach job. Polls fall on a shared clock
    /// tick, so the jobs polled at once share one DescribeJobs.
    #[arg(long, env = "HOSTNIC_JOB_POLL_SECONDS", default_value_t = 2.0)]
    pub job_poll_seconds: f64,

    /// Seconds an attach waits for the agent's report of the NIC's link on the node (its
    /// completion) before its job is polled: about twice a typical attach job.
    #[arg(long, env = "HOSTNIC_LINK_GRACE_SECONDS", default_value_t = 30.0)]
    pub link_grace_seconds: f64,

    /// Seconds after which a job still running counts as "unknown" and the NIC is re-read.
    #[arg(long, env = "HOSTNIC_JOB_TIMEOUT_SECONDS", default_value_t = 300)]
    pub job_timeout_seconds: u64,

    /// Seconds a node must keep more free NICs than its pool size before they are deleted
    /// (hysteresis against pod churn): well beyond a pool's quarantine (120 s by default), so
    /// a NIC coming back from quarantine is reused by the next pod instead of deleted.
    #[arg(long, env = "HOSTNIC_SHRINK_DELAY_SECONDS", default_value_t = 600)]
    pub shrink_delay_seconds: u64,

    /// Seconds cloud facts (vxnet free addresses, instances' foreign NICs and state) are
    /// cached; the operator's own NICs are counted from its HostNics, and the cache is
    /// refreshed early after a refusal that suggests it is wrong.
    #[arg(long, env = "HOSTNIC_CLOUD_CACHE_SECONDS", default_value_t = 300)]
    pub cloud_cache_seconds: u64,

    /// Seconds a freshly created NIC may stay invisible to DescribeNics (read-after-write
    /// lag) before it counts as vanished.
    #[arg(long, env = "HOSTNIC_VISIBILITY_GRACE_SECONDS", default_value_t = 30)]
    pub visibility_grace_seconds: u64,

    /// Seconds between garbage-collection passes. Each lists the NICs of the pools' vxnets
    /// (one DescribeNics per 100 NICs: 15 for 500 nodes x 3, 60 an hour at 15 minutes, a
    /// whole idle hour's share); orphans mostly come from lost answers, which trigger a pass
    /// of their own, so the periodic one can be rare.
    #[arg(long, env = "HOSTNIC_GC_INTERVAL_SECONDS", default_value_t = 1800)]
    pub gc_interval_seconds: u64,

    /// Seconds GC waits after a CreateNics or DeleteNics lost its answer before looking for
    /// orphans (time for the HostNic to adopt its NIC by name first).
    #[arg(long, env = "HOSTNIC_GC_SETTLE_SECONDS", default_value_t = 30)]
    pub gc_settle_seconds: u64,

    /// Seconds an orphaned cloud NIC must exist before GC may delete it.
    #[arg(long, env = "HOSTNIC_GC_GRACE_SECONDS", default_value_t = 300)]
    pub gc_grace_seconds: u64,

    /// Report what GC would delete without deleting it.
    #[arg(long, env = "HOSTNIC_GC_DRY_RUN", default_value_t = false)]
    pub gc_dry_run: bool,

    /// Seconds between periodic re-reconciles of a converged object.
    #[arg(long, env = "HOSTNIC_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,

    /// Seconds no QingCloud call is sent after the API request quota ran out (2500 "api
    /// request quota"): the quota is counted per hour or day, retrying sooner only burns it.
    #[arg(
        long,
        env = "HOSTNIC_CLOUD_QUOTA_COOLDOWN_SECONDS",
        default_value_t = 300
    )]
    pub cloud_quota_cooldown_seconds: u64,

    /// Seconds a reconcile waits after the cloud throttled it (2500, 5100), before doubling.
    #[arg(
        long,
        env = "HOSTNIC_BACKOFF_THROTTLED_SECONDS",
        default_value_t = 30.0
    )]
    pub backoff_throttled_seconds: f64,

    /// Seconds a reconcile waits after a transient failure or a refusal, before doubling.
    #[arg(long, env = "HOSTNIC_BACKOFF_TRANSIENT_SECONDS", default_value_t = 5.0)]
    pub backoff_transient_seconds: f64,

    /// Seconds a reconcile waits after a failure retrying cannot fix (bad spec, credentials),
    /// before doubling.
    #[arg(
        long,
        env = "HOSTNIC_BACKOFF_PERMANENT_SECONDS",
        default_value_t = 300.0
    )]
    pub backoff_permanent_seconds: f64,

    /// Longest wait between retries of one object: its back-off doubles per consecutive
    /// failure (from the class's wait above, with jitter) up to this.
    #[arg(long, env = "HOSTNIC_BACKOFF_MAX_SECONDS", default_value_t = 900.0)]
    pub backoff_max_seconds: f64,

    /// Reconciles run in parallel per controller.
    #[arg(long, env = "HOSTNIC_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, env = "HOSTNIC_LOG", default_value = "info")]
    pub log: String,
}

/// How a pool's triggers are gathered: a burst of claims on a node (their HostNic writes land
/// tens of milliseconds apart) becomes one pass that refills them in one AttachNics round, and
/// changes that never pause (pods starting all over a busy cluster) still let it pass every
/// second. A claim after which no more claims can join the node's round passes at once: one
/// that takes the node's last free NIC, or leaves a whole attach batch missing
/// (`controller::triggers::hostnic_trigger`).
pub const POOL_TRIGGERS: Window = Window {
    quiet: Duration::from_millis(200),
    max: Duration::from_secs(1),
};

/// The tunables reconcilers use, in typed form.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cloud NIC name prefix of this cluster: `hostnic-<cluster>-`.
    pub nic_prefix: String,
    /// Node annotation with the instance id.
    pub instance_annotation: String,
    /// Node label with the instance id.
    pub instance_label: String,
    /// Poll interval of running jobs.
    pub job_poll: Duration,
    /// Job age after which its outcome is unknown.
    pub job_timeout: Duration,
    /// How long an attach waits for its link report before polling its job.
    pub link_grace: Duration,
    /// Hysteresis before shrinking.
    pub shrink_delay: Duration,
    /// TTL of cached vxnet/instance facts.
    pub cloud_cache: Duration,
    /// GC pass interval.
    pub gc_interval: Duration,
    /// Delay of the early GC pass after a lost answer.
    pub gc_settle: Duration,
    /// GC grace period.
    pub gc_grace: Duration,
    /// GC reports only.
    pub gc_dry_run: bool,
    /// Periodic requeue.
    pub resync: Duration,
    /// Reconcile concurrency.
    pub concurrency: u16,
    /// Back-off after throttling.
    pub backoff_throttled: Duration,
    /// Back-off after a transient failure.
    pub backoff_transient: Duration,
    /// Back-off after a permanent failure.
    pub backoff_permanent: Duration,
    /// Cap of the per-object exponential back-off.
    pub backoff_max: Duration,
    /// How long a new NIC may be invisible to DescribeNics.
    pub visibility_grace: Duration,
    /// Most NICs per CreateNics.
    pub max_create_batch: u32,
    /// How a pool's triggers are gathered ([`POOL_TRIGGERS`]).
    pub pool_triggers: Window,
}

impl Args {
    /// The reconcilers' settings.
    pub fn settings(&self) -> Settings {
        Settings {
            nic_prefix: hostnic_crds::names::nic_prefix(&self.cluster_name),
            instance_annotation: self.instance_annotation.clone(),
            instance_label: self.instance_label.clone(),
            job_poll: Duration::from_secs_f64(self.job_poll_seconds.max(0.05)),
            job_timeout: Duration::from_secs(self.job_timeout_seconds),
            link_grace: Duration::from_secs_f64(self.link_grace_seconds.max(0.0)),
            shrink_delay: Duration::from_secs(self.shrink_delay_seconds),
            cloud_cache: Duration::from_secs(self.cloud_cache_seconds),
            gc_interval: Duration::from_secs(self.gc_interval_seconds.max(1)),
            gc_settle: Duration::from_secs(self.gc_settle_seconds),
            gc_grace: Duration::from_secs(self.gc_grace_seconds),
            gc_dry_run: self.gc_dry_run,
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            concurrency: self.concurrency,
            backoff_throttled: Duration::from_secs_f64(self.backoff_throttled_seconds.max(0.0)),
            backoff_transient: Duration::from_secs_f64(self.backoff_transient_seconds.max(0.0)),
            backoff_permanent: Duration::from_secs_f64(self.backoff_permanent_seconds.max(0.0)),
            backoff_max: Duration::from_secs_f64(self.backoff_max_seconds.max(0.0)),
            visibility_grace: Duration::from_secs(self.visibility_grace_seconds),
            max_create_batch: self.max_create_batch,
            pool_triggers: POOL_TRIGGERS,
        }
    }
}
