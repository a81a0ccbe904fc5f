//! The transparent DNS proxy's maps: where pods' DNS queries are redirected to, and the
//! original destination of each redirected query (so replies get it back as their source
//! and the proxy knows which server the pod asked).

/// Value of the single-entry `DNS_PROXY` array. 8 bytes. A zero port: no redirection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsProxyConfig {
    /// The proxy's IPv4 address (network order): the pods' gateway on this node.
    pub addr: [u8; 4],
    /// The proxy's port, host order (the same for UDP and TCP).
    pub port: u16,
    /// Explicit padding; zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<DnsProxyConfig>() == 8);

/// Names of the DNS maps.
pub mod dns_maps {
    /// Proxy address and port: array of one [`super::DnsProxyConfig`].
    pub const DNS_PROXY: &str = "DNS_PROXY";
    /// Redirected queries: LRU [`crate::LbTupleKey`] (pod address and port as the client,
    /// the proxy as the server, protocol) → [`crate::L4Addr`] (the server the pod addressed).
    pub const DNS_NAT: &str = "DNS_NAT";
}

/// Capacity of `DNS_NAT`: queries in flight (and TCP connections) across the node's pods.
pub const DNS_NAT_CAPACITY: u32 = 65_536;

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, explicit padding, no invalid bit patterns.
unsafe impl aya::Pod for DnsProxyConfig {}
