//! The operator's configuration file: one YAML document with the Cilium Helm-value names
//! the chart renders into the operator's ConfigMap.

use crate::config::{IpamConfig, IpamMode};
use crate::podcidr::choose;
use serde::Deserialize;
use std::{collections::BTreeMap, path::Path, time::Duration};

/// The cilium-operator health port.
pub const DEFAULT_HEALTH_PORT: u16 = 9234;
/// The Lease name when `leaderElection.leaseName` is unset.
pub const DEFAULT_LEASE_NAME: &str = "lumen-operator-resource-lock";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a valid configuration (unknown key, wrong type, bad value).
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: String,
        /// Why, with the key.
        error: serde_yaml::Error,
    },
    /// `ipam.mode: cluster-pool` without blocks to hand out.
    #[error("{0}")]
    Ipam(String),
    /// The leader-election timings cannot work together.
    #[error("leaderElection: {0}")]
    Timing(&'static str),
}

/// `lumen-operator --config` contents.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// `ipam.*`: `mode` (cluster-pool allocates pod CIDRs; kubernetes leaves them to the
    /// Node objects) and `operator.clusterPoolIPv4PodCIDRList` / `clusterPoolIPv4MaskSize`.
    #[serde(default)]
    pub ipam: IpamConfig,
    /// `k8sServiceHost`: the API server's address instead of the in-cluster one.
    #[serde(default, rename = "k8sServiceHost")]
    pub k8s_service_host: Option<String>,
    /// `k8sServicePort`: the API server's port (with `k8sServiceHost`; default 443).
    #[serde(default, rename = "k8sServicePort")]
    pub k8s_service_port: Option<u16>,
    /// `leaderElection.*`.
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,
    /// `healthPort`: `GET /healthz` for the probes. Default 9234.
    #[serde(default)]
    pub health_port: Option<u16>,
}

/// `leaderElection.*`: the `coordination.k8s.io/v1` Lease only the leader allocates under.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// `leaseName`. Default `lumen-operator-resource-lock`.
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// `leaseNamespace`. Default `$POD_NAMESPACE`, else `kube-system`.
    #[serde(default)]
    pub lease_namespace: Option<String>,
    /// `leaseDuration`: how long others wait after the last renewal they saw. Default 15s.
    #[serde(default = "default_lease_duration", with = "go_duration")]
    pub lease_duration: Duration,
    /// `renewDeadline`: how long the leader keeps allocating without a successful
    /// renewal. Default 10s.
    #[serde(default = "default_renew_deadline", with = "go_duration")]
    pub renew_deadline: Duration,
    /// `retryPeriod`: how often every instance tries to acquire or renew. Default 2s.
    #[serde(default = "default_retry_period", with = "go_duration")]
    pub retry_period: Duration,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            lease_name: default_lease_name(),
            lease_namespace: None,
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
        }
    }
}

impl LeaderElectionConfig {
    /// `leaseNamespace`, else `$POD_NAMESPACE`, else `kube-system`.
    pub fn namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| "kube-system".into())
    }
}

fn default_lease_name() -> String {
    DEFAULT_LEASE_NAME.into()
}
fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}
fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_period() -> Duration {
    Duration::from_secs(2)
}

/// Durations as Go/Helm write them (`15s`, `500ms`, `1m`).
mod go_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
    }
}

