//! L4 port selections and their expansion into aligned LPM blocks.

/// IANA protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IANA protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;

/// The protocol of a port selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// TCP, UDP and SCTP.
    Any,
    /// One protocol (IANA number).
    One(u8),
}

impl Proto {
    /// Whether the protocol number is selected.
    pub(crate) fn includes(self, proto: u8) -> bool {
        match self {
            Proto::Any => matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP),
            Proto::One(p) => p == proto,
        }
    }

    /// The concrete protocol numbers selected.
    pub(crate) fn numbers(self) -> Vec<u8> {
        match self {
            Proto::Any => vec![PROTO_TCP, PROTO_UDP, PROTO_SCTP],
            Proto::One(p) => vec![p],
        }
    }
}

/// Which ports a port selection covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortSel {
    /// Every port.
    Any,
    /// An inclusive range (a single port is `lo == hi`).
    Range(u16, u16),
    /// A named container port, resolved against endpoints at resolve time.
    Named(String),
}

/// One port selection of a rule: ports of one protocol (or of TCP/UDP/SCTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortSpec {
    /// Ports.
    pub port: PortSel,
    /// Protocol.
    pub proto: Proto,
}

/// Splits `[lo, hi]` into aligned power-of-two blocks `(first port, prefix bits)`, as an LPM
/// trie needs. `(0, 0)` is every port, `(p, 16)` exactly `p`. Empty when `lo > hi`.
pub fn port_range_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let hi = u32::from(hi);
    let mut cur = u32::from(lo);
    while cur <= hi {
        let mut size: u32 = if cur == 0 {
            1 << 16
        } else {
            1 << cur.trailing_zeros()
        };
        while cur + size - 1 > hi {
            size >>= 1;
        }
        // `cur` never exceeds 65535 inside the loop and size is at most 1<<16.
        out.push((cur as u16, (16 - size.trailing_zeros()) as u8));
        cur += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(blocks: &[(u16, u8)]) -> Vec<u32> {
        blocks
            .iter()
            .flat_map(|&(p, b)| {
                let n = 1u32 << (16 - u32::from(b));
                (u32::from(p)..u32::from(p) + n).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn edge_cases() {
        assert_eq!(port_range_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_range_prefixes(1, 1), vec![(1, 16)]);
        assert_eq!(port_range_prefixes(65535, 65535), vec![(65535, 16)]);
        assert_eq!(port_range_prefixes(0, 0), vec![(0, 16)]);
        assert_eq!(port_range_prefixes(5, 4), vec![]);
        assert_eq!(port_range_prefixes(1, 65535).len(), 16);
        assert_eq!(port_range_prefixes(32768, 65535), vec![(32768, 1)]);
        assert_eq!(
            port_range_prefixes(1000, 2000),
            vec![
                (1000, 13),
                (1008, 12),
                (1024, 7),
                (1536, 8),
                (1792, 9),
                (1920, 10),
                (1984, 12),
                (2000, 16)
            ]
        );
    }

    #[test]
    fn blocks_cover_exactly_the_range() {
        for (lo, hi) in [
            (1000u16, 2000u16),
            (1, 65535),
            (80, 90),
            (0, 1),
            (65000, 65535),
            (7, 7),
        ] {
            let got = expand(&port_range_prefixes(lo, hi));
            let want: Vec<u32> = (u32::from(lo)..=u32::from(hi)).collect();
            assert_eq!(got, want, "{lo}-{hi}");
            for (p, b) in port_range_prefixes(lo, hi) {
                let size = 1u32 << (16 - u32::from(b));
                assert_eq!(u32::from(p) % size, 0, "block {p}/{b} not aligned");
            }
        }
    }

    #[test]
    fn proto_any_expands() {
        assert_eq!(Proto::Any.numbers(), vec![6, 17, 132]);
        assert!(Proto::Any.includes(17));
        assert!(!Proto::One(6).includes(17));
    }
}
