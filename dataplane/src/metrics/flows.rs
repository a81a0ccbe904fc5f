//! Hubble's flow metrics, counted from the events of each batch as it enters the ring.
//!
//! The per-event work is cheap: each enabled metric turns the event into a small key
//! (numbers, and the addresses of the shared endpoint records when context labels are on),
//! counted in a per-batch table. Label strings are built once per distinct key per batch,
//! when the table is folded into the Prometheus families.

use super::{
    family::{CappedFamily, Labels},
    labels,
    options::{Context, ContextKind, MetricKind, MetricSpec},
};
use crate::{
    decode::Record,
    events::{Event, FlowEvent, LostSource},
};
use lumen_abi::{l4_flags, proto, tcp};
use lumen_api::flow::Verdict;
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use std::{collections::HashMap, sync::Arc};

/// Connections whose volume counters are remembered; beyond it the table starts over.
const VOLUME_CONNECTIONS: usize = 65_536;

/// Names of the TCP flags `hubble_tcp_flags_total` counts, by key.
const TCP_FLAGS: [&str; 4] = ["SYN", "SYN-ACK", "FIN", "RST"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    slot: u8,
    a: u32,
    b: u32,
    src: usize,
    dst: usize,
    src_ip: u128,
    dst_ip: u128,
}

/// A multiply-rotate hasher for the per-batch table: its keys are a few integers hashed
/// once or twice per event, where SipHash's flood resistance buys nothing (the table is
/// cleared every batch) and costs most of the metrics' time.
#[derive(Default)]
struct KeyHasher(u64);

impl KeyHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_ne_bytes(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.add(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.add(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn write_u128(&mut self, v: u128) {
        self.add(v as u64);
        self.add((v >> 64) as u64);
    }
}

type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Debug, Clone, Copy)]
struct Agg {
    n: u64,
    packets: u64,
    /// Index in the batch of an event with this key, for its label values.
    event: usize,
}

struct Handler {
    spec: MetricSpec,
    family: CappedFamily,
    /// For `flow-volume`: the packets family (`family` counts bytes).
    packets: Option<CappedFamily>,
    src_ip: bool,
    dst_ip: bool,
}

/// A connection, the same for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Conn {
    proto: u8,
    lo: ([u8; 16], u16),
    hi: ([u8; 16], u16),
}

/// Counts Hubble's flow metrics and lost events. Owned by the ring-buffer reader (one
/// writer); the families it feeds are read by the metrics server.
pub struct FlowMetrics {
    handlers: Vec<Handler>,
    lost: Family<Labels, Counter>,
    table: KeyMap<Key, Agg>,
    /// Connection → highest (packets, bytes) seen, for `flow-volume` deltas.
    volume: KeyMap<Conn, (u64, u64)>,
}

fn counter_family(
    reg: &mut Registry,
    name: &str,
    help: &str,
    names: Vec<&'static str>,
    limit: usize,
    overflow: &Family<Labels, Counter>,
) -> CappedFamily {
    let family = Family::<Labels, Counter>::default();
    reg.register(name, help, family.clone());
    let over = overflow
        .get_or_create(&vec![("metric", format!("{name}_total"))])
        .clone();
    CappedFamily::new(names, family, limit, over)
}

fn uses_ip(c: &Context) -> bool {
    c.0.contains(&ContextKind::Ip)
}

fn ip_bits(b: &[u8; 16]) -> u128 {
    u128::from_ne_bytes(*b)
}

