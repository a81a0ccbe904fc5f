//! The agent's one configuration file (YAML). Keys follow Cilium's Helm values where a
//! setting has a Cilium name (`cluster.name`, `devices`, `hubble.listenAddress`,
//! `hubble.socketPath`, `hubble.eventBufferCapacity`, `bpf.monitorAggregation`,
//! `bpf.monitorInterval`), so operators find what they know. Unknown keys are rejected.

mod chart;
pub mod dns;
pub mod layers;

pub use chart::{
    AutoMount, BandwidthManagerConfig, Capabilities, CgroupValues, DatapathMode, EnvoyConfig,
    OperatorValues, Port, RelayValues, SecurityContextValues, StateSource, UiValues,
};
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
    /// `routingMode`: how pod traffic crosses nodes. Only `native` (routed on the underlay,
    /// no encapsulation) is supported; default `native`.
    #[serde(default)]
    pub routing_mode: RoutingMode,
    /// `autoDirectNodeRoutes`: install a route to every other node's pod CIDR via that
    /// node's address (the nodes share an L2). Default false.
    #[serde(default)]
    pub auto_direct_node_routes: bool,
    /// `ipv4NativeRoutingCIDR`: the range routed natively (pod addresses are kept inside
    /// it). Default: none.
    #[serde(default, rename = "ipv4NativeRoutingCIDR")]
    pub ipv4_native_routing_cidr: Option<ipnet::Ipv4Net>,
    /// `ipam.*`: where this node's pod CIDR comes from.
    #[serde(default)]
    pub ipam: IpamConfig,
    /// `loadBalancer.*`: how the datapath picks backends.
    #[serde(default)]
    pub load_balancer: LoadBalancerConfig,
    /// `l2announcements.*`: answer ARP for LoadBalancer IPs on the uplink.
    #[serde(default)]
    pub l2announcements: L2AnnouncementsConfig,
    /// `encryption.*`: node-to-node encryption of pod traffic.
    #[serde(default)]
    pub encryption: EncryptionConfig,
    /// `MTU`: the uplink MTU pod MTUs derive from. Default 0: read from the first of
    /// `devices` (1500 if that fails). With WireGuard on, pods get this minus 80 bytes,
    /// the tunnel's overhead (as in Cilium).
    #[serde(default, rename = "MTU")]
    pub mtu: u32,
    /// Hubble server settings.
    #[serde(default)]
    pub hubble: HubbleConfig,
    /// Datapath settings.
    #[serde(default)]
    pub bpf: BpfConfig,
    /// `stateSource` (Lumen's): `manifests` (default, `manifestsDir`) or `kubernetes`.
    #[serde(default)]
    pub state_source: StateSource,
    /// `k8sServiceHost`: the API server's address when `stateSource: kubernetes`, instead
    /// of the in-cluster `KUBERNETES_SERVICE_HOST` (Talos: `localhost`, KubePrism).
    /// Default: none.
    #[serde(default)]
    pub k8s_service_host: Option<String>,
    /// `k8sServicePort`: the API server's port with `k8sServiceHost` (number or string).
    /// Default: none.
    #[serde(default)]
    pub k8s_service_port: Option<Port>,
    /// `healthPort`: `GET http://127.0.0.1:<healthPort>/healthz` answers 200 once the
    /// agent serves (the chart's probes). 0 disables it. Default 9879, as Cilium's.
    #[serde(default = "default_health_port")]
    pub health_port: u16,
    /// `bandwidthManager.*`: accepted, not enforced (see [`BandwidthManagerConfig`]).
    #[serde(default)]
    pub bandwidth_manager: BandwidthManagerConfig,
    /// `dnsProxy.*`: the transparent DNS proxy (see [`dns::DnsProxyConfig`]).
    #[serde(default)]
    pub dns_proxy: dns::DnsProxyConfig,
    /// `envoy.*`: only `enabled: false`.
    #[serde(default)]
    pub envoy: EnvoyConfig,
    /// `operator.*`: chart only (the operator Deployment).
    #[serde(default)]
    pub operator: OperatorValues,
    /// `cgroup.*`: chart only (the cgroup2 mount).
    #[serde(default)]
    pub cgroup: CgroupValues,
    /// `securityContext.*`: chart only (container capabilities).
    #[serde(default)]
    pub security_context: SecurityContextValues,
}

