//! Answering GetFlows from history, then continuing live.
//!
//! A request with `since` or `number` is split at a boundary `B`: the smallest flushed
//! watermark among the selected, connected nodes that have history (when none is
//! connected, the largest among those with history), minus the nodes' reorder slack.
//! Everything stored up to `B` is complete for those nodes, so:
//!
//! - the store answers `[since, min(until, B)]` (prefiltered in SQL, then the exact Hubble
//!   filters and the field mask applied here): oldest first; with `number` and not
//!   `first` the newest `number` (in time order); with `first` the oldest `number`;
//! - the nodes answer the rest as an ordinary fan-out asked with `since = B + 1 ns` and
//!   `number` 0 (with `first`: what is left of `number`), `follow` as requested. For the
//!   newest `number` without `follow` (`hubble observe --last N`) the nodes are asked for
//!   their newest `number` after `B`, read first, and only the newest `number` of both
//!   parts are sent: exactly N, as Hubble prints.
//!
//! The two parts are disjoint by time, so nothing is sent twice, and the live part starts
//! exactly after the stored one: no gap as long as the nodes still hold the flows after
//! `B`, which is at most the writer's flush delay old. `number` counts across the cluster
//! (Hubble's relay asks each node for N); with `follow` the live tail after `B` adds the
//! flows of the last moment. Requests whose `since` is after `B` go to the nodes unchanged.

use super::Shared;
use crate::{
    error::RelayError,
    flows::{timestamp, FanOut, MergeConfig, NODE_REORDER_SLACK},
    pool::Snapshot,
    select::NodeSelector,
    store::{prefilter::Prefilter, Order, Query},
};
use lumen_api::{
    observer::{get_flows_response::ResponseTypes, GetFlowsRequest, GetFlowsResponse},
    relay::NodeState,
    wkt::Timestamp,
};
use lumen_filter::{FlowMask, FlowMatcher};
use prost::Message;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::codegen::Bytes;

/// Rows per store page.
const PAGE: u32 = 1000;

/// Responses per batch towards the client.
const BATCH: usize = 512;

fn ns(t: &Timestamp) -> i64 {
    t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos)
}

/// How one request is split between history and the nodes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The store part (its `limit` is the page size).
    pub query: Query,
    /// Most flows from the store (`number`), `None`: all in range.
    pub limit: Option<u64>,
    /// The request for the nodes afterwards; `None`: the stored part is the whole answer.
    pub live: Option<GetFlowsRequest>,
    /// The boundary: the stored part ends at it, the live part starts after it.
    pub boundary_ns: i64,
    matcher: FlowMatcher,
    mask: FlowMask,
}

/// The split boundary for the nodes `selector` picks: see the module docs. `None` when
/// none of them has history.
pub fn boundary(
    flushed: &[(String, i64)],
    snapshot: &Snapshot,
    selector: &NodeSelector,
) -> Option<i64> {
    let with_history: Vec<(&String, i64)> = flushed
        .iter()
        .filter(|(n, _)| selector.matches(n))
        .map(|(n, t)| (n, *t))
        .collect();
    let connected = with_history
        .iter()
        .filter(|(n, _)| {
            snapshot
                .get(*n)
                .is_some_and(|i| i.state == NodeState::NodeConnected)
        })
        .map(|(_, t)| *t)
        .min();
    let b = connected.or_else(|| with_history.iter().map(|(_, t)| *t).max())?;
    Some(b.saturating_sub(NODE_REORDER_SLACK.as_nanos() as i64))
}

/// The plan for `req` given the boundary; `None`: no history part (ask the nodes only).
pub fn plan(req: &GetFlowsRequest, boundary_ns: Option<i64>) -> Result<Option<Plan>, RelayError> {
    let matcher = FlowMatcher::compile(&req.whitelist, &req.blacklist)
        .map_err(|e| RelayError::InvalidRequest(e.to_string()))?;
    let mask = FlowMask::from_field_mask(req.field_mask.as_ref())
        .map_err(|e| RelayError::InvalidRequest(e.to_string()))?;
    let Some(b) = boundary_ns else {
        return Ok(None);
    };
    if req.since.is_none() && req.number == 0 {
        return Ok(None);
    }
    let since_ns = req.since.as_ref().map(ns);
    let until_ns = req.until.as_ref().map(ns);
    if since_ns.is_some_and(|s| s > b) {
        return Ok(None);
    }
    let (order, limit) = match (req.number, req.first) {
        (0, _) => (Order::Ascending, None),
        (n, true) => (Order::Ascending, Some(n)),
        (n, false) => (Order::Descending, Some(n)),
    };
    let live_needed = req.follow || until_ns.is_none_or(|u| u > b);
    let live = live_needed.then(|| GetFlowsRequest {
        since: Some(timestamp(b + 1)),
        // `first`: what is left of N; the newest N without follow: at most N per node
        // after B (the answer is trimmed to the newest N overall).
        number: if req.first || !req.follow {
            req.number
        } else {
            0
        },
        ..req.clone()
    });
    Ok(Some(Plan {
        query: Query {
            since_ns,
            until_ns: Some(until_ns.map_or(b, |u| u.min(b))),
            prefilter: Prefilter::from_whitelist(&req.whitelist),
            order,
            after: None,
            limit: PAGE,
        },
        limit,
        live,
        boundary_ns: b,
        matcher,
        mask,
    }))
}

