//! `lab-traffic`: the traffic tool the lab runs inside pods and nodes. Servers (`serve`),
//! one-shot clients that print one JSON summary line and exit non-zero when something was
//! lost (`tcp`, `udp`, `icmp`), the demo's continuous mix (`loop`) and a bounded UDP blast for
//! benchmarks (`udp-flood`).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "lab-traffic",
    about = "Traffic generator and servers for the Lumen lab"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// TCP echo (or discard) servers and UDP echo servers; runs until killed.
    Serve(ServeArgs),
    /// TCP connections: send bytes, read the echo, close with FIN.
    Tcp(TcpArgs),
    /// UDP datagrams, optionally waiting for each echo.
    Udp(UdpArgs),
    /// ICMP echo requests through a raw socket.
    Icmp(IcmpArgs),
    /// Forever (or --iterations times): a TCP exchange, a UDP echo and one ICMP echo.
    Loop(LoopArgs),
    /// UDP datagrams as fast as possible for a bounded time.
    UdpFlood(FloodArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TCP ports to serve.
    #[arg(long = "tcp", num_args = 1..)]
    tcp: Vec<u16>,
    /// UDP ports to echo on.
    #[arg(long = "udp", num_args = 1..)]
    udp: Vec<u16>,
    /// TCP servers read and discard instead of echoing.
    #[arg(long)]
    discard: bool,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
}

#[derive(Args)]
struct TcpArgs {
    /// Server address.
    #[arg(long)]
    to: SocketAddr,
    /// Bytes to send on each connection.
    #[arg(long, default_value_t = 1024)]
    bytes: u64,
    /// Connections, one after another.
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// The server discards: expect no echo.
    #[arg(long)]
    no_echo: bool,
    /// Connect and read timeout.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Source port of every connection (default: an ephemeral one). Reusing it right
    /// after a close needs `net.ipv4.tcp_tw_reuse=1` in the client's namespace.
    #[arg(long)]
    src_port: Option<u16>,
    /// Text the bytes sent repeat (default: 0x5a bytes), e.g. a marker a capture must
    /// not show in clear.
    #[arg(long)]
    payload: Option<String>,
}

#[derive(Args)]
struct UdpArgs {
    /// Server address.
    #[arg(long)]
    to: SocketAddr,
    /// Datagrams to send.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Payload size in bytes (at least 8: a sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Datagrams per second (0: no pacing).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Do not wait for echoes.
    #[arg(long)]
    no_reply: bool,
    /// How long to wait for each echo.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct IcmpArgs {
    /// Target address (IPv4).
    #[arg(long)]
    to: Ipv4Addr,
    /// Echo requests to send.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Pause between requests.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long to wait for each reply.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct LoopArgs {
    /// Target address.
    #[arg(long)]
    to: IpAddr,
    /// TCP echo port.
    #[arg(long)]
    tcp_port: u16,
    /// UDP echo port.
    #[arg(long)]
    udp_port: u16,
    /// Pause between rounds.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many rounds (default: run until killed).
    #[arg(long)]
    iterations: Option<u64>,
}

#[derive(Args)]
struct FloodArgs {
    /// Target address.
    #[arg(long)]
    to: SocketAddr,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to send (at most 600).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).map(|()| true),
        Command::Tcp(args) => Ok(print_summary(tcp(&args))),
        Command::Udp(args) => udp(&args).map(print_summary),
        Command::Icmp(args) => icmp(&args).map(print_summary),
        Command::Loop(args) => run_loop(&args).map(|()| true),
        Command::UdpFlood(args) => udp_flood(&args).map(print_summary),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            println!("{}", json!({ "error": format!("{e:#}") }));
            std::process::exit(2);
        }
    }
}

/// Prints the summary line; whether it says everything arrived (`"ok": true`).
fn print_summary(summary: Value) -> bool {
    println!("{summary}");
    summary["ok"].as_bool().unwrap_or(false)
}

fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

// ---- serve ----

