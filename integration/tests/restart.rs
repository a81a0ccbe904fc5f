//! Restarting the agent never touches the traffic: programs and maps stay pinned and keep
//! working, the new agent adopts them (conntrack included), and flows resume.

mod common;

use common::*;
use lumen_api::flow::{FlowFilter, TraceReason};
use lumen_integration::AgentOptions;
use std::time::Duration;

#[test]
fn agent_restart_during_a_long_transfer() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new(
        "restart",
        AgentOptions {
            monitor_interval: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let server_ip = lab.server.ip().to_string();
    let mut iperf_server = lab
        .server
        .spawn("iperf3", ["-s", "-1", "--forceflush"])
        .unwrap();
    iperf_server
        .wait_for_output("listening", Duration::from_secs(5))
        .unwrap();
    let transfer = lab
        .client
        .spawn("iperf3", ["-c", &server_ip, "-t", "6", "-i", "1", "-J"])
        .unwrap();
    let iperf = FlowFilter {
        destination_port: vec!["5201".into()],
        ..Default::default()
    };
    lab.wait_for_flows(iperf.clone(), "the transfer's first flows", |f| {
        !f.is_empty()
    });

    std::thread::sleep(Duration::from_secs(1));
    lab.node.stop_agent().unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the datapath runs with no agent at all
    lab.node.restart_agent().unwrap();
    let log = std::fs::read_to_string(lab.node.agent_log()).unwrap();
    let second_start = log.rfind("datapath loaded").unwrap();
    let after = &log[second_start..];
    assert!(
        after.contains("adopted=true"),
        "the restarted agent reuses the pinned maps:\n{after}"
    );
    assert!(
        after.contains("outcome=Adopted"),
        "and the pinned links:\n{after}"
    );
    assert!(
        !after.contains("outcome=Attached"),
        "nothing is attached afresh:\n{after}"
    );

    // Flows resume for the connection that was running, and conntrack still knows it.
    let resumed = lab.wait_for_flows(
        iperf,
        "flows of the running transfer after the restart",
        |f| !f.is_empty(),
    );
    assert!(
        resumed
            .iter()
            .all(|f| f.trace_reason != TraceReason::New as i32),
        "conntrack survived: the running connection is not new to the restarted agent: {:?}",
        resumed
            .iter()
            .map(|f| (f.trace_reason, &f.summary))
            .collect::<Vec<_>>()
    );

    // The transfer was never interrupted: it completes, with data in every interval.
    let (status, report) = transfer.wait(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "iperf3 exited with {status}: {report}");
    let json: serde_json::Value =
        serde_json::from_str(&report).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {report}"));
    assert!(
        json.get("error").is_none(),
        "iperf3 failed: {}",
        json["error"]
    );
    let intervals = json["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 5, "{intervals:?}");
    for i in intervals {
        let bytes = i["sum"]["bytes"].as_u64().unwrap();
        assert!(bytes > 0, "an interval without data: {i}");
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    eprintln!("transfer across the restart: {:.1} Gbit/s", bps / 1e9);

    // New traffic after the restart is traced with pod metadata.
    let out = lab.client_traffic(&[
        "udp",
        "--to",
        &format!("{server_ip}:{UDP_PORT}"),
        "--count",
        "1",
    ]);
    assert_eq!(out["ok"], true);
    let udp = FlowFilter {
        protocol: vec!["udp".into()],
        ..pod_filter("demo/client", "demo/server")
    };
    lab.wait_for_flows(udp, "a new connection's flows after the restart", |f| {
        !f.is_empty()
    });
}
