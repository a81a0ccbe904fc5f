//! Flow history in ClickHouse through an outage: a lab node with a tiny Hubble buffer (63
//! flows), the relay recording into a real `clickhouse-server` (Debian's) started by the
//! test, which is killed while pods keep talking. The relay goes on serving live flows,
//! reports the backlog it holds (`lumen_relay_history_backlog_flows`, a warn log), and
//! once ClickHouse is back stores every flow of the outage exactly once: the range is
//! answered from the store (the node has long overwritten it), equal to what a live
//! `follow` client saw, nothing lost, nothing stored twice.

mod common;

#[path = "../../relay/tests/clickhouse_server/mod.rs"]
mod clickhouse_server;

use clickhouse_server::{available, ClickHouseServer};
use common::{history::*, *};
use lumen_api::observer::GetFlowsRequest;
use lumen_integration::{hubble, AgentOptions, Relay, RelayOptions};
use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The relay's database in ClickHouse.
const DATABASE: &str = "lumen_lab";

/// `history.bufferFlows`: far more than the outage produces, so nothing may be lost.
const BUFFER_FLOWS: u64 = 50_000;

/// How long ClickHouse stays down while the pods talk.
const OUTAGE: Duration = Duration::from_secs(8);

const STORED: &str = "lumen_relay_history_flows_stored_total";
const LOST: &str = "lumen_relay_history_flows_lost_total";
const BACKLOG: &str = "lumen_relay_history_backlog_flows";

/// One UDP and one TCP echo from the client to the server (a dozen flows or so).
fn exchange(t: &OneNode) {
    assert!(udp_echo_ok(&t.client, t.server.ip()));
    assert!(tcp_echo_ok(&t.client, t.server.ip(), 100));
}

fn range(since: i64, until: i64) -> GetFlowsRequest {
    GetFlowsRequest {
        since: ts(since),
        until: ts(until),
        ..Default::default()
    }
}

/// The flows among `all` with a time in `[since, until]`, in time order.
fn within(all: &[(i64, String)], since: i64, until: i64) -> Vec<(i64, String)> {
    let mut v: Vec<_> = all
        .iter()
        .filter(|(t, _)| (since..=until).contains(t))
        .cloned()
        .collect();
    v.sort();
    v
}

/// A sample of the relay's metrics; panics naming it (with the exposition) when absent.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = scrape(addr);
    sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The `TabSeparated` answer of `sql` split into rows of fields; panics when ClickHouse
