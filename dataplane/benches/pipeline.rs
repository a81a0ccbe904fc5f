//! Agent hot path, per core: ring-buffer record bytes → decoded, enriched event → flow ring
//! (target ≥ 1,000,000 records/s), and the serving side: event → full `flow.Flow` → filter
//! → protobuf bytes.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lumen_abi::*;
use lumen_api::flow::FlowFilter;
use lumen_dataplane::{
    endpoints::LocalEndpoint,
    events::Event,
    flow_proto,
    ipcache::{IpCache, NodeView},
    pipeline::{Clock, Pipeline},
    ring::Ring,
    state::{manifests::parse_objects, ClusterState},
};
use lumen_filter::FlowMatcher;
use prost::Message;
use std::{path::Path, sync::Arc};

const BATCH: usize = 4096;

// The agent binary runs with this allocator too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn record(i: u32) -> Vec<u8> {
    let mut pkt = PacketInfo::zeroed();
    pkt.ethertype = 0x0800;
    pkt.ip_version = ipver::V4;
    pkt.l4_proto = proto::TCP;
    pkt.src_ip[..4].copy_from_slice(&[10, 100, 1, 2 + (i % 2) as u8]);
    pkt.dst_ip[..4].copy_from_slice(&[10, 100, 1, 3 - (i % 2) as u8]);
    pkt.src_port = 40000 + (i % 1000) as u16;
    pkt.dst_port = 8080;
    pkt.tcp_flags = tcp::ACK | tcp::PSH;
    pkt.l4_flags = l4_flags::PORTS | l4_flags::TCP_FLAGS;
    let rec = TraceRecord {
        hdr: RecordHeader {
            kind: kind::TRACE,
            version: TRACE_VERSION,
            obs_point: obs::FROM_ENDPOINT,
            flags: hdr_flags::REPLY_KNOWN,
            ifindex: 7,
            len: core::mem::size_of::<TraceRecord>() as u16,
            _pad0: 0,
            pkt_len: 1500,
            ktime_ns: 1_000_000 + i as u64,
        },
        pkt,
        reason: reason::ESTABLISHED,
        _pad: [0; 7],
        ct_packets: i as u64,
        ct_bytes: i as u64 * 1500,
    };
    // SAFETY: repr(C) ABI record with explicit padding.
    unsafe {
        std::slice::from_raw_parts(
            &rec as *const _ as *const u8,
            core::mem::size_of::<TraceRecord>(),
        )
    }
    .to_vec()
}

fn ipcache() -> IpCache {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: demo, labels: {app: client, tier: front}}\nspec: {nodeName: n1}\nstatus: {podIP: 10.100.1.2}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace: demo, labels: {app: server}}\nspec: {nodeName: n1}\nstatus: {podIP: 10.100.1.3}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {team: a}}\n";
    let (state, _) =
        ClusterState::from_objects(parse_objects(Path::new("bench.yaml"), yaml).unwrap());
    let locals: Vec<LocalEndpoint> = serde_json::from_str(
        r#"[{"id":1,"spec":{"attachment":{"container_id":"c1","ifname":"eth0"},"netns":"/run/netns/x","host_ifname":"lxc1","host_ifindex":7,"ip":"10.100.1.2","mac":"02:00:00:00:00:01","pod_namespace":"demo","pod_name":"client"}}]"#,
    )
    .unwrap();
    IpCache::build(
        &state,
        &locals,
        &NodeView {
            node_name: "n1",
            cluster: "lab",
            host_ips: &[],
            uplinks: &[],
        },
    )
}

fn ingest(c: &mut Criterion) {
    let records: Vec<Vec<u8>> = (0..BATCH as u32).map(record).collect();
    let cache = ipcache();
    let mut pipeline = Pipeline::new("lab/n1", Clock::with_offset(0));
    let ring: Ring<Arc<Event>> = Ring::new(65535);
    let mut g = c.benchmark_group("agent");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("decode+enrich+ring insert", |b| {
        let mut batch = Vec::with_capacity(BATCH);
        b.iter(|| {
            for r in &records {
                batch.push(Arc::new(pipeline.ingest(r, &cache).unwrap()));
            }
            ring.push_batch(batch.drain(..));
        })
    });

    g.bench_function("decode+enrich → full flow.Flow", |b| {
        b.iter(|| {
            for r in &records {
                let Event::Flow(f) = pipeline.ingest(r, &cache).unwrap() else {
                    unreachable!()
                };
                std::hint::black_box(flow_proto::flow(&f));
            }
        })
    });

    let events: Vec<Arc<Event>> = records
        .iter()
        .map(|r| Arc::new(pipeline.ingest(r, &cache).unwrap()))
        .collect();
    let pod_filter = FlowMatcher::compile(
        &[FlowFilter {
            source_pod: vec!["demo/client".into()],
            ..Default::default()
        }],
        &[],
    )
    .unwrap();
    g.bench_function("event → flow.Flow → filter → protobuf bytes", |b| {
        b.iter_batched(
            || Vec::with_capacity(512),
            |mut buf: Vec<u8>| {
                for ev in &events {
                    let Event::Flow(f) = &**ev else { continue };
                    let flow = flow_proto::flow(f);
                    if pod_filter.matches(&flow) {
                        buf.clear();
                        flow_proto::flow_response(flow).encode(&mut buf).unwrap();
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
