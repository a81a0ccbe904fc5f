//! Leases in the state source: `coordination.k8s.io/v1 Lease` objects, either as YAML
//! files in `<manifestsDir>/leases/` (the manifest scanner reads only top-level files, so
//! they are not taken for manifests; every agent sharing the directory elects through
//! them), or, with `stateSource: kubernetes`, in the API server ([`super::lease_api`]).
//!
//! Acquire, renew and release are a compare-and-swap. For files, read, check and write
//! happen under an exclusive `flock` on `leases/.lock`, and the file is replaced by
//! rename, so readers never see half a lease; in the API server, every write carries the
//! `resourceVersion` read. Both decide alike ([`decide`]). As in Kubernetes, a lease is
//! expired once its wall-clock
//! `renewTime` (microsecond precision) plus `leaseDurationSeconds` has passed; the
//! duration is whole seconds there, so a sub-second configured duration is rounded up in
//! the lease (the holder itself stops answering at its own, shorter, duration).

use super::lease_api::ApiLeases;
use crate::state::lock::{write_atomic, FileLock};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

/// The namespace Cilium keeps its L2 announcement leases in.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// A lease store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A file or the directory could not be read or written.
    #[error("lease store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A lease file is not a Lease.
    #[error("lease file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A lease name that cannot be a file name.
    #[error("lease name {0:?} is not a valid object name")]
    BadName(String),
    /// The API server refused or failed a request for a Lease.
    #[error("lease {name} in the API server: {source}")]
    Api {
        /// The Lease.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("lease {name} in the API server: no answer within {after:?}")]
    Timeout {
        /// The Lease.
        name: String,
        /// How long we waited.
        after: Duration,
    },
    /// A release lost the compare-and-swap twice in a row.
    #[error("lease {name} in the API server kept changing while being released")]
    Conflict {
        /// The Lease.
        name: String,
    },
    /// API-backed leases are used outside a multi-thread Tokio runtime.
    #[error("API-backed leases need a multi-thread Tokio runtime")]
    Runtime,
}

/// Where the store gets the time; tests drive it by hand.
pub trait Clock: Send + Sync {
    /// Wall-clock now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// What a lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `metadata.name`.
    pub name: String,
    /// `spec.holderIdentity`; `None` when released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
    /// `spec.acquireTime`.
    pub acquire_time: Option<SystemTime>,
    /// `spec.renewTime`.
    pub renew_time: Option<SystemTime>,
    /// `spec.leaseTransitions`: how often the holder changed.
    pub transitions: u32,
}

impl Lease {
    /// When the lease expires (`renewTime + leaseDurationSeconds`); `None` if it has no
    /// holder or was never renewed.
    pub fn expires(&self) -> Option<SystemTime> {
        self.holder.as_ref()?;
        Some(self.renew_time? + self.duration)
    }

    /// Whether someone holds it at `now`.
    pub fn held_at(&self, now: SystemTime) -> bool {
        self.expires().is_some_and(|e| now < e)
    }
}

/// The result of [`LeaseStore::acquire_or_renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The caller took the lease (it was free, released or expired).
    Acquired(Lease),
    /// The caller held it and renewed it.
    Renewed(Lease),
    /// Someone else holds it.
    HeldByOther(Lease),
}

/// Where the leases live: files, or Lease objects in the API server.
#[derive(Clone)]
pub struct LeaseStore {
    backend: Backend,
    clock: Arc<dyn Clock>,
}

#[derive(Clone)]
enum Backend {
    Files(PathBuf),
    // Boxed: the API client is much larger than a path.
    Api(Box<ApiLeases>),
}

impl std::fmt::Debug for LeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Files(dir) => f.debug_struct("LeaseStore").field("dir", dir).finish(),
            Backend::Api(_) => f
                .debug_struct("LeaseStore")
                .field("namespace", &super::lease_api::lease_namespace())
                .finish(),
        }
    }
}

