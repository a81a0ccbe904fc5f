//! The running tunnel: a TUN interface, one UDP socket, the peers, and three threads.
//!
//! - **outbound** reads IP packets from the TUN, finds the peer owning the destination
//!   (longest prefix of the allowed IPs), encrypts with that peer's [`Tunn`] and sends the
//!   datagram to the peer's endpoint. Without a session the packet is queued inside the
//!   `Tunn` (up to 256) and a handshake initiation goes out instead.
//! - **inbound** receives datagrams, finds the peer (the receiver index of a response,
//!   cookie or data message names it; an initiation is opened with our static key to
//!   learn the sender's public key), decrypts, drops any packet whose inner source is not
//!   in that peer's allowed IPs (the WireGuard rule that makes the source address
//!   authentic), and writes the rest to the TUN. Authenticated packets update the peer's
//!   endpoint (roaming). After a handshake completes the queued packets are flushed.
//! - **timers** calls `update_timers` on every peer each 100 ms (retransmitted
//!   initiations, rekeying after 2 minutes, keepalives, session expiry) and resets the
//!   handshake rate limiter each second.
//!
//! Both data threads run the fds non-blocking: they read until `EAGAIN` and only then
//! `poll(2)` (together with an eventfd that [`Device::shutdown`] signals). Datagrams leave
//! in batches — the outbound thread collects what it encrypts while the TUN has more and
//! sends each run to one endpoint with one segmented `sendmsg` — and arrive coalesced by
//! UDP GRO ([`crate::offload`]). The TUN reads 64 KiB TCP super-packets, cut before
//! encryption ([`crate::tso`]), and decrypted segments of one flow are joined before they
//! are written back ([`crate::gro`]). So a busy tunnel costs a few syscalls per 64 KiB
//! each way, and nothing is allocated per packet. The peer
//! table is an immutable snapshot swapped whole by [`Device::set_peers`]; the data threads
//! notice a new generation with one atomic load per packet.
//!
//! Failure modes: a peer without a known endpoint cannot be sent to (its packets wait in
//! the queue until it initiates); a datagram of no peer, a forged one, or one from an
//! address outside the peer's allowed IPs is dropped and logged at `debug` level, as is a
//! TUN packet that cannot be segmented (malformed, or a GSO type not enabled); under
//! a flood of initiations the shared rate limiter answers with cookie replies (and each
//! initiation is verified twice — once to find the peer, once in its `Tunn` — which
//! halves the effective limit). A key rotation ([`Device::set_private_key`]) drops every
//! session: packets in flight are lost and TCP retransmits them once the peer, having
//! learnt the new public key, completes a new handshake.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use ipnet::IpNet;

use crate::allowed_ips::AllowedIps;
use crate::config::{validate_peers, ConfigError, DeviceConfig, PeerConfig};
use crate::gro::Coalescer;
use crate::key::{PrivateKey, PublicKey};
use crate::offload::{self, SendBatch};
use crate::tso;
use crate::tun::{Tun, TunError};

/// Handshake initiations accepted per second before cookies are demanded (boringtun's
/// per-peer default, here for the whole device).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
const TIMER_TICK: Duration = Duration::from_millis(100);
/// Largest IP packet a TUN hands over, plus the WireGuard data header and tag.
const BUF_LEN: usize = 65_536 + 32;
/// Socket buffers sized for a few milliseconds at 10 Gbit/s: bursts of encrypted
/// segments must not overflow them while a thread is descheduled.
const SOCKET_BUFFER: libc::c_int = 4 << 20;
/// Peer indices are 24 bits: the low 8 bits of a session index are the session counter.
const MAX_PEER_INDEX: u32 = (1 << 24) - 1;

/// Why the device could not start or be changed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The configuration was rejected before anything was touched.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TUN interface could not be made.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The UDP socket could not be bound.
    #[error("binding UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Creating the shutdown eventfd or a worker thread failed.
    #[error("starting the device's {what}: {source}")]
    Start {
        /// Which part.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// One peer as [`Device::stats`] reports it (what `lumen status` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub public_key: PublicKey,
    /// Where its packets go now (configured, or learnt from its last packet).
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs.
    pub allowed_ips: Vec<IpNet>,
    /// When the last handshake completed, if one has.
    pub last_handshake: Option<SystemTime>,
    /// Inner bytes received from it.
    pub rx_bytes: u64,
    /// Inner bytes sent to it.
    pub tx_bytes: u64,
}

