//! Leader election on a coordination.k8s.io Lease, written with optimistic concurrency: a
//! replica acquires the Lease when it is free or expired, renews it every third of its
//! duration, and releases it on shutdown. Reconcilers run only while `leading` is true.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A participant in the election.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    /// Competes for Lease `namespace/name` as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    fn secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One attempt to acquire or renew. Ok(true): we hold the Lease now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.secs()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| now.duration_since(t.0).unsigned_abs() > held_for);
        if !(ours || free || expired) {
            return Ok(false);
        }
        let mut next = lease.clone();
        let mut s = spec.clone();
        if !ours {
            s.acquire_time = Some(MicroTime(now));
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            s.holder_identity = Some(self.identity.clone());
        }
        s.renew_time = Some(MicroTime(now));
        s.lease_duration_seconds = Some(self.secs());
        next.spec = Some(s);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it, so another replica takes over without waiting.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut next = lease.clone();
        let Some(spec) = next.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &next)
            .await
            .map(|_| ())
    }

    /// Campaigns until `stop`: publishes whether we lead on `leading`. A renewal that fails
    /// for longer than the Lease duration counts as lost leadership.
    pub async fn run(self, leading: watch::Sender<bool>, stop: CancellationToken) {
        let period = self.duration / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            let held = match self.try_acquire().await {
                Ok(held) => {
                    last_ok = tokio::time::Instant::now();
                    held
                }
                Err(error) => {
                    tracing::warn!(%error, "lease renewal failed");
                    *leading.borrow() && last_ok.elapsed() < self.duration
                }
            };
            if *leading.borrow() != held {
                tracing::info!(identity = %self.identity, leading = held, "leadership changed");
            }
            leading.send_replace(held);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
        leading.send_replace(false);
        if let Err(error) = self.release().await {
            tracing::warn!(%error, "could not release the lease");
        }
    }
}
