//! The FQDN cache: which addresses each endpoint's DNS answers gave for which names, until
//! when (the record's TTL, at least `dnsProxy.minTtl`), and the identities of the addresses
//! that names selected by `toFQDNs` resolved to.
//!
//! Identities are per address and stable while the address stays known, so a new answer
//! adds an entry to the kernel maps without renumbering the others. When the last name of
//! an address expires, the address loses its identity and new connections to it are
//! decided as the world's; established connections keep going on their conntrack entry.

use lumen_policy::{FqdnIdentity, FqdnSelector, FQDN_IDENTITY_BASE};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

/// One cached (endpoint, name, address), as `lumen fqdn cache list` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    /// Endpoint id of the pod that asked.
    pub endpoint: u32,
    /// Name (normalised).
    pub name: String,
    /// Address.
    pub ip: IpAddr,
    /// When it expires, seconds since the Unix epoch.
    pub expires_unix: u64,
    /// The address's FQDN identity, when a `toFQDNs` selector selects the name.
    pub identity: Option<u32>,
}

/// Names and addresses learnt from DNS answers.
#[derive(Debug, Default)]
pub struct FqdnCache {
    /// (endpoint, name) → address → expiry.
    entries: BTreeMap<(u32, String), BTreeMap<IpAddr, SystemTime>>,
    /// Address → identity, for addresses of selected names.
    ids: BTreeMap<IpAddr, u32>,
    next_id: u32,
}

impl FqdnCache {
    /// Records an answer: `names` (the question and its CNAME targets) resolved to `ips`,
    /// each valid for its TTL but at least `min_ttl`. Returns whether a (name, address) pair
    /// is new, which may give policy a new address to allow.
    pub fn record(
        &mut self,
        endpoint: u32,
        names: &[String],
        ips: &[(IpAddr, u32)],
        now: SystemTime,
        min_ttl: Duration,
    ) -> bool {
        let mut new = false;
        for name in names {
            let e = self.entries.entry((endpoint, name.clone())).or_default();
            for (ip, ttl) in ips {
                let until = now + Duration::from_secs(u64::from(*ttl)).max(min_ttl);
                match e.get_mut(ip) {
                    Some(t) => *t = (*t).max(until),
                    None => {
                        new = true;
                        e.insert(*ip, until);
                    }
                }
            }
        }
        new
    }

    /// Drops what expired by `now`; returns whether anything did.
    pub fn expire(&mut self, now: SystemTime) -> bool {
        let mut gone = false;
        self.entries.retain(|_, ips| {
            ips.retain(|_, until| {
                let keep = *until > now;
                gone |= !keep;
                keep
            });
            !ips.is_empty()
        });
        gone
    }