struct PeerState {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    /// The endpoint last configured: roaming overrides it until the configuration
    /// itself changes.
    configured_endpoint: Option<SocketAddr>,
    allowed: AllowedIps<()>,
    allowed_list: Vec<IpNet>,
}

struct Peer {
    key: PublicKey,
    index: u32,
    /// What the `Tunn` was built with; a change means a new `Tunn`.
    keepalive: Option<u16>,
    preshared: Option<[u8; 32]>,
    state: Mutex<PeerState>,
}

#[derive(Default)]
struct Table {
    by_key: HashMap<PublicKey, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    routes: AllowedIps<Arc<Peer>>,
}

struct Keys {
    private: PrivateKey,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
}

impl Keys {
    fn new(private: PrivateKey) -> Keys {
        let secret = private.secret();
        let public = x25519::PublicKey::from(&secret);
        let rate_limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        Keys {
            private,
            secret,
            public,
            rate_limiter,
        }
    }
}

struct Shared {
    tun: Tun,
    udp: UdpSocket,
    wake: OwnedFd,
    stopping: AtomicBool,
    keys: RwLock<Keys>,
    table: RwLock<Arc<Table>>,
    generation: AtomicU64,
    /// Serialises `set_peers` and `set_private_key`.
    update: Mutex<u32>,
    listen: IpAddr,
}

/// A running WireGuard tunnel device. Dropping it stops the threads and removes the
/// interface, as [`Device::shutdown`] does.
pub struct Device {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    listen_port: u16,
}

