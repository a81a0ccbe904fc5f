//! Real traffic between two pods on one node becomes the flows Hubble users expect.

mod common;

use common::*;
use lumen_api::flow::{
    layer4::Protocol, FlowFilter, TraceObservationPoint as Obs, TrafficDirection as Dir, Verdict,
};
use lumen_integration::{AgentOptions, MonitorAggregation};

fn obs(f: &lumen_api::flow::Flow) -> Obs {
    Obs::try_from(f.trace_observation_point).unwrap()
}
fn dir(f: &lumen_api::flow::Flow) -> Dir {
    Dir::try_from(f.traffic_direction).unwrap()
}
fn reply(f: &lumen_api::flow::Flow) -> Option<bool> {
    f.is_reply.as_ref().map(|b| b.value)
}

#[test]
fn tcp_udp_and_icmp_between_pods_become_flows() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new("flows", AgentOptions::default());
    let (client_ip, server_ip) = (lab.client.ip().to_string(), lab.server.ip().to_string());

    // TCP: handshake, data, close.
    let out = lab.client_traffic(&[
        "tcp",
        "--to",
        &format!("{server_ip}:{TCP_PORT}"),
        "--bytes",
        "2000",
    ]);
    assert_eq!(out["ok"], true, "{out}");
    let tcp = FlowFilter {
        protocol: vec!["tcp".into()],
        ..pod_filter("demo/client", "demo/server")
    };
    // The agent drains the ring every 10 ms: wait for the close as well, not only the SYNs.
    let flows = lab.wait_for_flows(
        tcp,
        "the client's TCP SYN at both veths and its FIN",
        |fs| {
            fs.iter().filter(|f| f.summary == "TCP Flags: SYN").count() >= 2
                && fs.iter().any(|f| f.summary.contains("FIN"))
        },
    );
    let syn = flows
        .iter()
        .find(|f| f.summary == "TCP Flags: SYN" && obs(f) == Obs::FromEndpoint)
        .expect("SYN leaving the client");
    let ip = syn.ip.as_ref().unwrap();
    assert_eq!(
        (ip.source.as_str(), ip.destination.as_str()),
        (client_ip.as_str(), server_ip.as_str())
    );
    let src = syn.source.as_ref().unwrap();
    let dst = syn.destination.as_ref().unwrap();
    assert_eq!(
        (src.namespace.as_str(), src.pod_name.as_str()),
        ("demo", "client")
    );
    assert_eq!(
        (dst.namespace.as_str(), dst.pod_name.as_str()),
        ("demo", "server")
    );
    assert!(
        src.labels.contains(&"k8s:app=client".to_string()),
        "{:?}",
        src.labels
    );
    assert!(
        dst.labels.contains(&"k8s:tier=backend".to_string()),
        "{:?}",
        dst.labels
    );
    assert!(src.identity >= 256 && dst.identity >= 256 && src.identity != dst.identity);
    assert!(src.id > 0, "the client is a local endpoint");
    assert_eq!(l4_ports(syn).unwrap().1, TCP_PORT as u32);
    let Some(Protocol::Tcp(t)) = syn.l4.as_ref().unwrap().protocol.as_ref() else {
        panic!("not TCP")
    };
    assert!(t.flags.as_ref().unwrap().syn && !t.flags.as_ref().unwrap().ack);
    assert_eq!(reply(syn), Some(false));
    assert_eq!(dir(syn), Dir::Egress);
    assert_eq!(syn.verdict, Verdict::Forwarded as i32);
    assert_eq!(syn.node_name, "lab/node1");
    let to_server = flows
        .iter()
        .find(|f| f.summary == "TCP Flags: SYN" && obs(f) == Obs::ToEndpoint)
        .expect("SYN entering the server");
    assert_eq!(dir(to_server), Dir::Ingress);
    assert!(
        flows.iter().any(|f| f.summary.contains("FIN")),
        "the close is traced"
    );

    // The SYN-ACK is a reply, egress from the server's point of view at its veth.
    let back = FlowFilter {
        protocol: vec!["tcp".into()],
        ..pod_filter("demo/server", "demo/client")
    };
    let replies = lab.wait_for_flows(back, "the SYN-ACK", |fs| {
        fs.iter().any(|f| f.summary == "TCP Flags: SYN, ACK")
    });
    let synack = replies
        .iter()
        .find(|f| f.summary == "TCP Flags: SYN, ACK" && obs(f) == Obs::FromEndpoint)
        .unwrap();
    assert_eq!(reply(synack), Some(true));
    assert_eq!(
        dir(synack),
        Dir::Ingress,
        "a reply leaving the server belongs to an ingress connection"
    );
    assert_eq!(l4_ports(synack).unwrap().0, TCP_PORT as u32);

    // UDP both ways.
    let out = lab.client_traffic(&[
        "udp",
        "--to",
        &format!("{server_ip}:{UDP_PORT}"),
        "--count",
        "3",
    ]);
    assert_eq!(out["ok"], true, "{out}");
    let udp = FlowFilter {
        protocol: vec!["udp".into()],
        ..Default::default()
    };
    let flows = lab.wait_for_flows(udp, "UDP request and reply", |fs| {
        fs.iter().any(|f| reply(f) == Some(true)) && fs.iter().any(|f| reply(f) == Some(false))
    });
    let req = flows
        .iter()
        .find(|f| reply(f) == Some(false) && obs(f) == Obs::FromEndpoint)
        .unwrap();
    assert_eq!(req.summary, "UDP");
    assert_eq!(l4_ports(req).unwrap().1, UDP_PORT as u32);
    assert_eq!(req.source.as_ref().unwrap().pod_name, "client");

    // ICMP echo.
    let out = lab.client_traffic(&["icmp", "--to", &server_ip, "--count", "2"]);
    assert_eq!(out["ok"], true, "{out}");
    let icmp = FlowFilter {
        protocol: vec!["icmp".into()],
        ..Default::default()
    };
    let flows = lab.wait_for_flows(icmp, "ICMP echo request and reply", |fs| {
        fs.iter().any(|f| f.summary == "ICMPv4 EchoRequest")
            && fs.iter().any(|f| f.summary == "ICMPv4 EchoReply")
    });
    let echo_reply = flows
        .iter()
        .find(|f| f.summary == "ICMPv4 EchoReply")
        .unwrap();
    assert_eq!(reply(echo_reply), Some(true));
    assert_eq!(echo_reply.source.as_ref().unwrap().pod_name, "server");
}

