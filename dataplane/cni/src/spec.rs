//! The CNI side of the plugin's contract with the container runtime: the network
//! configuration read from stdin, the `CNI_*` environment turned into a typed
//! [`Command`], and the result / error JSON written to stdout (CNI spec 1.1, with the
//! older result shape for configurations that ask for 0.3.x / 0.4.0).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::client::ClientError;
use crate::wire::{CheckFailure, WireError};

/// The CNI versions this plugin speaks, oldest first (the answer to `VERSION`).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version used for answers when the runtime's version is not known (e.g. stdin
/// could not be parsed).
pub const FALLBACK_VERSION: &str = "1.0.0";

/// Where the agent listens when the configuration does not say.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/lumen/agent.sock";

/// Pod interface MTU when the configuration does not say.
pub const DEFAULT_MTU: u32 = 1500;

/// A parsed `major.minor.patch` CNI version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CniVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
    /// Patch.
    pub patch: u16,
}

impl CniVersion {
    /// 0.4.0: the first version with `CHECK`.
    pub const V0_4_0: CniVersion = CniVersion {
        major: 0,
        minor: 4,
        patch: 0,
    };
    /// 1.0.0: the first version whose `ips` entries carry no `version` key.
    pub const V1_0_0: CniVersion = CniVersion {
        major: 1,
        minor: 0,
        patch: 0,
    };

    /// Parses `"1.0.0"`; `None` for anything else.
    pub fn parse(text: &str) -> Option<CniVersion> {
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(CniVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether this is one of [`SUPPORTED_VERSIONS`].
    pub fn is_supported(self) -> bool {
        SUPPORTED_VERSIONS
            .iter()
            .any(|v| CniVersion::parse(v) == Some(self))
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The network configuration the runtime passes on stdin.
///
/// Unknown keys are ignored, as the spec asks; the standard runtime keys (`args`,
/// `runtimeConfig`, `capabilities`, `dns`) are accepted and unused, `prevResult` is kept
/// for `CHECK`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The CNI version the runtime speaks (validated against [`SUPPORTED_VERSIONS`]).
    pub cni_version: String,
    /// The network name.
    pub name: String,
    /// The plugin type (`lumen-cni`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The agent's local API socket.
    #[serde(default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    /// MTU of both veth ends.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// If set, one line per invocation is appended here.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// The result of the previous `ADD`, given for `CHECK` (and `DEL`).
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// A standard `ipam` section: rejected, the agent allocates addresses.
    #[serde(default)]
    pub ipam: Option<serde_json::Value>,
}

fn default_agent_socket() -> PathBuf {
    PathBuf::from(DEFAULT_AGENT_SOCKET)
}

fn default_mtu() -> u32 {
    DEFAULT_MTU
}

impl NetConf {
    /// Parses and validates the stdin bytes.
    ///
    /// Broken JSON is code 6, an unsupported `cniVersion` code 1, keys of the wrong
    /// shape or failed validations code 7, an `ipam` section code 2.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| CniError::Decode { source })?;
        let version = match value.get("cniVersion") {
            Some(serde_json::Value::String(v)) => v.clone(),
            Some(_) => {
                return Err(CniError::InvalidConfig {
                    field: "cniVersion",
                    problem: "must be a string like \"1.0.0\"".into(),
                })
            }
            None => {
                return Err(CniError::InvalidConfig {
                    field: "cniVersion",
                    problem: "is missing".into(),
                })
            }
        };
        match CniVersion::parse(&version) {
            Some(v) if v.is_supported() => {}
            _ => return Err(CniError::IncompatibleVersion { version }),
        }
        let conf: NetConf = serde_json::from_value(value)
            .map_err(|source| CniError::InvalidConfigShape { source })?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(CniError::InvalidConfig {
                field: "name",
                problem: format!(
                    "{:?} is not a valid network name (letters, digits, '_', '.', '-')",
                    self.name
                ),
            });
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(CniError::InvalidConfig {
                field: "mtu",
                problem: format!("{} is outside 68..=65535", self.mtu),
            });
        }
        if !self.agent_socket.is_absolute() {
            return Err(CniError::InvalidConfig {
                field: "agentSocket",
                problem: format!("{} is not an absolute path", self.agent_socket.display()),
            });
        }
        if let Some(log) = &self.log_file {
            if !log.is_absolute() {
                return Err(CniError::InvalidConfig {
                    field: "logFile",
                    problem: format!("{} is not an absolute path", log.display()),
                });
            }
        }
        if self.ipam.is_some() {
            return Err(CniError::UnsupportedField {
                field: "ipam",
                why: "lumen-cni gets addresses from lumen-agent's IPAM; remove the ipam section",
            });
        }
        Ok(())
    }

    /// The parsed `cniVersion` (validated by [`NetConf::parse`]).
    pub fn version(&self) -> CniVersion {
        CniVersion::parse(&self.cni_version).unwrap_or(CniVersion::V1_0_0)
    }
}

/// Best effort: the `cniVersion` of stdin even when the rest is unusable, so an error
/// can be answered in the runtime's version.
pub fn sniff_version(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Sniff {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    let sniff: Sniff = serde_json::from_slice(bytes).ok()?;
    CniVersion::parse(&sniff.cni_version)
        .filter(|v| v.is_supported())
        .map(|_| sniff.cni_version)
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// The pairs, in order.
    pub pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;...`; empty segments are skipped.
    pub fn parse(text: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for segment in text.split(';').filter(|s| !s.is_empty()) {
            let Some((key, value)) = segment.split_once('=') else {
                return Err(CniError::InvalidEnv {
                    var: "CNI_ARGS",
                    problem: format!("{segment:?} is not KEY=VALUE"),
                });
            };
            pairs.push((key.to_string(), value.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value for `key`, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `(K8S_POD_NAMESPACE, K8S_POD_NAME)`, required for `ADD`.
    pub fn pod(&self) -> Result<(String, String), CniError> {
        match (self.get("K8S_POD_NAMESPACE"), self.get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) => Ok((ns.to_string(), name.to_string())),
            _ => Err(CniError::MissingPodIdentity),
        }
    }
}

/// The pod interface an `ADD` or `CHECK` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_ARGS`.
    pub args: CniArgs,
}

/// The pod interface a `DEL` is about; its namespace may already be gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelTarget {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`, when the runtime still has one.
    pub netns: Option<PathBuf>,
    /// `CNI_ARGS`.
    pub args: CniArgs,
}

/// What the runtime asked for, from the `CNI_*` environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ADD`.
    Add(Target),
    /// `DEL`.
    Del(DelTarget),
    /// `CHECK`.
    Check(Target),
    /// `VERSION`.
    Version,
    /// `STATUS` (1.1): is the plugin ready for `ADD`s?
    Status,
    /// `GC` (1.1): garbage-collect stale attachments.
    Gc,
}

