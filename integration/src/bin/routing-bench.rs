//! `routing-bench`: what Lumen's routing costs cross-node, pod to pod, in one lab run on one
//! machine (the figures of issue 7).
//!
//! Two nodes on the underlay bridge; client pods on node1, server pods on node2 (iperf3
//! and a request/response server). The pods are made once, through the agents' CNI, and
//! keep their addresses and veths for the whole run; between cases only the nodes change.
//! A pod's MTU is the agent's choice when the CNI plugin wires it: the uplink's (1500)
//! without encryption, 80 bytes less (1420) with it. So there are two pairs: one made by
//! plain agents, measured by `baseline` and `native`, and one made by encrypting agents,
//! measured by `lumen-wg` and `wireguard-go` (both tunnels then carry the same segments,
//! as in a cluster with encryption on). The table shows each case's pod MTU.
//!
//! For each case, in this order within a block:
//!
//! - TCP throughput: iperf3, one stream, client → server;
//! - TCP request/response rate, like netperf `TCP_RR`: one connection sending a 1-byte
//!   request and waiting for the 1-byte response, back to back (transactions/s);
//! - the same over 4 connections at once (their sum).
//!
//! The request/response client threads run on CPU 0, the server's on CPU 1, as on two
//! machines: left to the scheduler, the rate jumps between two modes several times apart
//! (both ends on one CPU, or not) from one run to the next.
//!
//! The cases:
//!
//! 1. `baseline`: a plain routed path. The agents are stopped and every link they pinned
//!    under `<bpfRoot>/<node>/links` is removed, which detaches their TCX programs (a TCX
//!    link lives as long as a pin or an open descriptor holds it); each node namespace must
//!    then have no XDP or tc program (`bpftool net show`) and no TCX program on any
//!    interface (`BPF_PROG_QUERY`, as bpftool 7.1 does not show TCX), or the case fails. The
//!    lab's routes send the other node's pod CIDR via that node's underlay address
//!    ([`Lab::route_pod_cidrs`]). What is left is exactly the kernel's forwarding: pod veth
//!    → node namespace → `eth0` → bridge → `eth0` → pod veth, with the pods' `/32` routes
//!    and gateway the CNI plugin made.
//! 2. `native`: both agents running with `autoDirectNodeRoutes: true` (their programs
//!    attached to the pod veths and uplinks; the pod CIDR routes are theirs, `proto 201`,
//!    no lab routes).
//! 3. `lumen-wg`: as `native` plus `encryption.enabled` (`type: wireguard`): the agent's
//!    userspace WireGuard device, into which its programs steer cross-node pod traffic.
//! 4. `wireguard-go`: the `baseline` node (agents stopped, no programs) plus `wireguard-go`
//!    in each node namespace: one interface per node (MTU 1420, listen port 51820, keys from
//!    `wg genkey`/`wg pubkey`, the peer at the other node's underlay address with the other
//!    node's pod CIDR as allowed IPs) and the route to the other node's pod CIDR through it.
//!    Its pods have MTU 1420, so segments fit the tunnel. Should the encrypting agents fail
//!    to make pods, it measures the 1500-byte pods instead: then a full-sized segment
//!    forwarded to the 1420-byte interface is answered with ICMP "fragmentation needed",
//!    the client's kernel lowers the route's path MTU (`ip route get` in the client pod
//!    shows `mtu 1420`) and resends, once per destination. That works here (nothing filters
//!    ICMP; tried), so neither MSS clamping nor a route MTU is needed; the learnt path MTU
//!    is printed per run, and flushed from the pods' route caches (`ip route flush cache`)
//!    before every case so it does not carry over.
//!
//!    The `wireguard-go` is whatever is installed (Debian 12: 0.0.20220316, which predates
//!    wireguard-go's TUN offloads and does not enlarge its UDP socket buffers; the 208 KiB
//!    default, `net.core.rmem_default`, cannot be raised per namespace). Its version and the
//!    datagrams node2 dropped for a full receive buffer (`RcvbufErrors`) are printed, as they
//!    explain most of its retransmissions.
//!
//! Encryption is checked, not assumed: the UDP datagrams node1's namespace sends during the
//! throughput run are counted (`/proc/net/snmp`, where a segmentation-offloaded send counts
//! once); an encrypting case must send at least a hundred, a plain one must not, or the
//! case's round fails.
//!
//! Switching cases means stopping and starting agents or tunnels, so each case runs as one
//! block per round (setup, the three measurements), and the order of the blocks rotates
//! round after round, so drifting load weighs on every case alike. A case whose setup or
//! measurement fails is reported as failed for that round (with the reason) and the others
//! go on. Figures are medians over the rounds; ratios are medians of the per-round ratios
//! (runs of one round ran close together).
//!
//! Prints the table, the targets with pass/fail (native ≥ 90 % of baseline; lumen-wg ≥ 1.0×
//! wireguard-go) and a JSON summary; exit status 0 either way (a benchmark).
//! `LUMEN_ROUTING_BENCH_SECONDS` (default 5, per measurement) and
//! `LUMEN_ROUTING_BENCH_ROUNDS` (default 4, so that each case runs once in each position)
//! change the length (about 4½ minutes by default).