fn default_health_port() -> u16 {
    9879
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
    /// `hubble.enabled`: serve the Observer API. `false` turns off the TCP listener
    /// (`listenAddress`); the local socket stays for `lumen`/`hubble` on the node.
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `hubble.relay.*`: chart (and demo lab) only.
    #[serde(default)]
    pub relay: RelayValues,
    /// `hubble.ui.*`: chart (and demo lab) only.
    #[serde(default)]
    pub ui: UiValues,
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
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: HubbleMetricsConfig,
}

/// `hubble.metrics.*`: Prometheus metrics on `http://<listenAddress>:<port>/metrics`.
///
/// ```yaml
/// hubble:
///   metrics:
///     enabled: ["flow", "drop:sourceContext=namespace;destinationContext=namespace", "tcp", "port-distribution", "policy", "flow-volume"]
///     port: 9965
///     listenAddress: ""          # all addresses, as Hubble's ":9965"
///     cardinalityLimit: 1000     # label sets per metric; more go to one "_other" series
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HubbleMetricsConfig {
    /// `hubble.metrics.enabled`: the metrics served, with their options (Cilium's Helm
    /// syntax `name:option=value;option=value`). Empty (the default, as in Hubble): no
    /// metrics server. Unknown metrics or options are refused.
    #[serde(default)]
    pub enabled: Vec<crate::metrics::options::MetricSpec>,
    /// `hubble.metrics.port`. Default 9965.
    #[serde(default = "default_metrics_port")]
    pub port: u16,
    /// The address the metrics server listens on (Lumen's; Hubble listens on all).
    /// Default empty: all addresses.
    #[serde(default)]
    pub listen_address: String,
    /// Label sets kept per metric; increments for more go to one series whose labels are
    /// all `_other`, counted in `lumen_metrics_overflow_total`. Default 1000.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: usize,
}

impl Default for HubbleMetricsConfig {
    fn default() -> Self {
        HubbleMetricsConfig {
            enabled: vec![],
            port: default_metrics_port(),
            listen_address: String::new(),
            cardinality_limit: default_cardinality_limit(),
        }
    }
}

fn default_metrics_port() -> u16 {
    9965
}
fn default_cardinality_limit() -> usize {
    1000
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
    /// `bpf.datapathMode`: how pods are wired. Only `veth` (the default).
    #[serde(default)]
    pub datapath_mode: DatapathMode,
    /// `bpf.masquerade`: TCP/UDP from pods to addresses outside `ipv4NativeRoutingCIDR`
    /// leaves with the node's address. Default false (the homelab's setting: pod addresses
    /// are routed as they are).
    #[serde(default)]
    pub masquerade: bool,
}

/// `ipam.*`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfig {
    /// `kubernetes` (the Node object's `spec.podCIDR`) or `cluster-pool` (claimed from
    /// `operator.clusterPoolIPv4PodCIDRList`, recorded as a CiliumNode). Default as in
    /// Cilium, `cluster-pool`, when a pool is configured (the seed's Talos values rely on
    /// that); without a pool, `kubernetes`. [`IpamConfig::mode`] gives the effective mode.
    #[serde(default, rename = "mode")]
    pub mode_setting: Option<IpamMode>,
    /// `ipam.operator.*`: the cluster pool.
    #[serde(default)]
    pub operator: IpamOperatorConfig,
}

