//! The sort buffer: merges the nodes' GetFlows streams into one time-ordered stream.
//!
//! Entries (whatever the caller merges: the relay's are encoded responses) sit in a
//! min-heap by event time (`GetFlowsResponse.time`, ties in arrival order). The minimum
//! leaves the buffer when
//!
//! 1. every node still streaming has sent an entry at least `slack` later than it: each
//!    node's stream is in time order up to `slack` (an agent's records from different CPUs
//!    can be out of order by microseconds), so nothing earlier can arrive any more (exact
//!    merge, no waiting);
//! 2. the buffer holds more than `max_len` entries (Hubble's bounded sort buffer); or
//! 3. the entry that has waited longest has waited `drain_timeout` (a node that has sent
//!    nothing for that long is not waited for; `None` = wait for it, used for
//!    non-follow requests, whose node streams all end).
//!
//! While the buffer is full the caller reads only from the nodes that hold rule 1 back
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
    use lumen_api::observer::get_flows_response::ResponseTypes;
    let t = match (&r.time, &r.response_types) {
        (Some(t), _) => Some(t),
        (None, Some(ResponseTypes::Flow(f))) => f.time.as_ref(),
        _ => None,
    };
    t.map(|t| t.seconds.saturating_mul(1_000_000_000) + t.nanos as i64)
        .unwrap_or(0)
}

