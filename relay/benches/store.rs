//! History store benchmark (SQLite, a real file in a temporary directory): the writer's
//! work per batch (decode each response, extract the columns, insert in one transaction)
//! for several batch sizes, then a sustained run of 500,000 flows into one growing
//! database, printing flows/s and bytes stored per flow (target: ≥ 50,000 flows/s).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lumen_api::{
    flow::{layer4, CiliumEventType, Endpoint, Flow, Ip, Layer4, Tcp, Workload},
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    wkt::Timestamp,
};
use lumen_relay::store::{columns, sqlite::SqliteStore, FlowStore, StoredFlow};
use prost::Message;
use std::time::Instant;
use tonic::codegen::Bytes;

fn endpoint(i: u64) -> Endpoint {
    let ns = format!("team-{}", i % 8);
    Endpoint {
        id: 100 + (i % 50) as u32,
        identity: 10_000 + (i % 200) as u32,
        cluster_name: "default".into(),
        namespace: ns.clone(),
        labels: vec![
            format!("k8s:app=svc-{}", i % 200),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
        ],
        pod_name: format!("svc-{}-7d9f8c-{:05}", i % 200, i * 7919 % 100_000),
        workloads: vec![Workload {
            name: format!("svc-{}", i % 200),
            kind: "Deployment".into(),
        }],
    }
}

/// A realistic encoded response: TCP between two labelled pods, as an agent sends it.
fn response(i: u64, t0: i64) -> Bytes {
    let t = t0 + i as i64 * 20_000;
    let time = Some(Timestamp {
        seconds: t / 1_000_000_000,
        nanos: (t % 1_000_000_000) as i32,
    });
    let node = format!("default/node{}", i % 3 + 1);
    let flow = Flow {
        time,
        uuid: format!("8a1f6c1e-{:04x}-4c1b-9b7e-{:012x}", i % 65536, i),
        verdict: 1,
        ip: Some(Ip {
            source: format!("10.100.{}.{}", i % 4, i % 250 + 2),
            destination: format!("10.100.{}.{}", (i + 1) % 4, (i * 7) % 250 + 2),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 30_000 + (i % 30_000) as u32,
                destination_port: 8080,
                flags: None,
            })),
        }),
        source: Some(endpoint(i)),
        destination: Some(endpoint(i * 31 + 7)),
        r#type: 1,
        node_name: node.clone(),
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        traffic_direction: 2,
        trace_observation_point: 1,
        is_reply: Some(pbjson_types::BoolValue { value: i % 2 == 1 }),
        ..Default::default()
    };
    Bytes::from(
        GetFlowsResponse {
            node_name: node,
            time,
            response_types: Some(ResponseTypes::Flow(flow)),
        }
        .encode_to_vec(),
    )
}

/// What the writer task does with a batch.
fn decode(batch: &[Bytes]) -> Vec<StoredFlow> {
    batch
        .iter()
        .filter_map(|b| {
            let resp = GetFlowsResponse::decode(b.clone()).ok()?;
            Some(StoredFlow {
                columns: columns(&resp)?,
                response: b.clone(),
            })
        })
        .collect()
}

fn batches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("history_insert");
    g.sample_size(10);
    let mut next = 0u64;
    for size in [100usize, 500, 2000, 5000] {
        let store = rt
            .block_on(SqliteStore::open(&dir.path().join(format!("b{size}.db"))))
            .unwrap();
        g.throughput(Throughput::Elements(size as u64));
        g.bench_function(format!("decode_and_insert_batch_{size}"), |b| {
            b.iter_batched(
                || {
                    let v: Vec<Bytes> =
                        (next..next + size as u64).map(|i| response(i, 0)).collect();
                    next += size as u64;
                    v
                },
                |raw| rt.block_on(store.insert(&decode(&raw))).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn sustained(_: &mut Criterion) {
    const FLOWS: u64 = 500_000;
    const BATCH: u64 = 2000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open(&dir.path().join("sustained.db")))
        .unwrap();
    let raw: Vec<Bytes> = (0..FLOWS)
        .map(|i| response(i, 1_700_000_000_000_000_000))
        .collect();
    let payload: usize = raw.iter().map(|b| b.len()).sum();
    let start = Instant::now();
    for chunk in raw.chunks(BATCH as usize) {
        rt.block_on(store.insert(&decode(chunk))).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = rt.block_on(store.stats()).unwrap();
    rt.block_on(store.close());
    let file: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "history sustained: {FLOWS} flows in batches of {BATCH}: {secs:.2} s, {:.0} flows/s; \
         {:.0} B/flow in use ({:.0} B/flow on disk incl. WAL), encoded responses {:.0} B/flow",
        FLOWS as f64 / secs,
        stats.bytes as f64 / stats.flows as f64,
        file as f64 / FLOWS as f64,
        payload as f64 / FLOWS as f64,
    );
}

criterion_group!(benches, batches, sustained);
criterion_main!(benches);
