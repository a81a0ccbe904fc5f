//! The agent's one configuration file (YAML). Keys follow Cilium's Helm values where a
//! setting has a Cilium name (`cluster.name`, `devices`, `hubble.listenAddress`,
//! `hubble.socketPath`, `hubble.eventBufferCapacity`, `bpf.monitorAggregation`,
//! `bpf.monitorInterval`), so operators find what they know. Unknown keys are rejected.

use serde::Deserialize;
use std::{path::PathBuf, time::Duration};

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown keys or bad values.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said (includes line and column).
        source: serde_yaml::Error,
    },
    /// A value parsed but makes no sense.
    #[error("invalid config value {key}: {reason}")]
    Invalid {
        /// The key, dotted like the Helm value.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The agent's configuration. Every field has a documented default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name, as in its Node object. Default: `$NODE_NAME`, else the hostname.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// Cluster settings.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Where the agent keeps its state (IPAM, endpoints). Default `/var/lib/lumen`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// bpffs directory; the agent pins under `<bpfRoot>/<nodeName>`. Default `/sys/fs/bpf/lumen`.
    #[serde(default = "default_bpf_root")]
    pub bpf_root: PathBuf,
    /// Directory of Kubernetes manifests the agent watches as its state source.
    /// Default `/etc/lumen/manifests`.
    #[serde(default = "default_manifests_dir")]
    pub manifests_dir: PathBuf,
    /// Unix socket of the local API the CNI plugin uses. Default `/var/run/lumen/agent.sock`.
    #[serde(default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    /// Node uplink devices to observe (FROM_NETWORK / TO_NETWORK). Default: none.
    #[serde(default)]
    pub devices: Vec<String>,
    /// `policyAuditMode`: every policy denial is reported as AUDIT and let through.
    /// Default false.
    #[serde(default)]
    pub policy_audit_mode: bool,
    /// `kubeProxyReplacement`: load-balance ClusterIP services in the datapath (from pods).
    /// Default false: the service maps stay empty.
    #[serde(default)]
    pub kube_proxy_replacement: bool,
    /// `loadBalancer.*`: how the datapath picks backends.
    #[serde(default)]
    pub load_balancer: LoadBalancerConfig,
    /// `l2announcements.*`: answer ARP for LoadBalancer IPs on the uplink.
    #[serde(default)]
    pub l2announcements: L2AnnouncementsConfig,
    /// Hubble server settings.
    #[serde(default)]
    pub hubble: HubbleConfig,
    /// Datapath settings.
    #[serde(default)]
    pub bpf: BpfConfig,
}

/// `cluster.*`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// `cluster.name`, shown as `cluster_name` on endpoints and in node names
    /// (`<cluster>/<node>`). Default `default`.
    #[serde(default = "default_cluster_name")]
    pub name: String,
}

/// `hubble.*`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HubbleConfig {
    /// TCP address of the Observer API (`:4244` means all addresses). Empty disables TCP.
    /// Default `:4244`.
    #[serde(default = "default_listen_address")]
    pub listen_address: String,
    /// Unix socket of the Observer API. Default `/var/run/cilium/hubble.sock`.
    #[serde(default = "default_socket_path")]
    pub socket_path: PathBuf,
    /// Flows kept in memory; rounded up to a power of two minus one as Hubble does.
    /// Default 4095.
    #[serde(default = "default_capacity")]
    pub event_buffer_capacity: usize,
    /// Transport security of the TCP listener (the unix socket stays plaintext).
    #[serde(default)]
    pub tls: HubbleTlsConfig,
}

/// `hubble.tls.*`: mutual TLS on `hubble.listenAddress`, as Hubble deploys it.
///
/// ```yaml
/// hubble:
///   tls:
///     enabled: true                       # default false: TCP is plaintext
///     certFile: /etc/lumen/tls/node1.crt  # server certificate (PEM), SAN <node>.<cluster>.hubble-grpc.cilium.io
///     keyFile: /etc/lumen/tls/node1.key   # its private key (PEM)
///     clientCAFiles: [/etc/lumen/tls/ca.crt]  # when set, client certificates are required and verified
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HubbleTlsConfig {
    /// Serve TLS on TCP. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Server certificate chain, PEM. Required when enabled.
    #[serde(default)]
    pub cert_file: PathBuf,
    /// Server private key, PEM. Required when enabled.
    #[serde(default)]
    pub key_file: PathBuf,
    /// CA certificates (PEM) client certificates must chain to. Empty: clients are not
    /// asked for a certificate. Default empty.
    #[serde(default, rename = "clientCAFiles")]
    pub client_ca_files: Vec<PathBuf>,
}

