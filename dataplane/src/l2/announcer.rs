//! The announcer task: every `leaseRetryPeriod` it works out which addresses this node is
//! a candidate for ([`super::policy::candidates`]), tries to take or renew each service's
//! lease ([`super::lease`]), and keeps the `L2_RESPONDER` map in step: an entry per
//! address whose lease it holds, valid for `leaseDuration` from just before the renewal
//! (so the datapath stops answering no later than the lease expires for the others), none
//! for the rest. On taking a lease it sends gratuitous ARPs so neighbours switch at once.
//! On shutdown it removes its entries and releases its leases, so failover is immediate.
//!
//! Lease operations are short file operations under `flock`, or API requests bounded by
//! `leaseDuration` (the worker thread is handed over while they wait); they run on the task.

use super::{
    garp,
    lease::{LeaseStore, Outcome},
    policy::{candidates, Candidates},
    Announcement, Status, Uplink,
};
use crate::{config::L2AnnouncementsConfig, datapath::l2::L2ResponderMap, state::ClusterState};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// Gratuitous ARPs sent on taking over an address, and their spacing.
const GARP_COUNT: u32 = 3;
const GARP_INTERVAL: Duration = Duration::from_millis(100);

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A lease this node holds and the addresses it announces under it (address → uplink).
struct Held {
    ips: BTreeMap<Ipv4Addr, String>,
    last_renewed: Instant,
}

/// The announcer's state (owned by its task).
pub struct Announcer {
    cfg: L2AnnouncementsConfig,
    identity: String,
    uplinks: Vec<Uplink>,
    store: LeaseStore,
    map: L2ResponderMap,
    state: watch::Receiver<Arc<ClusterState>>,
    held: BTreeMap<String, Held>,
    status: Status,
    problems: Vec<String>,
}

/// The running task: stop it with [`AnnouncerHandle::shutdown`].
pub struct AnnouncerHandle {
    stop: StopSignal,
    task: tokio::task::JoinHandle<()>,
}

/// Tells the announcer to withdraw and release, without waiting (e.g. from a signal
/// handler, before the rest of the agent winds down).
#[derive(Clone)]
pub struct StopSignal(Arc<watch::Sender<bool>>);

impl StopSignal {
    /// Starts the withdrawal.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl AnnouncerHandle {
    /// A signal that starts the withdrawal from elsewhere.
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// Withdraws every announcement, releases the leases, and waits for the task.
    pub async fn shutdown(self) {
        self.stop.stop();
        let _ = self.task.await;
    }
}

impl Announcer {
    /// Builds the announcer for node `identity`; stale entries of a previous agent are
    /// removed now (nothing is held yet; the first round re-takes what is still ours).
    pub fn new(
        cfg: L2AnnouncementsConfig,
        identity: String,
        uplinks: Vec<Uplink>,
        store: LeaseStore,
        mut map: L2ResponderMap,
        state: watch::Receiver<Arc<ClusterState>>,
        status: Status,
    ) -> Self {
        for (ip, _) in map.list() {
            if let Err(e) = map.remove(ip) {
                tracing::warn!(%ip, error = %e, "removing a stale L2 responder entry failed");
            }
        }
        Announcer {
            cfg,
            identity,
            uplinks,
            store,
            map,
            state,
            held: BTreeMap::new(),
            status,
            problems: vec![],
        }
    }

