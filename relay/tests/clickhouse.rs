//! The ClickHouse history backend against a real `clickhouse-server` (Debian's 18.16 here)
//! started by each test: queries by time range and filters, retention, stats, watermarks,
//! and an outage during ingestion (retryable errors, catch-up without duplicates).

#[path = "clickhouse_server/mod.rs"]
mod clickhouse_server;

use clickhouse_server::{available, ClickHouseServer};
use lumen_api::{
    flow::{Endpoint, Flow, FlowFilter},
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    wkt::Timestamp,
};
use lumen_relay::store::{
    clickhouse::{ClickHouseOptions, ClickHouseStore},
    columns,
    prefilter::Prefilter,
    FlowStore, Order, Page, Query, StoredFlow,
};
use prost::Message;
use std::time::Duration;
use tonic::codegen::Bytes;

const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// 2026-11-01T00:00:00Z: times far from the epoch, as real flows are.
const BASE_NS: i64 = 1_793_491_200 * 1_000_000_000;

/// A flow response at `t` from `node`, from pod `src` to pod `dst` ("namespace/pod").
fn stored(node: &str, t: i64, src: &str, dst: &str, verdict: i32) -> StoredFlow {
    let ep = |v: &str| {
        let (ns, pod) = v.split_once('/').unwrap();
        Some(Endpoint {
            namespace: ns.into(),
            pod_name: pod.into(),
            ..Default::default()
        })
    };
    let time = Some(Timestamp {
        seconds: t / 1_000_000_000,
        nanos: (t % 1_000_000_000) as i32,
    });
    let resp = GetFlowsResponse {
        node_name: node.into(),
        time,
        response_types: Some(ResponseTypes::Flow(Flow {
            time,
            node_name: node.into(),
            uuid: format!("{node}-{t}"),
            verdict,
            source: ep(src),
            destination: ep(dst),
            ..Default::default()
        })),
    };
    StoredFlow {
        columns: columns(&resp).unwrap(),
        response: Bytes::from(resp.encode_to_vec()),
    }
}

fn times(p: &Page) -> Vec<i64> {
    p.rows.iter().map(|(t, _)| *t - BASE_NS).collect()
}

fn q(since: Option<i64>, until: Option<i64>, order: Order, limit: u32) -> Query {
    Query {
        since_ns: since.map(|s| s + BASE_NS),
        until_ns: until.map(|u| u + BASE_NS),
        prefilter: Prefilter::default(),
        order,
        after: None,
        limit,
    }
}

