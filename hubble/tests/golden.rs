//! Golden tests: the flows of the output contract (docs: shared/contracts/hubble-cli-output.md)
//! printed in every format must equal the upstream CLI's captured output byte for byte (in
//! the UTC time zone).

use hubble_cli::format::{
    compact_line, dict_record, json_line, render_table, table_header, table_row, Output,
    PrintOptions, Printer,
};
use lumen_api::{
    flow::{
        layer4::Protocol, layer7::Record, CiliumEventType, Dns, Endpoint, Flow, FlowType, Ip,
        IpVersion, Layer4, Layer7, Policy, Tcp, TcpFlags, TrafficDirection, Udp, Verdict, Workload,
    },
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    wkt::Timestamp,
};
use pbjson_types::BoolValue;

fn utc() {
    // Once, before any test formats a time (they all call this first).
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("TZ", "UTC"));
}

/// 2026-11-27T09:00:00Z
const BASE: i64 = 1_795_770_000;

fn at(ms: i32) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: BASE,
        nanos: ms * 1_000_000,
    })
}

fn frontend() -> Endpoint {
    Endpoint {
        id: 3002,
        identity: 31002,
        cluster_name: "talos".into(),
        namespace: "shop".into(),
        labels: vec![
            "k8s:app=frontend".into(),
            "k8s:io.kubernetes.pod.namespace=shop".into(),
        ],
        pod_name: "frontend-7d9f8b-x2kq9".into(),
        workloads: vec![Workload {
            name: "frontend".into(),
            kind: "Deployment".into(),
        }],
    }
}

fn pod(ns: &str, name: &str, identity: u32) -> Endpoint {
    Endpoint {
        identity,
        namespace: ns.into(),
        pod_name: name.into(),
        ..Default::default()
    }
}

fn postgres() -> Endpoint {
    Endpoint {
        id: 211,
        identity: 40211,
        cluster_name: "talos".into(),
        namespace: "db".into(),
        labels: vec![
            "k8s:app=postgres".into(),
            "k8s:io.kubernetes.pod.namespace=db".into(),
        ],
        pod_name: "postgres-0".into(),
        workloads: vec![],
    }
}

fn tcp(sport: u32, dport: u32, syn: bool) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(Protocol::Tcp(Tcp {
            source_port: sport,
            destination_port: dport,
            flags: Some(TcpFlags {
                syn,
                ..Default::default()
            }),
        })),
    })
}

fn udp(sport: u32, dport: u32) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(Protocol::Udp(Udp {
            source_port: sport,
            destination_port: dport,
        })),
    })
}

fn ip(src: &str, dst: &str) -> Option<Ip> {
    Some(Ip {
        source: src.into(),
        destination: dst.into(),
        ip_version: IpVersion::IPv4 as i32,
        ..Default::default()
    })
}

fn ev(ty: i32, sub: i32) -> Option<CiliumEventType> {
    Some(CiliumEventType {
        r#type: ty,
        sub_type: sub,
    })
}

fn reply(v: bool) -> Option<BoolValue> {
    Some(BoolValue { value: v })
}

fn policy(name: &str) -> Policy {
    Policy {
        name: name.into(),
        namespace: "shop".into(),
        labels: vec![format!("k8s:io.cilium.k8s.policy.name={name}")],
        revision: 0,
        kind: "CiliumNetworkPolicy".into(),
    }
}

fn syn_to_cart(ms: i32, verdict: Verdict) -> Flow {
    Flow {
        time: at(ms),
        verdict: verdict as i32,
        ip: ip("10.100.1.17", "10.100.1.23"),
        l4: tcp(43120, 8080, true),
        source: Some(frontend()),
        destination: Some(pod("shop", "cart-5c6d7-8hj2k", 31877)),
        r#type: FlowType::L3L4 as i32,
        node_name: "talos/node-1".into(),
        // Upstream reads the observation point from the event's sub-type (0: to-endpoint).
        event_type: ev(4, 0),
        trace_observation_point: if verdict == Verdict::Forwarded {
            5
        } else {
            101
        },
        traffic_direction: TrafficDirection::Egress as i32,
        is_reply: reply(false),
        summary: "TCP Flags: SYN".into(),
        ..Default::default()
    }
}