    /// Runs rounds every `leaseRetryPeriod` until stopped.
    pub fn spawn(mut self) -> AnnouncerHandle {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(self.cfg.lease_retry_period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => self.round(),
                    _ = stopped.changed() => break,
                }
            }
            self.withdraw_all();
        });
        AnnouncerHandle {
            stop: StopSignal(Arc::new(stop)),
            task,
        }
    }

    /// One election round.
    pub fn round(&mut self) {
        let state = self.state.borrow().clone();
        let devices: Vec<String> = self.uplinks.iter().map(|u| u.name.clone()).collect();
        let (want, problems) = candidates(&state, &self.identity, &devices);
        if problems != self.problems {
            for p in &problems {
                tracing::warn!(problem = %p, "L2 announcement policy ignored");
            }
            self.problems = problems;
        }
        let mut garps = vec![];
        for (lease, cands) in &want {
            // Taken before the renewal, so the datapath entry never outlives the lease.
            let expires_ns = monotonic_ns() + self.cfg.lease_duration.as_nanos() as u64;
            match self
                .store
                .acquire_or_renew(lease, &self.identity, self.cfg.lease_duration)
            {
                Ok(Outcome::Acquired(l) | Outcome::Renewed(l)) => {
                    let newly = !self.held.contains_key(lease);
                    if newly {
                        tracing::info!(
                            lease = %lease,
                            holder = %self.identity,
                            transitions = l.transitions,
                            ips = ?cands.iter().map(|c| c.ip).collect::<Vec<_>>(),
                            "L2 lease acquired; announcing"
                        );
                    }
                    let held = self.held.entry(lease.clone()).or_insert_with(|| Held {
                        ips: BTreeMap::new(),
                        last_renewed: Instant::now(),
                    });
                    held.last_renewed = Instant::now();
                    let keep: BTreeSet<Ipv4Addr> = cands.iter().map(|c| c.ip).collect();
                    let gone: Vec<Ipv4Addr> = held
                        .ips
                        .keys()
                        .filter(|ip| !keep.contains(ip))
                        .copied()
                        .collect();
                    for ip in gone {
                        held.ips.remove(&ip);
                        remove_entry(&mut self.map, ip, lease);
                    }
                    for c in cands {
                        let Some(up) = self.uplinks.iter().find(|u| u.name == c.device) else {
                            continue;
                        };
                        if let Err(e) = self.map.set(c.ip, up.mac, up.ifindex, expires_ns) {
                            tracing::error!(ip = %c.ip, lease = %lease, error = %e, "writing the L2 responder entry failed");
                            continue;
                        }
                        if held.ips.insert(c.ip, c.device.clone()).is_none() {
                            garps.push((up.ifindex, up.mac, c.ip));
                        }
                    }
                }
                Ok(Outcome::HeldByOther(l)) => {
                    if self.held.contains_key(lease) {
                        tracing::warn!(
                            lease = %lease,
                            holder = l.holder.as_deref().unwrap_or(""),
                            "L2 lease lost to another node; no longer announcing"
                        );
                        self.withdraw(lease);
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %lease, error = %e, "L2 lease acquire/renew failed");
                    let overdue = self
                        .held
                        .get(lease)
                        .is_some_and(|h| h.last_renewed.elapsed() > self.cfg.lease_renew_deadline);
                    if overdue {
                        tracing::warn!(
                            lease = %lease,
                            deadline = ?self.cfg.lease_renew_deadline,
                            "L2 lease not renewed within leaseRenewDeadline; no longer announcing"
                        );
                        self.withdraw(lease);
                    }
                }
            }
        }
        let unwanted: Vec<String> = self
            .held
            .keys()
            .filter(|l| !want.contains_key(*l))
            .cloned()
            .collect();
        for lease in unwanted {
            tracing::info!(lease = %lease, "no address to announce under this lease any more; releasing it");
            self.withdraw(&lease);
            self.release(&lease);
        }
        self.publish(&want);
        for (ifindex, mac, ip) in garps {
            tokio::spawn(async move {
                for i in 0..GARP_COUNT {
                    if i > 0 {
                        tokio::time::sleep(GARP_INTERVAL).await;
                    }
                    if let Err(e) = garp::announce(ifindex, mac, ip) {
                        tracing::warn!(%ip, error = %e, "gratuitous ARP failed");
                        return;
                    }
                }
                tracing::info!(%ip, ifindex, count = GARP_COUNT, "gratuitous ARPs sent");
            });
        }
    }

    /// Removes the datapath entries of `lease` and forgets holding it.
    fn withdraw(&mut self, lease: &str) {
        if let Some(h) = self.held.remove(lease) {
            for ip in h.ips.keys() {
                remove_entry(&mut self.map, *ip, lease);
            }
        }
    }

    fn release(&self, lease: &str) {
        match self.store.release(lease, &self.identity) {
            Ok(true) => {
                tracing::info!(lease = %lease, holder = %self.identity, "L2 lease released")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(lease = %lease, error = %e, "releasing the L2 lease failed"),
        }
    }

    /// Shutdown: nothing announced, every lease released.
    fn withdraw_all(&mut self) {
        let leases: Vec<String> = self.held.keys().cloned().collect();
        for lease in leases {
            self.withdraw(&lease);
            self.release(&lease);
        }
        self.status.write().clear();
    }

    fn publish(&self, want: &Candidates) {
        let mut rows = vec![];
        for (lease, h) in &self.held {
            for (ip, device) in &h.ips {
                let service = want
                    .get(lease)
                    .and_then(|c| c.iter().find(|c| c.ip == *ip))
                    .map(|c| format!("{}/{}", c.service.namespace, c.service.name))
                    .unwrap_or_default();
                rows.push(Announcement {
                    ip: *ip,
                    lease: lease.clone(),
                    device: device.clone(),
                    service,
                });
            }
        }
        *self.status.write() = rows;
    }
}

fn remove_entry(map: &mut L2ResponderMap, ip: Ipv4Addr, lease: &str) {
    match map.remove(ip) {
        Ok(_) => tracing::info!(%ip, lease, "L2 responder entry removed"),
        Err(e) => tracing::error!(%ip, lease, error = %e, "removing the L2 responder entry failed"),
    }
}
