//! The relay's configuration: one YAML file, keys named like Hubble relay's Helm values
//! (camelCase), unknown keys rejected. Every key is optional:
//!
//! ```yaml
//! listenAddress: ":4245"          # where the relay serves observer.Observer + grpc.health.v1
//! clusterName: default            # cluster of static peers named without one
//! # Where to find the nodes: ask an agent's peer service ...
//! peerService: "unix:///var/run/cilium/hubble.sock"   # or "host:4244"
//! # ... or list them (used when peerService is empty):
//! peers:
//!   - {name: default/node1, address: "192.168.1.10:4244"}
//! # Addresses to dial instead of what the peer service advertises, by node name
//! # (`cluster/node` or just `node`), e.g. when the relay cannot route to the nodes'
//! # InternalIPs but reaches their unix sockets (the lab) or port-forwards.
//! nodeAddresses:
//!   node1: "unix:///run/lab/node1/hubble.sock"
//! sortBufferMaxLen: 100           # flows held for time ordering (Hubble: 100)
//! sortBufferDrainTimeout: 100ms   # longest a flow waits for slower nodes (Hubble: 1s)
//! dialTimeout: 5s                 # connecting to a node or the peer service
//! retryBackoff: {initial: 200ms, max: 5s}   # reconnects: exponential, with jitter
//! # Mutual TLS to the agents' TCP ports (absent: plaintext). Unix sockets stay plaintext.
//! tls:
//!   clientCertFile: /etc/lumen/tls/relay-client.crt   # presented to agents (PEM)
//!   clientKeyFile: /etc/lumen/tls/relay-client.key
//!   caFiles: [/etc/lumen/tls/ca.crt]                   # agents' certificates must chain to these
//!   serverName: ""   # default: <node>.<cluster>.hubble-grpc.cilium.io per node; the peer
//!                    # service is verified against the host of its address
//! # TLS towards the relay's own clients (absent: plaintext).
//! listenTls:
//!   certFile: /etc/lumen/tls/relay.crt
//!   keyFile: /etc/lumen/tls/relay.key
//!   clientCAFiles: []   # when set, clients must present a certificate signed by these
//! # Flow history (absent: none; present: enabled unless `enabled: false`). The relay
//! # records every node's flows and answers GetFlows older than the nodes hold from it.
//! history:
//!   enabled: true
//!   backend: sqlite                  # the only one so far (embedded, nothing to set up)
//!   path: /var/lib/lumen/relay/flows.db
//!   maxAge: 24h                      # older flows are deleted
//!   maxSizeBytes: 1073741824         # beyond this, the oldest flows are deleted (1 GiB)
//!   bufferFlows: 100000              # flows queued for the store; beyond, counted lost
//!   insertBatch: 2000                # most flows per insert transaction
//!   retentionInterval: 30s           # how often age and size are enforced
//! ```
//!
//! `sortBufferDrainTimeout` is 100 ms rather than Hubble's 1 s: Lumen targets p99 ≤ 250 ms
//! from packet to client, and agents already add up to ~10 ms (ring drain) before a flow
//! leaves them. Nodes stream in time order, so the relay only waits for a node that has
//! nothing queued; 100 ms covers scheduling and network jitter between agents.
//!
//! Addresses: `unix:///path` (a unix socket), `host:port`, or a bare IP/host (port 4244).

use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid YAML for this schema (unknown key, wrong type, bad duration).
    #[error("{0}")]
    Parse(#[from] serde_yaml::Error),
    /// A value out of range.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// One static peer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticPeer {
    /// Node name, `cluster/node` (a bare `node` gets `clusterName`).
    pub name: String,
    /// Its Observer address.
    pub address: String,
}

/// Reconnection backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    /// First delay. Default 200 ms.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub initial: Duration,
    /// Largest delay (doubling until there). Default 5 s.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based): `initial·2ⁿ` capped at `max`, with ±20 %
    /// jitter from `jitter` (a number in [0, 1)).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }
}