/// The policy-verdict denial of the contract's JSON example.
fn policy_denial() -> Flow {
    Flow {
        time: Some(Timestamp {
            seconds: BASE,
            nanos: 223_456_789,
        }),
        verdict: Verdict::Dropped as i32,
        drop_reason: 133,
        ip: ip("10.100.1.17", "10.100.3.9"),
        l4: tcp(51522, 5432, true),
        source: Some(frontend()),
        destination: Some(postgres()),
        r#type: FlowType::L3L4 as i32,
        node_name: "talos/node-1".into(),
        event_type: Some(CiliumEventType {
            r#type: 5,
            sub_type: 0,
        }),
        traffic_direction: TrafficDirection::Egress as i32,
        drop_reason_desc: 133,
        is_reply: reply(false),
        egress_denied_by: vec![policy("default-deny")],
        ..Default::default()
    }
}

fn drop_event() -> Flow {
    Flow {
        event_type: ev(1, 133),
        egress_denied_by: vec![],
        summary: "TCP Flags: SYN".into(),
        ..policy_denial()
    }
}

fn dns(ms: i32, response: bool) -> Flow {
    let (src, dst, sport, dport, sip, dip) = if response {
        (
            pod("kube-system", "coredns-6f6b-7xk2p", 102),
            Endpoint {
                id: 3002,
                ..frontend()
            },
            53,
            53011,
            "10.100.0.5",
            "10.100.1.17",
        )
    } else {
        (
            frontend(),
            pod("kube-system", "coredns-6f6b-7xk2p", 102),
            53011,
            53,
            "10.100.1.17",
            "10.100.0.5",
        )
    };
    Flow {
        time: at(ms),
        verdict: Verdict::Forwarded as i32,
        ip: ip(sip, dip),
        l4: udp(sport, dport),
        source: Some(src),
        destination: Some(dst),
        r#type: FlowType::L7 as i32,
        node_name: "talos/node-1".into(),
        l7: Some(Layer7 {
            r#type: if response { 2 } else { 1 },
            latency_ns: 0,
            record: Some(Record::Dns(Dns {
                query: "api.example.com.".into(),
                ips: if response {
                    vec!["203.0.113.7".into()]
                } else {
                    vec![]
                },
                ttl: if response { 30 } else { 0 },
                qtypes: vec!["A".into()],
                ..Default::default()
            })),
        }),
        event_type: ev(129, 0),
        is_reply: if response { reply(true) } else { None },
        summary: if response {
            "DNS Answer \"203.0.113.7\" TTL: 30 (Proxy api.example.com. A)".into()
        } else {
            "DNS Query api.example.com. A".into()
        },
        ..Default::default()
    }
}

fn to_world(ms: i32) -> Flow {
    Flow {
        time: at(ms),
        verdict: Verdict::Forwarded as i32,
        ip: ip("10.100.1.17", "203.0.113.7"),
        l4: tcp(38211, 443, true),
        source: Some(frontend()),
        destination: Some(Endpoint {
            identity: 16_777_217,
            labels: vec!["cidr:203.0.113.7/32".into()],
            ..Default::default()
        }),
        r#type: FlowType::L3L4 as i32,
        node_name: "talos/node-1".into(),
        destination_names: vec!["api.example.com".into()],
        event_type: ev(4, 11),
        trace_observation_point: 11,
        is_reply: reply(false),
        summary: "TCP Flags: SYN".into(),
        ..Default::default()
    }
}

/// The 7 flows of "Observed output", in order.
fn observed() -> Vec<Flow> {
    let mut pv = policy_denial();
    pv.summary = "TCP Flags: SYN".into();
    vec![
        syn_to_cart(100, Verdict::Translated),
        syn_to_cart(123, Verdict::Forwarded),
        pv,
        drop_event(),
        dns(323, false),
        dns(323, true),
        to_world(423),
    ]
}

fn no_summary(mut f: Flow) -> Flow {
    f.summary.clear();
    f
}

fn opts(output: Output) -> PrintOptions {
    PrintOptions {
        output,
        ..Default::default()
    }
}

fn print_all(flows: &[Flow], o: PrintOptions) -> String {
    let mut out = vec![];
    let mut err = vec![];
    {
        let mut p = Printer::new(o, &mut out, &mut err);
        for f in flows {
            p.write(&GetFlowsResponse {
                response_types: Some(ResponseTypes::Flow(f.clone())),
                node_name: f.node_name.clone(),
                time: f.time,
            })
            .unwrap();
        }
        p.finish().unwrap();
    }
    assert!(err.is_empty());
    String::from_utf8(out).unwrap()
}

