//! The command line: global flags, subcommands and `observe`'s flags (clap), plus the
//! command-line order of filter flags that `--not` depends on.

use crate::{conn::TlsOptions, error::Result, filters::FilterBuilder};
use clap::{ArgAction, ArgMatches, Args, Parser, Subcommand};
use std::{path::PathBuf, time::Duration};

fn duration(s: &str) -> std::result::Result<Duration, String> {
    crate::timeparse::parse_duration(s).map_err(|e| e.to_string())
}

/// `hubble`: observe the flows of a Lumen (Hubble-compatible) cluster.
#[derive(Debug, Parser)]
#[command(name = "hubble", version, about, long_about = None)]
pub struct Cli {
    /// Address of a Hubble server (`host:port`, or `unix:///path` for a local socket).
    #[arg(long, global = true, help_heading = "Global Flags", env = "HUBBLE_SERVER", default_value = crate::conn::DEFAULT_SERVER)]
    pub server: String,
    /// Timeout to connect (and, for unary calls, to get an answer).
    #[arg(long, global = true, help_heading = "Global Flags", env = "HUBBLE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub timeout: Duration,
    /// Use TLS to connect to the server.
    #[arg(long, global = true, help_heading = "Global Flags", env = "HUBBLE_TLS")]
    pub tls: bool,
    /// Do not verify the server's certificate (implies --tls).
    #[arg(
        long = "tls-allow-insecure",
        global = true,
        help_heading = "Global Flags",
        env = "HUBBLE_TLS_ALLOW_INSECURE"
    )]
    pub tls_allow_insecure: bool,
    /// PEM files of the CAs to trust (comma separated or repeated).
    #[arg(
        long = "tls-ca-cert-files",
        global = true,
        help_heading = "Global Flags",
        env = "HUBBLE_TLS_CA_CERT_FILES",
        value_delimiter = ','
    )]
    pub tls_ca_cert_files: Vec<PathBuf>,
    /// PEM file of the client certificate (mutual TLS).
    #[arg(
        long = "tls-client-cert-file",
        global = true,
        help_heading = "Global Flags",
        env = "HUBBLE_TLS_CLIENT_CERT_FILE"
    )]
    pub tls_client_cert_file: Option<PathBuf>,
    /// PEM file of the client key (mutual TLS).
    #[arg(
        long = "tls-client-key-file",
        global = true,
        help_heading = "Global Flags",
        env = "HUBBLE_TLS_CLIENT_KEY_FILE"
    )]
    pub tls_client_key_file: Option<PathBuf>,
    /// Server name to verify in the server's certificate (default: the host of --server).
    #[arg(
        long = "tls-server-name",
        global = true,
        help_heading = "Global Flags",
        env = "HUBBLE_TLS_SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The TLS flags.
    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            enabled: self.tls,
            allow_insecure: self.tls_allow_insecure,
            ca_cert_files: self.tls_ca_cert_files.clone(),
            client_cert_file: self.tls_client_cert_file.clone(),
            client_key_file: self.tls_client_key_file.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Observe flows.
    Observe(Box<ObserveArgs>),
    /// Show the server's health and flow counts.
    Status,
    /// List nodes or namespaces.
    List {
        /// What to list.
        #[command(subcommand)]
        what: ListWhat,
    },
}

/// What `hubble list` lists.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ListWhat {
    /// The nodes behind the server.
    Nodes,
    /// The namespaces seen in flows.
    Namespaces,
}

