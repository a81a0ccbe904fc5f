//! The privileged tests' lab: network namespaces joined by a veth pair (the underlay),
//! `lumen-wireguard` devices or `wireguard-go` in them, TCP and a packet capture. Every
//! namespace, process and capture is an RAII guard, so a failing assertion still removes
//! them. The `ip`, `wg`, `wireguard-go`, `tcpdump` and `iperf3` binaries are used here only,
//! to set up, observe and compare; the code under test uses netlink.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lumen_wireguard::{Device, DeviceConfig, PeerConfig, PrivateKey, PublicKey};

/// Whether the privileged tests can run: root and the tools. Without root the test is
/// skipped, unless `LUMEN_REQUIRE_PRIVILEGED=1` (CI), where skipping is a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("LUMEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{test}: LUMEN_REQUIRE_PRIVILEGED=1 but not root");
        }
        eprintln!("SKIP {test}: needs root (creates network namespaces and TUN devices)");
        return false;
    }
    for tool in ["ip", "wg", "wireguard-go", "tcpdump"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{test}: `{tool}` is missing: run `cargo xtask setup` (apt: wireguard-go wireguard-tools tcpdump iproute2)"
        );
    }
    true
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique short tag: `<pid mod 10^5><n>`, for names that are global (namespaces,
/// `wireguard-go` control sockets).
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{tag}{}{n}", std::process::id() % 100_000)
}

/// A network namespace, deleted on drop with everything inside it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("lwg-{}", unique(tag));
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `<program> <args>` inside the namespace, panicking on failure.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `f` on a thread that has entered the namespace: sockets and devices it
    /// creates belong to the namespace and can be used from any thread afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in namespace panicked")
    }

    /// Like [`Netns::run`] without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            // SAFETY: setns on an open namespace fd; affects only this thread.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns {path}: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let ok = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete namespace {}", self.name);
        }
    }
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The underlay veth's name in both namespaces.
pub const VETH: &str = "underlay";
/// WireGuard's port on both nodes.
pub const PORT: u16 = 51871;

/// One side of the two-node lab.
pub struct Side {
    pub ns: Netns,
    /// Underlay address, `192.168.93.<n>`.
    pub underlay: String,
    /// Pod CIDR `10.201.<n>.0/24`; the tunnel interface holds `10.201.<n>.1`.
    pub pod_cidr: String,
    pub tunnel_ip: String,
}

impl Side {
    pub fn endpoint(&self) -> SocketAddr {
        format!("{}:{PORT}", self.underlay).parse().unwrap()
    }
}

/// Two namespaces joined by a veth pair (MTU 1500), nothing else yet.
pub struct Pair {
    pub a: Side,
    pub b: Side,
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let side = |n: u8| Side {
            ns: Netns::new(&format!("{tag}{n}")),
            underlay: format!("192.168.93.{n}"),
            pod_cidr: format!("10.201.{n}.0/24"),
            tunnel_ip: format!("10.201.{n}.1"),
        };
        let (a, b) = (side(1), side(2));
        a.ns.ip(&[
            "link", "add", VETH, "type", "veth", "peer", "name", "peer", "netns", &b.ns.name,
        ]);
        b.ns.ip(&["link", "set", "peer", "name", VETH]);
        for s in [&a, &b] {
            s.ns.ip(&["addr", "add", &format!("{}/24", s.underlay), "dev", VETH]);
            s.ns.ip(&["link", "set", VETH, "up"]);
        }
        Pair { a, b }
    }
}

/// Starts a `lumen-wireguard` device named `wg0` in `side`'s namespace with `peer` as
/// its only peer, and routes the peer's pod CIDR through it.
pub fn lumen_device(side: &Side, key: PrivateKey, peer: &Side, peer_key: PublicKey) -> Device {
    let mut config = DeviceConfig::new(key);
    config.interface = "wg0".to_string();
    config.address = Some(format!("{}/32", side.tunnel_ip).parse().unwrap());
    config.peers = vec![peer_config(peer, peer_key)];
    let device = side.ns.run(move || Device::new(config)).expect("device");
    side.ns.ip(&["route", "add", &peer.pod_cidr, "dev", "wg0"]);
    device
}

