//! `relay-bench`: the relay measured on the lab, with 2 and then 4 nodes (an agent each,
//! `monitorAggregation: none` so every packet is a flow, one client and one server pod per
//! node) and one `follow` client reading through the relay.
//!
//! 1. Live throughput: every client pod floods 64-byte UDP to its node's server pod for a
//!    few seconds; figure = flows/s the follow client received over the window, with the
//!    relay's CPU (% of one core, from /proc utime+stime) and RSS meanwhile. The floods and
//!    the agents' datapath share the machine with the relay, so this is capped by traffic
//!    generation as much as by the relay.
//! 2. Latency: every client sends paced UDP (200 datagrams/s); figure = p50/p99 of
//!    (arrival at the follow client − the flow's packet time).
//! 3. Backlog throughput, the fan-in path alone: the floods fill every agent's flow ring,
//!    stop, then a follow client asks for `number` = the ring size (per node, as Hubble
//!    defines it) and reads the agents' backlog through the relay; figure = flows/s from the
//!    first to the last backlog flow, with the relay's CPU and RSS over that window. Read
//!    a few times from the same (unchanged) rings; the median is the figure.
//!
//! Every mode uses the same client: a `follow` GetFlows through the relay that decodes only
//! the response envelope ([`Envelope`]), so the client costs little next to the relay.
//! Each throughput figure comes with the CPU of every process involved.
//!
//! Use release binaries (`LUMEN_BIN_DIR=target/release`) for figures worth quoting. Prints
//! one line per figure with its target, and a JSON summary at the end.

use anyhow::{bail, Context, Result};
use lumen_api::{
    encoded::GET_FLOWS_PATH,
    flow::LostEvent,
    observer::{GetFlowsRequest, ServerStatusRequest},
    wkt::Timestamp,
};
use lumen_integration::{
    hubble, traffic_bin, AgentOptions, Lab, MonitorAggregation, Node, Pod, Relay, RelayOptions,
    Spawned,
};
use prost::bytes::Bytes;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tonic::{codegen::http::uri::PathAndQuery, transport::Endpoint};

const FLOOD_SECONDS: f64 = 5.0;
const PACED_RATE: u64 = 200;
const PACED_SECONDS: u64 = 5;
/// `hubble.eventBufferCapacity` of every agent: the backlog is this many flows per node.
const RING: u64 = 65535;
/// Flooding this long fills every ring (the floods make 60k+ flows/s per node).
const FILL_SECONDS: f64 = 3.0;
const BACKLOG_READS: usize = 3;
const TARGET_FLOWS_PER_S: f64 = 200_000.0;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn clock_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_hz())
}

/// utime + stime of this process's children that have been waited for, in seconds.
fn reaped_children_seconds() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Busy time of all CPUs (everything but idle and iowait), in CPU-seconds.
fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let idle = ticks[3] + ticks[4];
    Ok((ticks.iter().sum::<u64>() - idle) as f64 / clock_hz())
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| key.to_string())
}

/// The processes whose CPU the bench accounts for.
struct Probe {
    relay: u32,
    agents: Vec<u32>,
}

/// CPU-seconds used so far, per process (or group of them).
#[derive(Clone, Copy, Default)]
struct Usage {
    relay: f64,
    agents: f64,
    /// This process: the follow client, and the bench's sampling.
    client: f64,
    /// Children waited for: the traffic generators, once they have exited.
    reaped: f64,
    machine: f64,
}

impl Probe {
    fn usage(&self) -> Result<Usage> {
        Ok(Usage {
            relay: cpu_seconds(self.relay)?,
            agents: self
                .agents
                .iter()
                .map(|p| cpu_seconds(*p))
                .sum::<Result<f64>>()?,
            client: cpu_seconds(std::process::id())?,
            reaped: reaped_children_seconds(),
            machine: machine_busy_seconds()?,
        })
    }
}

