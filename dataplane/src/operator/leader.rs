//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! does it: every instance tries to acquire or renew every `retryPeriod`; a Lease held by
//! someone else is taken only after its record stayed unchanged for `leaseDuration` as
//! seen locally (so clocks need not agree); every write carries the `resourceVersion`
//! read, so of two instances racing for it the API server lets exactly one win (the other
//! gets 409 Conflict). A leader that cannot renew for `renewDeadline` steps down — before
//! anyone else may take over, since `renewDeadline < leaseDuration`.

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{Api, PostParams},
    Client,
};
use std::time::Duration;
use tokio::{sync::watch, time::Instant};

/// Who competes for which Lease, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This instance's `holderIdentity` (the pod name).
    pub identity: String,
    /// How long a holder's record must stay unchanged before others take the Lease.
    pub lease_duration: Duration,
    /// How long the leader goes on without a successful renewal.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease (acquired or renewed).
    Held,
    /// Someone else holds a valid Lease, or won the race for it.
    Lost,
}

/// The Lease and what this instance last saw of it.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The record's `resourceVersion` when last seen to change, and when.
    observed: Option<(String, Instant)>,
}

impl Elector {
    /// An elector for `settings.name` in `settings.namespace`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    /// Competes for the Lease forever, publishing whether this instance leads on `leading`.
    pub async fn run(&mut self, leading: watch::Sender<bool>) {
        let s = self.settings.clone();
        let mut last_renew: Option<Instant> = None;
        loop {
            // A leader's attempt may take only until its renew deadline: a hanging or
            // retrying request must not keep it allocating past that.
            let budget = match last_renew {
                Some(t) => (t + s.renew_deadline).saturating_duration_since(Instant::now()),
                None => s.renew_deadline,
            };
            let attempt = match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {budget:?}")),
            };
            let now = Instant::now();
            let lead = match attempt {
                Ok(Attempt::Held) => {
                    last_renew = Some(now);
                    true
                }
                Ok(Attempt::Lost) => false,
                Err(e) => {
                    let within = last_renew.is_some_and(|t| now - t < s.renew_deadline);
                    tracing::warn!(lease = %s.name, error = %e, leading = within, "leader election: could not read or write the Lease");
                    within
                }
            };
            if !lead {
                last_renew = None;
            }
            let was = *leading.borrow();
            if lead != was {
                if lead {
                    tracing::info!(lease = %s.name, namespace = %s.namespace, identity = %s.identity, "leader election: acquired the Lease, allocating");
                } else {
                    tracing::warn!(lease = %s.name, identity = %s.identity, "leader election: lost the Lease, stopped allocating");
                }
                leading.send_replace(lead);
            }
            tokio::time::sleep(s.retry_period).await;
        }
    }

    /// One round: create the Lease, renew ours, or take over an expired one.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let s = &self.settings;
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&s.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(seconds(s.lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(st)) if st.is_conflict() || st.is_already_exists() => {
                    Ok(Attempt::Lost)
                }
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let seen_at = match &self.observed {
            Some((old, at)) if *old == rv => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((rv, at));
                at
            }
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == s.identity;
        let duration = spec
            .lease_duration_seconds
            .filter(|d| *d > 0)
            .map(|d| Duration::from_secs(d as u64))
            .unwrap_or(s.lease_duration);
        if !ours && !holder.is_empty() && seen_at.elapsed() < duration {
            return Ok(Attempt::Lost);
        }
        if !ours {
            tracing::info!(lease = %s.name, previous = %holder, "leader election: Lease expired, taking over");
            spec.holder_identity = Some(s.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds(s.lease_duration));
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail.
        match self
            .api
            .replace(&s.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(st)) if st.is_conflict() => Ok(Attempt::Lost),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this instance holds it (on shutdown), so a standby takes over
    /// at its next retry instead of after `leaseDuration`.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let s = &self.settings;
        let Some(mut lease) = self.api.get_opt(&s.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&s.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// Whole seconds for `leaseDurationSeconds`, at least one.
fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}
