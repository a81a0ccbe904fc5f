//! `relay-bench`: the relay measured on the lab, with 2 and then 4 nodes (an agent each,
//! `monitorAggregation: none` so every packet is a flow, one client and one server pod per
//! node) and one `follow` client reading through the relay.
//!
//! 1. Throughput: every client pod floods 64-byte UDP to its node's server pod for a few
//!    seconds; figure = flows/s the follow client received over the window, with the relay's
//!    CPU (% of one core, from /proc utime+stime) and RSS meanwhile.
//! 2. Latency: every client sends paced UDP (200 datagrams/s); figure = p50/p99 of
//!    (arrival at the follow client − the flow's packet time).
//!
//! Use release binaries (`LUMEN_BIN_DIR=target/release`) for figures worth quoting. Prints
//! one line per figure with its target, and a JSON summary at the end.

use anyhow::{Context, Result};
use lumen_api::observer::{get_flows_response::ResponseTypes, GetFlowsRequest};
use lumen_integration::{
    hubble, traffic_bin, AgentOptions, Lab, MonitorAggregation, Pod, Relay, RelayOptions,
};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

const FLOOD_SECONDS: f64 = 5.0;
const PACED_RATE: u64 = 200;
const PACED_SECONDS: u64 = 5;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| key.to_string())
}

/// What the follow client has seen.
#[derive(Default)]
struct Seen {
    flows: AtomicU64,
    /// Events reported lost (agents' rings overrun, perf buffer full...).
    lost: AtomicU64,
    record_latency: AtomicBool,
    latencies_ns: Mutex<Vec<i64>>,
}

fn percentile(v: &mut [i64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i] as f64 / 1e6
}

struct Round {
    nodes: usize,
    flows_per_s: f64,
    relay_cpu_pct: f64,
    agents_cpu_pct: f64,
    /// Flows delivered from the flood, including the backlog after it.
    delivered: u64,
    /// Events reported lost during the flood and its backlog.
    lost: u64,
    relay_rss_kib: u64,
    relay_hwm_kib: u64,
    p50_ms: f64,
    p99_ms: f64,
    latency_samples: usize,
}

