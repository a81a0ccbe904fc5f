//! `lumen`: the node agent's admin CLI, for the operator's `cilium status` /
//! `cilium endpoint list` habits. Talks to the agent on this node over its local socket.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use lumen_dataplane::admin::{AdminRequest, AdminResponse, ServiceEntry, StatusReport};
use lumen_dataplane::lbipam::ServiceIpam;
use lumen_dataplane::policy::regen::EndpointReport;
use lumen_lb::{BackendState, FrontendKind, ServiceName, ServiceRow, ServiceTable, TableBackend};
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

#[derive(Parser)]
#[command(name = "lumen", about = "Lumen agent admin CLI", version)]
struct Cli {
    /// The agent's local API socket (`agentSocket` in its config).
    #[arg(
        long,
        env = "LUMEN_AGENT_SOCKET",
        default_value = "/var/run/lumen/agent.sock",
        global = true
    )]
    socket: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Agent health: endpoints, policy enforcement, identities, maps, flows.
    Status,
    /// Local endpoints.
    Endpoint {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// Effective policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Security identities.
    Identity {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// Service frontends on this node, their backends, and LB-IPAM allocation status.
    Service {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// Node-to-node encryption (WireGuard).
    Encrypt {
        #[command(subcommand)]
        cmd: EncryptCmd,
    },
    /// DNS names learnt by the DNS proxy.
    Fqdn {
        #[command(subcommand)]
        cmd: FqdnCmd,
    },
}

#[derive(Subcommand)]
enum FqdnCmd {
    /// The FQDN cache.
    Cache {
        #[command(subcommand)]
        cmd: ListCmd,
    },
}

#[derive(Subcommand)]
enum EncryptCmd {
    /// Peers, handshakes and bytes (the encryption part of `lumen status`).
    Status,
    /// Replace this node's WireGuard key pair; established connections stay up.
    RotateKey,
}

#[derive(Subcommand)]
enum ListCmd {
    /// List them.
    List,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// The effective rules per endpoint, and every policy's status.
    Get {
        /// Only this endpoint id.
        endpoint: Option<u32>,
    },
}

fn ask(socket: &PathBuf, req: &AdminRequest) -> Result<AdminResponse> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is lumen-agent running? set --socket or LUMEN_AGENT_SOCKET)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    let resp: AdminResponse = serde_json::from_str(&answer)
        .with_context(|| format!("unexpected answer from the agent: {answer:?}"))?;
    if let AdminResponse::Error { message } = resp {
        bail!("{message}");
    }
    Ok(resp)
}

fn print_status(s: &StatusReport) {
    let ok = |b: bool| if b { "Ok" } else { "Warning" };
    println!("Node:                  {}", s.node);
    println!("Version:               {}", s.version);
    println!("Kernel:                {}", s.kernel);
    println!("Uptime:                {}s", s.uptime_seconds);
    if !s.state_source.is_empty() {
        println!("State source:          {}", s.state_source);
    }
    println!(
        "Datapath maps:         {}   ipcache {}, endpoints {}, policy {}{}",
        ok(s.datapath_error.is_none()),
        s.map_entries.0,
        s.map_entries.1,
        s.map_entries.2,
        s.datapath_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    println!(
        "Endpoints:             {} ({} ingress-enforced, {} egress-enforced)",
        s.endpoints, s.enforced.0, s.enforced.1
    );
    println!("Identities:            {}", s.identities);
    println!(
        "Policies:              {}   {} in force, {} rejected, {} warnings{}",
        ok(s.rejected.is_empty() && s.source_errors.is_empty()),
        s.policies,
        s.rejected.len(),
        s.warnings.len(),
        if s.policy_audit_mode {
            " (policyAuditMode)"
        } else {
            ""
        }
    );
    for r in &s.rejected {
        println!("  rejected: {r}");
    }
    for w in &s.warnings {
        println!("  warning:  {w}");
    }
    for e in &s.source_errors {
        println!("  manifest: {e}");
    }
    let r = &s.routing;
    println!(
        "Routing:               {} (autoDirectNodeRoutes {}, native CIDR {}, masquerade {})",
        r.mode,
        r.auto_direct_node_routes,
        r.native_routing_cidr.as_deref().unwrap_or("none"),
        r.masquerade
    );
    for (cidr, via) in &r.routes {
        println!("  route:    {cidr} via {via}");
    }
    print_encryption(s.encryption.as_ref());
    if !s.bandwidth_manager.is_empty() {
        println!("BandwidthManager:      {}", s.bandwidth_manager);
    }
    for a in &s.l2_announcements {
        println!(
            "L2 announcement:       {} on {} (lease {}, service {})",
            a.ip, a.device, a.lease, a.service
        );
    }
    println!(
        "Policy regeneration:   last {:.1} ms ({} runs)",
        s.regeneration.0 as f64 / 1000.0,
        s.regeneration.1
    );
    println!(
        "Hubble:                Ok   Current/Max Flows: {}/{}, Flows seen: {}, listening on {}",
        s.flows.0, s.flows.1, s.flows.2, s.hubble_listen_address
    );
}

/// The `Encryption:` section, as `cilium status` prints it, with one line per peer.
fn print_encryption(e: Option<&lumen_dataplane::encryption::EncryptionStatus>) {
    let Some(e) = e else {
        println!("Encryption:            Disabled");
        return;
    };
    println!(
        "Encryption:            Wireguard   [{} (Pubkey: {}, Port: {}, Peers: {}){}]",
        e.interface,
        e.public_key,
        e.listen_port,
        e.peers.len(),
        e.strict_cidr
            .as_deref()
            .map(|c| format!(", strict mode {c}"))
            .unwrap_or_default()
    );
    for p in &e.peers {
        let handshake = match p.last_handshake_seconds_ago {
            Some(s) => format!("{s}s ago"),
            None => "never".into(),
        };
        println!(
            "  peer:     {} {} endpoint {} allowed {} handshake {} rx {} B tx {} B",
            if p.node.is_empty() { "?" } else { &p.node },
            p.public_key,
            p.endpoint.as_deref().unwrap_or("-"),
            p.allowed_ips.join(","),
            handshake,
            p.rx_bytes,
            p.tx_bytes
        );
    }
}

fn enforcement(enforced: bool, audit: bool) -> &'static str {
    match (enforced, audit) {
        (true, true) => "Audit",
        (true, false) => "Enabled",
        _ => "Disabled",
    }
}