fn serve(args: ServeArgs) -> Result<()> {
    if args.tcp.is_empty() && args.udp.is_empty() {
        bail!("nothing to serve: give --tcp and/or --udp ports");
    }
    let mut threads = Vec::new();
    for &port in &args.tcp {
        let listener =
            TcpListener::bind((args.bind, port)).with_context(|| format!("binding TCP {port}"))?;
        let discard = args.discard;
        threads.push(std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || serve_tcp_conn(conn, port, discard));
            }
        }));
    }
    for &port in &args.udp {
        let socket =
            UdpSocket::bind((args.bind, port)).with_context(|| format!("binding UDP {port}"))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        }));
    }
    emit(
        json!({ "event": "listening", "tcp": args.tcp, "udp": args.udp, "discard": args.discard }),
    );
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

fn serve_tcp_conn(conn: TcpStream, port: u16, discard: bool) {
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let result = if discard {
        std::io::copy(&mut &conn, &mut std::io::sink())
    } else {
        std::io::copy(&mut &conn, &mut &conn)
    };
    // Our FIN after theirs: a clean close both ways.
    let _ = conn.shutdown(Shutdown::Write);
    let (bytes, error) = match result {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e.to_string())),
    };
    emit(
        json!({ "event": "tcp_closed", "port": port, "peer": peer, "bytes": bytes, "error": error }),
    );
}

// ---- tcp ----

fn tcp(args: &TcpArgs) -> Value {
    let start = Instant::now();
    let (mut ok, mut sent, mut received) = (0u32, 0u64, 0u64);
    let mut errors = Vec::new();
    for _ in 0..args.connections {
        match tcp_exchange(
            args.to,
            args.bytes,
            !args.no_echo,
            args.timeout,
            args.src_port,
            args.payload.as_deref().map(str::as_bytes),
        ) {
            Ok((s, r)) => {
                ok += 1;
                sent += s;
                received += r;
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    json!({
        "mode": "tcp", "to": args.to.to_string(), "connections": args.connections,
        "succeeded": ok, "failed": args.connections - ok,
        "bytes_sent": sent, "bytes_received": received,
        "elapsed_ms": start.elapsed().as_millis() as u64,
        "errors": errors, "ok": ok == args.connections,
    })
}

/// One connection: send `bytes` (from a writer thread, so a large echo cannot deadlock), FIN,
/// read until the server's FIN. Returns (sent, received).
fn tcp_exchange(
    to: SocketAddr,
    bytes: u64,
    echo: bool,
    timeout: Duration,
    src_port: Option<u16>,
    payload: Option<&[u8]>,
) -> Result<(u64, u64)> {
    let stream = match src_port {
        None => TcpStream::connect_timeout(&to, timeout).context("connect")?,
        Some(port) => {
            let domain = socket2::Domain::for_address(to);
            let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            let any: SocketAddr = if to.is_ipv4() {
                ([0, 0, 0, 0], port).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, port).into()
            };
            socket
                .bind(&any.into())
                .with_context(|| format!("bind to port {port}"))?;
            socket
                .connect_timeout(&to.into(), timeout)
                .context("connect")?;
            socket.into()
        }
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let writer = stream.try_clone()?;
    let payload = payload.map(<[u8]>::to_vec);
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        let chunk: Vec<u8> = match payload.as_deref() {
            Some(p) if !p.is_empty() => p.iter().copied().cycle().take(16384).collect(),
            _ => vec![0x5a; 16384],
        };
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            (&writer).write_all(&chunk[..n])?;
            left -= n as u64;
        }
        writer.shutdown(Shutdown::Write)?;
        Ok(bytes)
    });
    let mut received = 0u64;
    let mut buf = [0u8; 16384];
    let read_result = loop {
        match (&stream).read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => received += n as u64,
            Err(e) => break Err(e),
        }
    };
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?
        .context("send")?;
    read_result.with_context(|| format!("read after {received} bytes"))?;
    let expected = if echo { sent } else { 0 };
    if received != expected {
        bail!("received {received} bytes, expected {expected}");
    }
    Ok((sent, received))
}

