//! The manifest-directory state source: every `*.yaml`, `*.yml` or `*.json` file in a
//! directory holds one or more Kubernetes objects (multi-document YAML and `kind: List`
//! both work). The directory is rescanned on a short interval; a file that fails to parse
//! is reported with its path and position and its previous objects are kept, so a
//! half-written or broken edit never makes the agent forget state.
//!
//! Status lives apart from the user's manifests, in the `status/` subdirectory (written by
//! LB-IPAM, see [`crate::lbipam`]): each object there carries only identity and `status`,
//! and its `status` replaces that of the object with the same kind, namespace and name
//! (like a Kubernetes status subresource). A status object without such an object is
//! ignored.

use super::{ClusterState, Object, ObjectKey};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::sync::watch;

/// A file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Unreadable.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not YAML, or not Kubernetes objects.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said (with line and column).
        source: serde_yaml::Error,
    },
}

/// Parses the objects in one file's text.
pub fn parse_objects(path: &Path, text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut out = vec![];
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| ManifestError::Parse {
            path: path.into(),
            source,
        })?;
        if value.is_null() {
            continue; // an empty document between `---` separators
        }
        let raw = Arc::new(value.clone());
        let mut obj: Object =
            serde_yaml::from_value(value).map_err(|source| ManifestError::Parse {
                path: path.into(),
                source,
            })?;
        let origin: Arc<str> = path.display().to_string().into();
        obj.source = Some(origin.clone());
        obj.raw = Some(raw);
        if obj.kind.ends_with("List") && !obj.items.is_empty() {
            for item in &obj.items {
                let mut o: Object = serde_yaml::from_value(item.clone()).map_err(|source| {
                    ManifestError::Parse {
                        path: path.into(),
                        source,
                    }
                })?;
                o.source = Some(origin.clone());
                o.raw = Some(Arc::new(item.clone()));
                out.push(o);
            }
        } else {
            out.push(obj);
        }
    }
    Ok(out)
}

/// What the directory looked like and what it held, per file.
#[derive(Default)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, (Option<SystemTime>, u64, Vec<Object>)>,
    /// Files whose current version failed, with the error (cleared when fixed or removed).
    errors: BTreeMap<PathBuf, String>,
}

impl ManifestDir {
    /// A source over `dir` (which may not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    /// The status subdirectory of `dir`.
    pub fn status_dir(dir: &Path) -> PathBuf {
        dir.join(STATUS_DIR)
    }

    /// Rescans; returns whether anything changed, and the errors of files that failed
    /// (their previous objects are kept).
    pub fn rescan(&mut self) -> (bool, Vec<ManifestError>) {
        let mut errors = vec![];
        let mut seen = BTreeMap::new();
        // A missing status directory just holds nothing.
        if let Ok(entries) = std::fs::read_dir(Self::status_dir(&self.dir)) {
            collect_manifests(entries, &mut seen);
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let changed = !self.files.is_empty();
                self.files.clear();
                return (changed, errors);
            }
            Err(source) => {
                return (
                    false,
                    vec![ManifestError::Read {
                        path: self.dir.clone(),
                        source,
                    }],
                )
            }
        };
        collect_manifests(entries, &mut seen);
        let mut changed = false;
        let before = (self.files.len(), self.errors.len());
        self.files.retain(|p, _| seen.contains_key(p));
        self.errors.retain(|p, _| seen.contains_key(p));
        changed |= (self.files.len(), self.errors.len()) != before;
        for (path, (mtime, len)) in seen {
            if let Some((m, l, _)) = self.files.get(&path) {
                if *m == mtime && *l == len {
                    continue;
                }
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|source| ManifestError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|text| parse_objects(&path, &text));
            match parsed {
                Ok(objs) => {
                    self.errors.remove(&path);
                    self.files.insert(path, (mtime, len, objs));
                    changed = true;
                }
                Err(e) => {
                    // Keep what the file held before, but remember this version as seen so
                    // the error is reported once per change, not on every scan.
                    let prev = self
                        .files
                        .remove(&path)
                        .map(|(_, _, o)| o)
                        .unwrap_or_default();
                    self.files.insert(path.clone(), (mtime, len, prev));
                    self.errors.insert(path, e.to_string());
                    changed = true;
                    errors.push(e);
                }
            }
        }
        (changed, errors)
    }

    /// The state built from all files' objects, with the status objects merged in.
    pub fn state(&self) -> (ClusterState, Vec<String>) {
        let status_dir = Self::status_dir(&self.dir);
        let (status, spec): (Vec<_>, Vec<_>) = self
            .files
            .iter()
            .partition(|(p, _)| p.parent() == Some(status_dir.as_path()));
        // Agent-owned records (a node's CiliumNode with its claimed pod CIDR) are objects
        // of their own; everything else in status/ only carries another object's status.
        let (records, status): (Vec<Object>, Vec<Object>) = status
            .into_iter()
            .flat_map(|(_, (_, _, o))| o.iter().cloned())
            .partition(|o| OWN_KINDS.contains(&o.kind.as_str()));
        let statuses: BTreeMap<ObjectKey, Object> =
            status.into_iter().map(|o| (o.key(), o)).collect();
        let objects = spec
            .into_iter()
            .flat_map(|(_, (_, _, o))| o.iter().cloned())
            .map(|o| match statuses.get(&o.key()) {
                Some(s) => with_status(o, &s.status),
                None => o,
            })
            .chain(records);
        let (mut st, problems) = ClusterState::from_objects(objects);
        st.source_errors = self.errors.values().cloned().collect();
        (st, problems)
    }
}