pub fn peer_config(peer: &Side, key: PublicKey) -> PeerConfig {
    PeerConfig::new(
        key,
        Some(peer.endpoint()),
        vec![peer.pod_cidr.parse().unwrap()],
    )
}

/// A `wireguard-go` device in `side`'s namespace, configured with `wg` and `ip`; the
/// process is killed (and its interface gone) on drop.
pub struct WireguardGo {
    pub name: String,
    child: Child,
    _keyfile: tempfile::NamedTempFile,
}

impl WireguardGo {
    pub fn new(side: &Side, key: &PrivateKey, peer: &Side, peer_key: PublicKey) -> WireguardGo {
        let name = unique("wgo");
        let mut child = side
            .ns
            .command("wireguard-go")
            .args(["-f", &name])
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wireguard-go");
        let socket = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("wireguard-go exited early: {status}");
            }
            assert!(Instant::now() < deadline, "wireguard-go made no {socket:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut keyfile = tempfile::NamedTempFile::new().unwrap();
        writeln!(keyfile, "{}", key.to_base64()).unwrap();
        let go = WireguardGo {
            name,
            child,
            _keyfile: keyfile,
        };
        let keypath = go._keyfile.path().to_str().unwrap().to_string();
        side.ns.exec(
            "wg",
            &[
                "set",
                &go.name,
                "private-key",
                &keypath,
                "listen-port",
                &PORT.to_string(),
                "peer",
                &peer_key.to_base64(),
                "endpoint",
                &peer.endpoint().to_string(),
                "allowed-ips",
                &peer.pod_cidr,
            ],
        );
        side.ns.ip(&["link", "set", &go.name, "mtu", "1420"]);
        side.ns.ip(&[
            "addr",
            "add",
            &format!("{}/32", side.tunnel_ip),
            "dev",
            &go.name,
        ]);
        side.ns.ip(&["link", "set", &go.name, "up"]);
        side.ns
            .ip(&["route", "add", &peer.pod_cidr, "dev", &go.name]);
        go
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed, it leaves its control socket behind.
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.name));
    }
}

/// `tcpdump` on an interface of a namespace, writing a pcap; stopped on drop.
pub struct Capture {
    child: Child,
    pub file: tempfile::NamedTempFile,
}

impl Capture {
    pub fn start(ns: &Netns, interface: &str) -> Capture {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut child = ns
            .command("tcpdump")
            .args([
                "-i",
                interface,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "4096",
                "-w",
            ])
            .arg(file.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // tcpdump says "listening on ..." once the capture is open.
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
        Capture { child, file }
    }

    /// Stops the capture and returns the packets as `tcpdump -r` prints them, and the
    /// raw pcap bytes.
    pub fn finish(mut self) -> (Vec<String>, Vec<u8>) {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let text = run("tcpdump", &["-n", "-r", self.file.path().to_str().unwrap()]);
        let mut raw = Vec::new();
        File::open(self.file.path())
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        (text.lines().map(str::to_string).collect(), raw)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP echo server on `addr` in `ns`, serving connections until the process ends.
pub fn echo_server(ns: &Netns, addr: SocketAddr) {
    let listener = ns.run(move || TcpListener::bind(addr).expect("bind echo server"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Connects from `ns` to `addr`, sends `payload` and expects it echoed back.
pub fn echo_roundtrip(ns: &Netns, addr: SocketAddr, payload: &[u8]) {
    let payload = payload.to_vec();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Write from another thread: the echo comes back while we still send.
        let mut writer = s.try_clone().unwrap();
        let sent = payload.clone();
        let writing = std::thread::spawn(move || writer.write_all(&sent));
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("echo from {addr}: {e}"));
        writing.join().unwrap().expect("send");
        assert!(back == payload, "echo differs from what was sent");
    });
}

/// `ping -c <count>` from `ns`, true when every reply came back.
pub fn ping(ns: &Netns, to: &str, count: u32) -> bool {
    ns.command("ping")
        .args(["-c", &count.to_string(), "-i", "0.2", "-W", "2", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Pings until one answer comes back (the first packets wait for the handshake).
pub fn wait_reachable(ns: &Netns, to: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(ns, to, 1) {
        assert!(
            Instant::now() < deadline,
            "{to} never answered from {}",
            ns.name
        );
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
