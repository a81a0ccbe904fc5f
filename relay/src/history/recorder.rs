//! Recording: one follow subscription per node feeding the store's writer task.
//!
//! Every node in the pool gets a task that, while the node is connected, holds a GetFlows
//! `follow` stream open from one ns after the last flow recorded from it (from the store
//! on start: a restarted relay backfills what the nodes still hold; epoch 0 for a node
//! never seen: everything it holds). Responses go to the writer with `try_send` on a
//! channel of `bufferFlows`: when it is full the flow is counted lost, the stream is never
//! slowed down. The writer decodes each flow once (for the indexed columns), inserts
//! batches of up to `insertBatch` in one transaction, and publishes per node the latest
//! time committed (the *flushed watermark* the replay splits history from live at). A
//! batch the store refuses for a transient reason (ClickHouse unreachable, too many
//! parts) is held and retried with backoff, the queue behind it absorbing new flows up to
//! its bound; any other failure counts the batch lost. The flows queued plus the batch
//! held are the *backlog* ([`super::History::backlog`]): it grows while the store is
//! unavailable (each failed attempt is logged at warn with its size) and falls back once
//! the store has caught up. A retention task deletes by age and by size.

use super::Shared;
use crate::{
    flows::{now_ns, open, timestamp},
    pool::{Pool, Snapshot},
    store::{columns, FlowStore, StoredFlow},
};
use lumen_api::{
    encoded::EncodedResponse,
    observer::{GetFlowsRequest, GetFlowsResponse},
    relay::NodeState,
};
use prost::Message;
use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};
use tokio::{
    sync::{mpsc, watch},
    task::{AbortHandle, JoinSet},
};

