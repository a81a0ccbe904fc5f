//! The node pool: one connection per node, kept up with exponential backoff.
//!
//! Each node has a task that dials it, marks it connected (bumping its `generation`), then
//! holds a `grpc.health.v1/Watch` stream open: when that stream fails (agent gone,
//! connection reset, keepalive timeout) or reports NOT_SERVING, the node is marked
//! unavailable and redialled after `initial·2ⁿ` (capped, jittered). Everybody else reads
//! the pool through a `watch` of [`Snapshot`]s.

use crate::{
    config::Backoff,
    dial::{Dialer, Target},
};
use lumen_api::relay::NodeState;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// What the relay knows of one node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `cluster/node`.
    pub name: String,
    /// The address dialled.
    pub address: String,
    /// `NODE_CONNECTED` or `NODE_UNAVAILABLE` (`UNKNOWN_NODE_STATE` before the first dial).
    pub state: NodeState,
    /// The connection, when connected.
    pub channel: Option<Channel>,
    /// Incremented on every successful connection.
    pub generation: u64,
    /// Why the node is unavailable.
    pub message: String,
}

/// Every known node by name.
pub type Snapshot = Arc<BTreeMap<String, NodeInfo>>;

/// The pool (cheap to clone).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    dialer: Dialer,
    backoff: Backoff,
    tx: watch::Sender<Snapshot>,
    tasks: Mutex<HashMap<String, (String, JoinHandle<()>)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, (_, t)) in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            t.abort();
        }
    }
}

fn jitter() -> f64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (n % 1000) as f64 / 1000.0
}

impl Pool {
    /// The dialer connections use (with its TLS settings).
    pub fn dialer(&self) -> Dialer {
        self.inner.dialer.clone()
    }

    /// An empty pool.
    pub fn new(dialer: Dialer, backoff: Backoff) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                dialer,
                backoff,
                tx: watch::channel(Snapshot::default()).0,
                tasks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Follows the pool's changes.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.inner.tx.subscribe()
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.tx.borrow().clone()
    }

    /// Adds node `name` at `address`, or moves it there (reconnecting) if it changed.
    pub fn upsert(&self, name: &str, address: &str) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((addr, _)) = tasks.get(name) {
            if addr == address {
                return;
            }
        }
        if let Some((_, old)) = tasks.remove(name) {
            old.abort();
        }
        let generation = self.snapshot().get(name).map(|n| n.generation).unwrap_or(0);
        self.set(NodeInfo {
            name: name.into(),
            address: address.into(),
            state: NodeState::UnknownNodeState,
            channel: None,
            generation,
            message: "connecting".into(),
        });
        let task = tokio::spawn(run_node(
            Arc::downgrade(&self.inner),
            name.to_string(),
            address.to_string(),
        ));
        tasks.insert(name.into(), (address.into(), task));
    }

    /// Forgets node `name`.
    pub fn remove(&self, name: &str) {
        let task = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some((_, t)) = task {
            t.abort();
        }
        self.inner.tx.send_modify(|s| {
            Arc::make_mut(s).remove(name);
        });
    }

    fn set(&self, info: NodeInfo) {
        set(&self.inner, info)
    }
}

fn set(inner: &Inner, info: NodeInfo) {
    inner.tx.send_modify(|s| {
        Arc::make_mut(s).insert(info.name.clone(), info);
    });
}

/// Waits until the node's health stream says it is gone; returns why.
async fn watch_health(channel: Channel) -> String {
    let mut client = HealthClient::new(channel);
    let mut stream = match client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => return format!("health check failed: {}", e.message()),
    };
    loop {
        match stream.message().await {
            Ok(Some(r)) if r.status == ServingStatus::Serving as i32 => {}
            Ok(Some(_)) => return "node reports NOT_SERVING".into(),
            Ok(None) => return "connection closed".into(),
            Err(e) => return format!("connection lost: {}", e.message()),
        }
    }
}

async fn run_node(inner: std::sync::Weak<Inner>, name: String, address: String) {
    let mut attempt = 0u32;
    let mut generation = match inner.upgrade() {
        Some(i) => i.tx.borrow().get(&name).map(|n| n.generation).unwrap_or(0),
        None => return,
    };
    loop {
        let Some(pool) = inner.upgrade() else { return };
        let dialer = pool.dialer.clone();
        let backoff = pool.backoff;
        drop(pool);
        let outcome = match Target::parse(&address) {
            Ok(target) => dialer
                .dial_node(&target, Some(&name))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let message = match outcome {
            Ok(channel) => {
                attempt = 0;
                generation += 1;
                let Some(pool) = inner.upgrade() else { return };
                tracing::info!(node = %name, %address, "node connected");
                set(
                    &pool,
                    NodeInfo {
                        name: name.clone(),
                        address: address.clone(),
                        state: NodeState::NodeConnected,
                        channel: Some(channel.clone()),
                        generation,
                        message: String::new(),
                    },
                );
                drop(pool);
                let why = watch_health(channel).await;
                tracing::warn!(node = %name, %address, reason = %why, "node unavailable");
                why
            }
            Err(e) => {
                tracing::debug!(node = %name, %address, error = %e, "dial failed");
                e
            }
        };
        let Some(pool) = inner.upgrade() else { return };
        set(
            &pool,
            NodeInfo {
                name: name.clone(),
                address: address.clone(),
                state: NodeState::NodeUnavailable,
                channel: None,
                generation,
                message,
            },
        );
        drop(pool);
        tokio::time::sleep(backoff.delay(attempt, jitter())).await;
        attempt = attempt.saturating_add(1);
    }
}