struct Entry<T> {
    time: i64,
    seq: u64,
    node: usize,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

struct NodeSlot {
    queued: usize,
    live: bool,
    /// The latest event time the node has sent.
    high: i64,
}

impl Default for NodeSlot {
    fn default() -> Self {
        NodeSlot {
            queued: 0,
            live: false,
            high: i64::MIN,
        }
    }
}

/// The sort buffer of one GetFlows request, holding `T`s. Nodes are identified by name.
pub struct SortBuffer<T> {
    max_len: usize,
    drain_timeout: Option<Duration>,
    slack_ns: i64,
    heap: BinaryHeap<Reverse<Entry<T>>>,
    /// Arrival time of every queued entry by sequence number (= arrival order).
    arrivals: BTreeMap<u64, Instant>,
    ids: HashMap<String, usize>,
    nodes: Vec<NodeSlot>,
    seq: u64,
}

impl<T> SortBuffer<T> {
    /// An empty buffer; `slack`: how far out of order one node's stream may be.
    pub fn new(max_len: usize, drain_timeout: Option<Duration>, slack: Duration) -> Self {
        SortBuffer {
            max_len: max_len.max(1),
            drain_timeout,
            slack_ns: slack.as_nanos().min(i64::MAX as u128) as i64,
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

    /// Queues `item` of `node`, with event time `time` (ns), arrived at `now`.
    pub fn push(&mut self, node: &str, time: i64, item: T, now: Instant) {
        let i = self.id(node);
        let slot = &mut self.nodes[i];
        slot.queued += 1;
        slot.high = slot.high.max(time);
        self.seq += 1;
        self.arrivals.insert(self.seq, now);
        self.heap.push(Reverse(Entry {
            time,
            seq: self.seq,
            node: i,
            item,
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

    /// Whether `slot` may still send something earlier than `min` (+ slack).
    fn holds_back(&self, slot: &NodeSlot, min: i64) -> bool {
        slot.live && slot.high < min.saturating_add(self.slack_ns)
    }

    /// Whether to read more from `node` now: always, unless the buffer is full, then only
    /// from nodes that hold the merge back.
    pub fn wants(&self, node: &str) -> bool {
        if self.heap.len() < self.max_len {
            return true;
        }
        let min = self.heap.peek().map_or(i64::MIN, |e| e.0.time);
        self.ids
            .get(node)
            .is_none_or(|&i| self.holds_back(&self.nodes[i], min))
    }

    /// When rule 3 fires next, if anything is queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        let d = self.drain_timeout?;
        self.arrivals.values().next().map(|a| *a + d)
    }

    /// Room left before the buffer is full.
    pub fn room(&self) -> usize {
        self.max_len.saturating_sub(self.heap.len())
    }

    /// The next item that may leave the buffer at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let min = self.heap.peek()?.0.time;
        let all_ready = !self.nodes.iter().any(|n| self.holds_back(n, min));
        let full = self.heap.len() > self.max_len;
        let expired = self.next_deadline().is_some_and(|d| d <= now);
        if !(all_ready || full || expired) {
            return None;
        }
        let Reverse(e) = self.heap.pop()?;
        self.nodes[e.node].queued -= 1;
        self.arrivals.remove(&e.seq);
        Some(e.item)
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

    /// A buffer of test responses.
    trait Push {
        fn push_resp(&mut self, node: &str, r: GetFlowsResponse, now: Instant);
    }
    impl Push for SortBuffer<GetFlowsResponse> {
        fn push_resp(&mut self, node: &str, r: GetFlowsResponse, now: Instant) {
            self.push(node, time_ns(&r), r, now)
        }
    }

    fn drain(b: &mut SortBuffer<GetFlowsResponse>, now: Instant) -> Vec<(String, i64)> {
        std::iter::from_fn(|| b.pop(now))
            .map(|r| (r.node_name.clone(), time_ns(&r)))
            .collect()
    }

    #[test]
    fn waits_for_every_live_node_then_merges_in_time_order() {
        let now = Instant::now();
        let mut b = SortBuffer::<GetFlowsResponse>::new(
            100,
            Some(Duration::from_millis(100)),
            Duration::ZERO,
        );
        b.open("a");
        b.open("b");
        for t in [1, 4, 6] {
            b.push_resp("a", resp("a", t), now);
        }
        assert!(b.pop(now).is_none(), "b has sent nothing yet");
        b.push_resp("b", resp("b", 2), now);
        b.push_resp("b", resp("b", 5), now);
        // a: 1 4 6, b: 2 5 → safe until b runs dry (after 5 only a's 6 remains).
        assert_eq!(
            drain(&mut b, now),
            [
                ("a".into(), 1),
                ("b".into(), 2),
                ("a".into(), 4),
                ("b".into(), 5)
            ]
        );
        assert_eq!(b.len(), 1);
        b.close("b");
        assert_eq!(drain(&mut b, now), [("a".into(), 6)]);
    }

    #[test]
    fn idle_node_is_not_waited_for_beyond_the_drain_timeout() {
        let t0 = Instant::now();
        let mut b = SortBuffer::<GetFlowsResponse>::new(
            100,
            Some(Duration::from_millis(100)),
            Duration::ZERO,
        );
        b.open("a");
        b.open("idle");
        b.push_resp("a", resp("a", 10), t0);
        b.push_resp("a", resp("a", 20), t0 + Duration::from_millis(50));
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
        let mut b = SortBuffer::<GetFlowsResponse>::new(100, None, Duration::ZERO);
        b.open("a");
        b.open("slow");
        b.push_resp("a", resp("a", 10), t0);
        assert!(b.pop(t0 + Duration::from_secs(60)).is_none());
        b.push_resp("slow", resp("slow", 5), t0);
        b.close("slow");
        assert_eq!(drain(&mut b, t0), [("slow".into(), 5), ("a".into(), 10)]);
    }

    #[test]
    fn bounded_and_flow_controlled() {
        let now = Instant::now();
        let mut b =
            SortBuffer::<GetFlowsResponse>::new(3, Some(Duration::from_secs(10)), Duration::ZERO);
        b.open("a");
        b.open("b");
        for t in 1..=3 {
            assert!(b.wants("a"));
            b.push_resp("a", resp("a", t), now);
        }
        assert!(!b.wants("a"), "full: a has entries queued");
        assert!(b.wants("b"), "full: b holds the merge back");
        assert!(b.pop(now).is_none());
        b.push_resp("a", resp("a", 4), now); // a caller ignoring wants(): the bound holds
        assert_eq!(b.pop(now).map(|r| time_ns(&r)), Some(1));
        assert!(b.pop(now).is_none());
    }

    #[test]
    fn slack_absorbs_small_disorder_within_a_node() {
        let now = Instant::now();
        let mut b = SortBuffer::<GetFlowsResponse>::new(100, None, Duration::from_nanos(10));
        b.open("a");
        b.open("b");
        b.push_resp("a", resp("a", 105), now);
        b.push_resp("b", resp("b", 200), now);
        assert!(
            b.pop(now).is_none(),
            "a may still send something before 105"
        );
        b.push_resp("a", resp("a", 100), now); // a's CPUs raced: 100 after 105
        assert!(b.pop(now).is_none());
        b.push_resp("a", resp("a", 300), now);
        assert_eq!(drain(&mut b, now), [("a".into(), 100), ("a".into(), 105)]);
        b.push_resp("b", resp("b", 300), now);
        assert_eq!(drain(&mut b, now), [("b".into(), 200)]);
    }

    #[test]
    fn full_buffer_reads_only_from_nodes_holding_back() {
        let now = Instant::now();
        let mut b = SortBuffer::<GetFlowsResponse>::new(2, None, Duration::ZERO);
        b.open("a");
        b.open("b");
        b.push_resp("a", resp("a", 1), now);
        b.push_resp("a", resp("a", 2), now);
        assert!(!b.wants("a") && b.wants("b"));
        assert!(b.pop(now).is_none());
        b.push_resp("b", resp("b", 1), now);
        assert_eq!(drain(&mut b, now), [("a".into(), 1), ("b".into(), 1)]);
        assert!(b.wants("b"), "a's 2 waits for b again");
    }

    #[test]
    fn node_going_away_releases_the_others() {
        let now = Instant::now();
        let mut b = SortBuffer::<GetFlowsResponse>::new(100, None, Duration::ZERO);
        b.open("a");
        b.open("dying");
        b.push_resp("a", resp("a", 1), now);
        assert!(b.pop(now).is_none());
        b.close("dying");
        assert_eq!(drain(&mut b, now), [("a".into(), 1)]);
    }

    #[test]
    fn late_node_joins_the_merge() {
        let now = Instant::now();
        let mut b = SortBuffer::<GetFlowsResponse>::new(
            100,
            Some(Duration::from_millis(100)),
            Duration::ZERO,
        );
        b.open("a");
        b.push_resp("a", resp("a", 1), now);
        assert_eq!(drain(&mut b, now), [("a".into(), 1)]);
        b.open("late");
        b.push_resp("a", resp("a", 3), now);
        assert!(b.pop(now).is_none(), "the late node is waited for");
        b.push_resp("late", resp("late", 2), now);
        assert_eq!(drain(&mut b, now), [("late".into(), 2)]);
        let later = now + Duration::from_millis(100);
        assert_eq!(drain(&mut b, later), [("a".into(), 3)]);
    }
}
