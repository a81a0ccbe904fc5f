//! `ui-bench`: the web UI (`lumen-ui`) measured on the lab: one node whose agent has
//! `monitorAggregation: none` (every packet a flow) and a 16383-flow ring, a relay, and two
//! UIs: the default configuration (`maxRows: 500`, `mapFlows: 2000`) and a large one
//! (`maxRows: 10000`, `mapFlows: 10000`).
//!
//! 1. Flows page: UDP is sent until the relay holds ≥ 10,000 flows (ServerStatus
//!    `num_flows`); figure = p50/p99 of the server response time of `GET /` (whole body
//!    read) and its size, for each UI.
//! 2. Service map: p50/p99 of `GET /map` (server-side: read, build, lay out, render SVG).
//! 3. Live: paced UDP between two pods at ≥ 5,000 flows/s (measured by a relay `follow`
//!    client), one SSE client on `/flows/stream`; figures = rows/s received, the share of
//!    the offered flows that arrived as rows, and the lag (arrival − flow time) p50/p99.
//!    With Chromium present, the same again with the flows page open in a headless browser,
//!    timing a script round trip meanwhile (the page's main thread stays responsive).
//!
//! Use release binaries (`LUMEN_BIN_DIR=target/release`) for figures worth quoting. Prints
//! one line per figure with its target, and a JSON summary at the end.

use anyhow::{bail, Context, Result};
use lumen_api::observer::{
    get_flows_response::ResponseTypes, GetFlowsRequest, ServerStatusRequest,
};
use lumen_integration::{
    browser::{self, Browser, EventStream},
    hubble, traffic_bin, AgentOptions, Lab, MonitorAggregation, Pod, Relay, RelayOptions, Ui,
};
use serde_json::{json, Value};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const FILL_TARGET: u64 = 10_000;
const GETS: usize = 30;
const LIVE_FLOWS_PER_S: f64 = 5_000.0;
const LIVE_SECONDS: u64 = 8;
const UDP_PORT: u16 = 5353;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Milliseconds since local midnight, now (the rows carry local `HH:MM:SS.mmm` only).
fn local_ms_of_day() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = now.as_secs() as libc::time_t;
    // SAFETY: an all-zero `tm` is valid; localtime_r writes into it and reads `t` only.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&t, &mut tm) };
    ((tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) as f64) * 1000.0
        + f64::from(now.subsec_micros()) / 1000.0
}

/// `Mon _D HH:MM:SS.mmm` → milliseconds since local midnight.
fn row_ms_of_day(time: &str) -> Option<f64> {
    let hms = time.split_whitespace().last()?;
    let mut it = hms.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(((h * 60.0 + m) * 60.0 + s) * 1000.0)
}

struct Bench {
    rt: tokio::runtime::Runtime,
    client: Pod,
    server: Pod,
    relay: Relay,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl Bench {
    fn num_flows(&self) -> Result<u64> {
        let addr = self.relay.addr().to_string();
        self.rt.block_on(async {
            let mut c = hubble::connect_tcp(&addr).await?;
            let st = c.server_status(ServerStatusRequest {}).await?.into_inner();
            anyhow::Ok(st.num_flows)
        })
    }

    fn udp(&self, count: u64, rate: u64) -> Result<lumen_integration::Spawned> {
        self.client.spawn(
            traffic_bin()?,
            [
                "udp",
                "--to",
                &format!("{}:{UDP_PORT}", self.server.ip()),
                "--count",
                &count.to_string(),
                "--rate",
                &rate.to_string(),
                "--no-reply",
            ],
        )
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    })
}

/// p50/p99 ms and the body size of `GET url`, `n` times.
fn time_gets(url: &str, n: usize) -> Result<(f64, f64, usize)> {
    let mut ms = vec![];
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = browser::get(url)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if r.status != 200 {
            bail!("GET {url}: HTTP {}: {}", r.status, r.text());
        }
        bytes = r.body.len();
    }
    Ok((percentile(&mut ms, 0.5), percentile(&mut ms, 0.99), bytes))
}

/// Counts what a relay `follow` client sees (the offered flow rate).
struct Offered {
    flows: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<()>>,
}

