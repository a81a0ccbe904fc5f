//! Record bytes in, ring events out: decode, convert kernel time to wall-clock time, and
//! look both sides up in the ipcache. Kept free of I/O so it can be benchmarked and tested
//! on byte fixtures.

use crate::{
    decode::{decode, DecodeError, Record},
    events::{Event, FlowEvent},
    ipcache::IpCache,
};
use std::{net::IpAddr, sync::Arc};

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i64,
}

fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl Clock {
    /// Measures the current offset between the two clocks.
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    /// A fixed offset (tests).
    pub fn with_offset(offset_ns: i64) -> Self {
        Clock { offset_ns }
    }

    /// Wall-clock ns for a kernel timestamp.
    pub fn wall(&self, ktime_ns: u64) -> i64 {
        ktime_ns as i64 + self.offset_ns
    }
}

/// Turns records into ring events.
pub struct Pipeline {
    /// Time conversion.
    pub clock: Clock,
    /// `<cluster>/<node>`.
    pub node_name: Arc<str>,
    rng: fastrand::Rng,
}

fn ip_of(bytes: &[u8; 16], version: u8) -> Option<IpAddr> {
    match version {
        lumen_abi::ipver::V4 => Some(IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])),
        lumen_abi::ipver::V6 => Some(IpAddr::from(*bytes)),
        _ => None,
    }
}

impl Pipeline {
    /// A pipeline for this node.
    pub fn new(node_name: &str, clock: Clock) -> Self {
        Pipeline {
            clock,
            node_name: node_name.into(),
            rng: fastrand::Rng::new(),
        }
    }

    /// Decodes and enriches one record.
    pub fn ingest(&mut self, bytes: &[u8], ipcache: &IpCache) -> Result<Event, DecodeError> {
        let record = decode(bytes)?;
        let (hdr, pkt) = (record.header(), record.packet());
        let local = ipcache.local(hdr.ifindex);
        let (mut source, mut destination) = match (
            ip_of(&pkt.src_ip, pkt.ip_version),
            ip_of(&pkt.dst_ip, pkt.ip_version),
        ) {
            (Some(s), Some(d)) => (ipcache.lookup(&s), ipcache.lookup(&d)),
            _ => Default::default(),
        };
        let mut policies = None;
        if let Some(info) = record.policy() {
            // The kernel knew the peer by a CIDR identity the address map does not hold.
            if let Some(cidr) = ipcache.cidr_endpoint(info.remote_identity) {
                if info.direction == lumen_abi::direction::EGRESS {
                    destination = cidr;
                } else {
                    source = cidr;
                }
            }
            let named = ipcache.attribution.policies(info);
            if !named.is_empty() {
                policies = Some(Arc::new(named));
            }
        }
        let translated = hdr.flags & lumen_abi::hdr_flags::TRANSLATED != 0;
        let service = |addr: &[u8; 16], port: u16| {
            (pkt.l4_flags & lumen_abi::l4_flags::PORTS != 0)
                .then(|| {
                    ipcache
                        .services
                        .lookup(addr, port, pkt.l4_proto, translated)
                })
                .flatten()
        };
        Ok(Event::Flow(FlowEvent {
            time_ns: self.clock.wall(hdr.ktime_ns),
            uuid: self.rng.u128(..),
            record,
            source,
            destination,
            endpoint_id: local.map(|l| l.endpoint.id).unwrap_or(0),
            ifname: ipcache.ifname(hdr.ifindex),
            node_name: self.node_name.clone(),
            policies,
            source_service: service(&pkt.src_ip, pkt.src_port),
            // A translation names exactly the frontend the client used.
            destination_service: match &record {
                Record::Translation(t) => {
                    ipcache
                        .services
                        .lookup(&t.frontend.addr, t.frontend.port, pkt.l4_proto, false)
                }
                _ => service(&pkt.dst_ip, pkt.dst_port),
            },
            l7: None,
        }))
    }
}