use anyhow::{bail, Context, Result};
use lumen_integration::bench::{self, median};
use lumen_integration::{netns, AgentOptions, Lab, Node, Pod, Spawned};
use serde_json::json;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Seconds per measurement (`LUMEN_ROUTING_BENCH_SECONDS`, default 5).
fn seconds() -> u64 {
    env_or("LUMEN_ROUTING_BENCH_SECONDS", 5)
}

/// Rounds (`LUMEN_ROUTING_BENCH_ROUNDS`, default 4: with the order rotating, each case
/// runs once in each position).
fn rounds() -> usize {
    env_or("LUMEN_ROUTING_BENCH_ROUNDS", 4)
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 7000;
/// Connections of the parallel request/response variant.
const RR_PARALLEL: usize = 4;
const WG_PORT: u16 = 51820;
const WG_MTU: &str = "1420";
/// How long a case's setup may take to make the server reachable.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Fewer UDP datagrams than this out of node1 during a throughput run: not encrypted.
const MIN_TUNNEL_DATAGRAMS: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Baseline,
    Native,
    LumenWg,
    WireguardGo,
}

impl Case {
    const ALL: [Case; 4] = [
        Case::Baseline,
        Case::Native,
        Case::LumenWg,
        Case::WireguardGo,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Baseline => "baseline",
            Case::Native => "native",
            Case::LumenWg => "lumen-wg",
            Case::WireguardGo => "wireguard-go",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Baseline => "routed, no programs",
            Case::Native => "agents, autoDirectNodeRoutes",
            Case::LumenWg => "agents + encryption (WireGuard)",
            Case::WireguardGo => "routed, no programs, wireguard-go",
        }
    }

    fn encrypted(self) -> bool {
        matches!(self, Case::LumenWg | Case::WireguardGo)
    }

    fn agents(self) -> Option<AgentOptions> {
        match self {
            Case::Native => Some(AgentOptions {
                auto_direct_node_routes: true,
                ..Default::default()
            }),
            Case::LumenWg => Some(AgentOptions {
                auto_direct_node_routes: true,
                encryption: true,
                ..Default::default()
            }),
            Case::Baseline | Case::WireguardGo => None,
        }
    }
}

/// One case's figures in one round; `None` where it failed.
#[derive(Debug, Default, Clone)]
struct Run {
    gbps: Option<f64>,
    rr: Option<f64>,
    rr_parallel: Option<f64>,
    /// UDP datagrams node1 sent during the throughput run.
    udp_out: Option<u64>,
    /// UDP datagrams node2 dropped for a full receive buffer during the throughput run.
    udp_rcvbuf_drops: Option<u64>,
    /// Programs attached in node1's namespace (tc/TCX/XDP).
    programs: usize,
    /// Request/response connections that broke during a run.
    broken: u64,
    /// Segments iperf3 retransmitted.
    retransmits: Option<u64>,
    /// The pods' interface MTU.
    pod_mtu: Option<u32>,
    /// Path MTU the client pod's kernel holds for the server after the throughput run
    /// (`ip route get`), if it learnt one.
    path_mtu: Option<u32>,
    errors: Vec<String>,
}

/// `wireguard-go` running in a node namespace; stopped (SIGTERM, then SIGKILL) and its
/// interface and control socket removed on drop.
struct WireguardGo {
    child: Child,
    name: String,
    netns: String,
}

