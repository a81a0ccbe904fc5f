//! FlowMask: path validation against the Flow descriptor and pruning.

use lumen_api::flow::{
    layer4, layer7, Dns, Endpoint, Flow, Ip, IpVersion, Layer4, Layer7, Tcp, TcpFlags, Udp, Verdict,
};
use lumen_api::wkt::Timestamp;
use lumen_filter::{FieldMaskError, FlowMask};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn tcp_flow() -> Flow {
    Flow {
        time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123,
        }),
        uuid: "u-1".into(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ip_version: IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 43120,
                destination_port: 8080,
                flags: Some(TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(Endpoint {
            id: 1,
            identity: 31002,
            namespace: "shop".into(),
            labels: s(&["k8s:app=frontend"]),
            pod_name: "frontend-1".into(),
            ..Default::default()
        }),
        destination: Some(Endpoint {
            namespace: "shop".into(),
            pod_name: "cart-1".into(),
            ..Default::default()
        }),
        node_name: "talos/node-1".into(),
        node_labels: s(&["a=b", "c=d"]),
        is_reply: Some(false.into()),
        summary: "TCP Flags: SYN".into(),
        ..Default::default()
    }
}

fn udp_dns_flow() -> Flow {
    Flow {
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Udp(Udp {
                source_port: 5353,
                destination_port: 53,
            })),
        }),
        l7: Some(Layer7 {
            r#type: 1,
            latency_ns: 10,
            record: Some(layer7::Record::Dns(Dns {
                query: "api.example.com.".into(),
                ttl: 30,
                ..Default::default()
            })),
        }),
        ..tcp_flow()
    }
}

fn mask(paths: &[&str]) -> FlowMask {
    FlowMask::compile(&s(paths)).unwrap_or_else(|e| panic!("{paths:?}: {e}"))
}

#[test]
fn keeps_only_source_pod_name() {
    let got = mask(&["source.pod_name"]).apply(&tcp_flow());
    let want = Flow {
        source: Some(Endpoint {
            pod_name: "frontend-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(got, want);
}

#[test]
fn whole_messages_and_scalars() {
    let flow = tcp_flow();
    let got = mask(&[
        "time",
        "IP",
        "verdict",
        "Summary",
        "node_labels",
        "is_reply",
    ])
    .apply(&flow);
    let want = Flow {
        time: flow.time,
        ip: flow.ip.clone(),
        verdict: flow.verdict,
        summary: flow.summary.clone(),
        node_labels: flow.node_labels.clone(),
        is_reply: flow.is_reply,
        ..Default::default()
    };
    assert_eq!(got, want);
}

#[test]
fn nested_oneof() {
    let flow = tcp_flow();
    // The whole TCP member of the l4 oneof.
    let got = mask(&["l4.TCP"]).apply(&flow);
    assert_eq!(got.l4, flow.l4);
    assert_eq!(got.source, None);
    // One field inside it.
    let got = mask(&["l4.TCP.source_port"]).apply(&flow);
    assert_eq!(
        got.l4,
        Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 43120,
                ..Default::default()
            })),
        })
    );
    // Another oneof member: the present l4 stays, emptied of the unselected UDP.
    let got = mask(&["l4.TCP"]).apply(&udp_dns_flow());
    assert_eq!(got.l4, Some(Layer4 { protocol: None }));
    // An absent parent stays absent.
    let got = mask(&["l7.dns.query"]).apply(&tcp_flow());
    assert_eq!(got, Flow::default());
    let got = mask(&["l7.dns.query", "l4.UDP"]).apply(&udp_dns_flow());
    assert_eq!(
        got.l7,
        Some(Layer7 {
            record: Some(layer7::Record::Dns(Dns {
                query: "api.example.com.".into(),
                ..Default::default()
            })),
            ..Default::default()
        })
    );
    assert_eq!(got.l4, udp_dns_flow().l4);
}

#[test]
fn shorter_path_wins_and_paths_merge() {
    let flow = tcp_flow();
    let got = mask(&["source.pod_name", "source"]).apply(&flow);
    assert_eq!(got.source, flow.source);
    let got = mask(&["source", "source.pod_name"]).apply(&flow);
    assert_eq!(got.source, flow.source);
    let got = mask(&[
        "source.namespace",
        "source.pod_name",
        "destination.pod_name",
    ])
    .apply(&flow);
    assert_eq!(
        got.source,
        Some(Endpoint {
            namespace: "shop".into(),
            pod_name: "frontend-1".into(),
            ..Default::default()
        })
    );
    assert_eq!(
        got.destination,
        Some(Endpoint {
            pod_name: "cart-1".into(),
            ..Default::default()
        })
    );
    // Well-known types are messages too.
    let got = mask(&["time.seconds"]).apply(&flow);
    assert_eq!(
        got.time,
        Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0
        })
    );
}

#[test]
fn empty_mask_keeps_everything() {
    let m = FlowMask::compile(&[]).unwrap();
    assert!(m.is_keep_all());
    assert_eq!(m.apply(&tcp_flow()), tcp_flow());
    assert!(FlowMask::from_field_mask(None).unwrap().is_keep_all());
    let request_mask = pbjson_types::FieldMask {
        paths: s(&["source.pod_name"]),
    };
    assert_eq!(
        FlowMask::from_field_mask(Some(&request_mask)).unwrap(),
        mask(&["source.pod_name"])
    );
    assert!(!mask(&["time"]).is_keep_all());
}

#[test]
fn invalid_paths_are_named() {
    for (path, check) in [
        ("nope", "unknown"),
        ("source.podname", "unknown"),
        ("ip", "unknown"), // proto names are case-sensitive: the field is `IP`
        ("l4.tcp", "unknown"),
        ("source.labels.x", "traverse"),
        ("verdict.x", "traverse"),
        ("", "empty"),
        ("source..pod_name", "empty"),
        ("source.", "empty"),
    ] {
        let err = FlowMask::compile(&s(&["time", path])).unwrap_err();
        assert_eq!(err.path(), path, "{err}");
        assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
        match (check, &err) {
            ("unknown", FieldMaskError::UnknownField { .. })
            | ("traverse", FieldMaskError::NotTraversable { .. })
            | ("empty", FieldMaskError::EmptySegment { .. }) => {}
            _ => panic!("{path:?}: unexpected {err:?}"),
        }
    }
    let err = FlowMask::compile(&s(&["source.podname"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid field mask path "source.podname": flow.Endpoint has no field "podname""#
    );
}
