//! Frontends (the addresses a service answers on) and their backends, computed from a
//! Service and its EndpointSlices with Kubernetes' endpoint-selection semantics.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::meta::ServiceName;
use crate::protocol::Protocol;
use crate::service::{IpFamily, Service, ServicePort, ServiceType, TargetPort, TrafficPolicy};
use crate::slice::{merge_slices, EndpointSlice, MergedEndpoint, TargetRef};

/// What kind of address a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    /// A `spec.clusterIPs` address.
    ClusterIp,
    /// A `spec.externalIPs` address.
    ExternalIp,
    /// A node port, on one node IP or on the wildcard address (see [`Frontend::is_wildcard`]).
    NodePort,
    /// A `status.loadBalancer.ingress[].ip` address.
    LoadBalancer,
}

impl FrontendKind {
    /// The name `cilium service list` prints in its "Service Type" column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::ExternalIp => "ExternalIPs",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a backend is in a frontend's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendState {
    /// Ready: receives new connections.
    Active,
    /// Serving but terminating, used only because no endpoint is ready (kube-proxy's and
    /// Cilium's fallback, so connections drain gracefully instead of being refused).
    Terminating,
}

impl BackendState {
    /// The lowercase word `cilium service list` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Terminating => "terminating",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend of a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Endpoint address.
    pub address: IpAddr,
    /// Resolved target port.
    pub port: u16,
    /// Protocol (same as the frontend's).
    pub protocol: Protocol,
    /// `nodeName` of the endpoint.
    pub node_name: Option<String>,
    /// Active or terminating.
    pub state: BackendState,
    /// The endpoint's `targetRef` (usually its pod).
    pub target_ref: Option<TargetRef>,
}

impl Backend {
    /// `address:port` (IPv6 in brackets).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// The stable name Maglev hashes for this backend: `address:port/PROTO`, e.g.
    /// `10.0.1.5:8080/TCP` or `[fd00::5]:8080/TCP`.
    pub fn maglev_name(&self) -> String {
        format!("{}/{}", self.socket_addr(), self.protocol)
    }
}

/// One (address, port, protocol) a service answers on, with its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// Address; unspecified (`0.0.0.0` / `::`) for the wildcard node-port frontend.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Kind of address.
    pub kind: FrontendKind,
    /// The owning service (for flows' `destination_service`).
    pub service: ServiceName,
    /// The service port's name.
    pub port_name: Option<String>,
    /// The traffic policy that filtered the backends (internal for ClusterIP, external for
    /// the others).
    pub traffic_policy: TrafficPolicy,
    /// Client-IP session affinity timeout in seconds; `None` when affinity is off.
    pub affinity_timeout: Option<u32>,
    /// Backends, sorted by address then port.
    pub backends: Vec<Backend>,
}

impl Frontend {
    /// `address:port` (IPv6 in brackets).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// The node-port frontend that matches any local address (the agent's "surrogate"
    /// entry, like Cilium's `0.0.0.0:NodePort`).
    pub fn is_wildcard(&self) -> bool {
        self.address.is_unspecified()
    }
}