impl OperatorConfig {
    /// Parses a configuration document and checks the leader-election timings.
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        // An empty file is all defaults.
        let cfg: OperatorConfig = if text.trim().is_empty() {
            OperatorConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|error| ConfigError::Parse {
                path: path.into(),
                error,
            })?
        };
        let le = &cfg.leader_election;
        if le.retry_period.is_zero() {
            return Err(ConfigError::Timing("retryPeriod must be above zero"));
        }
        if le.renew_deadline >= le.lease_duration {
            return Err(ConfigError::Timing(
                "renewDeadline must be shorter than leaseDuration (the leader must stop before others may take over)",
            ));
        }
        if le.retry_period >= le.renew_deadline {
            return Err(ConfigError::Timing(
                "retryPeriod must be shorter than renewDeadline",
            ));
        }
        if cfg.ipam.mode() == IpamMode::ClusterPool {
            let op = &cfg.ipam.operator;
            // The allocator's own checks, on an empty cluster: what fails here fails for
            // every node.
            if let Err(e) = choose(
                &op.cluster_pool_ipv4_pod_cidr_list,
                op.cluster_pool_ipv4_mask_size,
                &BTreeMap::new(),
                "",
            ) {
                return Err(ConfigError::Ipam(e.to_string()));
            }
        }
        Ok(cfg)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: name.clone(),
            error,
        })?;
        Self::parse(&name, &text)
    }

    /// `healthPort`, default 9234.
    pub fn health_port(&self) -> u16 {
        self.health_port.unwrap_or(DEFAULT_HEALTH_PORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_names_with_defaults() {
        let c = OperatorConfig::parse(
            "c",
            "ipam:\n  mode: cluster-pool\n  operator:\n    clusterPoolIPv4PodCIDRList: \"10.100.0.0/16\"\nk8sServiceHost: 192.168.1.10\nk8sServicePort: 6443\n",
        )
        .unwrap();
        assert_eq!(c.ipam.mode(), IpamMode::ClusterPool);
        assert_eq!(
            c.ipam.operator.cluster_pool_ipv4_pod_cidr_list,
            ["10.100.0.0/16".parse::<ipnet::Ipv4Net>().unwrap()]
        );
        assert_eq!(c.ipam.operator.cluster_pool_ipv4_mask_size, 24);
        assert_eq!(c.k8s_service_host.as_deref(), Some("192.168.1.10"));
        assert_eq!(c.k8s_service_port, Some(6443));
        assert_eq!(c.health_port(), 9234);
        let le = &c.leader_election;
        assert_eq!(le.lease_name, "lumen-operator-resource-lock");
        assert_eq!(
            (le.lease_duration, le.renew_deadline, le.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        let c = OperatorConfig::parse(
            "c",
            "leaderElection: {leaseName: l, leaseNamespace: lumen, leaseDuration: 3s, renewDeadline: 2s, retryPeriod: 500ms}\nhealthPort: 9300\n",
        )
        .unwrap();
        assert_eq!(c.leader_election.namespace(), "lumen");
        assert_eq!(c.leader_election.retry_period, Duration::from_millis(500));
        assert_eq!(c.health_port(), 9300);
        assert_eq!(
            OperatorConfig::parse("c", "").unwrap(),
            OperatorConfig::default()
        );
    }

    #[test]
    fn unknown_keys_and_impossible_timings_are_refused() {
        let e =
            OperatorConfig::parse("c", "ipam: {mode: cluster-pool}\nreplicas: 2\n").unwrap_err();
        assert!(e.to_string().contains("replicas"), "{e}");
        let e = OperatorConfig::parse("c", "leaderElection: {leaseDurations: 3s}\n").unwrap_err();
        assert!(e.to_string().contains("leaseDurations"), "{e}");
        let e = OperatorConfig::parse(
            "c",
            "leaderElection: {leaseDuration: 5s, renewDeadline: 5s}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("renewDeadline"), "{e}");
        let e = OperatorConfig::parse("c", "leaderElection: {retryPeriod: soon}\n").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
        let e = OperatorConfig::parse("c", "ipam: {mode: cluster-pool}\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("clusterPoolIPv4PodCIDRList is empty"),
            "{e}"
        );
        let e = OperatorConfig::parse(
            "c",
            "ipam: {mode: cluster-pool, operator: {clusterPoolIPv4PodCIDRList: 10.0.0.0/24, clusterPoolIPv4MaskSize: 16}}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("clusterPoolIPv4MaskSize"), "{e}");
        // Kubernetes mode needs no pool.
        OperatorConfig::parse("c", "ipam: {mode: kubernetes}\n").unwrap();
    }
}