impl Device {
    /// Validates `config`, creates the TUN interface (in the calling thread's network
    /// namespace), binds the UDP socket, adds the peers and starts the threads.
    pub fn new(config: DeviceConfig) -> Result<Device, DeviceError> {
        config.validate()?;
        let tun = Tun::create(&config.interface, config.mtu, config.address)?;
        let bind = SocketAddr::new(config.listen_addr, config.listen_port);
        let udp =
            UdpSocket::bind(bind).map_err(|source| DeviceError::Bind { addr: bind, source })?;
        let start = |what| move |source| DeviceError::Start { what, source };
        udp.set_nonblocking(true).map_err(start("UDP socket"))?;
        grow_buffers(udp.as_raw_fd());
        offload::enable_gro(udp.as_raw_fd());
        let listen_port = udp.local_addr().map_err(start("UDP socket"))?.port();
        // SAFETY: eventfd has no memory preconditions; the fd is owned from here on.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(start("eventfd")(io::Error::last_os_error()));
        }
        // SAFETY: `wake` is a fresh descriptor nobody else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let shared = Arc::new(Shared {
            tun,
            udp,
            wake,
            stopping: AtomicBool::new(false),
            keys: RwLock::new(Keys::new(config.private_key.clone())),
            table: RwLock::new(Arc::new(Table::default())),
            generation: AtomicU64::new(0),
            update: Mutex::new(0),
            listen: config.listen_addr,
        });
        let mut device = Device {
            shared: shared.clone(),
            threads: Vec::new(),
            listen_port,
        };
        device.set_peers(config.peers)?;
        type Worker = fn(&Shared);
        let workers: [(&str, Worker); 3] = [
            ("wg-outbound", outbound),
            ("wg-inbound", inbound),
            ("wg-timers", timers),
        ];
        for (name, work) in workers {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || work(&shared))
                .map_err(start("threads"))?;
            device.threads.push(handle);
        }
        tracing::info!(
            interface = %config.interface,
            port = listen_port,
            public_key = %config.private_key.public_key(),
            "WireGuard device up"
        );
        Ok(device)
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        self.shared.tun.name()
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.shared.tun.index()
    }

    /// The UDP port actually bound.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// This device's public key.
    pub fn public_key(&self) -> PublicKey {
        read(&self.shared.keys).private.public_key()
    }

    /// Replaces the peer set. A peer whose public key, keepalive and pre-shared key are
    /// unchanged keeps its sessions (its endpoint and allowed IPs are updated in place);
    /// others get a fresh `Tunn`, and new peers with an endpoint are sent a handshake
    /// initiation right away. Peers not listed are removed.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) -> Result<(), DeviceError> {
        let shared = &*self.shared;
        let mut next_index = lock(&shared.update);
        let keys = read(&shared.keys);
        validate_peers(&keys.private.public_key(), shared.listen, &peers)?;
        let old = read(&shared.table).clone();
        let mut table = Table::default();
        let mut added = Vec::new();
        for config in peers {
            let preshared = config.preshared_key.as_ref().map(|k| k.0);
            let reusable = old
                .by_key
                .get(&config.public_key)
                .filter(|p| p.keepalive == config.persistent_keepalive && p.preshared == preshared);
            let peer = match reusable {
                Some(peer) => {
                    let mut state = lock(&peer.state);
                    if state.configured_endpoint != config.endpoint {
                        state.configured_endpoint = config.endpoint;
                        state.endpoint = config.endpoint.or(state.endpoint);
                    }
                    state.allowed = allowed_table(&config.allowed_ips);
                    state.allowed_list = config.allowed_ips.clone();
                    drop(state);
                    peer.clone()
                }
                None => {
                    let index = free_index(&mut next_index, &old.by_index);
                    let tunn = Tunn::new(
                        keys.secret.clone(),
                        config.public_key.x25519(),
                        preshared,
                        config.persistent_keepalive,
                        index,
                        Some(keys.rate_limiter.clone()),
                    );
                    let peer = Arc::new(Peer {
                        key: config.public_key,
                        index,
                        keepalive: config.persistent_keepalive,
                        preshared,
                        state: Mutex::new(PeerState {
                            tunn,
                            endpoint: config.endpoint,
                            configured_endpoint: config.endpoint,
                            allowed: allowed_table(&config.allowed_ips),
                            allowed_list: config.allowed_ips.clone(),
                        }),
                    });
                    tracing::info!(peer = %peer.key, endpoint = ?config.endpoint, "WireGuard peer added");
                    added.push(peer.clone());
                    peer
                }
            };
            for net in &config.allowed_ips {
                table.routes.insert(net.trunc(), peer.clone());
            }
            table.by_index.insert(peer.index, peer.clone());
            table.by_key.insert(peer.key, peer);
        }
        for key in old.by_key.keys().filter(|k| !table.by_key.contains_key(k)) {
            tracing::info!(peer = %key, "WireGuard peer removed");
        }
        *write(&shared.table) = Arc::new(table);
        shared.generation.fetch_add(1, Ordering::Release);
        // Only now: a response arriving before the new table was published would find
        // no peer and wait for the 5 s retry.
        let mut buf = vec![0u8; 256];
        for peer in &added {
            initiate(shared, peer, &mut buf, false);
        }
        Ok(())
    }

    /// Rotates this device's private key. Every peer's sessions are dropped and a new
    /// handshake is initiated with the new key; it completes once the peer knows the new
    /// public key (published on the Node object), and retries every 5 s until then.
    pub fn set_private_key(&self, key: PrivateKey) {
        let shared = &*self.shared;
        let _serial = lock(&shared.update);
        let keys = Keys::new(key);
        let table = read(&shared.table).clone();
        let mut buf = vec![0u8; 256];
        for peer in table.by_key.values() {
            lock(&peer.state).tunn.set_static_private(
                keys.secret.clone(),
                keys.public,
                Some(keys.rate_limiter.clone()),
            );
        }
        let public = keys.private.public_key();
        *write(&shared.keys) = keys;
        for peer in table.by_key.values() {
            initiate(shared, peer, &mut buf, true);
        }
        tracing::info!(public_key = %public, "WireGuard private key rotated");
    }

    /// Per-peer counters and handshake times, in public-key order.
    pub fn stats(&self) -> Vec<PeerStats> {
        let table = read(&self.shared.table).clone();
        let now = SystemTime::now();
        let mut out: Vec<PeerStats> = table
            .by_key
            .values()
            .map(|peer| {
                let state = lock(&peer.state);
                let (since, tx, rx, _loss, _rtt) = state.tunn.stats();
                PeerStats {
                    public_key: peer.key,
                    endpoint: state.endpoint,
                    allowed_ips: state.allowed_list.clone(),
                    last_handshake: since.and_then(|d| now.checked_sub(d)),
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                }
            })
            .collect();
        out.sort_by_key(|s| s.public_key);
        out
    }

    /// Stops the threads and removes the interface (with its addresses and routes).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.stopping.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to our eventfd.
        unsafe { libc::write(self.shared.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        tracing::info!(interface = %self.shared.tun.name(), "WireGuard device stopped");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking worker must not wedge the control path: the data is still consistent
    // (every critical section is a single Tunn call or field update).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn allowed_table(nets: &[IpNet]) -> AllowedIps<()> {
    let mut t = AllowedIps::new();
    for net in nets {
        t.insert(*net, ());
    }
    t
}

fn free_index(next: &mut u32, used: &HashMap<u32, Arc<Peer>>) -> u32 {
    loop {
        *next = if *next >= MAX_PEER_INDEX {
            1
        } else {
            *next + 1
        };
        if !used.contains_key(next) {
            return *next;
        }
    }
}

fn grow_buffers(fd: RawFd) {
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: passes a c_int option value of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&SOCKET_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

/// Sends a handshake initiation to the peer's endpoint, if it has one.
fn initiate(shared: &Shared, peer: &Peer, buf: &mut [u8], force: bool) {
    let mut state = lock(&peer.state);
    let endpoint = state.endpoint;
    if let TunnResult::WriteToNetwork(packet) = state.tunn.format_handshake_initiation(buf, force) {
        if let Some(endpoint) = endpoint {
            send(shared, packet, endpoint);
        }
    }
}

/// Sends one datagram, waiting for socket space rather than dropping.
fn send(shared: &Shared, packet: &[u8], to: SocketAddr) {
    loop {
        match shared.udp.send_to(packet, to) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(shared, shared.udp.as_raw_fd(), libc::POLLOUT, 100);
                if shared.stopping.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(%to, error = %e, "WireGuard send failed");
                return;
            }
        }
    }
}