impl Command {
    /// The `CNI_COMMAND` spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Add(_) => "ADD",
            Command::Del(_) => "DEL",
            Command::Check(_) => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Reads the `CNI_*` variables through `env` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
        let required = |var: &'static str| -> Result<String, CniError> {
            env(var)
                .filter(|v| !v.is_empty())
                .ok_or(CniError::MissingEnv { var })
        };
        let command = required("CNI_COMMAND")?;
        let args = || CniArgs::parse(&env("CNI_ARGS").unwrap_or_default());
        let container_id = || {
            let id = required("CNI_CONTAINERID")?;
            validate_container_id(&id)?;
            Ok::<_, CniError>(id)
        };
        let ifname = || {
            let name = required("CNI_IFNAME")?;
            validate_ifname(&name)?;
            Ok::<_, CniError>(name)
        };
        let target = || -> Result<Target, CniError> {
            Ok(Target {
                container_id: container_id()?,
                ifname: ifname()?,
                netns: PathBuf::from(required("CNI_NETNS")?),
                args: args()?,
            })
        };
        match command.as_str() {
            "ADD" => Ok(Command::Add(target()?)),
            "CHECK" => Ok(Command::Check(target()?)),
            "DEL" => Ok(Command::Del(DelTarget {
                container_id: container_id()?,
                ifname: ifname()?,
                netns: env("CNI_NETNS")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from),
                args: args()?,
            })),
            "VERSION" => Ok(Command::Version),
            "STATUS" => Ok(Command::Status),
            "GC" => Ok(Command::Gc),
            other => Err(CniError::InvalidEnv {
                var: "CNI_COMMAND",
                problem: format!("{other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
            }),
        }
    }
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(CniError::InvalidEnv {
            var: "CNI_CONTAINERID",
            problem: format!("{id:?} must be letters, digits, '_', '.', '-'"),
        });
    }
    Ok(())
}