/// `bpf.*`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BpfConfig {
    /// `none` (a record per packet) or `medium` (new connections, new TCP flags, and at
    /// most once per interval). Default `medium`.
    #[serde(default)]
    pub monitor_aggregation: MonitorAggregation,
    /// Interval for `medium`, e.g. `5s`. Default `5s`.
    #[serde(default = "default_monitor_interval", with = "humantime_serde_compat")]
    pub monitor_interval: Duration,
    /// Size of the kernel→agent ring buffer in bytes (power of two). Default 8 MiB.
    #[serde(default = "default_ring_bytes")]
    pub events_ring_bytes: u32,
    /// Conntrack entries. Default 262144.
    #[serde(default = "default_ct_max")]
    pub ct_max: u32,
}

/// `loadBalancer.*`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// `random` or `maglev` (consistent hashing of the connection, the same backend on
    /// every node). Default `random`, like Cilium.
    #[serde(default)]
    pub algorithm: LbAlgorithm,
}

/// `loadBalancer.algorithm` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgorithm {
    /// A random backend per new connection.
    #[default]
    Random,
    /// Maglev consistent hashing over the 5-tuple (table size 16381).
    Maglev,
}

/// `l2announcements.*`. The lease timings are Cilium's names; the defaults are shorter
/// than Cilium's (15 s / 5 s / 2 s) so a failover takes under 3 s.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L2AnnouncementsConfig {
    /// Whether this node takes part in L2 announcements. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// How long a lease is valid after its last renewal. Default `2s`.
    #[serde(default = "default_lease_duration", with = "humantime_serde_compat")]
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before giving up. Default `1s`.
    #[serde(
        default = "default_lease_renew_deadline",
        with = "humantime_serde_compat"
    )]
    pub lease_renew_deadline: Duration,
    /// How often candidates retry and holders renew. Default `200ms`.
    #[serde(
        default = "default_lease_retry_period",
        with = "humantime_serde_compat"
    )]
    pub lease_retry_period: Duration,
}

impl Default for L2AnnouncementsConfig {
    fn default() -> Self {
        L2AnnouncementsConfig {
            enabled: false,
            lease_duration: default_lease_duration(),
            lease_renew_deadline: default_lease_renew_deadline(),
            lease_retry_period: default_lease_retry_period(),
        }
    }
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(2)
}

fn default_lease_renew_deadline() -> Duration {
    Duration::from_secs(1)
}

fn default_lease_retry_period() -> Duration {
    Duration::from_millis(200)
}

/// `bpf.monitorAggregation` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MonitorAggregation {
    /// Every packet.
    None,
    /// Cilium's default.
    #[default]
    Medium,
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

fn default_node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
}
fn default_cluster_name() -> String {
    "default".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/lumen".into()
}
fn default_bpf_root() -> PathBuf {
    "/sys/fs/bpf/lumen".into()
}
fn default_manifests_dir() -> PathBuf {
    "/etc/lumen/manifests".into()
}
fn default_agent_socket() -> PathBuf {
    "/var/run/lumen/agent.sock".into()
}
fn default_listen_address() -> String {
    ":4244".into()
}
fn default_socket_path() -> PathBuf {
    "/var/run/cilium/hubble.sock".into()
}
fn default_capacity() -> usize {
    4095
}
fn default_monitor_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_ring_bytes() -> u32 {
    8 << 20
}
fn default_ct_max() -> u32 {
    262_144
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: default_cluster_name(),
        }
    }
}
impl Default for HubbleConfig {
    fn default() -> Self {
        HubbleConfig {
            listen_address: default_listen_address(),
            socket_path: default_socket_path(),
            event_buffer_capacity: default_capacity(),
            tls: HubbleTlsConfig::default(),
        }
    }
}
impl Default for BpfConfig {
    fn default() -> Self {
        BpfConfig {
            monitor_aggregation: MonitorAggregation::default(),
            monitor_interval: default_monitor_interval(),
            events_ring_bytes: default_ring_bytes(),
            ct_max: default_ct_max(),
        }
    }
}

