//! GetFlows semantics over the flow ring, as Hubble defines them:
//! `number` with `first=false` → the most recent N matching flows, oldest first;
//! `first=true` → the oldest N; `number=0` → everything in range (all of the ring unless
//! `follow` alone asks only for new flows); `since`/`until` bound flow time (inclusive);
//! `follow` keeps streaming new flows. Whitelist/blacklist filters select flows (loss
//! reports always pass), and the field mask trims each flow.
//!
//! Responses are encoded here, in the request's own task, and handed to the connection in
//! batches (one per read of the ring): the connection's task only copies bytes.

use crate::{
    events::{Event, LostInfo, LostSource},
    flow_proto,
    ring::Ring,
};
use lumen_api::observer::{get_flows_response::ResponseTypes, GetFlowsRequest, GetFlowsResponse};
use lumen_filter::{fieldmask::FlowMask, FlowMatcher};
use prost::{
    bytes::{Bytes, BytesMut},
    Message,
};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events copied out of the ring per step.
const CHUNK: usize = 1024;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A filter is invalid.
    #[error("{0}")]
    Filter(#[from] lumen_filter::FilterError),
    /// The field mask names an unknown field.
    #[error("{0}")]
    FieldMask(#[from] lumen_filter::fieldmask::FieldMaskError),
    /// `since` after `until`, or a timestamp out of range.
    #[error("invalid time range: {0}")]
    TimeRange(String),
}

/// Bytes allocated at a time for encoding responses.
const ENCODE_BLOCK: usize = 16 * 1024;

/// Encodes responses back to back into shared blocks, each split off as its own `Bytes`
/// (one allocation per block rather than one per response).
#[derive(Default)]
struct ResponseEncoder {
    buf: BytesMut,
}

impl ResponseEncoder {
    fn encode(&mut self, r: &GetFlowsResponse) -> Bytes {
        let n = r.encoded_len();
        if self.buf.capacity() < n {
            self.buf.reserve(n.max(ENCODE_BLOCK));
        }
        r.encode_raw(&mut self.buf);
        self.buf.split().freeze()
    }
}

/// A validated GetFlows request.
pub struct Query {
    number: u64,
    first: bool,
    follow: bool,
    since: Option<i64>,
    until: Option<i64>,
    matcher: FlowMatcher,
    mask: Option<FlowMask>,
}

fn ns(t: &lumen_api::wkt::Timestamp, field: &str) -> Result<i64, QueryError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(QueryError::TimeRange(format!(
            "{field}.nanos {} out of range",
            t.nanos
        )));
    }
    t.seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(t.nanos as i64))
        .ok_or_else(|| QueryError::TimeRange(format!("{field} out of range")))
}