impl FlowMetrics {
    /// Registers the enabled metrics, each capped at `limit` label sets, and
    /// `hubble_lost_events_total`.
    pub fn new(specs: &[MetricSpec], limit: usize, reg: &mut Registry) -> Self {
        let overflow = Family::<Labels, Counter>::default();
        reg.register(
            "lumen_metrics_overflow",
            "Increments that went to a metric's overflow series (every label _other) because it held hubble.metrics.cardinalityLimit label sets",
            overflow.clone(),
        );
        let lost = Family::<Labels, Counter>::default();
        reg.register("hubble_lost_events", "Number of lost events", lost.clone());
        let mut handlers = vec![];
        for spec in specs {
            let (name, help, mut names): (&str, &str, Vec<&'static str>) = match spec.kind {
                MetricKind::Flow => (
                    "hubble_flows_processed",
                    "Total number of flows processed",
                    vec!["type", "subtype", "verdict"],
                ),
                MetricKind::Drop => (
                    "hubble_drop",
                    "Number of drops",
                    vec!["reason", "protocol"],
                ),
                MetricKind::Policy => (
                    "hubble_policy_verdicts",
                    "Number of policy verdict events",
                    vec!["direction", "match", "action"],
                ),
                MetricKind::Tcp => (
                    "hubble_tcp_flags",
                    "TCP flag occurrences",
                    vec!["flag", "family"],
                ),
                MetricKind::PortDistribution => (
                    "hubble_port_distribution",
                    "Numbers of packets distributed by destination port",
                    vec!["protocol", "port"],
                ),
                MetricKind::FlowVolume => (
                    "lumen_flow_bytes",
                    "Bytes of connections (both directions), from the connection tracker's counters",
                    vec!["protocol"],
                ),
            };
            if !spec.source.is_none() {
                names.push("source");
            }
            if !spec.destination.is_none() {
                names.push("destination");
            }
            let family = counter_family(reg, name, help, names.clone(), limit, &overflow);
            let packets = (spec.kind == MetricKind::FlowVolume).then(|| {
                counter_family(
                    reg,
                    "lumen_flow_packets",
                    "Packets of connections (both directions), from the connection tracker's counters",
                    names,
                    limit,
                    &overflow,
                )
            });
            handlers.push(Handler {
                src_ip: uses_ip(&spec.source),
                dst_ip: uses_ip(&spec.destination),
                spec: spec.clone(),
                family,
                packets,
            });
        }
        FlowMetrics {
            handlers,
            lost,
            table: KeyMap::default(),
            volume: KeyMap::default(),
        }
    }

    /// Counts the events of a batch.
    pub fn observe(&mut self, batch: &[Arc<Event>]) {
        for (i, ev) in batch.iter().enumerate() {
            match &**ev {
                Event::Flow(f) => self.flow(i, f),
                Event::Lost(l) => {
                    let source = match l.source {
                        LostSource::KernelRing => "perf_event_ring_buffer",
                        LostSource::FlowRing => "hubble_ring_buffer",
                        LostSource::Unknown => "unknown",
                    };
                    self.lost
                        .get_or_create(&vec![("source", source.to_string())])
                        .inc_by(l.count);
                }
            }
        }
        self.fold(batch);
    }

