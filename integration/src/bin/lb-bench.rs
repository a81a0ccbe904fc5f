//! `lb-bench`: what service load balancing costs, in one lab run on one machine.
//!
//! Two nodes with `kubeProxyReplacement: true`; echo servers in `web-a` (node1) and `web-b`
//! (node2), iperf3 in `web-a`; two client pods per case on node1 (see [`setup`] for why
//! the cases do not share them).
//!
//! 1. New TCP connections/s (4 workers over a case's two client pods; each connection sends
//!    64 bytes, reads the echo and closes; 5 s per run) for three cases, in rotating order,
//!    round after round, so drifting load weighs on all of them alike:
//!    - *direct*: to the backend pod IPs, round-robin;
//!    - *eBPF*: to a ClusterIP of a Service (two backends, one per node) translated by the
//!      agent's datapath;
//!    - *iptables*: to a ClusterIP of a range the agent does not program (no Service object),
//!      DNATed in node1's namespace by rules written like kube-proxy's (`iptables-restore`:
//!      nat `PREROUTING` → `KUBE-SERVICES` → `KUBE-SVC-…` with `-m statistic --mode random`
//!      → `KUBE-SEP-…` DNAT, masquerade marking, `KUBE-POSTROUTING`, the filter table's
//!      `KUBE-FORWARD`). The rules are loaded only for that case: with them gone, nothing
//!      in the namespace needs netfilter conntrack and the kernel stops tracking, so the
//!      other cases see a node without kube-proxy.
//!
//!    All three with 10 services, then again with 10,000 (one manifest file of 10,000
//!    Service + EndpointSlice objects; 10,000 `KUBE-SVC` chains). The measured service is
//!    the middle one (kube-proxy's order is a map's: the middle is the average walk of
//!    `KUBE-SERVICES`), and a new one for the 10,000, so its first working connection shows
//!    that the agent has programmed them; how long that took is reported too.
//! 2. TCP throughput client → `web-a` directly vs through a ClusterIP whose only backend is
//!    `web-a` (iperf3, one stream, 5 s, interleaved).
//!
//! Prints a table (conn/s: medians of the rounds; percentages and ratios: medians of the
//! per-round ratios), the targets with pass/fail (exit status 0 either way: a benchmark),
//! and a JSON summary. `LUMEN_LB_BENCH_SECONDS` and `LUMEN_LB_BENCH_ROUNDS` change the 5 s
//! per run and the 5 rounds (about 4 minutes in all).

use anyhow::{bail, Context, Result};
use lumen_integration::bench::{self, median, ConnRate};
use lumen_integration::{policy, AgentOptions, Lab, Node, Pod};
use serde_json::json;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Seconds per run (`LUMEN_LB_BENCH_SECONDS`, default 5).
fn seconds() -> u64 {
    env_or("LUMEN_LB_BENCH_SECONDS", 5)
}

/// Interleaved rounds (`LUMEN_LB_BENCH_ROUNDS`, default 5): more on a busy machine.
fn rounds() -> usize {
    env_or("LUMEN_LB_BENCH_ROUNDS", 5)
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const WORKERS: usize = 4;
/// Echo server port of the backends (the services' target port).
const BACKEND_PORT: u16 = 8080;
/// The services' port.
const SERVICE_PORT: u16 = 80;
const IPERF_PORT: u16 = 5201;
const FEW: usize = 10;
const MANY: usize = 10_000;
/// ClusterIPs of the Service objects (programmed by the agent): 10.96.0.10 + i.
const EBPF_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// ClusterIPs only the iptables rules know: 10.97.0.10 + i.
const IPTABLES_BASE: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 10);
/// The one-backend service of the throughput test.
const IPERF_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 255, 1);
/// Pod CIDRs of the lab (kube-proxy's `--cluster-cidr`).
const CLUSTER_CIDR: &str = "10.100.0.0/16";
const MANIFEST: &str = "lb-bench-services.yaml";
/// How long the agent may take to program 10,000 services before the case is skipped.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(150);

