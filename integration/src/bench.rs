//! Helpers for the lab benchmarks: medians, single-stream iperf3 runs, and an in-process
//! new-connections/s load generator with the echo servers it talks to.
//!
//! The load generator and the servers are threads of the benchmark process that join a
//! pod's network namespace (`setns` on the thread; a socket stays in the namespace it was
//! made in), so tens of thousands of connections per second cost no process spawns.
//!
//! One connection: connect, send 64 bytes, read the 64-byte echo, close. The client closes
//! first, with `SO_LINGER` 0 (a reset), and the server closes on it, so neither side keeps
//! a `TIME_WAIT` socket and the client never runs out of ephemeral ports however many
//! connections a run makes.

use crate::{netns, Pod};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Bytes sent and echoed on each connection.
pub const EXCHANGE_BYTES: usize = 64;

/// The median of `v` (the upper one for an even count); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One single-stream TCP iperf3 run of `seconds` from `client` to `server:port`: Gbit/s
/// received.
pub fn iperf_tcp_gbps(client: &Pod, server: IpAddr, port: u16, seconds: u32) -> Result<f64> {
    Ok(iperf_tcp(client, server, port, seconds)?.gbps)
}

/// Starts a TCP echo server for [`conn_rate`] on `port` in `pod`'s namespace: `workers`
/// threads each accept a connection, echo [`EXCHANGE_BYTES`] and close it. The threads run
/// until the process exits.
pub fn spawn_echo_server(pod: &Pod, port: u16, workers: usize) -> Result<()> {
    let listener = netns::in_netns(pod.netns(), move || {
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding TCP {port}"))
    })
    .with_context(|| format!("echo server in {}", pod.name()))?;
    for _ in 0..workers.max(1) {
        let listener = listener.try_clone()?;
        std::thread::spawn(move || loop {
            let Ok((mut conn, _)) = listener.accept() else {
                continue;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; EXCHANGE_BYTES];
            if conn.read_exact(&mut buf).is_ok() && conn.write_all(&buf).is_ok() {
                // Wait for the client's reset (or FIN): the client closes first, so this
                // side keeps no FIN_WAIT or TIME_WAIT socket that a later connection with
                // the same addresses and ports could run into.
                let _ = conn.read(&mut buf);
            }
        });
    }
    Ok(())
}

/// What one [`conn_rate`] run achieved.
#[derive(Debug, Clone, Copy)]
pub struct ConnRate {
    /// Completed connections (echo received) per second of the run.
    pub per_second: f64,
    /// Completed connections.
    pub ok: u64,
    /// Connections that failed (connect, send or echo).
    pub failed: u64,
}

