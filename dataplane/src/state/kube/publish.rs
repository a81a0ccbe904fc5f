//! The merged snapshot: every kind's store as one [`ClusterState`], rebuilt when a store
//! changes (at most once per interval, so a burst of events makes one snapshot) and
//! published only when it differs.

use super::{convert::to_object, reflect::Reflected};
use crate::state::{ClusterState, Object};
use kube::core::DynamicObject;
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

/// Converted objects of one kind, by (namespace, name), with the store's version of each
/// (an unchanged object keeps its `Arc`, so it is converted once).
type Converted = HashMap<(String, String), (Arc<DynamicObject>, Option<Object>)>;

/// Builds snapshots from the reflectors' stores.
pub struct Snapshotter {
    reflected: Vec<Reflected>,
    cache: Vec<Converted>,
    problems: BTreeSet<String>,
}

impl Snapshotter {
    /// Over `reflected`.
    pub fn new(reflected: Vec<Reflected>) -> Self {
        let cache = reflected.iter().map(|_| Converted::new()).collect();
        Snapshotter {
            reflected,
            cache,
            problems: BTreeSet::new(),
        }
    }

    /// The reflectors.
    pub fn reflected(&self) -> &[Reflected] {
        &self.reflected
    }

    /// The state of every store now; a kind whose CRD is missing counts as empty.
    pub fn build(&mut self) -> ClusterState {
        let mut objects = vec![];
        for (r, cache) in self.reflected.iter().zip(&mut self.cache) {
            if r.status.lock().missing {
                cache.clear();
                continue;
            }
            let mut next = Converted::with_capacity(cache.len());
            for d in r.store.state() {
                let key = (
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                );
                let obj = match cache.remove(&key) {
                    Some((prev, obj)) if Arc::ptr_eq(&prev, &d) => obj,
                    _ => match to_object(&r.kind, &d) {
                        Ok(o) => Some(o),
                        Err(e) => {
                            tracing::warn!(kind = r.kind.kind, namespace = %key.0, name = %key.1, error = %e, "object ignored");
                            None
                        }
                    },
                };
                objects.extend(obj.clone());
                next.insert(key, (d, obj));
            }
            *cache = next;
        }
        let (state, problems) = ClusterState::from_objects(objects);
        let problems: BTreeSet<String> = problems.into_iter().collect();
        for p in problems.difference(&self.problems) {
            tracing::warn!(problem = %p, "object ignored");
        }
        self.problems = problems;
        state
    }
}

/// Aborts the reflectors when the source is dropped.
pub struct Tasks(pub Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Publishes a new snapshot after each change to the stores (no sooner than
/// `min_interval` after the previous one) until every receiver is gone; then stops the
/// reflectors.
pub async fn run(
    mut snap: Snapshotter,
    tx: watch::Sender<Arc<ClusterState>>,
    mut changes: watch::Receiver<u64>,
    min_interval: Duration,
    tasks: Tasks,
) {
    let _tasks = tasks;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
        tokio::time::sleep_until(last + min_interval).await;
        changes.borrow_and_update();
        let state = snap.build();
        last = Instant::now();
        let sent = tx.send_if_modified(|cur| {
            if **cur == state {
                return false;
            }
            *cur = Arc::new(state);
            true
        });
        if sent {
            let st = tx.borrow();
            tracing::debug!(
                pods = st.pods.len(),
                nodes = st.nodes.len(),
                objects = st.objects.len(),
                "state source changed"
            );
        }
    }
}