fn print_endpoints(eps: &[EndpointReport]) {
    println!(
        "{:<10} {:<18} {:<18} {:<10} {:<56} {:<16} STATUS",
        "ENDPOINT",
        "POLICY (ingress)",
        "POLICY (egress)",
        "IDENTITY",
        "LABELS (source:key[=value])",
        "IPv4"
    );
    println!("{:<10} {:<18} {:<18}", "", "ENFORCEMENT", "ENFORCEMENT");
    for e in eps {
        let ipv4 = e
            .ips
            .iter()
            .find(|i| !i.contains(':'))
            .cloned()
            .unwrap_or_default();
        let mut labels = e.labels.iter();
        println!(
            "{:<10} {:<18} {:<18} {:<10} {:<56} {:<16} ready",
            e.id,
            enforcement(e.ingress.enforced, e.ingress.audit),
            enforcement(e.egress.enforced, e.egress.audit),
            e.identity,
            labels.next().map(String::as_str).unwrap_or(""),
            ipv4
        );
        for l in labels {
            println!("{:<10} {:<18} {:<18} {:<10} {l}", "", "", "", "");
        }
    }
}

fn print_policy(eps: &[EndpointReport], policies: &[lumen_dataplane::policy::PolicyStatus]) {
    println!("Policies:");
    if policies.is_empty() {
        println!("  (none)");
    }
    for p in policies {
        let who = if p.namespace.is_empty() {
            format!("{} {}", p.kind, p.name)
        } else {
            format!("{} {}/{}", p.kind, p.namespace, p.name)
        };
        let state = match (&p.error, p.revision) {
            (None, r) => format!("in force (revision {r})"),
            (Some(_), 0) => "REJECTED, nothing in force".to_string(),
            (Some(_), r) => format!("REJECTED, revision {r} stays in force"),
        };
        println!("  {who}: {state}   [{}]", p.source);
        if let Some(e) = &p.error {
            println!("    error: {e}");
        }
        for w in &p.warnings {
            println!("    warning: {w}");
        }
    }
    for e in eps {
        println!();
        println!("Endpoint {} ({}), identity {}:", e.id, e.pod, e.identity);
        for (name, d) in [("Ingress", &e.ingress), ("Egress", &e.egress)] {
            println!(
                "  {name}: {}{}",
                enforcement(d.enforced, d.audit),
                if d.selected_by.is_empty() {
                    String::new()
                } else {
                    format!(" (selected by {})", d.selected_by.join(", "))
                }
            );
            if d.rules.is_empty() {
                println!(
                    "    {}",
                    if d.enforced {
                        "no rule allows anything: all denied"
                    } else {
                        "all allowed"
                    }
                );
                continue;
            }
            println!(
                "    {:<7} {:<10} {:<6} {:<12} {:<40} POLICY",
                "ACTION", "IDENTITY", "PROTO", "PORTS", "PEER"
            );
            for r in &d.rules {
                let peer = if r.identity == 0 {
                    "(any)".to_string()
                } else {
                    r.peer
                        .iter()
                        .filter(|l| {
                            !l.contains("io.cilium.k8s.policy.") && !l.contains("namespace.labels.")
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "    {:<7} {:<10} {:<6} {:<12} {:<40} {}",
                    r.action, r.identity, r.protocol, r.ports, peer, r.policy
                );
            }
        }
        for w in &e.warnings {
            println!("  warning: {w}");
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("lumen: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<()> {
    let req = match &cli.cmd {
        Cmd::Status => AdminRequest::Status {},
        Cmd::Endpoint { .. } => AdminRequest::EndpointList {},
        Cmd::Policy {
            cmd: PolicyCmd::Get { endpoint },
        } => AdminRequest::PolicyGet {
            endpoint: *endpoint,
        },
        Cmd::Identity { .. } => AdminRequest::IdentityList {},
        Cmd::Service { .. } => AdminRequest::ServiceList {},
        Cmd::Encrypt {
            cmd: EncryptCmd::Status,
        } => AdminRequest::Status {},
        Cmd::Encrypt {
            cmd: EncryptCmd::RotateKey,
        } => AdminRequest::EncryptRotateKey {},
        Cmd::Fqdn { .. } => AdminRequest::FqdnCacheList {},
    };
    let resp = ask(&cli.socket, &req)?;
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(());
    }
    match resp {
        AdminResponse::Status(s) if matches!(cli.cmd, Cmd::Encrypt { .. }) => {
            print_encryption(s.encryption.as_ref())
        }
        AdminResponse::Status(s) => print_status(&s),
        AdminResponse::KeyRotated { public_key } => {
            println!("New public key: {public_key} (published; peers re-handshake)")
        }
        AdminResponse::Endpoints { endpoints } => print_endpoints(&endpoints),
        AdminResponse::Policy {
            endpoints,
            policies,
        } => print_policy(&endpoints, &policies),
        AdminResponse::Identities { identities } => {
            println!("{:<12} LABELS", "ID");
            for row in identities {
                let mut it = row.labels.iter();
                println!(
                    "{:<12} {}",
                    row.id,
                    it.next().map(String::as_str).unwrap_or("")
                );
                for l in it {
                    println!("{:<12} {l}", "");
                }
            }
        }
        AdminResponse::Services {
            services,
            lbipam,
            problems,
        } => print_services(&services, &lbipam, &problems),
        AdminResponse::FqdnCache { entries } => print_fqdn_cache(&entries),
        AdminResponse::Error { message } => bail!("{message}"),
    }
    Ok(())
}

/// `lumen fqdn cache list`: like `cilium fqdn cache list`, expiry as a UTC time and the
/// time left.
fn print_fqdn_cache(entries: &[lumen_dataplane::dns::cache::CacheEntry]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!(
        "{:<10} {:<40} {:<40} {:<22} {:<8} IDENTITY",
        "ENDPOINT", "FQDN", "IP", "EXPIRES (UTC)", "TTL"
    );
    for e in entries {
        let at = chrono::DateTime::from_timestamp(e.expires_unix as i64, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        println!(
            "{:<10} {:<40} {:<40} {:<22} {:<8} {}",
            e.endpoint,
            e.name,
            e.ip,
            at,
            format!("{}s", e.expires_unix.saturating_sub(now)),
            e.identity
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

/// The agent's rows back into the table type, so the text is `lumen_lb`'s rendering.
fn service_table(services: &[ServiceEntry]) -> ServiceTable {
    const KINDS: [FrontendKind; 4] = [
        FrontendKind::ClusterIp,
        FrontendKind::ExternalIp,
        FrontendKind::NodePort,
        FrontendKind::LoadBalancer,
    ];
    let rows = services
        .iter()
        .filter_map(|s| {
            let kind = KINDS.into_iter().find(|k| k.as_str() == s.service_type)?;
            let (ns, name) = s.service.split_once('/').unwrap_or(("", &s.service));
            Some(ServiceRow {
                id: s.id,
                frontend: s.frontend.clone(),
                service_type: kind,
                service: ServiceName::new(ns, name),
                backends: s
                    .backends
                    .iter()
                    .map(|b| TableBackend {
                        address: b.address.clone(),
                        state: if b.state == BackendState::Terminating.as_str() {
                            BackendState::Terminating
                        } else {
                            BackendState::Active
                        },
                    })
                    .collect(),
            })
        })
        .collect();
    ServiceTable { rows }
}

fn print_services(services: &[ServiceEntry], lbipam: &[ServiceIpam], problems: &[String]) {
    print!("{}", service_table(services));
    if !lbipam.is_empty() {
        println!();
        println!("LB-IPAM:");
        let width = lbipam
            .iter()
            .map(|s| s.service.len())
            .max()
            .unwrap_or(0)
            .max(7);
        println!(
            "{:<width$}   {:<18} {:<10} {:<18} MESSAGE",
            "SERVICE", "IPS", "SATISFIED", "REASON"
        );
        for s in lbipam {
            let ips = if s.ips.is_empty() {
                "-".to_string()
            } else {
                s.ips.join(",")
            };
            let sat = if s.satisfied.is_empty() {
                "pending"
            } else {
                s.satisfied.as_str()
            };
            println!(
                "{:<width$}   {:<18} {:<10} {:<18} {}",
                s.service, ips, sat, s.reason, s.message
            );
        }
    }
    for p in problems {
        println!("  ignored: {p}");
    }
}
