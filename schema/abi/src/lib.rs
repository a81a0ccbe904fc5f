//! Kernel↔user contract: the records the eBPF programs write into the ring buffer and the
//! keys and values of the maps both sides share.
//!
//! Every type is `#[repr(C)]`, `Copy`, fixed-width and explicitly padded, with its size
//! asserted at compile time, so that the eBPF object and the agent can never disagree about
//! a layout without the build failing. Every ring-buffer record starts with a
//! [`RecordHeader`] whose `kind` selects the body and whose `version` lets the agent refuse
//! (and count) records from a future program instead of misreading them.
//!
//! With the `user` feature the types also implement `aya::Pod` so the agent can read and
//! write them in maps.
#![no_std]

/// Record kinds, numbered like Cilium's monitor message types, which `Flow.event_type.type`
/// carries on the API.
pub mod kind {
    /// A packet was dropped (body: [`super::DropRecord`]).
    pub const DROP: u8 = 1;
    /// A packet was seen at an observation point (body: [`super::TraceRecord`]).
    pub const TRACE: u8 = 4;
    /// A policy decision for a new connection (body: [`super::PolicyVerdictRecord`]).
    pub const POLICY_VERDICT: u8 = 5;
    /// A service translation of a new connection (body: [`super::TranslationRecord`]);
    /// Cilium's "trace-sock" event number.
    pub const TRANSLATION: u8 = 7;
}

/// Current version of each record body. A reader accepts versions up to the one it knows.
pub const TRACE_VERSION: u8 = 1;
/// Current version of [`DropRecord`] (2: carries [`PolicyInfo`]).
pub const DROP_VERSION: u8 = 2;
/// Current version of [`PolicyVerdictRecord`].
pub const POLICY_VERDICT_VERSION: u8 = 1;
/// Current version of [`TranslationRecord`].
pub const TRANSLATION_VERSION: u8 = 1;

/// Observation points, numbered like `flow.TraceObservationPoint`.
pub mod obs {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// Handed to the host stack.
    pub const TO_STACK: u8 = 3;
    /// Leaving a pod (tc ingress on the host side of its veth).
    pub const FROM_ENDPOINT: u8 = 5;
    /// Decrypted by the node's WireGuard device (tc ingress on it).
    pub const FROM_CRYPTO: u8 = 12;
    /// Handed to the node's WireGuard device to be encrypted (redirected there from a
    /// pod's veth).
    pub const TO_CRYPTO: u8 = 13;
    /// Arriving from the network (tc ingress on the node uplink).
    pub const FROM_NETWORK: u8 = 10;
    /// Leaving to the network (tc egress on the node uplink).
    pub const TO_NETWORK: u8 = 11;
    /// Entering a pod (tc egress on the host side of its veth).
    pub const TO_ENDPOINT: u8 = 101;
}

/// Conntrack-derived trace reasons, numbered like `flow.TraceReason`.
pub mod reason {
    /// Unknown (conntrack not consulted, e.g. non-IP traffic).
    pub const UNKNOWN: u8 = 0;
    /// First packet of a connection seen at this interface.
    pub const NEW: u8 = 1;
    /// A further packet in the original direction.
    pub const ESTABLISHED: u8 = 2;
    /// A packet in the reply direction.
    pub const REPLY: u8 = 3;
    /// Traffic related to a tracked connection (e.g. an ICMP error).
    pub const RELATED: u8 = 4;
    /// A TCP connection reopened (SYN on an entry that had closed).
    pub const REOPENED: u8 = 5;
}

/// Bits of [`RecordHeader::flags`].
pub mod hdr_flags {
    /// Conntrack placed the packet in the reply direction.
    pub const IS_REPLY: u8 = 1 << 0;
    /// Conntrack was consulted, so `IS_REPLY` is meaningful (otherwise "unknown").
    pub const REPLY_KNOWN: u8 = 1 << 1;
    /// The packet ended before a header the parser expected (traced as far as it went).
    pub const TRUNCATED: u8 = 1 << 2;
    /// Service load balancing rewrote the packet's destination (from a frontend to a
    /// backend) or, in the reply direction, its source (back to the frontend) here.
    pub const TRANSLATED: u8 = 1 << 3;
    /// The packet crosses between nodes inside the WireGuard tunnel (`IP.encrypted`).
    pub const ENCRYPTED: u8 = 1 << 4;
}