/// `tls`: how the relay connects to agents over TCP (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentTls {
    /// Client certificate presented to agents, PEM. Required.
    pub client_cert_file: PathBuf,
    /// Its private key, PEM. Required.
    pub client_key_file: PathBuf,
    /// CA certificates (PEM) the agents' server certificates must chain to. Required.
    pub ca_files: Vec<PathBuf>,
    /// Name to verify every agent's certificate against. Default: none, i.e. per node
    /// `<node>.<cluster>.hubble-grpc.cilium.io` (as Hubble), and for the peer service the
    /// host of `peerService`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `listenTls`: TLS towards the relay's clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenTls {
    /// Server certificate, PEM. Required.
    pub cert_file: PathBuf,
    /// Its private key, PEM. Required.
    pub key_file: PathBuf,
    /// CAs (PEM) client certificates must chain to; when set, clients must present one.
    /// Default empty: no client certificate asked.
    #[serde(default, rename = "clientCAFiles")]
    pub client_ca_files: Vec<PathBuf>,
}

/// `history.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HistoryBackend {
    /// Embedded SQLite (sqlx, bundled): the default.
    #[default]
    Sqlite,
    /// A ClickHouse server (`history.clickhouse`), for clusters that outgrow one machine.
    Clickhouse,
}

/// `history.clickhouse`: where the ClickHouse backend stores flows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClickHouseConfig {
    /// HTTP endpoint. Default `http://127.0.0.1:8123`.
    #[serde(default = "default_clickhouse_url")]
    pub url: String,
    /// Database (created if missing). Default `lumen`.
    #[serde(default = "default_clickhouse_database")]
    pub database: String,
    /// User. Default `default`.
    #[serde(default = "default_clickhouse_user")]
    pub user: String,
    /// Password. Default empty.
    #[serde(default)]
    pub password: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: default_clickhouse_url(),
            database: default_clickhouse_database(),
            user: default_clickhouse_user(),
            password: String::new(),
        }
    }
}

fn default_clickhouse_url() -> String {
    "http://127.0.0.1:8123".into()
}
fn default_clickhouse_database() -> String {
    "lumen".into()
}
fn default_clickhouse_user() -> String {
    "default".into()
}

/// `history`: flow history kept by the relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HistoryConfig {
    /// Default true (the section's presence turns history on).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Default `sqlite`.
    #[serde(default)]
    pub backend: HistoryBackend,
    /// The database file (`sqlite`). Default `/var/lib/lumen/relay/flows.db`.
    #[serde(default = "default_history_path")]
    pub path: PathBuf,
    /// The server (`clickhouse`).
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    /// Flows older than this are deleted. Default 24 h.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Beyond this many bytes in use, the oldest flows are deleted. Default 1 GiB.
    #[serde(default = "default_max_size")]
    pub max_size_bytes: u64,
    /// Flows queued towards the store; when full, flows are counted lost, never waited
    /// for. Default 100000.
    #[serde(default = "default_buffer_flows")]
    pub buffer_flows: usize,
    /// Most flows per insert transaction. Default 2000.
    #[serde(default = "default_insert_batch")]
    pub insert_batch: usize,
    /// How often retention runs. Default 30 s.
    #[serde(default = "default_retention_interval", with = "humantime_serde")]
    pub retention_interval: Duration,
}

