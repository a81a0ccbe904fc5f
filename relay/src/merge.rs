//! The sort buffer: merges the nodes' GetFlows streams into one time-ordered stream.
//!
//! Entries sit in a min-heap by event time (`GetFlowsResponse.time`, ties in arrival
//! order). The minimum leaves the buffer when
//!
//! 1. every node still streaming has at least one entry queued: each node's stream is in
//!    time order, so nothing earlier can arrive any more (exact merge, no waiting);
//! 2. the buffer holds more than `max_len` entries (Hubble's bounded sort buffer); or
//! 3. the entry that has waited longest has waited `drain_timeout` (a node that has sent
//!    nothing for that long is not waited for; `None` = wait for it, used for
//!    non-follow requests, whose node streams all end).
//!
//! The caller reads only from nodes with nothing queued while the buffer is full
//! ([`SortBuffer::wants`]), so rule 2 rarely has to break the order: a burst from one node
//! is held back by flow control until the others have caught up.

use lumen_api::observer::GetFlowsResponse;
use std::{
    cmp::{Ordering, Reverse},
    collections::{BTreeMap, BinaryHeap, HashMap},
    time::{Duration, Instant},
};

/// Event time of a response in ns since the epoch (0 when absent).
pub fn time_ns(r: &GetFlowsResponse) -> i64 {
    let t = r.time.as_ref().or_else(|| match &r.response_types {
        Some(lumen_api::observer::get_flows_response::ResponseTypes::Flow(f)) => f.time.as_ref(),
        _ => None,
    });
    t.map(|t| t.seconds.saturating_mul(1_000_000_000) + t.nanos as i64)
        .unwrap_or(0)
}

struct Entry {
    time: i64,
    seq: u64,
    node: usize,
    resp: GetFlowsResponse,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

#[derive(Default)]
struct NodeSlot {
    queued: usize,
    live: bool,
}

/// The sort buffer of one GetFlows request. Nodes are identified by name.
pub struct SortBuffer {
    max_len: usize,
    drain_timeout: Option<Duration>,
    heap: BinaryHeap<Reverse<Entry>>,
    /// Arrival time of every queued entry by sequence number (= arrival order).
    arrivals: BTreeMap<u64, Instant>,
    ids: HashMap<String, usize>,
    nodes: Vec<NodeSlot>,
    seq: u64,
}

impl SortBuffer {
    /// An empty buffer.
    pub fn new(max_len: usize, drain_timeout: Option<Duration>) -> Self {
        SortBuffer {
            max_len: max_len.max(1),
            drain_timeout,
            heap: BinaryHeap::new(),
            arrivals: BTreeMap::new(),
            ids: HashMap::new(),
            nodes: vec![],
            seq: 0,
        }
    }