impl Plan {
    /// The stored response as the client gets it; `None`: filtered out.
    fn admit(&self, bytes: Bytes) -> Option<Bytes> {
        if self.matcher.is_match_all() && self.mask.is_keep_all() {
            return Some(bytes);
        }
        let mut resp = GetFlowsResponse::decode(bytes).ok()?;
        let Some(ResponseTypes::Flow(flow)) = &mut resp.response_types else {
            return None;
        };
        if !self.matcher.matches(flow) {
            return None;
        }
        if !self.mask.is_keep_all() {
            *flow = self.mask.apply(flow);
        }
        Some(Bytes::from(resp.encode_to_vec()))
    }
}

/// Sends the stored part of `plan` to `tx`, then runs the live part; returns when the
/// client goes away or (non-follow) everything was sent.
pub async fn run(
    shared: Arc<Shared>,
    plan: Plan,
    pool: watch::Receiver<Snapshot>,
    merge: MergeConfig,
    tx: mpsc::Sender<Vec<Bytes>>,
) {
    let mut query = plan.query.clone();
    let want = plan.limit.unwrap_or(u64::MAX);
    let mut rows: Vec<Bytes> = vec![];
    let mut sent = 0u64;
    loop {
        let page = match shared.store.query(&query).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "history query failed: answering live only");
                break;
            }
        };
        for (_, b) in page.rows {
            if let Some(b) = plan.admit(b) {
                rows.push(b);
                sent += 1;
                if sent >= want {
                    break;
                }
            }
        }
        // Oldest first goes out as it is read; newest first is reversed at the end.
        if query.order == Order::Ascending
            && rows.len() >= BATCH
            && tx.send(std::mem::take(&mut rows)).await.is_err()
        {
            return;
        }
        match page.next {
            Some(c) if sent < want => query.after = Some(c),
            _ => break,
        }
    }
    if query.order == Order::Descending {
        rows.reverse();
    }
    let Some(mut live) = plan.live else {
        send_rows(&tx, &rows).await;
        return;
    };
    // The newest N, no follow: the live tail (after B, so newer than every stored row)
    // is read first, and only the newest N of both go out, as Hubble's `--last N` prints.
    if plan.limit.is_some() && !live.first && !live.follow {
        let tail = match FanOut::start(live, pool, merge).await {
            Ok(fan) => collect(fan).await,
            Err(e) => {
                tracing::debug!(error = %e, "no live part after history");
                vec![]
            }
        };
        let is_flow = |b: &Bytes| {
            matches!(
                GetFlowsResponse::decode(b.clone()).map(|r| r.response_types),
                Ok(Some(ResponseTypes::Flow(_)))
            )
        };
        let tail_flows = tail.iter().filter(|b| is_flow(b)).count() as u64;
        let keep_stored = want.saturating_sub(tail_flows) as usize;
        let stored = &rows[rows.len().saturating_sub(keep_stored)..];
        let mut skip = tail_flows.saturating_sub(want);
        let tail: Vec<Bytes> = tail
            .into_iter()
            .filter(|b| {
                if skip > 0 && is_flow(b) {
                    skip -= 1;
                    return false;
                }
                true
            })
            .collect();
        send_rows(&tx, stored).await;
        send_rows(&tx, &tail).await;
        return;
    }
    if !send_rows(&tx, &rows).await {
        return;
    }
    if plan.limit.is_some() && live.first {
        if sent >= want && !live.follow {
            return;
        }
        live.number = want.saturating_sub(sent);
    }
    match FanOut::start(live, pool, merge).await {
        Ok(fan) => fan.run(tx).await,
        Err(e) => tracing::debug!(error = %e, "no live part after history"),
    }
}

