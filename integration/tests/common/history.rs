//! Shared pieces of the relay history tests: times, flows as `(time, uuid)`, GetFlows
//! through a lab relay, and the relay's `/metrics`.

use super::OneNode;
use lumen_api::{
    observer::{get_flows_response::ResponseTypes, GetFlowsRequest, GetFlowsResponse},
    wkt::Timestamp,
};
use lumen_integration::{browser, hubble, Relay};
use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Wall-clock time, ns since the epoch (the clock flow times are in).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A protobuf timestamp for `ns`.
pub fn ts(ns: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: ns / 1_000_000_000,
        nanos: (ns % 1_000_000_000) as i32,
    })
}

/// The response's time, ns (0 without one).
pub fn time_ns(r: &GetFlowsResponse) -> i64 {
    r.time
        .as_ref()
        .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64)
        .unwrap_or(0)
}

/// `(time, uuid)` of the flows among `rs`.
pub fn flows(rs: &[GetFlowsResponse]) -> Vec<(i64, String)> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => Some((time_ns(r), f.uuid.clone())),
            _ => None,
        })
        .collect()
}

/// GetFlows through the relay until the stream ends (10 s at most); panics with the
/// relay's log on error.
pub fn via_relay(t: &OneNode, relay: &Relay, req: GetFlowsRequest) -> Vec<GetFlowsResponse> {
    t.rt.block_on(async {
        let mut c = hubble::connect_tcp(&relay.addr().to_string()).await?;
        hubble::collect(&mut c, req, usize::MAX, Duration::from_secs(10)).await
    })
    .unwrap_or_else(|e| panic!("GetFlows via the relay: {e:#}\n{}", relay.log_tail(30)))
}

/// A free TCP address on loopback for the relay's `prometheus.listenAddress`.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The relay's `/metrics` at `addr`.
pub fn scrape(addr: SocketAddr) -> String {
    browser::get(&format!("http://{addr}/metrics"))
        .unwrap_or_else(|e| panic!("scraping the relay at {addr}: {e:#}"))
        .text()
}

/// The value of the unlabelled sample `name` in an exposition.
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
