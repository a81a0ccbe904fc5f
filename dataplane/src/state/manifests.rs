//! The manifest-directory state source: every `*.yaml`, `*.yml` or `*.json` file in a
//! directory holds one or more Kubernetes objects (multi-document YAML and `kind: List`
//! both work). The directory is rescanned on a short interval; a file that fails to parse
//! is reported with its path and position and its previous objects are kept, so a
//! half-written or broken edit never makes the agent forget state.

use super::{ClusterState, Object};
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

    /// Rescans; returns whether anything changed, and the errors of files that failed
    /// (their previous objects are kept).
    pub fn rescan(&mut self) -> (bool, Vec<ManifestError>) {
        let mut errors = vec![];
        let mut seen = BTreeMap::new();
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
            seen.insert(path, (meta.modified().ok(), meta.len()));
        }
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

    /// The state built from all files' objects.
    pub fn state(&self) -> (ClusterState, Vec<String>) {
        let (mut st, problems) =
            ClusterState::from_objects(self.files.values().flat_map(|(_, _, o)| o.iter().cloned()));
        st.source_errors = self.errors.values().cloned().collect();
        (st, problems)
    }
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
}