fn nth(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + i as u32)
}

/// The measured service of a set of `n`.
fn measured(n: usize) -> usize {
    n / 2
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Direct,
    Ebpf,
    Iptables,
}

impl Case {
    const ALL: [Case; 3] = [Case::Direct, Case::Ebpf, Case::Iptables];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Case::Direct => "direct to the backend pods (round-robin)",
            Case::Ebpf => "ClusterIP, eBPF load balancer",
            Case::Iptables => "ClusterIP, iptables DNAT (kube-proxy rules)",
        }
    }
}

/// `n` Services (`svc-<i>`, ClusterIP `EBPF_BASE + i`, port 80 → 8080) with one
/// EndpointSlice each listing `backends`, and the throughput service `iperf` (5201 →
/// `iperf_backend`), as one manifest file.
fn services_yaml(n: usize, backends: &[IpAddr], iperf_backend: IpAddr) -> String {
    let mut s = String::with_capacity(n * 700);
    let endpoints = |ips: &[IpAddr]| -> String {
        ips.iter()
            .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
            .collect()
    };
    let eps = endpoints(backends);
    let mut one = |name: &str, ip: Ipv4Addr, port: u16, target: u16, eps: &str| {
        let _ = write!(
            s,
            "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: bench}}
spec:
  clusterIP: {ip}
  selector: {{app: {name}}}
  ports: [{{port: {port}, targetPort: {target}, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: bench
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{port: {target}, protocol: TCP}}]
endpoints:
{eps}"
        );
    };
    for i in 0..n {
        one(
            &format!("svc-{i}"),
            nth(EBPF_BASE, i),
            SERVICE_PORT,
            BACKEND_PORT,
            &eps,
        );
    }
    one(
        "iperf",
        IPERF_SERVICE_IP,
        IPERF_PORT,
        IPERF_PORT,
        &endpoints(&[iperf_backend]),
    );
    s
}

/// A kube-proxy-style chain name: prefix and 16 characters of a hash.
fn chain(prefix: &str, what: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    what.hash(&mut h);
    format!("{prefix}-{:016X}", h.finish())
}

/// kube-proxy's iptables-mode rules (nat and filter tables) for `n` ClusterIP services
/// (`IPTABLES_BASE + i`, port 80) with `backends` (equal probability), for
/// `iptables-restore`.
fn kube_proxy_rules(n: usize, backends: &[IpAddr]) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for i in 0..n {
        let name = format!("bench/svc-{i}:http");
        let ip = nth(IPTABLES_BASE, i);
        let svc = chain("KUBE-SVC", &name);
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(rules, "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {SERVICE_PORT} -j {svc}");
        let _ = writeln!(rules, "-A {svc} ! -s {CLUSTER_CIDR} -d {ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ");
        for (k, b) in backends.iter().enumerate() {
            let sep = chain("KUBE-SEP", &format!("{name}/{b}"));
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let left = backends.len() - k;
            if left > 1 {
                let _ = writeln!(rules, "-A {svc} -m comment --comment \"{name} -> {b}:{BACKEND_PORT}\" -m statistic --mode random --probability {:.11} -j {sep}", 1.0 / left as f64);
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {b}:{BACKEND_PORT}\" -j {sep}"
                );
            }
            let _ = writeln!(
                rules,
                "-A {sep} -s {b}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(rules, "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {b}:{BACKEND_PORT}");
        }
    }
    format!(
        "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
{chains}-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
{rules}-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"
    )
}

/// Empty nat and filter tables: no rule needs conntrack, so the namespace stops tracking.
const NO_RULES: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

/// `iptables-legacy-restore` when installed (kube-proxy's usual backend on the machines
/// the reference figure came from), else `iptables-restore`; and `iptables -V` of it.
fn iptables() -> Result<(&'static str, String)> {
    for (restore, main) in [
        ("iptables-legacy-restore", "iptables-legacy"),
        ("iptables-restore", "iptables"),
    ] {
        if let Ok(out) = std::process::Command::new(main).arg("-V").output() {
            if out.status.success() {
                return Ok((
                    restore,
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                ));
            }
        }
    }
    bail!("iptables is not installed (`cargo xtask setup` installs it)")
}