impl WireguardGo {
    /// Starts `wireguard-go` as interface `name` in `node`, configured for `peer`, and
    /// routes `peer`'s pod CIDR through it.
    fn start(
        node: &Node,
        name: &str,
        key_file: &Path,
        peer: &Node,
        peer_key: &str,
    ) -> Result<WireguardGo> {
        let child = node
            .command("wireguard-go")?
            .args(["-f", name])
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting wireguard-go")?;
        // From here on a failure drops the guard, which stops it.
        let mut go = WireguardGo {
            child,
            name: name.to_string(),
            netns: node.netns().to_string(),
        };
        let ready = bench::wait_until(Duration::from_secs(10), || go.socket().exists());
        if let Some(status) = go.child.try_wait()? {
            bail!("wireguard-go {name} exited early ({status})");
        }
        if ready.is_none() {
            bail!("wireguard-go made no {}", go.socket().display());
        }
        let endpoint = format!("{}:{WG_PORT}", peer.ip());
        node.exec_ok(
            "wg",
            [
                "set",
                name,
                "private-key",
                &key_file.to_string_lossy(),
                "listen-port",
                &WG_PORT.to_string(),
                "peer",
                peer_key,
                "endpoint",
                &endpoint,
                "allowed-ips",
                peer.pod_cidr(),
            ],
        )?;
        node.exec_ok("ip", ["link", "set", name, "mtu", WG_MTU, "up"])?;
        node.exec_ok("ip", ["route", "replace", peer.pod_cidr(), "dev", name])?;
        Ok(go)
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/wireguard/{}.sock", self.name))
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: the child is not reaped yet, so the pid is still ours.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // What a clean exit removes itself; a killed one leaves them.
        let _ = std::fs::remove_file(self.socket());
        let _ = std::process::Command::new("ip")
            .args(["-n", &self.netns, "link", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A WireGuard key pair from `wg genkey` / `wg pubkey`; the private key in `dir/wg.key`.
fn wg_keys(dir: &Path) -> Result<(PathBuf, String)> {
    use std::io::Write as _;
    let out = std::process::Command::new("wg").arg("genkey").output()?;
    if !out.status.success() {
        bail!("wg genkey: {}", String::from_utf8_lossy(&out.stderr));
    }
    let private = out.stdout;
    let file = dir.join("wg.key");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)?
            .write_all(&private)?;
    }
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(&private)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("wg pubkey failed");
    }
    Ok((
        file,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// Programs attached in `node`'s namespace ("device kind program-or-count"): XDP and
/// clsact filters as `bpftool net show` lists them, and TCX programs, which bpftool before
/// 7.3 (Debian 12 has 7.1) does not show, from the kernel directly ([`tcx_count`]).
fn attached_programs(node: &Node) -> Result<Vec<String>> {
    let out = node.exec_ok("bpftool", ["-j", "net", "show"])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("bpftool net show: {out}"))?;
    let mut found = vec![];
    for section in v.as_array().into_iter().flatten() {
        for key in ["xdp", "tc"] {
            for e in section[key].as_array().into_iter().flatten() {
                found.push(format!(
                    "{} {} {}",
                    e["devname"].as_str().unwrap_or("?"),
                    e["kind"].as_str().unwrap_or(key),
                    e["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    let links: serde_json::Value =
        serde_json::from_str(&node.exec_ok("ip", ["-j", "link", "show"])?)?;
    let devices: Vec<(u32, String)> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["ifindex"].as_u64()? as u32, l["ifname"].as_str()?.into())))
        .collect();
    let tcx = netns::in_netns(node.netns(), move || {
        let mut found = vec![];
        for (index, name) in devices {
            for (kind, attach_type) in [
                ("tcx/ingress", BPF_TCX_INGRESS),
                ("tcx/egress", BPF_TCX_EGRESS),
            ] {
                let n = tcx_count(index, attach_type)
                    .with_context(|| format!("querying {kind} of {name}"))?;
                if n > 0 {
                    found.push(format!("{name} {kind} {n} program(s)"));
                }
            }
        }
        Ok(found)
    })?;
    found.extend(tcx);
    Ok(found)
}

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// How many programs are attached at TCX hook `attach_type` of interface `ifindex` of the
/// calling thread's namespace (`BPF_PROG_QUERY`, `bpf(2)`).
fn tcx_count(ifindex: u32, attach_type: u32) -> std::io::Result<u32> {
    // The query member of `union bpf_attr`: target_ifindex, attach_type, query_flags,
    // attach_flags, prog_ids (u64), prog_cnt, then fields left zero; 64 bytes in all.
    let mut attr = [0u32; 16];
    attr[0] = ifindex;
    attr[1] = attach_type;
    // SAFETY: bpf(2) reads and writes only within the `attr` buffer whose size it is given;
    // with no prog_ids buffer it only writes the count.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr[6])
}

/// UDP datagrams `node`'s namespace has sent (`OutDatagrams` of `/proc/net/snmp`).
fn udp_out_datagrams(node: &Node) -> Result<u64> {
    udp_counter(node, "OutDatagrams")
}

/// Counter `name` of the `Udp:` lines of `node`'s `/proc/net/snmp`.
fn udp_counter(node: &Node, name: &str) -> Result<u64> {
    let snmp = node.exec_ok("cat", ["/proc/net/snmp"])?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no Udp {name} in /proc/net/snmp"))
}

/// Removes every route to `cidr` from `node`'s main table.
fn delete_routes(node: &Node, cidr: &str) {
    for _ in 0..8 {
        let deleted = netns::ip(&["-n", node.netns(), "route", "del", cidr]);
        if deleted.is_err() {
            break;
        }
    }
}

/// A client pod on node1 and a server pod on node2 (iperf3 and the request/response
/// server), made by the CNI plugin of the agents running at the time.
struct PodPair {
    client: Pod,
    server: Pod,
    /// The pods' interface MTU, as the agent chose it.
    mtu: u32,
    _iperf: Spawned,
}

impl PodPair {
    /// Makes the pair (`client<suffix>`, `server<suffix>`) and starts the servers.
    fn new(node1: &Node, node2: &Node, suffix: &str) -> Result<PodPair> {
        let client = node1.add_pod("bench", &format!("client{suffix}"), &[("app", "client")])?;
        let server = node2.add_pod("bench", &format!("server{suffix}"), &[("app", "server")])?;
        let iperf = server.spawn("iperf3", ["-s", "-p", &IPERF_PORT.to_string()])?;
        bench::spawn_rr_server(&server, RR_PORT, rr_cpus().1)?;
        let link: serde_json::Value =
            serde_json::from_str(&client.exec_ok("ip", ["-j", "link", "show", "eth0"])?)?;
        let mtu = link[0]["mtu"]
            .as_u64()
            .context("the pod's eth0 has no MTU")? as u32;
        Ok(PodPair {
            client,
            server,
            mtu,
            _iperf: iperf,
        })
    }

    fn rr_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.ip(), RR_PORT)
    }

    /// The path MTU the client pod's kernel learnt for the server (`ip route get`), if any.
    fn path_mtu(&self) -> Option<u32> {
        let out = self
            .client
            .exec_ok("ip", ["route", "get", &self.server.ip().to_string()])
            .ok()?;
        let mut words = out.split_whitespace();
        words.find(|w| *w == "mtu")?;
        words.next()?.parse().ok()
    }
}

struct Bench {
    node1: Node,
    node2: Node,
    /// Pods made with plain agents (the uplink's MTU).
    plain: PodPair,
    /// Pods made with encrypting agents (MTU less the tunnel's overhead), or why there
    /// are none.
    encrypted: Result<PodPair, String>,
    keys: Vec<(PathBuf, String)>,
    wg: RefCell<Vec<WireguardGo>>,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl Bench {
    fn nodes(&self) -> [&Node; 2] {
        [&self.node1, &self.node2]
    }

    /// The pods `case` measures: those an encrypting cluster would have for both tunnels
    /// (so lumen-wg and wireguard-go see the same packet sizes), else the plain ones.
    fn pods(&self, case: Case) -> Result<&PodPair> {
        match (case, &self.encrypted) {
            (Case::Baseline | Case::Native, _) => Ok(&self.plain),
            (Case::LumenWg, Err(e)) => bail!("no pods with encryption: {e}"),
            (_, Ok(pods)) => Ok(pods),
            (Case::WireguardGo, Err(_)) => Ok(&self.plain),
        }
    }

    /// Back to a bare node: no tunnels, no agents, no programs, no routes between the pod
    /// CIDRs. Fails if a program is still attached.
    fn reset(&self) -> Result<()> {
        self.wg.borrow_mut().clear();
        for n in self.nodes() {
            n.stop_agent()
                .with_context(|| format!("stopping the agent of {}", n.name()))?;
        }
        for n in self.nodes() {
            let links = n.bpf_dir().join("links");
            if let Ok(entries) = std::fs::read_dir(&links) {
                for e in entries.flatten() {
                    std::fs::remove_file(e.path())
                        .with_context(|| format!("removing {}", e.path().display()))?;
                }
            }
        }
        // A tunnel device outliving its process (a persistent TUN) would keep routes alive.
        for n in self.nodes() {
            let links: serde_json::Value =
                serde_json::from_str(&n.exec_ok("ip", ["-j", "-d", "link", "show"])?)?;
            for l in links.as_array().into_iter().flatten() {
                if l["linkinfo"]["info_kind"] == "tun" {
                    let name = l["ifname"].as_str().unwrap_or("");
                    eprintln!(
                        "routing-bench: removing the leftover tunnel {name} of {}",
                        n.name()
                    );
                    n.exec_ok("ip", ["link", "del", name])?;
                }
            }
        }
        delete_routes(&self.node1, self.node2.pod_cidr());
        delete_routes(&self.node2, self.node1.pod_cidr());
        // A path MTU learnt through a tunnel would otherwise shrink the next case's segments.
        let pairs = std::iter::once(&self.plain).chain(self.encrypted.as_ref().ok());
        for pair in pairs {
            for pod in [&pair.client, &pair.server] {
                pod.exec_ok("ip", ["route", "flush", "cache"])?;
            }
        }
        for n in self.nodes() {
            let left = attached_programs(n)?;
            if !left.is_empty() {
                bail!(
                    "programs still attached in {} after the link pins went: {left:?}",
                    n.name()
                );
            }
        }
        Ok(())
    }

    /// Sets up `case` from a [`Bench::reset`] node; returns once the server answers.
    fn prepare(&self, case: Case) -> Result<()> {
        let pods = self.pods(case)?;
        self.reset()?;
        match case {
            Case::Baseline => self.lab.route_pod_cidrs()?,
            Case::Native | Case::LumenWg => {
                let options = case.agents().expect("an agent case");
                for n in self.nodes() {
                    n.start_agent(options.clone())?;
                }
            }
            Case::WireguardGo => {
                let name = |n: &Node| format!("rbwg{}-{}", std::process::id(), n.index());
                let mut wg = self.wg.borrow_mut();
                wg.push(WireguardGo::start(
                    &self.node1,
                    &name(&self.node1),
                    &self.keys[0].0,
                    &self.node2,
                    &self.keys[1].1,
                )?);
                wg.push(WireguardGo::start(
                    &self.node2,
                    &name(&self.node2),
                    &self.keys[1].0,
                    &self.node1,
                    &self.keys[0].1,
                )?);
            }
        }
        let to = pods.rr_addr();
        if bench::wait_until(READY_TIMEOUT, || bench::echo_works(&pods.client, to)).is_none() {
            bail!(
                "the server pod {to} did not answer within {} s",
                READY_TIMEOUT.as_secs()
            );
        }
        Ok(())
    }

    /// One block: set up `case`, then throughput, request/response, parallel
    /// request/response.
    fn run(&self, case: Case) -> Run {
        let mut run = Run::default();
        let started = Instant::now();
        if let Err(e) = self.prepare(case) {
            eprintln!("routing-bench:   {}: setup failed: {e:#}", case.name());
            run.errors.push(format!("setup: {e:#}"));
            return run;
        }
        let setup_s = started.elapsed().as_secs_f64();
        let pods = self.pods(case).expect("prepared");
        run.pod_mtu = Some(pods.mtu);
        run.programs = attached_programs(&self.node1).map(|p| p.len()).unwrap_or(0);
        if case.agents().is_some() && run.programs == 0 {
            run.errors
                .push("the agent attached no program in node1's namespace".into());
            return run;
        }
        let secs = seconds();
        let udp0 = udp_out_datagrams(&self.node1);
        let rcvbuf0 = udp_counter(&self.node2, "RcvbufErrors");
        match bench::iperf_tcp(&pods.client, pods.server.ip(), IPERF_PORT, secs as u32) {
            Ok(r) => {
                run.gbps = Some(r.gbps);
                run.retransmits = Some(r.retransmits);
            }
            Err(e) => run.errors.push(format!("iperf3: {e:#}")),
        }
        run.path_mtu = pods.path_mtu();
        if let (Ok(a), Ok(b)) = (udp0, udp_out_datagrams(&self.node1)) {
            run.udp_out = Some(b.saturating_sub(a));
        }
        if let (Ok(a), Ok(b)) = (rcvbuf0, udp_counter(&self.node2, "RcvbufErrors")) {
            run.udp_rcvbuf_drops = Some(b.saturating_sub(a));
        }
        for (connections, slot) in [(1, &mut run.rr), (RR_PARALLEL, &mut run.rr_parallel)] {
            match bench::tcp_rr(
                &pods.client,
                pods.rr_addr(),
                connections,
                Duration::from_secs(secs),
                rr_cpus().0,
            ) {
                Ok(r) => {
                    *slot = Some(r.per_second);
                    run.broken += r.broken;
                }
                Err(e) => run
                    .errors
                    .push(format!("request/response x{connections}: {e:#}")),
            }
        }
        eprintln!(
            "routing-bench:   {:<13} {:>6} Gbit/s {:>8} tx/s {:>8} tx/s (x{RR_PARALLEL}); pod MTU {}, {} retransmits, path MTU {}, {} UDP datagrams out of node1 ({} dropped by node2's full receive buffers), {} programs in node1, setup {setup_s:.1} s",
            case.name(),
            fmt_opt(run.gbps, 2),
            fmt_opt(run.rr, 0),
            fmt_opt(run.rr_parallel, 0),
            pods.mtu,
            run.retransmits.map(|u| u.to_string()).unwrap_or("?".into()),
            run.path_mtu.map(|u| u.to_string()).unwrap_or("-".into()),
            run.udp_out.map(|u| u.to_string()).unwrap_or("?".into()),
            run.udp_rcvbuf_drops.map(|u| u.to_string()).unwrap_or("?".into()),
            run.programs,
        );
        // A case that is not what it says must not count as that case.
        let udp = run.udp_out.unwrap_or(0);
        if case.encrypted() && udp < MIN_TUNNEL_DATAGRAMS {
            run.errors.push(format!(
                "not encrypted: node1 sent only {udp} UDP datagrams during the throughput run"
            ));
        } else if !case.encrypted() && udp >= MIN_TUNNEL_DATAGRAMS {
            run.errors.push(format!(
                "node1 sent {udp} UDP datagrams during a plain throughput run"
            ));
        }
        if !run.errors.is_empty() {
            for e in &run.errors {
                eprintln!("routing-bench:   {}: {e}", case.name());
            }
            (run.gbps, run.rr, run.rr_parallel) = (None, None, None);
        }
        run
    }
}

/// CPUs of the request/response client and server threads: different ones, as on two
/// machines, and fixed, so the scheduler's placement does not make the rate bimodal
/// (a ping-pong between two threads runs several times faster on one CPU than across two).
fn rr_cpus() -> (Option<usize>, Option<usize>) {
    match std::thread::available_parallelism().map(|n| n.get()) {
        Ok(n) if n >= 2 => (Some(0), Some(1)),
        _ => (None, None),
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}"))
        .unwrap_or_else(|| "—".into())
}

fn setup() -> Result<Bench> {
    let lab = Lab::new("routingbench")?;
    let node1 = lab.add_node("node1")?;
    let node2 = lab.add_node("node2")?;
    let nodes = [&node1, &node2];
    // Pods take their MTU from the agent that wires them: one pair from encrypting
    // agents, one from plain ones.
    let start = |options: AgentOptions| -> Result<()> {
        for n in nodes {
            n.stop_agent()?;
        }
        for n in nodes {
            n.start_agent(options.clone())?;
        }
        Ok(())
    };
    let encrypted = start(Case::LumenWg.agents().expect("agent options"))
        .and_then(|()| PodPair::new(&node1, &node2, "-wg"))
        .map_err(|e| {
            eprintln!("routing-bench: no pods with encryption: {e:#}");
            let first = format!("{e:#}");
            let last = first.lines().rev().find(|l| !l.trim().is_empty());
            last.unwrap_or("").to_string()
        });
    start(Case::Native.agents().expect("agent options"))?;
    let plain = PodPair::new(&node1, &node2, "")?;
    let keys = vec![wg_keys(node1.dir())?, wg_keys(node2.dir())?];
    Ok(Bench {
        node1,
        node2,
        plain,
        encrypted,
        keys,
        wg: RefCell::new(vec![]),
        lab,
    })
}

/// The median over rounds of `a[r] / b[r]`, rounds where both ran; `None` without any.
fn paired(a: &[Option<f64>], b: &[Option<f64>]) -> Option<f64> {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) if *y > 0.0 => Some(x / y),
            _ => None,
        })
        .collect();
    (!r.is_empty()).then(|| median(&r))
}

fn median_of(v: &[Option<f64>]) -> Option<f64> {
    let ok: Vec<f64> = v.iter().flatten().copied().collect();
    (!ok.is_empty()).then(|| median(&ok))
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    lumen_integration::install_interrupt_handler();
    for tool in ["iperf3", "wireguard-go", "wg", "bpftool"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} is not installed");
        }
    }
    let wg_go_version = std::process::Command::new("wireguard-go")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let load_before = loadavg();
    let b = setup()?;
    let (secs, nrounds) = (seconds(), rounds());
    let mut runs: Vec<Vec<Run>> = vec![vec![]; Case::ALL.len()];
    'rounds: for round in 0..nrounds {
        eprintln!("routing-bench: round {}/{nrounds}", round + 1);
        for k in 0..Case::ALL.len() {
            if lumen_integration::interrupted() {
                eprintln!("routing-bench: interrupted");
                break 'rounds;
            }
            let idx = (round + k) % Case::ALL.len();
            runs[idx].push(b.run(Case::ALL[idx]));
        }
    }
    // Agents back before the teardown, so the pods' CNI DEL finds them.
    let restored = b.reset().and_then(|()| {
        for n in b.nodes() {
            n.start_agent(Case::Native.agents().expect("agent options"))?;
        }
        Ok(())
    });
    if let Err(e) = restored {
        eprintln!("routing-bench: restoring the agents for the teardown: {e:#}");
    }

    let series = |c: Case, f: fn(&Run) -> Option<f64>| -> Vec<Option<f64>> {
        runs[c as usize].iter().map(f).collect()
    };
    let gbps = |c: Case| series(c, |r| r.gbps);
    let rr = |c: Case| series(c, |r| r.rr);
    let rr4 = |c: Case| series(c, |r| r.rr_parallel);

    let mut out = String::new();
    let load_after = loadavg();
    let _ = writeln!(
        out,
        "\nCross-node pod-to-pod (routing-bench): client pod on node1 → server pod on node2, {secs} s per measurement, \
         {nrounds} rounds (one block per case, order rotating)\n\
         (Gbit/s: iperf3, 1 TCP stream; RR: 1-byte request → 1-byte response on 1 connection, and on {RR_PARALLEL}, transactions/s;\n\
         medians of the rounds that ran; {wg_go_version}; machine: {} CPUs, load average {load_before} before, {load_after} after)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let _ = writeln!(
        out,
        "  {:<13} {:<34} {:>7} {:>8} {:>10} {:>11} {:>7}",
        "case",
        "",
        "pod MTU",
        "Gbit/s",
        "RR tx/s",
        format!("RR x{RR_PARALLEL} tx/s"),
        "rounds"
    );
    let mut figures = serde_json::Map::new();
    for case in Case::ALL {
        let case_runs = &runs[case as usize];
        let ok = case_runs.iter().filter(|r| r.errors.is_empty()).count();
        let _ = writeln!(
            out,
            "  {:<13} {:<34} {:>7} {:>8} {:>10} {:>11} {:>3}/{:<3}",
            case.name(),
            case.label(),
            case_runs
                .iter()
                .find_map(|r| r.pod_mtu)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "—".into()),
            fmt_opt(median_of(&gbps(case)), 2),
            fmt_opt(median_of(&rr(case)), 0),
            fmt_opt(median_of(&rr4(case)), 0),
            ok,
            case_runs.len()
        );
        // An error's first line says what failed; with a log tail, its last line why.
        let mut errors: Vec<String> = vec![];
        for e in case_runs.iter().flat_map(|r| &r.errors) {
            let first = e.lines().next().unwrap_or("");
            let last = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            let short = if first == last {
                first.chars().take(200).collect()
            } else {
                let first: String = first.chars().take(100).collect();
                let last: String = last.chars().take(200).collect();
                format!("{first} … {last}")
            };
            if !errors.contains(&short) {
                errors.push(short);
            }
        }
        for e in errors.iter().take(3) {
            let _ = writeln!(out, "      failed: {e}");
        }
        let broken: u64 = case_runs.iter().map(|r| r.broken).sum();
        if broken > 0 {
            let _ = writeln!(out, "      {broken} request/response connection(s) broke");
        }
        figures.insert(
            case.name().into(),
            json!({
                "gbps": gbps(case), "rr_per_s": rr(case), "rr_parallel_per_s": rr4(case),
                "gbps_median": median_of(&gbps(case)), "rr_median": median_of(&rr(case)),
                "rr_parallel_median": median_of(&rr4(case)),
                "udp_datagrams_out": case_runs.iter().map(|r| r.udp_out).collect::<Vec<_>>(),
                "udp_rcvbuf_drops_node2": case_runs.iter().map(|r| r.udp_rcvbuf_drops).collect::<Vec<_>>(),
                "programs_node1": case_runs.iter().map(|r| r.programs).collect::<Vec<_>>(),
                "rr_connections_broken": broken,
                "iperf_retransmits": case_runs.iter().map(|r| r.retransmits).collect::<Vec<_>>(),
                "client_path_mtu": case_runs.iter().map(|r| r.path_mtu).collect::<Vec<_>>(),
                "pod_mtu": case_runs.iter().map(|r| r.pod_mtu).collect::<Vec<_>>(),
                "errors": case_runs.iter().map(|r| r.errors.clone()).collect::<Vec<_>>(),
            }),
        );
    }

    let ratio = |a: Case, b: Case| {
        [
            paired(&gbps(a), &gbps(b)),
            paired(&rr(a), &rr(b)),
            paired(&rr4(a), &rr4(b)),
        ]
    };
    let pct = |v: Option<f64>| {
        v.map(|x| format!("{:.1} %", 100.0 * x))
            .unwrap_or_else(|| "—".into())
    };
    let times = |v: Option<f64>| v.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "—".into());
    let native = ratio(Case::Native, Case::Baseline);
    let wg = ratio(Case::LumenWg, Case::WireguardGo);
    let enc = ratio(Case::LumenWg, Case::Native);
    let _ = writeln!(
        out,
        "Ratios (medians of the per-round ratios; throughput / RR / RR x{RR_PARALLEL}):"
    );
    let _ = writeln!(
        out,
        "  native / baseline:         {} / {} / {}",
        pct(native[0]),
        pct(native[1]),
        pct(native[2])
    );
    let _ = writeln!(
        out,
        "  lumen-wg / wireguard-go:   {} / {} / {}",
        times(wg[0]),
        times(wg[1]),
        times(wg[2])
    );
    let _ = writeln!(
        out,
        "  lumen-wg / native:         {} / {} / {}  (informational: what encryption costs)",
        pct(enc[0]),
        pct(enc[1]),
        pct(enc[2])
    );
    let verdicts = [
        (
            "native ≥ 90 % of baseline, throughput",
            native[0].is_some_and(|x| x >= 0.9),
            pct(native[0]),
        ),
        (
            "native ≥ 90 % of baseline, request/response",
            native[1].is_some_and(|x| x >= 0.9),
            pct(native[1]),
        ),
        (
            "lumen-wg ≥ 1.0x wireguard-go, throughput",
            wg[0].is_some_and(|x| x >= 1.0),
            times(wg[0]),
        ),
        (
            "lumen-wg ≥ 1.0x wireguard-go, request/response",
            wg[1].is_some_and(|x| x >= 1.0),
            times(wg[1]),
        ),
    ];
    let _ = writeln!(out, "Targets:");
    for (what, ok, value) in &verdicts {
        let _ = writeln!(out, "  {:<4} {what}: {value}", pass(*ok));
    }
    print!("{out}");
    println!(
        "{}",
        json!({
            "seconds": secs,
            "rounds": nrounds,
            "cases": figures,
            "ratios": {
                "native_over_baseline": {"gbps": native[0], "rr": native[1], "rr_parallel": native[2]},
                "lumen_wg_over_wireguard_go": {"gbps": wg[0], "rr": wg[1], "rr_parallel": wg[2]},
                "lumen_wg_over_native": {"gbps": enc[0], "rr": enc[1], "rr_parallel": enc[2]},
            },
            "wireguard_go": wg_go_version,
            "load_average": [load_before, load_after],
            "targets": verdicts.iter().map(|(w, ok, v)| json!({"target": w, "pass": ok, "value": v})).collect::<Vec<_>>(),
        })
    );
    Ok(())
}