// ---- udp ----

fn udp(args: &UdpArgs) -> Result<Value> {
    if args.size < 8 {
        bail!("--size must be at least 8");
    }
    let socket = UdpSocket::bind(unspecified_for(args.to.ip()))?;
    socket.connect(args.to)?;
    socket.set_read_timeout(Some(args.timeout))?;
    let start = Instant::now();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut errors = Vec::new();
    let mut payload = vec![0xa5u8; args.size];
    let mut buf = vec![0u8; 65536];
    for seq in 0..args.count {
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(seq as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        if let Err(e) = socket.send(&payload) {
            errors.push(format!("send {seq}: {e}"));
            continue;
        }
        sent += 1;
        if args.no_reply {
            continue;
        }
        let deadline = Instant::now() + args.timeout;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[..8] == seq.to_be_bytes() => {
                    received += 1;
                    break;
                }
                Ok(_) if Instant::now() < deadline => continue, // a late echo of an earlier datagram
                Ok(_) => break,
                Err(e) => {
                    if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                        errors.push(format!("recv {seq}: {e}"));
                    }
                    break;
                }
            }
        }
    }
    let expected = if args.no_reply { 0 } else { sent };
    errors.truncate(20);
    Ok(json!({
        "mode": "udp", "to": args.to.to_string(), "sent": sent, "received": received,
        "lost": expected - received, "size": args.size,
        "elapsed_ms": start.elapsed().as_millis() as u64,
        "errors": errors, "ok": sent == args.count && received == expected,
    }))
}

fn unspecified_for(ip: IpAddr) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    }
}

// ---- icmp ----

/// A raw ICMP socket and the echo identifier it uses.
struct Pinger {
    socket: Socket,
    ident: u16,
}

impl Pinger {
    fn new() -> Result<Pinger> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::from(libc::SOCK_RAW),
            Some(Protocol::ICMPV4),
        )
        .context("opening a raw ICMP socket (needs root or CAP_NET_RAW)")?;
        Ok(Pinger {
            socket,
            ident: (std::process::id() & 0xffff) as u16,
        })
    }

    /// One echo request; the round-trip time if the reply came within `timeout`.
    fn ping(&self, to: Ipv4Addr, seq: u16, timeout: Duration) -> Result<Option<Duration>> {
        let packet = echo_request(self.ident, seq, b"lumen-lab-traffic");
        let start = Instant::now();
        self.socket
            .send_to(&packet, &SockAddr::from(SocketAddr::from((to, 0))))
            .context("sendto")?;
        let mut buf = [0u8; 2048];
        loop {
            let Some(left) = timeout
                .checked_sub(start.elapsed())
                .filter(|d| !d.is_zero())
            else {
                return Ok(None);
            };
            self.socket.set_read_timeout(Some(left))?;
            let n = match (&self.socket).read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) => return Err(e).context("recv"),
            };
            if is_echo_reply(&buf[..n], to, self.ident, seq) {
                return Ok(Some(start.elapsed()));
            }
        }
    }
}

/// An ICMP echo request with its checksum.
fn echo_request(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether a raw IPv4 packet (IP header included) is the echo reply from `from` to our request.
fn is_echo_reply(packet: &[u8], from: Ipv4Addr, ident: u16, seq: u16) -> bool {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return false;
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let Some(icmp) = packet.get(header_len..header_len + 8) else {
        return false;
    };
    Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]) == from
        && icmp[0] == 0
        && icmp[1] == 0
        && icmp[4..6] == ident.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

