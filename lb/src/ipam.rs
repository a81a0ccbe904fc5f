//! LB-IPAM: assigns LoadBalancer service IPs from [`IpPool`]s, deterministically.
//!
//! Eligible services are `type: LoadBalancer` with `spec.loadBalancerClass` unset or one of
//! [`LB_CLASS_L2_ANNOUNCER`] / [`LB_CLASS_BGP`]. They are processed in creation order
//! (`metadata.creationTimestamp`, services without one last), ties broken by
//! namespace/name; pools in name order. Three passes, so that nothing already handed out
//! moves and explicit requests beat dynamic picks:
//!
//! 1. keep `status.loadBalancer.ingress` IPs still allocatable from a pool selecting the
//!    service (disabled pools included: disabling stops new allocations only) and, when the
//!    service requests IPs, still requested;
//! 2. requested IPs (`spec.loadBalancerIP`, `lbipam.cilium.io/ips`) — all or nothing;
//! 3. one IP per wanted family (the first of `spec.ipFamilies` for SingleStack, each of them
//!    otherwise) from the first enabled, selecting pool with a free address, lowest first.
//!
//! Problems never fail the run: each service gets an [`IpamCondition`]. Not implemented:
//! IP sharing (`lbipam.cilium.io/sharing-key` — two services on one IP are a conflict),
//! pool-level conflict detection for overlapping pools (an address is simply never handed
//! out twice), and the `lbipam.cilium.io/pool` style pool pinning.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::meta::ServiceName;
use crate::pool::{from_u128, to_u128, IpPool, IpRange};
use crate::service::{IpFamily, IpFamilyPolicy, Service, ServiceType};

/// `loadBalancerClass` of Cilium's L2 announcer.
pub const LB_CLASS_L2_ANNOUNCER: &str = "io.cilium/l2-announcer";
/// `loadBalancerClass` of Cilium's BGP control plane.
pub const LB_CLASS_BGP: &str = "io.cilium/bgp-control-plane";

/// Whether LB-IPAM manages `svc`'s IPs.
pub fn is_lbipam_managed(svc: &Service) -> bool {
    svc.service_type == ServiceType::LoadBalancer
        && match svc.load_balancer_class.as_deref() {
            None => true,
            Some(c) => c == LB_CLASS_L2_ANNOUNCER || c == LB_CLASS_BGP,
        }
}

/// Why a service did or did not get its IPs (Cilium's `io.cilium/lb-ipam-request-satisfied`
/// condition reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionReason {
    /// Every wanted IP is assigned.
    Satisfied,
    /// No enabled pool of a wanted family selects the service.
    NoPool,
    /// Selecting pools exist but have no free address.
    OutOfIps,
    /// A requested IP is already assigned to another service.
    AlreadyAllocated,
    /// A requested IP is in no enabled pool that selects the service.
    NotInPool,
}

impl ConditionReason {
    /// Cilium's reason word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Satisfied => "satisfied",
            Self::NoPool => "no_pool",
            Self::OutOfIps => "out_of_ips",
            Self::AlreadyAllocated => "already_allocated",
            Self::NotInPool => "not_in_pool",
        }
    }
}

impl fmt::Display for ConditionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's allocation condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamCondition {
    /// The first problem found, or `Satisfied`.
    pub reason: ConditionReason,
    /// Human-readable detail (every problem, `; `-separated).
    pub message: String,
}

impl IpamCondition {
    /// Whether the request is fully satisfied.
    pub fn is_satisfied(&self) -> bool {
        self.reason == ConditionReason::Satisfied
    }
}

/// An address assigned to a service and the pool it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedIp {
    /// The address.
    pub ip: IpAddr,
    /// The pool's name.
    pub pool: String,
}

/// The outcome for one managed service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// The service.
    pub service: ServiceName,
    /// Assigned addresses, sorted (what goes into `status.loadBalancer.ingress`).
    pub ips: Vec<AssignedIp>,
    /// The condition.
    pub condition: IpamCondition,
}

/// Usage of one pool after allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// The pool's name.
    pub name: String,
    /// `spec.disabled`.
    pub disabled: bool,
    /// Allocatable addresses (saturating).
    pub total: u128,
    /// Addresses of the pool assigned to any service.
    pub used: u128,
    /// `total - used` (0 for disabled pools, which hand out nothing new).
    pub available: u128,
}

/// The result of [`allocate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpamResult {
    /// Managed services, in processing order.
    pub services: Vec<ServiceAllocation>,
    /// Pools, by name.
    pub pools: Vec<PoolUsage>,
}

impl IpamResult {
    /// The allocation of one service.
    pub fn service(&self, name: &ServiceName) -> Option<&ServiceAllocation> {
        self.services.iter().find(|s| &s.service == name)
    }

