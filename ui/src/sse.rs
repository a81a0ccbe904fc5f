//! Live flows as server-sent events (`/flows/stream?<flows page query>`): a relay `follow`
//! stream is read into batches, one SSE event per [`BATCH_INTERVAL`] at most, each a JSON
//! array of [`FlowRow`]s (oldest first; the page builds the rows with `textContent`).
//! Relay failures become a `relay-error` event; the browser's EventSource then retries.

use crate::{app::App, query::FlowQuery, relay::Relay, view::FlowRow};
use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures::{Stream, StreamExt};
use lumen_api::observer::GetFlowsResponse;
use std::{collections::VecDeque, convert::Infallible, time::Duration, time::SystemTime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// How often a batch of live rows is sent at most.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How long the browser waits before reconnecting after the stream ends.
const RETRY: Duration = Duration::from_secs(5);

/// What the pump sends to the HTTP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// New rows, oldest first.
    Rows(Vec<FlowRow>),
    /// The relay failed; the stream ends after this.
    Error(String),
}

impl Batch {
    /// The SSE event for this batch.
    pub fn event(&self) -> Event {
        match self {
            Batch::Rows(rows) => match serde_json::to_string(rows) {
                Ok(json) => Event::default().data(json),
                Err(e) => Event::default()
                    .event("relay-error")
                    .data(format!("encoding rows: {e}")),
            },
            Batch::Error(msg) => Event::default()
                .event("relay-error")
                .retry(RETRY)
                .data(msg.clone()),
        }
    }
}

/// Reads `stream` into batches of at most `max` rows (the newest kept), sending one per
/// `interval` while there are rows, until the stream ends, fails, or `tx` closes.
pub async fn pump<S>(
    relay: &Relay,
    mut stream: S,
    tx: mpsc::Sender<Batch>,
    max: usize,
    interval: Duration,
) where
    S: Stream<Item = Result<GetFlowsResponse, Status>> + Unpin,
{
    let mut rows: VecDeque<FlowRow> = VecDeque::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flush = |rows: &mut VecDeque<FlowRow>| Batch::Rows(rows.drain(..).collect());
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(r)) => {
                    if let Some(f) = relay.take_flow(r) {
                        rows.push_back(FlowRow::new(&f));
                        if rows.len() > max {
                            rows.pop_front();
                        }
                    }
                }
                Some(Err(s)) => {
                    if !rows.is_empty() {
                        let _ = tx.send(flush(&mut rows)).await;
                    }
                    let msg = format!(
                        "relay stream failed at {}: {}; is lumen-relay running?",
                        relay.address(),
                        hubble_cli::error::one_line(s.message())
                    );
                    tracing::warn!(relay = %relay.address(), code = ?s.code(), "follow stream failed");
                    let _ = tx.send(Batch::Error(msg)).await;
                    return;
                }
                None => {
                    if !rows.is_empty() {
                        let _ = tx.send(flush(&mut rows)).await;
                    }
                    return;
                }
            },
            _ = tick.tick() => {
                if !rows.is_empty() && tx.send(flush(&mut rows)).await.is_err() {
                    return;
                }
            }
            // The browser went away: dropping the relay stream cancels it.
            _ = tx.closed() => return,
        }
    }
}

/// `GET /flows/stream`.
pub async fn stream(State(app): State<App>, RawQuery(raw): RawQuery) -> Response {
    let q = match FlowQuery::parse(raw.as_deref(), SystemTime::now()) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let max = usize::try_from(app.config.max_rows).unwrap_or(usize::MAX);
    let req = q.request(0, true);
    tokio::spawn(async move {
        match app.relay.follow(req).await {
            Ok(s) => pump(&app.relay, s, tx, max, BATCH_INTERVAL).await,
            Err(e) => {
                let _ = tx
                    .send(Batch::Error(crate::error::PageError::from(e).message()))
                    .await;
            }
        }
    });
    let events = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(b.event()));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::flow;
    use lumen_api::{flow::Verdict, observer::get_flows_response::ResponseTypes};

    fn resp(uuid: &str) -> Result<GetFlowsResponse, Status> {
        Ok(GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(flow(uuid, Verdict::Forwarded))),
            ..Default::default()
        })
    }

    async fn run(items: Vec<Result<GetFlowsResponse, Status>>, max: usize) -> Vec<Batch> {
        let relay = Relay::new("127.0.0.1:1", Duration::from_millis(10));
        let (tx, mut rx) = mpsc::channel(16);
        pump(
            &relay,
            futures::stream::iter(items),
            tx,
            max,
            Duration::from_secs(3600),
        )
        .await;
        let mut out = vec![];
        while let Some(b) = rx.recv().await {
            out.push(b);
        }
        out
    }

    fn uuids(b: &Batch) -> Vec<String> {
        match b {
            Batch::Rows(r) => r.iter().map(|r| r.uuid.clone()).collect(),
            Batch::Error(e) => vec![e.clone()],
        }
    }

    #[tokio::test]
    async fn batches_keep_the_newest_rows() {
        // The first tick fires at once, before any row; the rest comes in one batch at
        // the end of the stream, bounded to the newest `max`.
        let out = run(vec![resp("a"), resp("b"), resp("c")], 2).await;
        assert_eq!(out.len(), 1);
        assert_eq!(uuids(&out[0]), ["b", "c"]);
    }

    #[tokio::test]
    async fn a_failure_ends_with_an_error() {
        let out = run(vec![resp("a"), Err(Status::unavailable("gone"))], 10).await;
        assert_eq!(uuids(&out[0]), ["a"]);
        assert!(
            matches!(&out[1], Batch::Error(m) if m.contains("gone") && m.contains("lumen-relay")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn rows_are_batched_per_interval() {
        let relay = Relay::new("127.0.0.1:1", Duration::from_millis(10));
        let (tx, mut rx) = mpsc::channel(16);
        let (ftx, frx) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            pump(
                &relay,
                ReceiverStream::new(frx),
                tx,
                100,
                Duration::from_millis(20),
            )
            .await
        });
        ftx.send(resp("a")).await.unwrap();
        ftx.send(resp("b")).await.unwrap();
        // A tick may fall between the two: they come in one or two batches, in order.
        let mut seen = vec![];
        while seen.len() < 2 {
            let b = uuids(&rx.recv().await.unwrap());
            assert!(!b.is_empty(), "no empty batches");
            seen.extend(b);
        }
        assert_eq!(seen, ["a", "b"]);
        ftx.send(resp("c")).await.unwrap();
        assert_eq!(uuids(&rx.recv().await.unwrap()), ["c"]);
        drop(ftx);
        task.await.unwrap();
        assert!(rx.recv().await.is_none());
    }
}