/// Computes every frontend of `svc` on node `node_name` whose addresses are `node_ips`.
///
/// Order: ClusterIP, external IPs, node ports (per family the wildcard then each node IP),
/// LoadBalancer ingress IPs; within each, addresses in spec order then ports in spec order.
///
/// Backend selection follows kube-proxy: the endpoints of the frontend's family that
/// resolve the service port, restricted to `node_name` when the applicable traffic policy
/// is Local (internal for ClusterIP, external for the rest); of those the ready ones, or,
/// when none is ready, the serving-and-terminating ones. A Local frontend without local
/// endpoints gets no backends (traffic is dropped, as in Kubernetes).
pub fn frontends(
    svc: &Service,
    slices: &[EndpointSlice],
    node_name: &str,
    node_ips: &[IpAddr],
) -> Vec<Frontend> {
    let name = svc.name();
    let endpoints = merge_slices(&name, slices);
    let builder = Builder {
        svc,
        name: &name,
        endpoints: &endpoints,
        node_name,
    };
    let mut out = Vec::new();
    if !svc.headless {
        for &addr in &svc.cluster_ips {
            builder.push_all(&mut out, addr, FrontendKind::ClusterIp);
        }
    }
    for &addr in &svc.external_ips {
        builder.push_all(&mut out, addr, FrontendKind::ExternalIp);
    }
    if matches!(
        svc.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    ) {
        let mut ips: Vec<IpAddr> = node_ips.to_vec();
        ips.sort();
        ips.dedup();
        for sp in &svc.ports {
            let Some(node_port) = sp.node_port else {
                continue;
            };
            for &family in &svc.ip_families {
                let wildcard = match family {
                    IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                let addrs = std::iter::once(wildcard).chain(
                    ips.iter()
                        .copied()
                        .filter(|a| IpFamily::of(a) == family && !a.is_unspecified()),
                );
                for addr in addrs {
                    out.push(builder.frontend(addr, node_port, sp, FrontendKind::NodePort));
                }
            }
        }
    }
    if svc.service_type == ServiceType::LoadBalancer {
        for &addr in &svc.ingress_ips {
            builder.push_all(&mut out, addr, FrontendKind::LoadBalancer);
        }
    }
    out
}

struct Builder<'a> {
    svc: &'a Service,
    name: &'a ServiceName,
    endpoints: &'a [MergedEndpoint],
    node_name: &'a str,
}

impl Builder<'_> {
    fn push_all(&self, out: &mut Vec<Frontend>, addr: IpAddr, kind: FrontendKind) {
        for sp in &self.svc.ports {
            out.push(self.frontend(addr, sp.port, sp, kind));
        }
    }

    fn frontend(
        &self,
        address: IpAddr,
        port: u16,
        sp: &ServicePort,
        kind: FrontendKind,
    ) -> Frontend {
        let traffic_policy = match kind {
            FrontendKind::ClusterIp => self.svc.internal_traffic_policy,
            _ => self.svc.external_traffic_policy,
        };
        Frontend {
            address,
            port,
            protocol: sp.protocol,
            kind,
            service: self.name.clone(),
            port_name: sp.name.clone(),
            traffic_policy,
            affinity_timeout: self.svc.affinity_timeout,
            backends: self.backends(IpFamily::of(&address), sp, traffic_policy),
        }
    }

    fn backends(&self, family: IpFamily, sp: &ServicePort, policy: TrafficPolicy) -> Vec<Backend> {
        let candidates: Vec<(&MergedEndpoint, u16)> = self
            .endpoints
            .iter()
            .filter(|e| IpFamily::of(&e.address) == family)
            .filter(|e| {
                policy == TrafficPolicy::Cluster || e.node_name.as_deref() == Some(self.node_name)
            })
            .filter_map(|e| resolve_port(e, sp).map(|p| (e, p)))
            .collect();
        let any_ready = candidates.iter().any(|(e, _)| e.conditions.ready);
        let mut out: Vec<Backend> = candidates
            .into_iter()
            .filter_map(|(e, port)| {
                let c = e.conditions;
                let state = if any_ready {
                    c.ready.then_some(BackendState::Active)?
                } else {
                    (c.serving && c.terminating).then_some(BackendState::Terminating)?
                };
                Some(Backend {
                    address: e.address,
                    port,
                    protocol: sp.protocol,
                    node_name: e.node_name.clone(),
                    state,
                    target_ref: e.target_ref.clone(),
                })
            })
            .collect();
        out.sort_by_key(|b| (b.address, b.port));
        out.dedup_by(|a, b| (a.address, a.port) == (b.address, b.port));
        out
    }
}