/// The election rule both backends apply to the lease as read (`current`) at `now`:
/// renew our own unexpired lease, leave someone else's unexpired lease alone, and take a
/// missing, released or expired one. Acquired and Renewed carry the lease to write.
pub(super) fn decide(
    current: Option<Lease>,
    name: &str,
    identity: &str,
    duration: Duration,
    now: SystemTime,
) -> Outcome {
    let duration = Duration::from_secs(whole_seconds(duration).into());
    match current {
        Some(mut l) if l.holder.as_deref() == Some(identity) && l.held_at(now) => {
            l.renew_time = Some(now);
            l.duration = duration;
            Outcome::Renewed(l)
        }
        Some(l) if l.held_at(now) => Outcome::HeldByOther(l),
        previous => {
            // A holder whose own lease expired starts over: it is a transition too,
            // since someone else may have answered in between.
            let transitions = match &previous {
                None => 0,
                Some(l) => l.transitions + 1,
            };
            Outcome::Acquired(Lease {
                name: name.into(),
                holder: Some(identity.into()),
                duration,
                acquire_time: Some(now),
                renew_time: Some(now),
                transitions,
            })
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseObject {
    api_version: String,
    kind: String,
    metadata: LeaseMeta,
    #[serde(default)]
    spec: LeaseSpec,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_duration_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquire_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_transitions: Option<u32>,
}

/// Kubernetes' `MicroTime`: RFC 3339 in UTC with six fractional digits.
fn format_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(SystemTime::from)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// `leaseDurationSeconds` for `d`: whole seconds, rounded up, at least one.
pub(super) fn whole_seconds(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.clamp(1, u64::from(u32::MAX)) as u32
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('.')
}

impl LeaseStore {
    /// Opens (creating) `<manifests_dir>/leases`.
    pub fn open(manifests_dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, LeaseError> {
        let dir = manifests_dir.join("leases");
        std::fs::create_dir_all(&dir).map_err(|source| LeaseError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(LeaseStore {
            backend: Backend::Files(dir),
            clock,
        })
    }

    /// Leases as `coordination.k8s.io/v1` Lease objects in [`LEASE_NAMESPACE`] of the API
    /// server `client` talks to. Its methods must run inside a multi-thread Tokio runtime.
    pub fn api(client: kube::Client, clock: Arc<dyn Clock>) -> Self {
        LeaseStore {
            backend: Backend::Api(Box::new(ApiLeases::new(client))),
            clock,
        }
    }

    /// The directory holding the lease files; `None` for leases in the API server.
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Files(dir) => Some(dir),
            Backend::Api(_) => None,
        }
    }

    fn path(dir: &Path, name: &str) -> Result<PathBuf, LeaseError> {
        if !valid_name(name) {
            return Err(LeaseError::BadName(name.into()));
        }
        Ok(dir.join(format!("{name}.yaml")))
    }

    fn lock(dir: &Path) -> Result<FileLock, LeaseError> {
        let path = dir.join(".lock");
        FileLock::exclusive(&path).map_err(|source| LeaseError::Io { path, source })
    }

    fn read(dir: &Path, name: &str) -> Result<Option<Lease>, LeaseError> {
        let path = Self::path(dir, name)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LeaseError::Io { path, source }),
        };
        let invalid = |reason: String| LeaseError::Invalid {
            path: path.clone(),
            reason,
        };
        let obj: LeaseObject = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if obj.kind != "Lease" {
            return Err(invalid(format!("kind is {:?}, not Lease", obj.kind)));
        }
        let time = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(parse_time)
                .transpose()
                .map_err(|e| invalid(format!("spec.{field}: {e}")))
        };
        Ok(Some(Lease {
            name: obj.metadata.name,
            holder: obj.spec.holder_identity.filter(|h| !h.is_empty()),
            duration: Duration::from_secs(obj.spec.lease_duration_seconds.unwrap_or(0).into()),
            acquire_time: time("acquireTime", &obj.spec.acquire_time)?,
            renew_time: time("renewTime", &obj.spec.renew_time)?,
            transitions: obj.spec.lease_transitions.unwrap_or(0),
        }))
    }

    fn write(dir: &Path, lease: &Lease) -> Result<(), LeaseError> {
        let path = Self::path(dir, &lease.name)?;
        let obj = LeaseObject {
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
            metadata: LeaseMeta {
                name: lease.name.clone(),
                namespace: Some(LEASE_NAMESPACE.into()),
            },
            spec: LeaseSpec {
                holder_identity: lease.holder.clone(),
                lease_duration_seconds: Some(whole_seconds(lease.duration)),
                acquire_time: lease.acquire_time.map(format_time),
                renew_time: lease.renew_time.map(format_time),
                lease_transitions: Some(lease.transitions),
            },
        };
        // A LeaseObject always serialises.
        let text = serde_yaml::to_string(&obj).unwrap_or_default();
        write_atomic(&path, &text).map_err(|source| LeaseError::Io { path, source })
    }

    /// Reads lease `name`, if it exists.
    pub fn get(&self, name: &str) -> Result<Option<Lease>, LeaseError> {
        match &self.backend {
            Backend::Files(dir) => {
                let _lock = Self::lock(dir)?;
                Self::read(dir, name)
            }
            Backend::Api(api) => timed(name, API_TIMEOUT, api.get(name)),
        }
    }

    /// Takes lease `name` for `identity` if it is free, released or expired, or renews
    /// it if `identity` holds it; otherwise reports the holder. Atomic across processes
    /// (files) or across API clients (the API server). An API request taking longer than
    /// `duration` is an error: the lease would be worthless by then.
    pub fn acquire_or_renew(
        &self,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Result<Outcome, LeaseError> {
        match &self.backend {
            Backend::Files(dir) => {
                let _lock = Self::lock(dir)?;
                let current = Self::read(dir, name)?;
                let outcome = decide(current, name, identity, duration, self.clock.now());
                if let Outcome::Acquired(l) | Outcome::Renewed(l) = &outcome {
                    Self::write(dir, l)?;
                }
                Ok(outcome)
            }
            Backend::Api(api) => timed(
                name,
                duration.max(Duration::from_secs(1)),
                api.acquire_or_renew(name, identity, duration, self.clock.as_ref()),
            ),
        }
    }

    /// Gives lease `name` up if `identity` holds it (the holder is cleared, so the next
    /// candidate takes it at once). Returns whether it did.
    pub fn release(&self, name: &str, identity: &str) -> Result<bool, LeaseError> {
        match &self.backend {
            Backend::Files(dir) => {
                let _lock = Self::lock(dir)?;
                match Self::read(dir, name)? {
                    Some(mut l) if l.holder.as_deref() == Some(identity) => {
                        l.holder = None;
                        Self::write(dir, &l)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Backend::Api(api) => timed(name, API_TIMEOUT, api.release(name, identity)),
        }
    }
}

/// How long a read or a release may wait for the API server.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the API request `f` to completion within `after`, from the sync store methods:
/// the worker thread is handed over for the wait ([`tokio::task::block_in_place`]), so
/// the runtime goes on.
fn timed<T>(
    name: &str,
    after: Duration,
    f: impl std::future::Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| LeaseError::Runtime)?;
    // block_in_place panics on a current-thread runtime.
    if matches!(
        handle.runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread
    ) {
        return Err(LeaseError::Runtime);
    }
    tokio::task::block_in_place(|| handle.block_on(async { tokio::time::timeout(after, f).await }))
        .map_err(|_| LeaseError::Timeout {
            name: name.into(),
            after,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// A clock the test moves.
    struct TestClock(Mutex<SystemTime>);

    impl Clock for TestClock {
        fn now(&self) -> SystemTime {
            *self.0.lock()
        }
    }

    impl TestClock {
        fn advance(&self, d: Duration) {
            *self.0.lock() += d;
        }
    }

    const NAME: &str = "cilium-l2announce-demo-web";
    const D: Duration = Duration::from_secs(2);

    fn two_stores() -> (tempfile::TempDir, Arc<TestClock>, LeaseStore, LeaseStore) {
        let dir = tempfile::tempdir().unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        let clock = Arc::new(TestClock(Mutex::new(start)));
        let a = LeaseStore::open(dir.path(), clock.clone()).unwrap();
        let b = LeaseStore::open(dir.path(), clock.clone()).unwrap();
        (dir, clock, a, b)
    }

    fn holder(o: &Outcome) -> Option<&str> {
        match o {
            Outcome::Acquired(l) | Outcome::Renewed(l) | Outcome::HeldByOther(l) => {
                l.holder.as_deref()
            }
        }
    }

    #[test]
    fn first_candidate_acquires_and_the_other_sees_it_held() {
        let (dir, _clock, a, b) = two_stores();
        let got = a.acquire_or_renew(NAME, "node1", D).unwrap();
        assert!(
            matches!(&got, Outcome::Acquired(l) if l.transitions == 0),
            "{got:?}"
        );
        let other = b.acquire_or_renew(NAME, "node2", D).unwrap();
        assert!(matches!(other, Outcome::HeldByOther(_)), "{other:?}");
        assert_eq!(holder(&other), Some("node1"));
        // The file is a Kubernetes Lease with MicroTime timestamps.
        let text = std::fs::read_to_string(dir.path().join("leases").join(format!("{NAME}.yaml")))
            .unwrap();
        assert!(
            text.contains("apiVersion: coordination.k8s.io/v1"),
            "{text}"
        );
        assert!(text.contains("kind: Lease"), "{text}");
        assert!(text.contains("holderIdentity: node1"), "{text}");
        assert!(text.contains("leaseDurationSeconds: 2"), "{text}");
        assert!(text.contains("renewTime: 2026-11-18T"), "{text}");
        assert!(text.contains(".123456Z"), "{text}");
        assert!(text.contains("namespace: kube-system"), "{text}");
    }

    #[test]
    fn the_holder_renews_and_keeps_it_past_the_first_duration() {
        let (_dir, clock, a, b) = two_stores();
        a.acquire_or_renew(NAME, "node1", D).unwrap();
        for _ in 0..10 {
            clock.advance(Duration::from_millis(500));
            let r = a.acquire_or_renew(NAME, "node1", D).unwrap();
            assert!(matches!(r, Outcome::Renewed(_)), "{r:?}");
            let o = b.acquire_or_renew(NAME, "node2", D).unwrap();
            assert!(matches!(o, Outcome::HeldByOther(_)), "{o:?}");
        }
        let l = b.get(NAME).unwrap().unwrap();
        assert_eq!(l.transitions, 0);
        assert_eq!(
            l.renew_time
                .unwrap()
                .duration_since(l.acquire_time.unwrap())
                .unwrap(),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_the_old_holder_loses_it() {
        let (_dir, clock, a, b) = two_stores();
        a.acquire_or_renew(NAME, "node1", D).unwrap();
        clock.advance(Duration::from_millis(1999));
        assert!(matches!(
            b.acquire_or_renew(NAME, "node2", D).unwrap(),
            Outcome::HeldByOther(_)
        ));
        clock.advance(Duration::from_millis(1));
        let taken = b.acquire_or_renew(NAME, "node2", D).unwrap();
        assert!(
            matches!(&taken, Outcome::Acquired(l) if l.transitions == 1),
            "{taken:?}"
        );
        // node1 comes back: it must not think it still holds the lease.
        let back = a.acquire_or_renew(NAME, "node1", D).unwrap();
        assert!(matches!(back, Outcome::HeldByOther(_)), "{back:?}");
        assert_eq!(holder(&back), Some("node2"));
        // And takes it again only after node2's expiry: a second transition.
        clock.advance(D);
        let again = a.acquire_or_renew(NAME, "node1", D).unwrap();
        assert!(
            matches!(&again, Outcome::Acquired(l) if l.transitions == 2),
            "{again:?}"
        );
    }

    #[test]
    fn release_hands_over_at_once_and_only_the_holder_can_release() {
        let (_dir, _clock, a, b) = two_stores();
        a.acquire_or_renew(NAME, "node1", D).unwrap();
        assert!(!b.release(NAME, "node2").unwrap(), "not the holder");
        assert!(matches!(
            b.acquire_or_renew(NAME, "node2", D).unwrap(),
            Outcome::HeldByOther(_)
        ));
        assert!(a.release(NAME, "node1").unwrap());
        assert_eq!(a.get(NAME).unwrap().unwrap().holder, None);
        let taken = b.acquire_or_renew(NAME, "node2", D).unwrap();
        assert!(
            matches!(&taken, Outcome::Acquired(l) if l.transitions == 1),
            "{taken:?}"
        );
    }

    #[test]
    fn concurrent_candidates_never_both_acquire() {
        // Many threads with their own stores race for one lease at every step of time.
        let (_dir, clock, a, _b) = two_stores();
        let dir = a.dir().unwrap().parent().unwrap().to_path_buf();
        for round in 0..20 {
            let winners: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..6)
                    .map(|i| {
                        let store = LeaseStore::open(&dir, clock.clone()).unwrap();
                        s.spawn(move || {
                            let me = format!("node{i}");
                            match store.acquire_or_renew(NAME, &me, D).unwrap() {
                                Outcome::Acquired(_) | Outcome::Renewed(_) => Some(me),
                                Outcome::HeldByOther(_) => None,
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            clock.advance(Duration::from_millis(2100));
        }
        assert_eq!(a.get(NAME).unwrap().unwrap().transitions, 19);
    }

    #[test]
    fn durations_are_whole_seconds_rounded_up_and_bad_files_are_errors() {
        let (dir, _clock, a, _b) = two_stores();
        let r = a
            .acquire_or_renew(NAME, "node1", Duration::from_millis(1500))
            .unwrap();
        assert!(matches!(&r, Outcome::Acquired(l) if l.duration == Duration::from_secs(2)));
        std::fs::write(dir.path().join("leases/broken.yaml"), "kind: Pod\n").unwrap();
        let e = a.acquire_or_renew("broken", "node1", D).unwrap_err();
        assert!(e.to_string().contains("broken.yaml"), "{e}");
        assert!(matches!(
            a.acquire_or_renew("../x", "node1", D),
            Err(LeaseError::BadName(_))
        ));
    }
}
