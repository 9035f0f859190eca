//! Leader election on a coordination.k8s.io Lease, with client-go's semantics: every attempt
//! to acquire or renew is bounded, a leader that has not renewed within the renew deadline
//! steps down (before the Lease can expire for anyone else), and a Lease held by another
//! replica counts as expired only a full duration after this replica *observed* its record
//! change, on the local monotonic clock: the holder's `renewTime` (another machine's clock)
//! is never compared with ours.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a Lease lasts and how its holder keeps it (client-go's LeaseDuration,
/// RenewDeadline and RetryPeriod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long others wait, after they last saw the record change, before taking over.
    pub duration: Duration,
    /// How long the leader keeps leading after the start of its last successful renewal.
    pub renew_deadline: Duration,
    /// Interval between attempts.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Lease timings that cannot keep one leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The leader would still act when others may take over.
    #[error("the renew deadline ({renew:?}) must be shorter than the lease duration ({lease:?})")]
    DeadlineNotBelowDuration {
        /// Renew deadline.
        renew: Duration,
        /// Lease duration.
        lease: Duration,
    },
    /// The leader could not try twice before its deadline.
    #[error(
        "the retry period ({retry:?}) must be positive and shorter than the renew deadline ({renew:?})"
    )]
    RetryNotBelowDeadline {
        /// Retry period.
        retry: Duration,
        /// Renew deadline.
        renew: Duration,
    },
}

impl Timing {
    /// Checks client-go's invariants: 0 < retry period < renew deadline < duration.
    pub fn new(
        duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, TimingError> {
        if renew_deadline >= duration {
            return Err(TimingError::DeadlineNotBelowDuration {
                renew: renew_deadline,
                lease: duration,
            });
        }
        if retry_period.is_zero() || retry_period >= renew_deadline {
            return Err(TimingError::RetryNotBelowDeadline {
                retry: retry_period,
                renew: renew_deadline,
            });
        }
        Ok(Self {
            duration,
            renew_deadline,
            retry_period,
        })
    }
}

/// What identifies one version of the Lease record: any write changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    resource_version: Option<String>,
    holder: Option<String>,
    renew_time: Option<Timestamp>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            resource_version: lease.metadata.resource_version.clone(),
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        }
    }
}

/// What an attempt should do with the Lease it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// We hold it: renew.
    Renew,
    /// Free, or its holder stopped renewing: take it.
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// Decides from a Lease record and how long ago (local monotonic time) this replica saw that
/// record change. The holder's promised duration counts, ours when it gave none.
pub fn judge(spec: &LeaseSpec, me: &str, unchanged_for: Duration, ours: Duration) -> Verdict {
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Verdict::Renew,
        None | Some("") => Verdict::Acquire,
        Some(_) => {
            let promised = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(ours, Duration::from_secs);
            if unchanged_for >= promised {
                Verdict::Acquire
            } else {
                Verdict::Follow
            }
        }
    }
}