fn validate_ifname(name: &str) -> Result<(), CniError> {
    // The kernel's own rule (dev_valid_name): IFNAMSIZ-1 bytes, no '/', ':' or whitespace.
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if !ok {
        return Err(CniError::InvalidEnv {
            var: "CNI_IFNAME",
            problem: format!(
                "{name:?} is not a valid interface name (1-15 chars, no '/', ':' or spaces)"
            ),
        });
    }
    Ok(())
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path for interfaces inside the pod; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` / `"6"`: only in results for versions before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `ip/prefix`.
    pub address: IpNet,
    /// The gateway for this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings of a result (lumen-cni leaves DNS to the kubelet: always empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The success result of `ADD` (CNI 1.0 shape; see [`CniResult::for_version`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The version this result is written in.
    pub cni_version: String,
    /// Interfaces created.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the pod.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Rewrites the result for the runtime's `cniVersion`: before 1.0.0 each `ips`
    /// entry carries `"version": "4"|"6"`.
    pub fn for_version(mut self, version: CniVersion) -> CniResult {
        self.cni_version = version.to_string();
        for ip in &mut self.ips {
            ip.version = if version < CniVersion::V1_0_0 {
                Some(
                    if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    }
                    .to_string(),
                )
            } else {
                None
            };
        }
        self
    }
}

/// The answer to `VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version of this answer.
    pub cni_version: String,
    /// Every version this plugin speaks.
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// The answer, written in `requested` if supported, else in the newest version.
    pub fn new(requested: Option<&str>) -> VersionInfo {
        let latest = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1];
        let cni_version = requested
            .filter(|v| CniVersion::parse(v).is_some_and(CniVersion::is_supported))
            .unwrap_or(latest);
        VersionInfo {
            cni_version: cni_version.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// The error JSON printed on stdout (with a non-zero exit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    /// The runtime's version (or [`FALLBACK_VERSION`]).
    pub cni_version: String,
    /// A well-known CNI code (1-99) or one of lumen-cni's (100+).
    pub code: u32,
    /// What went wrong, one line.
    pub msg: String,
    /// More: underlying causes, what to do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ErrorReply {
    /// Builds the reply for `error`, with its cause chain in `details`.
    pub fn from_error(cni_version: &str, error: &CniError) -> ErrorReply {
        let mut details = Vec::new();
        let mut previous = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let text = cause.to_string();
            // Many messages already quote their cause; say each thing once.
            if !previous.contains(&text) {
                details.push(text.clone());
            }
            previous = text;
            source = cause.source();
        }
        ErrorReply {
            cni_version: cni_version.to_string(),
            code: error.code(),
            msg: error.to_string(),
            details: details.join(": "),
        }
    }
}

/// CNI's well-known error codes and lumen-cni's own (100+).
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// lumen: creating or configuring the veth pair failed.
    pub const WIRING_FAILED: u32 = 100;
    /// lumen: the agent refused the request (its message says why).
    pub const AGENT_REFUSED: u32 = 101;
    /// lumen: the agent's answer did not fit the protocol.
    pub const AGENT_PROTOCOL: u32 = 102;
    /// lumen: CHECK found the pod's wiring differs from what was set up.
    pub const CHECK_FAILED: u32 = 103;
}