/// The relay configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelayConfig {
    /// Where to serve. Default `:4245` (all addresses).
    #[serde(default = "default_listen")]
    pub listen_address: String,
    /// Cluster of static peers named without one. Default `default`.
    #[serde(default = "default_cluster")]
    pub cluster_name: String,
    /// An agent whose peer service lists the nodes. Empty: use `peers`.
    #[serde(default)]
    pub peer_service: String,
    /// Static nodes (when `peerService` is empty).
    #[serde(default)]
    pub peers: Vec<StaticPeer>,
    /// Address overrides by node name.
    #[serde(default)]
    pub node_addresses: BTreeMap<String, String>,
    /// Sort buffer length. Default 100.
    #[serde(default = "default_sort_len")]
    pub sort_buffer_max_len: usize,
    /// Sort buffer drain timeout. Default 100 ms.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub sort_buffer_drain_timeout: Duration,
    /// Dial timeout. Default 5 s.
    #[serde(default = "default_dial", with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// Reconnect backoff.
    #[serde(default)]
    pub retry_backoff: Backoff,
    /// Mutual TLS to agents' TCP addresses. Default absent: plaintext.
    #[serde(default)]
    pub tls: Option<AgentTls>,
    /// TLS for the relay's own clients. Default absent: plaintext.
    #[serde(default)]
    pub listen_tls: Option<ListenTls>,
    /// Flow history. Default absent: none.
    #[serde(default)]
    pub history: Option<HistoryConfig>,
    /// `prometheus`: the relay's own metrics (Hubble Relay's `hubble.relay.prometheus`).
    #[serde(default)]
    pub prometheus: PrometheusConfig,
}

/// `prometheus`: `/metrics` of the relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusConfig {
    /// Serve metrics. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Where. Default `:9966` (Hubble Relay's port, all addresses).
    #[serde(default = "default_prometheus_listen")]
    pub listen_address: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: false,
            listen_address: default_prometheus_listen(),
        }
    }
}

fn default_prometheus_listen() -> String {
    ":9966".into()
}

impl RelayConfig {
    /// The history settings when history is on.
    pub fn history_enabled(&self) -> Option<&HistoryConfig> {
        self.history.as_ref().filter(|h| h.enabled)
    }
}

fn default_true() -> bool {
    true
}
fn default_history_path() -> PathBuf {
    "/var/lib/lumen/relay/flows.db".into()
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_size() -> u64 {
    1 << 30
}
fn default_buffer_flows() -> usize {
    100_000
}
fn default_insert_batch() -> usize {
    2000
}
fn default_retention_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_listen() -> String {
    ":4245".into()
}
fn default_cluster() -> String {
    "default".into()
}
fn default_sort_len() -> usize {
    100
}
fn default_drain() -> Duration {
    Duration::from_millis(100)
}
fn default_dial() -> Duration {
    Duration::from_secs(5)
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(200)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(5)
}

/// Durations as humantime strings (`100ms`, `5s`).
mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl RelayConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let cfg: RelayConfig = serde_yaml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_socket_addr()?;
        if self.prometheus.enabled {
            self.prometheus_socket_addr()?;
        }
        if self.sort_buffer_max_len == 0 {
            return Err(ConfigError::Invalid {
                key: "sortBufferMaxLen",
                reason: "must be at least 1".into(),
            });
        }
        if self.retry_backoff.initial.is_zero()
            || self.retry_backoff.max < self.retry_backoff.initial
        {
            return Err(ConfigError::Invalid {
                key: "retryBackoff",
                reason: "initial must be > 0 and ≤ max".into(),
            });
        }
        for p in &self.peers {
            if p.name.is_empty() || p.address.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "peers",
                    reason: format!("{p:?}: name and address are required"),
                });
            }
        }
        if let Some(t) = &self.tls {
            if t.ca_files.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "tls.caFiles",
                    reason: "list at least one CA file (e.g. lumen-certgen's ca.crt)".into(),
                });
            }
        }
        if let Some(h) = self.history_enabled() {
            if h.buffer_flows == 0 || h.insert_batch == 0 {
                return Err(ConfigError::Invalid {
                    key: "history",
                    reason: "bufferFlows and insertBatch must be at least 1".into(),
                });
            }
            if h.max_age.is_zero() || h.max_size_bytes == 0 || h.retention_interval.is_zero() {
                return Err(ConfigError::Invalid {
                    key: "history",
                    reason: "maxAge, maxSizeBytes and retentionInterval must be > 0".into(),
                });
            }
        }
        if self.peer_service.is_empty() && self.peers.is_empty() {
            return Err(ConfigError::Invalid {
                key: "peerService",
                reason: "set peerService or list peers".into(),
            });
        }
        Ok(())
    }

    /// `listenAddress` as a socket address (`:4245` → `0.0.0.0:4245`).
    pub fn listen_socket_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        socket_addr("listenAddress", &self.listen_address)
    }

    /// `prometheus.listenAddress` as a socket address.
    pub fn prometheus_socket_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        socket_addr("prometheus.listenAddress", &self.prometheus.listen_address)
    }
}