    fn flow(&mut self, i: usize, f: &FlowEvent) {
        let pkt = f.record.packet();
        for (slot, h) in self.handlers.iter().enumerate() {
            let (src, dst) = (&f.source, &f.destination);
            let (src_addr, dst_addr) = (&pkt.src_ip, &pkt.dst_ip);
            let mut add = |a: u32, b: u32, n: u64, packets: u64| {
                let key = Key {
                    slot: slot as u8,
                    a,
                    b,
                    src: if h.spec.source.is_none() {
                        0
                    } else {
                        Arc::as_ptr(src) as usize
                    },
                    dst: if h.spec.destination.is_none() {
                        0
                    } else {
                        Arc::as_ptr(dst) as usize
                    },
                    src_ip: if h.src_ip { ip_bits(src_addr) } else { 0 },
                    dst_ip: if h.dst_ip { ip_bits(dst_addr) } else { 0 },
                };
                let e = self.table.entry(key).or_insert(Agg {
                    n: 0,
                    packets: 0,
                    event: i,
                });
                e.n += n;
                e.packets += packets;
            };
            match h.spec.kind {
                MetricKind::Flow => {
                    let point = match &f.record {
                        Record::Trace(t) => t.hdr.obs_point as u32,
                        _ => 0,
                    };
                    add(
                        f.record.header().kind as u32,
                        point << 8 | labels::verdict_of(&f.record) as u32,
                        1,
                        0,
                    );
                }
                MetricKind::Drop => {
                    if let Record::Drop(d) = &f.record {
                        add(d.drop_reason as u32, proto_key(pkt), 1, 0);
                    }
                }
                MetricKind::Policy => {
                    if let Record::PolicyVerdict(p) = &f.record {
                        add(
                            p.policy.direction as u32,
                            (p.policy.match_type as u32) << 8 | p.policy.verdict as u32,
                            1,
                            0,
                        );
                    }
                }
                MetricKind::Tcp => {
                    if labels::verdict_of(&f.record) == Verdict::Forwarded
                        && pkt.l4_proto == proto::TCP
                        && pkt.l4_flags & l4_flags::TCP_FLAGS != 0
                    {
                        let fl = pkt.tcp_flags;
                        let v = pkt.ip_version as u32;
                        if fl & tcp::SYN != 0 {
                            add(u32::from(fl & tcp::ACK != 0), v, 1, 0);
                        }
                        if fl & tcp::FIN != 0 {
                            add(2, v, 1, 0);
                        }
                        if fl & tcp::RST != 0 {
                            add(3, v, 1, 0);
                        }
                    }
                }
                MetricKind::PortDistribution => {
                    let proto = proto_key(pkt);
                    // Only flows known not to be replies: where the connection tracker
                    // cannot tell, the destination port may be a client's ephemeral one.
                    if labels::verdict_of(&f.record) == Verdict::Forwarded
                        && labels::is_request(f)
                        && proto != 0
                    {
                        let port = if pkt.l4_flags & l4_flags::PORTS != 0 {
                            pkt.dst_port
                        } else {
                            0
                        };
                        add(proto, port as u32, 1, 0);
                    }
                }
                MetricKind::FlowVolume => {
                    let Record::Trace(t) = &f.record else {
                        continue;
                    };
                    if pkt.l4_flags & l4_flags::PORTS == 0 {
                        continue;
                    }
                    let (a, b) = ((pkt.src_ip, pkt.src_port), (pkt.dst_ip, pkt.dst_port));
                    let conn = Conn {
                        proto: pkt.l4_proto,
                        lo: a.min(b),
                        hi: a.max(b),
                    };
                    if self.volume.len() >= VOLUME_CONNECTIONS && !self.volume.contains_key(&conn) {
                        self.volume.clear();
                    }
                    let seen = self.volume.entry(conn).or_insert((0, 0));
                    let dp = t.ct_packets.saturating_sub(seen.0);
                    let db = t.ct_bytes.saturating_sub(seen.1);
                    *seen = (seen.0.max(t.ct_packets), seen.1.max(t.ct_bytes));
                    if dp == 0 && db == 0 {
                        continue;
                    }
                    // Whether it is a reply is part of the key: `fold` names the
                    // connection's initiator and responder from it.
                    add(proto_key(pkt), u32::from(labels::is_reply(f)), db, dp);
                }
            }
        }
    }

    /// Folds the batch's table into the families.
    fn fold(&mut self, batch: &[Arc<Event>]) {
        for (key, agg) in self.table.drain() {
            let Event::Flow(f) = &*batch[agg.event] else {
                continue;
            };
            let h = &mut self.handlers[key.slot as usize];
            let pkt = f.record.packet();
            let mut v: Vec<String> = match h.spec.kind {
                MetricKind::Flow => vec![
                    labels::type_name(&f.record).into(),
                    labels::subtype(&f.record).into(),
                    labels::verdict_of(&f.record).as_str_name().into(),
                ],
                MetricKind::Drop => vec![
                    labels::drop_reason(key.a as u16).into(),
                    labels::protocol(pkt).into(),
                ],
                MetricKind::Policy => vec![
                    labels::policy_direction(key.a as u8).into(),
                    labels::match_name((key.b >> 8) as u8).into(),
                    labels::action(labels::verdict_of(&f.record)).into(),
                ],
                MetricKind::Tcp => vec![
                    TCP_FLAGS[key.a as usize].into(),
                    labels::family(key.b as u8).into(),
                ],
                MetricKind::PortDistribution => {
                    vec![labels::protocol(pkt).into(), key.b.to_string()]
                }
                MetricKind::FlowVolume => vec![labels::protocol(pkt).into()],
            };
            // flow-volume keys carry whether the representative event was a reply: its
            // sides are swapped to name initiator and responder.
            let swap = h.spec.kind == MetricKind::FlowVolume && key.b == 1;
            let (src, dst, src_ip, dst_ip) = if swap {
                (&f.destination, &f.source, &pkt.dst_ip, &pkt.src_ip)
            } else {
                (&f.source, &f.destination, &pkt.src_ip, &pkt.dst_ip)
            };
            if !h.spec.source.is_none() {
                v.push(labels::context(&h.spec.source, src, src_ip, pkt.ip_version));
            }
            if !h.spec.destination.is_none() {
                v.push(labels::context(
                    &h.spec.destination,
                    dst,
                    dst_ip,
                    pkt.ip_version,
                ));
            }
            if let Some(p) = &mut h.packets {
                p.inc_by(v.clone(), agg.packets);
            }
            h.family.inc_by(v, agg.n);
        }
    }
}

