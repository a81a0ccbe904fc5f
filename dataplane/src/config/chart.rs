//! Keys of the Helm values that describe the whole install rather than one agent
//! (`k8sServiceHost`, `hubble.relay`, `operator.replicas`, `securityContext`, ...). The
//! agent's config file takes the same values file the chart takes (the demo lab runs from
//! the seed's values), so these keys are accepted and checked here; the ones that only
//! shape Kubernetes objects are documented as such and not acted on by the agent.

use serde::Deserialize;
use std::path::PathBuf;

/// `stateSource` (Lumen's): where the agent learns pods, nodes, services and policies.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateSource {
    /// A directory of manifests (`manifestsDir`), for running outside Kubernetes. Default.
    #[default]
    Manifests,
    /// The Kubernetes API server (in-cluster config, `k8sServiceHost`/`k8sServicePort`).
    Kubernetes,
}

/// `k8sServicePort`: a port given as a number or, as in the seed's values, a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrText {
            Num(u16),
            Text(String),
        }
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(Port(n)),
            NumOrText::Text(t) => t.trim().parse().map(Port).map_err(|_| {
                serde::de::Error::custom(format!("{t:?} is not a port number (1-65535)"))
            }),
        }
    }
}

/// `bandwidthManager.*`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BandwidthManagerConfig {
    /// `bandwidthManager.enabled`: enforce pods' `kubernetes.io/egress-bandwidth`.
    /// Accepted; Lumen does not enforce it yet (Cilium's EDT scheme needs the `fq`
    /// qdisc), and `lumen status` says so. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// `bandwidthManager.bbr`: BBR congestion control for pods. Accepted, not acted on.
    #[serde(default)]
    pub bbr: bool,
}

/// `bpf.datapathMode` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DatapathMode {
    /// A veth pair per pod (the homelab's setting). Default.
    #[default]
    Veth,
    /// netkit devices: not supported (rejected with an explanation).
    Netkit,
    /// netkit in L2 mode: not supported.
    NetkitL2,
}

/// `envoy.*`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvoyConfig {
    /// `envoy.enabled`: Lumen has no L7 proxy; only `false` is accepted.
    #[serde(default)]
    pub enabled: bool,
}

/// `hubble.relay.*`: the relay Deployment (chart), or the relay the demo lab starts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RelayValues {
    /// `hubble.relay.enabled`. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `hubble.relay.replicas`. Default 1.
    #[serde(default = "one")]
    pub replicas: u32,
}

impl Default for RelayValues {
    fn default() -> Self {
        RelayValues {
            enabled: true,
            replicas: 1,
        }
    }
}

/// `hubble.ui.*`: the UI Deployment (chart), or the UI the demo lab starts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UiValues {
    /// `hubble.ui.enabled`. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `hubble.ui.replicas`. Default 1.
    #[serde(default = "one")]
    pub replicas: u32,
}

impl Default for UiValues {
    fn default() -> Self {
        UiValues {
            enabled: true,
            replicas: 1,
        }
    }
}

/// `operator.*`: the operator Deployment (chart only).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatorValues {
    /// `operator.replicas`: leader-elected replicas. Default 2.
    #[serde(default = "two")]
    pub replicas: u32,
}

impl Default for OperatorValues {
    fn default() -> Self {
        OperatorValues { replicas: 2 }
    }
}

/// `cgroup.*`: how the chart mounts the cgroup2 hierarchy (chart only).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CgroupValues {
    /// `cgroup.autoMount.*`.
    #[serde(default)]
    pub auto_mount: AutoMount,
    /// `cgroup.hostRoot`: the host's cgroup2 mount. Default `/run/cilium/cgroupv2`.
    #[serde(default = "default_cgroup_root")]
    pub host_root: PathBuf,
}

impl Default for CgroupValues {
    fn default() -> Self {
        CgroupValues {
            auto_mount: AutoMount::default(),
            host_root: default_cgroup_root(),
        }
    }
}

/// `cgroup.autoMount.*`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AutoMount {
    /// Mount cgroup2 at `hostRoot` from an init container. Default true (Talos: false,
    /// it mounts cgroup2 itself).
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for AutoMount {
    fn default() -> Self {
        AutoMount { enabled: true }
    }
}

/// `securityContext.*` (chart only): the agent's containers' capabilities.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityContextValues {
    /// `securityContext.capabilities.*`.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// `securityContext.capabilities.*`: Linux capability names without `CAP_`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    /// The agent container's capabilities.
    #[serde(default)]
    pub cilium_agent: Vec<String>,
    /// The state-cleaning init container's capabilities.
    #[serde(default)]
    pub clean_cilium_state: Vec<String>,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn default_cgroup_root() -> PathBuf {
    PathBuf::from("/run/cilium/cgroupv2")
}