    /// The assigned addresses of one service (empty when unmanaged or unsatisfied).
    pub fn ips(&self, name: &ServiceName) -> Vec<IpAddr> {
        self.service(name)
            .map(|s| s.ips.iter().map(|a| a.ip).collect())
            .unwrap_or_default()
    }
}

struct Work<'a> {
    svc: &'a Service,
    name: ServiceName,
    ips: Vec<AssignedIp>,
    problems: Vec<(ConditionReason, String)>,
}

/// Assigns IPs to every managed service in `services` from `pools`. Same inputs (in any
/// order) give the same result. Pools with a duplicate name after the first are ignored.
pub fn allocate(pools: &[IpPool], services: &[Service]) -> IpamResult {
    let mut pools: Vec<&IpPool> = pools.iter().collect();
    pools.sort_by(|a, b| a.name().cmp(b.name()));
    pools.dedup_by(|a, b| a.name() == b.name());

    let mut work: Vec<Work> = services
        .iter()
        .filter(|s| is_lbipam_managed(s))
        .map(|svc| Work {
            svc,
            name: svc.name(),
            ips: Vec::new(),
            problems: Vec::new(),
        })
        .collect();
    work.sort_by(|a, b| {
        let key = |w: &Work| {
            (
                w.svc.meta.creation_timestamp.is_none(),
                w.svc.meta.creation_timestamp.clone(),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    work.dedup_by(|a, b| a.name == b.name);

    let mut used: BTreeMap<IpAddr, ServiceName> = BTreeMap::new();
    let pool_for = |ip: &IpAddr, svc: &Service, allow_disabled: bool| {
        pools
            .iter()
            .find(|p| (allow_disabled || !p.disabled) && p.selects(svc) && p.contains(ip))
            .map(|p| p.name().to_string())
    };

    // Pass 1: keep what the service already has.
    for w in &mut work {
        let requested = w.svc.lb_requested_ips();
        let wanted = wanted_families(w.svc);
        for ip in &w.svc.ingress_ips {
            if used.contains_key(ip) {
                continue;
            }
            if requested.is_empty() {
                let fam = IpFamily::of(ip);
                if !wanted.contains(&fam) || w.ips.iter().any(|a| IpFamily::of(&a.ip) == fam) {
                    continue;
                }
            } else if !requested.contains(ip) {
                continue;
            }
            if let Some(pool) = pool_for(ip, w.svc, true) {
                used.insert(*ip, w.name.clone());
                w.ips.push(AssignedIp { ip: *ip, pool });
            }
        }
    }

    // Pass 2: explicit requests, all or nothing.
    for w in &mut work {
        let requested = w.svc.lb_requested_ips();
        let mut grant = Vec::new();
        for ip in requested
            .iter()
            .filter(|ip| !w.ips.iter().any(|a| a.ip == **ip))
        {
            if let Some(owner) = used.get(ip) {
                w.problems.push((
                    ConditionReason::AlreadyAllocated,
                    format!("IP {ip} is already allocated to {owner}"),
                ));
            } else if let Some(pool) = pool_for(ip, w.svc, false) {
                grant.push(AssignedIp { ip: *ip, pool });
            } else {
                let holder = pools.iter().find(|p| p.contains(ip));
                let msg = match holder {
                    Some(p) if p.disabled => {
                        format!("IP {ip} is in pool {} which is disabled", p.name())
                    }
                    Some(p) => format!(
                        "IP {ip} is in pool {} which does not select this service",
                        p.name()
                    ),
                    None => format!("IP {ip} is not in any pool"),
                };
                w.problems.push((ConditionReason::NotInPool, msg));
            }
        }
        if w.problems.is_empty() {
            for a in grant {
                used.insert(a.ip, w.name.clone());
                w.ips.push(a);
            }
        }
    }

    // Pass 3: dynamic allocation for services without requests.
    for w in &mut work {
        if !w.svc.lb_requested_ips().is_empty() {
            continue;
        }
        for fam in wanted_families(w.svc) {
            if w.ips.iter().any(|a| IpFamily::of(&a.ip) == fam) {
                continue;
            }
            let candidates: Vec<&&IpPool> = pools
                .iter()
                .filter(|p| !p.disabled && p.has_family(fam) && p.selects(w.svc))
                .collect();
            let found = candidates.iter().find_map(|p| {
                p.ranges()
                    .iter()
                    .filter(|r| r.family() == fam)
                    .find_map(|r| first_free(r, &used))
                    .map(|ip| AssignedIp {
                        ip,
                        pool: p.name().to_string(),
                    })
            });
            match found {
                Some(a) => {
                    used.insert(a.ip, w.name.clone());
                    w.ips.push(a);
                }
                None if candidates.is_empty() => w.problems.push((
                    ConditionReason::NoPool,
                    format!("no enabled {} pool selects this service", family_name(fam)),
                )),
                None => {
                    let names: Vec<&str> = candidates.iter().map(|p| p.name()).collect();
                    w.problems.push((
                        ConditionReason::OutOfIps,
                        format!(
                            "no free {} address in pool(s) {}",
                            family_name(fam),
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
    }

    let services = work
        .into_iter()
        .map(|mut w| {
            w.ips.sort_by_key(|a| a.ip);
            let condition = match w.problems.first() {
                None => IpamCondition {
                    reason: ConditionReason::Satisfied,
                    message: w
                        .ips
                        .iter()
                        .map(|a| format!("{} from pool {}", a.ip, a.pool))
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                Some((reason, _)) => IpamCondition {
                    reason: *reason,
                    message: w
                        .problems
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                },
            };
            ServiceAllocation {
                service: w.name,
                ips: w.ips,
                condition,
            }
        })
        .collect();

    let pools = pools
        .iter()
        .map(|p| {
            let total = p.size();
            let used_here = used.keys().filter(|ip| p.contains(ip)).count() as u128;
            PoolUsage {
                name: p.name().to_string(),
                disabled: p.disabled,
                total,
                used: used_here,
                available: if p.disabled {
                    0
                } else {
                    total.saturating_sub(used_here)
                },
            }
        })
        .collect();

    IpamResult { services, pools }
}

fn wanted_families(svc: &Service) -> Vec<IpFamily> {
    match svc.ip_family_policy {
        IpFamilyPolicy::SingleStack => svc.ip_families.iter().take(1).copied().collect(),
        _ => svc.ip_families.clone(),
    }
}

fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// The lowest address of `range` not in `used`; walks only the used addresses inside it.
fn first_free(range: &IpRange, used: &BTreeMap<IpAddr, ServiceName>) -> Option<IpAddr> {
    let fam = range.family();
    let last = to_u128(&range.last);
    let mut candidate = to_u128(&range.first);
    for ip in used
        .range(range.first..=range.last)
        .map(|(ip, _)| to_u128(ip))
    {
        if ip != candidate {
            break;
        }
        if candidate == last {
            return None;
        }
        candidate += 1;
    }
    Some(from_u128(fam, candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> IpPool {
        IpPool::parse(&serde_yaml::from_str(s).unwrap()).unwrap()
    }

    fn svc(s: &str) -> Service {
        Service::parse(&serde_yaml::from_str(s).unwrap()).unwrap()
    }

    fn lb(ns: &str, name: &str, extra_spec: &str) -> Service {
        svc(&format!(
            "metadata: {{name: {name}, namespace: {ns}}}\nspec: {{type: LoadBalancer{extra_spec}}}"
        ))
    }

    #[test]
    fn first_free_skips_used() {
        let p = pool("metadata: {name: p}\nspec: {blocks: [{start: 10.0.0.1, stop: 10.0.0.3}]}");
        let r = p.ranges()[0];
        let mut used = BTreeMap::new();
        assert_eq!(first_free(&r, &used), Some("10.0.0.1".parse().unwrap()));
        used.insert("10.0.0.1".parse().unwrap(), ServiceName::default());
        used.insert("10.0.0.3".parse().unwrap(), ServiceName::default());
        assert_eq!(first_free(&r, &used), Some("10.0.0.2".parse().unwrap()));
        used.insert("10.0.0.2".parse().unwrap(), ServiceName::default());
        assert_eq!(first_free(&r, &used), None);
    }

    #[test]
    fn unmanaged_classes_are_skipped() {
        let p = pool("metadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/30}]}");
        let other = lb("n", "a", ", loadBalancerClass: example.com/lb");
        let l2 = lb("n", "b", ", loadBalancerClass: io.cilium/l2-announcer");
        let r = allocate(&[p], &[other, l2]);
        assert_eq!(r.services.len(), 1);
        assert_eq!(
            r.ips(&ServiceName::new("n", "b")),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn exhaustion_is_a_condition() {
        let p = pool("metadata: {name: tiny}\nspec: {blocks: [{cidr: 10.0.0.0/32}]}");
        let r = allocate(&[p], &[lb("n", "a", ""), lb("n", "b", "")]);
        assert!(r.services[0].condition.is_satisfied());
        let c = &r.services[1].condition;
        assert_eq!(c.reason, ConditionReason::OutOfIps);
        assert_eq!(c.message, "no free IPv4 address in pool(s) tiny");
        assert_eq!((r.pools[0].used, r.pools[0].available), (1, 0));
    }

    #[test]
    fn no_pool_for_family() {
        let p = pool("metadata: {name: v4}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}");
        let s = lb("n", "a", ", ipFamilies: [IPv6]");
        let r = allocate(&[p], &[s]);
        assert_eq!(r.services[0].condition.reason, ConditionReason::NoPool);
    }
}
