//! FlowMatcher: a table of fixture flows × filters covering every FlowFilter field, the
//! AND/OR semantics, the blacklist, and the errors of invalid filters.

use lumen_api::flow::{
    flow_filter, layer4, layer7, CiliumEventType, Dns, DropReason, Endpoint, EventTypeFilter, Flow,
    FlowFilter, Http, HttpHeader, IcmPv4, Ip, IpTraceId, IpVersion, Layer4, Layer7,
    NetworkInterface, Service, Tcp, TcpFlags, TraceContext, TraceParent, TrafficDirection, Udp,
    Verdict, Workload,
};
use lumen_filter::{FilterError, FlowMatcher};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn ip4(src: &str, dst: &str) -> Option<Ip> {
    Some(Ip {
        source: src.into(),
        destination: dst.into(),
        ip_version: IpVersion::IPv4 as i32,
        ..Default::default()
    })
}

fn tcp(sport: u32, dport: u32, flags: TcpFlags) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(layer4::Protocol::Tcp(Tcp {
            source_port: sport,
            destination_port: dport,
            flags: Some(flags),
        })),
    })
}

const SYN: TcpFlags = TcpFlags {
    fin: false,
    syn: true,
    rst: false,
    psh: false,
    ack: false,
    urg: false,
    ece: false,
    cwr: false,
    ns: false,
};

fn event(t: i32, sub: i32) -> Option<CiliumEventType> {
    Some(CiliumEventType {
        r#type: t,
        sub_type: sub,
    })
}

fn frontend() -> Endpoint {
    Endpoint {
        id: 3002,
        identity: 31002,
        cluster_name: "talos".into(),
        namespace: "shop".into(),
        labels: s(&["k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"]),
        pod_name: "frontend-7d9f8b-x2kq9".into(),
        workloads: vec![Workload {
            name: "frontend".into(),
            kind: "Deployment".into(),
        }],
    }
}

fn cart() -> Endpoint {
    Endpoint {
        id: 877,
        identity: 31877,
        cluster_name: "talos".into(),
        namespace: "shop".into(),
        labels: s(&["k8s:app=cart", "k8s:tier=backend"]),
        pod_name: "cart-5c6d7-8hj2k".into(),
        workloads: vec![Workload {
            name: "cart".into(),
            kind: "Deployment".into(),
        }],
    }
}