/// The backend port for service port `sp` on endpoint `e`.
///
/// The EndpointSlice controller names slice ports after the *service* port and stores the
/// resolved target port, so the match is by service-port name and protocol. Hand-written
/// slices sometimes use the `targetPort` name instead, which is accepted second. A numeric
/// `targetPort` is used when the slice lists no matching port.
fn resolve_port(e: &MergedEndpoint, sp: &ServicePort) -> Option<u16> {
    let by_name = |name: Option<&str>| {
        e.ports
            .iter()
            .find(|p| p.protocol == sp.protocol && p.name.as_deref() == name)
    };
    let found = by_name(sp.name.as_deref()).or_else(|| match &sp.target_port {
        TargetPort::Named(n) => by_name(Some(n)),
        TargetPort::Number(_) => None,
    });
    match (found.and_then(|p| p.port), &sp.target_port) {
        (Some(port), _) => Some(port),
        (None, TargetPort::Number(n)) => Some(*n),
        (None, TargetPort::Named(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(s: &str) -> Service {
        Service::parse(&serde_yaml::from_str(s).unwrap()).unwrap()
    }

    fn slice(s: &str) -> EndpointSlice {
        EndpointSlice::parse(&serde_yaml::from_str(s).unwrap()).unwrap()
    }

    fn addrs(f: &Frontend) -> Vec<String> {
        f.backends
            .iter()
            .map(|b| format!("{} {}", b.socket_addr(), b.state))
            .collect()
    }

    const SLICE: &str = "metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.0.1], nodeName: a}
- {addresses: [10.0.0.2], nodeName: b}
- {addresses: [10.0.0.3], nodeName: a, conditions: {ready: false, serving: true, terminating: true}}
";

    #[test]
    fn cluster_ip_uses_ready_endpoints_and_named_port() {
        let s = svc("metadata: {name: web}\nspec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80, targetPort: web}]}");
        let f = frontends(&s, &[slice(SLICE)], "a", &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(
            addrs(&f[0]),
            ["10.0.0.1:8080 active", "10.0.0.2:8080 active"]
        );
        assert_eq!(f[0].service.to_string(), "default/web");
    }

    #[test]
    fn falls_back_to_terminating_when_none_ready() {
        let s = svc("metadata: {name: web}\nspec: {clusterIP: 10.96.0.1, internalTrafficPolicy: Local, ports: [{name: http, port: 80}]}");
        let sl = slice(&SLICE.replace(
            "{addresses: [10.0.0.1], nodeName: a}",
            "{addresses: [10.0.0.1], nodeName: c}",
        ));
        let f = frontends(&s, &[sl], "a", &[]);
        assert_eq!(addrs(&f[0]), ["10.0.0.3:8080 terminating"]);
    }

    #[test]
    fn node_port_with_local_policy() {
        let s = svc("metadata: {name: web}\nspec: {type: NodePort, clusterIP: 10.96.0.1, externalTrafficPolicy: Local, ports: [{name: http, port: 80, nodePort: 30080}]}");
        let ips: Vec<IpAddr> = vec!["192.168.1.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let f = frontends(&s, &[slice(SLICE)], "b", &ips);
        let keys: Vec<String> = f
            .iter()
            .map(|f| format!("{} {}", f.socket_addr(), f.kind))
            .collect();
        assert_eq!(
            keys,
            [
                "10.96.0.1:80 ClusterIP",
                "0.0.0.0:30080 NodePort",
                "192.168.1.2:30080 NodePort"
            ]
        );
        assert_eq!(addrs(&f[0]).len(), 2);
        assert!(f[1].is_wildcard());
        assert_eq!(addrs(&f[1]), ["10.0.0.2:8080 active"]);
    }

    #[test]
    fn headless_has_no_frontend() {
        let s =
            svc("metadata: {name: web}\nspec: {clusterIP: None, ports: [{name: http, port: 80}]}");
        assert!(frontends(&s, &[slice(SLICE)], "a", &[]).is_empty());
    }

    #[test]
    fn unresolvable_named_port_gives_no_backend() {
        let s = svc("metadata: {name: web}\nspec: {clusterIP: 10.96.0.1, ports: [{name: grpc, port: 90, targetPort: grpc}]}");
        assert!(frontends(&s, &[slice(SLICE)], "a", &[])[0]
            .backends
            .is_empty());
    }
}