fn offered(b: &Bench) -> Offered {
    let flows = Arc::new(AtomicU64::new(0));
    let addr = b.relay.addr().to_string();
    let f = flows.clone();
    let task = b.rt.spawn(async move {
        let mut c = hubble::connect_tcp(&addr).await?;
        let mut s = c
            .get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        while let Some(r) = s.message().await? {
            if let Some(ResponseTypes::Flow(_)) = r.response_types {
                f.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    });
    Offered { flows, task }
}

#[derive(Debug, Default)]
struct Live {
    offered_per_s: f64,
    rows_per_s: f64,
    delivered_share: f64,
    min_rows_in_a_second: u64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    events: u64,
    browser_eval_p50_ms: Option<f64>,
    browser_eval_p99_ms: Option<f64>,
    browser_rows: Option<u64>,
}

/// Paced UDP for [`LIVE_SECONDS`] at `pps` datagrams/s while an SSE client (and, with
/// `with_browser`, a browser) reads `ui`'s live stream.
fn live(b: &Bench, ui: &Ui, pps: u64, with_browser: bool) -> Result<Live> {
    // Short reads, so the reader notices `stop` between events.
    let mut es = EventStream::open(
        &format!("{}/flows/stream", ui.url()),
        Duration::from_secs(1),
    )?;
    if es.status != 200 {
        bail!("/flows/stream: HTTP {}", es.status);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, counting) = (stop.clone(), counting.clone());
        std::thread::spawn(move || -> Result<(Vec<u64>, Vec<f64>, u64)> {
            let mut start: Option<Instant> = None;
            let mut per_second: Vec<u64> = vec![];
            let mut lags = vec![];
            let mut events = 0;
            while !stop.load(Ordering::Relaxed) {
                let ev = match es.next_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => return Err(e),
                };
                if !ev.event.is_empty() {
                    bail!("SSE {}: {}", ev.event, ev.data);
                }
                if !counting.load(Ordering::Relaxed) {
                    continue;
                }
                let arrived = local_ms_of_day();
                let rows: Vec<Value> = serde_json::from_str(&ev.data)
                    .with_context(|| format!("SSE data {:?}", ev.data.get(..200)))?;
                events += 1;
                let sec = start.get_or_insert_with(Instant::now).elapsed().as_secs() as usize;
                if per_second.len() <= sec {
                    per_second.resize(sec + 1, 0);
                }
                per_second[sec] += rows.len() as u64;
                for r in &rows {
                    if let Some(t) = r["time"].as_str().and_then(row_ms_of_day) {
                        let mut lag = arrived - t;
                        if lag < -43_200_000.0 {
                            lag += 86_400_000.0;
                        }
                        lags.push(lag);
                    }
                }
            }
            Ok((per_second, lags, events))
        })
    };
    let browser = if with_browser {
        let br = Browser::start()?;
        br.goto(&format!("{}/", ui.url()))?;
        br.wait_for(
            "return document.getElementById('live-status').textContent.startsWith('Live')",
            Duration::from_secs(10),
            "the live stream",
        )?;
        Some(br)
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(500));
    let off = offered(b);
    std::thread::sleep(Duration::from_millis(300));
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let off0 = off.flows.load(Ordering::Relaxed);
    let sender = b.udp(pps * LIVE_SECONDS, pps)?;
    let mut evals = vec![];
    while t0.elapsed() < Duration::from_secs(LIVE_SECONDS) {
        match &browser {
            Some(br) => {
                let t = Instant::now();
                br.eval("return document.getElementById('rows').rows.length", vec![])?;
                evals.push(t.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(Duration::from_millis(100));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let off1 = off.flows.load(Ordering::Relaxed);
    // The rows of the window's last batches are still on their way.
    std::thread::sleep(Duration::from_millis(700));
    counting.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = sender.wait(Duration::from_secs(10));
    off.task.abort();
    let browser_rows = match &browser {
        Some(br) => br
            .eval("return document.getElementById('rows').rows.length", vec![])?
            .as_u64(),
        None => None,
    };
    drop(browser);
    let (per_second, mut lags, events) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("SSE reader panicked"))??;
    let received: u64 = per_second.iter().sum();
    let full_seconds = &per_second[..per_second.len().min(LIVE_SECONDS as usize)];
    let offered_n = (off1 - off0) as f64;
    Ok(Live {
        offered_per_s: offered_n / window,
        // The tail read after the window carries the window's own last flows.
        rows_per_s: received as f64 / window,
        delivered_share: received as f64 / offered_n.max(1.0),
        min_rows_in_a_second: full_seconds.iter().skip(1).copied().min().unwrap_or(0),
        lag_p50_ms: percentile(&mut lags, 0.5),
        lag_p99_ms: percentile(&mut lags, 0.99),
        events,
        browser_eval_p50_ms: (!evals.is_empty()).then(|| percentile(&mut evals.clone(), 0.5)),
        browser_eval_p99_ms: (!evals.is_empty()).then(|| percentile(&mut evals, 0.99)),
        browser_rows,
    })
}

fn main() -> Result<()> {
    lumen_integration::install_interrupt_handler();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let lab = Lab::new("ui-bench")?;
    let node = lab.add_node("node1")?;
    node.start_agent(AgentOptions {
        monitor_aggregation: MonitorAggregation::None,
        event_buffer_capacity: 16383,
        ..Default::default()
    })?;
    let server = node.add_pod("demo", "server", &[("app", "server")])?;
    let client = node.add_pod("demo", "client", &[("app", "client")])?;
    let mut serving = server.spawn(traffic_bin()?, ["serve", "--udp", &UDP_PORT.to_string()])?;
    serving.wait_for_output("listening", Duration::from_secs(5))?;
    let relay = Relay::start(&lab, RelayOptions::default())?;
    let b = Bench {
        rt,
        client,
        server,
        relay,
        lab,
    };
    let small = Ui::start(&b.lab, &b.relay, None, "")?;
    let large = Ui::start(&b.lab, &b.relay, None, "maxRows: 10000\nmapFlows: 10000\n")?;

    // Calibrate: flows per datagram (send, echo, each seen where it leaves and enters).
    let before = b.num_flows()?;
    b.udp(1000, 5000)?.wait(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(500));
    let per_datagram = (b.num_flows()? - before) as f64 / 1000.0;
    eprintln!("{per_datagram:.2} flows per datagram");
    if per_datagram <= 0.0 {
        bail!("no flows from the calibration datagrams");
    }

    // 1. Fill the ring past 10,000 flows.
    let end = Instant::now() + Duration::from_secs(60);
    while b.num_flows()? < FILL_TARGET + 500 {
        if Instant::now() > end {
            bail!("the relay holds only {} flows after 60 s", b.num_flows()?);
        }
        b.udp(2000, 20_000)?.wait(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(300));
    }
    let stored = b.num_flows()?;
    eprintln!("the relay holds {stored} flows");

    let mut figures = serde_json::Map::new();
    let mut page = |name: &str, ui: &Ui, path: &str, target_ms: f64, what: &str| -> Result<()> {
        let url = format!("{}{path}", ui.url());
        browser::get(&url)?; // warm the relay connection
        let (p50, p99, bytes) = time_gets(&url, GETS)?;
        println!(
            "{what}: p50 {p50:.1} ms, p99 {p99:.1} ms, {bytes} bytes ({GETS} GETs; target p99 ≤ {target_ms:.0} ms)"
        );
        figures.insert(
            name.into(),
            json!({"path": path, "p50_ms": p50, "p99_ms": p99, "bytes": bytes, "gets": GETS, "target_p99_ms": target_ms}),
        );
        Ok(())
    };
    page(
        "flows_page_max_rows_500",
        &small,
        "/",
        500.0,
        &format!("flows page, {stored} flows stored, maxRows 500"),
    )?;
    page(
        "flows_page_max_rows_10000",
        &large,
        "/",
        2000.0,
        &format!("flows page, {stored} flows stored, maxRows 10000"),
    )?;
    page(
        "map_2000_flows",
        &small,
        "/map",
        500.0,
        "service map over the last 2000 flows (mapFlows default)",
    )?;
    page(
        "map_ns_2000_flows",
        &small,
        "/map?namespace=demo",
        500.0,
        "service map ?namespace=demo, mapFlows 2000",
    )?;
    page(
        "map_10000_flows",
        &large,
        "/map",
        2000.0,
        "service map over the last 10000 flows (mapFlows 10000)",
    )?;

    // 3. Live at ≥ 5,000 flows/s.
    let pps = (LIVE_FLOWS_PER_S / per_datagram * 1.1).ceil() as u64;
    let mut lives = serde_json::Map::new();
    let with_browser = browser::chromium_path().is_some() && browser::chromedriver_path().is_some();
    let runs: Vec<(&str, &Ui, bool)> = {
        let mut v = vec![
            ("sse_max_rows_500", &small, false),
            ("sse_max_rows_10000", &large, false),
        ];
        if with_browser {
            v.push(("browser_max_rows_500", &small, true));
        }
        v
    };
    for (name, ui, br) in runs {
        let l = live(&b, ui, pps, br).with_context(|| name.to_string())?;
        println!(
            "live {name}: {:.0} rows/s received of {:.0} flows/s offered ({:.1} % delivered, slowest second {} rows; target ≥ 5000 rows/s), lag p50 {:.0} ms, p99 {:.0} ms (target p99 ≤ 1000 ms), {} events",
            l.rows_per_s, l.offered_per_s, l.delivered_share * 100.0, l.min_rows_in_a_second, l.lag_p50_ms, l.lag_p99_ms, l.events
        );
        if let (Some(p50), Some(p99)) = (l.browser_eval_p50_ms, l.browser_eval_p99_ms) {
            println!(
                "live {name}: browser script round trip p50 {p50:.1} ms, p99 {p99:.1} ms while rendering ({} rows in the table; target p99 ≤ 100 ms)",
                l.browser_rows.unwrap_or(0)
            );
        }
        lives.insert(
            name.into(),
            json!({
                "datagrams_per_s": pps, "offered_flows_per_s": l.offered_per_s, "rows_per_s": l.rows_per_s,
                "delivered_share": l.delivered_share, "slowest_second_rows": l.min_rows_in_a_second,
                "lag_p50_ms": l.lag_p50_ms, "lag_p99_ms": l.lag_p99_ms, "events": l.events,
                "browser_eval_p50_ms": l.browser_eval_p50_ms, "browser_eval_p99_ms": l.browser_eval_p99_ms,
                "browser_rows": l.browser_rows,
            }),
        );
    }
    figures.insert("live".into(), Value::Object(lives));
    figures.insert("flows_stored".into(), json!(stored));
    figures.insert("flows_per_datagram".into(), json!(per_datagram));
    println!("{}", json!({ "ui_bench": figures }));
    drop((small, large));
    drop(serving);
    Ok(())
}