impl Query {
    /// Validates a request.
    pub fn from_request(req: &GetFlowsRequest) -> Result<Self, QueryError> {
        let since = req.since.as_ref().map(|t| ns(t, "since")).transpose()?;
        let until = req.until.as_ref().map(|t| ns(t, "until")).transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(QueryError::TimeRange("since is after until".into()));
            }
        }
        let mask = match &req.field_mask {
            Some(m) if !m.paths.is_empty() => Some(FlowMask::compile(&m.paths)?),
            _ => None,
        };
        Ok(Query {
            number: req.number,
            first: req.first,
            follow: req.follow,
            since,
            until,
            matcher: FlowMatcher::compile(&req.whitelist, &req.blacklist)?,
            mask,
        })
    }

    fn before_since(&self, t: i64) -> bool {
        self.since.is_some_and(|s| t < s)
    }

    fn after_until(&self, t: i64) -> bool {
        self.until.is_some_and(|u| t > u)
    }

    /// The response for an event, if it passes the filters (flows only; loss reports pass).
    pub fn render(&self, ev: &Event) -> Option<GetFlowsResponse> {
        match ev {
            Event::Flow(f) => {
                let flow = flow_proto::flow(f);
                if !self.matcher.matches(&flow) {
                    return None;
                }
                let flow = match &self.mask {
                    Some(m) => m.apply(&flow),
                    None => flow,
                };
                // The envelope keeps node and time even when the mask drops them.
                Some(GetFlowsResponse {
                    node_name: f.node_name.to_string(),
                    time: Some(flow_proto::timestamp(f.time_ns)),
                    response_types: Some(ResponseTypes::Flow(flow)),
                })
            }
            Event::Lost(_) => Some(flow_proto::response(ev)),
        }
    }

    /// The stored part of the answer, in stream order, and the ring position where
    /// following continues.
    pub fn history(&self, ring: &Ring<Arc<Event>>) -> (Vec<GetFlowsResponse>, u64) {
        let (oldest, tail) = ring.bounds();
        let mut out = vec![];
        let want_all = self.number == 0 && (!self.follow || self.since.is_some());
        if self.number == 0 && !want_all {
            return (out, tail);
        }
        let limit = if self.number == 0 {
            u64::MAX
        } else {
            self.number
        };
        let mut buf = Vec::with_capacity(CHUNK);
        let mut flows = 0u64;
        if self.first || want_all {
            let mut cursor = oldest;
            'fwd: while cursor < tail {
                buf.clear();
                let r = ring.read_from(cursor, CHUNK.min((tail - cursor) as usize), &mut buf);
                cursor = r.next;
                for ev in &buf {
                    let t = ev.time_ns();
                    if self.before_since(t) {
                        continue;
                    }
                    if self.after_until(t) {
                        break 'fwd;
                    }
                    if let Some(resp) = self.render(ev) {
                        flows += matches!(**ev, Event::Flow(_)) as u64;
                        out.push(resp);
                        if flows >= limit {
                            break 'fwd;
                        }
                    }
                }
                if buf.is_empty() {
                    break;
                }
            }
        } else {
            let mut before = tail;
            'back: while before > oldest {
                buf.clear();
                before = ring.read_back(before, CHUNK, &mut buf);
                for ev in &buf {
                    let t = ev.time_ns();
                    if self.after_until(t) {
                        continue;
                    }
                    if self.before_since(t) {
                        break 'back;
                    }
                    if let Some(resp) = self.render(ev) {
                        flows += matches!(**ev, Event::Flow(_)) as u64;
                        out.push(resp);
                        if flows >= limit {
                            break 'back;
                        }
                    }
                }
                if buf.is_empty() {
                    break;
                }
            }
            out.reverse();
        }
        (out, tail)
    }

    /// Streams the answer, encoded, into `tx` until done, the client goes away, or `until`
    /// passes.
    pub async fn run(
        self,
        ring: Arc<Ring<Arc<Event>>>,
        node_name: Arc<str>,
        tx: mpsc::Sender<Vec<Bytes>>,
    ) {
        let mut rx = ring.subscribe();
        let mut enc = ResponseEncoder::default();
        let (history, mut cursor) = self.history(&ring);
        for chunk in history.chunks(CHUNK) {
            if tx
                .send(chunk.iter().map(|r| enc.encode(r)).collect())
                .await
                .is_err()
            {
                return;
            }
        }
        if !self.follow {
            return;
        }
        let mut buf = Vec::with_capacity(CHUNK);
        loop {
            buf.clear();
            let r = ring.read_from(cursor, CHUNK, &mut buf);
            cursor = r.next;
            let mut batch = Vec::with_capacity(buf.len() + 1);
            if r.lost > 0 {
                let lost = Event::Lost(LostInfo {
                    source: LostSource::FlowRing,
                    count: r.lost,
                    cpu: None,
                    time_ns: now_ns(),
                    node_name: node_name.clone(),
                });
                batch.push(enc.encode(&flow_proto::response(&lost)));
            }
            let mut done = false;
            for ev in &buf {
                if self.after_until(ev.time_ns()) {
                    done = true;
                    break;
                }
                if self.before_since(ev.time_ns()) {
                    continue;
                }
                if let Some(resp) = self.render(ev) {
                    batch.push(enc.encode(&resp));
                }
            }
            if !batch.is_empty() && tx.send(batch).await.is_err() || done {
                return;
            }
            if buf.is_empty() {
                if self.after_until(now_ns()) {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if self.until.is_some() => {}
                }
            }
        }
    }
}

