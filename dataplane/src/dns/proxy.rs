//! The transparent DNS proxy: a UDP listener on the pods' gateway address that the
//! datapath redirects redirected endpoints' queries to.
//!
//! For each query: find the server the pod addressed (`DNS_NAT`) and the endpoint's DNS
//! policy; a name the policy forbids gets `dnsProxy.dnsRejectResponseCode` (REFUSED) and a
//! policy-denied drop flow; otherwise the query goes to the server as it came, and the
//! response is parsed: a response that does not parse, answers another query, or does not
//! come in `upstreamTimeout` becomes SERVFAIL for the pod. New (name, address) pairs are
//! recorded and the policy maps regenerated **before** the answer is passed on, unchanged.
//!
//! TCP queries (length-prefixed, RFC 1035 4.2.2) on the same port are handled the same
//! way, each forwarded over its own TCP connection to the server.
//!
//! Every query is handled in its own task; nothing a server or pod sends can stop the
//! listener (errors are logged and counted, never propagated).

use super::message::{error_reply, parse_query, parse_response, Question};
use crate::{agent::Agent, config::dns::RejectCode, events::Event, pipeline::Pipeline};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use hickory_proto::op::ResponseCode;
use lumen_abi::{dns_maps, DnsProxyConfig, L4Addr, LbTupleKey};
use lumen_api::flow::{L7FlowType as FlowKind, Layer7};
use parking_lot::Mutex;
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

/// How a query reached the proxy (and goes on to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// Reads one length-prefixed DNS message (RFC 1035 4.2.2); `None` at a clean end.
async fn read_framed(conn: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match conn.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

/// Writes one length-prefixed DNS message.
async fn write_framed(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut buf = Vec::with_capacity(msg.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
    conn.write_all(&buf).await
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listener could not be bound.
    #[error("DNS proxy: bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A pinned map could not be opened or written.
    #[error("DNS proxy: map {name}: {source}")]
    Map {
        /// The map.
        name: &'static str,
        /// Why.
        source: aya::maps::MapError,
    },
}

/// Counters, for the log and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries received.
    pub queries: AtomicU64,
    /// Queries refused by policy.
    pub refused: AtomicU64,
    /// SERVFAIL answers the proxy wrote (server unusable).
    pub servfail: AtomicU64,
    /// Regenerations an answer caused.
    pub regenerations: AtomicU64,
}

struct Proxy {
    agent: Arc<Agent>,
    sock: UdpSocket,
    local: SocketAddrV4,
    nat: Mutex<BpfHashMap<MapData, LbTupleKey, L4Addr>>,
    pipeline: Mutex<Pipeline>,
    stats: Arc<Stats>,
}

fn v4(a: Ipv4Addr) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&a.octets());
    o
}

fn open(dir: &Path, name: &'static str) -> Result<MapData, ProxyError> {
    MapData::from_pin(dir.join(name)).map_err(|source| ProxyError::Map { name, source })
}