fn icmp(args: &IcmpArgs) -> Result<Value> {
    let pinger = Pinger::new()?;
    let mut rtts = Vec::new();
    for seq in 0..args.count {
        if seq > 0 {
            std::thread::sleep(args.interval);
        }
        if let Some(rtt) = pinger.ping(args.to, seq as u16, args.timeout)? {
            rtts.push(rtt.as_secs_f64() * 1000.0);
        }
    }
    let received = rtts.len() as u32;
    let avg = if rtts.is_empty() {
        None
    } else {
        Some(rtts.iter().sum::<f64>() / rtts.len() as f64)
    };
    Ok(json!({
        "mode": "icmp", "to": args.to.to_string(), "sent": args.count, "received": received,
        "lost": args.count - received,
        "rtt_ms": { "min": rtts.iter().copied().reduce(f64::min), "avg": avg, "max": rtts.iter().copied().reduce(f64::max) },
        "ok": received == args.count,
    }))
}

// ---- loop ----

fn run_loop(args: &LoopArgs) -> Result<()> {
    let pinger = match args.to {
        IpAddr::V4(_) => Some(Pinger::new()?),
        IpAddr::V6(_) => None,
    };
    let timeout = Duration::from_secs(1);
    let udp_socket = UdpSocket::bind(unspecified_for(args.to))?;
    udp_socket.connect((args.to, args.udp_port))?;
    udp_socket.set_read_timeout(Some(timeout))?;
    let mut round = 0u64;
    while args.iterations.is_none_or(|n| round < n) {
        if round > 0 {
            std::thread::sleep(args.interval);
        }
        let tcp = match tcp_exchange(
            SocketAddr::new(args.to, args.tcp_port),
            64,
            true,
            timeout,
            None,
            None,
        ) {
            Ok(_) => json!(true),
            Err(e) => json!(format!("{e:#}")),
        };
        let udp = udp_round(&udp_socket, round);
        let icmp = match (&pinger, args.to) {
            (Some(p), IpAddr::V4(to)) => match p.ping(to, round as u16, timeout) {
                Ok(Some(_)) => json!(true),
                Ok(None) => json!("timeout"),
                Err(e) => json!(format!("{e:#}")),
            },
            _ => json!("skipped (IPv6)"),
        };
        emit(json!({ "mode": "loop", "round": round, "tcp": tcp, "udp": udp, "icmp": icmp }));
        round += 1;
    }
    Ok(())
}

fn udp_round(socket: &UdpSocket, round: u64) -> Value {
    let payload = round.to_be_bytes();
    if let Err(e) = socket.send(&payload) {
        return json!(e.to_string());
    }
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) if n >= 8 && buf[..8] == payload => return json!(true),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return json!("timeout")
            }
            Err(e) => return json!(e.to_string()),
        }
    }
}

// ---- udp-flood ----

fn udp_flood(args: &FloodArgs) -> Result<Value> {
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    let socket = UdpSocket::bind(unspecified_for(args.to.ip()))?;
    socket.connect(args.to)?;
    let payload = vec![0x5au8; args.size];
    let duration = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    'outer: loop {
        // Check the clock every 256 datagrams: cheap, and still stops on time.
        for _ in 0..256 {
            match socket.send(&payload) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        if start.elapsed() >= duration {
            break 'outer;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "mode": "udp-flood", "to": args.to.to_string(), "size": args.size,
        "sent": sent, "errors": errors, "seconds": elapsed,
        "packets_per_second": sent as f64 / elapsed,
        "megabits_per_second": sent as f64 * args.size as f64 * 8.0 / elapsed / 1e6,
        "ok": sent > 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let packet = echo_request(0x1234, 7, b"abc");
        assert_eq!(&packet[..2], &[8, 0]);
        assert_eq!(checksum(&packet), 0);
    }

    #[test]
    fn recognises_its_echo_reply() {
        let mut reply = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        let from = Ipv4Addr::new(10, 0, 0, 2);
        assert!(is_echo_reply(&reply, from, 0x1234, 7));
        assert!(!is_echo_reply(&reply, from, 0x1234, 8));
        assert!(!is_echo_reply(
            &reply,
            Ipv4Addr::new(10, 0, 0, 3),
            0x1234,
            7
        ));
        reply[20] = 8; // a request, not a reply
        assert!(!is_echo_reply(&reply, from, 0x1234, 7));
    }
}
