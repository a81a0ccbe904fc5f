//! Flow history storage: the [`FlowStore`] trait the relay writes every flow it receives
//! into and answers old GetFlows ranges from, and what is common to its backends.
//!
//! - [`FlowStore`]: an async, batched store (`insert` takes a batch, `query` returns a
//!   page): fits an embedded database as well as a remote one (ClickHouse) whose round
//!   trips must be amortised over many rows;
//! - [`FlowColumns`] / [`columns`]: the indexed columns extracted from a flow (the flow
//!   itself is stored as the encoded `GetFlowsResponse` the node sent: lossless);
//! - [`prefilter`]: the part of Hubble's filters a backend can evaluate (in SQL); the exact
//!   semantics are applied afterwards with `lumen-filter` on the decoded rows;
//! - [`sqlite`]: the embedded default backend.

pub mod clickhouse;
pub mod prefilter;
pub mod sqlite;

use lumen_api::{
    flow::{layer4::Protocol, Flow},
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
};
use prefilter::Prefilter;
use tonic::codegen::Bytes;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused an operation (or is unreachable).
    #[error("history database: {0}")]
    Database(#[from] sqlx::Error),
    /// Its schema could not be brought up to date.
    #[error("history schema migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The ClickHouse backend failed.
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::ClickHouseError),
    /// The directory for the database could not be created.
    #[error("history directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the failure is transient (a remote store unreachable or pushing back): the
    /// writer keeps the batch and tries again later instead of counting it lost.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::ClickHouse(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The indexed columns of one stored flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowColumns {
    /// Flow time, ns since the epoch.
    pub time_ns: i64,
    /// `cluster/node`.
    pub node: String,
    /// The flow's uuid.
    pub uuid: String,
    /// Source namespace.
    pub src_namespace: String,
    /// Source pod.
    pub src_pod: String,
    /// Source security identity.
    pub src_identity: u32,
    /// Destination namespace.
    pub dst_namespace: String,
    /// Destination pod.
    pub dst_pod: String,
    /// Destination security identity.
    pub dst_identity: u32,
    /// Source IP as text (empty without an IP layer).
    pub src_ip: String,
    /// Destination IP as text.
    pub dst_ip: String,
    /// Source port (0 without one).
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// L4 protocol: `tcp`, `udp`, `icmpv4`, `icmpv6`, `sctp`, `vrrp`, `igmp`, or empty.
    pub protocol: &'static str,
    /// `flow.Verdict`.
    pub verdict: i32,
    /// `flow.DropReason`.
    pub drop_reason: i32,
    /// `flow.TrafficDirection`.
    pub direction: i32,
    /// `CiliumEventType.type`.
    pub event_type: i32,
    /// `CiliumEventType.sub_type`.
    pub event_subtype: i32,
}

/// Time of a response in ns: the envelope's, else the flow's.
fn response_time_ns(resp: &GetFlowsResponse, flow: &Flow) -> i64 {
    resp.time
        .as_ref()
        .or(flow.time.as_ref())
        .map(|t| t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos))
        .unwrap_or(0)
}

/// The indexed columns of a GetFlows response; `None` when it is not a flow (node status,
/// lost events: those are not history).
pub fn columns(resp: &GetFlowsResponse) -> Option<FlowColumns> {
    let Some(ResponseTypes::Flow(flow)) = &resp.response_types else {
        return None;
    };
    let (src, dst) = (
        flow.source.clone().unwrap_or_default(),
        flow.destination.clone().unwrap_or_default(),
    );
    let ip = flow.ip.clone().unwrap_or_default();
    let (protocol, src_port, dst_port) = match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(p)) => ("tcp", p.source_port, p.destination_port),
        Some(Protocol::Udp(p)) => ("udp", p.source_port, p.destination_port),
        Some(Protocol::Sctp(p)) => ("sctp", p.source_port, p.destination_port),
        Some(Protocol::IcmPv4(_)) => ("icmpv4", 0, 0),
        Some(Protocol::IcmPv6(_)) => ("icmpv6", 0, 0),
        Some(Protocol::Vrrp(_)) => ("vrrp", 0, 0),
        Some(Protocol::Igmp(_)) => ("igmp", 0, 0),
        None => ("", 0, 0),
    };
    let event = flow.event_type.unwrap_or_default();
    let node = if resp.node_name.is_empty() {
        flow.node_name.clone()
    } else {
        resp.node_name.clone()
    };
    Some(FlowColumns {
        time_ns: response_time_ns(resp, flow),
        node,
        uuid: flow.uuid.clone(),
        src_namespace: src.namespace,
        src_pod: src.pod_name,
        src_identity: src.identity,
        dst_namespace: dst.namespace,
        dst_pod: dst.pod_name,
        dst_identity: dst.identity,
        src_ip: ip.source,
        dst_ip: ip.destination,
        src_port,
        dst_port,
        protocol,
        verdict: flow.verdict,
        drop_reason: flow.drop_reason_desc,
        direction: flow.traffic_direction,
        event_type: event.r#type,
        event_subtype: event.sub_type,
    })
}

/// One flow to store: its columns and the response bytes as received.
#[derive(Debug, Clone)]
pub struct StoredFlow {
    /// Indexed columns.
    pub columns: FlowColumns,
    /// The encoded `GetFlowsResponse`.
    pub response: Bytes,
}

