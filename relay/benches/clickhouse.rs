//! Figures for the ClickHouse history backend against a real `clickhouse-server` started by
//! the bench (skipped when it is not installed):
//!
//! 1. sustained insert rate (flows/s) of realistic flows through `FlowStore::insert`, in the
//!    writer's batches;
//! 2. bytes stored per flow (active parts on disk, and per column);
//! 3. latency of "denied flows in namespace X in the last hour" through `FlowStore::query`
//!    over 10 M stored flows (generated server-side with `INSERT … SELECT`).
//!
//! `cargo bench -p lumen-relay --bench clickhouse` (env `FLOWS` / `BATCH` / `ROWS` to size).

#[path = "../tests/clickhouse_server/mod.rs"]
mod clickhouse_server;

use clickhouse_server::{available, ClickHouseServer};
use lumen_api::{
    flow::{
        layer4::Protocol, CiliumEventType, Endpoint, Flow, FlowFilter, Ip, Layer4, Tcp, TcpFlags,
    },
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    wkt::Timestamp,
};
use lumen_relay::store::{
    clickhouse::{ClickHouseOptions, ClickHouseStore},
    columns,
    prefilter::Prefilter,
    FlowStore, Order, Query, StoredFlow,
};
use prost::Message;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tonic::codegen::Bytes;

