//! IP address filters: `source_ip`, `destination_ip`, `source_ip_xlated` (exact addresses
//! or CIDRs, IPv4 or IPv6), `ip_version` and `encrypted`.
//!
//! As in Hubble, a value without `/` is an exact address and a value with `/` a CIDR (host
//! bits after the prefix are ignored, `10.1.2.3/8` is `10.0.0.0/8`). Addresses compare by
//! value, so `2001:db8::1` matches a flow carrying `2001:0db8:0:0::1`; an IPv4-mapped IPv6
//! address in a flow matches the IPv4 filters.

use std::net::IpAddr;

use lumen_api::flow::Flow;

use crate::error::FilterError;

/// Which address of the flow's `IP` an [`IpFilter`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpField {
    /// `IP.source`.
    Source,
    /// `IP.destination`.
    Destination,
    /// `IP.source_xlated` (the source before SNAT, when the datapath reports it).
    SourceXlated,
}

/// An address prefix: the network address (host bits cleared) and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cidr {
    V4 { net: u32, len: u8 },
    V6 { net: u128, len: u8 },
}

impl Cidr {
    fn parse(s: &str) -> Option<Self> {
        let (addr, len) = s.split_once('/')?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
            return None;
        }
        let len: u8 = len.parse().ok()?;
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if len <= 32 => Some(Self::V4 {
                net: u32::from(a) & mask32(len),
                len,
            }),
            IpAddr::V6(a) if len <= 128 => Some(Self::V6 {
                net: u128::from(a) & mask128(len),
                len,
            }),
            _ => None,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Self::V4 { net, len }, IpAddr::V4(a)) => u32::from(a) & mask32(len) == net,
            (Self::V6 { net, len }, IpAddr::V6(a)) => u128::from(a) & mask128(len) == net,
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Parses an address as it appears in a flow, folding IPv4-mapped IPv6 to IPv4.
fn parse_addr(s: &str) -> Option<IpAddr> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// A compiled `source_ip` / `destination_ip` / `source_ip_xlated` filter: the flow's address
/// must equal one of `addrs` or fall in one of `cidrs`.
#[derive(Debug, Clone)]
pub(crate) struct IpFilter {
    field: IpField,
    addrs: Vec<IpAddr>,
    cidrs: Vec<Cidr>,
}

impl IpFilter {
    /// Compiles the values of `field_name` (the `FlowFilter` field, for errors).
    pub(crate) fn compile(
        field: IpField,
        field_name: &'static str,
        values: &[String],
    ) -> Result<Self, FilterError> {
        let mut addrs = Vec::new();
        let mut cidrs = Vec::new();
        for value in values {
            let invalid = || FilterError::InvalidIp {
                field: field_name,
                value: value.clone(),
            };
            if value.contains('/') {
                cidrs.push(Cidr::parse(value).ok_or_else(invalid)?);
            } else {
                addrs.push(parse_addr(value).ok_or_else(invalid)?);
            }
        }
        Ok(Self {
            field,
            addrs,
            cidrs,
        })
    }

    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        let Some(ip) = flow.ip.as_ref() else {
            return false;
        };
        let text = match self.field {
            IpField::Source => &ip.source,
            IpField::Destination => &ip.destination,
            IpField::SourceXlated => &ip.source_xlated,
        };
        if text.is_empty() {
            return false;
        }
        let Some(addr) = parse_addr(text) else {
            return false;
        };
        self.addrs.contains(&addr) || self.cidrs.iter().any(|c| c.contains(addr))
    }
}

/// `ip_version`: the flow's `IP.ipVersion` (IP_NOT_USED when the flow has no `IP`) is one of
/// the listed versions.
pub(crate) fn ip_version_matches(versions: &[i32], flow: &Flow) -> bool {
    let version = flow.ip.as_ref().map_or(0, |ip| ip.ip_version);
    versions.contains(&version)
}

/// `encrypted`: the flow's `IP.encrypted` (false when the flow has no `IP`) is one of the
/// listed values.
pub(crate) fn encrypted_matches(values: &[bool], flow: &Flow) -> bool {
    let encrypted = flow.ip.as_ref().is_some_and(|ip| ip.encrypted);
    values.contains(&encrypted)
}