/// New TCP connections per second for `duration`: `workers` threads (spread round-robin
/// over `clients`' namespaces) each open connections one after another, worker `w`'s
/// `i`-th to `targets[(w + i) % len]` (round-robin over the targets).
pub fn conn_rate(
    clients: &[&Pod],
    targets: &[SocketAddr],
    workers: usize,
    duration: Duration,
) -> Result<ConnRate> {
    if clients.is_empty() || targets.is_empty() {
        bail!("conn_rate needs a client and a target");
    }
    let targets: Arc<Vec<SocketAddr>> = Arc::new(targets.to_vec());
    let start = Arc::new(Barrier::new(workers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = vec![];
    for w in 0..workers {
        let fd = netns::open_netns(clients[w % clients.len()].netns())?;
        let (targets, start, stop) = (targets.clone(), start.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<(u64, u64)> {
            let entered = netns::enter_netns(&fd).context("setns");
            start.wait();
            entered?;
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut i = w;
            let payload = [0x5au8; EXCHANGE_BYTES];
            let mut buf = [0u8; EXCHANGE_BYTES];
            while !stop.load(Ordering::Relaxed) {
                let to = targets[i % targets.len()];
                i += 1;
                if exchange(&to, &payload, &mut buf).is_ok() {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            Ok((ok, failed))
        }));
    }
    start.wait();
    let began = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for t in threads {
        let (o, f) = t
            .join()
            .map_err(|_| anyhow::anyhow!("load worker panicked"))??;
        ok += o;
        failed += f;
    }
    // The last connection of each worker may finish a little after the stop.
    let secs = began.elapsed().as_secs_f64();
    Ok(ConnRate {
        per_second: ok as f64 / secs,
        ok,
        failed,
    })
}

/// One connection of [`conn_rate`].
fn exchange(
    to: &SocketAddr,
    payload: &[u8; EXCHANGE_BYTES],
    buf: &mut [u8; EXCHANGE_BYTES],
) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(to, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(payload)?;
    s.read_exact(buf)?;
    // A reset instead of FIN + TIME_WAIT: the port is free again at once.
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
    Ok(())
}

/// Whether a full [`conn_rate`] exchange from `pod` to `to` succeeds (1 s timeouts).
pub fn echo_works(pod: &Pod, to: SocketAddr) -> bool {
    netns::in_netns(pod.netns(), move || {
        let mut buf = [0u8; EXCHANGE_BYTES];
        exchange(&to, &[1u8; EXCHANGE_BYTES], &mut buf)?;
        Ok(())
    })
    .is_ok()
}

/// Polls `f` every 50 ms until it holds or `timeout` passes: how long it took, or `None`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bytes of each request and each response of [`tcp_rr`] (netperf `TCP_RR`'s default).
pub const RR_BYTES: usize = 1;

/// Starts a TCP echo server for [`tcp_rr`] on `port` in `pod`'s namespace: one thread per
/// connection echoes whatever it reads, with `TCP_NODELAY`, until the peer closes. It also
/// answers [`echo_works`]. `cpu`: the connection threads run on that CPU only. The threads
/// run until the process exits.
pub fn spawn_rr_server(pod: &Pod, port: u16, cpu: Option<usize>) -> Result<()> {
    let listener = netns::in_netns(pod.netns(), move || {
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding TCP {port}"))
    })
    .with_context(|| format!("request/response server in {}", pod.name()))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if let Some(cpu) = cpu {
                    let _ = pin_thread(cpu);
                }
                let _ = conn.set_nodelay(true);
                let mut buf = [0u8; 4096];
                loop {
                    match (&conn).read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if (&conn).write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

/// What one [`tcp_rr`] run achieved.
#[derive(Debug, Clone, Copy)]
pub struct RrRate {
    /// Completed transactions (request sent, response read) per second, all connections.
    pub per_second: f64,
    /// Completed transactions.
    pub transactions: u64,
    /// Connections that broke before the end (a read or write failed or timed out).
    pub broken: u64,
}

/// TCP request/response rate, like netperf `TCP_RR`: `connections` connections from
/// `client`'s namespace to `to` (a [`spawn_rr_server`]), each a thread sending
/// [`RR_BYTES`] and waiting for the [`RR_BYTES`] answer, back to back, for `duration`.
/// Connections are opened before the clock starts. `cpu`: the client threads run on that
/// CPU only. Fails if a connection cannot be opened.
pub fn tcp_rr(
    client: &Pod,
    to: SocketAddr,
    connections: usize,
    duration: Duration,
    cpu: Option<usize>,
) -> Result<RrRate> {
    let connections = connections.max(1);
    let start = Arc::new(Barrier::new(connections + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = vec![];
    for _ in 0..connections {
        let fd = netns::open_netns(client.netns())?;
        let (start, stop) = (start.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<(u64, bool)> {
            if let Some(cpu) = cpu {
                let _ = pin_thread(cpu);
            }
            let opened = netns::enter_netns(&fd).context("setns").and_then(|()| {
                let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                    .with_context(|| format!("connecting to {to}"))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.set_write_timeout(Some(Duration::from_secs(2)))?;
                Ok(s)
            });
            start.wait();
            let mut s = opened?;
            let (req, mut resp) = ([0x5au8; RR_BYTES], [0u8; RR_BYTES]);
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&req)
                    .and_then(|()| s.read_exact(&mut resp))
                    .is_err()
                {
                    return Ok((done, true));
                }
                done += 1;
            }
            Ok((done, false))
        }));
    }
    start.wait();
    let began = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let (mut transactions, mut broken) = (0, 0);
    let mut first_error = None;
    for t in threads {
        match t
            .join()
            .map_err(|_| anyhow::anyhow!("request/response worker panicked"))?
        {
            Ok((n, b)) => {
                transactions += n;
                broken += u64::from(b);
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let secs = began.elapsed().as_secs_f64();
    Ok(RrRate {
        per_second: transactions as f64 / secs,
        transactions,
        broken,
    })
}

/// Restricts the calling thread to CPU `cpu`.
pub fn pin_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for
    // cpu < CPU_SETSIZE, which sched_setaffinity checks against the machine anyway.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One [`iperf_tcp`] run.
#[derive(Debug, Clone, Copy)]
pub struct IperfRun {
    /// Gbit/s received.
    pub gbps: f64,
    /// Segments the sender retransmitted.
    pub retransmits: u64,
}

/// Like [`iperf_tcp_gbps`], with the sender's retransmissions.
pub fn iperf_tcp(client: &Pod, server: IpAddr, port: u16, seconds: u32) -> Result<IperfRun> {
    let out = client.exec(
        "iperf3",
        [
            "-c",
            &server.to_string(),
            "-p",
            &port.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ],
    )?;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stdout)))?;
    if let Some(e) = j.get("error") {
        bail!("iperf3 to {server}:{port}: {e}");
    }
    Ok(IperfRun {
        gbps: j["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9,
        retransmits: j["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}