    fn id(&mut self, node: &str) -> usize {
        if let Some(&i) = self.ids.get(node) {
            return i;
        }
        self.nodes.push(NodeSlot::default());
        self.ids.insert(node.to_string(), self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    /// `node` is streaming: its next entry is waited for (rule 1).
    pub fn open(&mut self, node: &str) {
        let i = self.id(node);
        self.nodes[i].live = true;
    }

    /// `node` has ended or failed: no longer waited for.
    pub fn close(&mut self, node: &str) {
        let i = self.id(node);
        self.nodes[i].live = false;
    }

    /// Queues a response of `node`, arrived at `now`.
    pub fn push(&mut self, node: &str, resp: GetFlowsResponse, now: Instant) {
        let i = self.id(node);
        self.nodes[i].queued += 1;
        self.seq += 1;
        self.arrivals.insert(self.seq, now);
        self.heap.push(Reverse(Entry {
            time: time_ns(&resp),
            seq: self.seq,
            node: i,
            resp,
        }));
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether to read more from `node` now: always, unless the buffer is full, then only
    /// from nodes with nothing queued (which hold the merge back).
    pub fn wants(&self, node: &str) -> bool {
        self.heap.len() < self.max_len
            || self
                .ids
                .get(node)
                .is_none_or(|&i| self.nodes[i].queued == 0)
    }

    /// When rule 3 fires next, if anything is queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        let d = self.drain_timeout?;
        self.arrivals.values().next().map(|a| *a + d)
    }

    /// The next response that may leave the buffer at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<GetFlowsResponse> {
        self.heap.peek()?;
        let all_ready = self.nodes.iter().all(|n| !n.live || n.queued > 0);
        let full = self.heap.len() > self.max_len;
        let expired = self.next_deadline().is_some_and(|d| d <= now);
        if !(all_ready || full || expired) {
            return None;
        }
        let Reverse(e) = self.heap.pop()?;
        self.nodes[e.node].queued -= 1;
        self.arrivals.remove(&e.seq);
        Some(e.resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_api::{flow::Flow, observer::get_flows_response::ResponseTypes, wkt::Timestamp};

    pub(crate) fn resp(node: &str, t: i64) -> GetFlowsResponse {
        let ts = Timestamp {
            seconds: t / 1_000_000_000,
            nanos: (t % 1_000_000_000) as i32,
        };
        GetFlowsResponse {
            node_name: node.into(),
            time: Some(ts),
            response_types: Some(ResponseTypes::Flow(Flow {
                node_name: node.into(),
                time: Some(ts),
                ..Default::default()
            })),
        }
    }

    fn drain(b: &mut SortBuffer, now: Instant) -> Vec<(String, i64)> {
        std::iter::from_fn(|| b.pop(now))
            .map(|r| (r.node_name.clone(), time_ns(&r)))
            .collect()
    }

    #[test]
    fn waits_for_every_live_node_then_merges_in_time_order() {
        let now = Instant::now();
        let mut b = SortBuffer::new(100, Some(Duration::from_millis(100)));
        b.open("a");
        b.open("b");
        for t in [1, 4, 6] {
            b.push("a", resp("a", t), now);
        }
        assert!(b.pop(now).is_none(), "b has sent nothing yet");
        b.push("b", resp("b", 2), now);
        b.push("b", resp("b", 5), now);
        // a: 1 4 6, b: 2 5 → safe until b runs dry (after 5 only a's 6 remains).
        assert_eq!(
            drain(&mut b, now),
            [("a".into(), 1), ("b".into(), 2), ("a".into(), 4), ("b".into(), 5)]
        );
        assert_eq!(b.len(), 1);
        b.close("b");
        assert_eq!(drain(&mut b, now), [("a".into(), 6)]);
    }

    #[test]
    fn idle_node_is_not_waited_for_beyond_the_drain_timeout() {
        let t0 = Instant::now();
        let mut b = SortBuffer::new(100, Some(Duration::from_millis(100)));
        b.open("a");
        b.open("idle");
        b.push("a", resp("a", 10), t0);
        b.push("a", resp("a", 20), t0 + Duration::from_millis(50));
        assert!(b.pop(t0 + Duration::from_millis(99)).is_none());
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(
            drain(&mut b, t0 + Duration::from_millis(100)),
            [("a".into(), 10)]
        );
        assert_eq!(
            drain(&mut b, t0 + Duration::from_millis(150)),
            [("a".into(), 20)]
        );
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn without_drain_timeout_waits_until_the_node_ends() {
        let t0 = Instant::now();
        let mut b = SortBuffer::new(100, None);
        b.open("a");
        b.open("slow");
        b.push("a", resp("a", 10), t0);
        assert!(b.pop(t0 + Duration::from_secs(60)).is_none());
        b.push("slow", resp("slow", 5), t0);
        b.close("slow");
        assert_eq!(
            drain(&mut b, t0),
            [("slow".into(), 5), ("a".into(), 10)]
        );
    }

    #[test]
    fn bounded_and_flow_controlled() {
        let now = Instant::now();
        let mut b = SortBuffer::new(3, Some(Duration::from_secs(10)));
        b.open("a");
        b.open("b");
        for t in 1..=3 {
            assert!(b.wants("a"));
            b.push("a", resp("a", t), now);
        }
        assert!(!b.wants("a"), "full: a has entries queued");
        assert!(b.wants("b"), "full: b holds the merge back");
        assert!(b.pop(now).is_none());
        b.push("a", resp("a", 4), now); // a caller ignoring wants(): the bound holds
        assert_eq!(b.pop(now).map(|r| time_ns(&r)), Some(1));
        assert!(b.pop(now).is_none());
    }

    #[test]
    fn node_going_away_releases_the_others() {
        let now = Instant::now();
        let mut b = SortBuffer::new(100, None);
        b.open("a");
        b.open("dying");
        b.push("a", resp("a", 1), now);
        assert!(b.pop(now).is_none());
        b.close("dying");
        assert_eq!(drain(&mut b, now), [("a".into(), 1)]);
    }

    #[test]
    fn late_node_joins_the_merge() {
        let now = Instant::now();
        let mut b = SortBuffer::new(100, Some(Duration::from_millis(100)));
        b.open("a");
        b.push("a", resp("a", 1), now);
        assert_eq!(drain(&mut b, now), [("a".into(), 1)]);
        b.open("late");
        b.push("a", resp("a", 3), now);
        assert!(b.pop(now).is_none(), "the late node is waited for");
        b.push("late", resp("late", 2), now);
        assert_eq!(drain(&mut b, now), [("late".into(), 2)]);
        let later = now + Duration::from_millis(100);
        assert_eq!(drain(&mut b, later), [("a".into(), 3)]);
    }
}
