//! `lumen-agent`: the node agent. Loads and pins the datapath, adopts what a previous agent
//! left attached, wires pods for the CNI plugin, and serves the Hubble Observer API.

use anyhow::{Context, Result};
use clap::Parser;
use lumen_dataplane::{
    agent::Agent,
    config::{AgentConfig, StateSource},
    datapath::{l2::L2ResponderMap, reader, Datapath},
    endpoints::EndpointStore,
    ingest::RingSink,
    l2, localapi, metrics, node_setup, observer, state,
};
use std::{path::PathBuf, time::Duration};

// Building flows for clients is allocation-bound (see benches/pipeline.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long open API streams may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Stops a background task when the agent returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lumen node agent.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML, Cilium Helm-values key names). Repeat it to layer files
    /// like `helm -f`: e.g. the cluster's values file, then node-local settings.
    #[arg(
        long,
        short,
        env = "LUMEN_CONFIG",
        default_value = "/etc/lumen/agent.yaml"
    )]
    config: Vec<PathBuf>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = rt
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("lumen-agent: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let mut cfg = AgentConfig::load_layered(&args.config)?;
    if cfg.devices.is_empty() {
        // `devices: []`: the uplinks are the interfaces with a default route, as in Cilium.
        cfg.devices = lumen_dataplane::devices::detect();
        if cfg.devices.is_empty() {
            tracing::warn!("devices is empty and no interface has a default route: traffic to and from the network is not observed; set `devices`");
        } else {
            tracing::info!(devices = ?cfg.devices, "uplinks detected (interfaces with a default route)");
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        tracing::warn!(
            "not running as root: loading eBPF needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN"
        );
    }
    let mut uplinks = vec![];
    let mut host_ips = vec![];
    for dev in &cfg.devices {
        let idx = node_setup::ifindex(dev).with_context(|| {
            format!("device {dev:?} (from `devices`) does not exist in this network namespace")
        })?;
        host_ips.extend(node_setup::addresses(dev).await);
        uplinks.push((idx, dev.clone()));
    }

    let pin_dir = cfg.pin_dir();
    let mut datapath = Datapath::load(
        &pin_dir,
        cfg.bpf.events_ring_bytes,
        cfg.bpf.ct_max,
        cfg.bpf.monitor_aggregation,
        cfg.bpf.monitor_interval,
    )?;
    tracing::info!(
        pins = %pin_dir.display(),
        adopted = datapath.adopted_maps,
        aggregation = ?cfg.bpf.monitor_aggregation,
        "datapath loaded"
    );
    // The first IPv4 address of the uplinks: where source-NATed service traffic comes from.
    let node_ipv4 = host_ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    });
    datapath.set_nat(&lumen_dataplane::datapath::NatSettings {
        node_ipv4,
        native_cidr: cfg.ipv4_native_routing_cidr,
        masquerade: cfg.bpf.masquerade,
        kube_proxy_replacement: cfg.kube_proxy_replacement,
        encryption: cfg.encryption.enabled,
        strict_cidr: cfg.strict_cidr(),
    })?;
    let maps = lumen_dataplane::datapath::maps::PolicyMaps::take(&mut datapath)?;
    let events = datapath.take_events()?;
    let lost = reader::LostCounters::new(datapath.take_lost()?);
    let l2_map =
        if cfg.l2announcements.enabled {
            Some(L2ResponderMap::take(&mut datapath).context(
                "l2announcements.enabled needs the datapath's ARP responder (L2_RESPONDER)",
            )?)
        } else {
            None
        };

    // The state source: a manifest directory, or the Kubernetes API server.
    let (state_rx, refresher, kube_client) = match cfg.state_source {
        StateSource::Manifests => {
            let (rx, refresher) =
                state::manifests::watch(cfg.manifests_dir.clone(), Duration::from_millis(200));
            (rx, Some(refresher), None)
        }
        StateSource::Kubernetes => {
            let client = state::kube::client(
                cfg.k8s_service_host.as_deref(),
                cfg.k8s_service_port.map(|p| p.0),
            )
            .await
            .context("connecting to the Kubernetes API server (stateSource: kubernetes)")?;
            tracing::info!("waiting for the Kubernetes state source's first list of every kind");
            let rx = state::kube::watch(client.clone(), state::kube::KubeSourceOptions::default())
                .await
                .context("syncing the Kubernetes state source")?;
            (rx, None, Some(client))
        }
    };

    // WireGuard: the device must exist before the datapath attaches to it.
    let encryption = if cfg.encryption.enabled {
        let map = lumen_dataplane::datapath::wg::WgPeersMap::take(&mut datapath)?;
        // Creating the TUN device runs its own netlink runtime: off the async workers.
        Some(
            tokio::task::block_in_place(|| {
                lumen_dataplane::encryption::Encryption::start(&cfg, map, kube_client.clone())
            })
            .context("starting WireGuard encryption (encryption.enabled)")?,
        )
    } else {
        None
    };

    let endpoints = EndpointStore::open(&cfg.state_dir.join("endpoints.json"))?;
    let agent = Agent::new(
        cfg.clone(),
        datapath,
        Some(maps),
        endpoints,
        state_rx.clone(),
        refresher,
        uplinks.clone(),
        host_ips,
    );
    if let Some(enc) = &encryption {
        let _ = agent.encryption.set(enc.clone());
        tokio::spawn(enc.clone().run(state_rx.clone()));
    }
    agent.reconcile_datapath()?;
    agent.prepare_node().await;
    let l2 = match l2_map {
        Some(map) => Some(
            l2::start(
                &cfg.l2announcements,
                &cfg.node_name,
                &cfg.manifests_dir,
                kube_client.clone(),
                &uplinks,
                map,
                state_rx.clone(),
                agent.l2_status.clone(),
            )
            .context("starting L2 announcements")?,
        ),
        None => None,
    };

    // The transparent DNS proxy for endpoints with toFQDNs / DNS rules.
    tokio::spawn({
        let (agent, stats) = (agent.clone(), Default::default());
        async move {
            if let Err(e) = lumen_dataplane::dns::proxy::run(agent, stats).await {
                tracing::error!(error = %e, "DNS proxy stopped; DNS of redirected endpoints fails");
            }
        }
    });

    // Native routing: other nodes' pod CIDRs via their addresses.
    if cfg.auto_direct_node_routes {
        tokio::spawn(lumen_dataplane::routing::run(
            cfg.node_name.clone(),
            state_rx.clone(),
            agent.routes.clone(),
        ));
    }

    // Keep identities, the ipcache and policy in step with the state source.
    {
        let agent = agent.clone();
        let mut rx = state_rx;
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                agent.regenerate();
            }
        });
    }

    let mut sink = RingSink::new(agent.clone());
    // Hubble's default: no metrics server unless hubble.metrics.enabled lists some.
    let _metrics = if cfg.hubble.metrics.enabled.is_empty() {
        None
    } else {
        let fill = {
            let agent = agent.clone();
            std::sync::Arc::new(move || agent.map_fill()) as metrics::health::MapFillSource
        };
        let usage = match lumen_dataplane::datapath::ring_usage::RingUsage::new(
            &events,
            cfg.bpf.events_ring_bytes,
        ) {
            Ok(u) => Some(std::sync::Arc::new(u)),
            Err(e) => {
                tracing::warn!(error = %e, "ring buffer fill is not reported");
                None
            }
        };
        let events_usage = std::sync::Arc::new(move || usage.as_ref().map(|u| u.usage()))
            as metrics::health::RingUsageSource;
        let (exporter, flows) =
            metrics::setup(&cfg.hubble.metrics, agent.ring.clone(), fill, events_usage);
        sink = sink.with_metrics(flows);
        let addr = cfg.metrics_socket_addr()?;
        Some(AbortOnDrop(metrics::server::serve(addr, exporter).await?))
    };
    let reader_task = tokio::spawn(reader::run(events, lost, sink));
    let _local = localapi::serve(&cfg.agent_socket, agent.clone()).with_context(|| {
        format!(
            "binding the local API socket {}",
            cfg.agent_socket.display()
        )
    })?;
    let health = std::sync::Arc::new(lumen_dataplane::health::Health::default());
    let _health = if cfg.health_port == 0 {
        None
    } else {
        let state = agent.state();
        let errors = std::sync::Arc::new(move || state.borrow().source_errors.clone())
            as lumen_dataplane::health::ErrorsSource;
        Some(AbortOnDrop(
            lumen_dataplane::health::serve(cfg.health_port, health.clone(), errors).await?,
        ))
    };
    health.set_serving();
    tracing::info!(node = %agent.node_name, socket = %cfg.agent_socket.display(), "agent ready");

    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let l2_stop = l2.as_ref().map(|h| h.stop_signal());
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down; programs and maps stay pinned and keep working");
            // Hand L2 announcements over now rather than after the streams' grace.
            if let Some(s) = l2_stop {
                s.stop();
            }
            stopping.notify_one();
        }
    };
    // Graceful shutdown waits for open streams (a relay's follow or health watch never
    // ends by itself): give them a moment, then go.
    let grace = async {
        stopping.notified().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::info!(grace = ?SHUTDOWN_GRACE, "closing the streams still open");
    };
    tokio::select! {
        r = observer::serve(agent.clone(), shutdown) => r?,
        r = reader_task => {
            r.context("ring-buffer reader panicked")?.context("ring-buffer reader failed")?;
        }
        _ = grace => {}
    }
    // Withdraw announcements and release leases so another node takes over at once.
    if let Some(l2) = l2 {
        l2.shutdown().await;
    }
    let _ = std::fs::remove_file(&cfg.agent_socket);
    let _ = std::fs::remove_file(&cfg.hubble.socket_path);
    Ok(())
}