/// Header that starts every ring-buffer record. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of [`kind`].
    pub kind: u8,
    /// Version of the body layout for this kind.
    pub version: u8,
    /// One of [`obs`].
    pub obs_point: u8,
    /// Bits from [`hdr_flags`].
    pub flags: u8,
    /// Interface the program is attached to.
    pub ifindex: u32,
    /// Length of the whole record in bytes, header included.
    pub len: u16,
    /// Explicit padding; zero.
    pub _pad0: u16,
    /// Length of the packet on the wire (`skb->len`).
    pub pkt_len: u32,
    /// `bpf_ktime_get_ns()` when the packet was seen (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 24);

/// IP versions as stored in [`PacketInfo::ip_version`].
pub mod ipver {
    /// Not an IP packet.
    pub const NONE: u8 = 0;
    /// IPv4.
    pub const V4: u8 = 4;
    /// IPv6.
    pub const V6: u8 = 6;
}

/// IANA protocol numbers the parser understands.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits as in the TCP header's 13th byte, plus `NS` from the 12th byte.
pub mod tcp {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
    /// URG.
    pub const URG: u16 = 0x020;
    /// ECE.
    pub const ECE: u16 = 0x040;
    /// CWR.
    pub const CWR: u16 = 0x080;
    /// NS (nonce sum, from the data-offset byte).
    pub const NS: u16 = 0x100;
}

/// Bits of [`PacketInfo::l4_flags`]: which L4 fields were parsed.
pub mod l4_flags {
    /// `src_port`/`dst_port` are valid.
    pub const PORTS: u8 = 1 << 0;
    /// `icmp_type`/`icmp_code` are valid.
    pub const ICMP: u8 = 1 << 1;
    /// `tcp_flags` is valid.
    pub const TCP_FLAGS: u8 = 1 << 2;
}

/// What the parser learnt of a packet, L2 to L4. 64 bytes.
///
/// IPv4 addresses are stored in the first four bytes of the 16-byte fields, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
    /// Ethertype in host order (after a single VLAN tag, if any).
    pub ethertype: u16,
    /// One of [`ipver`].
    pub ip_version: u8,
    /// IP protocol / IPv6 next header of the L4 payload (after extension headers).
    pub l4_proto: u8,
    /// Source address.
    pub src_ip: [u8; 16],
    /// Destination address.
    pub dst_ip: [u8; 16],
    /// L4 source port (host order).
    pub src_port: u16,
    /// L4 destination port (host order).
    pub dst_port: u16,
    /// TCP flags, bits from [`tcp`].
    pub tcp_flags: u16,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Bits from [`l4_flags`].
    pub l4_flags: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<PacketInfo>() == 64);

impl PacketInfo {
    /// All zero: "nothing parsed yet".
    pub const fn zeroed() -> Self {
        PacketInfo {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            ethertype: 0,
            ip_version: 0,
            l4_proto: 0,
            src_ip: [0; 16],
            dst_ip: [0; 16],
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            icmp_type: 0,
            icmp_code: 0,
            l4_flags: 0,
            _pad: [0; 7],
        }
    }
}

/// A packet seen at an observation point ([`kind::TRACE`]). 112 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Common header; `kind == TRACE`.
    pub hdr: RecordHeader,
    /// The parsed packet.
    pub pkt: PacketInfo,
    /// One of [`reason`].
    pub reason: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 7],
    /// Packets of this connection so far at this interface, both directions.
    pub ct_packets: u64,
    /// Bytes of this connection so far at this interface, both directions.
    pub ct_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<TraceRecord>() == 112);

/// Drop reasons the programs emit, numbered like `flow.DropReason`.
pub mod drop_reason {
    /// No rule allows the traffic and the endpoint is default-deny in that direction.
    pub const POLICY_DENIED: u16 = 133;
    /// An explicit deny rule matched.
    pub const POLICY_DENY: u16 = 181;
    /// The destination is a service frontend without backends.
    pub const SERVICE_BACKEND_NOT_FOUND: u16 = 158;
    /// `encryption.strictMode`: pod-to-pod traffic between nodes would have left
    /// unencrypted.
    pub const UNENCRYPTED_TRAFFIC: u16 = 195;
}

