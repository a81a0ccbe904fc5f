//! The Observer API against a live agent: follow, number/first/since/until, every filter
//! the lab's flows can answer, blacklists, field masks, bad requests, and the other RPCs.

mod common;

use common::*;
use lumen_api::{
    flow::{FlowFilter, TcpFlags, TrafficDirection, Verdict},
    observer::{
        get_flows_response::ResponseTypes, GetFlowsRequest, GetNamespacesRequest, GetNodesRequest,
        ServerStatusRequest,
    },
    wkt::Timestamp,
};
use lumen_integration::{hubble, traffic_bin, AgentOptions};
use std::time::{Duration, Instant};

fn ts(ns: i64) -> Timestamp {
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}
fn ns_of(t: &Option<Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1_000_000_000 + t.nanos as i64
}

/// A lab with a second client pod (`demo/other`, label other=client) and some traffic.
fn lab_with_traffic() -> (OneNode, lumen_integration::Pod) {
    let lab = OneNode::new(
        "api",
        AgentOptions {
            monitor_aggregation: lumen_integration::MonitorAggregation::None,
            ..Default::default()
        },
    );
    let other = lab
        .node
        .add_pod("demo", "other", &[("app", "other"), ("other", "client")])
        .unwrap();
    let server_ip = lab.server.ip().to_string();
    assert_eq!(
        lab.client_traffic(&["tcp", "--to", &format!("{server_ip}:{TCP_PORT}")])["ok"],
        true
    );
    assert_eq!(
        lab.client_traffic(&[
            "udp",
            "--to",
            &format!("{server_ip}:{UDP_PORT}"),
            "--count",
            "2"
        ])["ok"],
        true
    );
    let out = other
        .exec_ok(
            traffic_bin().unwrap(),
            ["icmp", "--to", &server_ip, "--count", "2"],
        )
        .unwrap();
    assert!(out.contains("\"ok\":true"), "{out}");
    lab.wait_for_flows(
        FlowFilter {
            protocol: vec!["icmp".into()],
            ..Default::default()
        },
        "ICMP from other",
        |f| f.len() >= 4,
    );
    (lab, other)
}

