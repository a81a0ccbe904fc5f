//! `CiliumLoadBalancerIPPool` (`cilium.io/v2alpha1` and `cilium.io/v2`): the address blocks
//! LB-IPAM allocates from and which services may use them.
//!
//! First and last addresses: Cilium's v2 CRD documents an unset `spec.allowFirstLastIPs` as
//! `Yes`. Lumen keeps the older, conservative default instead: when the field is unset the
//! network and broadcast addresses of IPv4 CIDR blocks larger than /31 are never handed out
//! (on a shared L2 segment they are unusable); IPv6 has no broadcast, so nothing is reserved.
//! An explicit `No` reserves the first and last address of IPv4 blocks larger than /31 and
//! IPv6 blocks larger than /127 (Cilium's meaning); an explicit `Yes` reserves nothing.
//! `start`/`stop` ranges never reserve anything.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_yaml::Value;

use crate::error::ParseError;
use crate::field::{child, ip, join, mapping, opt_bool, opt_str, seq};
use crate::meta::{expect_kind, ObjectMeta};
use crate::selector::LabelSelector;
use crate::service::{IpFamily, Service};

/// Virtual label carrying a service's namespace, matched by pool selectors as in Cilium.
pub const LABEL_SERVICE_NAMESPACE: &str = "io.kubernetes.service.namespace";
/// Virtual label carrying a service's name, matched by pool selectors as in Cilium.
pub const LABEL_SERVICE_NAME_VIRTUAL: &str = "io.kubernetes.service.name";

/// One entry of `spec.blocks` (or the deprecated `spec.cidrs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolBlock {
    /// `cidr` (host bits, if any, are cleared).
    Cidr(IpNet),
    /// `start` .. `stop`, inclusive; `stop` defaults to `start`.
    Range {
        /// First address.
        start: IpAddr,
        /// Last address.
        stop: IpAddr,
    },
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    /// First address.
    pub first: IpAddr,
    /// Last address (same family as `first`, not below it).
    pub last: IpAddr,
}

impl IpRange {
    /// Whether `addr` is inside the range.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        IpFamily::of(addr) == IpFamily::of(&self.first) && self.first <= *addr && *addr <= self.last
    }

    /// Number of addresses (saturating at `u128::MAX` for the whole IPv6 space).
    pub fn len(&self) -> u128 {
        (to_u128(&self.last) - to_u128(&self.first)).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.first)
    }
}

/// A parsed `CiliumLoadBalancerIPPool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    /// Metadata (cluster-scoped: the name identifies the pool).
    pub meta: ObjectMeta,
    /// `spec.blocks`.
    pub blocks: Vec<PoolBlock>,
    /// `spec.serviceSelector`; `None` selects every service.
    pub service_selector: Option<LabelSelector>,
    /// `spec.disabled`: no new allocations; existing ones are kept.
    pub disabled: bool,
    /// `spec.allowFirstLastIPs` (`None` when unset; see the module docs).
    pub allow_first_last_ips: Option<bool>,
    ranges: Vec<IpRange>,
}

