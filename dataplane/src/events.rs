//! What the flow ring holds: compact events that carry everything a `flow.Flow` says, with
//! endpoint metadata shared (`Arc`) between the flows of the same pods. A full protobuf
//! `Flow` is built from one only when a client asks for it ([`crate::flow_proto`]), which
//! keeps a ring of 65,535 flows small and ingestion cheap.

use crate::{decode::Record, ipcache::EndpointInfo};
use std::sync::Arc;

/// A flow: one decoded record, enriched.
#[derive(Debug, Clone)]
pub struct FlowEvent {
    /// Wall-clock time of the packet, ns since the Unix epoch.
    pub time_ns: i64,
    /// Random 128-bit id (printed as a UUID).
    pub uuid: u128,
    /// The record as the kernel wrote it.
    pub record: Record,
    /// Who sent it.
    pub source: Arc<EndpointInfo>,
    /// Who it is for.
    pub destination: Arc<EndpointInfo>,
    /// Id of the endpoint the event belongs to (the pod whose veth it was seen on), or 0.
    pub endpoint_id: u32,
    /// Name of the interface it was seen on.
    pub ifname: Option<Arc<str>>,
    /// `<cluster>/<node>`.
    pub node_name: Arc<str>,
    /// For policy verdicts and policy drops: the policies that decided.
    pub policies: Option<Arc<Vec<lumen_api::flow::Policy>>>,
    /// The service the source address stands for (a frontend, or the backend of a
    /// translated reply).
    pub source_service: Option<Arc<lumen_api::flow::Service>>,
    /// The service the destination address stands for (a frontend, or the backend a
    /// frontend was translated to).
    pub destination_service: Option<Arc<lumen_api::flow::Service>>,
    /// An L7 record (the DNS proxy's request/response flows): the flow is `Type: L7`,
    /// event type 129 (access log), with this `l7`.
    pub l7: Option<Arc<lumen_api::flow::Layer7>>,
}

/// Where lost events were lost (`flow.LostEventSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostSource {
    /// Undecodable records (unknown kind, future version, truncated).
    Unknown,
    /// The kernel ring buffer was full.
    KernelRing,
    /// A reader was overtaken in the flow ring.
    FlowRing,
}

/// Events that were lost.
#[derive(Debug, Clone)]
pub struct LostInfo {
    /// Where.
    pub source: LostSource,
    /// How many.
    pub count: u64,
    /// On which CPU, when known.
    pub cpu: Option<i32>,
    /// When the loss was noticed, ns since the epoch.
    pub time_ns: i64,
    /// `<cluster>/<node>`.
    pub node_name: Arc<str>,
}

/// One entry of the flow ring.
#[derive(Debug, Clone)]
pub enum Event {
    /// A flow.
    Flow(FlowEvent),
    /// A loss report.
    Lost(LostInfo),
}

impl Event {
    /// Its time, ns since the epoch.
    pub fn time_ns(&self) -> i64 {
        match self {
            Event::Flow(f) => f.time_ns,
            Event::Lost(l) => l.time_ns,
        }
    }
}