/// Traffic directions, numbered like `flow.TrafficDirection`.
pub mod direction {
    /// Entering the endpoint.
    pub const INGRESS: u8 = 1;
    /// Leaving the endpoint.
    pub const EGRESS: u8 = 2;
}

/// Outcomes of a policy decision ([`PolicyInfo::verdict`]).
pub mod verdict {
    /// Allowed by a rule, or the direction is not enforced.
    pub const ALLOWED: u8 = 1;
    /// Denied (the packet is dropped).
    pub const DENIED: u8 = 2;
    /// Would be denied, but audit mode lets it through.
    pub const AUDIT: u8 = 3;
}

/// [`PolicyInfo::rule_ref`] when no rule matched (default deny).
pub const RULE_REF_NONE: u32 = u32::MAX;

/// What a policy decision was based on. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Node-local endpoint id whose policy was evaluated.
    pub endpoint_id: u32,
    /// That endpoint's identity.
    pub local_identity: u32,
    /// The peer's identity, from the kernel ipcache (world when unknown).
    pub remote_identity: u32,
    /// Which rule decided ([`PolicyValue::rule_ref`]), [`RULE_REF_NONE`] for default deny.
    pub rule_ref: u32,
    /// One of [`direction`].
    pub direction: u8,
    /// `flow.policy_match_type` of the matching entry (0 when none matched).
    pub match_type: u8,
    /// One of [`verdict`].
    pub verdict: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<PolicyInfo>() == 24);

/// A dropped packet ([`kind::DROP`]). 120 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropRecord {
    /// Common header; `kind == DROP`.
    pub hdr: RecordHeader,
    /// The parsed packet.
    pub pkt: PacketInfo,
    /// The policy decision behind a policy drop (zero otherwise).
    pub policy: PolicyInfo,
    /// Drop reason, one of [`drop_reason`] (numbered like `flow.DropReason`).
    pub drop_reason: u16,
    /// Explicit padding; zero.
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<DropRecord>() == 120);

/// The policy decision for the first packet of a connection at an enforcing endpoint
/// ([`kind::POLICY_VERDICT`]). 112 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyVerdictRecord {
    /// Common header; `kind == POLICY_VERDICT`.
    pub hdr: RecordHeader,
    /// The parsed packet.
    pub pkt: PacketInfo,
    /// The decision.
    pub policy: PolicyInfo,
}
const _: () = assert!(core::mem::size_of::<PolicyVerdictRecord>() == 112);

/// Key data of the kernel ipcache (LPM trie): an address, IPv4 as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`, prefix length + 96) so both families share one trie. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    /// The address bytes, network order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<IpcacheKey>() == 16);

/// Value of the kernel ipcache. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcacheValue {
    /// Security identity of the address or prefix.
    pub identity: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<IpcacheValue>() == 8);

/// Bits of [`EndpointValue::flags`].
pub mod ep_flags {
    /// Ingress is default-deny: traffic not allowed by a rule is denied.
    pub const INGRESS_ENFORCED: u32 = 1 << 0;
    /// Egress is default-deny.
    pub const EGRESS_ENFORCED: u32 = 1 << 1;
    /// Default-deny on ingress is in audit mode (report AUDIT, let through).
    pub const INGRESS_AUDIT: u32 = 1 << 2;
    /// Default-deny on egress is in audit mode.
    pub const EGRESS_AUDIT: u32 = 1 << 3;
    /// The endpoint's DNS queries (UDP/TCP port 53) go to the DNS proxy ([`crate::DNS_NAT_CAPACITY`]).
    pub const DNS_REDIRECT: u32 = 1 << 4;
}

/// Value of the `ENDPOINTS` hash (key: host-side veth ifindex, `u32`). 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointValue {
    /// Node-local endpoint id (the policy map's `endpoint_id`).
    pub endpoint_id: u32,
    /// The endpoint's identity.
    pub identity: u32,
    /// Bits from [`ep_flags`].
    pub flags: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointValue>() == 16);