impl IpPool {
    /// Parses a full pool object (`kind`, when present, must be `CiliumLoadBalancerIPPool`;
    /// `apiVersion`, when present, `cilium.io/v2alpha1` or `cilium.io/v2`).
    pub fn parse(object: &Value) -> Result<Self, ParseError> {
        expect_kind(object, &["CiliumLoadBalancerIPPool"])?;
        mapping(object, "")?;
        match opt_str(object, "apiVersion", "")? {
            None | Some("cilium.io/v2alpha1") | Some("cilium.io/v2") => {}
            Some(other) => {
                return Err(ParseError::UnknownValue {
                    path: "apiVersion".into(),
                    what: "apiVersion",
                    value: other.to_string(),
                })
            }
        }
        let meta = ObjectMeta::parse(object)?;
        let spec = child(object, "spec").ok_or_else(|| ParseError::MissingField {
            path: "spec".into(),
        })?;
        mapping(spec, "spec")?;
        let key = if child(spec, "blocks").is_some() {
            "blocks"
        } else {
            "cidrs"
        };
        let mut blocks = Vec::new();
        for (i, b) in seq(spec, key, "spec")?.iter().enumerate() {
            blocks.push(parse_block(b, &format!("spec.{key}[{i}]"))?);
        }
        let service_selector = child(spec, "serviceSelector")
            .map(|s| LabelSelector::parse(s, "spec.serviceSelector"))
            .transpose()?;
        let allow_first_last_ips = match child(spec, "allowFirstLastIPs") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "Yes" => Some(true),
            Some(Value::String(s)) if s == "No" => Some(false),
            Some(other) => {
                return Err(ParseError::UnknownValue {
                    path: "spec.allowFirstLastIPs".into(),
                    what: "value (expected Yes or No)",
                    value: serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                })
            }
        };
        let ranges = effective_ranges(&blocks, allow_first_last_ips);
        Ok(Self {
            meta,
            blocks,
            service_selector,
            disabled: opt_bool(spec, "disabled", "spec")?.unwrap_or(false),
            allow_first_last_ips,
            ranges,
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// The allocatable addresses: blocks minus reserved first/last addresses, sorted and
    /// merged so overlapping blocks count once.
    pub fn ranges(&self) -> &[IpRange] {
        &self.ranges
    }

    /// Whether `addr` is allocatable from this pool.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(addr))
    }

    /// Whether the pool has allocatable addresses of `family`.
    pub fn has_family(&self, family: IpFamily) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// Number of allocatable addresses (saturating).
    pub fn size(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.len()))
    }

    /// Whether the pool's `serviceSelector` selects `svc`. Besides the service's labels the
    /// selector sees `io.kubernetes.service.namespace` and `io.kubernetes.service.name`.
    pub fn selects(&self, svc: &Service) -> bool {
        let Some(sel) = &self.service_selector else {
            return true;
        };
        let mut labels: BTreeMap<String, String> = svc.meta.labels.clone();
        labels.insert(
            LABEL_SERVICE_NAMESPACE.into(),
            svc.meta.namespace_or_default().to_string(),
        );
        labels.insert(LABEL_SERVICE_NAME_VIRTUAL.into(), svc.meta.name.clone());
        sel.matches(&labels)
    }
}

fn parse_block(v: &Value, path: &str) -> Result<PoolBlock, ParseError> {
    mapping(v, path)?;
    if let Some(c) = opt_str(v, "cidr", path)? {
        let net: IpNet = c.trim().parse().map_err(|_| ParseError::InvalidValue {
            path: join(path, "cidr"),
            reason: format!("invalid CIDR \"{c}\""),
        })?;
        return Ok(PoolBlock::Cidr(net.trunc()));
    }
    let Some(start) = opt_str(v, "start", path)? else {
        return Err(ParseError::MissingField {
            path: join(path, "cidr"),
        });
    };
    let start = ip(start, &join(path, "start"))?;
    let stop = match opt_str(v, "stop", path)? {
        None => start,
        Some(s) => ip(s, &join(path, "stop"))?,
    };
    if IpFamily::of(&start) != IpFamily::of(&stop) || stop < start {
        return Err(ParseError::InvalidValue {
            path: join(path, "stop"),
            reason: format!(
                "{stop} is not an address of the same family at or after start {start}"
            ),
        });
    }
    Ok(PoolBlock::Range { start, stop })
}

