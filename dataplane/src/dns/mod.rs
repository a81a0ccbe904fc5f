//! DNS awareness: the transparent DNS proxy ([`proxy`]) that endpoints with `toFQDNs` or
//! DNS rules in their egress policy are redirected to (the datapath's `dns` module), the
//! FQDN cache it fills ([`cache`]), and the DNS messages it reads and writes ([`message`]).
//!
//! The proxy forwards each query to the server the pod addressed, and before answering the
//! pod records the answered addresses: those of names a `toFQDNs` selector selects get an
//! identity, the policy maps are regenerated, and only then does the pod get its answer,
//! so its first connection to a new address is already allowed.

pub mod cache;
pub mod message;
pub mod proxy;

use crate::config::dns::DnsProxyConfig;
use cache::{CacheEntry, FqdnCache};
use lumen_policy::{DnsPolicy, PolicySet};
use parking_lot::{Mutex, RwLock};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// What the proxy needs to know about the endpoint a query came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointDns {
    /// Endpoint id.
    pub id: u32,
    /// Its host-side interface index.
    pub ifindex: u32,
    /// Its identity.
    pub identity: u32,
    /// What its egress policy says about DNS.
    pub policy: DnsPolicy,
}

/// The agent's DNS state, shared by the proxy and regeneration.
#[derive(Debug)]
pub struct Dns {
    /// `dnsProxy.*`.
    pub cfg: DnsProxyConfig,
    cache: Mutex<FqdnCache>,
    endpoints: RwLock<Arc<HashMap<IpAddr, EndpointDns>>>,
}

impl Dns {
    /// Empty state.
    pub fn new(cfg: DnsProxyConfig) -> Self {
        Dns {
            cfg,
            cache: Mutex::default(),
            endpoints: RwLock::default(),
        }
    }

    /// Gives the policies in force the identities of the addresses their `toFQDNs`
    /// selectors' names resolved to.
    pub fn apply(&self, set: PolicySet) -> PolicySet {
        let selectors = set.fqdn_selectors();
        if selectors.is_empty() {
            return set;
        }
        let ids = self.cache.lock().identities(&selectors);
        set.with_fqdn_identities(ids)
    }

    /// Replaces what is known about local endpoints (after a regeneration), by address.
    pub fn set_endpoints(&self, endpoints: HashMap<IpAddr, EndpointDns>) {
        *self.endpoints.write() = Arc::new(endpoints);
    }

    /// The local endpoint with this address.
    pub fn endpoint(&self, ip: &IpAddr) -> Option<EndpointDns> {
        self.endpoints.read().get(ip).cloned()
    }

    /// Records an answer; true when a (name, address) pair is new.
    pub fn record(&self, endpoint: u32, names: &[String], ips: &[(IpAddr, u32)]) -> bool {
        self.cache.lock().record(
            endpoint,
            names,
            ips,
            SystemTime::now(),
            Duration::from_secs(self.cfg.min_ttl),
        )
    }

    /// Drops expired entries; true when any went.
    pub fn expire(&self) -> bool {
        self.cache.lock().expire(SystemTime::now())
    }

    /// The cache's content, for `lumen fqdn cache list`.
    pub fn list(&self) -> Vec<CacheEntry> {
        self.cache.lock().list()
    }

    /// Every address with names: its names (any endpoint's) and its FQDN identity, if any.
    pub fn addresses(&self) -> Vec<(IpAddr, Vec<String>, Option<u32>)> {
        let mut by_ip: std::collections::BTreeMap<IpAddr, (Vec<String>, Option<u32>)> =
            Default::default();
        for e in self.cache.lock().list() {
            let (names, id) = by_ip.entry(e.ip).or_default();
            if !names.contains(&e.name) {
                names.push(e.name);
            }
            *id = id.or(e.identity);
        }
        by_ip.into_iter().map(|(ip, (n, id))| (ip, n, id)).collect()
    }

    /// The names an address is known by.
    pub fn names_of(&self, ip: &IpAddr) -> Vec<String> {
        self.cache.lock().names_of(ip)
    }
}