/// Key data of the `POLICY` LPM trie. 12 bytes. The prefix always covers `endpoint_id`,
/// `identity` and `direction` (72 bits); 80 adds `proto`; 80 + n adds the first n bits of
/// `port_be`. Identity 0 means "any peer" and is looked up second.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Node-local endpoint id.
    pub endpoint_id: u32,
    /// Peer identity (0: any).
    pub identity: u32,
    /// One of [`direction`].
    pub direction: u8,
    /// IP protocol (meaningful when the prefix covers it).
    pub proto: u8,
    /// Destination port, big-endian so that port prefixes are bit prefixes.
    pub port_be: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);

/// Prefix bits of a [`PolicyKey`] that match any protocol and port.
pub const POLICY_PREFIX_ANY_PROTO: u32 = 72;
/// Prefix bits of a [`PolicyKey`] that match a protocol and any port.
pub const POLICY_PREFIX_PROTO: u32 = 80;
/// Prefix bits of a [`PolicyKey`] that match an exact port.
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Policy actions ([`PolicyValue::action`]).
pub mod action {
    /// Allow.
    pub const ALLOW: u8 = 1;
    /// Deny.
    pub const DENY: u8 = 2;
}

/// Bits of [`PolicyValue::flags`].
pub mod policy_flags {
    /// A deny from an audit-mode policy: report AUDIT, let through.
    pub const AUDIT: u8 = 1 << 0;
}

/// Value of the `POLICY` LPM trie. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyValue {
    /// One of [`action`].
    pub action: u8,
    /// Bits from [`policy_flags`].
    pub flags: u8,
    /// `flow.policy_match_type` of this entry.
    pub match_type: u8,
    /// Explicit padding; zero.
    pub _pad: u8,
    /// The agent's id for the policy this entry comes from (stable while the agent runs).
    pub rule_ref: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8);

/// Conntrack key: one connection as seen at one interface. 44 bytes.
///
/// Normalised so that both directions of a connection hash to the same key with one
/// lookup: the (address, port) pair that orders lower comes first (`src_*`), and
/// [`CtValue::flags`] records which side opened the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// The lower endpoint's address (IPv4 in the first four bytes).
    pub src_ip: [u8; 16],
    /// The higher endpoint's address.
    pub dst_ip: [u8; 16],
    /// The lower endpoint's port; for ICMP echo, the echo identifier.
    pub src_port: u16,
    /// The higher endpoint's port; for ICMP echo, the echo identifier.
    pub dst_port: u16,
    /// Interface the connection was seen on: each endpoint keeps its own view.
    pub ifindex: u32,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 44);

/// Conntrack value. 72 bytes. Index 0 of the arrays is the original direction, 1 the reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtValue {
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
    /// When the connection was first seen (ktime ns).
    pub first_seen_ns: u64,
    /// When the connection was last seen (ktime ns).
    pub last_seen_ns: u64,
    /// When a trace record was last emitted per direction (ktime ns), for aggregation.
    pub last_report_ns: [u64; 2],
    /// TCP flags seen so far per direction.
    pub tcp_flags_seen: [u16; 2],
    /// Bits from [`ct_flags`].
    pub flags: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtValue>() == 72);

/// Bits of [`CtValue::flags`].
pub mod ct_flags {
    /// The side that opened the connection is the key's lower (`src_*`) side.
    pub const OPENED_BY_LOWER: u8 = 1 << 0;
}

/// Monitor aggregation levels (`bpf.monitorAggregation`).
pub mod aggregation {
    /// A trace record for every packet.
    pub const NONE: u32 = 0;
    /// New connections, newly seen TCP flags, and at most once per interval per direction.
    pub const MEDIUM: u32 = 2;
}

/// Runtime configuration the agent writes into the `CONFIG` array (index 0). 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// One of [`aggregation`].
    pub aggregation: u32,
    /// This node's IPv4 address on the uplink (network order): the source of
    /// source-NATed service connections and masqueraded traffic, and the destination of
    /// their replies. Zero when unknown (no source NAT then).
    pub node_ipv4: [u8; 4],
    /// Minimum time between two trace records of one connection direction under `MEDIUM`.
    pub aggregation_interval_ns: u64,
    /// `ipv4NativeRoutingCIDR` (network order): pod traffic to it keeps pod addresses.
    pub native_cidr: [u8; 4],
    /// Its prefix length (0: none configured).
    pub native_prefix: u8,
    /// Bits from [`cfg_flags`].
    pub flags: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 2],
    /// `encryption.strictMode.cidr` (network order): with [`cfg_flags::STRICT_ENCRYPTION`],
    /// traffic between two of its addresses never leaves on the uplink unencrypted.
    pub strict_cidr: [u8; 4],
    /// Its prefix length.
    pub strict_prefix: u8,
    /// Explicit padding; zero.
    pub _pad2: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<DatapathConfig>() == 32);