impl IpamConfig {
    /// The effective `ipam.mode` (see [`IpamConfig::mode_setting`]).
    pub fn mode(&self) -> IpamMode {
        self.mode_setting.unwrap_or(
            if self.operator.cluster_pool_ipv4_pod_cidr_list.is_empty() {
                IpamMode::Kubernetes
            } else {
                IpamMode::ClusterPool
            },
        )
    }
}

/// `ipam.mode` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IpamMode {
    /// The pod CIDR in the Node object.
    #[default]
    Kubernetes,
    /// A block of the cluster pool, claimed by the agent.
    ClusterPool,
}

/// `ipam.operator.*`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpamOperatorConfig {
    /// `clusterPoolIPv4PodCIDRList`: ranges to carve node blocks from (a list, or one
    /// string with comma-separated ranges, as the Helm chart accepts). Default: none.
    #[serde(
        default,
        rename = "clusterPoolIPv4PodCIDRList",
        deserialize_with = "cidr_list"
    )]
    pub cluster_pool_ipv4_pod_cidr_list: Vec<ipnet::Ipv4Net>,
    /// `clusterPoolIPv4MaskSize`: the size of each node's block. Default 24.
    #[serde(default = "default_mask_size", rename = "clusterPoolIPv4MaskSize")]
    pub cluster_pool_ipv4_mask_size: u8,
}

impl Default for IpamOperatorConfig {
    fn default() -> Self {
        IpamOperatorConfig {
            cluster_pool_ipv4_pod_cidr_list: vec![],
            cluster_pool_ipv4_mask_size: default_mask_size(),
        }
    }
}

fn default_mask_size() -> u8 {
    24
}

fn cidr_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::Ipv4Net>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        OneOrMany::Many(v) => v,
    };
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an IPv4 CIDR: {e}")))
        })
        .collect()
}

/// `routingMode` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Routed on the underlay without encapsulation (the homelab's setting).
    #[default]
    Native,
    /// VXLAN/Geneve encapsulation: not supported (rejected with an explanation).
    Tunnel,
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

/// `encryption.*`, as in Cilium's Helm values:
///
/// ```yaml
/// encryption:
///   enabled: true            # default false
///   type: wireguard          # the only type (ipsec is refused)
///   wireguard:
///     persistentKeepalive: 0s  # default 0s: off
///   strictMode:
///     enabled: true          # default false
///     cidr: 10.100.0.0/16    # required with strict mode: pod-to-pod traffic inside it
///                            # never leaves a node unencrypted (dropped: UNENCRYPTED_TRAFFIC)
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Encrypt pod traffic between nodes. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// `encryption.type`. Default `wireguard`.
    #[serde(default, rename = "type")]
    pub kind: EncryptionType,
    /// `encryption.wireguard.*`.
    #[serde(default)]
    pub wireguard: WireguardConfig,
    /// `encryption.strictMode.*`.
    #[serde(default)]
    pub strict_mode: StrictModeConfig,
}

/// `encryption.type`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionType {
    /// WireGuard (userspace, on a TUN device: this kernel has no WireGuard module).
    #[default]
    Wireguard,
    /// IPsec: refused (not implemented).
    Ipsec,
}

/// `encryption.wireguard.*`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireguardConfig {
    /// Keepalive interval towards every peer. Default `0s`: off.
    #[serde(default, with = "humantime_serde_compat")]
    pub persistent_keepalive: Duration,
}