#[test]
fn getflows_selection_and_filters() {
    if !privileged() {
        return;
    }
    let (lab, other) = lab_with_traffic();
    let all = lab.get_flows(GetFlowsRequest::default()).unwrap();
    assert!(
        all.len() > 20,
        "number=0 without follow returns everything: {}",
        all.len()
    );
    assert!(
        all.windows(2)
            .all(|w| ns_of(&w[0].time) <= ns_of(&w[1].time)),
        "oldest first"
    );

    // number: the most recent N, oldest first; first: the oldest N.
    let uuids = |v: &[lumen_api::flow::Flow]| v.iter().map(|f| f.uuid.clone()).collect::<Vec<_>>();
    // Pods keep emitting the odd packet (IPv6 router solicitations): compare against a
    // ring that did not change around the request.
    let (last5, all_now) = (0..10)
        .find_map(|_| {
            let before = lab.get_flows(GetFlowsRequest::default()).unwrap();
            let last5 = lab
                .get_flows(GetFlowsRequest {
                    number: 5,
                    ..Default::default()
                })
                .unwrap();
            let after = lab.get_flows(GetFlowsRequest::default()).unwrap();
            (uuids(&before) == uuids(&after)).then_some((last5, after))
        })
        .expect("the ring stays still for a moment");
    assert_eq!(uuids(&last5), uuids(&all_now[all_now.len() - 5..]));
    let first3 = lab
        .get_flows(GetFlowsRequest {
            number: 3,
            first: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(uuids(&first3), uuids(&all[..3]));

    // since/until select by flow time, inclusively.
    let (a, b) = (ns_of(&all[5].time), ns_of(&all[15].time));
    let window = lab
        .get_flows(GetFlowsRequest {
            since: Some(ts(a)),
            until: Some(ts(b)),
            ..Default::default()
        })
        .unwrap();
    let expected: Vec<_> = all
        .iter()
        .filter(|f| (a..=b).contains(&ns_of(&f.time)))
        .map(|f| f.uuid.clone())
        .collect();
    assert_eq!(uuids(&window), expected);

    let select = |f: FlowFilter| lab.flows_matching(f);
    let check = |name: &str, f: FlowFilter, pred: &dyn Fn(&lumen_api::flow::Flow) -> bool| {
        let got = select(f);
        let want = all_now.iter().filter(|x| pred(x)).count();
        assert!(!got.is_empty(), "{name}: no flows selected");
        assert!(got.iter().all(pred), "{name}: a selected flow does not fit");
        assert!(
            got.len() >= want,
            "{name}: {} selected, {want} expected at least",
            got.len()
        );
    };
    let client_ip = lab.client.ip().to_string();
    let src_ip =
        |f: &lumen_api::flow::Flow| f.ip.as_ref().map(|i| i.source.clone()).unwrap_or_default();
    let dst_pod = |f: &lumen_api::flow::Flow| {
        f.destination
            .as_ref()
            .map(|e| e.pod_name.clone())
            .unwrap_or_default()
    };
    let src_pod = |f: &lumen_api::flow::Flow| {
        f.source
            .as_ref()
            .map(|e| e.pod_name.clone())
            .unwrap_or_default()
    };

    check(
        "source_pod",
        FlowFilter {
            source_pod: vec!["demo/other".into()],
            ..Default::default()
        },
        &|f| src_pod(f) == "other",
    );
    check(
        "source_ip",
        FlowFilter {
            source_ip: vec![client_ip.clone()],
            ..Default::default()
        },
        &|f| src_ip(f) == client_ip,
    );
    check(
        "source_ip CIDR",
        FlowFilter {
            source_ip: vec!["10.100.1.0/24".into()],
            ..Default::default()
        },
        &|f| src_ip(f).starts_with("10.100.1."),
    );
    check(
        "destination_port",
        FlowFilter {
            destination_port: vec![TCP_PORT.to_string()],
            ..Default::default()
        },
        &|f| l4_ports(f).map(|p| p.1) == Some(TCP_PORT as u32),
    );
    check(
        "protocol udp",
        FlowFilter {
            protocol: vec!["UDP".into()],
            ..Default::default()
        },
        &|f| f.summary == "UDP",
    );
    check(
        "verdict",
        FlowFilter {
            verdict: vec![Verdict::Forwarded as i32],
            ..Default::default()
        },
        &|f| f.verdict == Verdict::Forwarded as i32,
    );
    check(
        "label selector",
        FlowFilter {
            source_label: vec!["other=client".into()],
            ..Default::default()
        },
        &|f| src_pod(f) == "other",
    );
    check(
        "k8s: label selector",
        FlowFilter {
            destination_label: vec!["k8s:app in (server)".into()],
            ..Default::default()
        },
        &|f| dst_pod(f) == "server",
    );
    check(
        "namespace (two filters, as the CLI sends it)",
        FlowFilter {
            source_pod: vec!["demo/".into()],
            ..Default::default()
        },
        &|f| f.source.as_ref().is_some_and(|e| e.namespace == "demo"),
    );
    check(
        "tcp_flags",
        FlowFilter {
            tcp_flags: vec![TcpFlags {
                syn: true,
                ack: true,
                ..Default::default()
            }],
            ..Default::default()
        },
        &|f| f.summary == "TCP Flags: SYN, ACK",
    );
    check(
        "traffic_direction",
        FlowFilter {
            traffic_direction: vec![TrafficDirection::Ingress as i32],
            ..Default::default()
        },
        &|f| f.traffic_direction == TrafficDirection::Ingress as i32,
    );

    // Fields ANDed within a filter, filters ORed, blacklist removes.
    let and = select(FlowFilter {
        source_pod: vec!["demo/client".into()],
        protocol: vec!["udp".into()],
        ..Default::default()
    });
    assert!(
        !and.is_empty()
            && and
                .iter()
                .all(|f| src_pod(f) == "client" && f.summary == "UDP")
    );
    let or = lab
        .get_flows(GetFlowsRequest {
            whitelist: vec![
                FlowFilter {
                    protocol: vec!["icmp".into()],
                    ..Default::default()
                },
                FlowFilter {
                    protocol: vec!["udp".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .unwrap();
    assert!(
        or.iter().any(|f| f.summary == "UDP") && or.iter().any(|f| f.summary.starts_with("ICMPv4"))
    );
    assert!(or
        .iter()
        .all(|f| f.summary == "UDP" || f.summary.starts_with("ICMP")));
    let black = lab
        .get_flows(GetFlowsRequest {
            blacklist: vec![FlowFilter {
                source_pod: vec!["demo/client".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    assert!(!black.is_empty() && black.iter().all(|f| src_pod(f) != "client"));

    // A field mask trims each flow.
    let masked = lab
        .get_flows(GetFlowsRequest {
            number: 3,
            field_mask: Some(pbjson_types::FieldMask {
                paths: vec!["source.pod_name".into(), "verdict".into()],
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(masked.len(), 3);
    assert!(masked
        .iter()
        .all(|f| f.ip.is_none() && f.l4.is_none() && f.verdict == Verdict::Forwarded as i32));
    drop(other);
}

#[test]
fn follow_delivers_new_flows_within_a_second() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new("follow", AgentOptions::default());
    let mut client = lab.client();
    let server_ip = lab.server.ip().to_string();
    let req = GetFlowsRequest {
        follow: true,
        whitelist: vec![FlowFilter {
            destination_port: vec!["9999".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut stream = lab.rt.block_on(client.get_flows(req)).unwrap().into_inner();
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    let _ = lab.client_traffic(&[
        "udp",
        "--to",
        &format!("{server_ip}:9999"),
        "--count",
        "1",
        "--no-reply",
    ]);
    let resp = lab
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(1), stream.message()).await })
        .expect("a flow within 1 s");
    let elapsed = sent.elapsed();
    let resp = resp.unwrap().unwrap();
    let Some(ResponseTypes::Flow(f)) = resp.response_types else {
        panic!("not a flow: {resp:?}")
    };
    assert_eq!(l4_ports(&f).unwrap().1, 9999);
    assert_eq!(resp.node_name, "lab/node1");
    eprintln!("follow latency (including the traffic tool's start-up): {elapsed:?}");
}

#[test]
fn bad_requests_are_invalid_argument_naming_the_field() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new("badreq", AgentOptions::default());
    let cases = [
        (
            FlowFilter {
                source_ip: vec!["10.0.0/8".into()],
                ..Default::default()
            },
            "source_ip",
        ),
        (
            FlowFilter {
                destination_label: vec!["app in (a".into()],
                ..Default::default()
            },
            "destination_label",
        ),
        (
            FlowFilter {
                destination_port: vec!["http".into()],
                ..Default::default()
            },
            "destination_port",
        ),
    ];
    for (filter, field) in cases {
        let err = lab
            .get_flows(GetFlowsRequest {
                whitelist: vec![filter],
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let err = lab
        .get_flows(GetFlowsRequest {
            field_mask: Some(pbjson_types::FieldMask {
                paths: vec!["source.no_such_field".into()],
            }),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("no_such_field"), "{}", err.message());
    let err = lab
        .get_flows(GetFlowsRequest {
            since: Some(ts(2_000_000_000_000_000_000)),
            until: Some(ts(1)),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[test]
fn status_nodes_namespaces_and_health() {
    if !privileged() {
        return;
    }
    let (lab, _other) = lab_with_traffic();
    let mut c = lab.client();
    let st = lab
        .rt
        .block_on(c.server_status(ServerStatusRequest {}))
        .unwrap()
        .into_inner();
    assert!(st.num_flows > 0 && st.seen_flows >= st.num_flows);
    assert_eq!(st.max_flows, 65535, "the lab's hubble.eventBufferCapacity");
    assert!(st.flows_rate > 0.0);
    assert!(st.version.starts_with("lumen-"));
    let nodes = lab
        .rt
        .block_on(c.get_nodes(GetNodesRequest {}))
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "lab/node1");
    let ns = lab
        .rt
        .block_on(c.get_namespaces(GetNamespacesRequest {}))
        .unwrap()
        .into_inner()
        .namespaces;
    assert!(
        ns.iter()
            .any(|n| n.namespace == "demo" && n.cluster == "lab"),
        "{ns:?}"
    );

    // grpc.health.v1, which `hubble status` calls first; and the same API over TCP.
    let _fwd = lab.node.forward_tcp("127.0.0.1:0", 4244).unwrap();
    let addr = _fwd.local_addr().to_string();
    let mut tcp = lab.rt.block_on(hubble::connect_tcp(&addr)).unwrap();
    let st2 = lab
        .rt
        .block_on(tcp.server_status(ServerStatusRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(st2.max_flows, 65535);
    let ch = lab
        .rt
        .block_on(
            tonic::transport::Endpoint::try_from(format!("http://{addr}"))
                .unwrap()
                .connect(),
        )
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let h = lab
        .rt
        .block_on(health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