/// refuses it.
fn rows(ch: &ClickHouseServer, sql: &str) -> Vec<Vec<String>> {
    let out = ch
        .query(sql)
        .unwrap_or_else(|| panic!("ClickHouse refused {sql:?}"));
    out.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn clickhouse_outage_keeps_live_flows_reports_the_backlog_and_catches_up_once() {
    if !privileged() || !available() {
        return;
    }
    let started = Instant::now();
    let t = OneNode::new(
        "histch",
        AgentOptions {
            event_buffer_capacity: 63,
            monitor_interval: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let mut ch = ClickHouseServer::start();
    let metrics = free_addr();
    let relay = Relay::start(
        &t.lab,
        RelayOptions {
            extra_yaml: format!(
                "history: {{backend: clickhouse, clickhouse: {{url: {:?}, database: {DATABASE}}}, \
                 bufferFlows: {BUFFER_FLOWS}, insertBatch: 500}}\n\
                 prometheus: {{enabled: true, listenAddress: \"{metrics}\"}}\n",
                ch.url()
            ),
            ..Default::default()
        },
    )
    .expect("relay with ClickHouse history");

    // A live client of the relay, following every flow from now on.
    let live: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let follower = {
        let mut c =
            t.rt.block_on(hubble::connect_tcp(&relay.addr().to_string()))
                .expect("connect to the relay");
        let mut stream =
            t.rt.block_on(c.get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            }))
            .expect("GetFlows follow")
            .into_inner();
        let live = live.clone();
        t.rt.spawn(async move {
            while let Ok(Some(r)) = stream.message().await {
                live.lock().unwrap().extend(flows(&[r]));
            }
        })
    };
    wait_until(
        "flows reach the live client and ClickHouse",
        Duration::from_secs(20),
        || {
            exchange(&t);
            !live.lock().unwrap().is_empty() && metric(metrics, STORED) > 0
        },
    );

    // ClickHouse dies (SIGKILL) during ingestion; the pods keep talking.
    ch.stop();
    let down = now_ns();
    let outage_end = Instant::now() + OUTAGE;
    let mut backlog_seen = vec![];
    while Instant::now() < outage_end {
        exchange(&t);
        backlog_seen.push(metric(metrics, BACKLOG));
    }
    let up = now_ns();
    // The live stream never depended on the store.
    let live_during = within(&live.lock().unwrap(), down, up);
    assert!(
        live_during.len() > 63,
        "the relay kept serving live flows while ClickHouse was down: got {} (more than the \
         node's buffer expected); relay log:\n{}",
        live_during.len(),
        relay.log_tail(30)
    );
    // The backlog is reported: a gauge growing with the traffic to (about: the last scrape
    // is one exchange before the end) every flow of the outage, and a warn log.
    let backlog = *backlog_seen.last().unwrap();
    assert!(
        backlog >= backlog_seen[0] && backlog * 10 >= live_during.len() as u64 * 9,
        "backlog while ClickHouse is down (the live client saw {} flows): {backlog_seen:?}",
        live_during.len()
    );
    let log = std::fs::read_to_string(relay.log_path()).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("history store unavailable")),
        "no warning about the unavailable store in the relay log:\n{}",
        relay.log_tail(30)
    );
    assert_eq!(metric(metrics, LOST), 0, "nothing lost while buffered");

    // ClickHouse returns: the relay catches up. More traffic moves the recorded watermark
    // past the outage, so its range is answered by the store alone (the node, holding 63
    // flows, overwrote it long ago).
    ch.restart();
    let restarted = Instant::now();
    wait_until(
        "the outage's flows are stored and answered from history",
        Duration::from_secs(40),
        || {
            exchange(&t);
            metric(metrics, BACKLOG) < 100
                && flows(&via_relay(&t, &relay, range(down, up))).len()
                    >= within(&live.lock().unwrap(), down, up).len()
        },
    );
    let caught_up = restarted.elapsed();
    let on_node = t.get_flows(range(down, up)).expect("GetFlows on the node");
    assert!(
        on_node.len() < live_during.len(),
        "the node still holds the outage ({} flows)",
        on_node.len()
    );
    // What the live client saw of the outage, including its last moment (in flight when
    // the outage ended).
    let live_during = within(&live.lock().unwrap(), down, up);
    let mut answered = flows(&via_relay(&t, &relay, range(down, up)));
    answered.sort();
    assert_same(
        &answered,
        &live_during,
        "history of the outage vs the live client",
    );

    // Straight from ClickHouse: every flow of the outage once.
    let window = rows(
        &ch,
        &format!(
            "SELECT count(), uniqExact(uuid) FROM {DATABASE}.flows \
             WHERE time_ns >= {down} AND time_ns <= {up} FORMAT TabSeparated"
        ),
    );
    let n = live_during.len().to_string();
    assert_eq!(
        window,
        [vec![n.clone(), n]],
        "rows of the outage in ClickHouse"
    );

    // Quiet now: the backlog drains to zero, and the writer's count of flows stored equals
    // the distinct flows in ClickHouse: no flow was inserted twice (an INSERT cut by the
    // kill that landed anyway is not counted by the relay, so it is retried once).
    let mut stored = 0;
    wait_until("the backlog drains", Duration::from_secs(15), || {
        let s = metric(metrics, STORED);
        let settled = metric(metrics, BACKLOG) == 0 && s == stored;
        stored = s;
        settled
    });
    let distinct = rows(
        &ch,
        &format!(
            "SELECT uniqExact(uuid), count() FROM {DATABASE}.flows WHERE uuid != '' \
             FORMAT TabSeparated"
        ),
    );
    assert_eq!(
        distinct[0][0],
        stored.to_string(),
        "flows stored by the relay == distinct flows in ClickHouse ({distinct:?} rows)"
    );
    // Copies can only come from the INSERT in flight when ClickHouse was killed.
    let copies = rows(
        &ch,
        &format!(
            "SELECT uuid, count(), max(time_ns) FROM {DATABASE}.flows GROUP BY uuid \
             HAVING count() > 1 FORMAT TabSeparated"
        ),
    );
    assert!(
        copies.iter().all(|r| r[2].parse::<i64>().unwrap() < down),
        "flows stored twice after the outage began: {copies:?}"
    );
    assert_eq!(metric(metrics, LOST), 0, "no flow lost");
    let uniq: HashSet<_> = answered.iter().map(|(_, u)| u).collect();
    assert_eq!(uniq.len(), answered.len());
    follower.abort();
    eprintln!(
        "outage {OUTAGE:?}: {} live flows, backlog peak {}, caught up {caught_up:?} after \
         the restart; {stored} stored, ClickHouse {distinct:?} (distinct, rows), {} copies; \
         test {:?}",
        live_during.len(),
        backlog_seen.iter().max().unwrap(),
        copies.len(),
        started.elapsed()
    );
}

/// Panics listing (a few of) the flows only in `got` and only in `want`.
fn assert_same(got: &[(i64, String)], want: &[(i64, String)], what: &str) {
    let (g, w): (HashSet<_>, HashSet<_>) = (got.iter().collect(), want.iter().collect());
    let extra: Vec<_> = g.difference(&w).take(5).collect();
    let missing: Vec<_> = w.difference(&g).take(5).collect();
    assert!(
        extra.is_empty() && missing.is_empty() && got.len() == want.len(),
        "{what}: {} vs {} flows; {} extra, e.g. {extra:?}; {} missing, e.g. {missing:?}",
        got.len(),
        want.len(),
        g.difference(&w).count(),
        w.difference(&g).count(),
    );
}