/// A number per protocol Hubble's metrics name (0: none of them).
fn proto_key(p: &lumen_abi::PacketInfo) -> u32 {
    match labels::protocol(p) {
        "Unknown" => 0,
        _ => p.l4_proto as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode::fixtures::tcp_syn, events::LostInfo, ipcache::EndpointInfo};
    use lumen_abi::{
        direction, drop_reason, hdr_flags, kind, obs, DropRecord, PolicyInfo, PolicyVerdictRecord,
    };

    fn pod(ns: &str, name: &str, identity: u32) -> Arc<EndpointInfo> {
        Arc::new(EndpointInfo {
            identity,
            namespace: ns.into(),
            pod_name: name.into(),
            ..Default::default()
        })
    }

    fn event(record: Record, src: &Arc<EndpointInfo>, dst: &Arc<EndpointInfo>) -> Arc<Event> {
        Arc::new(Event::Flow(FlowEvent {
            time_ns: 0,
            uuid: 0,
            record,
            source: src.clone(),
            destination: dst.clone(),
            endpoint_id: 0,
            ifname: None,
            node_name: "lab/n1".into(),
            policies: None,
            source_service: None,
            destination_service: None,
            l7: None,
        }))
    }

    fn denied() -> PolicyInfo {
        PolicyInfo {
            endpoint_id: 3,
            local_identity: 2,
            remote_identity: 1,
            rule_ref: lumen_abi::RULE_REF_NONE,
            direction: direction::INGRESS,
            match_type: 0,
            verdict: lumen_abi::verdict::DENIED,
            _pad: [0; 5],
        }
    }

    fn drop_rec() -> Record {
        let t = tcp_syn();
        Record::Drop(DropRecord {
            hdr: lumen_abi::RecordHeader {
                kind: kind::DROP,
                obs_point: obs::TO_ENDPOINT,
                ..t.hdr
            },
            pkt: t.pkt,
            policy: denied(),
            drop_reason: drop_reason::POLICY_DENIED,
            _pad: [0; 6],
        })
    }

    fn verdict_rec() -> Record {
        let t = tcp_syn();
        Record::PolicyVerdict(PolicyVerdictRecord {
            hdr: lumen_abi::RecordHeader {
                kind: kind::POLICY_VERDICT,
                ..t.hdr
            },
            pkt: t.pkt,
            policy: denied(),
        })
    }

    fn encode(reg: &Registry) -> Vec<String> {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    fn specs(list: &[&str]) -> Vec<MetricSpec> {
        list.iter()
            .map(|s| MetricSpec::try_from(s.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn hubble_labels_from_drops_verdicts_and_traces() {
        let mut reg = Registry::default();
        let mut m = FlowMetrics::new(
            &specs(&[
                "flow",
                "drop:sourceContext=namespace;destinationContext=pod",
                "policy",
                "tcp",
                "port-distribution",
            ]),
            1000,
            &mut reg,
        );
        let (client, server) = (pod("demo", "client", 31002), pod("demo", "server", 40211));
        let mut syn_ack = tcp_syn();
        syn_ack.pkt.tcp_flags = tcp::SYN | tcp::ACK;
        syn_ack.hdr.flags |= hdr_flags::IS_REPLY;
        // Seen where the connection tracker cannot tell the direction (to an ephemeral port).
        let mut unknown = tcp_syn();
        unknown.pkt.tcp_flags = tcp::ACK;
        unknown.pkt.dst_port = 40001;
        unknown.hdr.flags = 0;
        let batch = vec![
            event(Record::Trace(tcp_syn()), &client, &server),
            event(Record::Trace(unknown), &server, &client),
            event(Record::Trace(syn_ack), &server, &client),
            event(drop_rec(), &client, &server),
            event(drop_rec(), &client, &server),
            event(drop_rec(), &client, &server),
            event(verdict_rec(), &client, &server),
            Arc::new(Event::Lost(LostInfo {
                source: LostSource::KernelRing,
                count: 7,
                cpu: Some(1),
                time_ns: 0,
                node_name: "lab/n1".into(),
            })),
        ];
        m.observe(&batch);
        // A second batch adds to the same series.
        m.observe(&batch[3..4]);
        let out = encode(&reg);
        for want in [
            r#"hubble_flows_processed_total{type="Trace",subtype="from-endpoint",verdict="FORWARDED"} 3"#,
            r#"hubble_flows_processed_total{type="Drop",subtype="",verdict="DROPPED"} 4"#,
            r#"hubble_flows_processed_total{type="PolicyVerdict",subtype="",verdict="DROPPED"} 1"#,
            r#"hubble_drop_total{reason="POLICY_DENIED",protocol="TCP",source="demo",destination="demo/server"} 4"#,
            r#"hubble_policy_verdicts_total{direction="ingress",match="none",action="dropped"} 1"#,
            r#"hubble_tcp_flags_total{flag="SYN",family="IPv4"} 1"#,
            r#"hubble_tcp_flags_total{flag="SYN-ACK",family="IPv4"} 1"#,
            // Replies are not a port's traffic.
            r#"hubble_port_distribution_total{protocol="TCP",port="8080"} 1"#,
            r#"hubble_lost_events_total{source="perf_event_ring_buffer"} 7"#,
        ] {
            assert!(out.iter().any(|l| l == want), "missing {want} in {out:#?}");
        }
        assert_eq!(
            out.iter()
                .filter(|l| l.starts_with("hubble_drop_total"))
                .count(),
            1,
            "{out:#?}"
        );
    }

    #[test]
    fn cardinality_cap_sends_new_pods_to_the_other_series() {
        let mut reg = Registry::default();
        let mut m = FlowMetrics::new(&specs(&["drop:sourceContext=pod"]), 2, &mut reg);
        let server = pod("demo", "server", 2);
        let batch: Vec<_> = (0..5)
            .map(|i| event(drop_rec(), &pod("demo", &format!("c{i}"), 3), &server))
            .collect();
        m.observe(&batch);
        let out = encode(&reg);
        let drops: Vec<_> = out
            .iter()
            .filter(|l| l.starts_with("hubble_drop_total"))
            .collect();
        assert_eq!(drops.len(), 3, "{out:#?}");
        assert!(
            out.iter().any(|l| l
                == r#"hubble_drop_total{reason="_other",protocol="_other",source="_other"} 3"#),
            "{out:#?}"
        );
        assert!(
            out.iter()
                .any(|l| l == r#"lumen_metrics_overflow_total{metric="hubble_drop_total"} 3"#),
            "{out:#?}"
        );
    }

    #[test]
    fn flow_volume_counts_conntrack_deltas_once_per_connection() {
        let mut reg = Registry::default();
        let mut m = FlowMetrics::new(
            &specs(&["flow-volume:sourceContext=pod;destinationContext=pod"]),
            1000,
            &mut reg,
        );
        let (client, server) = (pod("demo", "client", 3), pod("demo", "server", 2));
        let at = |packets: u64, bytes: u64, reply: bool, point: u8| {
            let mut t = tcp_syn();
            t.ct_packets = packets;
            t.ct_bytes = bytes;
            t.hdr.obs_point = point;
            if reply {
                t.hdr.flags |= hdr_flags::IS_REPLY;
                std::mem::swap(&mut t.pkt.src_ip, &mut t.pkt.dst_ip);
                std::mem::swap(&mut t.pkt.src_port, &mut t.pkt.dst_port);
                event(Record::Trace(t), &server, &client)
            } else {
                event(Record::Trace(t), &client, &server)
            }
        };
        m.observe(&[
            at(1, 74, false, obs::FROM_ENDPOINT),
            // The same connection seen at the server's interface: not counted again.
            at(1, 74, false, obs::TO_ENDPOINT),
            at(2, 148, true, obs::FROM_ENDPOINT),
        ]);
        m.observe(&[at(10, 1000, false, obs::FROM_ENDPOINT)]);
        let out = encode(&reg);
        for want in [
            r#"lumen_flow_bytes_total{protocol="TCP",source="demo/client",destination="demo/server"} 1000"#,
            r#"lumen_flow_packets_total{protocol="TCP",source="demo/client",destination="demo/server"} 10"#,
        ] {
            assert!(out.iter().any(|l| l == want), "missing {want} in {out:#?}");
        }
    }
}