#[test]
fn with_no_aggregation_every_packet_is_a_trace_flow() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new(
        "noagg",
        AgentOptions {
            monitor_aggregation: MonitorAggregation::None,
            ..Default::default()
        },
    );
    let server_ip = lab.server.ip().to_string();
    const N: u64 = 200;
    let out = lab.client_traffic(&[
        "udp",
        "--to",
        &format!("{server_ip}:{UDP_PORT}"),
        "--count",
        &N.to_string(),
        "--no-reply",
        "--rate",
        "2000",
    ]);
    assert_eq!(out["ok"], true, "{out}");
    let f = FlowFilter {
        protocol: vec!["udp".into()],
        ..pod_filter("demo/client", "demo/server")
    };
    let flows = lab.wait_for_flows(f, "one flow per datagram at each veth", |fs| {
        fs.len() as u64 >= 2 * N
    });
    let leaving = flows.iter().filter(|f| obs(f) == Obs::FromEndpoint).count() as u64;
    let entering = flows.iter().filter(|f| obs(f) == Obs::ToEndpoint).count() as u64;
    assert_eq!(
        (leaving, entering),
        (N, N),
        "one trace flow per packet sent, at each observation point"
    );
}

#[test]
fn medium_aggregation_reports_connections_not_every_packet() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new("medagg", AgentOptions::default());
    let server_ip = lab.server.ip().to_string();
    let out = lab.client_traffic(&[
        "udp",
        "--to",
        &format!("{server_ip}:{UDP_PORT}"),
        "--count",
        "100",
        "--no-reply",
    ]);
    assert_eq!(out["ok"], true, "{out}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let flows = lab.flows_matching(FlowFilter {
        protocol: vec!["udp".into()],
        ..pod_filter("demo/client", "demo/server")
    });
    let leaving = flows.iter().filter(|f| obs(f) == Obs::FromEndpoint).count();
    assert_eq!(
        leaving, 1,
        "one report for the new connection within the 5 s interval, not 100"
    );
}