/// CPU over a window, in % of one core.
#[derive(Clone, Copy, Default)]
struct CpuPct {
    relay: f64,
    agents: f64,
    client: f64,
    /// Traffic generators (live mode only).
    floods: f64,
    /// All CPUs busy (the machine has two: 200 % is everything).
    machine: f64,
}

impl CpuPct {
    fn between(a: &Usage, b: &Usage, seconds: f64) -> CpuPct {
        let pct = |x: f64, y: f64| (y - x) / seconds * 100.0;
        CpuPct {
            relay: pct(a.relay, b.relay),
            agents: pct(a.agents, b.agents),
            client: pct(a.client, b.client),
            floods: 0.0,
            machine: pct(a.machine, b.machine),
        }
    }

    /// Busy time not in the processes above: softirq work not charged to them, the lab's
    /// other processes, and whatever else shares the machine.
    fn other(&self) -> f64 {
        self.machine - self.relay - self.agents - self.client - self.floods
    }

    fn line(&self) -> String {
        format!(
            "relay {:.1} %, agents {:.1} %, floods {:.1} %, follow client {:.1} %, other {:.1} %; machine busy {:.1} % (of {} %)",
            self.relay,
            self.agents,
            self.floods,
            self.client,
            self.other(),
            self.machine,
            100 * std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "relay": self.relay, "agents": self.agents, "floods": self.floods,
            "follow_client": self.client, "other": self.other(), "machine_busy": self.machine,
        })
    }
}

/// What the bench reads of a `GetFlowsResponse`: enough to count flows and lost events and
/// to time them. The flow stays encoded (a slice of the received buffer, never parsed); the
/// node name and node-status events are skipped unread. The agent sets `time` to the flow's
/// own time.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(bytes = "bytes", optional, tag = "1")]
    flow: Option<Bytes>,
    #[prost(message, optional, tag = "3")]
    lost_events: Option<LostEvent>,
    #[prost(message, optional, tag = "1001")]
    time: Option<Timestamp>,
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

/// A backlog read: which flows are backlog, and when they arrived.
struct Backlog {
    /// Flows older than the request are backlog; later ones are live.
    before_ns: i64,
    /// Backlog flows the agents hold: the read is over at the last of them.
    expected: u64,
    probe: Arc<Probe>,
    state: Mutex<BacklogState>,
}

#[derive(Default)]
struct BacklogState {
    flows: u64,
    first: Option<(Instant, Usage)>,
    last: Option<Instant>,
    /// Sampled at the expected last flow.
    end: Option<Usage>,
}

impl Backlog {
    fn saw(&self) -> Result<()> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        if st.first.is_none() {
            st.first = Some((now, self.probe.usage()?));
        }
        st.flows += 1;
        st.last = Some(now);
        if st.flows == self.expected {
            st.end = Some(self.probe.usage()?);
        }
        Ok(())
    }
}