/// Pause before re-asking a connected node whose stream ended.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// First and longest wait before inserting a held batch again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// How often a growing lost count is logged.
const LOST_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decodes, inserts, and publishes watermarks until every sender is gone.
pub(super) async fn writer(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<EncodedResponse>,
    batch: usize,
) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        buf.clear();
        let n = rx.recv_many(&mut buf, batch).await;
        if n == 0 {
            return;
        }
        // Moved from the queue to the batch: the backlog stays the same until stored.
        shared.held.store(n as u64, Ordering::Relaxed);
        shared.queued.fetch_sub(n as u64, Ordering::Relaxed);
        let mut rows = Vec::with_capacity(buf.len());
        for r in buf.drain(..) {
            match GetFlowsResponse::decode(r.bytes.clone()) {
                Ok(resp) => {
                    if let Some(columns) = columns(&resp) {
                        rows.push(StoredFlow {
                            columns,
                            response: r.bytes,
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "undecodable response not recorded"),
            }
        }
        shared.held.store(rows.len() as u64, Ordering::Relaxed);
        let mut backoff = RETRY_FIRST;
        let mut failures = 0u32;
        let result = loop {
            match shared.store.insert(&rows).await {
                // A remote store down or pushing back: hold the batch (the queue behind it
                // fills, and past `bufferFlows` new flows are counted lost, never waited
                // for) and try again.
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    tracing::warn!(error = %e, held = rows.len(), queued = rx.len(),
                        backlog_flows = rows.len() + rx.len(), buffer_flows = rx.max_capacity(),
                        retry_in = ?backoff, "history store unavailable; holding the batch");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                other => break other,
            }
        };
        if failures > 0 && result.is_ok() {
            tracing::info!(
                failures,
                held = rows.len(),
                queued = rx.len(),
                "history store available again; catching up"
            );
        }
        // Cleared first: a scrape may briefly miss the batch, never count it twice.
        shared.held.store(0, Ordering::Relaxed);
        match result {
            Ok(()) => {
                let mut w = shared.flushed.lock().unwrap_or_else(|e| e.into_inner());
                for r in &rows {
                    let t = w.entry(r.columns.node.clone()).or_insert(i64::MIN);
                    *t = (*t).max(r.columns.time_ns);
                }
                shared
                    .stored
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                shared.lost.fetch_add(rows.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, flows = rows.len(), "history insert failed: flows lost");
            }
        }
    }
}

/// Streams node `name` into `tx` whenever it is connected.
async fn record_node(
    name: String,
    shared: Arc<Shared>,
    mut pool: watch::Receiver<Snapshot>,
    tx: mpsc::Sender<EncodedResponse>,
    open_timeout: Duration,
    mut resume_ns: i64,
) {
    loop {
        let node = pool.borrow_and_update().get(&name).cloned();
        let Some(node) = node.filter(|n| n.state == NodeState::NodeConnected) else {
            if pool.changed().await.is_err() {
                return;
            }
            continue;
        };
        let req = GetFlowsRequest {
            follow: true,
            since: Some(timestamp(resume_ns.saturating_add(1).max(0))),
            ..Default::default()
        };
        match open(&node, req, open_timeout).await {
            Ok(mut stream) => {
                tracing::debug!(node = %name, since_ns = resume_ns, "recording node");
                loop {
                    match stream.message().await {
                        Ok(Some(r)) => {
                            resume_ns = resume_ns.max(r.time_ns);
                            // Counted before it is sent: the writer may take it first.
                            shared.queued.fetch_add(1, Ordering::Relaxed);
                            match tx.try_send(r) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    shared.queued.fetch_sub(1, Ordering::Relaxed);
                                    shared.lost.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => {
                                    shared.queued.fetch_sub(1, Ordering::Relaxed);
                                    return;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(s) => {
                            tracing::debug!(node = %name, error = %s.message(), "recording stream failed");
                            break;
                        }
                    }
                }
            }
            Err(s) => tracing::debug!(node = %name, error = %s.message(), "cannot record node"),
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// Keeps one recording task per node in the pool; logs the lost count as it grows.
pub(super) async fn recorder(
    shared: Arc<Shared>,
    pool: Pool,
    tx: mpsc::Sender<EncodedResponse>,
    open_timeout: Duration,
    resume: HashMap<String, i64>,
) {
    let mut rx = pool.subscribe();
    // Dropping the set (the recorder aborted) aborts every recording task.
    let mut set = JoinSet::new();
    let mut tasks: HashMap<String, AbortHandle> = HashMap::new();
    let mut lost_logged = 0u64;
    let mut tick = tokio::time::interval(LOST_LOG_INTERVAL);
    loop {
        let names: Vec<String> = rx.borrow_and_update().keys().cloned().collect();
        tasks.retain(|n, t| {
            let keep = names.contains(n);
            if !keep {
                t.abort();
            }
            keep
        });
        for n in names {
            if !tasks.contains_key(&n) {
                let since = resume.get(&n).copied().unwrap_or(-1);
                tasks.insert(
                    n.clone(),
                    set.spawn(record_node(
                        n,
                        shared.clone(),
                        pool.subscribe(),
                        tx.clone(),
                        open_timeout,
                        since,
                    )),
                );
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            Some(_) = set.join_next() => {}
            _ = tick.tick() => {
                let lost = shared.lost.load(Ordering::Relaxed);
                if lost > lost_logged {
                    tracing::warn!(lost_total = lost, lost_new = lost - lost_logged,
                        buffer_flows = tx.max_capacity(), "history: flows lost (store behind or failing)");
                    lost_logged = lost;
                }
            }
        }
    }
}

/// Deletes flows past `max_age`, then the oldest while more than `max_size` bytes are in
/// use; every `interval`.
pub(super) async fn retention(
    store: Arc<dyn FlowStore>,
    max_age: Duration,
    max_size: u64,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if let Err(e) = enforce(&*store, max_age, max_size).await {
            tracing::warn!(error = %e, "history retention failed");
        }
    }
}

/// One retention pass; returns the flows deleted.
pub async fn enforce(
    store: &dyn FlowStore,
    max_age: Duration,
    max_size: u64,
) -> Result<u64, crate::store::StoreError> {
    let cutoff = now_ns().saturating_sub(max_age.as_nanos().min(i64::MAX as u128) as i64);
    let mut deleted = store.delete_before(cutoff).await?;
    for _ in 0..8 {
        let s = store.stats().await?;
        if s.bytes <= max_size || s.flows == 0 {
            break;
        }
        // The share of rows over the bound, plus 5 % so the next inserts fit.
        let excess = (s.bytes - max_size) as f64 / s.bytes as f64 + 0.05;
        let n = ((s.flows as f64 * excess).ceil() as u64).clamp(1, s.flows);
        deleted += store.delete_oldest(n).await?;
    }
    if deleted > 0 {
        tracing::info!(deleted, "history retention");
    }
    Ok(deleted)
}