fn options(server: &ClickHouseServer) -> ClickHouseOptions {
    ClickHouseOptions {
        url: server.url(),
        database: "lumen_test".into(),
        insert_attempts: 2,
        retry_backoff: Duration::from_millis(50),
        insert_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

#[tokio::test]
async fn stores_losslessly_queries_by_time_filter_and_pages() {
    if !available() {
        return;
    }
    let server = ClickHouseServer::start();
    let s = ClickHouseStore::open(options(&server)).await.unwrap();
    assert!(s.server_version().starts_with(char::is_numeric));
    let batch: Vec<StoredFlow> = (1..=300)
        .map(|i| {
            let pod = if i % 3 == 0 {
                "shop/web-1"
            } else {
                "kube-system/dns-1"
            };
            stored(
                if i % 2 == 0 { "c/a" } else { "c/b" },
                BASE_NS + i * 10,
                pod,
                "db/pg-0",
                1 + (i % 2) as i32,
            )
        })
        .collect();
    s.insert(&batch).await.unwrap();

    let p = s
        .query(&q(Some(100), Some(150), Order::Ascending, 100))
        .await
        .unwrap();
    assert_eq!(times(&p), [100, 110, 120, 130, 140, 150]);
    assert!(p.next.is_none());
    // Bytes back exactly as stored.
    assert_eq!(p.rows[0].1, batch[9].response);
    let decoded = GetFlowsResponse::decode(p.rows[0].1.clone()).unwrap();
    assert_eq!(decoded.node_name, "c/a");

    // Newest first, paged.
    let mut query = q(None, None, Order::Descending, 2);
    let p1 = s.query(&query).await.unwrap();
    assert_eq!(times(&p1), [3000, 2990]);
    query.after = p1.next;
    assert_eq!(times(&s.query(&query).await.unwrap()), [2980, 2970]);
    // Oldest first, paged through everything: every flow once, in order.
    let mut query = q(None, None, Order::Ascending, 128);
    let mut all = vec![];
    loop {
        let p = s.query(&query).await.unwrap();
        all.extend(times(&p));
        match p.next {
            Some(c) => query.after = Some(c),
            None => break,
        }
    }
    assert_eq!(all, (1..=300).map(|i| i * 10).collect::<Vec<_>>());

    // Namespace/pod prefix and verdict in SQL.
    let mut query = q(None, Some(600), Order::Ascending, 1000);
    query.prefilter = Prefilter::from_whitelist(&[FlowFilter {
        source_pod: vec!["shop/web".into()],
        verdict: vec![2],
        ..Default::default()
    }]);
    // i%3==0 and i odd, i*10 ≤ 600.
    assert_eq!(
        times(&s.query(&query).await.unwrap()),
        [30, 90, 150, 210, 270, 330, 390, 450, 510, 570]
    );
    // Destination side, ORed with a source filter that matches nothing.
    query.prefilter = Prefilter::from_whitelist(&[
        FlowFilter {
            destination_pod: vec!["db/".into()],
            verdict: vec![1],
            ..Default::default()
        },
        FlowFilter {
            source_pod: vec!["shop/nothing".into()],
            ..Default::default()
        },
    ]);
    assert_eq!(
        times(&s.query(&query).await.unwrap()),
        (1..=60)
            .filter(|i| i % 2 == 0)
            .map(|i| i * 10)
            .collect::<Vec<_>>()
    );
    query.prefilter = Prefilter::from_whitelist(&[FlowFilter {
        source_pod: vec!["shop/nothing".into()],
        ..Default::default()
    }]);
    assert!(s.query(&query).await.unwrap().rows.is_empty());

    let mut w = s.watermarks().await.unwrap();
    w.sort();
    assert_eq!(
        w,
        [
            ("c/a".to_string(), BASE_NS + 3000),
            ("c/b".to_string(), BASE_NS + 2990)
        ]
    );
    let st = s.stats().await.unwrap();
    assert_eq!((st.flows, st.oldest_ns), (300, BASE_NS + 10));
    assert!(st.bytes > 0);
}

#[tokio::test]
async fn retention_by_age_and_by_count_drops_days_and_deletes_rows() {
    if !available() {
        return;
    }
    let server = ClickHouseServer::start();
    let s = ClickHouseStore::open(options(&server)).await.unwrap();
    assert_eq!(s.stats().await.unwrap().flows, 0);
    assert_eq!(s.stats().await.unwrap().oldest_ns, 0);
    // 3 days, 100 flows each, one insert per day.
    for day in 0..3 {
        let batch: Vec<StoredFlow> = (0..100)
            .map(|i| stored("c/a", BASE_NS + day * DAY_NS + i * 1000, "a/b", "c/d", 1))
            .collect();
        s.insert(&batch).await.unwrap();
    }
    let before = s.stats().await.unwrap();
    assert_eq!((before.flows, before.oldest_ns), (300, BASE_NS));

    // Day 0 entirely and the first 50 flows of day 1.
    let cut = BASE_NS + DAY_NS + 50 * 1000;
    assert_eq!(s.delete_before(cut).await.unwrap(), 150);
    let after = s.stats().await.unwrap();
    assert_eq!((after.flows, after.oldest_ns), (150, cut));
    assert!(after.bytes < before.bytes, "{after:?} vs {before:?}");

    // The 70 oldest: the rest of day 1 and 20 of day 2.
    assert_eq!(s.delete_oldest(70).await.unwrap(), 70);
    let st = s.stats().await.unwrap();
    assert_eq!(
        (st.flows, st.oldest_ns),
        (80, BASE_NS + 2 * DAY_NS + 20 * 1000)
    );
    let p = s
        .query(&q(None, None, Order::Ascending, 1000))
        .await
        .unwrap();
    assert_eq!(p.rows.len(), 80);
    assert_eq!(p.rows[0].0, BASE_NS + 2 * DAY_NS + 20 * 1000);

    // More than there is: everything.
    assert_eq!(s.delete_oldest(1000).await.unwrap(), 80);
    assert_eq!(s.stats().await.unwrap().flows, 0);
    assert!(s.watermarks().await.unwrap().is_empty());
}

#[tokio::test]
async fn outage_during_ingestion_is_retryable_and_catches_up_without_duplicates() {
    if !available() {
        return;
    }
    let mut server = ClickHouseServer::start();
    let s = ClickHouseStore::open(options(&server)).await.unwrap();
    let flows: Vec<StoredFlow> = (0..1000)
        .map(|i| stored("c/a", BASE_NS + i * 1000, "a/b", "c/d", 2))
        .collect();
    let (first, backlog) = flows.split_at(400);
    s.insert(first).await.unwrap();

    server.stop();
    let e = s.insert(backlog).await.unwrap_err();
    assert!(e.is_retryable(), "not retryable: {e}");
    assert!(s.query(&q(None, None, Order::Ascending, 10)).await.is_err());

    server.restart();
    // The writer retries its backlog; say the first retry landed but its answer was lost,
    // so it is sent again: both copies are stored, readers see each flow once.
    s.insert(backlog).await.unwrap();
    s.insert(&backlog[..300]).await.unwrap();
    let p = s
        .query(&q(None, None, Order::Ascending, 5000))
        .await
        .unwrap();
    assert_eq!(times(&p), (0..1000).map(|i| i * 1000).collect::<Vec<_>>());
    assert_eq!(p.rows[999].1, flows[999].response);
    assert_eq!(
        s.watermarks().await.unwrap(),
        [("c/a".to_string(), BASE_NS + 999_000)]
    );
    // Paging with a cursor across the duplicated range skips the copies too.
    let mut query = q(Some(350_000), None, Order::Ascending, 100);
    let mut seen = vec![];
    loop {
        let p = s.query(&query).await.unwrap();
        seen.extend(times(&p));
        match p.next {
            Some(c) => query.after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (350..1000).map(|i| i * 1000).collect::<Vec<_>>());
}
