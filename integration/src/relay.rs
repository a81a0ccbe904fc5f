//! Running `lumen-relay` for a lab, in the host's network namespace.
//!
//! The relay discovers the nodes through the peer service of one agent, over that agent's
//! unix socket. The peer service advertises `<InternalIP>:4244`, which lives on the lab's
//! underlay and is not routable from the host, so the relay's `nodeAddresses` maps every
//! lab node to its agent's unix socket (`<labdir>/<node>/hubble.sock`): unix sockets are
//! reachable from any network namespace. Nodes added after the relay started are not in
//! that map; restart the relay (or use [`RelayOptions::node_addresses`]) for them.

use crate::{lab::CLUSTER_NAME, process, Lab};
use anyhow::{bail, Context, Result};
use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

/// How to run the relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// `listenAddress`; default `127.0.0.1:<a free port>`.
    pub listen_address: Option<String>,
    /// `peerService`; default the unix socket of the lab's first node.
    pub peer_service: Option<String>,
    /// Extra `nodeAddresses` (after the lab's unix sockets).
    pub node_addresses: BTreeMap<String, String>,
    /// `sortBufferDrainTimeout` (default: the relay's, 100 ms).
    pub drain_timeout: Option<Duration>,
    /// `retryBackoff.max` (default 1 s in the lab, so restarted agents rejoin quickly).
    pub backoff_max: Duration,
    /// Extra environment, e.g. `RUST_LOG`.
    pub env: Vec<(String, String)>,
    /// YAML appended to the configuration, e.g. a `tls:` section (default empty).
    pub extra_yaml: String,
    /// `history.path`: keep flow history in this SQLite file (default: no history).
    pub history: Option<PathBuf>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            listen_address: None,
            peer_service: None,
            node_addresses: BTreeMap::new(),
            drain_timeout: None,
            backoff_max: Duration::from_secs(1),
            env: vec![],
            extra_yaml: String::new(),
            history: None,
        }
    }
}

/// A running relay; dropping it stops it.
pub struct Relay {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Relay {
    /// Writes `<labdir>/relay.yaml` and starts the relay; returns once it accepts TCP
    /// connections. On early exit or timeout the error carries its log.
    pub fn start(lab: &Lab, options: RelayOptions) -> Result<Relay> {
        let nodes = lab.nodes();
        let listen = match &options.listen_address {
            Some(a) => a.clone(),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen address {listen:?}"))?;
        let peer_service = match &options.peer_service {
            Some(p) => p.clone(),
            None => match nodes.first() {
                Some(n) => format!("unix://{}", n.hubble_socket().display()),
                None => bail!("the lab has no node whose peer service the relay could use"),
            },
        };
        let mut node_addresses: BTreeMap<String, String> = nodes
            .iter()
            .map(|n| {
                (
                    format!("{CLUSTER_NAME}/{}", n.name()),
                    format!("unix://{}", n.hubble_socket().display()),
                )
            })
            .collect();
        node_addresses.extend(options.node_addresses.clone());
        let mut yaml = format!(
            "listenAddress: {listen:?}\nclusterName: {CLUSTER_NAME}\npeerService: {peer_service:?}\n\
             dialTimeout: 2s\nretryBackoff: {{initial: 100ms, max: {}}}\nnodeAddresses:\n",
            ms(options.backoff_max)
        );
        for (k, v) in &node_addresses {
            yaml.push_str(&format!("  {k:?}: {v:?}\n"));
        }
        if let Some(d) = options.drain_timeout {
            yaml.push_str(&format!("sortBufferDrainTimeout: {}\n", ms(d)));
        }
        if let Some(path) = &options.history {
            yaml.push_str(&format!(
                "history: {{enabled: true, backend: sqlite, path: {:?}}}\n",
                path.display().to_string()
            ));
        }
        yaml.push_str(&options.extra_yaml);
        let config = lab.dir().join("relay.yaml");
        std::fs::write(&config, yaml)?;
        let log = lab.dir().join("relay.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let bin = process::find_binary("lumen-relay")?;
        let child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut relay = Relay {
            child: Some(child),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = relay
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "lumen-relay exited early ({status}); log:\n{}",
                    process::tail(&relay.log, 40)
                );
            }
            if TcpStream::connect(addr).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "lumen-relay not listening on {addr} after 10 s; log:\n{}",
                    process::tail(&relay.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Ready once every node with a running agent is connected.
        let running = nodes.iter().filter(|n| n.agent_pid().is_some()).count() as u32;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let connected = rt.block_on(async {
            let mut client = crate::hubble::connect_tcp(&addr.to_string()).await?;
            loop {
                let st = client
                    .server_status(lumen_api::observer::ServerStatusRequest {})
                    .await?
                    .into_inner();
                let n = st.num_connected_nodes.map_or(0, |v| v.value);
                if n >= running || Instant::now() >= deadline {
                    return anyhow::Ok(n);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })?;
        if connected < running {
            bail!(
                "lumen-relay connected to {connected} of {running} nodes within 10 s; log:\n{}",
                process::tail(&relay.log, 40)
            );
        }
        Ok(relay)
    }

    /// Its pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::tail(&self.log, lines)
    }

    /// Stops it (SIGTERM, 5 s grace, SIGKILL).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, Duration::from_secs(5))?;
        }
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