    /// Forgets an endpoint that went away; returns whether it had entries.
    pub fn forget_endpoint(&mut self, endpoint: u32) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(ep, _), _| *ep != endpoint);
        before != self.entries.len()
    }

    /// Every address known for a name some selector selects, with its identity (allocated
    /// on first use, kept while the address stays) and its selected names. Addresses that
    /// left give their identity back.
    pub fn identities(&mut self, selectors: &[FqdnSelector]) -> Vec<FqdnIdentity> {
        let mut by_ip: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
        for ((_, name), ips) in &self.entries {
            if !selectors.iter().any(|s| s.matches(name)) {
                continue;
            }
            for ip in ips.keys() {
                by_ip.entry(*ip).or_default().insert(name);
            }
        }
        self.ids.retain(|ip, _| by_ip.contains_key(ip));
        let used: BTreeSet<u32> = self.ids.values().copied().collect();
        let mut out = Vec::with_capacity(by_ip.len());
        for (ip, names) in by_ip {
            let id = match self.ids.get(&ip) {
                Some(id) => *id,
                None => {
                    // The lowest free number: identities stay dense and bounded.
                    let mut id = FQDN_IDENTITY_BASE + self.next_id % (1 << 20);
                    while used.contains(&id) || self.ids.values().any(|v| *v == id) {
                        self.next_id += 1;
                        id = FQDN_IDENTITY_BASE + self.next_id % (1 << 20);
                    }
                    self.next_id += 1;
                    self.ids.insert(ip, id);
                    id
                }
            };
            out.push(FqdnIdentity {
                identity: id,
                ip,
                names: names.into_iter().map(str::to_string).collect(),
            });
        }
        out
    }

    /// Every (endpoint, name, address) with its expiry, for the admin CLI.
    pub fn list(&self) -> Vec<CacheEntry> {
        let mut out = Vec::new();
        for ((ep, name), ips) in &self.entries {
            for (ip, until) in ips {
                out.push(CacheEntry {
                    endpoint: *ep,
                    name: name.clone(),
                    ip: *ip,
                    expires_unix: until
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    identity: self.ids.get(ip).copied(),
                });
            }
        }
        out
    }

    /// Every name an address is currently known by (any endpoint), sorted.
    pub fn names_of(&self, ip: &IpAddr) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .entries
            .iter()
            .filter(|(_, ips)| ips.contains_key(ip))
            .map(|((_, n), _)| n)
            .collect();
        set.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_age_out_with_ttl_or_the_minimum() {
        let mut c = FqdnCache::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let names = vec!["api.example.test".to_string()];
        assert!(c.record(
            4,
            &names,
            &[(ip("192.0.2.10"), 5)],
            t0,
            Duration::from_secs(0)
        ));
        // The same answer again is no news.
        assert!(!c.record(4, &names, &[(ip("192.0.2.10"), 5)], t0, Duration::ZERO));
        // A low TTL is raised to the minimum.
        assert!(c.record(
            4,
            &names,
            &[(ip("192.0.2.11"), 1)],
            t0,
            Duration::from_secs(60)
        ));
        assert!(!c.expire(t0 + Duration::from_secs(4)));
        assert!(c.expire(t0 + Duration::from_secs(6)));
        let left: Vec<IpAddr> = c.list().iter().map(|e| e.ip).collect();
        assert_eq!(left, vec![ip("192.0.2.11")]);
        assert_eq!(c.list()[0].expires_unix, 1_060);
        assert!(c.expire(t0 + Duration::from_secs(61)));
        assert!(c.list().is_empty());
    }

    #[test]
    fn identities_are_per_address_stable_and_only_for_selected_names() {
        let mut c = FqdnCache::default();
        let t0 = SystemTime::UNIX_EPOCH;
        let ttl = Duration::from_secs(100);
        c.record(
            1,
            &["api.example.test".into()],
            &[(ip("192.0.2.10"), 100)],
            t0,
            ttl,
        );
        c.record(
            2,
            &["www.example.test".into()],
            &[(ip("192.0.2.10"), 100)],
            t0,
            ttl,
        );
        c.record(
            2,
            &["other.test".into()],
            &[(ip("192.0.2.99"), 100)],
            t0,
            ttl,
        );
        let sel = vec![FqdnSelector::Pattern("*.example.test".into())];
        let a = c.identities(&sel);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].identity, FQDN_IDENTITY_BASE);
        assert_eq!(a[0].names, vec!["api.example.test", "www.example.test"]);
        // A new address gets a new number; the old keeps its own.
        c.record(
            1,
            &["api.example.test".into()],
            &[(ip("192.0.2.5"), 100)],
            t0,
            ttl,
        );
        let b = c.identities(&sel);
        let id_of =
            |v: &[FqdnIdentity], s: &str| v.iter().find(|f| f.ip == ip(s)).unwrap().identity;
        assert_eq!(id_of(&b, "192.0.2.10"), FQDN_IDENTITY_BASE);
        assert_eq!(id_of(&b, "192.0.2.5"), FQDN_IDENTITY_BASE + 1);
        assert_eq!(
            c.names_of(&ip("192.0.2.10")),
            vec!["api.example.test", "www.example.test"]
        );
        // The endpoint goes: its names go, and the address with no name left loses its identity.
        c.forget_endpoint(1);
        let d = c.identities(&sel);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].names, vec!["www.example.test"]);
    }
}