fn socket_addr(key: &'static str, a: &str) -> Result<std::net::SocketAddr, ConfigError> {
    {
        let full = if a.starts_with(':') {
            format!("0.0.0.0{a}")
        } else {
            a.to_string()
        };
        full.parse().map_err(|e| ConfigError::Invalid {
            key,
            reason: format!("{a:?}: {e}"),
        })
    }
}

impl RelayConfig {
    /// A static peer's full name (`cluster/node`).
    pub fn full_name(&self, name: &str) -> String {
        if name.contains('/') {
            name.to_string()
        } else {
            format!("{}/{name}", self.cluster_name)
        }
    }

    /// The address to dial for node `name` (`cluster/node`): an override if configured
    /// (by full or bare name), else `advertised`.
    pub fn address_for(&self, name: &str, advertised: &str) -> String {
        let bare = name.rsplit('/').next().unwrap_or(name);
        self.node_addresses
            .get(name)
            .or_else(|| self.node_addresses.get(bare))
            .cloned()
            .unwrap_or_else(|| advertised.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = RelayConfig::parse("peerService: 'unix:///x.sock'").unwrap();
        assert_eq!(c.listen_address, ":4245");
        assert_eq!(c.listen_socket_addr().unwrap().port(), 4245);
        assert_eq!(c.sort_buffer_max_len, 100);
        assert_eq!(c.sort_buffer_drain_timeout, Duration::from_millis(100));
        assert_eq!(c.dial_timeout, Duration::from_secs(5));
        assert_eq!(c.retry_backoff, Backoff::default());
        assert_eq!(c.cluster_name, "default");
    }

    #[test]
    fn full_file() {
        let c = RelayConfig::parse(
            "listenAddress: 127.0.0.1:4245\nclusterName: lab\npeers:\n  - {name: node1, address: '10.0.0.1:4244'}\n\
             nodeAddresses: {node1: 'unix:///n1.sock', lab/node2: 'unix:///n2.sock'}\n\
             sortBufferMaxLen: 50\nsortBufferDrainTimeout: 50ms\ndialTimeout: 1s\nretryBackoff: {initial: 10ms, max: 1s}\n",
        )
        .unwrap();
        assert_eq!(c.full_name("node1"), "lab/node1");
        assert_eq!(c.full_name("x/node1"), "x/node1");
        assert_eq!(c.address_for("lab/node1", "a:1"), "unix:///n1.sock");
        assert_eq!(c.address_for("lab/node2", "a:1"), "unix:///n2.sock");
        assert_eq!(c.address_for("lab/node3", "a:1"), "a:1");
        assert_eq!(c.sort_buffer_drain_timeout, Duration::from_millis(50));
        assert_eq!(c.retry_backoff.initial, Duration::from_millis(10));
    }

    #[test]
    fn rejects() {
        for bad in [
            "peerService: x\nbogus: 1",
            "peerService: x\nretryBackoff: {initial: 1s, max: 1ms}",
            "peerService: x\nsortBufferMaxLen: 0",
            "peerService: x\nlistenAddress: nonsense",
            "peerService: x\ndialTimeout: soon",
            "listenAddress: ':1'",
        ] {
            assert!(RelayConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_is_off_by_default_and_parses() {
        let c = RelayConfig::parse("peerService: x").unwrap();
        assert_eq!(c.tls, None);
        assert_eq!(c.listen_tls, None);
        let c = RelayConfig::parse(
            "peerService: x\ntls: {clientCertFile: /t/r.crt, clientKeyFile: /t/r.key, caFiles: [/t/ca.crt]}\n\
             listenTls: {certFile: /t/s.crt, keyFile: /t/s.key, clientCAFiles: [/t/ca.crt]}\n",
        )
        .unwrap();
        let t = c.tls.unwrap();
        assert_eq!(t.client_cert_file, PathBuf::from("/t/r.crt"));
        assert_eq!(t.client_key_file, PathBuf::from("/t/r.key"));
        assert_eq!(t.ca_files, vec![PathBuf::from("/t/ca.crt")]);
        assert_eq!(t.server_name, None);
        let l = c.listen_tls.unwrap();
        assert_eq!(l.cert_file, PathBuf::from("/t/s.crt"));
        assert_eq!(l.client_ca_files.len(), 1);
        let c = RelayConfig::parse(
            "peerService: x\ntls: {clientCertFile: a, clientKeyFile: b, caFiles: [c], serverName: n1.x}\n",
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().server_name.as_deref(), Some("n1.x"));
        for bad in [
            "peerService: x\ntls: {clientCertFile: a, clientKeyFile: b, caFiles: []}",
            "peerService: x\ntls: {clientCertFile: a, caFiles: [c]}",
            "peerService: x\ntls: {clientCertFile: a, clientKeyFile: b, caFiles: [c], bogus: 1}",
            "peerService: x\nlistenTls: {certFile: a}",
        ] {
            assert!(RelayConfig::parse(bad).is_err(), "{bad}");
        }
        let e = RelayConfig::parse(
            "peerService: x\ntls: {clientCertFile: a, clientKeyFile: b, caFiles: []}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("tls.caFiles"), "{e}");
    }

    #[test]
    fn history_is_off_by_default_and_on_when_present() {
        let c = RelayConfig::parse("peerService: x").unwrap();
        assert_eq!(c.history_enabled(), None);
        let c = RelayConfig::parse("peerService: x\nhistory: {}").unwrap();
        let h = c.history_enabled().unwrap();
        assert_eq!(h.backend, HistoryBackend::Sqlite);
        assert_eq!(h.path, PathBuf::from("/var/lib/lumen/relay/flows.db"));
        assert_eq!(h.max_age, Duration::from_secs(86400));
        assert_eq!((h.max_size_bytes, h.buffer_flows), (1 << 30, 100_000));
        let c = RelayConfig::parse(
            "peerService: x\nhistory: {path: /s/f.db, maxAge: 1h, maxSizeBytes: 1000, bufferFlows: 5, insertBatch: 2, retentionInterval: 1s}",
        )
        .unwrap();
        let h = c.history_enabled().unwrap();
        assert_eq!(
            (h.max_age, h.max_size_bytes),
            (Duration::from_secs(3600), 1000)
        );
        assert_eq!(h.retention_interval, Duration::from_secs(1));
        let c = RelayConfig::parse(
            "peerService: x\nhistory: {backend: clickhouse, clickhouse: {url: 'http://ch:8123', database: flows}}",
        )
        .unwrap();
        let h = c.history_enabled().unwrap();
        assert_eq!(h.backend, HistoryBackend::Clickhouse);
        assert_eq!(
            (
                h.clickhouse.url.as_str(),
                h.clickhouse.database.as_str(),
                h.clickhouse.user.as_str()
            ),
            ("http://ch:8123", "flows", "default")
        );
        let c = RelayConfig::parse("peerService: x\nhistory: {enabled: false}").unwrap();
        assert_eq!(c.history_enabled(), None);
        for bad in [
            "peerService: x\nhistory: {bogus: 1}",
            "peerService: x\nhistory: {backend: postgres}",
            "peerService: x\nhistory: {backend: clickhouse, clickhouse: {host: x}}",
            "peerService: x\nhistory: {bufferFlows: 0}",
            "peerService: x\nhistory: {maxAge: 0s}",
        ] {
            assert!(RelayConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(400));
        assert_eq!(b.delay(10, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(40, 0.5), Duration::from_secs(1));
        assert!(b.delay(0, 0.0) >= Duration::from_millis(80));
    }
}