/// Another replica created or wrote the Lease first (409 AlreadyExists / Conflict).
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A participant in the election.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The record last seen and when this replica first saw it.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// Competes for Lease `namespace/name` as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    fn secs(&self) -> i32 {
        // Rounded up, so that others never wait less than we promise to keep renewing within.
        let d = self.timing.duration;
        let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(s.max(1)).unwrap_or(i32::MAX)
    }

    /// Remembers `lease`'s record; the clock restarts only when the record changed.
    fn observe(&mut self, lease: &Lease) -> Duration {
        let record = Record::of(lease);
        match &self.observed {
            Some((seen, at)) if *seen == record => at.elapsed(),
            _ => {
                self.observed = Some((record, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One attempt to acquire or renew. Ok(true): we hold the Lease now.
    pub async fn try_acquire(&mut self) -> Result<bool, kube::Error> {
        let read = self.api.get_opt(&self.name).await?;
        // Only informative for people reading the Lease: nobody's decision uses it.
        let now = MicroTime(Timestamp::now());
        let Some(lease) = read else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.secs()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let unchanged_for = self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let verdict = judge(&spec, &self.identity, unchanged_for, self.timing.duration);
        if verdict == Verdict::Follow {
            return Ok(false);
        }
        let mut next = lease;
        let mut s = spec.clone();
        if verdict == Verdict::Acquire {
            s.acquire_time = Some(now.clone());
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            s.holder_identity = Some(self.identity.clone());
        }
        s.renew_time = Some(now);
        s.lease_duration_seconds = Some(self.secs());
        next.spec = Some(s);
        // `next` carries the resourceVersion read: a 409 means someone else wrote in between
        // (took it over, or beat us to it), and leading on would be a guess.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
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

    /// Campaigns until `stop`, publishing on `leading` whether we lead. Leadership lasts until
    /// `renew_deadline` after the start of the last successful attempt: each attempt is cut off
    /// there, and `leading` turns false at that instant at the latest. Others take over only
    /// `duration` after they saw that attempt's write, which happened after it started.
    pub async fn run(mut self, leading: watch::Sender<bool>, stop: CancellationToken) {
        let t = self.timing;
        let mut renewed: Option<Instant> = None;
        loop {
            let start = Instant::now();
            let cutoff = renewed.unwrap_or(start) + t.renew_deadline;
            let outcome = tokio::select! {
                () = stop.cancelled() => break,
                r = tokio::time::timeout_at(cutoff, self.try_acquire()) => r,
            };
            match outcome {
                Ok(Ok(true)) => renewed = Some(start),
                Ok(Ok(false)) => renewed = None,
                Ok(Err(error)) => tracing::warn!(%error, "lease attempt failed"),
                Err(_) => tracing::warn!(deadline = ?t.renew_deadline, "lease attempt timed out"),
            }
            if renewed.is_some_and(|r| r.elapsed() >= t.renew_deadline) {
                tracing::warn!("no lease renewal within the renew deadline: stepping down");
                renewed = None;
            }
            let held = renewed.is_some();
            leading.send_if_modified(|l| {
                let changed = *l != held;
                if changed {
                    tracing::info!(identity = %self.identity, leading = held, "leadership changed");
                }
                *l = held;
                changed
            });
            let next = match renewed {
                Some(r) => (start + t.retry_period).min(r + t.renew_deadline),
                None => start + t.retry_period,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(next) => {}
            }
        }
        leading.send_replace(false);
        if renewed.is_some() {
            match tokio::time::timeout(t.renew_deadline, self.release()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "could not release the lease"),
                Err(_) => tracing::warn!("releasing the lease timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(who: &str, secs: i32, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_counts_from_our_observation_not_the_remote_renew_time() {
        let ancient = Timestamp::from_second(0).expect("epoch");
        let spec = held_by("other", 15, ancient);
        let ours = Duration::from_secs(15);
        assert_eq!(judge(&spec, "me", Duration::ZERO, ours), Verdict::Follow);
        assert_eq!(
            judge(&spec, "me", Duration::from_secs(14), ours),
            Verdict::Follow
        );
        assert_eq!(
            judge(&spec, "me", Duration::from_secs(15), ours),
            Verdict::Acquire
        );
        let future = Timestamp::now() + jiff::SignedDuration::from_hours(1);
        assert_eq!(
            judge(
                &held_by("other", 15, future),
                "me",
                Duration::from_secs(15),
                ours
            ),
            Verdict::Acquire,
            "a renewTime from a clock running ahead does not keep a dead holder alive"
        );
    }

    #[test]
    fn the_holders_promise_counts_and_free_or_own_leases_are_taken() {
        let spec = held_by("other", 60, Timestamp::now());
        let ours = Duration::from_secs(15);
        assert_eq!(
            judge(&spec, "me", Duration::from_secs(30), ours),
            Verdict::Follow
        );
        assert_eq!(judge(&spec, "other", Duration::ZERO, ours), Verdict::Renew);
        let free = LeaseSpec::default();
        assert_eq!(judge(&free, "me", Duration::ZERO, ours), Verdict::Acquire);
    }

    #[test]
    fn timings_must_keep_the_deadline_below_the_lease() {
        let s = Duration::from_secs;
        assert_eq!(Timing::new(s(15), s(10), s(2)), Ok(Timing::default()));
        assert!(Timing::new(s(10), s(10), s(2)).is_err());
        assert!(Timing::new(s(15), s(10), s(10)).is_err());
        assert!(Timing::new(s(15), s(10), Duration::ZERO).is_err());
    }
}
