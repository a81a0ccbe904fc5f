//! L2 announcements: for each LoadBalancer (or external) IPv4 address selected by a
//! `CiliumL2AnnouncementPolicy`, exactly one node answers ARP for it on its uplink. The
//! node is elected through a per-service Lease in the state source; when the holder dies
//! its lease expires and another candidate takes over, announcing itself with gratuitous
//! ARPs. The datapath answers the ARP requests (`L2_RESPONDER`); this module decides what
//! that map holds.
//!
//! - [`policy`]: the policy kind and this node's candidate addresses;
//! - [`lease`]: the Lease store and its compare-and-swap election;
//! - [`lease_api`]: its backend in the API server (`stateSource: kubernetes`);
//! - [`garp`]: gratuitous ARP frames on an `AF_PACKET` socket;
//! - [`announcer`]: the task tying them to the map.

pub mod announcer;
pub mod garp;
pub mod lease;
pub mod lease_api;
pub mod policy;

use crate::{config::L2AnnouncementsConfig, datapath::l2::L2ResponderMap, state::ClusterState};
use serde::{Deserialize, Serialize};
use std::{net::Ipv4Addr, path::Path, sync::Arc};
use tokio::sync::watch;

pub use announcer::{Announcer, AnnouncerHandle, StopSignal};

/// An uplink that can answer ARP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Device name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
}

/// One address this node announces, for `lumen status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The address.
    pub ip: Ipv4Addr,
    /// The lease held for it.
    pub lease: String,
    /// The uplink answering for it.
    pub device: String,
    /// `namespace/name` of its service.
    pub service: String,
}

/// What the announcer currently announces (shared with the admin API).
pub type Status = Arc<parking_lot::RwLock<Vec<Announcement>>>;

/// Errors starting L2 announcements.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// An uplink's MAC could not be read.
    #[error(transparent)]
    Garp(#[from] garp::GarpError),
    /// The lease directory could not be made.
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
}

/// Starts the announcer for node `node_name` on `uplinks` ((ifindex, name) as the agent
/// found them), electing through Lease objects in the API server when `kube_client` is
/// given (`stateSource: kubernetes`), else through lease files under `manifests_dir`.
#[allow(clippy::too_many_arguments)]
pub fn start(
    cfg: &L2AnnouncementsConfig,
    node_name: &str,
    manifests_dir: &Path,
    kube_client: Option<kube::Client>,
    uplinks: &[(u32, String)],
    map: L2ResponderMap,
    state: watch::Receiver<Arc<ClusterState>>,
    status: Status,
) -> Result<AnnouncerHandle, L2Error> {
    let uplinks = uplinks
        .iter()
        .map(|(ifindex, name)| {
            Ok(Uplink {
                name: name.clone(),
                ifindex: *ifindex,
                mac: garp::interface_mac(name)?,
            })
        })
        .collect::<Result<Vec<_>, L2Error>>()?;
    let clock = Arc::new(lease::SystemClock);
    let (store, backend) = match kube_client {
        Some(client) => (
            lease::LeaseStore::api(client, clock),
            format!(
                "Lease objects in namespace {}",
                lease_api::lease_namespace()
            ),
        ),
        None => {
            let store = lease::LeaseStore::open(manifests_dir, clock)?;
            let dir = store.dir().map(|d| d.display().to_string());
            (store, format!("lease files in {}", dir.unwrap_or_default()))
        }
    };
    tracing::info!(
        leases = %backend,
        uplinks = ?uplinks.iter().map(|u| &u.name).collect::<Vec<_>>(),
        duration = ?cfg.lease_duration,
        retry = ?cfg.lease_retry_period,
        "L2 announcements enabled"
    );
    Ok(Announcer::new(
        cfg.clone(),
        node_name.to_string(),
        uplinks,
        store,
        map,
        state,
        status,
    )
    .spawn())
}