/// Bits of [`DatapathConfig::flags`].
pub mod cfg_flags {
    /// `bpf.masquerade`: TCP/UDP from pods to addresses outside the native routing CIDR
    /// leave with the node's address (and a port of its choosing).
    pub const MASQUERADE: u8 = 1 << 0;
    /// `kubeProxyReplacement`: services are load-balanced. Without it (and without
    /// masquerading) the programs skip every translation lookup.
    pub const SERVICES: u8 = 1 << 1;
    /// `encryption.enabled`: pod traffic to a `WG_PEERS` prefix is redirected into the
    /// WireGuard device.
    pub const ENCRYPTION: u8 = 1 << 2;
    /// `encryption.strictMode.enabled`: see [`super::DatapathConfig::strict_cidr`].
    pub const STRICT_ENCRYPTION: u8 = 1 << 3;
}

/// Key of the `SERVICES` hash: one frontend. 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Frontend address (IPv4 in the first four bytes, the rest zero, like [`PacketInfo`]).
    pub addr: [u8; 16],
    /// Frontend port, **host order** (like [`PacketInfo::dst_port`]).
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding; zero.
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);

/// Value of the `SERVICES` hash. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceValue {
    /// Number of backends, in `BACKENDS` slots `0..count` of `service_id`. Zero: the
    /// frontend has no backend and new connections to it are dropped.
    pub count: u32,
    /// The agent's id for this frontend (stable while the agent runs), keys `BACKENDS`,
    /// `MAGLEV` and `AFFINITY`.
    pub service_id: u32,
    /// Bits from [`svc_flags`].
    pub flags: u32,
    /// `sessionAffinity: ClientIP` timeout in seconds (with [`svc_flags::AFFINITY`]).
    pub affinity_timeout_s: u32,
}

/// Bits of [`ServiceValue::flags`].
pub mod svc_flags {
    /// Pick the backend of a new connection from the service's `MAGLEV` table with
    /// [`super::five_tuple_hash`] (`loadBalancer.algorithm: maglev`); otherwise at random.
    pub const MAGLEV: u32 = 1 << 0;
    /// `sessionAffinity: ClientIP`: a client's new connections go to its previous backend
    /// (`AFFINITY`) while it is used within [`super::ServiceValue::affinity_timeout_s`].
    pub const AFFINITY: u32 = 1 << 1;
    /// Reachable from outside the node (NodePort, LoadBalancer, external IP): translated
    /// on the uplink too. ClusterIP frontends are translated for pods only.
    pub const EXTERNAL: u32 = 1 << 2;
    /// `externalTrafficPolicy: Cluster` on an external frontend: a connection from outside
    /// sent to a backend on another node is source-NATed to the node's address so the
    /// reply comes back through this node.
    pub const SNAT_REMOTE: u32 = 1 << 3;
}

/// Size of a service's Maglev lookup table (Cilium's default `maglev.tableSize`, a prime).
pub const MAGLEV_TABLE_SIZE: usize = 16381;

/// Value of the `MAGLEV` hash (keyed by service id): the backend slot for each of
/// [`MAGLEV_TABLE_SIZE`] hash buckets. 32764 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend slot (`BACKENDS` slot of the service) per bucket `hash % MAGLEV_TABLE_SIZE`.
    pub slots: [u16; MAGLEV_TABLE_SIZE],
    /// Explicit padding; zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<MaglevTable>() == 32764);

/// 32-bit FNV-1a over a connection as the load balancer sees it (client → frontend):
/// source address, destination address (4 bytes each for IPv4, network order), source
/// port, destination port (big-endian), protocol. The same bytes and order as
/// `lumen_lb::FiveTuple::hash` for IPv4, so every node (and the agent) computes the same
/// value and Maglev picks the same backend everywhere.
#[inline(always)]
pub fn five_tuple_hash(
    src: &[u8; 4],
    dst: &[u8; 4],
    src_port: u16,
    dst_port: u16,
    proto: u8,
) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let sp = src_port.to_be_bytes();
    let dp = dst_port.to_be_bytes();
    let bytes = [
        src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], sp[0], sp[1], dp[0], dp[1],
        proto,
    ];
    let mut h = OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u32).wrapping_mul(PRIME);
        i += 1;
    }
    h
}

