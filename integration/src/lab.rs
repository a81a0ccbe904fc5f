//! The [`Lab`]: one Kubernetes-like cluster on this machine (an underlay bridge in its own
//! namespace, nodes, pods, one agent per node, a shared manifests directory) and the teardown
//! that removes all of it, also while unwinding from a panic, and also for labs left behind by
//! crashed runs ([`Lab::sweep_stale`]).

use crate::forward::ForwardCtl;
use crate::manifest::{self, Labels};
use crate::netns;
use crate::node::{Node, NodeInner};
use crate::pod::PodRecord;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// Default parent of lab directories; `$LUMEN_LAB_DIR` replaces it.
pub const DEFAULT_LAB_BASE: &str = "/tmp/lumen-lab";
/// Parent of the labs' bpffs pin directories (`<this>/<lab id>/<node>`).
pub const BPF_BASE: &str = "/sys/fs/bpf/lumen";
/// Name of the bridge in the underlay namespace.
pub const BRIDGE: &str = "br0";
/// The cluster name given to every agent.
pub const CLUSTER_NAME: &str = "lab";

static NEXT_LAB: AtomicU64 = AtomicU64::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What a lab's handles ([`Node`], [`crate::Pod`], [`crate::Spawned`], …) share.
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) underlay: String,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) torn_down: bool,
    seq: u64,
    pub(crate) next_node_index: u32,
    /// Every namespace made and not yet deleted, in creation order.
    netns: Vec<String>,
    pub(crate) nodes: Vec<Arc<NodeInner>>,
    /// Live pods by sequence number; whoever removes one tears it down.
    pub(crate) pods: BTreeMap<u64, PodRecord>,
    /// Pids of live [`crate::Spawned`] children, by key.
    children: BTreeMap<u64, u32>,
    pub(crate) forwards: Vec<Weak<ForwardCtl>>,
    /// Kubernetes namespaces whose manifest exists.
    pub(crate) namespaces: BTreeSet<String>,
}

impl Shared {
    /// A lab state with nothing made, for unit tests of rendering.
    #[cfg(test)]
    pub(crate) fn for_tests(id: &str, dir: &str) -> Shared {
        Shared {
            id: id.to_string(),
            name: "test".to_string(),
            dir: PathBuf::from(dir),
            underlay: netns::underlay_netns_name(id),
            state: Mutex::new(State::default()),
        }
    }

    /// The state, also after a panic elsewhere poisoned the lock (teardown must still run).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ensure_alive(&self) -> Result<()> {
        if self.lock().torn_down {
            bail!("lab {} is torn down", self.id);
        }
        Ok(())
    }

    /// A number unique within this lab.
    pub(crate) fn next_seq(&self) -> u64 {
        let mut st = self.lock();
        st.seq += 1;
        st.seq
    }

    pub(crate) fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    pub(crate) fn bpf_root(&self) -> PathBuf {
        Path::new(BPF_BASE).join(&self.id)
    }

    pub(crate) fn register_child(&self, pid: u32) -> u64 {
        let key = self.next_seq();
        self.lock().children.insert(key, pid);
        key
    }

    pub(crate) fn unregister_child(&self, key: u64) {
        self.lock().children.remove(&key);
    }

    /// Creates namespace `name`, recorded first so teardown removes it even if creation fails halfway.
    pub(crate) fn create_netns(&self, name: &str) -> Result<()> {
        self.lock().netns.push(name.to_string());
        netns::create_netns(name)
    }

    /// Deletes namespace `name` (killing what runs in it) and forgets it.
    pub(crate) fn delete_netns(&self, name: &str) -> Result<()> {
        let result = netns::delete_netns(name);
        if result.is_ok() {
            self.lock().netns.retain(|n| n != name);
        }
        result
    }

    /// Writes the manifest for Kubernetes namespace `name` unless it exists.
    pub(crate) fn ensure_namespace(&self, name: &str) -> Result<()> {
        if !self.lock().namespaces.insert(name.to_string()) {
            return Ok(());
        }
        let yaml = manifest::namespace_yaml(name, &Labels::new());
        let written = manifest::write_atomic(
            &self.manifests_dir(),
            &manifest::namespace_file(name),
            &yaml,
        );
        if written.is_err() {
            self.lock().namespaces.remove(name);
        }
        written
    }
}

