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
    /// Flows queued towards the writer (sent by the recorders, not yet taken).
    pub queued: AtomicU64,
    /// Flows in the batch the writer is inserting or holding for a retry.
    pub held: AtomicU64,
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
            HistoryBackend::Clickhouse => {
                let c = &cfg.clickhouse;
                Arc::new(
                    crate::store::clickhouse::ClickHouseStore::open(
                        crate::store::clickhouse::ClickHouseOptions {
                            url: c.url.clone(),
                            database: c.database.clone(),
                            user: c.user.clone(),
                            password: c.password.clone(),
                            ..Default::default()
                        },
                    )
                    .await?,
                )
            }
        };
        let watermarks: HashMap<String, i64> = store.watermarks().await?.into_iter().collect();
        let stats = store.stats().await?;
        tracing::info!(
            backend = ?cfg.backend,
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
            queued: AtomicU64::new(0),
            held: AtomicU64::new(0),
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

    /// Flows received and not stored yet: queued for the writer plus the batch it is
    /// inserting (or holding while the store is unavailable). Grows during an outage,
    /// back to about zero once the store has caught up.
    pub fn backlog(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed) + self.shared.held.load(Ordering::Relaxed)
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
            let flushed = tokio::time::timeout(grace, w).await.is_ok();
            tracing::info!(
                stored = self.stored(),
                lost = self.lost(),
                flushed,
                "history closed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! Recording and replay against a synthetic agent (see `flows::tests`): flows at 1..=10
    //! ms, answered by `since` and `number` like an agent.
    use super::*;
    use crate::{
        config::RelayConfig,
        flows::tests::{dir, pool, serve, wait_connected, CFG},
        merge::time_ns,
    };
    use lumen_api::observer::{get_flows_response::ResponseTypes, GetFlowsResponse};
    use prost::Message;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_full_queue_counts_flows_lost_instead_of_waiting() {
        let d = dir();
        let a = serve(&d, "c/a", (1..=2000).collect());
        let pool = pool();
        pool.upsert("c/a", &format!("unix://{}", a.path.display()));
        wait_connected(&pool, 1).await;
        let mut cfg = config(&d.join("flows.db"));
        cfg.buffer_flows = 1;
        let h = History::start(&cfg, pool.clone(), CFG).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while h.stored() + h.lost() < 2000 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("every flow stored or counted lost");
        assert_eq!(h.stored() + h.lost(), 2000);
        assert_eq!(h.backlog(), 0, "every flow is either stored or lost");
        assert!(
            h.lost() > 0 && h.stored() > 0,
            "{} {}",
            h.stored(),
            h.lost()
        );
        assert_eq!(h.shared.store.stats().await.unwrap().flows, h.stored());
        h.shutdown(Duration::from_secs(2)).await;
        std::fs::remove_dir_all(&d).ok();
    }

    fn config(path: &std::path::Path) -> HistoryConfig {
        // The synthetic flows are from 1970: keep them.
        RelayConfig::parse(&format!(
            "peerService: x\nhistory: {{path: {path:?}, maxAge: 100years}}"
        ))
        .unwrap()
        .history
        .unwrap()
    }

    async fn flow_ms(h: &History, req: GetFlowsRequest) -> Vec<i64> {
        let mut s = h.answer(&req).unwrap().expect("answered from history");
        let mut out = vec![];
        while let Ok(Some(b)) = tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            let r = GetFlowsResponse::decode(b.unwrap()).unwrap();
            if matches!(r.response_types, Some(ResponseTypes::Flow(_))) {
                out.push(time_ns(&r) / 1_000_000);
            }
        }
        out
    }

    async fn wait_stored(h: &History, n: u64) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while h.stored() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("flows recorded");
    }

    fn since_ns(r: &GetFlowsRequest) -> i64 {
        r.since
            .as_ref()
            .map_or(-1, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
    }

    #[tokio::test]
    async fn records_every_node_and_splits_requests_without_gap_or_duplicate() {
        let d = dir();
        let a = serve(&d, "c/a", (1..=10).collect());
        let pool = pool();
        pool.upsert("c/a", &format!("unix://{}", a.path.display()));
        wait_connected(&pool, 1).await;
        let cfg = config(&d.join("history/flows.db"));
        let h = History::start(&cfg, pool.clone(), CFG).await.unwrap();
        wait_stored(&h, 10).await;
        // The recorder asked for everything the node holds, and follows.
        let rec = a.agent.requests.lock().unwrap()[0].clone();
        assert!(rec.follow && since_ns(&rec) == 0, "{rec:?}");

        // Boundary 10 ms - 1 ms slack: 1..=9 from the store, 10 from the node.
        let req = GetFlowsRequest {
            since: Some(crate::flows::timestamp(1_000_000)),
            ..Default::default()
        };
        assert_eq!(flow_ms(&h, req).await, (1..=10).collect::<Vec<_>>());
        let asked = a.agent.requests.lock().unwrap().last().cloned().unwrap();
        assert_eq!(since_ns(&asked), 9_000_001);
        assert_eq!(asked.number, 0);

        // `number`: the newest 3 overall — the node's tail after the boundary (10) and the
        // newest stored before it (8, 9), exactly 3, as `hubble observe --last 3` prints.
        let req = GetFlowsRequest {
            number: 3,
            ..Default::default()
        };
        assert_eq!(flow_ms(&h, req).await, [8, 9, 10]);
        // `until` before the boundary: the store alone; the node is not asked.
        let before = a.agent.requests.lock().unwrap().len();
        let req = GetFlowsRequest {
            since: Some(crate::flows::timestamp(2_000_000)),
            until: Some(crate::flows::timestamp(4_000_000)),
            ..Default::default()
        };
        assert_eq!(flow_ms(&h, req).await, [2, 3, 4]);
        assert_eq!(a.agent.requests.lock().unwrap().len(), before);
        // Plain follow: the nodes only.
        let follow = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        assert!(h.answer(&follow).unwrap().is_none());

        // Restarted: resumes after the last stored flow, stores nothing twice.
        h.shutdown(Duration::from_secs(2)).await;
        let h = History::start(&cfg, pool.clone(), CFG).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let r = a.agent.requests.lock().unwrap().last().cloned().unwrap();
                if r.follow && since_ns(&r) == 10_000_001 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the recorder resumes after the watermark");
        assert_eq!(h.shared.store.stats().await.unwrap().flows, 10);
        assert_eq!(h.lost(), 0);
        h.shutdown(Duration::from_secs(2)).await;
        std::fs::remove_dir_all(&d).ok();
    }
}