/// Key of the `AFFINITY` LRU hash: one client of one frontend. 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// [`ServiceValue::service_id`].
    pub service_id: u32,
    /// Client address (IPv4 in the first four bytes).
    pub client_ip: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 20);

/// Value of the `AFFINITY` LRU hash. 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityValue {
    /// The client's backend.
    pub backend: L4Addr,
    /// Explicit padding; zero.
    pub _pad: u32,
    /// When the client last opened a connection to the frontend (`bpf_ktime_get_ns`).
    pub last_used_ns: u64,
}
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 32);

/// Value of the `L2_RESPONDER` hash (keyed by an IPv4 address, network order): this node
/// answers ARP requests for the address on interface `ifindex` with `mac` while
/// `bpf_ktime_get_ns() < expires_ns`. The agent extends `expires_ns` each time it renews
/// its lease; a dead agent's node stops answering once the lease would have expired. 24
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2ResponderValue {
    /// The announcing interface's MAC (the ARP reply's sender hardware address).
    pub mac: [u8; 6],
    /// Explicit padding; zero.
    pub _pad: [u8; 2],
    /// The interface that answers (the uplink).
    pub ifindex: u32,
    /// Explicit padding; zero.
    pub _pad2: u32,
    /// `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_ns` returns) after which the
    /// entry is ignored.
    pub expires_ns: u64,
}
const _: () = assert!(core::mem::size_of::<L2ResponderValue>() == 24);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);

/// Key of the `BACKENDS` hash: one backend slot of one frontend. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// [`ServiceValue::service_id`].
    pub service_id: u32,
    /// Slot, `0..count`.
    pub slot: u32,
}
const _: () = assert!(core::mem::size_of::<BackendKey>() == 8);

/// Value of the `BACKENDS` hash, and of the `LB_CT`/`REVNAT` LRU maps: an address and
/// port. 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Addr {
    /// Address (IPv4 in the first four bytes, the rest zero).
    pub addr: [u8; 16],
    /// Port, host order.
    pub port: u16,
    /// Bits from [`backend_flags`] (in `BACKENDS`, `LB_CT` and `AFFINITY`); zero elsewhere.
    pub flags: u8,
    /// Explicit padding; zero.
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<L4Addr>() == 20);

/// Service load balancing picked a backend for a new connection. 112 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranslationRecord {
    /// Header (`kind::TRANSLATION`).
    pub hdr: RecordHeader,
    /// The packet after translation (destination: the backend).
    pub pkt: PacketInfo,
    /// The frontend the client addressed (service address and port).
    pub frontend: L4Addr,
    /// One of [`xlate_point`].
    pub xlate_point: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<TranslationRecord>() == 112);

/// Where a translation happened (Hubble's `SocketTranslationPoint` numbering).
pub mod xlate_point {
    /// After the forward translation (frontend → backend).
    pub const POST_DIRECTION_FWD: u8 = 2;
}

/// Bits of [`L4Addr::flags`] for a backend.
pub mod backend_flags {
    /// The backend runs on another node.
    pub const REMOTE: u8 = 1 << 0;
}

/// Key of the `LB_CT` and `REVNAT` LRU hashes: a connection as the client sees it
/// (`LB_CT`: client → frontend, value: the chosen backend) or as translated (`REVNAT`:
/// client → backend, value: the original frontend). Always client first. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LbTupleKey {
    /// Client address.
    pub client_ip: [u8; 16],
    /// Frontend (`LB_CT`) or backend (`REVNAT`) address.
    pub server_ip: [u8; 16],
    /// Client port, host order.
    pub client_port: u16,
    /// Frontend or backend port, host order.
    pub server_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<LbTupleKey>() == 40);

