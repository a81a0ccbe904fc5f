//! Flow history in the relay: a node whose Hubble buffer is tiny (63 flows), the relay
//! recording into SQLite under the lab directory. Flows the node has overwritten are still
//! answered by time range and filter; they survive a relay restart, flows of the restart's
//! downtime are backfilled from the node, and a follow request from the past continues
//! live with no duplicate and in time order.

mod common;

use common::{history::*, *};
use lumen_api::{
    flow::FlowFilter,
    observer::{get_flows_response::ResponseTypes, GetFlowsRequest},
};
use lumen_integration::{hubble, AgentOptions, Relay, RelayOptions};
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

fn to_server() -> FlowFilter {
    FlowFilter {
        destination_pod: vec!["demo/server".into()],
        ..Default::default()
    }
}

fn range(since: i64, until: i64) -> GetFlowsRequest {
    GetFlowsRequest {
        since: ts(since),
        until: ts(until),
        whitelist: vec![to_server()],
        ..Default::default()
    }
}

/// Polls the relay until `req` returns flows, the same twice in a row (all recorded).
fn wait_stored(t: &OneNode, relay: &Relay, req: &GetFlowsRequest) -> Vec<(i64, String)> {
    let end = Instant::now() + Duration::from_secs(15);
    let mut last = vec![];
    loop {
        let got = flows(&via_relay(t, relay, req.clone()));
        if !got.is_empty() && got == last {
            return got;
        }
        last = got;
        assert!(
            Instant::now() < end,
            "nothing stored for {req:?}; relay log:\n{}",
            relay.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn relay_history_outlives_the_node_buffer_and_a_relay_restart() {
    if !privileged() {
        return;
    }
    let t = OneNode::new(
        "history",
        AgentOptions {
            event_buffer_capacity: 63,
            monitor_interval: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let metrics_addr = free_addr();
    let options = RelayOptions {
        history: Some(t.lab.dir().join("relay-history").join("flows.db")),
        extra_yaml: format!("prometheus: {{enabled: true, listenAddress: \"{metrics_addr}\"}}\n"),
        ..Default::default()
    };
    let mut relay = Relay::start(&t.lab, options.clone()).expect("relay");

    // A UDP exchange to the server, recorded.
    let since = now_ns();
    assert!(udp_echo_ok(&t.client, t.server.ip()));
    let until = now_ns();
    let stored = wait_stored(&t, &relay, &range(since, until));
    assert!(
        stored.iter().all(|(ts, _)| (since..=until).contains(ts)),
        "{stored:?}"
    );

    // Enough TCP for the node to overwrite it: the node no longer has it...
    for _ in 0..50 {
        assert!(tcp_echo_ok(&t.client, t.server.ip(), 200));
    }
    let on_node = t
        .get_flows(range(since, until))
        .expect("GetFlows on the node");
    assert!(on_node.is_empty(), "the node still holds {on_node:?}");
    // ...the relay does, by time range and filter, and only what matches.
    let answered = via_relay(&t, &relay, range(since, until));
    assert_eq!(flows(&answered), stored);
    for r in &answered {
        if let Some(ResponseTypes::Flow(f)) = &r.response_types {
            let dst = f.destination.as_ref().unwrap();
            assert_eq!(
                (dst.namespace.as_str(), dst.pod_name.as_str()),
                ("demo", "server")
            );
        }
    }
    let other = via_relay(
        &t,
        &relay,
        GetFlowsRequest {
            whitelist: vec![FlowFilter {
                destination_pod: vec!["elsewhere/".into()],
                ..Default::default()
            }],
            ..range(since, until)
        },
    );
    assert!(flows(&other).is_empty(), "{other:?}");

    // The relay's metrics count what it stored, and its node.
    let text = scrape(metrics_addr);
    assert!(
        text.contains("lumen_relay_nodes{state=\"NODE_CONNECTED\"} 1"),
        "{text}"
    );
    let stored_total =
        sample(&text, "lumen_relay_history_flows_stored_total").unwrap_or_else(|| panic!("{text}"));
    assert!(stored_total as usize >= stored.len(), "{text}");

    // Restart the relay; traffic while it is down is backfilled from the node.
    relay.stop().unwrap();
    let down_since = now_ns();
    assert!(udp_echo_ok(&t.client, t.server.ip()));
    let down_until = now_ns();
    let relay = Relay::start(&t.lab, options).expect("relay restarted");
    assert_eq!(
        flows(&via_relay(&t, &relay, range(since, until))),
        stored,
        "history survives the restart"
    );
    wait_stored(&t, &relay, &range(down_since, down_until));

    // Follow from the first exchange on: history, then live, no duplicate, in order.
    let mut c =
        t.rt.block_on(hubble::connect_tcp(&relay.addr().to_string()))
            .unwrap();
    let mut stream =
        t.rt.block_on(c.get_flows(GetFlowsRequest {
            since: ts(since),
            follow: true,
            whitelist: vec![to_server()],
            ..Default::default()
        }))
        .expect("GetFlows follow")
        .into_inner();
    let live_since = now_ns();
    let mut seen = vec![];
    let end = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|(ts, _)| *ts > live_since) {
        assert!(
            Instant::now() < end,
            "no live flow after the history; got {} flows; relay log:\n{}",
            seen.len(),
            relay.log_tail(30)
        );
        assert!(udp_echo_ok(&t.client, t.server.ip()));
        let batch_end = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(Some(r))) =
            t.rt.block_on(async { tokio::time::timeout_at(batch_end, stream.message()).await })
        {
            seen.extend(flows(&[r]));
        }
    }
    assert_eq!(seen[..stored.len()], stored[..], "history comes first");
    let unique: HashSet<&String> = seen.iter().map(|(_, u)| u).collect();
    assert_eq!(unique.len(), seen.len(), "no flow twice: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "in time order across the history/live boundary: {seen:?}"
    );
}
