//! A lab [`Node`]: its namespace wired into the underlay, its `v1 Node` manifest, and its
//! `lumen-agent` (config file, start inside the node namespace, readiness, stop, restart).

use crate::forward::{self, Forward};
use crate::lab::Shared;
use crate::manifest::{self, Labels};
use crate::netns;
use crate::pod::Pod;
use crate::process::{self, Spawned};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Highest node number (node `n` gets `192.168.77.<n>` and `10.100.<n>.0/24`).
pub const MAX_NODES: u32 = 250;

/// `bpf.monitorAggregation` of the agent config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorAggregation {
    /// Every packet is an event.
    None,
    /// Per-connection aggregation (the default).
    Medium,
}

/// How to run a node's agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `bpf.monitorAggregation` (default `medium`).
    pub monitor_aggregation: MonitorAggregation,
    /// `bpf.monitorInterval` (default 5 s).
    pub monitor_interval: Duration,
    /// `hubble.eventBufferCapacity` (default 65535).
    pub event_buffer_capacity: u32,
    /// `bpf.eventsRingBytes` (default: the agent's, 8 MiB).
    pub events_ring_bytes: Option<u32>,
    /// Extra environment for the agent process, e.g. `RUST_LOG`.
    pub env: Vec<(String, String)>,
    /// How long to wait for both sockets to accept connections (default 15 s).
    pub ready_timeout: Duration,
    /// `hubble.tls` (default: absent, TCP is plaintext).
    pub tls: Option<AgentTls>,
    /// `kubeProxyReplacement` (default false: services are not load-balanced).
    pub kube_proxy_replacement: bool,
    /// `loadBalancer.algorithm` (default: the agent's, `random`).
    pub load_balancer_algorithm: Option<&'static str>,
    /// `l2announcements.enabled` (default false).
    pub l2_announcements: bool,
    /// `autoDirectNodeRoutes` (default false: the lab's [`crate::Lab::route_pod_cidrs`]
    /// routes instead).
    pub auto_direct_node_routes: bool,
    /// `ipam.mode: cluster-pool` with this `clusterPoolIPv4PodCIDRList` (default: none,
    /// the Node object's pod CIDR).
    pub cluster_pool: Option<&'static str>,
    /// `ipv4NativeRoutingCIDR` (default: none).
    pub native_routing_cidr: Option<&'static str>,
    /// `bpf.masquerade` (default false; needs `native_routing_cidr`).
    pub masquerade: bool,
    /// `encryption.enabled` with `encryption.type: wireguard` (default false).
    pub encryption: bool,
    /// `encryption.strictMode` with this `cidr` (default: off; needs `encryption`).
    pub encryption_strict_cidr: Option<&'static str>,
    /// `hubble.metrics.enabled` (default empty: no metrics server); when set, the agent
    /// serves `/metrics` on `127.0.0.1:9965` inside the node (see [`Node::forward_tcp`]).
    pub metrics: &'static [&'static str],
    /// The cluster's Helm values file (e.g. the seed's), given to the agent first; the
    /// lab's own config, with node-local settings and the options above, is layered on
    /// top (`--config <values> --config <agent.yaml>`). Default: none.
    pub values: Option<PathBuf>,
}

/// `hubble.tls` of a lab agent: mutual TLS on its TCP port.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentTls {
    /// The node's server certificate (PEM).
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    /// CAs client certificates must chain to.
    #[serde(rename = "clientCAFiles")]
    pub client_ca_files: Vec<PathBuf>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            monitor_aggregation: MonitorAggregation::Medium,
            monitor_interval: Duration::from_secs(5),
            event_buffer_capacity: 65535,
            events_ring_bytes: None,
            env: Vec::new(),
            ready_timeout: Duration::from_secs(15),
            tls: None,
            kube_proxy_replacement: false,
            load_balancer_algorithm: None,
            l2_announcements: false,
            auto_direct_node_routes: false,
            cluster_pool: None,
            native_routing_cidr: None,
            masquerade: false,
            encryption: false,
            encryption_strict_cidr: None,
            metrics: &[],
            values: None,
        }
    }
}