/// Kinds the agents write whole into the status directory (not status overlays).
const OWN_KINDS: &[&str] = &["CiliumNode"];

/// The subdirectory of the manifests directory that holds status objects.
pub const STATUS_DIR: &str = "status";

/// Adds the manifest files among `entries` (`*.yaml|yml|json`, not hidden) to `seen`.
fn collect_manifests(
    entries: std::fs::ReadDir,
    seen: &mut BTreeMap<PathBuf, (Option<SystemTime>, u64)>,
) {
    for entry in entries.flatten() {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden || !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            seen.insert(path, (meta.modified().ok(), meta.len()));
        }
    }
}

/// `obj` with its `status` replaced by `status`, in the typed field and in `raw`.
fn with_status(mut obj: Object, status: &serde_yaml::Value) -> Object {
    obj.status = status.clone();
    if let Some(raw) = obj.raw.as_deref() {
        let mut raw = raw.clone();
        if let serde_yaml::Value::Mapping(m) = &mut raw {
            m.insert("status".into(), status.clone());
        }
        obj.raw = Some(Arc::new(raw));
    }
    obj
}

/// Asks the watcher for an immediate rescan.
#[derive(Clone)]
pub struct Refresher(tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>);

impl Refresher {
    /// Rescans now; returns once the new snapshot (if anything changed) is published.
    pub async fn refresh(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.0.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Watches `dir` every `interval` (and whenever asked through the [`Refresher`]),
/// publishing a new snapshot whenever it changes. The first snapshot is loaded before
/// this returns.
pub fn watch(dir: PathBuf, interval: Duration) -> (watch::Receiver<Arc<ClusterState>>, Refresher) {
    let mut src = ManifestDir::new(&dir);
    let (_, errors) = src.rescan();
    report(&errors, &src);
    let (tx, rx) = watch::channel(Arc::new(src.state().0));
    let (req_tx, mut req_rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(16);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reply = tokio::select! {
                _ = tick.tick() => None,
                r = req_rx.recv() => r,
            };
            let (changed, errors) = src.rescan();
            report(&errors, &src);
            if changed {
                let (state, _) = src.state();
                tracing::debug!(
                    pods = state.pods.len(),
                    nodes = state.nodes.len(),
                    "state source changed"
                );
                if tx.send(Arc::new(state)).is_err() {
                    return;
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
        }
    });
    (rx, Refresher(req_tx))
}

fn report(errors: &[ManifestError], src: &ManifestDir) {
    for e in errors {
        tracing::error!(error = %e, "manifest ignored; previous objects from this file are kept");
    }
    if !errors.is_empty() {
        for p in src.state().1 {
            tracing::warn!(problem = %p, "object ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: demo\n  labels: {app: client}\nspec:\n  nodeName: node1\nstatus:\n  podIP: 10.100.1.5\n";

    #[test]
    fn parses_multi_document_files_and_lists() {
        let text =
            format!("{POD}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\n");
        let objs = parse_objects(Path::new("x.yaml"), &text).unwrap();
        assert_eq!(objs.len(), 2);
        let list = "apiVersion: v1\nkind: List\nmetadata: {}\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n";
        assert_eq!(parse_objects(Path::new("l.yaml"), list).unwrap().len(), 2);
    }

    #[test]
    fn typed_views_are_built() {
        let objs = parse_objects(Path::new("p.yaml"), POD).unwrap();
        let (st, problems) = ClusterState::from_objects(objs);
        assert!(problems.is_empty());
        let p = st.pod("demo", "client").unwrap();
        assert_eq!(p.labels["app"], "client");
        assert_eq!(
            p.ips,
            vec!["10.100.1.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(p.service_account, "default");
    }

    #[test]
    fn bad_objects_are_reported_not_applied() {
        let bad = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: not-a-cidr}\n";
        let (st, problems) =
            ClusterState::from_objects(parse_objects(Path::new("n.yaml"), bad).unwrap());
        assert!(st.nodes.is_empty());
        assert!(problems[0].contains("not-a-cidr"), "{problems:?}");
    }

    #[test]
    fn a_broken_edit_keeps_the_previous_objects() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pod.yaml");
        std::fs::write(&f, POD).unwrap();
        let mut src = ManifestDir::new(dir.path());
        let (changed, errs) = src.rescan();
        assert!(changed && errs.is_empty());
        assert_eq!(src.state().0.pods.len(), 1);

        std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata: [broken\n").unwrap();
        let (_, errs) = src.rescan();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("pod.yaml"), "{}", errs[0]);
        assert_eq!(src.state().0.pods.len(), 1, "previous objects kept");

        std::fs::remove_file(&f).unwrap();
        let (changed, _) = src.rescan();
        assert!(changed);
        assert!(src.state().0.pods.is_empty());
    }

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n";

    fn status_file(name: &str) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nstatus:\n  loadBalancer:\n    ingress: [{{ip: 192.168.77.240}}]\n")
    }

    #[test]
    fn status_objects_are_merged_into_their_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("svc.yaml"), SVC).unwrap();
        let status = ManifestDir::status_dir(dir.path());
        std::fs::create_dir(&status).unwrap();
        std::fs::write(status.join("service.demo.web.yaml"), status_file("web")).unwrap();
        std::fs::write(status.join("service.demo.gone.yaml"), status_file("gone")).unwrap();
        let mut src = ManifestDir::new(dir.path());
        let (changed, errs) = src.rescan();
        assert!(changed && errs.is_empty(), "{errs:?}");
        let st = src.state().0;
        let services: Vec<_> = st.objects.keys().filter(|k| k.kind == "Service").collect();
        assert_eq!(
            services.len(),
            1,
            "the orphan status object is ignored: {services:?}"
        );
        let obj = &st.objects[services[0]];
        let svc = lumen_lb::Service::parse(obj.raw.as_deref().unwrap()).unwrap();
        assert_eq!(
            svc.ingress_ips,
            vec!["192.168.77.240".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(svc.cluster_ips.len(), 1, "the spec is kept");
        assert!(!obj.status.is_null());

        // Removing the status file takes the status away again.
        std::fs::remove_file(status.join("service.demo.web.yaml")).unwrap();
        assert!(src.rescan().0);
        let st = src.state().0;
        let obj = st.objects.values().find(|o| o.kind == "Service").unwrap();
        let svc = lumen_lb::Service::parse(obj.raw.as_deref().unwrap()).unwrap();
        assert!(svc.ingress_ips.is_empty());
    }

    #[test]
    fn status_files_are_not_user_objects_and_hidden_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let status = ManifestDir::status_dir(dir.path());
        std::fs::create_dir(&status).unwrap();
        std::fs::write(status.join("service.demo.web.yaml"), status_file("web")).unwrap();
        std::fs::write(status.join(".lock"), "").unwrap();
        std::fs::write(status.join(".service.demo.web.yaml.tmp"), "not: [yaml").unwrap();
        let mut src = ManifestDir::new(dir.path());
        let (_, errs) = src.rescan();
        assert!(errs.is_empty(), "{errs:?}");
        assert!(src.state().0.objects.is_empty());
    }
}