/// Order of a query's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Ascending,
    /// Newest first.
    Descending,
}

/// Where a page ends: the next page starts strictly after it (in the query's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Time of the last row returned.
    pub time_ns: i64,
    /// Its row id (ties on time).
    pub id: i64,
}

/// One page of a history query.
#[derive(Debug, Clone)]
pub struct Query {
    /// Earliest flow time, inclusive.
    pub since_ns: Option<i64>,
    /// Latest flow time, inclusive.
    pub until_ns: Option<i64>,
    /// Rows a backend may pre-select on (a superset of what the request's filters match).
    pub prefilter: Prefilter,
    /// Row order.
    pub order: Order,
    /// Continue after this row (previous page's [`Page::next`]).
    pub after: Option<Cursor>,
    /// Most rows in the page.
    pub limit: u32,
}

/// A page of stored responses.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `(time_ns, encoded GetFlowsResponse)` in the query's order.
    pub rows: Vec<(i64, Bytes)>,
    /// Cursor for the next page; `None` when this page was the last.
    pub next: Option<Cursor>,
}

/// What the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Flows stored.
    pub flows: u64,
    /// Bytes in use (the file may be larger: freed pages are reused, not returned).
    pub bytes: u64,
    /// Oldest flow time, ns (0 when empty).
    pub oldest_ns: i64,
}

/// A flow history backend. Async and batched: the relay's writer task hands it batches of
/// flows, its readers ask for pages; nothing on the live path ever waits on it.
#[tonic::async_trait]
pub trait FlowStore: Send + Sync + 'static {
    /// Stores a batch (atomically where the backend can).
    async fn insert(&self, batch: &[StoredFlow]) -> Result<(), StoreError>;
    /// One page of stored responses.
    async fn query(&self, q: &Query) -> Result<Page, StoreError>;
    /// The latest stored flow time per node (where a reconnecting recorder resumes).
    async fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Deletes flows older than `before_ns`; returns how many.
    async fn delete_before(&self, before_ns: i64) -> Result<u64, StoreError>;
    /// Deletes up to `count` of the oldest flows; returns how many.
    async fn delete_oldest(&self, count: u64) -> Result<u64, StoreError>;
    /// What the store holds.
    async fn stats(&self) -> Result<StoreStats, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_api::{
        flow::{CiliumEventType, Endpoint, Ip, Layer4, Tcp, Udp},
        wkt::Timestamp,
    };

    fn flow() -> Flow {
        Flow {
            time: Some(Timestamp {
                seconds: 5,
                nanos: 7,
            }),
            uuid: "u-1".into(),
            verdict: 2,
            drop_reason_desc: 133,
            traffic_direction: 1,
            node_name: "lab/node1".into(),
            event_type: Some(CiliumEventType {
                r#type: 1,
                sub_type: 3,
            }),
            source: Some(Endpoint {
                namespace: "shop".into(),
                pod_name: "web-1".into(),
                identity: 1234,
                ..Default::default()
            }),
            destination: Some(Endpoint {
                namespace: "db".into(),
                pod_name: "pg-0".into(),
                identity: 99,
                ..Default::default()
            }),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.1.2".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 40000,
                    destination_port: 5432,
                    flags: None,
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn extracts_every_indexed_column_from_a_flow() {
        let resp = GetFlowsResponse {
            node_name: "lab/node1".into(),
            time: Some(Timestamp {
                seconds: 5,
                nanos: 7,
            }),
            response_types: Some(ResponseTypes::Flow(flow())),
        };
        let c = columns(&resp).unwrap();
        assert_eq!(
            c,
            FlowColumns {
                time_ns: 5_000_000_007,
                node: "lab/node1".into(),
                uuid: "u-1".into(),
                src_namespace: "shop".into(),
                src_pod: "web-1".into(),
                src_identity: 1234,
                dst_namespace: "db".into(),
                dst_pod: "pg-0".into(),
                dst_identity: 99,
                src_ip: "10.0.0.1".into(),
                dst_ip: "10.0.1.2".into(),
                src_port: 40000,
                dst_port: 5432,
                protocol: "tcp",
                verdict: 2,
                drop_reason: 133,
                direction: 1,
                event_type: 1,
                event_subtype: 3,
            }
        );
    }

    #[test]
    fn falls_back_to_the_flow_for_time_and_node_and_skips_non_flows() {
        let mut f = flow();
        f.l4 = Some(Layer4 {
            protocol: Some(Protocol::Udp(Udp {
                source_port: 1,
                destination_port: 53,
            })),
        });
        f.source = None;
        let resp = GetFlowsResponse {
            node_name: String::new(),
            time: None,
            response_types: Some(ResponseTypes::Flow(f)),
        };
        let c = columns(&resp).unwrap();
        assert_eq!((c.time_ns, c.node.as_str()), (5_000_000_007, "lab/node1"));
        assert_eq!((c.protocol, c.dst_port), ("udp", 53));
        assert_eq!((c.src_namespace.as_str(), c.src_identity), ("", 0));
        let status = GetFlowsResponse {
            response_types: Some(ResponseTypes::NodeStatus(Default::default())),
            ..Default::default()
        };
        assert_eq!(columns(&status), None);
        assert_eq!(columns(&GetFlowsResponse::default()), None);
    }
}