/// One lab. Everything it makes lives in namespaces named `<id>-…`, in its directory, and in
/// `/sys/fs/bpf/lumen/<id>`; dropping it removes all of that (set `LUMEN_LAB_KEEP=1` to keep
/// the directory, with its logs and manifests, for a post-mortem).
pub struct Lab {
    shared: Arc<Shared>,
}

impl Lab {
    /// Sweeps stale labs, then makes a new one: its directory (`$LUMEN_LAB_DIR` or
    /// `/tmp/lumen-lab`, then `/<id>`) with `manifests/`, and the underlay namespace `<id>-ul`
    /// holding bridge `br0`. `name` is a label for humans (it goes to `<dir>/lab.txt`).
    pub fn new(name: &str) -> Result<Lab> {
        if let Err(e) = Lab::sweep_stale() {
            eprintln!("lab: sweeping stale labs failed (going on): {e:#}");
        }
        let id = netns::lab_id(std::process::id(), NEXT_LAB.fetch_add(1, Ordering::Relaxed));
        // Leftovers under our own id can only come from a dead process that had our pid.
        sweep_lab(&id);
        let dir = lab_base().join(&id);
        // Unix socket paths (`<dir>/<node>/hubble.sock`, node names up to 20) must fit in 108 bytes.
        if dir.as_os_str().len() + 1 + 20 + "/hubble.sock".len() >= 108 {
            bail!(
                "lab directory {} is too long for unix socket paths; set a shorter LUMEN_LAB_DIR",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir.join("manifests"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let lab = Lab {
            shared: Arc::new(Shared {
                underlay: netns::underlay_netns_name(&id),
                id,
                name: name.to_string(),
                dir,
                state: Mutex::new(State {
                    next_node_index: 1,
                    ..State::default()
                }),
            }),
        };
        // From here on an error drops `lab`, which removes what was made.
        let s = &lab.shared;
        let note = format!(
            "lab {}\nname {}\npid {}\n",
            s.id,
            s.name,
            std::process::id()
        );
        std::fs::write(s.dir.join("lab.txt"), note)?;
        s.create_netns(&s.underlay)?;
        netns::ip(&["-n", &s.underlay, "link", "add", BRIDGE, "type", "bridge"])?;
        netns::ip(&["-n", &s.underlay, "link", "set", BRIDGE, "up"])?;
        Ok(lab)
    }

    /// Removes namespaces, lab directories and bpffs pin directories left by labs whose process
    /// is gone (killing whatever still runs in those namespaces). Returns the swept lab ids.
    pub fn sweep_stale() -> Result<Vec<String>> {
        let mut stale = BTreeSet::new();
        let mut consider = |name: &str| {
            if let Some((id, pid)) = netns::parse_lab_id(name) {
                if !netns::pid_alive(pid) {
                    stale.insert(id.to_string());
                }
            }
        };
        netns::list_netns().iter().for_each(|n| consider(n));
        for base in [lab_base(), PathBuf::from(BPF_BASE)] {
            if let Ok(entries) = std::fs::read_dir(&base) {
                for entry in entries.flatten() {
                    consider(&entry.file_name().to_string_lossy());
                }
            }
        }
        for id in &stale {
            sweep_lab(id);
        }
        Ok(stale.into_iter().collect())
    }

    /// The lab id (`lum<pid>-<n>`), prefix of all its namespace names.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The label given to [`Lab::new`].
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The state source: the manifests directory all agents read.
    pub fn manifests_dir(&self) -> PathBuf {
        self.shared.manifests_dir()
    }

    /// `/sys/fs/bpf/lumen/<id>`: the agents' `bpfRoot`.
    pub fn bpf_root(&self) -> PathBuf {
        self.shared.bpf_root()
    }

    /// The underlay namespace (holding bridge [`BRIDGE`]).
    pub fn underlay_netns(&self) -> &str {
        &self.shared.underlay
    }

    /// Every namespace the lab made that still exists.
    pub fn netns_names(&self) -> Vec<String> {
        self.shared.lock().netns.clone()
    }

    /// Adds a node (see [`Lab::add_node_with_labels`]).
    pub fn add_node(&self, name: &str) -> Result<Node> {
        self.add_node_with_labels(name, &[])
    }

    /// Adds node number `n` (1, 2, …): namespace `<id>-<name>` whose `eth0` is a veth into the
    /// underlay bridge with address `192.168.77.<n>/24`, `lo` up, IPv4 forwarding on, and its
    /// `v1 Node` manifest (pod CIDR `10.100.<n>.0/24`, extra `labels`). No agent yet.
    pub fn add_node_with_labels(&self, name: &str, labels: &[(&str, &str)]) -> Result<Node> {
        Node::create(&self.shared, name, &manifest::labels(labels))
    }

    /// The lab's nodes, in creation order.
    pub fn nodes(&self) -> Vec<Node> {
        let inners = self.shared.lock().nodes.clone();
        inners
            .into_iter()
            .map(|inner| Node {
                lab: self.shared.clone(),
                inner,
            })
            .collect()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.nodes().into_iter().find(|n| n.name() == name)
    }

    /// Blocks until SIGINT or SIGTERM (see [`install_interrupt_handler`]); the caller then drops
    /// the lab, which tears it down. A second signal exits at once.
    pub fn run_until_interrupted(&self) {
        install_interrupt_handler();
        while !interrupted() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn teardown(&self) {
        let s = &self.shared;
        let (forwards, children, pods, nodes) = {
            let mut st = s.lock();
            if st.torn_down {
                return;
            }
            st.torn_down = true;
            (
                std::mem::take(&mut st.forwards),
                std::mem::take(&mut st.children),
                std::mem::take(&mut st.pods),
                st.nodes.clone(),
            )
        };
        for ctl in forwards.iter().filter_map(Weak::upgrade) {
            ctl.stop();
        }
        for pid in children.values() {
            // SAFETY: the Spawned guard that owns this pid has not reaped it (it unregisters first).
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        // Pods go first, while the agents still answer the CNI plugin's DEL.
        for (_, pod) in pods.into_iter().rev() {
            pod.teardown();
        }
        let node_handles: Vec<Node> = nodes
            .into_iter()
            .map(|inner| Node {
                lab: s.clone(),
                inner,
            })
            .collect();
        if std::thread::panicking() {
            for node in &node_handles {
                let log = node.agent_log();
                if log.exists() {
                    eprintln!(
                        "lab {}: last lines of {}:\n{}",
                        s.id,
                        log.display(),
                        crate::process::tail(&log, 30)
                    );
                }
            }
        }
        for node in &node_handles {
            if let Err(e) = node.stop_agent() {
                eprintln!("lab {}: stopping the agent of {}: {e:#}", s.id, node.name());
            }
        }
        let names = s.lock().netns.clone();
        for name in names.iter().rev() {
            if let Err(e) = s.delete_netns(name) {
                eprintln!("lab {}: deleting netns {name}: {e:#}", s.id);
            }
        }
        remove_dir(&s.bpf_root());
        if std::env::var_os("LUMEN_LAB_KEEP").is_some_and(|v| v == "1") {
            eprintln!("lab {}: kept {} (LUMEN_LAB_KEEP=1)", s.id, s.dir.display());
        } else {
            remove_dir(&s.dir);
        }
    }
}

impl Lab {
    /// Underlay address of the lab's "outside world" router (see [`Lab::add_world`]).
    pub const WORLD_GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 77, 254);

    /// Routes every node's pod CIDR from every other node through the underlay (node `n`
    /// via `192.168.77.<n>`), so pods on different nodes reach each other without
    /// encapsulation or NAT. Call after adding the nodes; idempotent.
    pub fn route_pod_cidrs(&self) -> Result<()> {
        let nodes = self.nodes();
        for from in &nodes {
            for to in nodes.iter().filter(|n| n.name() != from.name()) {
                let via = to.ip().to_string();
                netns::ip(&[
                    "-n",
                    from.netns(),
                    "route",
                    "replace",
                    to.pod_cidr(),
                    "via",
                    &via,
                ])?;
            }
        }
        Ok(())
    }

    /// Makes `addrs` the "world": addresses outside the cluster (neither pods nor nodes),
    /// held by the underlay namespace, reachable from every node (default route via
    /// [`Lab::WORLD_GATEWAY`]) and from every pod (pod CIDRs routed back to their nodes, no NAT).
    /// Run servers on them with [`Lab::spawn_in_underlay`]. Call after adding the nodes.
    pub fn add_world(&self, addrs: &[std::net::Ipv4Addr]) -> Result<()> {
        let ul = self.underlay_netns();
        let gw = format!("{}/24", Lab::WORLD_GATEWAY);
        if !self.underlay_has_addr(&gw)? {
            netns::ip(&["-n", ul, "addr", "add", &gw, "dev", BRIDGE])?;
        }
        for a in addrs {
            let a = format!("{a}/32");
            if !self.underlay_has_addr(&a)? {
                netns::ip(&["-n", ul, "addr", "add", &a, "dev", "lo"])?;
            }
        }
        for node in self.nodes() {
            let via = node.ip().to_string();
            netns::ip(&["-n", ul, "route", "replace", node.pod_cidr(), "via", &via])?;
            let gw = Lab::WORLD_GATEWAY.to_string();
            netns::ip(&[
                "-n",
                node.netns(),
                "route",
                "replace",
                "default",
                "via",
                &gw,
            ])?;
        }
        Ok(())
    }

    fn underlay_has_addr(&self, cidr: &str) -> Result<bool> {
        let out = std::process::Command::new("ip")
            .args(["-n", self.underlay_netns(), "-o", "addr", "show"])
            .output()
            .context("running `ip addr show`")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|w| w == cidr))
    }

    /// Starts `program args…` in the underlay namespace (e.g. a server on the
    /// [`Lab::add_world`] addresses); output goes to a log file.
    pub fn spawn_in_underlay<I, S>(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: I,
    ) -> Result<crate::Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        crate::process::spawn_in(
            &self.shared,
            self.underlay_netns(),
            "underlay",
            program,
            args,
        )
    }

    /// Writes (or replaces) the manifest of Kubernetes namespace `name` with extra `labels`.
    pub fn set_namespace_labels(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        self.shared.ensure_alive()?;
        let yaml = manifest::namespace_yaml(name, &manifest::labels(labels));
        manifest::write_atomic(
            &self.manifests_dir(),
            &manifest::namespace_file(name),
            &yaml,
        )?;
        self.shared.lock().namespaces.insert(name.to_string());
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.shared.id)
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// `$LUMEN_LAB_DIR`, else `/tmp/lumen-lab`.
fn lab_base() -> PathBuf {
    std::env::var_os("LUMEN_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LAB_BASE))
}

/// Removes everything of lab `id`: its namespaces (after killing what runs in them), its
/// directory and its bpffs pins.
fn sweep_lab(id: &str) {
    for name in netns::list_netns() {
        if netns::parse_lab_id(&name).is_some_and(|(owner, _)| owner == id) {
            if let Err(e) = netns::delete_netns(&name) {
                eprintln!("lab: removing stale netns {name}: {e:#}");
            }
        }
    }
    remove_dir(&lab_base().join(id));
    remove_dir(&Path::new(BPF_BASE).join(id));
}

fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("lab: removing {}: {e}", path.display()),
    }
}

extern "C" fn on_interrupt(_signal: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // Second Ctrl-C: the user wants out now.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Makes SIGINT and SIGTERM set the flag [`interrupted`] reads instead of killing the process,
/// so the lab's teardown can run; a second signal exits at once. Idempotent.
pub fn install_interrupt_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction with a handler that only touches an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_interrupt as *const () as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    });
}

/// Whether SIGINT or SIGTERM arrived since [`install_interrupt_handler`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