/// Runs the proxy until the process ends: waits for IPAM (the gateway address), binds,
/// tells the datapath where it listens, and serves. Also ages the FQDN cache out.
pub async fn run(agent: Arc<Agent>, stats: Arc<Stats>) -> Result<(), ProxyError> {
    let gateway = loop {
        match agent.gateway().await {
            Ok(IpAddr::V4(g)) => break g,
            Ok(IpAddr::V6(_)) => {
                tracing::warn!("DNS proxy: IPv6 pod gateway; the proxy is IPv4 only");
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "DNS proxy waits for IPAM");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let want = SocketAddr::from((gateway, agent.cfg.dns_proxy.proxy_port));
    let sock = UdpSocket::bind(want)
        .await
        .map_err(|source| ProxyError::Bind { addr: want, source })?;
    let local = match sock.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(gateway, agent.cfg.dns_proxy.proxy_port),
    };
    // TCP on the same port: queries too large for UDP, and clients that prefer TCP.
    let tcp_addr = SocketAddr::V4(local);
    let tcp = TcpListener::bind(tcp_addr)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: tcp_addr,
            source,
        })?;
    let maps = agent.cfg.pin_dir().join("maps");
    let nat = BpfHashMap::try_from(Map::LruHashMap(open(&maps, dns_maps::DNS_NAT)?)).map_err(
        |source| ProxyError::Map {
            name: dns_maps::DNS_NAT,
            source,
        },
    )?;
    let mut cfg_map: Array<MapData, DnsProxyConfig> =
        Array::try_from(Map::Array(open(&maps, dns_maps::DNS_PROXY)?)).map_err(|source| {
            ProxyError::Map {
                name: dns_maps::DNS_PROXY,
                source,
            }
        })?;
    cfg_map
        .set(
            0,
            DnsProxyConfig {
                addr: gateway.octets(),
                port: local.port(),
                _pad: [0; 2],
            },
            0,
        )
        .map_err(|source| ProxyError::Map {
            name: dns_maps::DNS_PROXY,
            source,
        })?;
    tracing::info!(listen = %local, "DNS proxy serving redirected endpoints");
    let proxy = Arc::new(Proxy {
        pipeline: Mutex::new(Pipeline::new(
            &agent.node_name,
            crate::pipeline::Clock::now(),
        )),
        agent,
        sock,
        local,
        nat: Mutex::new(nat),
        stats,
    });
    tokio::spawn(expire(proxy.agent.clone()));
    {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            loop {
                match tcp.accept().await {
                    Ok((conn, peer)) => {
                        let p = proxy.clone();
                        tokio::spawn(async move { p.handle_tcp(conn, peer).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "DNS proxy: TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match proxy.sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "DNS proxy: receive failed");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let p = proxy.clone();
        tokio::spawn(async move { p.handle(query, peer).await });
    }
}

/// Ages the FQDN cache out every second; regenerates when addresses went.
async fn expire(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if agent.dns.expire() {
            let a = agent.clone();
            let _ = tokio::task::spawn_blocking(move || a.regenerate()).await;
        }
    }
}

impl Proxy {
    /// The server a redirected pod connection addressed (`DNS_NAT`).
    fn original_server(&self, peer: SocketAddrV4, proto: u8) -> Option<SocketAddr> {
        let key = LbTupleKey {
            client_ip: v4(*peer.ip()),
            server_ip: v4(*self.local.ip()),
            client_port: peer.port(),
            server_port: self.local.port(),
            proto,
            _pad: [0; 3],
        };
        self.nat.lock().get(&key, 0).ok().map(|o| {
            SocketAddr::from((
                Ipv4Addr::new(o.addr[0], o.addr[1], o.addr[2], o.addr[3]),
                o.port,
            ))
        })
    }

    /// One UDP query: answered on the listener.
    async fn handle(&self, query: Vec<u8>, peer: SocketAddr) {
        let SocketAddr::V4(peer4) = peer else {
            return;
        };
        let server = self.original_server(peer4, lumen_abi::proto::UDP);
        if let Some(reply) = self.answer(&query, peer4, server, Transport::Udp).await {
            if let Err(e) = self.sock.send_to(&reply, peer).await {
                tracing::debug!(%peer, error = %e, "DNS proxy: answering the pod failed");
            }
        }
    }

    /// One pod TCP connection: length-prefixed queries, answered in order, until it closes.
    async fn handle_tcp(&self, mut conn: TcpStream, peer: SocketAddr) {
        let SocketAddr::V4(peer4) = peer else {
            return;
        };
        let server = self.original_server(peer4, lumen_abi::proto::TCP);
        let idle = Duration::from_secs(10);
        while let Ok(Ok(Some(query))) = tokio::time::timeout(idle, read_framed(&mut conn)).await {
            let Some(reply) = self.answer(&query, peer4, server, Transport::Tcp).await else {
                return;
            };
            if write_framed(&mut conn, &reply).await.is_err() {
                return;
            }
        }
    }

    /// What the pod gets for `query`: the server's answer (after recording its addresses)
    /// or the proxy's own error reply; `None` when not even an error can be written.
    async fn answer(
        &self,
        query: &[u8],
        peer: SocketAddrV4,
        server: Option<SocketAddr>,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let Some(server) = server else {
            // Not a redirected query (someone addressed the proxy itself).
            return error_reply(query, ResponseCode::Refused);
        };
        let question = match parse_query(query) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "DNS proxy: malformed query");
                return error_reply(query, ResponseCode::FormErr);
            }
        };
        let ep = self.agent.dns.endpoint(&IpAddr::V4(*peer.ip()));
        if let Some(ep) = &ep {
            if !ep.policy.allows(&question.name) {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, query = %question.name, endpoint = ep.id, "DNS query refused by policy");
                let code = match self.agent.cfg.dns_proxy.dns_reject_response_code {
                    RejectCode::Refused => ResponseCode::Refused,
                    RejectCode::NameError => ResponseCode::NXDomain,
                };
                self.report_denied(ep, peer, server, transport, &question, code.into());
                return error_reply(query, code);
            }
        }
        let started = std::time::Instant::now();
        if let Some(ep) = &ep {
            let l7 = l7_dns(&question, None, 0, FlowKind::Request, 0);
            self.emit(ep, peer, server, transport, Emit::Request, l7);
        }
        let forwarded = match transport {
            Transport::Udp => self.forward(query, server, &question).await,
            Transport::Tcp => self.forward_tcp(query, server, &question).await,
        };
        match forwarded {
            Some((response, answer)) => {
                if let Some(ep) = &ep {
                    if answer.rcode == 0
                        && !answer.ips.is_empty()
                        && self.agent.dns.record(ep.id, &answer.names, &answer.ips)
                    {
                        // Before the pod sees the answer: its first connection must pass.
                        self.stats.regenerations.fetch_add(1, Ordering::Relaxed);
                        let a = self.agent.clone();
                        let _ = tokio::task::spawn_blocking(move || a.regenerate()).await;
                    }
                    let latency = started.elapsed().as_nanos() as u64;
                    let l7 = l7_dns(
                        &question,
                        Some(&answer),
                        answer.rcode,
                        FlowKind::Response,
                        latency,
                    );
                    self.emit(ep, peer, server, transport, Emit::Response, l7);
                }
                Some(response)
            }
            None => {
                self.stats.servfail.fetch_add(1, Ordering::Relaxed);
                if let Some(ep) = &ep {
                    let latency = started.elapsed().as_nanos() as u64;
                    let rcode = u16::from(ResponseCode::ServFail);
                    let l7 = l7_dns(&question, None, rcode, FlowKind::Response, latency);
                    self.emit(ep, peer, server, transport, Emit::Response, l7);
                }
                error_reply(query, ResponseCode::ServFail)
            }
        }
    }

    /// Sends the query to the server; the raw response and what it says, or `None` when
    /// the server is unusable (no answer in time, malformed, another query's).
    async fn forward(
        &self,
        query: &[u8],
        server: SocketAddr,
        question: &Question,
    ) -> Option<(Vec<u8>, super::message::Answer)> {
        let up = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .await
            .ok()?;
        up.connect(server).await.ok()?;
        up.send(query).await.ok()?;
        // Room for the largest datagram, not zeroed: `recv_buf` fills spare capacity.
        let mut buf = Vec::with_capacity(65_535);
        let deadline = tokio::time::Instant::now() + self.agent.cfg.dns_proxy.upstream_timeout;
        loop {
            buf.clear();
            let n = match tokio::time::timeout_at(deadline, up.recv_buf(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::debug!(%server, error = %e, "DNS proxy: server unreachable");
                    return None;
                }
                Err(_) => {
                    tracing::info!(%server, query = %question.name, "DNS proxy: server timed out");
                    return None;
                }
            };
            match parse_response(&buf[..n], question) {
                Ok(a) => {
                    buf.truncate(n);
                    return Some((buf, a));
                }
                Err(super::message::MessageError::WrongId { .. }) => continue,
                Err(e) => {
                    tracing::info!(%server, query = %question.name, error = %e, "DNS proxy: unusable response; SERVFAIL");
                    return None;
                }
            }
        }
    }

    /// The query over TCP to the server, one connection per query.
    async fn forward_tcp(
        &self,
        query: &[u8],
        server: SocketAddr,
        question: &Question,
    ) -> Option<(Vec<u8>, super::message::Answer)> {
        let limit = self.agent.cfg.dns_proxy.upstream_timeout;
        let exchange = async {
            let mut up = TcpStream::connect(server).await.ok()?;
            write_framed(&mut up, query).await.ok()?;
            read_framed(&mut up).await.ok().flatten()
        };
        let Ok(Some(response)) = tokio::time::timeout(limit, exchange).await else {
            tracing::info!(%server, query = %question.name, "DNS proxy: server unusable over TCP");
            return None;
        };
        match parse_response(&response, question) {
            Ok(a) => Some((response, a)),
            Err(e) => {
                tracing::info!(%server, query = %question.name, error = %e, "DNS proxy: unusable response; SERVFAIL");
                None
            }
        }
    }

    /// A refused query as a policy-denied drop flow of the pod's egress (to the server's
    /// port 53), attributed like a default-deny drop, carrying the query as its `l7.dns`.
    fn report_denied(
        &self,
        ep: &super::EndpointDns,
        pod: SocketAddrV4,
        server: SocketAddr,
        transport: Transport,
        question: &Question,
        rcode: u16,
    ) {
        let l7 = l7_dns(question, None, rcode, FlowKind::Request, 0);
        self.emit(ep, pod, server, transport, Emit::Denied, l7);
    }

    /// A DNS request or response flow (`Type: L7`, event type 129).
    fn emit(
        &self,
        ep: &super::EndpointDns,
        pod: SocketAddrV4,
        server: SocketAddr,
        transport: Transport,
        what: Emit,
        l7: Layer7,
    ) {
        use lumen_abi::*;
        let SocketAddr::V4(server) = server else {
            return;
        };
        let mut pkt = PacketInfo::zeroed();
        pkt.ethertype = 0x0800;
        pkt.ip_version = ipver::V4;
        pkt.l4_proto = match transport {
            Transport::Udp => proto::UDP,
            Transport::Tcp => proto::TCP,
        };
        let (src, dst) = match what {
            Emit::Response => (server, pod),
            Emit::Request | Emit::Denied => (pod, server),
        };
        pkt.src_ip = v4(*src.ip());
        pkt.dst_ip = v4(*dst.ip());
        pkt.src_port = src.port();
        pkt.dst_port = dst.port();
        pkt.l4_flags = l4_flags::PORTS;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer; the clock always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let flags = match what {
            Emit::Response => hdr_flags::REPLY_KNOWN | hdr_flags::IS_REPLY,
            _ => hdr_flags::REPLY_KNOWN,
        };
        let hdr = |kind: u8, version: u8, len: usize| RecordHeader {
            kind,
            version,
            obs_point: obs::FROM_ENDPOINT,
            flags,
            ifindex: ep.ifindex,
            len: len as u16,
            _pad0: 0,
            pkt_len: 0,
            ktime_ns: (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64,
        };
        let bytes: Vec<u8> = match what {
            Emit::Denied => pod_bytes(&DropRecord {
                hdr: hdr(kind::DROP, DROP_VERSION, core::mem::size_of::<DropRecord>()),
                pkt,
                policy: PolicyInfo {
                    endpoint_id: ep.id,
                    local_identity: ep.identity,
                    remote_identity: 0,
                    rule_ref: RULE_REF_NONE,
                    direction: direction::EGRESS,
                    match_type: 0,
                    verdict: verdict::DENIED,
                    _pad: [0; 5],
                },
                drop_reason: drop_reason::POLICY_DENIED,
                _pad: [0; 6],
            }),
            Emit::Request | Emit::Response => pod_bytes(&TraceRecord {
                hdr: hdr(
                    kind::TRACE,
                    TRACE_VERSION,
                    core::mem::size_of::<TraceRecord>(),
                ),
                pkt,
                reason: 0,
                _pad: [0; 7],
                ct_packets: 0,
                ct_bytes: 0,
            }),
        };
        let cache = self.agent.ipcache();
        let ev = self.pipeline.lock().ingest(&bytes, &cache);
        match ev {
            Ok(Event::Flow(mut f)) => {
                f.l7 = Some(Arc::new(l7));
                self.agent.ring.push(Arc::new(Event::Flow(f)));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "DNS proxy: flow not recorded"),
        }
    }
}

