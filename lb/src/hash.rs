//! Stable hashes the eBPF side can reproduce: 32-bit FNV-1a over a fixed byte layout of the
//! connection 5-tuple.
//!
//! FNV-1a is a byte loop with one xor and one multiply, bounded by the (at most 37-byte)
//! input, so the verifier accepts it and the datapath computes bit-identical values:
//!
//! ```text
//! h = 0x811c9dc5
//! for b in bytes: h = (h ^ b) * 0x01000193   (wrapping u32)
//! ```

use std::net::IpAddr;

/// FNV-1a 32-bit offset basis.
pub const FNV32_OFFSET: u32 = 0x811c_9dc5;
/// FNV-1a 32-bit prime.
pub const FNV32_PRIME: u32 = 0x0100_0193;
/// FNV-1a 64-bit offset basis.
pub const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV32_OFFSET, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV32_PRIME)
    })
}

/// 64-bit FNV-1a of `bytes`, starting from `basis` (use [`FNV64_OFFSET`] for plain FNV-1a).
pub fn fnv1a_64(basis: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(basis, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV64_PRIME))
}

/// A connection's 5-tuple as seen by the load balancer (client → frontend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Client address.
    pub src: IpAddr,
    /// Frontend address.
    pub dst: IpAddr,
    /// Client port (0 for protocols without ports).
    pub src_port: u16,
    /// Frontend port.
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
}

impl FiveTuple {
    /// Maximum encoded length (two IPv6 addresses).
    pub const MAX_LEN: usize = 37;

    /// The hashed bytes, in this order: source address, destination address (each 4 bytes for
    /// IPv4, 16 for IPv6, network order), source port and destination port (big-endian
    /// u16), protocol (one byte). 13 bytes for IPv4, 37 for IPv6. Returns the buffer and the
    /// used length.
    pub fn encode(&self) -> ([u8; Self::MAX_LEN], usize) {
        let mut buf = [0u8; Self::MAX_LEN];
        let mut n = 0;
        for addr in [self.src, self.dst] {
            match addr {
                IpAddr::V4(a) => {
                    buf[n..n + 4].copy_from_slice(&a.octets());
                    n += 4;
                }
                IpAddr::V6(a) => {
                    buf[n..n + 16].copy_from_slice(&a.octets());
                    n += 16;
                }
            }
        }
        buf[n..n + 2].copy_from_slice(&self.src_port.to_be_bytes());
        buf[n + 2..n + 4].copy_from_slice(&self.dst_port.to_be_bytes());
        buf[n + 4] = self.protocol;
        (buf, n + 5)
    }

    /// The 32-bit FNV-1a of [`FiveTuple::encode`]; the input of
    /// [`Selector::select`](crate::Selector::select) in Maglev mode.
    pub fn hash(&self) -> u32 {
        let (buf, n) = self.encode();
        fnv1a_32(&buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_vectors() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a_64(FNV64_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn five_tuple_layout_and_stability() {
        let t = FiveTuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: 40000,
            dst_port: 53,
            protocol: 17,
        };
        let (buf, n) = t.encode();
        assert_eq!(
            &buf[..n],
            &[10, 0, 0, 1, 10, 96, 0, 10, 0x9c, 0x40, 0, 53, 17]
        );
        assert_eq!(t.hash(), fnv1a_32(&buf[..n]));
        let v6 = FiveTuple {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::a".parse().unwrap(),
            ..t
        };
        assert_eq!(v6.encode().1, 37);
        assert_ne!(
            t.hash(),
            FiveTuple {
                src_port: 40001,
                ..t
            }
            .hash()
        );
    }
}