/// Replaces the nat and filter tables of `node`'s namespace with `rules`: how long it took.
fn restore(node: &Node, bin: &str, rules: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut child = node
        .command(bin)?
        .arg("-w")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{bin}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(start.elapsed())
}

/// CPU seconds an agent has used so far.
fn cpu_seconds(node: &Node) -> f64 {
    let Some(pid) = node.agent_pid() else {
        return 0.0;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and
    // 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

/// Waits until no agent uses more than a tenth of a CPU over half a second: how long.
fn wait_agents_quiet(nodes: &[&Node], timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    let total = || nodes.iter().map(|n| cpu_seconds(n)).collect::<Vec<_>>();
    let mut before = total();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = total();
        if now.iter().zip(&before).all(|(a, b)| a - b < 0.05) {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        before = now;
    }
}

/// How long node1's agent's last regeneration took, ms (its admin `status`).
fn regeneration_ms(node: &Node) -> f64 {
    policy::status(node)
        .ok()
        .and_then(|s| s["regeneration"][0].as_f64())
        .unwrap_or(0.0)
        / 1000.0
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

struct Lab2 {
    node1: Node,
    node2: Node,
    /// Two client pods per case (by [`Case::index`]): see [`setup`].
    clients: Vec<Vec<Pod>>,
    backends: Vec<Pod>,
    iptables_bin: &'static str,
    /// A direct or eBPF run saw node1's conntrack table grow (netfilter was tracking).
    conntrack_active: std::cell::Cell<bool>,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl Lab2 {
    fn backend_ips(&self) -> Vec<IpAddr> {
        self.backends.iter().map(|p| p.ip()).collect()
    }

    fn clients(&self, case: Case) -> Vec<&Pod> {
        self.clients[case.index()].iter().collect()
    }

    fn targets(&self, case: Case, n: usize) -> Vec<SocketAddr> {
        match case {
            Case::Direct => self
                .backend_ips()
                .into_iter()
                .map(|ip| SocketAddr::new(ip, BACKEND_PORT))
                .collect(),
            Case::Ebpf => vec![SocketAddr::new(
                nth(EBPF_BASE, measured(n)).into(),
                SERVICE_PORT,
            )],
            Case::Iptables => vec![SocketAddr::new(
                nth(IPTABLES_BASE, measured(n)).into(),
                SERVICE_PORT,
            )],
        }
    }

    /// Netfilter conntrack entries of node1's namespace.
    fn conntrack_count(&self) -> u64 {
        lumen_integration::netns::in_netns(self.node1.netns(), || {
            Ok(
                std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")?
                    .trim()
                    .parse::<u64>()?,
            )
        })
        .unwrap_or(0)
    }

    fn echo_works(&self, case: Case, to: SocketAddr) -> bool {
        bench::echo_works(&self.clients[case.index()][0], to)
    }

    /// One run of `case` with `n` services (the iptables rules are loaded around it).
    fn run(&self, case: Case, n: usize, rules: &str) -> Result<ConnRate> {
        let tracked_before = self.conntrack_count();
        if case == Case::Iptables {
            restore(&self.node1, self.iptables_bin, rules)?;
        }
        let targets = self.targets(case, n);
        let result = (|| {
            for t in &targets {
                if bench::wait_until(Duration::from_secs(5), || self.echo_works(case, *t)).is_none()
                {
                    bail!("{case:?} with {n} services: {t} does not answer");
                }
            }
            bench::conn_rate(
                &self.clients(case),
                &targets,
                WORKERS,
                Duration::from_secs(seconds()),
            )
        })();
        if case == Case::Iptables {
            restore(&self.node1, self.iptables_bin, NO_RULES)?;
        }
        let r = result?;
        let tracked_after = self.conntrack_count();
        if case != Case::Iptables && tracked_after > tracked_before {
            self.conntrack_active.set(true);
        }
        eprintln!(
            "lb-bench:   {:<44} {n:>6} services: {:>8.0} conn/s ({} ok, {} failed; node1 conntrack entries {tracked_before} → {tracked_after})",
            case.label(),
            r.per_second,
            r.ok,
            r.failed
        );
        Ok(r)
    }

    /// [`rounds`] rounds of the three cases with `n` services, the order rotating each round.
    /// `skip_ebpf`: the agent never programmed them.
    fn phase(&self, n: usize, skip_ebpf: bool) -> Result<Vec<(Case, Vec<ConnRate>)>> {
        let rules = kube_proxy_rules(n, &self.backend_ips());
        let mut out: Vec<(Case, Vec<ConnRate>)> = Case::ALL.iter().map(|c| (*c, vec![])).collect();
        for round in 0..rounds() {
            eprintln!("lb-bench: {n} services, round {}/{}", round + 1, rounds());
            for k in 0..Case::ALL.len() {
                let idx = (round + k) % Case::ALL.len();
                let case = Case::ALL[idx];
                if skip_ebpf && case == Case::Ebpf {
                    continue;
                }
                let r = self.run(case, n, &rules)?;
                out[idx].1.push(r);
            }
        }
        Ok(out)
    }
}

fn setup() -> Result<Lab2> {
    let (iptables_bin, _) = iptables()?;
    let lab = Lab::new("lbbench")?;
    let node1 = lab.add_node("node1")?;
    let node2 = lab.add_node("node2")?;
    lab.route_pod_cidrs()?;
    for n in [&node1, &node2] {
        n.start_agent(AgentOptions {
            kube_proxy_replacement: true,
            ..Default::default()
        })?;
    }
    let mut backends = vec![];
    for (node, name) in [(&node1, "web-a"), (&node2, "web-b")] {
        let pod = node.add_pod("bench", name, &[("app", "web")])?;
        bench::spawn_echo_server(&pod, BACKEND_PORT, 4)?;
        backends.push(pod);
    }
    // Each case has its own client pods. Sharing them would measure a datapath defect
    // rather than the load balancer: `REVNAT` entries (keyed by the translated
    // connection, never removed when it closes) rewrite the replies of a later direct
    // connection that happens to reuse a client port to the same backend, which then
    // fails (nearly every direct connection once the ClusterIP case has walked the
    // ephemeral port range).
    let mut clients = vec![];
    for case in Case::ALL {
        let short = ["direct", "ebpf", "ipt"][case.index()];
        clients.push(
            (0..2)
                .map(|i| {
                    node1.add_pod(
                        "bench",
                        &format!("client-{short}-{i}"),
                        &[("app", "client")],
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        );
    }
    Ok(Lab2 {
        node1,
        node2,
        clients,
        backends,
        iptables_bin,
        conntrack_active: Default::default(),
        lab,
    })
}

/// The median over rounds of `a[r] / b[r]` (runs of the same round ran back to back, so
/// the machine's drifting load cancels out): 0 without runs.
fn paired(a: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, y)| **y > 0.0)
        .map(|(x, y)| x / y)
        .collect();
    median(&r)
}

/// Median conn/s of a case's runs, and its failures.
fn summarise(runs: &[ConnRate]) -> (f64, u64) {
    (
        median(&runs.iter().map(|r| r.per_second).collect::<Vec<_>>()),
        runs.iter().map(|r| r.failed).sum(),
    )
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn main() -> Result<()> {
    lumen_integration::install_interrupt_handler();
    let (_, iptables_version) = iptables()?;
    let load_before = loadavg();
    let b = setup()?;
    let web_a = b.backends[0].ip();
    let _iperf = b.backends[0].spawn("iperf3", ["-s", "-p", &IPERF_PORT.to_string()])?;

    // 10 services (and the throughput service).
    policy::write(
        &b.lab,
        MANIFEST,
        &services_yaml(FEW, &b.backend_ips(), web_a),
    )?;
    let few_ip = SocketAddr::new(nth(EBPF_BASE, measured(FEW)).into(), SERVICE_PORT);
    bench::wait_until(Duration::from_secs(30), || b.echo_works(Case::Ebpf, few_ip))
        .with_context(|| format!("the ClusterIP {few_ip} never answered"))?;
    for t in b.targets(Case::Direct, FEW) {
        if !b.echo_works(Case::Direct, t) {
            bail!("backend {t} does not answer");
        }
    }
    std::thread::sleep(Duration::from_millis(500));

    // Throughput, direct vs ClusterIP, interleaved.
    let (mut tp_direct, mut tp_svc) = (vec![], vec![]);
    for round in 0..rounds() {
        eprintln!("lb-bench: throughput round {}/{}", round + 1, rounds());
        let direct = || {
            bench::iperf_tcp_gbps(
                &b.clients[Case::Direct.index()][0],
                web_a,
                IPERF_PORT,
                seconds() as u32,
            )
        };
        let svc = || {
            bench::iperf_tcp_gbps(
                &b.clients[Case::Ebpf.index()][0],
                IPERF_SERVICE_IP.into(),
                IPERF_PORT,
                seconds() as u32,
            )
        };
        if round % 2 == 0 {
            tp_direct.push(direct()?);
            tp_svc.push(svc()?);
        } else {
            tp_svc.push(svc()?);
            tp_direct.push(direct()?);
        }
        eprintln!(
            "lb-bench:   direct {:.2} Gbit/s, ClusterIP {:.2} Gbit/s",
            tp_direct[round], tp_svc[round]
        );
    }

    let regen_few = regeneration_ms(&b.node1);
    let few = b.phase(FEW, false)?;

    // 10,000 services: the agent's convergence, and the rules' load time.
    eprintln!("lb-bench: writing {MANY} Services + EndpointSlices (one file)");
    let yaml = services_yaml(MANY, &b.backend_ips(), web_a);
    let cpu0 = (cpu_seconds(&b.node1), cpu_seconds(&b.node2));
    let written = Instant::now();
    policy::write(&b.lab, MANIFEST, &yaml)?;
    let many_ip = SocketAddr::new(nth(EBPF_BASE, measured(MANY)).into(), SERVICE_PORT);
    let last_ip = SocketAddr::new(nth(EBPF_BASE, MANY - 1).into(), SERVICE_PORT);
    let converged = bench::wait_until(CONVERGE_TIMEOUT, || b.echo_works(Case::Ebpf, many_ip));
    let last = converged.and_then(|_| {
        bench::wait_until(Duration::from_secs(30), || {
            b.echo_works(Case::Ebpf, last_ip)
        })
        .map(|_| written.elapsed())
    });
    let quiet = wait_agents_quiet(&[&b.node1, &b.node2], Duration::from_secs(60))
        .map(|_| written.elapsed());
    let regen_many = regeneration_ms(&b.node1);
    let cpu1 = (cpu_seconds(&b.node1), cpu_seconds(&b.node2));
    match converged {
        Some(d) => eprintln!(
            "lb-bench: {MANY} services: the measured ClusterIP answered {:.1} s after the write, the last one after {}",
            d.as_secs_f64(),
            last.map(|l| format!("{:.1} s", l.as_secs_f64())).unwrap_or("(never)".into())
        ),
        None => eprintln!(
            "lb-bench: {MANY} services: the measured ClusterIP did not answer within {} s; the eBPF case is skipped",
            CONVERGE_TIMEOUT.as_secs()
        ),
    }
    let rules_many = kube_proxy_rules(MANY, &b.backend_ips());
    let load_many = restore(&b.node1, b.iptables_bin, &rules_many)?;
    restore(&b.node1, b.iptables_bin, NO_RULES)?;
    let many = b.phase(MANY, converged.is_none())?;

    // Back to no services before the teardown: with 10,000 each pod deletion's
    // regeneration is slow enough for CNI DEL to time out.
    std::fs::remove_file(b.lab.manifests_dir().join(MANIFEST))?;
    let _ = wait_agents_quiet(&[&b.node1, &b.node2], Duration::from_secs(60));

    // Figures.
    let row = |phase: &[(Case, Vec<ConnRate>)], case: Case| {
        phase
            .iter()
            .find(|(c, _)| *c == case)
            .map(|(_, runs)| summarise(runs))
            .unwrap_or((0.0, 0))
    };
    let mut out = String::new();
    let load_after = loadavg();
    let (secs, nrounds) = (seconds(), rounds());
    let _ = writeln!(
        out,
        "\nService load balancing (lb-bench): new TCP connections/s, {WORKERS} workers on 2 client pods (node1), \
         backends on node1 + node2, {secs} s per run, {nrounds} interleaved rounds\n\
         (connect, 64 B echo, close with reset; conn/s: median of the rounds; % of direct and eBPF/iptables: median of the\n\
         per-round ratios; iptables: {iptables_version}, measured service in the middle of KUBE-SERVICES;\n\
         machine: {} CPUs, load average {load_before} before the run, {load_after} after)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let _ = writeln!(
        out,
        "  {:<46} {:>8} {:>10} {:>12} {:>15}",
        "case", "services", "conn/s", "% of direct", "eBPF/iptables"
    );
    let mut figures = serde_json::Map::new();
    let mut verdicts = vec![];
    let mut ebpf_pcts = vec![];
    for (n, phase) in [(FEW, &few), (MANY, &many)] {
        let (direct, _) = row(phase, Case::Direct);
        let (ebpf, ebpf_failed) = row(phase, Case::Ebpf);
        let (ipt, ipt_failed) = row(phase, Case::Iptables);
        let (_, direct_failed) = row(phase, Case::Direct);
        let rates = |c: Case| -> Vec<f64> {
            phase
                .iter()
                .find(|(k, _)| *k == c)
                .map(|(_, r)| r.iter().map(|x| x.per_second).collect())
                .unwrap_or_default()
        };
        let ebpf_pct = 100.0 * paired(&rates(Case::Ebpf), &rates(Case::Direct));
        let ipt_pct = 100.0 * paired(&rates(Case::Iptables), &rates(Case::Direct));
        let ratio = paired(&rates(Case::Ebpf), &rates(Case::Iptables));
        let _ = writeln!(
            out,
            "  {:<46} {:>8} {:>10.0} {:>11.1} %",
            Case::Direct.label(),
            n,
            direct,
            100.0
        );
        if ebpf > 0.0 {
            let _ = writeln!(
                out,
                "  {:<46} {:>8} {:>10.0} {:>11.1} % {:>14.2}x",
                Case::Ebpf.label(),
                n,
                ebpf,
                ebpf_pct,
                ratio
            );
        } else {
            let _ = writeln!(
                out,
                "  {:<46} {:>8} {:>10} (the agent had not programmed the services)",
                Case::Ebpf.label(),
                n,
                "—"
            );
        }
        let _ = writeln!(
            out,
            "  {:<46} {:>8} {:>10.0} {:>11.1} %",
            Case::Iptables.label(),
            n,
            ipt,
            ipt_pct
        );
        if direct_failed + ebpf_failed + ipt_failed > 0 {
            let _ = writeln!(
                out,
                "    failed connections: direct {direct_failed}, eBPF {ebpf_failed}, iptables {ipt_failed}"
            );
        }
        let runs = |c: Case| -> Vec<f64> { rates(c).iter().map(|x| x.round()).collect() };
        figures.insert(
            n.to_string(),
            json!({
                "direct": runs(Case::Direct), "ebpf": runs(Case::Ebpf), "iptables": runs(Case::Iptables),
                "direct_median": direct, "ebpf_median": ebpf, "iptables_median": ipt,
                "ebpf_pct_of_direct": ebpf_pct, "iptables_pct_of_direct": ipt_pct,
                "ebpf_over_iptables": ratio,
                "failed": {"direct": direct_failed, "ebpf": ebpf_failed, "iptables": ipt_failed},
            }),
        );
        ebpf_pcts.push(ebpf_pct);
        verdicts.push((
            format!("eBPF ≥ 95 % of direct at {n} services"),
            ebpf > 0.0 && ebpf_pct >= 95.0,
            format!("{ebpf_pct:.1} %"),
        ));
        verdicts.push((
            format!("eBPF ≥ 1.15x iptables at {n} services"),
            ratio >= 1.15,
            format!("{ratio:.2}x"),
        ));
    }
    let (td, ts) = (median(&tp_direct), median(&tp_svc));
    let tp_pct = 100.0 * paired(&tp_svc, &tp_direct);
    let _ = writeln!(
        out,
        "  TCP throughput (iperf3, 1 stream, {secs} s, {nrounds} rounds): direct {td:.2} Gbit/s, \
         ClusterIP (eBPF, 1 backend) {ts:.2} Gbit/s (medians); ClusterIP = {tp_pct:.1} % of direct (median per-round ratio)"
    );
    if b.conntrack_active.get() {
        let _ = writeln!(
            out,
            "  note: node1's conntrack table grew during a direct or eBPF run: netfilter was tracking there too"
        );
    }
    let conv = match converged {
        Some(d) => format!(
            "{:.1} s from the manifest write to the measured (middle) ClusterIP answering, {}",
            d.as_secs_f64(),
            match last {
                Some(l) => format!("{:.1} s to the last one", l.as_secs_f64()),
                None => "the last one did NOT answer".into(),
            }
        ),
        None => format!("not within {} s", CONVERGE_TIMEOUT.as_secs()),
    };
    let quiet_s = quiet.map(|d| format!("{:.1} s", d.as_secs_f64()));
    let _ = writeln!(
        out,
        "  {MANY} Services + EndpointSlices in one file: {conv}; both agents idle again after {}; \
         agent CPU {:.1} s (node1) + {:.1} s (node2)",
        quiet_s.as_deref().unwrap_or("more than a minute"),
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1
    );
    let _ = writeln!(
        out,
        "  agent regeneration (node1, last one): {regen_few:.0} ms with {FEW} services, {regen_many:.0} ms with {MANY}"
    );
    let _ = writeln!(
        out,
        "  {MANY} kube-proxy services with iptables-restore: {:.2} s",
        load_many.as_secs_f64()
    );
    let flat = ebpf_pcts[1] > 0.0 && ebpf_pcts[1] >= ebpf_pcts[0] - 5.0;
    verdicts.push((
        format!("eBPF flat from {FEW} to {MANY} services (% of direct within 5 points)"),
        flat,
        format!("{:.1} % → {:.1} %", ebpf_pcts[0], ebpf_pcts[1]),
    ));
    verdicts.push((
        "throughput through a ClusterIP ≥ 95 % of direct".into(),
        tp_pct >= 95.0,
        format!("{tp_pct:.1} %"),
    ));
    let _ = writeln!(out, "Targets:");
    for (what, ok, value) in &verdicts {
        let _ = writeln!(out, "  {:<4} {what}: {value}", pass(*ok));
    }
    print!("{out}");
    println!(
        "{}",
        json!({
            "conn_per_s": figures,
            "throughput_gbps": {"direct": tp_direct, "cluster_ip": tp_svc, "ratio": tp_pct / 100.0},
            "conntrack_active_without_rules": b.conntrack_active.get(),
            "many_services_converged_s": converged.map(|d| d.as_secs_f64()),
            "many_services_last_answered_s": last.map(|d| d.as_secs_f64()),
            "regeneration_ms": {"few": regen_few, "many": regen_many},
            "many_services_agents_idle_s": quiet.map(|d| d.as_secs_f64()),
            "many_services_agent_cpu_s": [cpu1.0 - cpu0.0, cpu1.1 - cpu0.1],
            "iptables_restore_many_s": load_many.as_secs_f64(),
            "iptables": iptables_version,
            "load_average": [load_before, load_after],
            "targets": verdicts.iter().map(|(w, ok, v)| json!({"target": w, "pass": ok, "value": v})).collect::<Vec<_>>(),
        })
    );
    Ok(())
}