/// Prime, so that drops (every 20th flow) fall in every namespace.
const NAMESPACES: u64 = 53;
/// Verdict DROPPED, one flow in 20.
const DROPPED: i32 = 2;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A flow as an agent reports it: endpoints with labels, IPs, TCP, event type.
fn flow(i: u64, t: i64) -> StoredFlow {
    let ns = |k: u64| format!("ns-{}", k % NAMESPACES);
    let ep = |k: u64, app: &str| Endpoint {
        id: (k % 4000) as u32,
        identity: 10_000 + (k % 500) as u32,
        namespace: ns(k),
        pod_name: format!("{app}-{}-{:05x}", k % 7, k % 65_536),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.kubernetes.pod.namespace={}", ns(k)),
            "k8s:io.cilium.k8s.policy.cluster=lab".into(),
        ],
        ..Default::default()
    };
    let time = Some(Timestamp {
        seconds: t / 1_000_000_000,
        nanos: (t % 1_000_000_000) as i32,
    });
    let node = format!("lab/node-{}", i % 8);
    let verdict = if i.is_multiple_of(20) { DROPPED } else { 1 };
    let resp = GetFlowsResponse {
        node_name: node.clone(),
        time,
        response_types: Some(ResponseTypes::Flow(Flow {
            time,
            uuid: format!("{:016x}-{i:08x}", t),
            verdict,
            drop_reason_desc: if verdict == DROPPED { 133 } else { 0 },
            node_name: node,
            traffic_direction: 1,
            event_type: Some(CiliumEventType {
                r#type: if verdict == DROPPED { 1 } else { 4 },
                sub_type: 0,
            }),
            source: Some(ep(i, "client")),
            destination: Some(ep(i / 3 + 17, "server")),
            ip: Some(Ip {
                source: format!("10.100.{}.{}", (i >> 8) % 256, i % 256),
                destination: format!("10.100.{}.{}", (i >> 4) % 256, (i + 7) % 256),
                ip_version: 1,
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 32_768 + (i % 28_000) as u32,
                    destination_port: 8080,
                    flags: Some(TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            summary: "TCP Flags: SYN".into(),
            ..Default::default()
        })),
    };
    StoredFlow {
        columns: columns(&resp).expect("a flow"),
        response: Bytes::from(resp.encode_to_vec()),
    }
}

/// Plain HTTP for the bench's own statements (sizes, generation), outside the store.
mod plain_http {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub struct Http {
        pub port: u16,
    }

    impl Http {
        pub async fn query(&self, sql: &str) -> String {
            let port = self.port;
            let sql = sql.to_string();
            tokio::task::spawn_blocking(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                let req = format!(
                    "POST /?database=lumen_bench HTTP/1.0\r\nHost: localhost\r\n\
                     Content-Length: {}\r\n\r\n{sql}",
                    sql.len()
                );
                s.write_all(req.as_bytes()).expect("send");
                let mut out = String::new();
                s.read_to_string(&mut out).expect("answer");
                let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
                assert!(head.contains(" 200 "), "{sql}: {out}");
                body.trim().to_string()
            })
            .await
            .expect("join")
        }
    }
}

#[tokio::main]
async fn main() {
    if !available() {
        return;
    }
    let flows_n = env("FLOWS", 1_000_000);
    let batch_n = env("BATCH", 50_000) as usize;
    let rows_n = env("ROWS", 10_000_000);
    let server = ClickHouseServer::start();
    let url = server.url();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let http = plain_http::Http { port };
    let store = ClickHouseStore::open(ClickHouseOptions {
        url,
        database: "lumen_bench".into(),
        ..Default::default()
    })
    .await
    .expect("open");
    println!(
        "clickhouse {}: {flows_n} flows in batches of {batch_n}",
        store.server_version()
    );

    // 1. Insert rate: flows over the last minute, encoded beforehand (the relay's writer
    //    receives them encoded).
    let t0 = now_ns() - 60_000_000_000;
    let step = (60_000_000_000 / flows_n.max(1)) as i64;
    let flows: Vec<StoredFlow> = (0..flows_n)
        .map(|i| flow(i, t0 + i as i64 * step))
        .collect();
    let encoded: usize = flows.iter().map(|f| f.response.len()).sum();
    let start = Instant::now();
    for b in flows.chunks(batch_n) {
        store.insert(b).await.expect("insert");
    }
    let took = start.elapsed();
    println!(
        "insert: {flows_n} flows in {took:.2?} = {:.0} flows/s ({:.1} MB/s of encoded responses, {} B/flow encoded)",
        flows_n as f64 / took.as_secs_f64(),
        encoded as f64 / took.as_secs_f64() / 1e6,
        encoded / flows_n.max(1) as usize
    );

    // 2. Bytes per flow, once merged.
    http.query("OPTIMIZE TABLE flows FINAL").await;
    let bytes: u64 = http.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'lumen_bench' AND table = 'flows' AND active",
    )
    .await
    .parse()
    .unwrap();
    println!(
        "stored: {bytes} B on disk = {:.1} B/flow (stats: {:?})",
        bytes as f64 / flows_n as f64,
        store.stats().await.expect("stats")
    );
    let per_column = http
        .query(
            "SELECT name, round(data_compressed_bytes / (SELECT count() FROM flows), 1) \
         FROM system.columns WHERE database = 'lumen_bench' AND table = 'flows' \
         ORDER BY data_compressed_bytes DESC LIMIT 6",
        )
        .await;
    println!(
        "  B/flow by column (largest): {}",
        per_column.replace('\t', " ").replace('\n', ", ")
    );

    // 3. Query latency over `rows_n` flows spread over the last 24 h, 5 % dropped.
    http.query("TRUNCATE TABLE flows").await;
    let now = now_ns();
    let spacing = 86_400_000_000_000 / rows_n as i64;
    let gen = Instant::now();
    http.query(&format!(
            "INSERT INTO flows (time, time_ns, row_key, node, uuid, src_namespace, src_pod, \
             src_identity, dst_namespace, dst_pod, dst_identity, src_ip, dst_ip, src_port, \
             dst_port, protocol, verdict, drop_reason, direction, event_type, event_subtype, \
             response) \
             SELECT toDateTime(intDiv(t, 1000000000)), t, toInt64(cityHash64(number)), \
             concat('lab/node-', toString(number % 8)), toString(cityHash64(number)), \
             concat('ns-', toString(number % {NAMESPACES})), concat('client-', toString(number % 7)), \
             toUInt32(10000 + number % 500), \
             concat('ns-', toString(intDiv(number, 3) % {NAMESPACES})), concat('server-', toString(number % 5)), \
             toUInt32(10000 + number % 400), \
             concat('10.100.', toString(number % 256), '.', toString(intDiv(number, 256) % 256)), \
             concat('10.101.', toString(number % 250), '.', toString(intDiv(number, 250) % 256)), \
             toUInt32(32768 + number % 28000), toUInt32(8080), 'tcp', \
             toInt32(if(number % 20 = 0, {DROPPED}, 1)), toInt32(if(number % 20 = 0, 133, 0)), \
             toInt32(1), toInt32(if(number % 20 = 0, 1, 4)), toInt32(0), \
             concat(toString(cityHash64(number)), toString(cityHash64(number + 1)), \
                    toString(cityHash64(number + 2)), toString(cityHash64(number + 3))) \
             FROM (SELECT number, {now} - toInt64(number) * {spacing} AS t \
                   FROM system.numbers LIMIT {rows_n})"
        ),
    )
    .await;
    println!(
        "generated {rows_n} flows over 24 h server-side in {:.1?}",
        gen.elapsed()
    );
    http.query("OPTIMIZE TABLE flows FINAL").await;
    let ns = "ns-7";
    let q = Query {
        since_ns: Some(now - 3_600_000_000_000),
        until_ns: None,
        prefilter: Prefilter::from_whitelist(&[
            FlowFilter {
                source_pod: vec![format!("{ns}/")],
                verdict: vec![DROPPED],
                ..Default::default()
            },
            FlowFilter {
                destination_pod: vec![format!("{ns}/")],
                verdict: vec![DROPPED],
                ..Default::default()
            },
        ]),
        order: Order::Descending,
        after: None,
        limit: 100_000,
    };
    let expected = http
        .query(&format!(
            "SELECT count() FROM flows WHERE time_ns >= {} AND verdict = {DROPPED} \
             AND (src_namespace = '{ns}' OR dst_namespace = '{ns}')",
            now - 3_600_000_000_000
        ))
        .await;
    let mut lat = vec![];
    let mut rows = 0;
    for _ in 0..11 {
        let s = Instant::now();
        rows = store.query(&q).await.expect("query").rows.len();
        lat.push(s.elapsed());
    }
    lat.sort();
    let first_page = {
        let mut q = q.clone();
        q.limit = 1000;
        let s = Instant::now();
        store.query(&q).await.expect("query");
        s.elapsed()
    };
    println!(
        "query 'denied flows in {ns} in the last hour' over {rows_n} flows: {rows} rows ({expected} expected), \
         median {:.1?}, min {:.1?}, max {:.1?} (first page of 1000: {first_page:.1?})",
        lat[lat.len() / 2],
        lat[0],
        lat[lat.len() - 1]
    );
}