/// Which DNS flow to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// The pod's query, forwarded.
    Request,
    /// The answer the pod got.
    Response,
    /// The pod's query, refused by policy (a drop).
    Denied,
}

/// The bytes of a plain-old-data record.
fn pod_bytes<T: Copy>(rec: &T) -> Vec<u8> {
    // SAFETY: T is a repr(C) ABI record without padding holes left uninitialised (its
    // padding is explicit fields); the slice covers exactly it.
    unsafe { std::slice::from_raw_parts(rec as *const T as *const u8, core::mem::size_of::<T>()) }
        .to_vec()
}

/// Hubble's `l7` for a DNS query or answer.
fn l7_dns(
    q: &Question,
    answer: Option<&super::message::Answer>,
    rcode: u16,
    kind: FlowKind,
    latency_ns: u64,
) -> Layer7 {
    let mut dns = lumen_api::flow::Dns {
        query: q.fqdn.clone(),
        qtypes: q.qtypes.clone(),
        rcode: u32::from(rcode),
        observation_source: "proxy".into(),
        ..Default::default()
    };
    if let Some(a) = answer {
        dns.ips = a.ips.iter().map(|(ip, _)| ip.to_string()).collect();
        dns.ttl = a.ttl;
        dns.cnames = a.cnames.clone();
        dns.rrtypes = a.rrtypes.clone();
    }
    Layer7 {
        r#type: kind as i32,
        latency_ns,
        record: Some(lumen_api::flow::layer7::Record::Dns(dns)),
    }
}
