//! The namespace lab: a Kubernetes-like cluster on one machine, for Lumen's end-to-end tests
//! and demo.
//!
//! - an L2 underlay: a Linux bridge in its own network namespace (never the host's);
//! - nodes: one namespace each, `eth0` a veth into the bridge, address `192.168.77.<n>/24`,
//!   pod CIDR `10.100.<n>.0/24`, and a `lumen-agent` started inside it;
//! - pods: one namespace each, wired by the real `lumen-cni` plugin, called as a runtime would;
//! - a state source: `v1` Node, Namespace and Pod manifests in `<labdir>/manifests/`.
//!
//! Everything is removed when the [`Lab`] is dropped, also during a panic; labs of crashed
//! runs are swept by the next [`Lab::new`]. Needs root.
//!
//! ```no_run
//! use lumen_integration::{traffic_bin, AgentOptions, Lab};
//! # fn main() -> anyhow::Result<()> {
//! let lab = Lab::new("example")?;
//! let node1 = lab.add_node("node1")?;
//! node1.start_agent(AgentOptions::default())?;
//! let server = node1.add_pod("demo", "server", &[("app", "server")])?;
//! let client = node1.add_pod("demo", "client", &[("app", "client")])?;
//! let mut serving = server.spawn(traffic_bin()?, ["serve", "--tcp", "8080"])?;
//! serving.wait_for_output("listening", std::time::Duration::from_secs(5))?;
//! let to = format!("{}:8080", server.ip());
//! println!("{}", client.exec_ok(traffic_bin()?, ["tcp", "--to", &to])?);
//! # Ok(()) }
//! ```
//!
//! Binaries are found in `$LUMEN_BIN_DIR`, else next to the running executable, else in
//! `<workspace>/target/debug` (see [`bin_dirs`]).

pub mod bench;
pub mod browser;
mod forward;
pub mod hubble;
pub mod l2;
mod lab;
pub mod manifest;
pub mod netns;
mod node;
mod pod;
pub mod policy;
mod process;
pub mod relay;
pub mod ui;

pub use forward::Forward;
pub use lab::{
    install_interrupt_handler, interrupted, Lab, BPF_BASE, BRIDGE, CLUSTER_NAME, DEFAULT_LAB_BASE,
};
pub use node::{ensure_bpffs, AgentOptions, AgentTls, MonitorAggregation, Node, MAX_NODES};
pub use pod::{cni_args, cni_config, result_ip, CniCommand, CniError, Pod, CNI_TIMEOUT};
pub use process::{bin_dirs, find_binary, traffic_bin, Spawned};
pub use relay::{Relay, RelayOptions};
pub use ui::Ui;
