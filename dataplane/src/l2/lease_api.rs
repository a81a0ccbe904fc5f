//! L2 announcement leases as `coordination.k8s.io/v1` Lease objects in the API server
//! (in the agent's namespace, `$POD_NAMESPACE`, else [`LEASE_NAMESPACE`]; named like
//! Cilium's), for `stateSource: kubernetes`,
//! where every node has its own manifest directory and file leases would elect nobody.
//!
//! The same rule as the file store ([`decide`]), made atomic by the API server: a missing
//! Lease is created (POST; a concurrent creator makes it 409 AlreadyExists), an existing
//! one is replaced (PUT) carrying the `resourceVersion` read, so a concurrent writer makes
//! it 409 Conflict. A lost race is read again and decided once more: of several
//! candidates exactly one holds the Lease after a round. Expiry is judged by the store's
//! clock against `renewTime + leaseDurationSeconds`, as for files.

use super::lease::{decide, whole_seconds, Clock, Lease, LeaseError, Outcome, LEASE_NAMESPACE};
use k8s_openapi::{
    api::coordination::v1::{Lease as LeaseObject, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::api::{Api, PostParams};
use std::time::{Duration, SystemTime};

/// The Lease collection in the agent's namespace.
#[derive(Clone)]
pub(super) struct ApiLeases {
    api: Api<LeaseObject>,
    namespace: String,
}

/// Where the leases live: the agent's own namespace (`$POD_NAMESPACE`, set by the chart,
/// whose RBAC grants leases there), else `kube-system` as in Cilium.
pub(super) fn lease_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| LEASE_NAMESPACE.into())
}

/// A write that lost the compare-and-swap (or the creation race).
fn lost_race(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(st) if st.is_conflict() || st.is_already_exists())
}

fn api_error(name: &str) -> impl FnOnce(kube::Error) -> LeaseError + '_ {
    move |source| LeaseError::Api {
        name: name.into(),
        source,
    }
}

fn micro_time(t: SystemTime) -> Option<MicroTime> {
    Timestamp::try_from(t).ok().map(MicroTime)
}

/// What `obj` says, in the store's terms.
fn to_lease(name: &str, obj: &LeaseObject) -> Lease {
    let spec = obj.spec.clone().unwrap_or_default();
    Lease {
        name: obj.metadata.name.clone().unwrap_or_else(|| name.into()),
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        acquire_time: spec.acquire_time.map(|t| t.0.into()),
        renew_time: spec.renew_time.map(|t| t.0.into()),
        transitions: spec.lease_transitions.unwrap_or(0).max(0) as u32,
    }
}

/// `read` (the object as read, keeping its metadata and other fields) changed to say
/// `lease`; a new object if there was none.
fn to_object(lease: &Lease, namespace: &str, read: Option<LeaseObject>) -> LeaseObject {
    let mut obj = read.unwrap_or_else(|| LeaseObject {
        metadata: ObjectMeta {
            name: Some(lease.name.clone()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        spec: None,
    });
    let spec = obj.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = lease.holder.clone();
    spec.lease_duration_seconds = Some(whole_seconds(lease.duration).min(i32::MAX as u32) as i32);
    spec.acquire_time = lease.acquire_time.and_then(micro_time);
    spec.renew_time = lease.renew_time.and_then(micro_time);
    spec.lease_transitions = Some(lease.transitions.min(i32::MAX as u32) as i32);
    obj
}

impl ApiLeases {
    pub(super) fn new(client: kube::Client) -> Self {
        let namespace = lease_namespace();
        ApiLeases {
            api: Api::namespaced(client, &namespace),
            namespace,
        }
    }

    async fn read(&self, name: &str) -> Result<Option<LeaseObject>, LeaseError> {
        self.api.get_opt(name).await.map_err(api_error(name))
    }

    /// Lease `name`, if it exists.
    pub(super) async fn get(&self, name: &str) -> Result<Option<Lease>, LeaseError> {
        Ok(self.read(name).await?.map(|o| to_lease(name, &o)))
    }

    /// See [`super::lease::LeaseStore::acquire_or_renew`].
    pub(super) async fn acquire_or_renew(
        &self,
        name: &str,
        identity: &str,
        duration: Duration,
        clock: &dyn Clock,
    ) -> Result<Outcome, LeaseError> {
        for attempt in 0..2 {
            let read = self.read(name).await?;
            let current = read.as_ref().map(|o| to_lease(name, o));
            let outcome = decide(current, name, identity, duration, clock.now());
            let lease = match &outcome {
                Outcome::HeldByOther(_) => return Ok(outcome),
                Outcome::Acquired(l) | Outcome::Renewed(l) => l,
            };
            let pp = PostParams::default();
            let written = match read {
                None => {
                    self.api
                        .create(&pp, &to_object(lease, &self.namespace, None))
                        .await
                }
                Some(o) => {
                    self.api
                        .replace(name, &pp, &to_object(lease, &self.namespace, Some(o)))
                        .await
                }
            };
            match written {
                Ok(o) => {
                    let l = to_lease(name, &o);
                    return Ok(match outcome {
                        Outcome::Renewed(_) => Outcome::Renewed(l),
                        _ => Outcome::Acquired(l),
                    });
                }
                Err(e) if lost_race(&e) => {
                    tracing::debug!(lease = %name, identity, attempt, error = %e, "L2 lease changed under us; reading it again");
                }
                Err(e) => return Err(api_error(name)(e)),
            }
        }
        // Lost twice in a row: others are writing it, so it is theirs for this round.
        let now = self.get(name).await?.unwrap_or_else(|| Lease {
            name: name.into(),
            holder: None,
            duration: Duration::ZERO,
            acquire_time: None,
            renew_time: None,
            transitions: 0,
        });
        Ok(Outcome::HeldByOther(now))
    }

    /// See [`super::lease::LeaseStore::release`].
    pub(super) async fn release(&self, name: &str, identity: &str) -> Result<bool, LeaseError> {
        for _ in 0..2 {
            let Some(read) = self.read(name).await? else {
                return Ok(false);
            };
            let mut lease = to_lease(name, &read);
            if lease.holder.as_deref() != Some(identity) {
                return Ok(false);
            }
            lease.holder = None;
            match self
                .api
                .replace(
                    name,
                    &PostParams::default(),
                    &to_object(&lease, &self.namespace, Some(read)),
                )
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if lost_race(&e) => {
                    tracing::debug!(lease = %name, identity, error = %e, "L2 lease changed while releasing it; reading it again");
                }
                Err(e) => return Err(api_error(name)(e)),
            }
        }
        Err(LeaseError::Conflict { name: name.into() })
    }
}
