//! IPv4/IPv6 prefixes: parsing, containment and canonical display.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP prefix with host bits cleared. Orders IPv4 before IPv6, then by address, then length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Cidr {
    v6: bool,
    addr: u128,
    len: u8,
}

impl Cidr {
    /// Parses `addr/len` (or a bare address as a host prefix); host bits are cleared.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (ip, len) = match s.trim().split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = ip.parse().ok()?;
        let (v6, addr, bits) = match ip {
            IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32u8),
            IpAddr::V6(a) => (true, u128::from(a), 128u8),
        };
        let len = match len {
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().ok()?
            }
            Some(_) => return None,
            None => bits,
        };
        if len > bits {
            return None;
        }
        Some(Cidr {
            v6,
            addr: mask(addr, len, bits),
            len,
        })
    }

    fn bits(&self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    /// Whether `other` lies inside (or equals) this prefix.
    pub(crate) fn contains(&self, other: &Cidr) -> bool {
        self.v6 == other.v6
            && other.len >= self.len
            && mask(other.addr, self.len, self.bits()) == self.addr
    }

    /// Whether this is `0.0.0.0/0` or `::/0`.
    pub(crate) fn is_default(&self) -> bool {
        self.len == 0
    }

    /// Whether this is an IPv6 prefix.
    pub(crate) fn is_v6(&self) -> bool {
        self.v6
    }
}

fn mask(addr: u128, len: u8, bits: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let shift = u32::from(bits - len);
    let m = if shift >= 128 { 0 } else { u128::MAX << shift };
    addr & m
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            write!(f, "{}/{}", Ipv6Addr::from(self.addr), self.len)
        } else {
            // The address was built from a u32, so the truncation is lossless.
            write!(f, "{}/{}", Ipv4Addr::from(self.addr as u32), self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!(
            Cidr::parse("10.1.2.3/8").map(|c| c.to_string()),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(
            Cidr::parse("10.1.2.3").map(|c| c.to_string()),
            Some("10.1.2.3/32".into())
        );
        assert_eq!(
            Cidr::parse("2001:db8::1/32").map(|c| c.to_string()),
            Some("2001:db8::/32".into())
        );
        assert_eq!(
            Cidr::parse("0.0.0.0/0").map(|c| c.to_string()),
            Some("0.0.0.0/0".into())
        );
        assert_eq!(
            Cidr::parse("::/0").map(|c| c.to_string()),
            Some("::/0".into())
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/",
            "x",
            "10.0.0.0/-1",
            "::/129",
            "",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn containment() {
        let p = |s| Cidr::parse(s).unwrap();
        assert!(p("10.0.0.0/8").contains(&p("10.1.0.0/16")));
        assert!(p("10.0.0.0/8").contains(&p("10.0.0.0/8")));
        assert!(!p("10.1.0.0/16").contains(&p("10.0.0.0/8")));
        assert!(!p("10.0.0.0/8").contains(&p("11.0.0.0/16")));
        assert!(p("0.0.0.0/0").contains(&p("192.168.1.1/32")));
        assert!(!p("0.0.0.0/0").contains(&p("::1/128")));
        assert!(p("::/0").contains(&p("2001:db8::/32")));
    }
}