/// Waits until `fd` is ready for `events`, the device stops, or `timeout_ms` passes.
fn wait(shared: &Shared, fd: RawFd, events: libc::c_short, timeout_ms: libc::c_int) {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: shared.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfds.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
}

/// The current peer table, refreshed only when its generation moved.
struct Snapshot {
    generation: u64,
    table: Arc<Table>,
}

impl Snapshot {
    fn new(shared: &Shared) -> Snapshot {
        Snapshot {
            generation: shared.generation.load(Ordering::Acquire),
            table: read(&shared.table).clone(),
        }
    }

    fn refresh(&mut self, shared: &Shared) -> &Table {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            *self = Snapshot::new(shared);
        }
        &self.table
    }
}

fn outbound(shared: &Shared) {
    let fd = shared.tun.fd();
    let udp = shared.udp.as_raw_fd();
    let mut src = vec![0u8; BUF_LEN];
    let mut scratch = vec![0u8; BUF_LEN];
    let mut batch = SendBatch::new(BUF_LEN);
    let mut snapshot = Snapshot::new(shared);
    while !shared.stopping.load(Ordering::Relaxed) {
        // SAFETY: reads at most `src.len()` bytes into `src`.
        let n = unsafe { libc::read(fd, src.as_mut_ptr().cast(), src.len()) };
        if n < 0 {
            match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => {
                    // The TUN is drained: send what was collected, then sleep.
                    batch.flush(udp);
                    wait(shared, fd, libc::POLLIN, -1)
                }
                io::ErrorKind::Interrupted => {}
                _ => {
                    tracing::error!(error = %io::Error::last_os_error(), "reading the TUN failed");
                    return;
                }
            }
            continue;
        }
        let table = snapshot.refresh(shared);
        let cut = tso::segments(&mut src[..n as usize], &mut scratch, |packet| {
            encrypt(table, &mut batch, udp, packet)
        });
        if let Err(e) = cut {
            tracing::debug!(error = %e, "packet from the TUN dropped");
        }
    }
    batch.flush(udp);
}