const COMPACT: &str = "\
Nov 27 09:00:00.100: shop/frontend-7d9f8b-x2kq9:43120 (ID:31002) -> shop/cart-5c6d7-8hj2k:8080 (ID:31877) to-endpoint TRANSLATED (TCP Flags: SYN)
Nov 27 09:00:00.123: shop/frontend-7d9f8b-x2kq9:43120 (ID:31002) -> shop/cart-5c6d7-8hj2k:8080 (ID:31877) to-endpoint FORWARDED (TCP Flags: SYN)
Nov 27 09:00:00.223: shop/frontend-7d9f8b-x2kq9:51522 (ID:31002) -> db/postgres-0:5432 (ID:40211) policy-verdict:none EGRESS DENIED (TCP Flags: SYN)
Nov 27 09:00:00.223: shop/frontend-7d9f8b-x2kq9:51522 (ID:31002) -> db/postgres-0:5432 (ID:40211) Policy denied DROPPED (TCP Flags: SYN)
Nov 27 09:00:00.323: shop/frontend-7d9f8b-x2kq9:53011 (ID:31002) <> kube-system/coredns-6f6b-7xk2p:53 (ID:102) dns-request  FORWARDED (DNS Query api.example.com. A)
Nov 27 09:00:00.323: shop/frontend-7d9f8b-x2kq9:53011 (ID:31002) <- kube-system/coredns-6f6b-7xk2p:53 (ID:102) dns-response  FORWARDED (DNS Answer \"203.0.113.7\" TTL: 30 (Proxy api.example.com. A))
Nov 27 09:00:00.423: shop/frontend-7d9f8b-x2kq9:38211 (ID:31002) -> api.example.com:443 (ID:16777217) to-network FORWARDED (TCP Flags: SYN)
";

const TABLE: &str = "\
TIMESTAMP             SOURCE                              DESTINATION                         TYPE                         VERDICT     SUMMARY
Nov 27 09:00:00.123   shop/frontend-7d9f8b-x2kq9:43120    shop/cart-5c6d7-8hj2k:8080          to-endpoint                  FORWARDED   
Nov 27 09:00:00.223   shop/frontend-7d9f8b-x2kq9:51522    db/postgres-0:5432                  policy-verdict:none EGRESS   DENIED      
Nov 27 09:00:00.323   shop/frontend-7d9f8b-x2kq9:53011    kube-system/coredns-6f6b-7xk2p:53   dns-request                  FORWARDED   
Nov 27 09:00:00.323   kube-system/coredns-6f6b-7xk2p:53   shop/frontend-7d9f8b-x2kq9:53011    dns-response                 FORWARDED   
Nov 27 09:00:00.423   shop/frontend-7d9f8b-x2kq9:38211    api.example.com:443                 to-network                   FORWARDED   
";

const DICT_FIRST: &str = "  TIMESTAMP: Nov 27 09:00:00.123
     SOURCE: shop/frontend-7d9f8b-x2kq9:43120
DESTINATION: shop/cart-5c6d7-8hj2k:8080
       TYPE: to-endpoint
    VERDICT: FORWARDED
    SUMMARY: 
------------
";

const POLICY_NAMES: &str = "\
Nov 27 09:00:00.500: shop/frontend-7d9f8b-x2kq9:51522 (ID:31002) -> db/postgres-0:5432 (ID:40211) policy-verdict:L3-L4 EGRESS ALLOWED BY allow-db (CiliumNetworkPolicy) (TCP Flags: SYN)
Nov 27 09:00:00.600: shop/frontend-7d9f8b-x2kq9:51522 (ID:31002) -> db/postgres-0:5432 (ID:40211) policy-verdict:none EGRESS AUDITED (TCP Flags: SYN)
Nov 27 09:00:00.700: shop/frontend-7d9f8b-x2kq9:51522 (ID:31002) -> db/postgres-0:5432 (ID:40211) policy-verdict:L3-Only INGRESS ALLOWED (TCP Flags: SYN)
";

const JSON: &str = r#"{"flow":{"time":"2026-11-27T09:00:00.223456789Z","verdict":"DROPPED","drop_reason":133,"IP":{"source":"10.100.1.17","destination":"10.100.3.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":51522,"destination_port":5432,"flags":{"SYN":true}}},"source":{"ID":3002,"identity":31002,"cluster_name":"talos","namespace":"shop","labels":["k8s:app=frontend","k8s:io.kubernetes.pod.namespace=shop"],"pod_name":"frontend-7d9f8b-x2kq9","workloads":[{"name":"frontend","kind":"Deployment"}]},"destination":{"ID":211,"identity":40211,"cluster_name":"talos","namespace":"db","labels":["k8s:app=postgres","k8s:io.kubernetes.pod.namespace=db"],"pod_name":"postgres-0"},"Type":"L3_L4","node_name":"talos/node-1","event_type":{"type":5},"traffic_direction":"EGRESS","drop_reason_desc":"POLICY_DENIED","is_reply":false,"egress_denied_by":[{"name":"default-deny","namespace":"shop","labels":["k8s:io.cilium.k8s.policy.name=default-deny"],"kind":"CiliumNetworkPolicy"}]},"node_name":"talos/node-1","time":"2026-11-27T09:00:00.223456789Z"}"#;

#[test]
fn compact_matches_upstream() {
    utc();
    assert_eq!(print_all(&observed(), opts(Output::Compact)), COMPACT);
    // The same, line by line, through the plain function.
    for (f, line) in observed().iter().zip(COMPACT.lines()) {
        assert_eq!(compact_line(f, &opts(Output::Compact)), format!("{line}\n"));
    }
}

fn table_flows() -> Vec<Flow> {
    let o = observed();
    [1, 2, 4, 5, 6]
        .iter()
        .map(|&i| no_summary(o[i].clone()))
        .collect()
}

#[test]
fn table_matches_upstream() {
    utc();
    assert_eq!(print_all(&table_flows(), opts(Output::Table)), TABLE);
    let o = opts(Output::Table);
    let mut rows = vec![table_header(&o)];
    rows.extend(table_flows().iter().map(|f| table_row(f, &o)));
    assert_eq!(render_table(&rows), TABLE);
}

#[test]
fn dict_matches_upstream() {
    utc();
    let out = print_all(&table_flows(), opts(Output::Dict));
    assert!(out.starts_with(DICT_FIRST), "{out}");
    assert_eq!(out.matches("------------\n").count(), 4);
    assert!(!out.ends_with("------------\n"));
    let first = dict_record(&table_flows()[0], &opts(Output::Dict));
    assert_eq!(format!("{first}------------\n"), DICT_FIRST);
}

#[test]
fn print_node_name_and_policy_names() {
    utc();
    let node = PrintOptions {
        node_name: true,
        ..opts(Output::Compact)
    };
    assert_eq!(
        compact_line(&no_summary(observed()[1].clone()), &node),
        "Nov 27 09:00:00.123 [talos/node-1]: shop/frontend-7d9f8b-x2kq9:43120 (ID:31002) -> shop/cart-5c6d7-8hj2k:8080 (ID:31877) to-endpoint FORWARDED ()\n"
    );
    let names = PrintOptions {
        policy_names: true,
        ..opts(Output::Compact)
    };
    assert_eq!(
        compact_line(&policy_denial(), &names),
        "Nov 27 09:00:00.223: shop/frontend-7d9f8b-x2kq9:51522 (ID:31002) -> db/postgres-0:5432 (ID:40211) policy-verdict:none EGRESS DENIED BY default-deny (CiliumNetworkPolicy) ()\n"
    );
    // Without the flag, no policy names.
    assert!(!compact_line(&policy_denial(), &opts(Output::Compact)).contains(" BY "));

    let pv = |ms, verdict: Verdict, matched, dir: TrafficDirection| Flow {
        time: at(ms),
        verdict: verdict as i32,
        drop_reason: 0,
        drop_reason_desc: 0,
        policy_match_type: matched,
        traffic_direction: dir as i32,
        egress_denied_by: vec![],
        summary: "TCP Flags: SYN".into(),
        ..policy_denial()
    };
    let allowed = Flow {
        egress_allowed_by: vec![policy("allow-db")],
        ..pv(500, Verdict::Forwarded, 2, TrafficDirection::Egress)
    };
    let audited = pv(600, Verdict::Audit, 0, TrafficDirection::Egress);
    let ingress = pv(700, Verdict::Forwarded, 1, TrafficDirection::Ingress);
    assert_eq!(print_all(&[allowed, audited, ingress], names), POLICY_NAMES);
}

#[test]
fn json_round_trips_and_matches_the_contract() {
    let resp = GetFlowsResponse {
        response_types: Some(ResponseTypes::Flow(policy_denial())),
        node_name: "talos/node-1".into(),
        time: policy_denial().time,
    };
    let line = json_line(&resp).unwrap();
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    let back: GetFlowsResponse = serde_json::from_str(&line).unwrap();
    assert_eq!(back, resp);
    let got: serde_json::Value = serde_json::from_str(&line).unwrap();
    let want: serde_json::Value = serde_json::from_str(JSON).unwrap();
    assert_eq!(got, want);
    assert_eq!(line.trim_end(), JSON, "same text, same field order");
    // Through the printer, json and jsonpb print the same line for every flow.
    for f in observed() {
        let out = print_all(std::slice::from_ref(&f), opts(Output::Json));
        let back: GetFlowsResponse = serde_json::from_str(&out).unwrap();
        assert_eq!(back.response_types, Some(ResponseTypes::Flow(f)));
    }
}

#[test]
fn colours_on_request_only() {
    utc();
    let c = PrintOptions {
        color: true,
        ..opts(Output::Compact)
    };
    let line = compact_line(&drop_event(), &c);
    assert!(
        line.contains("\x1b[36mshop/frontend-7d9f8b-x2kq9:\x1b[33m51522\x1b[0m\x1b[0m"),
        "{line:?}"
    );
    assert!(line.contains("\x1b[35m(ID:31002)\x1b[0m"));
    assert!(line.contains("\x1b[31mDROPPED\x1b[0m"));
    // Table output never has colours.
    let t = print_all(
        &table_flows(),
        PrintOptions {
            color: true,
            ..opts(Output::Table)
        },
    );
    assert_eq!(t, TABLE);
    assert!(!compact_line(&drop_event(), &opts(Output::Compact)).contains('\x1b'));
}

#[test]
fn missing_fields() {
    utc();
    let f = Flow {
        ip: ip("10.0.0.1", "fd00::1"),
        ..Default::default()
    };
    assert_eq!(
        compact_line(&f, &opts(Output::Compact)),
        "N/A: 10.0.0.1 (unknown) <> fd00::1 (unknown) UNKNOWN VERDICT_UNKNOWN ()\n"
    );
    // IPv6 with a port in brackets; reserved identities by name; services when no pod.
    let f = Flow {
        time: at(5),
        ip: ip("fd00::1", "fd00::2"),
        l4: tcp(40000, 80, true),
        source: Some(Endpoint {
            identity: 1,
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 2,
            ..Default::default()
        }),
        destination_service: Some(lumen_api::flow::Service {
            name: "web".into(),
            namespace: "shop".into(),
        }),
        verdict: Verdict::Dropped as i32,
        event_type: ev(1, 181),
        is_reply: reply(false),
        ..Default::default()
    };
    assert_eq!(
        compact_line(&f, &opts(Output::Compact)),
        "Nov 27 09:00:00.005: [fd00::1]:40000 (host) -> shop/web:80 (world) Policy denied by denylist DROPPED ()\n"
    );
}

#[test]
fn node_status_and_lost_events_go_to_stderr() {
    use lumen_api::{
        flow::{LostEvent, LostEventSource},
        relay::{NodeState, NodeStatusEvent},
    };
    utc();
    let status = |state: NodeState| GetFlowsResponse {
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: state as i32,
            node_names: vec!["lab/node2".into()],
            message: "connection refused".into(),
        })),
        node_name: "relay".into(),
        time: at(900),
    };
    let lost = GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            source: LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: 12,
            cpu: None,
            first: None,
            last: None,
        })),
        node_name: "lab/node1".into(),
        time: at(950),
    };
    for output in [Output::Compact, Output::Dict, Output::Table, Output::Json] {
        let (mut out, mut err) = (vec![], vec![]);
        {
            let mut p = Printer::new(opts(output), &mut out, &mut err);
            p.write(&status(NodeState::NodeConnected)).unwrap();
            p.write(&status(NodeState::NodeUnavailable)).unwrap();
            p.write(&status(NodeState::NodeError)).unwrap();
            p.write(&lost).unwrap();
            p.finish().unwrap();
        }
        let (out, err) = (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        );
        if output == Output::Json {
            assert_eq!(err.lines().count(), 2, "{err}");
            assert!(err.contains("NODE_UNAVAILABLE") && !err.contains("NODE_CONNECTED"));
            assert!(out.contains("\"lost_events\""), "{out}");
        } else {
            assert_eq!(out, "");
            assert_eq!(
                err,
                "Nov 27 09:00:00.900 [relay]: 1 nodes are unavailable: lab/node2\n\
                 Nov 27 09:00:00.900 [relay]: Error \"connection refused\" on 1 nodes: lab/node2\n\
                 Nov 27 09:00:00.950 [lab/node1]: EVENTS LOST: HUBBLE_RING_BUFFER CPU(N/A) 12\n"
            );
        }
    }
}