/// Sends `rows` in batches; false when the client went away.
async fn send_rows(tx: &mpsc::Sender<Vec<Bytes>>, rows: &[Bytes]) -> bool {
    for chunk in rows.chunks(BATCH) {
        if tx.send(chunk.to_vec()).await.is_err() {
            return false;
        }
    }
    true
}

/// Everything a (non-follow) fan-out answers.
async fn collect(fan: FanOut) -> Vec<Bytes> {
    let (tx, mut rx) = mpsc::channel(16);
    let run = tokio::spawn(fan.run(tx));
    let mut out = vec![];
    while let Some(batch) = rx.recv().await {
        out.extend(batch);
    }
    let _ = run.await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::NodeInfo;
    use std::collections::BTreeMap;

    fn snapshot(connected: &[&str]) -> Snapshot {
        let mut m = BTreeMap::new();
        for n in ["c/a", "c/b"] {
            m.insert(
                n.to_string(),
                NodeInfo {
                    name: n.into(),
                    address: String::new(),
                    state: if connected.contains(&n) {
                        NodeState::NodeConnected
                    } else {
                        NodeState::NodeUnavailable
                    },
                    channel: None,
                    generation: 1,
                    message: String::new(),
                },
            );
        }
        Arc::new(m)
    }

    const SLACK: i64 = NODE_REORDER_SLACK.as_nanos() as i64;

    #[test]
    fn boundary_is_the_slowest_connected_node_else_the_latest_stored() {
        let flushed = vec![
            ("c/a".to_string(), 5_000_000),
            ("c/b".to_string(), 9_000_000),
        ];
        let all = NodeSelector::from_whitelist(&[]).unwrap();
        assert_eq!(
            boundary(&flushed, &snapshot(&["c/a", "c/b"]), &all),
            Some(5_000_000 - SLACK)
        );
        assert_eq!(
            boundary(&flushed, &snapshot(&["c/b"]), &all),
            Some(9_000_000 - SLACK)
        );
        assert_eq!(
            boundary(&flushed, &snapshot(&[]), &all),
            Some(9_000_000 - SLACK)
        );
        assert_eq!(boundary(&[], &snapshot(&["c/a"]), &all), None);
    }

    #[test]
    fn splits_requests_at_the_boundary() {
        let b = 1_000_000_000;
        let ts = |ns: i64| Some(timestamp(ns));
        // Plain follow without since or number: nodes only.
        let req = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        assert!(plan(&req, Some(b)).unwrap().is_none());
        // since before B, follow: stored [since, B], live from B+1.
        let req = GetFlowsRequest {
            since: ts(10),
            follow: true,
            ..Default::default()
        };
        let p = plan(&req, Some(b)).unwrap().unwrap();
        assert_eq!((p.query.since_ns, p.query.until_ns), (Some(10), Some(b)));
        assert_eq!(p.query.order, Order::Ascending);
        let live = p.live.unwrap();
        assert_eq!(live.since, ts(b + 1));
        assert!(live.follow && live.number == 0);
        // until before B: the store answers it all.
        let req = GetFlowsRequest {
            since: ts(10),
            until: ts(500),
            ..Default::default()
        };
        let p = plan(&req, Some(b)).unwrap().unwrap();
        assert_eq!(p.query.until_ns, Some(500));
        assert!(p.live.is_none());
        // number: the newest N stored, and at most N per node after B (trimmed to N).
        let req = GetFlowsRequest {
            number: 20,
            ..Default::default()
        };
        let p = plan(&req, Some(b)).unwrap().unwrap();
        assert_eq!((p.query.order, p.limit), (Order::Descending, Some(20)));
        assert_eq!(p.live.unwrap().number, 20);
        // number with follow: the newest N stored, then everything live after B.
        let req = GetFlowsRequest {
            number: 20,
            follow: true,
            ..Default::default()
        };
        assert_eq!(
            plan(&req, Some(b)).unwrap().unwrap().live.unwrap().number,
            0
        );
        // since after B: nodes only.
        let req = GetFlowsRequest {
            since: ts(b + 5),
            ..Default::default()
        };
        assert!(plan(&req, Some(b)).unwrap().is_none());
        // Bad filters are refused whatever the split.
        let bad = GetFlowsRequest {
            since: ts(10),
            whitelist: vec![lumen_api::flow::FlowFilter {
                source_ip: vec!["10.0.0/8".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            plan(&bad, Some(b)),
            Err(RelayError::InvalidRequest(_))
        ));
    }
}
