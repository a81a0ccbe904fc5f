//! Decoding ring-buffer records: validate the versioned header, then dispatch on its kind.
//!
//! A record that is shorter than its header claims, of an unknown kind, or of a version
//! newer than this agent knows is refused with a typed error (the reader counts those and
//! reports them) — never misread.

use lumen_abi::{
    kind, DropRecord, PolicyVerdictRecord, RecordHeader, TraceRecord, TranslationRecord,
    DROP_VERSION, POLICY_VERDICT_VERSION, TRACE_VERSION, TRANSLATION_VERSION,
};

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or the body needs.
    #[error("truncated record: {have} bytes, need {need}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A kind this agent does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A body version newer than this agent understands (the eBPF object is newer).
    #[error(
        "record kind {kind} version {version} is newer than this agent supports ({supported})"
    )]
    FutureVersion {
        /// The kind.
        kind: u8,
        /// Its version in the record.
        version: u8,
        /// The newest version this agent reads.
        supported: u8,
    },
    /// A body version older than this agent reads (an object from before a layout change).
    #[error("record kind {kind} version {version} is older than this agent reads ({supported}); restart the agent so it loads its own programs")]
    OldVersion {
        /// The kind.
        kind: u8,
        /// Its version in the record.
        version: u8,
        /// The version this agent reads.
        supported: u8,
    },
}

/// One decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A trace record.
    Trace(TraceRecord),
    /// A drop record.
    Drop(DropRecord),
    /// A policy verdict for a new connection.
    PolicyVerdict(PolicyVerdictRecord),
    /// A service translation of a new connection.
    Translation(TranslationRecord),
}

impl Record {
    /// The common header.
    pub fn header(&self) -> &RecordHeader {
        match self {
            Record::Trace(t) => &t.hdr,
            Record::Drop(d) => &d.hdr,
            Record::PolicyVerdict(p) => &p.hdr,
            Record::Translation(t) => &t.hdr,
        }
    }

    /// The packet.
    pub fn packet(&self) -> &lumen_abi::PacketInfo {
        match self {
            Record::Trace(t) => &t.pkt,
            Record::Drop(d) => &d.pkt,
            Record::PolicyVerdict(p) => &p.pkt,
            Record::Translation(t) => &t.pkt,
        }
    }

    /// The policy decision, for drops and verdicts.
    pub fn policy(&self) -> Option<&lumen_abi::PolicyInfo> {
        match self {
            Record::Trace(_) | Record::Translation(_) => None,
            Record::Drop(d) => Some(&d.policy),
            Record::PolicyVerdict(p) => Some(&p.policy),
        }
    }
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = core::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            need,
            have: bytes.len(),
        });
    }
    // SAFETY: length checked above; T is a plain-old-data ABI type valid for any bit
    // pattern, and read_unaligned does not require alignment.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

fn check_version(hdr: &RecordHeader, supported: u8) -> Result<(), DecodeError> {
    if hdr.version > supported {
        return Err(DecodeError::FutureVersion {
            kind: hdr.kind,
            version: hdr.version,
            supported,
        });
    }
    Ok(())
}