/// Wall-clock now in ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::{fixtures::tcp_syn, Record},
        events::FlowEvent,
        ipcache::EndpointInfo,
    };
    use lumen_api::{flow::LostEventSource, observer::get_flows_response::ResponseTypes};

    fn flow(i: i64) -> Arc<Event> {
        let mut rec = tcp_syn();
        rec.pkt.src_port = i as u16;
        Arc::new(Event::Flow(FlowEvent {
            time_ns: 1_000_000_000 + i,
            uuid: i as u128,
            record: Record::Trace(rec),
            source: Arc::new(EndpointInfo::default()),
            destination: Arc::new(EndpointInfo::default()),
            endpoint_id: 0,
            ifname: None,
            node_name: "lab/n1".into(),
            policies: None,
            source_service: None,
            destination_service: None,
            l7: None,
        }))
    }

    fn src_port(r: &GetFlowsResponse) -> Option<u32> {
        match &r.response_types {
            Some(ResponseTypes::Flow(f)) => match f.l4.as_ref()?.protocol.as_ref()? {
                lumen_api::flow::layer4::Protocol::Tcp(t) => Some(t.source_port),
                _ => None,
            },
            _ => None,
        }
    }

    fn query(req: GetFlowsRequest) -> Query {
        Query::from_request(&req).unwrap()
    }

    #[test]
    fn last_n_first_n_and_time_bounds() {
        let ring = Ring::new(100);
        ring.push_batch((0..10).map(flow));
        let ports = |q: Query| {
            q.history(&ring)
                .0
                .iter()
                .filter_map(src_port)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ports(query(GetFlowsRequest {
                number: 3,
                ..Default::default()
            })),
            vec![7, 8, 9]
        );
        assert_eq!(
            ports(query(GetFlowsRequest {
                number: 3,
                first: true,
                ..Default::default()
            })),
            vec![0, 1, 2]
        );
        assert_eq!(ports(query(GetFlowsRequest::default())).len(), 10);
        let since = Some(lumen_api::wkt::Timestamp {
            seconds: 1,
            nanos: 4,
        });
        let until = Some(lumen_api::wkt::Timestamp {
            seconds: 1,
            nanos: 6,
        });
        assert_eq!(
            ports(query(GetFlowsRequest {
                since,
                until,
                ..Default::default()
            })),
            vec![4, 5, 6]
        );
        assert_eq!(
            ports(query(GetFlowsRequest {
                number: 2,
                since,
                ..Default::default()
            })),
            vec![8, 9]
        );
        assert!(
            ports(query(GetFlowsRequest {
                follow: true,
                ..Default::default()
            }))
            .is_empty(),
            "follow alone: only new flows"
        );
    }

    #[tokio::test]
    async fn an_overtaken_follower_gets_a_lost_event() {
        let ring = Arc::new(Ring::new(8));
        let (btx, brx) = mpsc::channel(1);
        let task = tokio::spawn(
            query(GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .run(ring.clone(), "lab/n1".into(), btx),
        );
        // One response at a time, decoded, as a client reads them.
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            let mut s = lumen_api::encoded::BatchStream::new(brx);
            while let Some(b) = s.next().await {
                let r = GetFlowsResponse::decode(b.unwrap()).map_err(|e| e.to_string());
                if tx.send(r).await.is_err() {
                    return;
                }
            }
        });
        tokio::task::yield_now().await;
        ring.push(flow(0));
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(src_port(&first), Some(0));
        // The follower is stuck on a full channel while the writer laps it.
        ring.push(flow(1));
        ring.push(flow(2));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        ring.push_batch((3..40).map(flow));
        let mut lost = 0;
        let mut ports = vec![];
        while let Ok(Some(r)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await
        {
            let r = r.unwrap();
            match &r.response_types {
                Some(ResponseTypes::LostEvents(l)) => {
                    assert_eq!(l.source, LostEventSource::HubbleRingBuffer as i32);
                    lost += l.num_events_lost;
                }
                _ => ports.push(src_port(&r).unwrap()),
            }
        }
        assert!(lost > 0, "the gap is reported");
        assert_eq!(
            ports.len() as u64 + lost,
            39,
            "every flow after the first is delivered or counted as lost: {ports:?}"
        );
        assert_eq!(ports.last(), Some(&39));
        task.abort();
    }
}