fn round(n: usize, rt: &tokio::runtime::Runtime) -> Result<Round> {
    let lab = Lab::new(&format!("relay-bench-{n}"))?;
    let traffic = traffic_bin()?;
    let mut pairs: Vec<(Pod, Pod)> = vec![];
    let mut nodes = vec![];
    for i in 1..=n {
        let node = lab.add_node(&format!("node{i}"))?;
        node.start_agent(AgentOptions {
            monitor_aggregation: MonitorAggregation::None,
            event_buffer_capacity: 65535,
            ..Default::default()
        })?;
        let server = node.add_pod("bench", &format!("server{i}"), &[("app", "server")])?;
        let client = node.add_pod("bench", &format!("client{i}"), &[("app", "client")])?;
        pairs.push((client, server));
        nodes.push(node);
    }
    let relay = Relay::start(&lab, RelayOptions::default())?;
    let pid = relay.pid().context("relay pid")?;

    // One follow client, counting flows and (when asked) their packet→client latency.
    let seen = Arc::new(Seen::default());
    let reader = {
        let seen = seen.clone();
        let addr = relay.addr().to_string();
        rt.spawn(async move {
            let mut c = hubble::connect_tcp(&addr).await?;
            let mut s = c
                .get_flows(GetFlowsRequest {
                    follow: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(r) = s.message().await? {
                if let Some(ResponseTypes::LostEvents(l)) = &r.response_types {
                    seen.lost.fetch_add(l.num_events_lost, Ordering::Relaxed);
                }
                if let Some(ResponseTypes::Flow(f)) = &r.response_types {
                    seen.flows.fetch_add(1, Ordering::Relaxed);
                    if seen.record_latency.load(Ordering::Relaxed) {
                        if let Some(t) = &f.time {
                            let t = t.seconds * 1_000_000_000 + t.nanos as i64;
                            seen.latencies_ns.lock().unwrap().push(now_ns() - t);
                        }
                    }
                }
            }
            anyhow::Ok(())
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // 1. Throughput.
    let flows0 = seen.flows.load(Ordering::Relaxed);
    let lost0 = seen.lost.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds(pid)?;
    let agent_pids: Vec<u32> = nodes.iter().filter_map(|n| n.agent_pid()).collect();
    let agents_cpu = || -> Result<f64> { agent_pids.iter().map(|p| cpu_seconds(*p)).sum() };
    let acpu0 = agents_cpu()?;
    let t0 = Instant::now();
    let floods: Vec<_> = pairs
        .iter()
        .map(|(client, server)| {
            client.spawn(
                &traffic,
                [
                    "udp-flood",
                    "--to",
                    &format!("{}:9", server.ip()),
                    "--size",
                    "64",
                    "--seconds",
                    &FLOOD_SECONDS.to_string(),
                ],
            )
        })
        .collect::<Result<_>>()?;
    let mut rss = 0;
    while t0.elapsed().as_secs_f64() < FLOOD_SECONDS {
        std::thread::sleep(Duration::from_millis(500));
        rss = rss.max(status_kib(pid, "VmRSS:")?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let flows1 = seen.flows.load(Ordering::Relaxed);
    let cpu1 = cpu_seconds(pid)?;
    let acpu1 = agents_cpu()?;
    for f in floods {
        let _ = f.wait(Duration::from_secs(10));
    }
    // Let the backlog drain (no new flow for 1 s, 60 s at most) before measuring latency.
    let quiet_end = Instant::now() + Duration::from_secs(60);
    let mut last = seen.flows.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = seen.flows.load(Ordering::Relaxed);
        if now == last || Instant::now() > quiet_end {
            break;
        }
        last = now;
    }
    let delivered = seen.flows.load(Ordering::Relaxed) - flows0;
    let lost = seen.lost.load(Ordering::Relaxed) - lost0;

    // 2. Latency at a moderate rate.
    seen.record_latency.store(true, Ordering::Relaxed);
    let paced: Vec<_> = pairs
        .iter()
        .map(|(client, server)| {
            client.spawn(
                &traffic,
                [
                    "udp",
                    "--to",
                    &format!("{}:9", server.ip()),
                    "--count",
                    &(PACED_RATE * PACED_SECONDS).to_string(),
                    "--rate",
                    &PACED_RATE.to_string(),
                    "--no-reply",
                ],
            )
        })
        .collect::<Result<_>>()?;
    for p in paced {
        let _ = p.wait(Duration::from_secs(PACED_SECONDS + 10));
    }
    std::thread::sleep(Duration::from_millis(500));
    seen.record_latency.store(false, Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *seen.latencies_ns.lock().unwrap());
    let hwm = status_kib(pid, "VmHWM:")?;
    reader.abort();
    drop(relay);
    Ok(Round {
        nodes: n,
        flows_per_s: (flows1 - flows0) as f64 / elapsed,
        relay_cpu_pct: (cpu1 - cpu0) / elapsed * 100.0,
        agents_cpu_pct: (acpu1 - acpu0) / elapsed * 100.0,
        delivered,
        lost,
        relay_rss_kib: rss,
        relay_hwm_kib: hwm,
        p50_ms: percentile(&mut lat, 0.50),
        p99_ms: percentile(&mut lat, 0.99),
        latency_samples: lat.len(),
    })
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rounds = vec![];
    for n in [2, 4] {
        let r = round(n, &rt)?;
        println!(
            "relay, {} agents: {:9.0} flows/s to one follow client (target ≥ 200,000), relay CPU {:5.1} % of a core, RSS {} KiB (peak {} KiB); agents' CPU {:5.1} %; {} flows delivered in all, {} events reported lost",
            r.nodes, r.flows_per_s, r.relay_cpu_pct, r.relay_rss_kib, r.relay_hwm_kib, r.agents_cpu_pct, r.delivered, r.lost
        );
        println!(
            "relay, {} agents: packet→client latency p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 250 ms; {} samples)",
            r.nodes, r.p50_ms, r.p99_ms, r.latency_samples
        );
        rounds.push(r);
    }
    let json: Vec<serde_json::Value> = rounds
        .iter()
        .map(|r| {
            serde_json::json!({
                "agents": r.nodes, "flows_per_s": r.flows_per_s,
                "relay_cpu_pct": r.relay_cpu_pct, "relay_rss_kib": r.relay_rss_kib,
                "agents_cpu_pct": r.agents_cpu_pct, "flood_flows_delivered": r.delivered, "flood_events_lost": r.lost,
                "relay_peak_rss_kib": r.relay_hwm_kib,
                "latency_p50_ms": r.p50_ms, "latency_p99_ms": r.p99_ms,
                "latency_samples": r.latency_samples,
            })
        })
        .collect();
    println!("{}", serde_json::json!({ "relay_bench": json }));
    Ok(())
}