/// Encrypts one IP packet to the peer owning its destination, into the send batch.
fn encrypt(table: &Table, batch: &mut SendBatch, udp: RawFd, packet: &[u8]) {
    let Some(dst_ip) = Tunn::dst_address(packet) else {
        return;
    };
    let Some(peer) = table.routes.lookup(dst_ip) else {
        tracing::trace!(%dst_ip, "no WireGuard peer for destination");
        return;
    };
    if batch.needs_flush_for(packet.len()) {
        batch.flush(udp);
    }
    let mut state = lock(&peer.state);
    let endpoint = state.endpoint;
    let written = match state.tunn.encapsulate(packet, batch.tail()) {
        TunnResult::WriteToNetwork(out) => out.len(),
        TunnResult::Err(e) => {
            tracing::debug!(peer = %peer.key, error = ?e, "encapsulate failed");
            return;
        }
        _ => return,
    };
    drop(state);
    match endpoint {
        Some(endpoint) => batch.commit(udp, written, endpoint),
        None => tracing::trace!(peer = %peer.key, "peer has no endpoint yet"),
    }
}

fn recv(shared: &Shared, buf: &mut [u8]) -> Option<(usize, SocketAddr, usize)> {
    let fd = shared.udp.as_raw_fd();
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return None;
        }
        match offload::recv(fd, buf) {
            Ok(got) => return Some(got),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(shared, fd, libc::POLLIN, -1),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ICMP errors of earlier sends (ECONNREFUSED...) surface here: not fatal.
            Err(e) => tracing::trace!(error = %e, "WireGuard receive error"),
        }
    }
}

fn inbound(shared: &Shared) {
    let mut src = vec![0u8; BUF_LEN];
    let mut dst = vec![0u8; BUF_LEN];
    let mut snapshot = Snapshot::new(shared);
    let mut coalescer = Coalescer::default();
    while let Some((n, from, segment)) = recv(shared, &mut src) {
        let table = snapshot.refresh(shared);
        // UDP GRO may have coalesced several datagrams of this sender.
        for datagram in src[..n].chunks(segment.max(1)) {
            handle_datagram(shared, table, datagram, from, &mut dst, &mut coalescer);
        }
        coalescer.flush(shared.tun.fd());
    }
}