/// Decodes one record from the bytes of a ring-buffer entry.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let hdr: RecordHeader = read(bytes)?;
    if (hdr.len as usize) > bytes.len() {
        return Err(DecodeError::Truncated {
            need: hdr.len as usize,
            have: bytes.len(),
        });
    }
    match hdr.kind {
        kind::TRACE => {
            check_version(&hdr, TRACE_VERSION)?;
            Ok(Record::Trace(read(bytes)?))
        }
        kind::DROP => {
            check_version(&hdr, DROP_VERSION)?;
            if hdr.version < DROP_VERSION {
                // Version 1 had no policy block: a different layout.
                return Err(DecodeError::OldVersion {
                    kind: hdr.kind,
                    version: hdr.version,
                    supported: DROP_VERSION,
                });
            }
            Ok(Record::Drop(read(bytes)?))
        }
        kind::POLICY_VERDICT => {
            check_version(&hdr, POLICY_VERDICT_VERSION)?;
            Ok(Record::PolicyVerdict(read(bytes)?))
        }
        kind::TRANSLATION => {
            check_version(&hdr, TRANSLATION_VERSION)?;
            Ok(Record::Translation(read(bytes)?))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Byte fixtures: records laid out exactly as the eBPF program writes them.
    use lumen_abi::*;

    /// A TCP SYN from 10.100.1.2:40000 to 10.100.1.3:8080 seen leaving the client pod.
    pub fn tcp_syn() -> TraceRecord {
        let mut pkt = PacketInfo::zeroed();
        pkt.src_mac = [0x02, 0, 0, 0, 0, 0x02];
        pkt.dst_mac = [0x02, 0, 0, 0, 0, 0x01];
        pkt.ethertype = 0x0800;
        pkt.ip_version = ipver::V4;
        pkt.l4_proto = proto::TCP;
        pkt.src_ip[..4].copy_from_slice(&[10, 100, 1, 2]);
        pkt.dst_ip[..4].copy_from_slice(&[10, 100, 1, 3]);
        pkt.src_port = 40000;
        pkt.dst_port = 8080;
        pkt.tcp_flags = tcp::SYN;
        pkt.l4_flags = l4_flags::PORTS | l4_flags::TCP_FLAGS;
        TraceRecord {
            hdr: RecordHeader {
                kind: kind::TRACE,
                version: TRACE_VERSION,
                obs_point: obs::FROM_ENDPOINT,
                flags: hdr_flags::REPLY_KNOWN,
                ifindex: 7,
                len: core::mem::size_of::<TraceRecord>() as u16,
                _pad0: 0,
                pkt_len: 74,
                ktime_ns: 1_000_000_000,
            },
            pkt,
            reason: reason::NEW,
            _pad: [0; 7],
            ct_packets: 1,
            ct_bytes: 74,
        }
    }

    /// The bytes of a record as they sit in the ring.
    pub fn bytes<T: Copy>(rec: &T) -> Vec<u8> {
        let n = core::mem::size_of::<T>();
        // SAFETY: T is a repr(C) ABI record with explicit padding.
        unsafe { core::slice::from_raw_parts(rec as *const T as *const u8, n) }.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use lumen_abi::*;

    #[test]
    fn decodes_a_trace_record() {
        let rec = tcp_syn();
        let got = decode(&bytes(&rec)).unwrap();
        assert_eq!(got, Record::Trace(rec));
        assert_eq!(got.header().obs_point, obs::FROM_ENDPOINT);
    }

    #[test]
    fn fixed_offsets_match_the_kernel_layout() {
        // Offsets the eBPF side writes: changing them silently would break old agents.
        let b = bytes(&tcp_syn());
        assert_eq!(b[0], kind::TRACE);
        assert_eq!(b[1], TRACE_VERSION);
        assert_eq!(b[2], obs::FROM_ENDPOINT);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 7);
        assert_eq!(u16::from_le_bytes(b[8..10].try_into().unwrap()), 112);
        assert_eq!(
            u64::from_le_bytes(b[16..24].try_into().unwrap()),
            1_000_000_000
        );
        // PacketInfo starts at 24: src_mac, dst_mac, ethertype, ip version, proto, addrs.
        assert_eq!(b[24 + 14], ipver::V4);
        assert_eq!(b[24 + 15], proto::TCP);
        assert_eq!(&b[24 + 16..24 + 20], &[10, 100, 1, 2]);
        assert_eq!(
            u16::from_le_bytes(b[24 + 48..24 + 50].try_into().unwrap()),
            40000
        );
        assert_eq!(b[88], reason::NEW);
    }

    #[test]
    fn truncated_records_are_refused() {
        let b = bytes(&tcp_syn());
        assert_eq!(
            decode(&b[..10]),
            Err(DecodeError::Truncated { need: 24, have: 10 })
        );
        assert_eq!(
            decode(&b[..50]),
            Err(DecodeError::Truncated {
                need: 112,
                have: 50
            })
        );
        assert!(matches!(decode(&[]), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn unknown_kinds_and_future_versions_are_refused() {
        let mut b = bytes(&tcp_syn());
        b[0] = 77;
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(77)));
        let mut b = bytes(&tcp_syn());
        b[1] = TRACE_VERSION + 1;
        assert_eq!(
            decode(&b),
            Err(DecodeError::FutureVersion {
                kind: kind::TRACE,
                version: TRACE_VERSION + 1,
                supported: TRACE_VERSION
            })
        );
    }

    /// A policy block: endpoint 3 (identity 31002) denied egress to identity 40211 by
    /// rule 7 with an L3+L4 match.
    pub(crate) fn policy_info(verdict: u8) -> PolicyInfo {
        PolicyInfo {
            endpoint_id: 3,
            local_identity: 31002,
            remote_identity: 40211,
            rule_ref: 7,
            direction: direction::EGRESS,
            match_type: 2,
            verdict,
            _pad: [0; 5],
        }
    }

    #[test]
    fn decodes_a_drop_record() {
        let t = tcp_syn();
        let d = DropRecord {
            hdr: RecordHeader {
                kind: kind::DROP,
                version: DROP_VERSION,
                len: 120,
                ..t.hdr
            },
            pkt: t.pkt,
            policy: policy_info(verdict::DENIED),
            drop_reason: drop_reason::POLICY_DENY,
            _pad: [0; 6],
        };
        let b = bytes(&d);
        // The policy block sits after the packet; the reason after the policy block.
        assert_eq!(u32::from_le_bytes(b[88..92].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(b[96..100].try_into().unwrap()), 40211);
        assert_eq!(b[104], direction::EGRESS);
        assert_eq!(u16::from_le_bytes(b[112..114].try_into().unwrap()), 181);
        assert_eq!(decode(&b), Ok(Record::Drop(d)));
        // A version-1 drop (no policy block) is refused, not misread.
        let mut old = b.clone();
        old[1] = 1;
        assert!(matches!(decode(&old), Err(DecodeError::OldVersion { .. })));
    }

    #[test]
    fn decodes_a_policy_verdict_record() {
        let t = tcp_syn();
        let p = PolicyVerdictRecord {
            hdr: RecordHeader {
                kind: kind::POLICY_VERDICT,
                version: POLICY_VERDICT_VERSION,
                len: 112,
                ..t.hdr
            },
            pkt: t.pkt,
            policy: policy_info(verdict::ALLOWED),
        };
        let got = decode(&bytes(&p)).unwrap();
        assert_eq!(got.policy().map(|p| p.verdict), Some(verdict::ALLOWED));
        assert_eq!(got, Record::PolicyVerdict(p));
        // Shorter than its header claims: refused.
        assert!(matches!(
            decode(&bytes(&p)[..100]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn decodes_a_translation_record() {
        let t = tcp_syn();
        let mut frontend = [0u8; 16];
        frontend[..4].copy_from_slice(&[10, 96, 0, 10]);
        let x = TranslationRecord {
            hdr: RecordHeader {
                kind: kind::TRANSLATION,
                version: TRANSLATION_VERSION,
                len: 112,
                ..t.hdr
            },
            pkt: t.pkt,
            frontend: lumen_abi::L4Addr {
                addr: frontend,
                port: 80,
                flags: 0,
                _pad: 0,
            },
            xlate_point: lumen_abi::xlate_point::POST_DIRECTION_FWD,
            _pad: [0; 3],
        };
        let b = bytes(&x);
        // The frontend follows the packet: address, then its port (little-endian here).
        assert_eq!(&b[88..92], &[10, 96, 0, 10]);
        assert_eq!(u16::from_le_bytes(b[104..106].try_into().unwrap()), 80);
        assert_eq!(b[108], 2);
        let got = decode(&b).unwrap();
        assert_eq!(got.policy(), None);
        assert_eq!(got, Record::Translation(x));
        let mut future = b.clone();
        future[1] = TRANSLATION_VERSION + 1;
        assert!(matches!(
            decode(&future),
            Err(DecodeError::FutureVersion { .. })
        ));
    }
}
