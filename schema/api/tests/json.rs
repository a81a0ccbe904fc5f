//! The JSON mapping matches what `hubble observe -o json` prints (Hubble v1.19): original
//! proto field names, enums by name, RFC 3339 timestamps ending in `Z`.

use lumen_api::flow::{layer4, DropReason, FlowType, IpVersion, TrafficDirection, Verdict};
use lumen_api::observer::{get_flows_response::ResponseTypes, GetFlowsResponse};
use lumen_api::wkt::Timestamp;

/// The `-o json` record of the contract `shared/contracts/hubble-cli-output.md`.
const HUBBLE_JSON: &str = r#"{"flow":{"time":"2026-11-27T09:00:00.223456789Z","verdict":"DROPPED","drop_reason":133,"IP":{"source":"10.100.1.17","destination":"10.100.3.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":51522,"destination_port":5432,"flags":{"SYN":true}}},"source":{"ID":3002,"identity":31002,"cluster_name":"talos","namespace":"shop","labels":["k8s:app=frontend","k8s:io.kubernetes.pod.namespace=shop"],"pod_name":"frontend-7d9f8b-x2kq9","workloads":[{"name":"frontend","kind":"Deployment"}]},"destination":{"ID":211,"identity":40211,"cluster_name":"talos","namespace":"db","labels":["k8s:app=postgres","k8s:io.kubernetes.pod.namespace=db"],"pod_name":"postgres-0"},"Type":"L3_L4","node_name":"talos/node-1","event_type":{"type":5},"traffic_direction":"EGRESS","drop_reason_desc":"POLICY_DENIED","is_reply":false,"egress_denied_by":[{"name":"default-deny","namespace":"shop","labels":["k8s:io.cilium.k8s.policy.name=default-deny"],"kind":"CiliumNetworkPolicy"}]},"node_name":"talos/node-1","time":"2026-11-27T09:00:00.223456789Z"}"#;

const CLI_CONTRACT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/contracts/hubble-cli-output.md"
);

/// 2026-11-27T09:00:00.223456789Z
const TIME: Timestamp = Timestamp {
    seconds: 1_795_770_000,
    nanos: 223_456_789,
};

#[test]
fn example_is_the_contract_one() {
    match std::fs::read_to_string(CLI_CONTRACT) {
        Ok(text) => assert!(
            text.lines().any(|l| l.trim() == HUBBLE_JSON),
            "the -o json example in {CLI_CONTRACT} changed; update HUBBLE_JSON"
        ),
        Err(_) => println!("NOTICE: {CLI_CONTRACT} not found; using the embedded example"),
    }
}

#[test]
fn parses_hubble_json() {
    let resp: GetFlowsResponse = serde_json::from_str(HUBBLE_JSON).expect("parse -o json");
    assert_eq!(resp.node_name, "talos/node-1");
    assert_eq!(resp.time, Some(TIME));
    let Some(ResponseTypes::Flow(flow)) = resp.response_types else {
        panic!("not a flow: {:?}", resp.response_types);
    };

    assert_eq!(flow.time, Some(TIME));
    assert_eq!(flow.verdict(), Verdict::Dropped);
    assert_eq!(flow.drop_reason, 133);
    assert_eq!(flow.drop_reason_desc(), DropReason::PolicyDenied);
    assert_eq!(flow.r#type(), FlowType::L3L4);
    assert_eq!(flow.node_name, "talos/node-1");
    assert_eq!(flow.event_type.as_ref().map(|e| e.r#type), Some(5));
    assert_eq!(flow.traffic_direction(), TrafficDirection::Egress);
    assert_eq!(flow.is_reply.map(|b| b.value), Some(false));

    let ip = flow.ip.as_ref().expect("IP");
    assert_eq!(ip.source, "10.100.1.17");
    assert_eq!(ip.destination, "10.100.3.9");
    assert_eq!(ip.ip_version(), IpVersion::IPv4);

    let Some(layer4::Protocol::Tcp(tcp)) = flow.l4.as_ref().and_then(|l4| l4.protocol.clone())
    else {
        panic!("not TCP: {:?}", flow.l4);
    };
    assert_eq!((tcp.source_port, tcp.destination_port), (51522, 5432));
    let flags = tcp.flags.expect("TCP flags");
    assert!(flags.syn && !flags.ack && !flags.fin);

    let src = flow.source.as_ref().expect("source");
    assert_eq!((src.id, src.identity), (3002, 31002));
    assert_eq!(src.namespace, "shop");
    assert_eq!(src.pod_name, "frontend-7d9f8b-x2kq9");
    assert_eq!(
        src.labels,
        ["k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"]
    );
    assert_eq!(src.workloads[0].kind, "Deployment");
    let dst = flow.destination.as_ref().expect("destination");
    assert_eq!((dst.id, dst.identity), (211, 40211));
    assert_eq!(dst.pod_name, "postgres-0");

    assert_eq!(flow.egress_denied_by.len(), 1);
    assert_eq!(flow.egress_denied_by[0].name, "default-deny");
    assert_eq!(flow.egress_denied_by[0].kind, "CiliumNetworkPolicy");
    assert!(flow.summary.is_empty());
}

#[test]
fn serializes_like_hubble() {
    let resp: GetFlowsResponse = serde_json::from_str(HUBBLE_JSON).expect("parse -o json");
    let out = serde_json::to_string(&resp).expect("serialize");
    for key in [
        r#""source_port":51522"#,
        r#""ipVersion":"IPv4""#,
        r#""IP":{"#,
        r#""TCP":{"#,
        r#""SYN":true"#,
        r#""ID":3002"#,
        r#""Type":"L3_L4""#,
        r#""drop_reason_desc":"POLICY_DENIED""#,
        r#""is_reply":false"#,
        r#""time":"2026-11-27T09:00:00.223456789Z""#,
    ] {
        assert!(out.contains(key), "{key} not in {out}");
    }
    // Same document as Hubble's (key order aside).
    let ours: serde_json::Value = serde_json::from_str(&out).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(HUBBLE_JSON).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn wire_round_trip_keeps_the_flow() {
    use prost::Message;
    let resp: GetFlowsResponse = serde_json::from_str(HUBBLE_JSON).expect("parse -o json");
    let bytes = resp.encode_to_vec();
    assert_eq!(GetFlowsResponse::decode(bytes.as_slice()).unwrap(), resp);
}