/// Names of the maps, shared so the agent never spells them differently.
pub mod maps {
    /// Ring buffer of records.
    pub const EVENTS: &str = "EVENTS";
    /// Conntrack LRU hash.
    pub const CT: &str = "CT";
    /// Per-CPU count of failed ring-buffer reservations.
    pub const LOST: &str = "LOST";
    /// Runtime configuration array.
    pub const CONFIG: &str = "CONFIG";
    /// Kernel ipcache: LPM trie address/prefix → identity.
    pub const IPCACHE: &str = "IPCACHE";
    /// Local endpoints: hash ifindex → endpoint id, identity, enforcement.
    pub const ENDPOINTS: &str = "ENDPOINTS";
    /// Policy: LPM trie (endpoint, identity, direction, proto, port) → allow/deny.
    pub const POLICY: &str = "POLICY";
    /// Service frontends: hash [`super::ServiceKey`] → [`super::ServiceValue`].
    pub const SERVICES: &str = "SERVICES";
    /// Service backends: hash [`super::BackendKey`] → [`super::L4Addr`].
    pub const BACKENDS: &str = "BACKENDS";
    /// Service connections (client → frontend) → chosen backend, LRU.
    pub const LB_CT: &str = "LB_CT";
    /// Translated connections (client → backend) → original frontend, LRU.
    pub const REVNAT: &str = "REVNAT";
    /// Maglev tables: hash service id → [`super::MaglevTable`].
    pub const MAGLEV: &str = "MAGLEV";
    /// Client-IP session affinity: LRU [`super::AffinityKey`] → [`super::AffinityValue`].
    pub const AFFINITY: &str = "AFFINITY";
    /// Source NAT of external connections to remote backends, forward: LRU
    /// [`super::LbTupleKey`] (client → backend) → [`super::L4Addr`] (node address and
    /// NAT port).
    pub const SNAT_FWD: &str = "SNAT_FWD";
    /// Source NAT, replies: LRU [`super::LbTupleKey`] (node address and NAT port as the
    /// client, the backend as the server) → [`super::L4Addr`] (the original client).
    pub const SNAT_REV: &str = "SNAT_REV";
    /// L2 announcements: hash IPv4 address → [`super::L2ResponderValue`].
    pub const L2_RESPONDER: &str = "L2_RESPONDER";
    /// WireGuard peers' allowed IPs: LPM trie IPv4 prefix (`[u8; 4]`, network order) →
    /// ifindex of the WireGuard device (`u32`).
    pub const WG_PEERS: &str = "WG_PEERS";
}

/// Capacities of the maps the agent fills (their `max_entries` in the object).
pub mod map_capacity {
    /// [`super::maps::IPCACHE`].
    pub const IPCACHE: u64 = 262_144;
    /// [`super::maps::ENDPOINTS`].
    pub const ENDPOINTS: u64 = 65_536;
    /// [`super::maps::POLICY`].
    pub const POLICY: u64 = 1_048_576;
}

/// Names of the programs in the object.
pub mod programs {
    /// tc ingress on a pod's host-side veth.
    pub const FROM_ENDPOINT: &str = "from_endpoint";
    /// tc egress on a pod's host-side veth.
    pub const TO_ENDPOINT: &str = "to_endpoint";
    /// tc ingress on the node uplink.
    pub const FROM_NETWORK: &str = "from_network";
    /// tc egress on the node uplink.
    pub const TO_NETWORK: &str = "to_network";
    /// tc ingress on the WireGuard device: decrypted packets from other nodes.
    pub const FROM_CRYPTO: &str = "from_crypto";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::TraceRecord {}
    unsafe impl aya::Pod for super::DropRecord {}
    unsafe impl aya::Pod for super::PolicyVerdictRecord {}
    unsafe impl aya::Pod for super::IpcacheKey {}
    unsafe impl aya::Pod for super::IpcacheValue {}
    unsafe impl aya::Pod for super::EndpointValue {}
    unsafe impl aya::Pod for super::PolicyKey {}
    unsafe impl aya::Pod for super::PolicyValue {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::L4Addr {}
    unsafe impl aya::Pod for super::LbTupleKey {}
    unsafe impl aya::Pod for super::MaglevTable {}
    unsafe impl aya::Pod for super::TranslationRecord {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::L2ResponderValue {}
}

mod dns;
pub use dns::{dns_maps, DnsProxyConfig, DNS_NAT_CAPACITY};