/// The flags of `hubble observe`. Filter flags are read in command-line order by
/// [`filter_builder`]; their fields here only declare them.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// Get the last N flows (default 20 when nothing else selects).
    #[arg(long)]
    pub last: Option<u64>,
    /// Get the first N flows.
    #[arg(long)]
    pub first: Option<u64>,
    /// Get all stored flows.
    #[arg(long)]
    pub all: bool,
    /// Keep receiving new flows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Flows since this time (RFC 3339) or this long ago (5m, 1h30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Flows until this time (RFC 3339) or this long ago (5m, 1h30m).
    #[arg(long)]
    pub until: Option<String>,
    /// Output format: compact, dict, json, jsonpb or table.
    #[arg(short = 'o', long, default_value = "compact")]
    pub output: String,
    /// Print the node name after the time.
    #[arg(long = "print-node-name")]
    pub print_node_name: bool,
    /// Print the names of the policies that allowed or denied a policy verdict.
    #[arg(long = "print-policy-names")]
    pub print_policy_names: bool,
    /// Colours: auto (on a terminal), always or never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,

    /// Negate the next filter flag (its flows are excluded).
    #[arg(long = "not", num_args = 0, default_missing_value = "true", action = ArgAction::Append, help_heading = "Filters")]
    pub not: Vec<String>,
    /// Verdict (FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED, or
    /// policy_denied: dropped by a policy), case-insensitive.
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub verdict: Vec<String>,
    /// Drop reason description (e.g. POLICY_DENIED).
    #[arg(long = "drop-reason-desc", action = ArgAction::Append, help_heading = "Filters")]
    pub drop_reason_desc: Vec<String>,
    /// Event type: trace, drop, policy-verdict, l7, trace-sock, ... optionally with a
    /// sub-type (trace:to-endpoint, or a number).
    #[arg(short = 't', long = "type", id = "type", action = ArgAction::Append, help_heading = "Filters")]
    pub event_type: Vec<String>,
    /// Flows from or to pods in this namespace.
    #[arg(short = 'n', long, action = ArgAction::Append, help_heading = "Filters")]
    pub namespace: Vec<String>,
    /// All namespaces (no namespace restriction).
    #[arg(short = 'A', long = "all-namespaces", num_args = 0, default_missing_value = "true", action = ArgAction::Append, help_heading = "Filters")]
    pub all_namespaces: Vec<String>,
    /// Flows from pods in all namespaces.
    #[arg(long = "from-all-namespaces", num_args = 0, default_missing_value = "true", action = ArgAction::Append, help_heading = "Filters")]
    pub from_all_namespaces: Vec<String>,
    /// Flows to pods in all namespaces.
    #[arg(long = "to-all-namespaces", num_args = 0, default_missing_value = "true", action = ArgAction::Append, help_heading = "Filters")]
    pub to_all_namespaces: Vec<String>,
    /// Flows from or to this pod (`[namespace/]pod-name-prefix`).
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub pod: Vec<String>,
    /// Flows from this pod.
    #[arg(long = "from-pod", action = ArgAction::Append, help_heading = "Filters")]
    pub from_pod: Vec<String>,
    /// Flows to this pod.
    #[arg(long = "to-pod", action = ArgAction::Append, help_heading = "Filters")]
    pub to_pod: Vec<String>,
    /// Flows from pods in this namespace.
    #[arg(long = "from-namespace", action = ArgAction::Append, help_heading = "Filters")]
    pub from_namespace: Vec<String>,
    /// Flows to pods in this namespace.
    #[arg(long = "to-namespace", action = ArgAction::Append, help_heading = "Filters")]
    pub to_namespace: Vec<String>,
    /// Flows from or to this IP (or CIDR).
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub ip: Vec<String>,
    /// Flows from this IP (or CIDR).
    #[arg(long = "from-ip", action = ArgAction::Append, help_heading = "Filters")]
    pub from_ip: Vec<String>,
    /// Flows to this IP (or CIDR).
    #[arg(long = "to-ip", action = ArgAction::Append, help_heading = "Filters")]
    pub to_ip: Vec<String>,
    /// IPv4 flows only.
    #[arg(short = '4', long = "ipv4", num_args = 0, default_missing_value = "true", action = ArgAction::Append, help_heading = "Filters")]
    pub ipv4: Vec<String>,
    /// IPv6 flows only.
    #[arg(short = '6', long = "ipv6", num_args = 0, default_missing_value = "true", action = ArgAction::Append, help_heading = "Filters")]
    pub ipv6: Vec<String>,
    /// IP version: 4 or 6.
    #[arg(long = "ip-version", action = ArgAction::Append, help_heading = "Filters")]
    pub ip_version: Vec<String>,
    /// Flows from or to endpoints with this label selector.
    #[arg(short = 'l', long, action = ArgAction::Append, help_heading = "Filters")]
    pub label: Vec<String>,
    /// Flows from endpoints with this label selector.
    #[arg(long = "from-label", action = ArgAction::Append, help_heading = "Filters")]
    pub from_label: Vec<String>,
    /// Flows to endpoints with this label selector.
    #[arg(long = "to-label", action = ArgAction::Append, help_heading = "Filters")]
    pub to_label: Vec<String>,
    /// Flows from or to this service (`[namespace/]service`).
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub service: Vec<String>,
    /// Flows from this service.
    #[arg(long = "from-service", action = ArgAction::Append, help_heading = "Filters")]
    pub from_service: Vec<String>,
    /// Flows to this service.
    #[arg(long = "to-service", action = ArgAction::Append, help_heading = "Filters")]
    pub to_service: Vec<String>,
    /// Flows from or to this security identity (number or reserved name).
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub identity: Vec<String>,
    /// Flows from this security identity.
    #[arg(long = "from-identity", action = ArgAction::Append, help_heading = "Filters")]
    pub from_identity: Vec<String>,
    /// Flows to this security identity.
    #[arg(long = "to-identity", action = ArgAction::Append, help_heading = "Filters")]
    pub to_identity: Vec<String>,
    /// Flows from or to this port.
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub port: Vec<String>,
    /// Flows from this port.
    #[arg(long = "from-port", action = ArgAction::Append, help_heading = "Filters")]
    pub from_port: Vec<String>,
    /// Flows to this port.
    #[arg(long = "to-port", action = ArgAction::Append, help_heading = "Filters")]
    pub to_port: Vec<String>,
    /// Flows from or to this DNS name (`*` wildcards).
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub fqdn: Vec<String>,
    /// Flows from this DNS name.
    #[arg(long = "from-fqdn", action = ArgAction::Append, help_heading = "Filters")]
    pub from_fqdn: Vec<String>,
    /// Flows to this DNS name.
    #[arg(long = "to-fqdn", action = ArgAction::Append, help_heading = "Filters")]
    pub to_fqdn: Vec<String>,
    /// Flows observed on this node (`cluster/node`, `*` wildcards).
    #[arg(long = "node-name", action = ArgAction::Append, help_heading = "Filters")]
    pub node_name: Vec<String>,
    /// L4 or L7 protocol (tcp, udp, icmp, dns, http, ...).
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub protocol: Vec<String>,
    /// TCP flags that must all be set, comma separated (SYN,ACK).
    #[arg(long = "tcp-flags", action = ArgAction::Append, help_heading = "Filters")]
    pub tcp_flags: Vec<String>,
    /// Traffic direction: ingress or egress.
    #[arg(long = "traffic-direction", action = ArgAction::Append, help_heading = "Filters")]
    pub traffic_direction: Vec<String>,
    /// Flows with this flow UUID.
    #[arg(long, action = ArgAction::Append, help_heading = "Filters")]
    pub uuid: Vec<String>,
    /// HTTP status code prefix (e.g. 404, 5+).
    #[arg(long = "http-status", action = ArgAction::Append, help_heading = "Filters")]
    pub http_status: Vec<String>,
    /// HTTP method.
    #[arg(long = "http-method", action = ArgAction::Append, help_heading = "Filters")]
    pub http_method: Vec<String>,
    /// HTTP path regex.
    #[arg(long = "http-path", action = ArgAction::Append, help_heading = "Filters")]
    pub http_path: Vec<String>,
    /// HTTP URL regex.
    #[arg(long = "http-url", action = ArgAction::Append, help_heading = "Filters")]
    pub http_url: Vec<String>,
}

/// The clap id of a filter flag (its long name with `-` as `_`, `type` as is).
fn arg_id(flag: &str) -> String {
    flag.replace('-', "_")
}

/// Applies the filter flags found in `observe`'s matches in command-line order.
pub fn filter_builder(m: &ArgMatches) -> Result<FilterBuilder> {
    let mut events: Vec<(usize, &'static str, String)> = vec![];
    for flag in crate::filters::FILTER_FLAGS {
        let id = arg_id(flag);
        if m.value_source(&id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let Some(indices) = m.indices_of(&id) else {
            continue;
        };
        let indices: Vec<usize> = indices.collect();
        match m.try_get_many::<String>(&id) {
            Ok(Some(values)) => {
                for (i, v) in indices.iter().zip(values) {
                    events.push((*i, flag, v.clone()));
                }
            }
            _ => {
                for i in indices {
                    events.push((i, flag, String::new()));
                }
            }
        }
    }
    events.sort_by_key(|(i, _, _)| *i);
    FilterBuilder::from_flags(events.iter().map(|(_, f, v)| (*f, v.as_str())))
}
