//! One kind's reflector: a kube-runtime watcher (list, then watch from the list's
//! resourceVersion; re-list on 410 Gone; back off and resume on connection errors)
//! feeding a store, and the kind's sync status for the publisher.

use super::kinds::WatchedKind;
use futures::StreamExt;
use kube::{
    api::Api,
    core::DynamicObject,
    runtime::{
        reflector::{store::Writer, Store},
        watcher::{self, Event},
        WatchStreamExt,
    },
    Client,
};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::{sync::watch, task::JoinHandle};

/// Where one kind stands.
#[derive(Debug, Default, Clone)]
pub struct KindStatus {
    /// A full list has completed at least once (the store holds a complete set).
    pub synced: bool,
    /// The API server does not serve the kind (its CRD is not installed): it counts as
    /// empty, whatever the store still holds.
    pub missing: bool,
    /// The "not installed" warning was logged (once per kind).
    warned_missing: bool,
    /// The last error, cleared by the next successful list.
    pub last_error: Option<String>,
}

impl KindStatus {
    /// Whether the first snapshot may be published as far as this kind is concerned.
    pub fn ready(&self) -> bool {
        self.synced || self.missing
    }
}

/// A running reflector's store and status.
pub struct Reflected {
    /// The kind.
    pub kind: WatchedKind,
    /// Its objects, complete after each (re-)list.
    pub store: Store<DynamicObject>,
    /// Its status.
    pub status: Arc<Mutex<KindStatus>>,
}

/// Starts `kind`'s reflector; every change to its store or status bumps `changes`.
pub fn spawn(
    client: Client,
    kind: WatchedKind,
    changes: Arc<watch::Sender<u64>>,
) -> (Reflected, JoinHandle<()>) {
    let ar = kind.api_resource();
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let writer = Writer::new(ar);
    let store = writer.as_reader();
    let status = Arc::new(Mutex::new(KindStatus::default()));
    let task = {
        let (kind, status) = (kind.clone(), status.clone());
        tokio::spawn(async move {
            let stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer);
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if on_item(&kind, &status, item) {
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        })
    };
    (
        Reflected {
            kind,
            store,
            status,
        },
        task,
    )
}

/// Records one watcher item; returns whether the kind's contribution may have changed.
fn on_item(
    kind: &WatchedKind,
    status: &Mutex<KindStatus>,
    item: watcher::Result<Event<DynamicObject>>,
) -> bool {
    let mut st = status.lock();
    match item {
        Ok(Event::Apply(_) | Event::Delete(_)) => true,
        // The store swaps in the new set only at InitDone.
        Ok(Event::Init | Event::InitApply(_)) => false,
        Ok(Event::InitDone) => {
            if st.missing {
                tracing::info!(kind = kind.kind, crd = %kind.crd_name(), "CustomResourceDefinition installed; watching it");
            } else if st.synced {
                tracing::info!(kind = kind.kind, "re-listed");
            }
            st.synced = true;
            st.missing = false;
            st.last_error = None;
            true
        }
        Err(e) if is_not_found(&e) => {
            st.last_error = Some(e.to_string());
            if !st.warned_missing {
                st.warned_missing = true;
                tracing::warn!(
                    kind = kind.kind,
                    crd = %kind.crd_name(),
                    "the API server does not serve {}/{}: CustomResourceDefinition {} is not \
                     installed. Treating {} as empty and retrying; install the CRDs (the Lumen \
                     Helm chart ships them)",
                    kind.api_version(),
                    kind.plural,
                    kind.crd_name(),
                    kind.kind,
                );
            }
            let changed = !st.missing;
            st.missing = true;
            changed
        }
        Err(e) => {
            tracing::warn!(kind = kind.kind, error = %e, "Kubernetes watch failed; retrying (re-listing where needed)");
            st.last_error = Some(e.to_string());
            false
        }
    }
}

/// Whether the list or watch failed because the API server does not serve the resource.
fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}