/// One `follow` GetFlows through the relay, with `number` flows of history per node (0 for
/// none), counted into `seen` and, for a backlog read, timed into `backlog`. Decodes each
/// response as an [`Envelope`] only.
async fn follow(
    addr: String,
    number: u64,
    seen: Arc<Seen>,
    backlog: Option<Arc<Backlog>>,
) -> Result<()> {
    let channel = Endpoint::try_from(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("relay not ready")?;
    let req = GetFlowsRequest {
        number,
        follow: true,
        ..Default::default()
    };
    let mut s = grpc
        .server_streaming(
            tonic::Request::new(req),
            PathAndQuery::from_static(GET_FLOWS_PATH),
            tonic_prost::ProstCodec::<GetFlowsRequest, Envelope>::default(),
        )
        .await?
        .into_inner();
    while let Some(r) = s.message().await? {
        if let Some(l) = &r.lost_events {
            seen.lost.fetch_add(l.num_events_lost, Ordering::Relaxed);
        }
        if r.flow.is_none() {
            continue;
        }
        seen.flows.fetch_add(1, Ordering::Relaxed);
        let t = r.time.map(|t| t.seconds * 1_000_000_000 + t.nanos as i64);
        if let Some(t) = t.filter(|_| seen.record_latency.load(Ordering::Relaxed)) {
            seen.latencies_ns.lock().unwrap().push(now_ns() - t);
        }
        if let Some(b) = &backlog {
            if t.unwrap_or(0) < b.before_ns {
                b.saw()?;
            }
        }
    }
    Ok(())
}

fn percentile(v: &mut [i64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i] as f64 / 1e6
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Every client pod floods its node's server pod for `seconds`.
fn flood(traffic: &std::path::Path, pairs: &[(Pod, Pod)], seconds: f64) -> Result<Vec<Spawned>> {
    pairs
        .iter()
        .map(|(client, server)| {
            client.spawn(
                traffic,
                [
                    "udp-flood",
                    "--to",
                    &format!("{}:9", server.ip()),
                    "--size",
                    "64",
                    "--seconds",
                    &seconds.to_string(),
                ],
            )
        })
        .collect()
}

/// One agent's flow ring, from its ServerStatus.
struct RingStatus {
    num_flows: u64,
    max_flows: u64,
    seen_flows: u64,
}

fn ring_status(rt: &tokio::runtime::Runtime, nodes: &[Node]) -> Result<Vec<RingStatus>> {
    rt.block_on(async {
        let mut out = vec![];
        for node in nodes {
            let mut c = hubble::connect_unix(&node.hubble_socket()).await?;
            let st = c.server_status(ServerStatusRequest {}).await?.into_inner();
            out.push(RingStatus {
                num_flows: st.num_flows,
                max_flows: st.max_flows,
                seen_flows: st.seen_flows,
            });
        }
        Ok(out)
    })
}

/// One backlog read.
struct BacklogRead {
    flows: u64,
    expected: u64,
    flows_per_s: f64,
    seconds: f64,
    /// From sending the request to the first backlog flow.
    first_after_ms: f64,
    cpu: CpuPct,
    relay_rss_kib: u64,
    lost: u64,
}

fn backlog_read(
    rt: &tokio::runtime::Runtime,
    relay: &Relay,
    nodes: &[Node],
    probe: &Arc<Probe>,
) -> Result<BacklogRead> {
    let expected = ring_status(rt, nodes)?
        .iter()
        .map(|s| s.num_flows.min(RING))
        .sum();
    let b = Arc::new(Backlog {
        before_ns: now_ns(),
        expected,
        probe: probe.clone(),
        state: Mutex::default(),
    });
    let seen = Arc::new(Seen::default());
    let asked = Instant::now();
    let reader = rt.spawn(follow(
        relay.addr().to_string(),
        RING,
        seen.clone(),
        Some(b.clone()),
    ));
    let deadline = asked + Duration::from_secs(60);
    let mut rss = 0;
    let (mut progress, mut progress_at) = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        rss = rss.max(status_kib(probe.relay, "VmRSS:")?);
        let flows = {
            let st = b.state.lock().unwrap();
            if st.end.is_some() {
                break;
            }
            st.flows
        };
        if reader.is_finished() {
            rt.block_on(reader)??;
            bail!("the follow stream ended during the backlog");
        }
        if flows != progress {
            (progress, progress_at) = (flows, Instant::now());
        }
        // Fewer than expected (a ring moved on, or the relay dropped some): what came is
        // the read. Before the first flow the agents are still reading their rings.
        let stalled = flows > 0 && progress_at.elapsed() > Duration::from_secs(2);
        if stalled || Instant::now() > deadline {
            break;
        }
    }
    reader.abort();
    let st = b.state.lock().unwrap();
    let (Some((first, u0)), Some(last)) = (st.first, st.last) else {
        bail!("no backlog flow arrived");
    };
    let u1 = match st.end {
        Some(u) => u,
        None => probe.usage()?,
    };
    let seconds = (last - first).as_secs_f64();
    Ok(BacklogRead {
        flows: st.flows,
        expected,
        flows_per_s: (st.flows - 1) as f64 / seconds,
        seconds,
        first_after_ms: (first - asked).as_secs_f64() * 1e3,
        cpu: CpuPct::between(&u0, &u1, seconds),
        relay_rss_kib: rss,
        lost: seen.lost.load(Ordering::Relaxed),
    })
}

struct Round {
    nodes: usize,
    flows_per_s: f64,
    relay_cpu_pct: f64,
    agents_cpu_pct: f64,
    live_cpu: CpuPct,
    /// Flows delivered from the flood, including the backlog after it.
    delivered: u64,
    /// Events reported lost during the flood and its backlog.
    lost: u64,
    relay_rss_kib: u64,
    relay_hwm_kib: u64,
    p50_ms: f64,
    p99_ms: f64,
    latency_samples: usize,
    /// Flows in the rings when the backlog was read, and their capacity.
    rings: (u64, u64),
    backlog: Vec<BacklogRead>,
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
            event_buffer_capacity: RING as u32,
            ..Default::default()
        })?;
        let server = node.add_pod("bench", &format!("server{i}"), &[("app", "server")])?;
        let client = node.add_pod("bench", &format!("client{i}"), &[("app", "client")])?;
        pairs.push((client, server));
        nodes.push(node);
    }
    let relay = Relay::start(&lab, RelayOptions::default())?;
    let pid = relay.pid().context("relay pid")?;
    let probe = Arc::new(Probe {
        relay: pid,
        agents: nodes.iter().filter_map(|n| n.agent_pid()).collect(),
    });

    // One follow client, counting flows and (when asked) their packet→client latency.
    let seen = Arc::new(Seen::default());
    let reader = rt.spawn(follow(relay.addr().to_string(), 0, seen.clone(), None));
    std::thread::sleep(Duration::from_secs(1));

    // 1. Live throughput.
    let flows0 = seen.flows.load(Ordering::Relaxed);
    let lost0 = seen.lost.load(Ordering::Relaxed);
    let u0 = probe.usage()?;
    let t0 = Instant::now();
    let floods = flood(&traffic, &pairs, FLOOD_SECONDS)?;
    let mut rss = 0;
    while t0.elapsed().as_secs_f64() < FLOOD_SECONDS {
        std::thread::sleep(Duration::from_millis(500));
        rss = rss.max(status_kib(pid, "VmRSS:")?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let flows1 = seen.flows.load(Ordering::Relaxed);
    let u1 = probe.usage()?;
    for f in floods {
        let _ = f.wait(Duration::from_secs(10));
    }
    let mut live_cpu = CpuPct::between(&u0, &u1, elapsed);
    live_cpu.floods = (reaped_children_seconds() - u0.reaped) / elapsed * 100.0;
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

    // 3. Backlog: fill the rings, stop, wait until the agents have taken in every event
    // (their seen count stands still), then read the rings through the relay.
    for f in flood(&traffic, &pairs, FILL_SECONDS)? {
        let _ = f.wait(Duration::from_secs(10));
    }
    let mut seen_flows = u64::MAX;
    let rings = loop {
        std::thread::sleep(Duration::from_millis(300));
        let st = ring_status(rt, &nodes)?;
        let now: u64 = st.iter().map(|s| s.seen_flows).sum();
        if now == seen_flows {
            break st;
        }
        seen_flows = now;
    };
    let rings = (
        rings.iter().map(|s| s.num_flows).sum(),
        rings.iter().map(|s| s.max_flows).sum(),
    );
    let backlog = (0..BACKLOG_READS)
        .map(|i| {
            let r = backlog_read(rt, &relay, &nodes, &probe)
                .with_context(|| format!("backlog read {} of {BACKLOG_READS}", i + 1));
            // Let the relay close the previous stream to the agents first.
            std::thread::sleep(Duration::from_millis(500));
            r
        })
        .collect::<Result<Vec<_>>>()?;
    drop(relay);
    Ok(Round {
        nodes: n,
        flows_per_s: (flows1 - flows0) as f64 / elapsed,
        relay_cpu_pct: live_cpu.relay,
        agents_cpu_pct: live_cpu.agents,
        live_cpu,
        delivered,
        lost,
        relay_rss_kib: rss,
        relay_hwm_kib: hwm,
        p50_ms: percentile(&mut lat, 0.50),
        p99_ms: percentile(&mut lat, 0.99),
        latency_samples: lat.len(),
        rings,
        backlog,
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
            "relay, {} agents, live flood: {:9.0} flows/s to one follow client (target ≥ 200,000), relay CPU {:5.1} % of a core, RSS {} KiB (peak {} KiB); agents' CPU {:5.1} %; {} flows delivered in all, {} events reported lost",
            r.nodes, r.flows_per_s, r.relay_cpu_pct, r.relay_rss_kib, r.relay_hwm_kib, r.agents_cpu_pct, r.delivered, r.lost
        );
        println!("    live CPU (% of a core): {}", r.live_cpu.line());
        println!(
            "relay, {} agents: packet→client latency p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 250 ms; {} samples)",
            r.nodes, r.p50_ms, r.p99_ms, r.latency_samples
        );
        let rates: Vec<f64> = r.backlog.iter().map(|b| b.flows_per_s).collect();
        let mid = r
            .backlog
            .iter()
            .find(|b| b.flows_per_s == median(&rates))
            .context("no backlog read")?;
        println!(
            "relay, {} agents, backlog: {:9.0} flows/s to one follow client (target ≥ 200,000; median of {} reads: {}), relay CPU {:5.1} % of a core, RSS {} KiB; rings held {} of {} flows",
            r.nodes,
            mid.flows_per_s,
            rates.len(),
            rates.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", "),
            mid.cpu.relay,
            mid.relay_rss_kib,
            r.rings.0,
            r.rings.1,
        );
        for b in &r.backlog {
            println!(
                "    backlog read: {} of {} flows in {:.3} s ({:.0} flows/s, first after {:.0} ms, {} lost); CPU (% of a core): {}",
                b.flows, b.expected, b.seconds, b.flows_per_s, b.first_after_ms, b.lost, b.cpu.line()
            );
        }
        rounds.push(r);
    }
    let json: Vec<serde_json::Value> = rounds
        .iter()
        .map(|r| {
            let backlog: Vec<serde_json::Value> = r
                .backlog
                .iter()
                .map(|b| {
                    serde_json::json!({
                        "flows_per_s": b.flows_per_s, "flows": b.flows, "expected": b.expected,
                        "seconds": b.seconds, "first_after_ms": b.first_after_ms,
                        "relay_cpu_pct": b.cpu.relay, "relay_rss_kib": b.relay_rss_kib,
                        "cpu_pct": b.cpu.json(), "events_lost": b.lost,
                    })
                })
                .collect();
            let rates: Vec<f64> = r.backlog.iter().map(|b| b.flows_per_s).collect();
            serde_json::json!({
                "agents": r.nodes, "flows_per_s": r.flows_per_s,
                "relay_cpu_pct": r.relay_cpu_pct, "relay_rss_kib": r.relay_rss_kib,
                "agents_cpu_pct": r.agents_cpu_pct, "flood_flows_delivered": r.delivered, "flood_events_lost": r.lost,
                "relay_peak_rss_kib": r.relay_hwm_kib,
                "live_cpu_pct": r.live_cpu.json(),
                "latency_p50_ms": r.p50_ms, "latency_p99_ms": r.p99_ms,
                "latency_samples": r.latency_samples,
                "backlog_flows_per_s": median(&rates),
                "backlog_ring_flows": r.rings.0, "backlog_ring_capacity": r.rings.1,
                "backlog_reads": backlog,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({ "relay_bench": json, "target_flows_per_s": TARGET_FLOWS_PER_S })
    );
    Ok(())
}