/// `encryption.strictMode.*`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrictModeConfig {
    /// Drop pod-to-pod traffic inside `cidr` that would leave unencrypted. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// The pod range it covers. Required when enabled.
    #[serde(default)]
    pub cidr: Option<ipnet::Ipv4Net>,
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
            enabled: true,
            relay: RelayValues::default(),
            ui: UiValues::default(),
            listen_address: default_listen_address(),
            socket_path: default_socket_path(),
            event_buffer_capacity: default_capacity(),
            tls: HubbleTlsConfig::default(),
            metrics: HubbleMetricsConfig::default(),
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
            datapath_mode: DatapathMode::default(),
            masquerade: false,
        }
    }
}
fn default_true() -> bool {
    true
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

    /// Reads several files as one (`--config values.yaml --config node.yaml`): mappings
    /// merge, later files win ([`layers::merge`]). One file is exactly [`AgentConfig::load`].
    pub fn load_layered(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        match paths {
            [] => Self::parse(""),
            [one] => Self::load(one),
            many => {
                let mut merged = serde_yaml::Value::Null;
                for path in many {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    let layer: serde_yaml::Value =
                        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                            path: path.clone(),
                            source,
                        })?;
                    if merged.is_null() {
                        merged = layer;
                    } else {
                        layers::merge(&mut merged, layer);
                    }
                }
                let cfg: AgentConfig =
                    serde_yaml::from_value(merged).map_err(|source| ConfigError::Parse {
                        path: PathBuf::from(
                            many.iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(" + "),
                        ),
                        source,
                    })?;
                cfg.validate()?;
                Ok(cfg)
            }
        }
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
        if self.routing_mode == RoutingMode::Tunnel {
            return Err(ConfigError::Invalid {
                key: "routingMode",
                reason: "tunnel is not supported: Lumen routes pod traffic natively; set \
                         `routingMode: native` (and `autoDirectNodeRoutes: true` when the \
                         nodes share an L2)"
                    .into(),
            });
        }
        if self.bpf.datapath_mode != DatapathMode::Veth {
            return Err(ConfigError::Invalid {
                key: "bpf.datapathMode",
                reason: "only veth is supported: set `bpf.datapathMode: veth`".into(),
            });
        }
        if self.envoy.enabled {
            return Err(ConfigError::Invalid {
                key: "envoy.enabled",
                reason: "Lumen has no L7 proxy: set `envoy.enabled: false`".into(),
            });
        }
        if self.k8s_service_port.is_some() && self.k8s_service_host.is_none() {
            return Err(ConfigError::Invalid {
                key: "k8sServicePort",
                reason: "needs k8sServiceHost (e.g. localhost with Talos' KubePrism on 7445)"
                    .into(),
            });
        }
        if self.bpf.masquerade && self.ipv4_native_routing_cidr.is_none() {
            return Err(ConfigError::Invalid {
                key: "bpf.masquerade",
                reason: "masquerading needs ipv4NativeRoutingCIDR (the range whose traffic keeps \
                         pod addresses), e.g. 10.100.0.0/16"
                    .into(),
            });
        }
        if self.encryption.enabled && self.encryption.kind == EncryptionType::Ipsec {
            return Err(ConfigError::Invalid {
                key: "encryption.type",
                reason: "ipsec is not supported: use `type: wireguard`".into(),
            });
        }
        if self.encryption.strict_mode.enabled
            && (!self.encryption.enabled || self.encryption.strict_mode.cidr.is_none())
        {
            return Err(ConfigError::Invalid {
                key: "encryption.strictMode",
                reason: "strict mode needs encryption.enabled: true and encryption.strictMode.cidr                          (the pod range, e.g. 10.100.0.0/16)"
                    .into(),
            });
        }
        if self.ipam.mode() == IpamMode::ClusterPool
            && self
                .ipam
                .operator
                .cluster_pool_ipv4_pod_cidr_list
                .is_empty()
        {
            return Err(ConfigError::Invalid {
                key: "ipam.operator.clusterPoolIPv4PodCIDRList",
                reason: "ipam.mode cluster-pool needs at least one range, e.g. 10.100.0.0/16"
                    .into(),
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
        crate::metrics::options::check_unique(&self.hubble.metrics.enabled).map_err(|e| {
            ConfigError::Invalid {
                key: "hubble.metrics.enabled",
                reason: e.to_string(),
            }
        })?;
        self.metrics_socket_addr()?;
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

    /// Whether the Observer API listens on TCP: `hubble.enabled` and a `listenAddress`.
    pub fn hubble_tcp_enabled(&self) -> bool {
        self.hubble.enabled && !self.hubble.listen_address.is_empty()
    }

    /// Where this node's pins live.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpf_root.join(&self.node_name)
    }

    /// Where the metrics server listens: `hubble.metrics.listenAddress` (all addresses when
    /// empty) and `hubble.metrics.port`.
    pub fn metrics_socket_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        let m = &self.hubble.metrics;
        let ip: std::net::IpAddr = if m.listen_address.is_empty() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            m.listen_address.parse().map_err(|e| ConfigError::Invalid {
                key: "hubble.metrics.listenAddress",
                reason: format!(
                    "{:?}: {e} (an IP address, or empty for all)",
                    m.listen_address
                ),
            })?
        };
        Ok((ip, m.port).into())
    }

    /// The node name as Hubble shows it: `<cluster>/<node>`.
    pub fn hubble_node_name(&self) -> String {
        format!("{}/{}", self.cluster.name, self.node_name)
    }

    /// Flow ring capacity: Hubble rounds up to 2^n - 1.
    pub fn ring_capacity(&self) -> usize {
        (self.hubble.event_buffer_capacity + 1).next_power_of_two() - 1
    }
    /// `encryption.strictMode.cidr` when strict mode is on.
    pub fn strict_cidr(&self) -> Option<ipnet::Ipv4Net> {
        let strict = &self.encryption.strict_mode;
        strict.enabled.then_some(strict.cidr).flatten()
    }

    /// The uplink MTU: `MTU`, else the first device's, else 1500.
    pub fn device_mtu(&self) -> u32 {
        if self.mtu != 0 {
            return self.mtu;
        }
        self.devices
            .first()
            .and_then(|d| crate::node_setup::mtu(d))
            .unwrap_or(1500)
    }

    /// The pods' MTU: the uplink's, less the WireGuard overhead when encryption is on.
    pub fn pod_mtu(&self) -> u32 {
        let mtu = self.device_mtu();
        if self.encryption.enabled {
            mtu.saturating_sub(crate::encryption::OVERHEAD).max(1280)
        } else {
            mtu
        }
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
    fn hubble_metrics_are_off_by_default_and_parse_helm_style() {
        let c = AgentConfig::parse("nodeName: n1\n").unwrap();
        assert!(c.hubble.metrics.enabled.is_empty());
        assert_eq!(c.hubble.metrics.cardinality_limit, 1000);
        assert_eq!(
            c.metrics_socket_addr().unwrap(),
            "0.0.0.0:9965".parse().unwrap()
        );
        let c = AgentConfig::parse(
            "nodeName: n1\nhubble: {metrics: {enabled: [flow, 'drop:sourceContext=namespace;destinationContext=pod'], port: 9100, listenAddress: 127.0.0.1}}\n",
        )
        .unwrap();
        let m = &c.hubble.metrics;
        assert_eq!(m.enabled.len(), 2);
        assert_eq!(m.enabled[1].kind, crate::metrics::options::MetricKind::Drop);
        assert_eq!(
            c.metrics_socket_addr().unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        let e = AgentConfig::parse("nodeName: n1\nhubble: {metrics: {enabled: [httpV2]}}\n")
            .unwrap_err();
        assert!(e.to_string().contains("unknown metric \"httpV2\""), "{e}");
        let e = AgentConfig::parse("nodeName: n1\nhubble: {metrics: {enabled: [tcp, tcp]}}\n")
            .unwrap_err();
        assert!(e.to_string().contains("hubble.metrics.enabled"), "{e}");
        let e = AgentConfig::parse("nodeName: n1\nhubble: {metrics: {listenAddress: ':9965'}}\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("hubble.metrics.listenAddress"),
            "{e}"
        );
        let e = AgentConfig::parse("nodeName: n1\nhubble: {metrics: {serviceMonitor: {}}}\n")
            .unwrap_err();
        assert!(e.to_string().contains("serviceMonitor"), "{e}");
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

    #[test]
    fn native_routing_keys_use_ciliums_names() {
        let c = AgentConfig::parse(
            "nodeName: n1\nroutingMode: native\nautoDirectNodeRoutes: true\nipv4NativeRoutingCIDR: 10.100.0.0/16\n",
        )
        .unwrap();
        assert!(c.auto_direct_node_routes);
        assert_eq!(
            c.ipv4_native_routing_cidr,
            Some("10.100.0.0/16".parse().unwrap())
        );
        let e = AgentConfig::parse("nodeName: n1\nroutingMode: tunnel\n").unwrap_err();
        assert!(e.to_string().contains("routingMode"), "{e}");
        assert!(AgentConfig::parse("nodeName: n1\nroutingMode: vxlan\n").is_err());
    }

    #[test]
    fn encryption_as_in_the_seed_and_strict_mode_needs_its_cidr() {
        let c = AgentConfig::parse(
            "nodeName: n1\nMTU: 1500\nencryption:\n  enabled: true\n  type: wireguard\n",
        )
        .unwrap();
        assert!(c.encryption.enabled);
        assert_eq!(c.encryption.kind, EncryptionType::Wireguard);
        assert_eq!(c.pod_mtu(), 1420);
        assert_eq!(c.strict_cidr(), None);
        let c = AgentConfig::parse(
            "nodeName: n1\nencryption: {enabled: true, strictMode: {enabled: true, cidr: 10.100.0.0/16}}\n",
        )
        .unwrap();
        assert_eq!(c.strict_cidr(), Some("10.100.0.0/16".parse().unwrap()));
        let e = AgentConfig::parse(
            "nodeName: n1\nencryption: {enabled: true, strictMode: {enabled: true}}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("encryption.strictMode.cidr"), "{e}");
        let e = AgentConfig::parse("nodeName: n1\nencryption: {enabled: true, type: ipsec}\n")
            .unwrap_err();
        assert!(e.to_string().contains("wireguard"), "{e}");
        let e = AgentConfig::parse("nodeName: n1\nencryption: {enabled: true, type: gre}\n")
            .unwrap_err();
        assert!(e.to_string().contains("gre"), "{e}");
        // Without encryption the pods keep the uplink's MTU.
        let c = AgentConfig::parse("nodeName: n1\nMTU: 9000\n").unwrap();
        assert_eq!(c.pod_mtu(), 9000);
    }

    #[test]
    fn cluster_pool_takes_the_seeds_string_or_a_list() {
        let c = AgentConfig::parse(
            "nodeName: n1\nipam:\n  mode: cluster-pool\n  operator:\n    clusterPoolIPv4PodCIDRList: \"10.100.0.0/16\"\n",
        )
        .unwrap();
        assert_eq!(c.ipam.mode(), IpamMode::ClusterPool);
        assert_eq!(
            c.ipam.operator.cluster_pool_ipv4_pod_cidr_list,
            vec!["10.100.0.0/16".parse::<ipnet::Ipv4Net>().unwrap()]
        );
        assert_eq!(c.ipam.operator.cluster_pool_ipv4_mask_size, 24);
        let c = AgentConfig::parse(
            "nodeName: n1\nipam: {operator: {clusterPoolIPv4PodCIDRList: [10.1.0.0/16, 10.2.0.0/16], clusterPoolIPv4MaskSize: 26}}\n",
        )
        .unwrap();
        assert_eq!(c.ipam.operator.cluster_pool_ipv4_pod_cidr_list.len(), 2);
        let e = AgentConfig::parse("nodeName: n1\nipam: {mode: cluster-pool}\n").unwrap_err();
        assert!(e.to_string().contains("clusterPoolIPv4PodCIDRList"), "{e}");
        let e = AgentConfig::parse(
            "nodeName: n1\nipam: {operator: {clusterPoolIPv4PodCIDRList: nonsense}}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
    }

    #[test]
    fn ipam_mode_defaults_to_cluster_pool_when_a_pool_is_given_as_in_cilium() {
        let c = AgentConfig::parse(
            "nodeName: n1\nipam: {operator: {clusterPoolIPv4PodCIDRList: 10.100.0.0/16}}\n",
        )
        .unwrap();
        assert_eq!(c.ipam.mode(), IpamMode::ClusterPool);
        let c = AgentConfig::parse("nodeName: n1\n").unwrap();
        assert_eq!(c.ipam.mode(), IpamMode::Kubernetes);
        let c = AgentConfig::parse(
            "nodeName: n1\nipam: {mode: kubernetes, operator: {clusterPoolIPv4PodCIDRList: 10.10.0.0/16}}\n",
        )
        .unwrap();
        assert_eq!(c.ipam.mode(), IpamMode::Kubernetes);
    }

    #[test]
    fn chart_keys_are_accepted_and_checked() {
        let c = AgentConfig::parse(
            "nodeName: n1\nk8sServiceHost: localhost\nk8sServicePort: \"7445\"\n\
             bandwidthManager: {enabled: true, bbr: true}\nenvoy: {enabled: false}\n\
             bpf: {datapathMode: veth}\nhubble: {enabled: true, relay: {enabled: true}, ui: {enabled: true, replicas: 1}}\n\
             operator: {replicas: 2}\ncgroup: {autoMount: {enabled: false}, hostRoot: /sys/fs/cgroup}\n\
             securityContext: {capabilities: {ciliumAgent: [NET_ADMIN], cleanCiliumState: [SYS_ADMIN]}}\n\
             stateSource: kubernetes\n",
        )
        .unwrap();
        assert_eq!(c.k8s_service_port, Some(Port(7445)));
        assert_eq!(c.state_source, StateSource::Kubernetes);
        assert_eq!(c.operator.replicas, 2);
        assert!(!c.cgroup.auto_mount.enabled);
        assert_eq!(c.health_port, 9879);
        for (bad, key) in [
            ("bpf: {datapathMode: netkit}", "bpf.datapathMode"),
            ("envoy: {enabled: true}", "envoy.enabled"),
            ("k8sServicePort: 7445", "k8sServicePort"),
            ("k8sServiceHost: h\nk8sServicePort: seventy", "seventy"),
            ("operator: {replicas: 2, bogus: 1}", "bogus"),
        ] {
            let e = AgentConfig::parse(&format!("nodeName: n1\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn layered_files_merge_like_helm_values() {
        let dir = tempfile::tempdir().unwrap();
        let values = dir.path().join("values.yaml");
        let local = dir.path().join("node.yaml");
        std::fs::write(
            &values,
            "kubeProxyReplacement: true\nhubble: {relay: {enabled: true}, eventBufferCapacity: 100}\n",
        )
        .unwrap();
        std::fs::write(&local, "nodeName: n7\nhubble: {eventBufferCapacity: 200}\n").unwrap();
        let c = AgentConfig::load_layered(&[values.clone(), local.clone()]).unwrap();
        assert!(c.kube_proxy_replacement);
        assert_eq!(c.node_name, "n7");
        assert_eq!(c.hubble.event_buffer_capacity, 200);
        assert!(c.hubble.relay.enabled);
        std::fs::write(&local, "nodeName: n7\nbogusKey: 1\n").unwrap();
        let e = AgentConfig::load_layered(&[values.clone(), local.clone()]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bogusKey") && msg.contains("node.yaml"),
            "{msg}"
        );
        std::fs::write(&local, "nodeName: [\n").unwrap();
        let e = AgentConfig::load_layered(&[values, local]).unwrap_err();
        assert!(e.to_string().contains("node.yaml"), "{e}");
    }
}