/// 0 syn, 1 drop, 2 dns, 3 http (IPv6), 4 world, 5 icmp, 6 empty.
fn flows() -> Vec<Flow> {
    let syn = Flow {
        uuid: "uuid-syn".into(),
        verdict: Verdict::Forwarded as i32,
        ip: ip4("10.100.1.17", "10.100.3.9"),
        l4: tcp(43120, 8080, SYN),
        source: Some(frontend()),
        destination: Some(cart()),
        destination_service: Some(Service {
            name: "cart".into(),
            namespace: "shop".into(),
        }),
        node_name: "talos/node-1".into(),
        node_labels: s(&[
            "kubernetes.io/hostname=node-1",
            "topology.kubernetes.io/zone=a",
        ]),
        event_type: event(4, 0),
        traffic_direction: TrafficDirection::Ingress as i32,
        is_reply: Some(false.into()),
        interface: Some(NetworkInterface {
            index: 5,
            name: "lxc123".into(),
        }),
        trace_context: Some(TraceContext {
            parent: Some(TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            }),
        }),
        ip_trace_id: Some(IpTraceId {
            trace_id: 77,
            ip_option_type: 136,
        }),
        ..Default::default()
    };
    let drop = Flow {
        uuid: "uuid-drop".into(),
        verdict: Verdict::Dropped as i32,
        drop_reason: 133,
        drop_reason_desc: DropReason::PolicyDenied as i32,
        ip: ip4("10.100.1.17", "10.100.4.4"),
        l4: tcp(51522, 5432, SYN),
        source: Some(frontend()),
        destination: Some(Endpoint {
            identity: 40211,
            cluster_name: "talos".into(),
            namespace: "db".into(),
            labels: s(&["k8s:app=postgres"]),
            pod_name: "postgres-0".into(),
            ..Default::default()
        }),
        node_name: "talos/node-2".into(),
        event_type: event(1, 133),
        traffic_direction: TrafficDirection::Egress as i32,
        ..Default::default()
    };
    let dns = Flow {
        verdict: Verdict::Forwarded as i32,
        ip: ip4("10.100.1.17", "10.100.9.9"),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Udp(Udp {
                source_port: 53011,
                destination_port: 53,
            })),
        }),
        source: Some(Endpoint {
            workloads: vec![],
            cluster_name: String::new(),
            ..frontend()
        }),
        destination: Some(Endpoint {
            identity: 102,
            namespace: "kube-system".into(),
            labels: s(&["k8s:k8s-app=kube-dns"]),
            pod_name: "coredns-6f6b-7xk2p".into(),
            ..Default::default()
        }),
        destination_service: Some(Service {
            name: "kube-dns".into(),
            namespace: "kube-system".into(),
        }),
        node_name: "node-3".into(),
        l7: Some(Layer7 {
            r#type: 1,
            latency_ns: 0,
            record: Some(layer7::Record::Dns(Dns {
                query: "api.example.com.".into(),
                ..Default::default()
            })),
        }),
        event_type: event(129, 0),
        is_reply: Some(false.into()),
        ..Default::default()
    };
    let http = Flow {
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "fd00::1".into(),
            destination: "fd00::2".into(),
            ip_version: IpVersion::IPv6 as i32,
            ..Default::default()
        }),
        l4: tcp(
            40000,
            8080,
            TcpFlags {
                psh: true,
                ack: true,
                ..Default::default()
            },
        ),
        source: Some(Endpoint {
            workloads: vec![],
            cluster_name: String::new(),
            ..frontend()
        }),
        destination: Some(Endpoint {
            workloads: vec![],
            cluster_name: String::new(),
            ..cart()
        }),
        destination_service: Some(Service {
            name: "cart".into(),
            namespace: "shop".into(),
        }),
        node_name: "lab/node-1".into(),
        l7: Some(Layer7 {
            r#type: 2,
            latency_ns: 1000,
            record: Some(layer7::Record::Http(Http {
                code: 503,
                method: "GET".into(),
                url: "http://cart.shop:8080/api/v1/items?id=3".into(),
                protocol: "HTTP/1.1".into(),
                headers: vec![
                    HttpHeader {
                        key: "x-request-id".into(),
                        value: "abc".into(),
                    },
                    HttpHeader {
                        key: "user-agent".into(),
                        value: "curl".into(),
                    },
                ],
            })),
        }),
        event_type: event(129, 0),
        is_reply: Some(true.into()),
        ..Default::default()
    };
    let world = Flow {
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source_xlated: "192.168.1.10".into(),
            encrypted: true,
            ..ip4("10.100.1.17", "203.0.113.7").unwrap()
        }),
        l4: tcp(38211, 443, SYN),
        source: Some(Endpoint {
            workloads: vec![],
            cluster_name: String::new(),
            ..frontend()
        }),
        destination: Some(Endpoint {
            identity: 2,
            labels: s(&["reserved:world"]),
            ..Default::default()
        }),
        destination_names: s(&["api.example.com"]),
        node_name: "talos/node-1".into(),
        event_type: event(4, 11),
        traffic_direction: TrafficDirection::Egress as i32,
        is_reply: Some(false.into()),
        ..Default::default()
    };
    let icmp = Flow {
        verdict: Verdict::Forwarded as i32,
        ip: ip4("10.0.0.5", "10.0.0.6"),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })),
        }),
        source: Some(Endpoint {
            namespace: "default".into(),
            pod_name: "busybox-1".into(),
            labels: s(&["k8s:app=busybox"]),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![syn, drop, dns, http, world, icmp, Flow::default()]
}

/// `FlowFilter { field: value, .. }`.
macro_rules! ff {
    ($($field:ident : $value:expr),* $(,)?) => {
        FlowFilter { $($field: $value,)* ..Default::default() }
    };
}

fn et(t: i32) -> EventTypeFilter {
    EventTypeFilter {
        r#type: t,
        match_sub_type: false,
        sub_type: 0,
    }
}

fn et_sub(t: i32, sub: i32) -> EventTypeFilter {
    EventTypeFilter {
        r#type: t,
        match_sub_type: true,
        sub_type: sub,
    }
}

fn matching(white: &[FlowFilter], black: &[FlowFilter], flows: &[Flow]) -> Vec<usize> {
    let m = FlowMatcher::compile(white, black).expect("filters compile");
    flows
        .iter()
        .enumerate()
        .filter(|(_, f)| m.matches(f))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn every_field() {
    let flows = flows();
    let v = |x: Verdict| x as i32;
    let cases: Vec<(&str, FlowFilter, Vec<usize>)> = vec![
        ("uuid", ff!(uuid: s(&["uuid-syn", "nope"])), vec![0]),
        (
            "source_ip exact",
            ff!(source_ip: s(&["10.100.1.17"])),
            vec![0, 1, 2, 4],
        ),
        (
            "source_ip cidr",
            ff!(source_ip: s(&["10.0.0.0/8"])),
            vec![0, 1, 2, 4, 5],
        ),
        (
            "source_ip v6 cidr",
            ff!(source_ip: s(&["fd00::/64"])),
            vec![3],
        ),
        (
            "source_ip v6 exact, other spelling",
            ff!(source_ip: s(&["fd00:0::0:1"])),
            vec![3],
        ),
        (
            "source_ip host bits ignored",
            ff!(source_ip: s(&["10.100.1.1/24"])),
            vec![0, 1, 2, 4],
        ),
        (
            "destination_ip ORed",
            ff!(destination_ip: s(&["203.0.113.0/24", "10.100.3.9"])),
            vec![0, 4],
        ),
        (
            "destination_ip /0",
            ff!(destination_ip: s(&["0.0.0.0/0"])),
            vec![0, 1, 2, 4, 5],
        ),
        (
            "source_ip_xlated",
            ff!(source_ip_xlated: s(&["192.168.1.10"])),
            vec![4],
        ),
        (
            "source_pod prefix",
            ff!(source_pod: s(&["shop/frontend-"])),
            vec![0, 1, 2, 3, 4],
        ),
        (
            "destination_pod namespace",
            ff!(destination_pod: s(&["shop/"])),
            vec![0, 3],
        ),
        (
            "destination_pod other ns",
            ff!(destination_pod: s(&["db/postgres"])),
            vec![1],
        ),
        (
            "pod without namespace is default/",
            ff!(destination_pod: s(&["postgres"])),
            vec![],
        ),
        (
            "pod without namespace matches default",
            ff!(source_pod: s(&["busybox"])),
            vec![5],
        ),
        (
            "pod prefix is a prefix",
            ff!(source_pod: s(&["shop/rontend"])),
            vec![],
        ),
        (
            "destination_service",
            ff!(destination_service: s(&["shop/cart"])),
            vec![0, 3],
        ),
        (
            "destination_service ns",
            ff!(destination_service: s(&["kube-system/"])),
            vec![2],
        ),
        (
            "source_service unset",
            ff!(source_service: s(&["shop/"])),
            vec![],
        ),
        (
            "destination_fqdn wildcard",
            ff!(destination_fqdn: s(&["*.example.com"])),
            vec![4],
        ),
        (
            "destination_fqdn case, dot",
            ff!(destination_fqdn: s(&["API.Example.COM."])),
            vec![4],
        ),
        (
            "destination_fqdn exact only",
            ff!(destination_fqdn: s(&["example.com"])),
            vec![],
        ),
        ("source_fqdn unset", ff!(source_fqdn: s(&["*"])), vec![]),
        (
            "source_label bare key",
            ff!(source_label: s(&["app=frontend"])),
            vec![0, 1, 2, 3, 4],
        ),
        (
            "source_label k8s source",
            ff!(source_label: s(&["k8s:app=busybox"])),
            vec![5],
        ),
        (
            "source_label wrong source",
            ff!(source_label: s(&["container:app=busybox"])),
            vec![],
        ),
        (
            "destination_label in",
            ff!(destination_label: s(&["k8s:app in (cart, postgres)"])),
            vec![0, 1, 3],
        ),
        (
            "destination_label reserved",
            ff!(destination_label: s(&["reserved:world"])),
            vec![4],
        ),
        (
            "destination_label !key",
            ff!(destination_label: s(&["!app"])),
            vec![2, 4, 5, 6],
        ),
        (
            "destination_label AND inside selector",
            ff!(destination_label: s(&["app=cart,tier=backend"])),
            vec![0, 3],
        ),
        (
            "destination_label selectors ORed",
            ff!(destination_label: s(&["app=postgres", "k8s-app=kube-dns"])),
            vec![1, 2],
        ),
        (
            "source_label namespace label",
            ff!(source_label: s(&["io.kubernetes.pod.namespace=shop"])),
            vec![0, 1, 2, 3, 4],
        ),
        (
            "node_labels",
            ff!(node_labels: s(&["topology.kubernetes.io/zone=a"])),
            vec![0],
        ),
        (
            "node_labels notin",
            ff!(node_labels: s(&["topology.kubernetes.io/zone notin (a)"])),
            vec![1, 2, 3, 4, 5, 6],
        ),
        (
            "source_workload name",
            ff!(source_workload: vec![Workload { name: "frontend".into(), kind: String::new() }]),
            vec![0, 1],
        ),
        (
            "destination_workload kind",
            ff!(destination_workload: vec![Workload { name: String::new(), kind: "Deployment".into() }]),
            vec![0],
        ),
        (
            "source_workload name and kind",
            ff!(source_workload: vec![Workload { name: "frontend".into(), kind: "StatefulSet".into() }]),
            vec![],
        ),
        (
            "source_cluster_name",
            ff!(source_cluster_name: s(&["talos"])),
            vec![0, 1],
        ),
        (
            "destination_cluster_name",
            ff!(destination_cluster_name: s(&["talos", "x"])),
            vec![0, 1],
        ),
        (
            "node_name cluster/glob",
            ff!(node_name: s(&["talos/node-*"])),
            vec![0, 1, 4],
        ),
        (
            "node_name any cluster",
            ff!(node_name: s(&["node-1"])),
            vec![0, 3, 4],
        ),
        (
            "node_name default cluster",
            ff!(node_name: s(&["default/node-3"])),
            vec![2],
        ),
        (
            "node_name cluster only",
            ff!(node_name: s(&["lab/"])),
            vec![3],
        ),
        (
            "traffic_direction",
            ff!(traffic_direction: vec![TrafficDirection::Egress as i32]),
            vec![1, 4],
        ),
        ("verdict", ff!(verdict: vec![v(Verdict::Dropped)]), vec![1]),
        (
            "verdict ORed",
            ff!(verdict: vec![v(Verdict::Dropped), v(Verdict::Forwarded)]),
            vec![0, 1, 2, 3, 4, 5],
        ),
        (
            "drop_reason_desc",
            ff!(drop_reason_desc: vec![DropReason::PolicyDenied as i32]),
            vec![1],
        ),
        ("event_type l7", ff!(event_type: vec![et(129)]), vec![2, 3]),
        ("event_type trace", ff!(event_type: vec![et(4)]), vec![0, 4]),
        (
            "event_type trace sub type",
            ff!(event_type: vec![et_sub(4, 0)]),
            vec![0],
        ),
        (
            "event_type any type, sub type",
            ff!(event_type: vec![et_sub(0, 133)]),
            vec![1],
        ),
        (
            "event_type ORed",
            ff!(event_type: vec![et(1), et_sub(4, 11)]),
            vec![1, 4],
        ),
        (
            "protocol tcp (case)",
            ff!(protocol: s(&["TCP"])),
            vec![0, 1, 3, 4],
        ),
        (
            "protocol udp or icmp",
            ff!(protocol: s(&["udp", "icmp"])),
            vec![2, 5],
        ),
        ("protocol icmpv4", ff!(protocol: s(&["ICMPv4"])), vec![5]),
        ("protocol icmpv6", ff!(protocol: s(&["icmpv6"])), vec![]),
        ("protocol http", ff!(protocol: s(&["http"])), vec![3]),
        ("protocol dns", ff!(protocol: s(&["Dns"])), vec![2]),
        ("protocol kafka", ff!(protocol: s(&["kafka"])), vec![]),
        ("source_port", ff!(source_port: s(&["43120"])), vec![0]),
        (
            "destination_port ORed",
            ff!(destination_port: s(&["53", "443"])),
            vec![2, 4],
        ),
        (
            "destination_port tcp",
            ff!(destination_port: s(&["8080"])),
            vec![0, 3],
        ),
        ("reply true", ff!(reply: vec![true]), vec![3]),
        (
            "reply false (unset on a drop counts)",
            ff!(reply: vec![false]),
            vec![0, 1, 2, 4],
        ),
        (
            "reply either (unset matches nothing)",
            ff!(reply: vec![true, false]),
            vec![0, 1, 2, 3, 4],
        ),
        (
            "source_identity",
            ff!(source_identity: vec![31002]),
            vec![0, 1, 2, 3, 4],
        ),
        (
            "destination_identity",
            ff!(destination_identity: vec![2, 40211]),
            vec![1, 4],
        ),
        ("tcp_flags SYN", ff!(tcp_flags: vec![SYN]), vec![0, 1, 4]),
        (
            "tcp_flags all of a set",
            ff!(tcp_flags: vec![TcpFlags { ack: true, psh: true, ..Default::default() }]),
            vec![3],
        ),
        (
            "tcp_flags set not on flow",
            ff!(tcp_flags: vec![TcpFlags { syn: true, ack: true, ..Default::default() }]),
            vec![],
        ),
        (
            "tcp_flags sets ORed",
            ff!(tcp_flags: vec![
                TcpFlags { fin: true, ..Default::default() },
                TcpFlags { psh: true, ..Default::default() },
            ]),
            vec![3],
        ),
        (
            "ip_version v6",
            ff!(ip_version: vec![IpVersion::IPv6 as i32]),
            vec![3],
        ),
        (
            "ip_version v4",
            ff!(ip_version: vec![IpVersion::IPv4 as i32]),
            vec![0, 1, 2, 4, 5],
        ),
        (
            "ip_version none",
            ff!(ip_version: vec![IpVersion::IpNotUsed as i32]),
            vec![6],
        ),
        (
            "interface index",
            ff!(interface: vec![NetworkInterface { index: 5, name: String::new() }]),
            vec![0],
        ),
        (
            "interface name",
            ff!(interface: vec![NetworkInterface { index: 0, name: "lxc123".into() }]),
            vec![0],
        ),
        (
            "interface index and name",
            ff!(interface: vec![NetworkInterface { index: 5, name: "eth0".into() }]),
            vec![],
        ),
        ("encrypted", ff!(encrypted: vec![true]), vec![4]),
        (
            "not encrypted",
            ff!(encrypted: vec![false]),
            vec![0, 1, 2, 3, 5, 6],
        ),
        (
            "dns_query anchored",
            ff!(dns_query: s(&[r"^api\.example\.com\.?$"])),
            vec![2],
        ),
        ("dns_query search", ff!(dns_query: s(&["example"])), vec![2]),
        ("dns_query no match", ff!(dns_query: s(&["^www"])), vec![]),
        (
            "http_status_code prefix",
            ff!(http_status_code: s(&["5+"])),
            vec![3],
        ),
        (
            "http_status_code 2-digit prefix",
            ff!(http_status_code: s(&["50+"])),
            vec![3],
        ),
        (
            "http_status_code exact",
            ff!(http_status_code: s(&["200", "503"])),
            vec![3],
        ),
        (
            "http_status_code other",
            ff!(http_status_code: s(&["4+"])),
            vec![],
        ),
        (
            "http_status_code with l7 event type",
            ff!(http_status_code: s(&["503"]), event_type: vec![et(129)]),
            vec![3],
        ),
        ("http_method", ff!(http_method: s(&["get"])), vec![3]),
        ("http_method other", ff!(http_method: s(&["POST"])), vec![]),
        (
            "http_path",
            ff!(http_path: s(&["^/api/v1/items$"])),
            vec![3],
        ),
        (
            "http_path is the path only",
            ff!(http_path: s(&["cart.shop"])),
            vec![],
        ),
        (
            "http_url",
            ff!(http_url: s(&["cart\\.shop:8080/.*id=3"])),
            vec![3],
        ),
        (
            "http_header",
            ff!(http_header: vec![HttpHeader { key: "x-request-id".into(), value: "abc".into() }]),
            vec![3],
        ),
        (
            "http_header value differs",
            ff!(http_header: vec![HttpHeader { key: "x-request-id".into(), value: "zzz".into() }]),
            vec![],
        ),
        (
            "trace_id",
            ff!(trace_id: s(&["4bf92f3577b34da6a3ce929d0e0e4736"])),
            vec![0],
        ),
        ("ip_trace_id", ff!(ip_trace_id: vec![77, 78]), vec![0]),
        ("empty filter matches all", ff!(), vec![0, 1, 2, 3, 4, 5, 6]),
        // AND across fields.
        (
            "AND pod + verdict",
            ff!(source_pod: s(&["shop/frontend-"]), verdict: vec![v(Verdict::Dropped)]),
            vec![1],
        ),
        (
            "AND protocol + port + reply",
            ff!(protocol: s(&["tcp"]), destination_port: s(&["8080"]), reply: vec![false]),
            vec![0],
        ),
        (
            "AND with a field no flow has",
            ff!(source_ip: s(&["10.0.0.0/8"]), http_method: s(&["GET"])),
            vec![],
        ),
    ];
    let mut failures = Vec::new();
    for (name, filter, want) in &cases {
        let got = matching(std::slice::from_ref(filter), &[], &flows);
        if &got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn whitelist_or_blacklist_minus() {
    let flows = flows();
    let all: Vec<usize> = (0..flows.len()).collect();
    // Empty whitelist and blacklist: everything.
    assert_eq!(matching(&[], &[], &flows), all);
    // Whitelist filters are ORed.
    assert_eq!(
        matching(
            &[
                ff!(verdict: vec![Verdict::Dropped as i32]),
                ff!(protocol: s(&["udp"])),
            ],
            &[],
            &flows
        ),
        vec![1, 2]
    );
    // The CLI's --namespace: source_pod X/ OR destination_pod X/.
    assert_eq!(
        matching(
            &[
                ff!(source_pod: s(&["kube-system/"])),
                ff!(destination_pod: s(&["kube-system/"])),
            ],
            &[],
            &flows
        ),
        vec![2]
    );
    // Blacklist alone removes from everything.
    assert_eq!(
        matching(&[], &[ff!(protocol: s(&["tcp"]))], &flows),
        vec![2, 5, 6]
    );
    // Whitelist minus blacklist (blacklist filters ORed).
    assert_eq!(
        matching(
            &[ff!(source_pod: s(&["shop/frontend-"]))],
            &[
                ff!(verdict: vec![Verdict::Dropped as i32]),
                ff!(destination_port: s(&["53"])),
            ],
            &flows
        ),
        vec![0, 3, 4]
    );
    // An empty blacklist filter removes everything.
    assert_eq!(matching(&[], &[ff!()], &flows), Vec::<usize>::new());
    // A blacklist filter's fields are ANDed too.
    assert_eq!(
        matching(
            &[],
            &[ff!(protocol: s(&["tcp"]), destination_port: s(&["8080"]))],
            &flows
        ),
        vec![1, 2, 4, 5, 6]
    );
    assert!(FlowMatcher::compile(&[], &[]).unwrap().is_match_all());
    assert!(!FlowMatcher::compile(&[ff!()], &[]).unwrap().is_match_all());
}

fn error_of(filter: FlowFilter) -> FilterError {
    FlowMatcher::compile(&[filter], &[]).expect_err("filter must be refused")
}

#[test]
fn invalid_filters_name_their_field() {
    let cel = FlowFilter {
        experimental: Some(flow_filter::Experimental {
            cel_expression: s(&["_flow.verdict == 1"]),
        }),
        ..Default::default()
    };
    let cases: Vec<(FlowFilter, &str, &str)> = vec![
        (ff!(source_ip: s(&["10.0.0/8"])), "source_ip", "10.0.0/8"),
        (
            ff!(source_ip: s(&["10.0.0.1", "nope"])),
            "source_ip",
            "nope",
        ),
        (
            ff!(destination_ip: s(&["10.0.0.0/33"])),
            "destination_ip",
            "10.0.0.0/33",
        ),
        (
            ff!(destination_ip: s(&["fd00::/129"])),
            "destination_ip",
            "fd00::/129",
        ),
        (
            ff!(destination_ip: s(&["10.0.0.0/"])),
            "destination_ip",
            "10.0.0.0/",
        ),
        (
            ff!(source_ip_xlated: s(&["host"])),
            "source_ip_xlated",
            "host",
        ),
        (ff!(source_pod: s(&[""])), "source_pod", ""),
        (ff!(destination_pod: s(&["/"])), "destination_pod", "/"),
        (
            ff!(destination_service: s(&[""])),
            "destination_service",
            "",
        ),
        (
            ff!(source_label: s(&["app in (a"])),
            "source_label",
            "app in (a",
        ),
        (
            ff!(destination_label: s(&["=web"])),
            "destination_label",
            "=web",
        ),
        (ff!(node_labels: s(&["zone a"])), "node_labels", "zone a"),
        (
            ff!(source_label: s(&["app notin ()"])),
            "source_label",
            "app notin ()",
        ),
        (
            ff!(source_fqdn: s(&["exa mple.com"])),
            "source_fqdn",
            "exa mple.com",
        ),
        (ff!(destination_fqdn: s(&[""])), "destination_fqdn", ""),
        (ff!(node_name: s(&["a/b/c"])), "node_name", "a/b/c"),
        (
            ff!(source_cluster_name: s(&[""])),
            "source_cluster_name",
            "",
        ),
        (
            ff!(destination_cluster_name: s(&["x", ""])),
            "destination_cluster_name",
            "",
        ),
        (ff!(source_port: s(&["http"])), "source_port", "http"),
        (
            ff!(destination_port: s(&["65536"])),
            "destination_port",
            "65536",
        ),
        (ff!(destination_port: s(&["-1"])), "destination_port", "-1"),
        (
            ff!(destination_port: s(&["+80"])),
            "destination_port",
            "+80",
        ),
        (ff!(destination_port: s(&[""])), "destination_port", ""),
        (ff!(protocol: s(&["icmp4"])), "protocol", "icmp4"),
        (ff!(dns_query: s(&["("])), "dns_query", "("),
        (ff!(http_path: s(&["["])), "http_path", "["),
        (ff!(http_url: s(&["(?P<x"])), "http_url", "(?P<x"),
        (
            ff!(http_status_code: s(&["600"])),
            "http_status_code",
            "600",
        ),
        (ff!(http_status_code: s(&["5"])), "http_status_code", "5"),
        (
            ff!(http_method: s(&["GET"]), event_type: vec![et(4)]),
            "http_method",
            "GET",
        ),
        (
            ff!(http_status_code: s(&["200"]), event_type: vec![et(1)]),
            "http_status_code",
            "200",
        ),
        (cel, "experimental.cel_expression", "_flow.verdict == 1"),
    ];
    for (filter, field, value) in cases {
        let err = error_of(filter);
        assert_eq!(err.field(), field, "{err}");
        assert_eq!(err.value(), value, "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn error_messages() {
    let msg = |f: FlowFilter| error_of(f).to_string();
    assert_eq!(
        msg(ff!(source_ip: s(&["10.0.0/8"]))),
        r#"invalid source_ip "10.0.0/8": not an IP address or CIDR"#
    );
    assert_eq!(
        msg(ff!(destination_port: s(&["http"]))),
        r#"invalid destination_port "http": not a port number (0-65535)"#
    );
    assert_eq!(
        msg(ff!(dns_query: s(&["("]))),
        r#"invalid dns_query "(": bad regular expression: unclosed group"#
    );
    let cel = msg(FlowFilter {
        experimental: Some(flow_filter::Experimental {
            cel_expression: s(&["true"]),
        }),
        ..Default::default()
    });
    assert_eq!(
        cel,
        r#"experimental.cel_expression "true" is not supported by this server"#
    );
    assert!(msg(ff!(source_label: s(&["app in (a"])))
        .starts_with(r#"invalid source_label "app in (a": bad label selector: "#));
    // An empty experimental block is fine.
    let ok = FlowFilter {
        experimental: Some(flow_filter::Experimental::default()),
        ..Default::default()
    };
    assert!(FlowMatcher::compile(&[ok], &[]).is_ok());
}

#[test]
fn blacklist_errors_too() {
    let err = FlowMatcher::compile(&[], &[ff!(source_port: s(&["x"]))]).unwrap_err();
    assert_eq!(err.field(), "source_port");
}

#[test]
fn matcher_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<FlowMatcher>();
}
