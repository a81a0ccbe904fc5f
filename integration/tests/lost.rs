//! A kernel ring buffer too small for the traffic: records are lost, never silently — every
//! lost record is counted per CPU and reported as a LostEvent, and the agent keeps going.

mod common;

use common::*;
use lumen_api::{
    flow::{FlowFilter, LostEventSource},
    observer::ServerStatusRequest,
};
use lumen_integration::{hubble, AgentOptions, MonitorAggregation};
use std::time::Duration;

#[test]
fn a_full_kernel_ring_is_counted_and_reported() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new(
        "lost",
        AgentOptions {
            monitor_aggregation: MonitorAggregation::None,
            events_ring_bytes: Some(4096), // ~30 records: a burst overflows it between drains
            ..Default::default()
        },
    );
    let server_ip = lab.server.ip().to_string();
    let mut c = lab.client();
    let seen_before = lab
        .rt
        .block_on(c.server_status(ServerStatusRequest {}))
        .unwrap()
        .into_inner()
        .seen_flows;
    let out = lab.client_traffic(&[
        "udp-flood",
        "--to",
        &format!("{server_ip}:9"),
        "--size",
        "64",
        "--seconds",
        "1",
    ]);
    let sent = out["sent"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2)); // the lost counters are read every second

    let reports = lab.rt.block_on(hubble::lost_events(&mut c)).unwrap();
    let mut lost = 0;
    let mut cpus = std::collections::BTreeSet::new();
    for l in &reports {
        assert_eq!(l.source, LostEventSource::PerfEventRingBuffer as i32);
        cpus.insert(l.cpu.as_ref().expect("per-CPU count").value);
        lost += l.num_events_lost;
    }
    let seen = lab
        .rt
        .block_on(c.server_status(ServerStatusRequest {}))
        .unwrap()
        .into_inner()
        .seen_flows
        - seen_before;
    eprintln!("{sent} datagrams, {seen} ring entries (flows + loss reports), {lost} records lost on CPUs {cpus:?}");
    assert!(lost > 0, "a 4 KiB ring cannot hold a flood's records");
    // Two records per datagram (leaving the client, entering the server): each one is
    // either a flow or counted as lost. Other traffic (ARP, IPv6 ND and MLD) adds a few dozen.
    let accounted = seen - reports.len() as u64 + lost;
    assert!(
        accounted >= 2 * sent && accounted <= 2 * sent + 200,
        "2×{sent} records, {accounted} accounted for"
    );

    // The agent is still serving and still tracing.
    assert_eq!(
        lab.client_traffic(&[
            "udp",
            "--to",
            &format!("{server_ip}:{UDP_PORT}"),
            "--count",
            "1"
        ])["ok"],
        true
    );
    lab.wait_for_flows(
        FlowFilter {
            destination_port: vec![UDP_PORT.to_string()],
            ..Default::default()
        },
        "flows after the loss",
        |f| !f.is_empty(),
    );
}