impl AgentConfig {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.into(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.is_empty() || self.node_name.contains('/') {
            return Err(ConfigError::Invalid {
                key: "nodeName",
                reason: format!("{:?} must be non-empty and contain no '/'", self.node_name),
            });
        }
        let rb = self.bpf.events_ring_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            return Err(ConfigError::Invalid {
                key: "bpf.eventsRingBytes",
                reason: format!("{rb} must be a power of two of at least 4096"),
            });
        }
        if self.hubble.event_buffer_capacity == 0 || self.hubble.event_buffer_capacity > 1 << 24 {
            return Err(ConfigError::Invalid {
                key: "hubble.eventBufferCapacity",
                reason: format!(
                    "{} must be between 1 and 16777216",
                    self.hubble.event_buffer_capacity
                ),
            });
        }
        if !self.hubble.listen_address.is_empty() {
            self.listen_socket_addr()?;
        }
        let tls = &self.hubble.tls;
        if tls.enabled {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(ConfigError::Invalid {
                    key: "hubble.tls.certFile",
                    reason: "required when hubble.tls.enabled is true".into(),
                });
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(ConfigError::Invalid {
                    key: "hubble.tls.keyFile",
                    reason: "required when hubble.tls.enabled is true".into(),
                });
            }
        }
        Ok(())
    }

    /// `hubble.listenAddress` as a socket address (`:4244` → `0.0.0.0:4244`).
    pub fn listen_socket_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        let a = &self.hubble.listen_address;
        let full = if a.starts_with(':') {
            format!("0.0.0.0{a}")
        } else {
            a.clone()
        };
        full.parse().map_err(|e| ConfigError::Invalid {
            key: "hubble.listenAddress",
            reason: format!("{a:?}: {e}"),
        })
    }

    /// Where this node's pins live.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpf_root.join(&self.node_name)
    }

    /// The node name as Hubble shows it: `<cluster>/<node>`.
    pub fn hubble_node_name(&self) -> String {
        format!("{}/{}", self.cluster.name, self.node_name)
    }

    /// Flow ring capacity: Hubble rounds up to 2^n - 1.
    pub fn ring_capacity(&self) -> usize {
        (self.hubble.event_buffer_capacity + 1).next_power_of_two() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = AgentConfig::parse("nodeName: n1\n").unwrap();
        assert_eq!(c.hubble.listen_address, ":4244");
        assert_eq!(c.bpf.monitor_aggregation, MonitorAggregation::Medium);
        assert_eq!(c.bpf.monitor_interval, Duration::from_secs(5));
        assert_eq!(c.ring_capacity(), 4095);
        assert_eq!(c.listen_socket_addr().unwrap().port(), 4244);
        assert_eq!(c.hubble_node_name(), "default/n1");
        assert!(!c.kube_proxy_replacement);
    }

    #[test]
    fn helm_style_keys_parse() {
        let c = AgentConfig::parse(
            "nodeName: n1\ncluster: {name: lab}\nhubble: {eventBufferCapacity: 65535, listenAddress: '127.0.0.1:4244'}\nbpf: {monitorAggregation: none, monitorInterval: 2s}\n",
        )
        .unwrap();
        assert_eq!(c.ring_capacity(), 65535);
        assert_eq!(c.bpf.monitor_aggregation, MonitorAggregation::None);
        assert_eq!(c.bpf.monitor_interval, Duration::from_secs(2));
        assert!(
            AgentConfig::parse("nodeName: n1\nkubeProxyReplacement: true\n")
                .unwrap()
                .kube_proxy_replacement
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_the_key() {
        let e = AgentConfig::parse("nodeName: n1\nhubble: {bogus: 1}\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e =
            AgentConfig::parse("nodeName: n1\nbpf: {monitorAggregation: maximum}\n").unwrap_err();
        assert!(e.to_string().contains("maximum"), "{e}");
        let e = AgentConfig::parse("nodeName: n1\nbpf: {eventsRingBytes: 1000}\n").unwrap_err();
        assert!(e.to_string().contains("bpf.eventsRingBytes"), "{e}");
        let e = AgentConfig::parse("nodeName: n1\nhubble: {listenAddress: 'nope'}\n").unwrap_err();
        assert!(e.to_string().contains("hubble.listenAddress"), "{e}");
        assert!(AgentConfig::parse("nodeName: [\n").is_err());
    }

    #[test]
    fn hubble_tls_is_off_by_default_and_parses() {
        let c = AgentConfig::parse("nodeName: n1\n").unwrap();
        assert!(!c.hubble.tls.enabled);
        assert!(c.hubble.tls.client_ca_files.is_empty());
        let c = AgentConfig::parse(
            "nodeName: n1\nhubble: {tls: {enabled: true, certFile: /t/n1.crt, keyFile: /t/n1.key, clientCAFiles: [/t/ca.crt, /t/ca2.crt]}}\n",
        )
        .unwrap();
        assert!(c.hubble.tls.enabled);
        assert_eq!(c.hubble.tls.cert_file, PathBuf::from("/t/n1.crt"));
        assert_eq!(c.hubble.tls.key_file, PathBuf::from("/t/n1.key"));
        assert_eq!(c.hubble.tls.client_ca_files.len(), 2);
        let e = AgentConfig::parse("nodeName: n1\nhubble: {tls: {enabled: true, keyFile: /k}}\n")
            .unwrap_err();
        assert!(e.to_string().contains("hubble.tls.certFile"), "{e}");
        let e = AgentConfig::parse("nodeName: n1\nhubble: {tls: {enabled: true, certFile: /c}}\n")
            .unwrap_err();
        assert!(e.to_string().contains("hubble.tls.keyFile"), "{e}");
        let e =
            AgentConfig::parse("nodeName: n1\nhubble: {tls: {clientCaFiles: []}}\n").unwrap_err();
        assert!(e.to_string().contains("clientCaFiles"), "{e}");
    }
}