impl AgentOptions {
    /// Adds one environment variable.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

pub(crate) struct NodeInner {
    pub(crate) name: String,
    index: u32,
    pub(crate) netns: String,
    ip: Ipv4Addr,
    pod_cidr: String,
    dir: PathBuf,
    agent: Mutex<AgentSlot>,
}

#[derive(Default)]
struct AgentSlot {
    child: Option<Child>,
    /// Options of the last start, for [`Node::restart_agent`].
    options: Option<AgentOptions>,
}

/// A node handle (cheap to clone). The [`crate::Lab`] owns the node: dropping handles does nothing.
#[derive(Clone)]
pub struct Node {
    pub(crate) lab: Arc<Shared>,
    pub(crate) inner: Arc<NodeInner>,
}

impl Node {
    pub(crate) fn create(lab: &Arc<Shared>, name: &str, labels: &Labels) -> Result<Node> {
        netns::validate_node_name(name)?;
        let index = {
            let mut st = lab.lock();
            if st.torn_down {
                bail!("lab {} is torn down", lab.id);
            }
            if st.nodes.iter().any(|n| n.name == name) {
                bail!("node {name} already exists");
            }
            let index = st.next_node_index;
            st.next_node_index += 1;
            index
        };
        if index > MAX_NODES {
            bail!("a lab has at most {MAX_NODES} nodes");
        }
        let inner = Arc::new(NodeInner {
            name: name.to_string(),
            index,
            netns: netns::node_netns_name(&lab.id, name),
            ip: Ipv4Addr::new(192, 168, 77, index as u8),
            pod_cidr: format!("10.100.{index}.0/24"),
            dir: lab.dir.join(name),
            agent: Mutex::new(AgentSlot::default()),
        });
        if let Err(e) = wire_node(lab, &inner, labels) {
            let _ = lab.delete_netns(&inner.netns);
            let _ = std::fs::remove_file(lab.manifests_dir().join(manifest::node_file(name)));
            return Err(e.context(format!("adding node {name}")));
        }
        lab.lock().nodes.push(inner.clone());
        Ok(Node {
            lab: lab.clone(),
            inner,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its number `n` (1, 2, …).
    pub fn index(&self) -> u32 {
        self.inner.index
    }

    /// Its namespace.
    pub fn netns(&self) -> &str {
        &self.inner.netns
    }

    /// Its underlay address (on `eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        self.inner.ip
    }

    /// Its pod CIDR, e.g. `10.100.1.0/24`.
    pub fn pod_cidr(&self) -> &str {
        &self.inner.pod_cidr
    }

    /// `<labdir>/<node>`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The agent's local API socket (what the CNI plugin talks to).
    pub fn agent_socket(&self) -> PathBuf {
        self.inner.dir.join("agent.sock")
    }

    /// The agent's Hubble gRPC unix socket (reachable from the host).
    pub fn hubble_socket(&self) -> PathBuf {
        self.inner.dir.join("hubble.sock")
    }

    /// The agent's config file.
    pub fn agent_config_path(&self) -> PathBuf {
        self.inner.dir.join("agent.yaml")
    }

    /// The agent's stdout and stderr (appended to across restarts).
    pub fn agent_log(&self) -> PathBuf {
        self.inner.dir.join("agent.log")
    }

    /// The agent's `bpfRoot` pins directory for this node (`<bpfRoot>/<node>`).
    pub fn bpf_dir(&self) -> PathBuf {
        self.lab.bpf_root().join(&self.inner.name)
    }

    /// Writes the agent config and starts `lumen-agent` inside the node namespace (same mount
    /// namespace), output to [`Node::agent_log`]; returns once both its sockets accept
    /// connections. On early exit or timeout the error carries the log tail.
    pub fn start_agent(&self, options: AgentOptions) -> Result<()> {
        self.lab.ensure_alive()?;
        let mut slot = self.agent_slot();
        if let Some(child) = slot.child.as_mut() {
            if child.try_wait()?.is_none() {
                bail!(
                    "the agent of {} is already running (pid {})",
                    self.name(),
                    child.id()
                );
            }
        }
        let bin = process::find_binary("lumen-agent")?;
        ensure_bpffs()?;
        std::fs::create_dir_all(self.lab.bpf_root())
            .with_context(|| format!("creating {}", self.lab.bpf_root().display()))?;
        std::fs::create_dir_all(self.inner.dir.join("state"))?;
        let config = self.agent_config_yaml(&options)?;
        std::fs::write(self.agent_config_path(), config)?;
        for socket in [self.agent_socket(), self.hubble_socket()] {
            let _ = std::fs::remove_file(socket);
        }
        let log_path = self.agent_log();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut configs: Vec<PathBuf> = options.values.iter().cloned().collect();
        configs.push(self.agent_config_path());
        let args: Vec<std::ffi::OsString> = configs
            .iter()
            .flat_map(|c| ["--config".into(), c.clone().into_os_string()])
            .collect();
        {
            use std::io::Write;
            let _ = writeln!(
                log,
                "==== lab: starting {} {}",
                bin.display(),
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let mut child = netns::netns_command(self.netns(), &bin)?
            .args(&args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        slot.options = Some(options.clone());
        let deadline = Instant::now() + options.ready_timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "lumen-agent on {} exited early ({status}); last lines of {}:\n{}",
                    self.name(),
                    log_path.display(),
                    process::tail(&log_path, 40)
                );
            }
            if UnixStream::connect(self.agent_socket()).is_ok()
                && UnixStream::connect(self.hubble_socket()).is_ok()
            {
                slot.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = process::terminate(&mut child, Duration::from_secs(2));
                bail!(
                    "lumen-agent on {} not ready after {:?} ({} and {} must accept connections); last lines of {}:\n{}",
                    self.name(),
                    options.ready_timeout,
                    self.agent_socket().display(),
                    self.hubble_socket().display(),
                    log_path.display(),
                    process::tail(&log_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the agent: SIGTERM, up to 5 s to exit, then SIGKILL. `None` if none was running.
    pub fn stop_agent(&self) -> Result<Option<ExitStatus>> {
        let child = self.agent_slot().child.take();
        match child {
            Some(mut child) => Ok(Some(process::terminate(
                &mut child,
                Duration::from_secs(5),
            )?)),
            None => Ok(None),
        }
    }

    /// Stops the agent (if running) and starts it again with the options of its last start
    /// (defaults if it never ran).
    pub fn restart_agent(&self) -> Result<()> {
        let options = self.agent_slot().options.clone().unwrap_or_default();
        self.stop_agent()?;
        self.start_agent(options)
    }

    /// The agent's pid, if it is running.
    pub fn agent_pid(&self) -> Option<u32> {
        let mut slot = self.agent_slot();
        let child = slot.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Adds a pod on this node: its Namespace manifest (first time), its Pod manifest, its
    /// namespace, then CNI ADD, as a container runtime would. Needs the agent running.
    pub fn add_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Result<Pod> {
        Pod::create(self, namespace, name, &manifest::labels(labels))
    }

    /// A [`std::process::Command`] for `program` that runs inside this node's namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<std::process::Command> {
        netns::netns_command(self.netns(), program)
    }

    /// Runs `program args…` inside the node namespace and waits for it.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        process::exec_in(self.netns(), program, args)
    }

    /// Like [`Node::exec`]; a non-zero exit is an error (with stdout and stderr). Returns stdout.
    pub fn exec_ok<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        process::exec_ok_in(self.netns(), program, args)
    }

    /// Starts `program args…` inside the node namespace; output goes to a log file.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        process::spawn_in(&self.lab, self.netns(), self.name(), program, args)
    }

    /// Accepts TCP on `host_addr` in the host (root) namespace and connects each connection to
    /// `127.0.0.1:<node_port>` inside this node's namespace, copying both ways, until the
    /// returned guard (or the lab) is dropped. `host_addr` may use port 0.
    pub fn forward_tcp(&self, host_addr: impl ToSocketAddrs, node_port: u16) -> Result<Forward> {
        self.lab.ensure_alive()?;
        let fwd = forward::start(self.netns(), host_addr, node_port)?;
        self.lab.lock().forwards.push(fwd.ctl_weak());
        Ok(fwd)
    }

    fn agent_slot(&self) -> MutexGuard<'_, AgentSlot> {
        self.inner.agent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn agent_config_yaml(&self, options: &AgentOptions) -> Result<String> {
        let config = AgentConfig {
            node_name: self.name(),
            cluster: ClusterConfig {
                name: crate::lab::CLUSTER_NAME,
            },
            state_dir: self.inner.dir.join("state"),
            bpf_root: self.lab.bpf_root(),
            manifests_dir: self.lab.manifests_dir(),
            agent_socket: self.agent_socket(),
            devices: vec!["eth0"],
            kube_proxy_replacement: options.kube_proxy_replacement,
            auto_direct_node_routes: options.auto_direct_node_routes,
            ipv4_native_routing_cidr: options.native_routing_cidr,
            ipam: options.cluster_pool.map(|pool| IpamConfig {
                mode: "cluster-pool",
                operator: IpamOperator {
                    cluster_pool: vec![pool],
                },
            }),
            load_balancer: options
                .load_balancer_algorithm
                .map(|algorithm| LoadBalancerConfig { algorithm }),
            l2announcements: options
                .l2_announcements
                .then_some(L2Config { enabled: true }),
            encryption: options.encryption.then_some(EncryptionConfig {
                enabled: true,
                kind: "wireguard",
                strict_mode: options.encryption_strict_cidr.map(|cidr| StrictModeConfig {
                    enabled: true,
                    cidr,
                }),
            }),
            hubble: HubbleConfig {
                listen_address: "0.0.0.0:4244",
                socket_path: self.hubble_socket(),
                event_buffer_capacity: options.event_buffer_capacity,
                tls: options.tls.as_ref().map(|t| HubbleTls {
                    enabled: true,
                    tls: t,
                }),
                metrics: (!options.metrics.is_empty()).then_some(HubbleMetrics {
                    enabled: options.metrics,
                    listen_address: "127.0.0.1",
                }),
            },
            bpf: BpfConfig {
                monitor_aggregation: options.monitor_aggregation,
                monitor_interval: humantime::format_duration(options.monitor_interval).to_string(),
                events_ring_bytes: options.events_ring_bytes,
                masquerade: options.masquerade,
            },
        };
        Ok(serde_yaml::to_string(&config)?)
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("netns", &self.inner.netns)
            .field("ip", &self.inner.ip)
            .finish()
    }
}

/// Namespace, uplink veth into the bridge, address, forwarding, manifest.
fn wire_node(lab: &Shared, node: &NodeInner, labels: &Labels) -> Result<()> {
    if node.dir.join("hubble.sock").as_os_str().len() >= 108 {
        bail!("{} is too long for unix socket paths", node.dir.display());
    }
    std::fs::create_dir_all(node.dir.join("state"))?;
    lab.create_netns(&node.netns)?;
    let peer = format!("n{}", node.index);
    let ul = lab.underlay.as_str();
    netns::ip(&[
        "-n",
        ul,
        "link",
        "add",
        &peer,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &node.netns,
    ])?;
    netns::ip(&[
        "-n",
        ul,
        "link",
        "set",
        &peer,
        "master",
        crate::lab::BRIDGE,
        "up",
    ])?;
    let cidr = format!("{}/24", node.ip);
    netns::ip(&["-n", &node.netns, "addr", "add", &cidr, "dev", "eth0"])?;
    netns::ip(&["-n", &node.netns, "link", "set", "eth0", "up"])?;
    netns::in_netns(&node.netns, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling net.ipv4.ip_forward")
    })?;
    let yaml = manifest::node_yaml(&node.name, labels, &node.pod_cidr, node.ip);
    manifest::write_atomic(
        &lab.manifests_dir(),
        &manifest::node_file(&node.name),
        &yaml,
    )
}

/// Mounts bpffs at `/sys/fs/bpf` unless it is there already.
pub fn ensure_bpffs() -> Result<()> {
    const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
    let path = c"/sys/fs/bpf";
    // SAFETY: statfs fills the zeroed struct; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as u32 == BPF_FS_MAGIC {
        return Ok(());
    }
    let _ = std::fs::create_dir_all("/sys/fs/bpf");
    // SAFETY: plain mount(2) with valid C strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("mounting bpffs at /sys/fs/bpf (needs root)");
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentConfig<'a> {
    node_name: &'a str,
    cluster: ClusterConfig<'a>,
    state_dir: PathBuf,
    bpf_root: PathBuf,
    manifests_dir: PathBuf,
    agent_socket: PathBuf,
    devices: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    kube_proxy_replacement: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    auto_direct_node_routes: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
    #[serde(
        rename = "ipv4NativeRoutingCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    ipv4_native_routing_cidr: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_balancer: Option<LoadBalancerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    l2announcements: Option<L2Config>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption: Option<EncryptionConfig>,
    hubble: HubbleConfig<'a>,
    bpf: BpfConfig,
}

#[derive(Serialize)]
struct IpamConfig {
    mode: &'static str,
    operator: IpamOperator,
}

#[derive(Serialize)]
struct IpamOperator {
    #[serde(rename = "clusterPoolIPv4PodCIDRList")]
    cluster_pool: Vec<&'static str>,
}

#[derive(Serialize)]
struct LoadBalancerConfig {
    algorithm: &'static str,
}

#[derive(Serialize)]
struct L2Config {
    enabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EncryptionConfig {
    enabled: bool,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_mode: Option<StrictModeConfig>,
}

#[derive(Serialize)]
struct StrictModeConfig {
    enabled: bool,
    cidr: &'static str,
}

#[derive(Serialize)]
struct ClusterConfig<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HubbleConfig<'a> {
    listen_address: &'a str,
    socket_path: PathBuf,
    event_buffer_capacity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<HubbleTls<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<HubbleMetrics>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HubbleMetrics {
    enabled: &'static [&'static str],
    listen_address: &'static str,
}

#[derive(Serialize)]
struct HubbleTls<'a> {
    enabled: bool,
    #[serde(flatten)]
    tls: &'a AgentTls,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BpfConfig {
    monitor_aggregation: MonitorAggregation,
    monitor_interval: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    events_ring_bytes: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    masquerade: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn agent_config_yaml() {
        let lab = Arc::new(Shared::for_tests("lum7-0", "/tmp/lumen-lab/lum7-0"));
        let inner = Arc::new(NodeInner {
            name: "node1".into(),
            index: 1,
            netns: "lum7-0-node1".into(),
            ip: Ipv4Addr::new(192, 168, 77, 1),
            pod_cidr: "10.100.1.0/24".into(),
            dir: lab.dir.join("node1"),
            agent: Mutex::new(AgentSlot::default()),
        });
        let node = Node { lab, inner };
        let options = AgentOptions {
            monitor_aggregation: MonitorAggregation::None,
            event_buffer_capacity: 4095,
            ..AgentOptions::default()
        };
        assert_eq!(
            node.agent_config_yaml(&options).unwrap(),
            "\
nodeName: node1
cluster:
  name: lab
stateDir: /tmp/lumen-lab/lum7-0/node1/state
bpfRoot: /sys/fs/bpf/lumen/lum7-0
manifestsDir: /tmp/lumen-lab/lum7-0/manifests
agentSocket: /tmp/lumen-lab/lum7-0/node1/agent.sock
devices:
- eth0
hubble:
  listenAddress: 0.0.0.0:4244
  socketPath: /tmp/lumen-lab/lum7-0/node1/hubble.sock
  eventBufferCapacity: 4095
bpf:
  monitorAggregation: none
  monitorInterval: 5s
"
        );
        let medium = node.agent_config_yaml(&AgentOptions::default()).unwrap();
        assert!(medium.contains("monitorAggregation: medium\n"));
        assert!(medium.contains("eventBufferCapacity: 65535\n"));
        assert!(!medium.contains("metrics"));
        let metrics = node
            .agent_config_yaml(&AgentOptions {
                metrics: &["drop", "flow"],
                ..AgentOptions::default()
            })
            .unwrap();
        assert!(
            metrics.contains(
                "  metrics:\n    enabled:\n    - drop\n    - flow\n    listenAddress: 127.0.0.1\n"
            ),
            "{metrics}"
        );
    }
}