fn handle_datagram(
    shared: &Shared,
    table: &Table,
    datagram: &[u8],
    from: SocketAddr,
    dst: &mut [u8],
    coalescer: &mut Coalescer,
) {
    let tun = shared.tun.fd();
    let peer = match Tunn::parse_incoming_packet(datagram) {
        Ok(Packet::HandshakeInit(init)) => {
            let keys = read(&shared.keys);
            match keys
                .rate_limiter
                .verify_packet(Some(from.ip()), datagram, dst)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    send(shared, cookie, from);
                    return;
                }
                Err(_) => return,
            }
            match parse_handshake_anon(&keys.secret, &keys.public, &init) {
                Ok(half) => table
                    .by_key
                    .get(&PublicKey::from_bytes(half.peer_static_public)),
                Err(e) => {
                    tracing::debug!(%from, error = ?e, "undecipherable handshake initiation");
                    return;
                }
            }
        }
        Ok(Packet::HandshakeResponse(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
        Ok(Packet::PacketCookieReply(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
        Ok(Packet::PacketData(p)) => table.by_index.get(&(p.receiver_idx >> 8)),
        Err(_) => None,
    };
    let Some(peer) = peer else {
        tracing::debug!(%from, "datagram of no known peer dropped");
        return;
    };
    let mut state = lock(&peer.state);
    let mut authenticated = false;
    match state.tunn.decapsulate(Some(from.ip()), datagram, dst) {
        TunnResult::WriteToNetwork(out) => {
            authenticated = true;
            send(shared, out, from);
            // A completed handshake releases the packets queued meanwhile.
            while let TunnResult::WriteToNetwork(out) = state.tunn.decapsulate(None, &[], dst) {
                send(shared, out, from);
            }
        }
        TunnResult::WriteToTunnelV4(packet, source) => {
            authenticated = true;
            write_inner(tun, coalescer, &state, peer, packet, IpAddr::V4(source));
        }
        TunnResult::WriteToTunnelV6(packet, source) => {
            authenticated = true;
            write_inner(tun, coalescer, &state, peer, packet, IpAddr::V6(source));
        }
        TunnResult::Done => authenticated = datagram[0] == 4,
        TunnResult::Err(WireGuardError::DuplicateCounter) => {}
        TunnResult::Err(e) => {
            tracing::debug!(peer = %peer.key, %from, error = ?e, "decapsulate failed")
        }
    }
    if authenticated && state.endpoint != Some(from) {
        tracing::debug!(peer = %peer.key, endpoint = %from, "peer endpoint learnt");
        state.endpoint = Some(from);
    }
}

fn write_inner(
    tun: RawFd,
    coalescer: &mut Coalescer,
    state: &PeerState,
    peer: &Peer,
    packet: &[u8],
    source: IpAddr,
) {
    if state.allowed.lookup(source).is_none() {
        tracing::debug!(peer = %peer.key, %source, "inner source outside the peer's allowed IPs dropped");
        return;
    }
    coalescer.push(tun, packet);
}

fn timers(shared: &Shared) {
    let mut buf = vec![0u8; BUF_LEN];
    let mut last_reset = Instant::now();
    let mut snapshot = Snapshot::new(shared);
    while !shared.stopping.load(Ordering::Relaxed) {
        let table = snapshot.refresh(shared);
        for peer in table.by_key.values() {
            let mut state = lock(&peer.state);
            let endpoint = state.endpoint;
            match state.tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(packet) => {
                    if let Some(endpoint) = endpoint {
                        send(shared, packet, endpoint);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(peer = %peer.key, error = ?e, "timer error"),
                _ => {}
            }
        }
        if last_reset.elapsed() >= Duration::from_secs(1) {
            read(&shared.keys).rate_limiter.reset_count();
            last_reset = Instant::now();
        }
        wait(
            shared,
            shared.wake.as_raw_fd(),
            libc::POLLIN,
            TIMER_TICK.as_millis() as i32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_configuration_is_rejected_before_any_interface_exists() {
        let mut config = DeviceConfig::new(PrivateKey::generate().unwrap());
        // 16 bytes: one more than Linux allows.
        config.interface = "lwg-never-made-x".into();
        let Err(err) = Device::new(config) else {
            panic!("an over-long interface name was accepted");
        };
        assert!(
            matches!(err, DeviceError::Config(ConfigError::InterfaceName { .. })),
            "{err}"
        );
        assert!(!std::path::Path::new("/sys/class/net/lwg-never-made-x").exists());
    }

    #[test]
    fn peer_indices_skip_those_in_use_and_wrap_within_24_bits() {
        let mut used = HashMap::new();
        let dummy = |index| {
            let key = PrivateKey::generate().unwrap();
            let secret = key.secret();
            Arc::new(Peer {
                key: key.public_key(),
                index,
                keepalive: None,
                preshared: None,
                state: Mutex::new(PeerState {
                    tunn: Tunn::new(secret, key.public_key().x25519(), None, None, index, None),
                    endpoint: None,
                    configured_endpoint: None,
                    allowed: AllowedIps::new(),
                    allowed_list: Vec::new(),
                }),
            })
        };
        used.insert(1, dummy(1));
        used.insert(2, dummy(2));
        let mut next = 0;
        assert_eq!(free_index(&mut next, &used), 3);
        let mut next = MAX_PEER_INDEX - 1;
        assert_eq!(free_index(&mut next, &used), MAX_PEER_INDEX);
        assert_eq!(free_index(&mut next, &used), 3);
    }
}