/// Everything that makes an invocation fail, each with its CNI code ([`CniError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The runtime's `cniVersion` is not one we speak.
    #[error("cniVersion {version:?} is not supported; lumen-cni speaks 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")]
    IncompatibleVersion {
        /// What the runtime sent.
        version: String,
    },
    /// CHECK asked of a configuration older than 0.4.0 (CHECK did not exist then).
    #[error("CHECK needs cniVersion 0.4.0 or newer, the configuration says {version}")]
    CheckNeedsNewerVersion {
        /// What the configuration says.
        version: String,
    },
    /// A configuration key lumen-cni deliberately does not support.
    #[error("network config key {field:?} is not supported: {why}")]
    UnsupportedField {
        /// The key.
        field: &'static str,
        /// Why, and what to do.
        why: &'static str,
    },
    /// The pod's network namespace does not exist.
    #[error("the pod network namespace {netns} does not exist (container gone?)")]
    UnknownContainer {
        /// `CNI_NETNS`.
        netns: PathBuf,
    },
    /// A required `CNI_*` variable is absent.
    #[error("environment variable {var} is required but not set")]
    MissingEnv {
        /// The variable.
        var: &'static str,
    },
    /// A `CNI_*` variable has an unusable value.
    #[error("environment variable {var} is invalid: {problem}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `ADD` without the Kubernetes pod identity.
    #[error("CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME: lumen-cni registers every endpoint under its pod (the kubelet's CRI runtime sets them)")]
    MissingPodIdentity,
    /// Reading stdin failed.
    #[error("reading the network config from stdin failed")]
    Stdin(#[source] std::io::Error),
    /// Stdin is not JSON.
    #[error("the network config on stdin is not valid JSON")]
    Decode {
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Stdin is JSON but a key has the wrong shape or is missing.
    #[error("the network config on stdin does not have the expected keys")]
    InvalidConfigShape {
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration value fails validation.
    #[error("network config key {field:?} {problem}")]
    InvalidConfig {
        /// The key.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The agent could not be reached or did not answer in time.
    #[error("lumen-agent is not reachable, try again later")]
    AgentUnavailable(#[source] ClientError),
    /// Talking to the agent failed in a way retrying will not fix.
    #[error("talking to lumen-agent failed")]
    AgentIo(#[source] ClientError),
    /// The agent's answer was not a valid protocol response.
    #[error("lumen-agent sent an invalid answer")]
    AgentProtocol(#[source] ClientError),
    /// The agent answered with a response that does not fit the request.
    #[error("lumen-agent answered {request} with an unexpected {answer} response")]
    AgentUnexpected {
        /// The request sent.
        request: &'static str,
        /// The response kind received.
        answer: String,
    },
    /// The agent refused the request.
    #[error("lumen-agent refused {request}: {message}")]
    AgentRefused {
        /// The request sent.
        request: &'static str,
        /// The agent's reason.
        message: String,
    },
    /// The pod namespace path exists but is not usable.
    #[error("CNI_NETNS is invalid")]
    BadNetns(#[source] WireError),
    /// Creating or configuring the veth pair failed.
    #[error("wiring the pod interface failed")]
    Wire(#[source] WireError),
    /// CHECK: the agent does not know the attachment.
    #[error(
        "CHECK failed: lumen-agent has no endpoint for container {container_id} interface {ifname}"
    )]
    CheckUnknownEndpoint {
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
    /// CHECK: `prevResult` disagrees with what the agent recorded.
    #[error("CHECK failed: prevResult lists {listed}, lumen-agent recorded {recorded}")]
    CheckPrevResult {
        /// What prevResult says.
        listed: String,
        /// What the agent says.
        recorded: IpAddr,
    },
    /// CHECK: the live wiring differs from what the agent recorded at ADD.
    #[error("CHECK failed: the agent recorded {what} {recorded}, the node has {live}")]
    CheckAgentMismatch {
        /// Which property.
        what: &'static str,
        /// The agent's record.
        recorded: String,
        /// What is live.
        live: String,
    },
    /// CHECK without a usable `prevResult` (the runtime must pass the ADD result).
    #[error("CHECK needs prevResult with the pod's address and gateway: {problem}")]
    CheckPrevResultMissing {
        /// What is missing.
        problem: &'static str,
    },
    /// CHECK: the live interfaces differ from what was set up.
    #[error("CHECK failed: {0}")]
    CheckWiring(CheckFailure),
    /// STATUS: the agent is not reachable.
    #[error("lumen-agent is not reachable: pods cannot be added on this node now")]
    NotAvailable(#[source] ClientError),
}

impl CniError {
    /// The CNI error code for this failure.
    pub fn code(&self) -> u32 {
        use codes::*;
        match self {
            CniError::IncompatibleVersion { .. } | CniError::CheckNeedsNewerVersion { .. } => {
                INCOMPATIBLE_VERSION
            }
            CniError::UnsupportedField { .. } => UNSUPPORTED_FIELD,
            CniError::UnknownContainer { .. } => UNKNOWN_CONTAINER,
            CniError::MissingEnv { .. }
            | CniError::InvalidEnv { .. }
            | CniError::MissingPodIdentity
            | CniError::BadNetns(_) => INVALID_ENV,
            CniError::Stdin(_) | CniError::AgentIo(_) => IO_FAILURE,
            CniError::Decode { .. } => DECODE_FAILURE,
            CniError::InvalidConfigShape { .. }
            | CniError::InvalidConfig { .. }
            | CniError::CheckPrevResultMissing { .. } => INVALID_CONFIG,
            CniError::AgentUnavailable(_) => TRY_AGAIN_LATER,
            CniError::NotAvailable(_) => PLUGIN_NOT_AVAILABLE,
            CniError::Wire(_) => WIRING_FAILED,
            CniError::AgentRefused { .. } => AGENT_REFUSED,
            CniError::AgentProtocol(_) | CniError::AgentUnexpected { .. } => AGENT_PROTOCOL,
            CniError::CheckUnknownEndpoint { .. }
            | CniError::CheckPrevResult { .. }
            | CniError::CheckAgentMismatch { .. }
            | CniError::CheckWiring(_) => CHECK_FAILED,
        }
    }

    /// Maps a client failure: unreachable / timed out → try again later (11), other
    /// I/O → 5, garbage answers → 102.
    pub fn from_client(error: ClientError) -> CniError {
        if error.is_retryable() {
            CniError::AgentUnavailable(error)
        } else if matches!(error, ClientError::BadAnswer { .. }) {
            CniError::AgentProtocol(error)
        } else {
            CniError::AgentIo(error)
        }
    }

    /// Maps a wiring failure: a missing namespace is "unknown container" (3), a path that
    /// is not a usable namespace is "invalid env" (4), anything else 100.
    pub fn from_wire(error: WireError) -> CniError {
        match error {
            WireError::NetnsMissing { path } => CniError::UnknownContainer { netns: path },
            e @ (WireError::NotANetns { .. } | WireError::NodeNetns { .. }) => {
                CniError::BadNetns(e)
            }
            WireError::Check(failure) => CniError::CheckWiring(failure),
            other => CniError::Wire(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    const GOOD: &[u8] = br#"{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni"}"#;

    #[test]
    fn parses_minimal_config_with_defaults() {
        let conf = NetConf::parse(GOOD).unwrap();
        assert_eq!(conf.name, "lumen");
        assert_eq!(conf.plugin_type, "lumen-cni");
        assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(conf.mtu, 1500);
        assert_eq!(conf.log_file, None);
        assert_eq!(conf.version(), CniVersion::V1_0_0);
    }

    #[test]
    fn accepts_runtime_keys_and_keeps_prev_result() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"lumen","type":"lumen-cni",
                "agentSocket":"/run/x.sock","mtu":9000,"logFile":"/var/log/lumen-cni.log",
                "args":{"cni":{"labels":[]}},"runtimeConfig":{"portMappings":[]},
                "capabilities":{"portMappings":true},"dns":{"nameservers":["10.96.0.10"]},
                "prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.5/32"}]},
                "somethingElse":42}"#,
        )
        .unwrap();
        assert_eq!(conf.agent_socket, PathBuf::from("/run/x.sock"));
        assert_eq!(conf.mtu, 9000);
        assert_eq!(conf.log_file, Some(PathBuf::from("/var/log/lumen-cni.log")));
        assert!(conf.prev_result.is_some());
    }

    #[test]
    fn broken_json_is_code_6() {
        for bytes in [
            &b"{\"cniVersion\":\"1.0.0\","[..],
            b"not json",
            b"",
            b"\xff\xfe",
        ] {
            let err = NetConf::parse(bytes).unwrap_err();
            assert_eq!(err.code(), 6, "{bytes:?}: {err}");
        }
    }

    #[test]
    fn unsupported_version_is_code_1() {
        for v in ["0.2.0", "2.0.0", "1.0", "banana"] {
            let bytes = format!(r#"{{"cniVersion":"{v}","name":"n","type":"lumen-cni"}}"#);
            let err = NetConf::parse(bytes.as_bytes()).unwrap_err();
            assert_eq!(err.code(), 1, "{v}: {err}");
        }
    }

    #[test]
    fn invalid_config_is_code_7_and_ipam_code_2() {
        let cases: &[(&[u8], u32)] = &[
            (br#"{"name":"n","type":"t"}"#, 7),
            (br#"{"cniVersion":1,"name":"n","type":"t"}"#, 7),
            (br#"{"cniVersion":"1.0.0","type":"t"}"#, 7),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":"big"}"#,
                7,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":20}"#,
                7,
            ),
            (br#"{"cniVersion":"1.0.0","name":"bad name","type":"t"}"#, 7),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"t","agentSocket":"rel.sock"}"#,
                7,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"host-local"}}"#,
                2,
            ),
        ];
        for (bytes, code) in cases {
            let err = NetConf::parse(bytes).unwrap_err();
            assert_eq!(
                err.code(),
                *code,
                "{}: {err}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn missing_env_is_code_4() {
        let err = Command::from_env(&env(&[])).unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("CNI_COMMAND"), "{err}");

        let err = Command::from_env(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("CNI_NETNS"), "{err}");

        for (var, value) in [
            ("CNI_IFNAME", "this-name-is-too-long"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_COMMAND", "FROB"),
            ("CNI_ARGS", "K8S_POD_NAME"),
        ] {
            let mut vars = vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/run/netns/x"),
            ];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let err = Command::from_env(&env(&vars)).unwrap_err();
            assert_eq!(err.code(), 4, "{var}={value}: {err}");
        }
    }

    #[test]
    fn env_parses_into_typed_commands() {
        let cmd = Command::from_env(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=client;K8S_POD_INFRA_CONTAINER_ID=abc123",
            ),
        ]))
        .unwrap();
        let Command::Add(target) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(target.container_id, "abc123");
        assert_eq!(target.ifname, "eth0");
        assert_eq!(target.netns, PathBuf::from("/run/netns/x"));
        assert_eq!(
            target.args.pod().unwrap(),
            ("demo".to_string(), "client".to_string())
        );

        let del = Command::from_env(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert!(matches!(del, Command::Del(DelTarget { netns: None, .. })));
        assert_eq!(
            Command::from_env(&env(&[("CNI_COMMAND", "VERSION")])).unwrap(),
            Command::Version
        );
    }

    #[test]
    fn missing_pod_identity_is_code_4() {
        let args = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo").unwrap();
        let err = args.pod().unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("K8S_POD_NAME"));
    }

    #[test]
    fn result_json_follows_the_requested_version() {
        let result = CniResult {
            cni_version: String::new(),
            interfaces: vec![
                Interface {
                    name: "lxc0123".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    sandbox: Some("/run/netns/x".into()),
                },
            ],
            ips: vec![IpConfig {
                version: None,
                address: "10.0.0.5/32".parse().unwrap(),
                gateway: Some("10.0.0.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.0.0.1".parse().unwrap()),
            }],
            dns: Dns::default(),
        };
        let v1 = serde_json::to_value(result.clone().for_version(CniVersion::V1_0_0)).unwrap();
        assert_eq!(
            v1,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "lxc0123", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"}
                ],
                "ips": [{"address": "10.0.0.5/32", "gateway": "10.0.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
                "dns": {}
            })
        );
        let old =
            serde_json::to_value(result.for_version(CniVersion::parse("0.3.1").unwrap())).unwrap();
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
    }

    #[test]
    fn version_and_error_json() {
        let v = serde_json::to_value(VersionInfo::new(Some("0.4.0"))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "0.4.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            })
        );
        assert_eq!(VersionInfo::new(Some("9.9.9")).cni_version, "1.1.0");

        let err = NetConf::parse(b"{oops").unwrap_err();
        let reply = serde_json::to_value(ErrorReply::from_error("1.0.0", &err)).unwrap();
        assert_eq!(reply["code"], 6);
        assert_eq!(reply["cniVersion"], "1.0.0");
        assert!(reply["msg"].as_str().unwrap().contains("not valid JSON"));
        assert!(!reply["details"].as_str().unwrap().is_empty());
    }

    #[test]
    fn sniffs_version_from_otherwise_bad_config() {
        assert_eq!(
            sniff_version(br#"{"cniVersion":"0.4.0","mtu":"x"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(sniff_version(b"{broken"), None);
        assert_eq!(sniff_version(br#"{"cniVersion":"7.0.0"}"#), None);
    }
}
