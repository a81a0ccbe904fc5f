//! The Kubernetes state source: reflectors over the API server for every kind the agent
//! reads, merged into the same [`ClusterState`] the manifest directory source builds (an
//! object delivered either way gives the same state).
//!
//! - [`client`]: in-cluster config with the `k8sServiceHost`/`k8sServicePort` override;
//! - [`kinds`]: what is watched, at which versions;
//! - `reflect`: one kube-runtime reflector per kind (re-list on 410 Gone, backoff on
//!   errors, a missing CRD counts as empty);
//! - `convert`: API objects as [`Object`](crate::state::Object)s;
//! - `publish`: the merged, coalesced snapshots;
//! - [`node_annotation`]: writing this node's CiliumNode annotation.

pub mod client;
mod convert;
pub mod kinds;
pub mod node_annotation;
mod publish;
mod reflect;

pub use client::client;
pub use kinds::{WatchedKind, DEFAULT_KINDS};
pub use node_annotation::write_node_annotation;

use super::ClusterState;
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;

/// How the source runs.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// The kinds to watch (default [`DEFAULT_KINDS`]).
    pub kinds: Vec<WatchedKind>,
    /// How long [`watch`] waits for every kind's first list.
    pub sync_timeout: Duration,
    /// The least time between two snapshots (a burst of events makes one).
    pub min_interval: Duration,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            kinds: DEFAULT_KINDS.to_vec(),
            sync_timeout: Duration::from_secs(120),
            min_interval: Duration::from_millis(100),
        }
    }
}

/// What the Kubernetes state source can fail with.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// Not running in a pod, or its service account is not mounted.
    #[error(
        "in-cluster Kubernetes config (service account token and CA under \
         /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT): {0}"
    )]
    InCluster(#[source] kube::config::InClusterError),
    /// Neither in a pod nor given a kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    #[error(
        "no Kubernetes API configuration: not in a pod ({in_cluster}), and no usable \
         kubeconfig ({kubeconfig}); run in the cluster or set KUBECONFIG"
    )]
    NoConfig {
        /// Why the in-cluster configuration is unavailable.
        in_cluster: kube::config::InClusterError,
        /// Why the kubeconfig is unavailable.
        kubeconfig: kube::config::InferConfigError,
    },
    /// `k8sServiceHost`/`k8sServicePort` do not make a URL.
    #[error("API server address {address:?} (k8sServiceHost/k8sServicePort) is invalid: {source}")]
    BadAddress {
        /// The address built from the settings.
        address: String,
        /// Why it does not parse.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client could not be built (TLS setup).
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// Some kinds did not complete their first list in time.
    #[error(
        "Kubernetes API: not synced after {timeout:?}: {}. Check that the API server \
         address (k8sServiceHost/k8sServicePort) is reachable from the node and that the \
         agent's ServiceAccount may list and watch these resources (RBAC)",
        .kinds.join("; ")
    )]
    NotSynced {
        /// How long it waited.
        timeout: Duration,
        /// Each kind not synced, with its resource and last error.
        kinds: Vec<String>,
    },
    /// Writing a CiliumNode annotation failed.
    #[error("annotating CiliumNode {node} with {key}: {source}")]
    Annotate {
        /// The node.
        node: String,
        /// The annotation.
        key: String,
        /// What the API server said.
        source: kube::Error,
    },
}

/// Starts watching every kind in `opts` and returns once each has been listed (or found
/// not installed), with the first snapshot in the receiver; later snapshots follow every
/// change. The reflectors stop when the last receiver is dropped.
pub async fn watch(
    client: kube::Client,
    opts: KubeSourceOptions,
) -> Result<watch::Receiver<Arc<ClusterState>>, KubeSourceError> {
    let (changes_tx, mut changes) = watch::channel(0u64);
    let changes_tx = Arc::new(changes_tx);
    let mut tasks = publish::Tasks(vec![]);
    let mut reflected = vec![];
    for kind in &opts.kinds {
        let (r, task) = reflect::spawn(client.clone(), kind.clone(), changes_tx.clone());
        reflected.push(r);
        tasks.0.push(task);
    }
    let all_ready = |r: &[reflect::Reflected]| r.iter().all(|r| r.status.lock().ready());
    let synced = tokio::time::timeout(opts.sync_timeout, async {
        while !all_ready(&reflected) {
            // The sender lives in `changes_tx`, so this cannot fail.
            let _ = changes.changed().await;
        }
    })
    .await;
    if synced.is_err() {
        let kinds = reflected
            .iter()
            .filter(|r| !r.status.lock().ready())
            .map(|r| {
                let err = r.status.lock().last_error.clone();
                format!(
                    "{} ({}/{}): {}",
                    r.kind.kind,
                    r.kind.api_version(),
                    r.kind.plural,
                    err.as_deref().unwrap_or("no answer yet")
                )
            })
            .collect();
        return Err(KubeSourceError::NotSynced {
            timeout: opts.sync_timeout,
            kinds,
        });
    }
    changes.borrow_and_update();
    let mut snap = publish::Snapshotter::new(reflected);
    let first = snap.build();
    let missing: Vec<_> = snap
        .reflected()
        .iter()
        .filter(|r| r.status.lock().missing)
        .map(|r| r.kind.kind)
        .collect();
    tracing::info!(
        pods = first.pods.len(),
        nodes = first.nodes.len(),
        objects = first.objects.len(),
        ?missing,
        "Kubernetes state synced"
    );
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(publish::run(snap, tx, changes, opts.min_interval, tasks));
    Ok(rx)
}