fn effective_ranges(blocks: &[PoolBlock], allow_first_last: Option<bool>) -> Vec<IpRange> {
    let mut raw: Vec<(IpFamily, u128, u128)> = Vec::new();
    for b in blocks {
        match b {
            PoolBlock::Range { start, stop } => {
                raw.push((IpFamily::of(start), to_u128(start), to_u128(stop)))
            }
            PoolBlock::Cidr(net) => {
                let first = net.network();
                let last = net.broadcast();
                let family = IpFamily::of(&first);
                let (lo, hi) = (to_u128(&first), to_u128(&last));
                let reserve = match (family, allow_first_last) {
                    (_, Some(true)) => false,
                    (IpFamily::V4, _) => net.prefix_len() < 31,
                    (IpFamily::V6, Some(false)) => net.prefix_len() < 127,
                    (IpFamily::V6, None) => false,
                };
                if reserve {
                    raw.push((family, lo + 1, hi - 1));
                } else {
                    raw.push((family, lo, hi));
                }
            }
        }
    }
    raw.sort();
    let mut merged: Vec<(IpFamily, u128, u128)> = Vec::new();
    for (f, lo, hi) in raw {
        match merged.last_mut() {
            Some((lf, _, lhi)) if *lf == f && lo <= lhi.saturating_add(1) => *lhi = (*lhi).max(hi),
            _ => merged.push((f, lo, hi)),
        }
    }
    merged
        .into_iter()
        .map(|(f, lo, hi)| IpRange {
            first: from_u128(f, lo),
            last: from_u128(f, hi),
        })
        .collect()
}

/// The address as an integer (IPv4 in the low 32 bits).
pub(crate) fn to_u128(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// The inverse of [`to_u128`] for `family` (IPv4 values are truncated to 32 bits).
pub(crate) fn from_u128(family: IpFamily, v: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Result<IpPool, ParseError> {
        IpPool::parse(&serde_yaml::from_str(s).unwrap())
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reserves_network_and_broadcast_by_default() {
        let p = pool("metadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/30}, {cidr: 10.0.1.0/31}, {cidr: 10.0.2.7/32}, {cidr: 'fd00::/126'}]}").unwrap();
        assert!(
            !p.contains(&a("10.0.0.0"))
                && p.contains(&a("10.0.0.1"))
                && !p.contains(&a("10.0.0.3"))
        );
        assert!(
            p.contains(&a("10.0.1.0")) && p.contains(&a("10.0.1.1")) && p.contains(&a("10.0.2.7"))
        );
        assert!(p.contains(&a("fd00::")));
        assert_eq!(p.size(), 2 + 2 + 1 + 4);
        let yes = pool(
            "metadata: {name: p}\nspec: {allowFirstLastIPs: 'Yes', blocks: [{cidr: 10.0.0.0/30}]}",
        )
        .unwrap();
        assert_eq!(yes.size(), 4);
        let no = pool(
            "metadata: {name: p}\nspec: {allowFirstLastIPs: 'No', blocks: [{cidr: 'fd00::/126'}]}",
        )
        .unwrap();
        assert_eq!(no.size(), 2);
    }

    #[test]
    fn ranges_merge_and_count_once() {
        let p = pool("metadata: {name: p}\nspec: {blocks: [{start: 10.0.0.10, stop: 10.0.0.20}, {start: 10.0.0.15, stop: 10.0.0.30}, {start: 10.0.0.40}]}").unwrap();
        assert_eq!(p.ranges().len(), 2);
        assert_eq!(p.size(), 21 + 1);
        let big = pool("metadata: {name: p}\nspec: {blocks: [{cidr: '::/0'}]}").unwrap();
        assert_eq!(big.size(), u128::MAX);
    }

    #[test]
    fn errors_name_paths() {
        let e = pool("metadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/33}]}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.blocks[0].cidr: invalid CIDR \"10.0.0.0/33\""
        );
        let e = pool("metadata: {name: p}\nspec: {blocks: [{start: 10.0.0.9, stop: 10.0.0.1}]}")
            .unwrap_err();
        assert!(e.to_string().starts_with("spec.blocks[0].stop:"));
        let e = pool("metadata: {name: p}\nspec: {blocks: [{}]}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.blocks[0].cidr: required field is missing"
        );
        let e = pool("apiVersion: cilium.io/v1\nmetadata: {name: p}\nspec: {}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "apiVersion: unknown apiVersion \"cilium.io/v1\""
        );
    }
}
