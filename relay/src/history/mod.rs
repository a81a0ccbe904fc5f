//! Flow history: the relay records every node's flows into a [`FlowStore`] and answers
//! GetFlows ranges older than the nodes hold from it, continuing live.
//!
//! - [`recorder`]: a follow subscription per node (independent of clients' requests:
//!   history must not depend on someone watching), a bounded channel that never blocks
//!   it (full: the flow is counted lost, logged), the writer task that decodes, inserts
//!   in batches and publishes per-node watermarks, and retention by age and size;
//! - [`replay`]: how a request is split between the store and the nodes at a boundary
//!   so that the answer has no gap and no duplicate.
//!
//! The store only ever sees the writer (inserts), retention (deletes) and replays
//! (reads): the live path towards clients does not touch it.

pub mod recorder;
pub mod replay;

use crate::{
    config::{HistoryBackend, HistoryConfig},
    flows::MergeConfig,
    pool::Pool,
    select::NodeSelector,
    store::{sqlite::SqliteStore, FlowStore, StoreError},
};
use crate::{error::RelayError, flows::CLIENT_QUEUE};
use lumen_api::{encoded::BatchStream, observer::GetFlowsRequest};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{sync::mpsc, task::JoinHandle};

/// State shared by the recorder, the writer and replays.
pub struct Shared {
    /// The backend.
    pub store: Arc<dyn FlowStore>,
    /// Latest committed flow time per node.
    pub flushed: Mutex<HashMap<String, i64>>,
    /// Flows received and not stored (buffer full, insert failed).
    pub lost: AtomicU64,
    /// Flows stored since start.
    pub stored: AtomicU64,
}

/// A running history (cheap to clone; the tasks stop when [`History::shutdown`] is called).
#[derive(Clone)]
pub struct History {
    shared: Arc<Shared>,
    pool: Pool,
    merge: MergeConfig,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl History {
    /// Opens the store and starts recording every node of `pool`.
    pub async fn start(
        cfg: &HistoryConfig,
        pool: Pool,
        merge: MergeConfig,
    ) -> Result<History, StoreError> {
        let store: Arc<dyn FlowStore> = match cfg.backend {
            HistoryBackend::Sqlite => Arc::new(SqliteStore::open(&cfg.path).await?),
        };
        let watermarks: HashMap<String, i64> = store.watermarks().await?.into_iter().collect();
        let stats = store.stats().await?;
        tracing::info!(
            path = %cfg.path.display(),
            flows = stats.flows,
            bytes = stats.bytes,
            nodes = watermarks.len(),
            "history opened"
        );
        let shared = Arc::new(Shared {
            store: store.clone(),
            flushed: Mutex::new(watermarks.clone()),
            lost: AtomicU64::new(0),
            stored: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(cfg.buffer_flows);
        let writer = tokio::spawn(recorder::writer(shared.clone(), rx, cfg.insert_batch));
        let tasks = vec![
            tokio::spawn(recorder::recorder(
                shared.clone(),
                pool.clone(),
                tx,
                merge.open_timeout,
                watermarks,
            )),
            tokio::spawn(recorder::retention(
                store,
                cfg.max_age,
                cfg.max_size_bytes,
                cfg.retention_interval,
            )),
        ];
        Ok(History {
            shared,
            pool,
            merge,
            tasks: Arc::new(Mutex::new(tasks)),
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// Flows lost so far (not stored).
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Flows stored since start.
    pub fn stored(&self) -> u64 {
        self.shared.stored.load(Ordering::Relaxed)
    }

    /// Answers `req` from history then live when it reaches back before the boundary;
    /// `Ok(None)`: ask the nodes only.
    pub fn answer(&self, req: &GetFlowsRequest) -> Result<Option<BatchStream>, RelayError> {
        let selector = NodeSelector::from_whitelist(&req.whitelist)?;
        let flushed: Vec<(String, i64)> = self
            .shared
            .flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        let b = replay::boundary(&flushed, &self.pool.snapshot(), &selector);
        match replay::plan(req, b)? {
            Some(plan) => {
                let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
                tracing::debug!(
                    boundary_ns = plan.boundary_ns,
                    live = plan.live.is_some(),
                    "GetFlows from history"
                );
                tokio::spawn(replay::run(
                    self.shared.clone(),
                    plan,
                    self.pool.subscribe(),
                    self.merge,
                    tx,
                ));
                Ok(Some(BatchStream::new(rx)))
            }
            None => Ok(None),
        }
    }

    /// Stops recording and waits (up to `grace`) for the writer to store what it holds.
    pub async fn shutdown(&self, grace: Duration) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = tokio::time::timeout(grace, w).await;
        }
        tracing::info!(stored = self.stored(), lost = self.lost(), "history closed");
    }
}
