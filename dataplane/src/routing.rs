//! Native routing between nodes (`routingMode: native`, `autoDirectNodeRoutes: true`):
//! every other node's pod CIDRs are routed via that node's underlay address, without
//! encapsulation, so pod traffic keeps its pod addresses end to end.
//!
//! The routes this agent installs carry their own routing protocol number
//! ([`ROUTE_PROTOCOL`]), so a sync only ever touches its own routes: it adds the missing
//! ones, replaces those whose gateway changed and removes those of nodes that left. A
//! route that cannot be installed (a gateway not on a connected subnet, say) is reported
//! and retried on the next state change; the others are still installed.

use crate::state::ClusterState;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use std::{collections::BTreeMap, net::Ipv4Addr};

/// The node routes in place after the last sync (for `lumen status`).
pub type Installed = std::sync::Arc<parking_lot::RwLock<BTreeMap<Ipv4Net, Ipv4Addr>>>;

/// Routing protocol number tagging Lumen's routes (`ip route show proto 201`).
pub const ROUTE_PROTOCOL: u8 = 201;

/// Errors talking to the kernel's routing table.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// Opening the netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    /// Listing the routing table failed.
    #[error("listing routes: {0}")]
    List(rtnetlink::Error),
    /// A route could not be installed or removed.
    #[error("route {cidr} via {gateway}: {source}")]
    Route {
        /// Destination.
        cidr: Ipv4Net,
        /// Gateway (the other node).
        gateway: Ipv4Addr,
        /// Why.
        source: rtnetlink::Error,
    },
}

/// Routes this node wants: every other node's IPv4 pod CIDRs via its first IPv4
/// `InternalIP`. Nodes without either are skipped.
pub fn desired_routes(state: &ClusterState, me: &str) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut out = BTreeMap::new();
    for (name, node) in &state.nodes {
        if name == me {
            continue;
        }
        let gateway = node.addresses.iter().find_map(|a| match a.address {
            std::net::IpAddr::V4(v4) if a.kind == "InternalIP" => Some(v4),
            _ => None,
        });
        let Some(gateway) = gateway else {
            continue;
        };
        for cidr in &node.pod_cidrs {
            if let ipnet::IpNet::V4(v4) = cidr {
                out.insert(v4.trunc(), gateway);
            }
        }
    }
    out
}

/// What a sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteChanges {
    /// Routes added or whose gateway changed.
    pub installed: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Routes removed.
    pub removed: Vec<Ipv4Net>,
}

/// The difference between the routes installed and the routes wanted.
pub fn diff(
    have: &BTreeMap<Ipv4Net, Ipv4Addr>,
    want: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> RouteChanges {
    RouteChanges {
        installed: want
            .iter()
            .filter(|(c, g)| have.get(c) != Some(g))
            .map(|(c, g)| (*c, *g))
            .collect(),
        removed: have
            .keys()
            .filter(|c| !want.contains_key(c))
            .copied()
            .collect(),
    }
}

fn route_of(msg: &RouteMessage) -> Option<(Ipv4Net, Ipv4Addr)> {
    let mut dst = None;
    let mut gw = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
            _ => {}
        }
    }
    let net = Ipv4Net::new(dst?, msg.header.destination_prefix_length).ok()?;
    Some((net, gw?))
}

/// Brings the main routing table's Lumen routes to `want`. Returns what changed, and the
/// routes that failed (the rest are applied regardless).
pub async fn sync(
    want: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> Result<(RouteChanges, Vec<RoutingError>), RoutingError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(RoutingError::Socket)?;
    let task = tokio::spawn(conn);
    let result = async {
        let mut have = BTreeMap::new();
        let filter = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = handle.route().get(filter).execute();
        while let Some(msg) = routes.try_next().await.map_err(RoutingError::List)? {
            if msg.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) {
                if let Some((net, gw)) = route_of(&msg) {
                    have.insert(net, gw);
                }
            }
        }
        let changes = diff(&have, want);
        let mut failed = vec![];
        for (cidr, gateway) in &changes.installed {
            let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cidr.addr(), cidr.prefix_len())
                .gateway(*gateway)
                .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                .build();
            if let Err(source) = handle.route().add(msg).replace().execute().await {
                failed.push(RoutingError::Route {
                    cidr: *cidr,
                    gateway: *gateway,
                    source,
                });
            }
        }
        for cidr in &changes.removed {
            let gateway = have[cidr];
            let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cidr.addr(), cidr.prefix_len())
                .gateway(gateway)
                .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                .build();
            if let Err(source) = handle.route().del(msg).execute().await {
                failed.push(RoutingError::Route {
                    cidr: *cidr,
                    gateway,
                    source,
                });
            }
        }
        Ok((changes, failed))
    }
    .await;
    task.abort();
    result
}

/// Keeps the routes in step with the state source until the channel closes, publishing
/// the routes in place to `installed`.
pub async fn run(
    me: String,
    mut state: tokio::sync::watch::Receiver<std::sync::Arc<ClusterState>>,
    installed: Installed,
) {
    loop {
        let want = desired_routes(&state.borrow_and_update(), &me);
        match sync(&want).await {
            Ok((changes, failed)) => {
                let mut now = want.clone();
                for e in &failed {
                    if let RoutingError::Route { cidr, .. } = e {
                        now.remove(cidr);
                    }
                }
                *installed.write() = now;
                for (cidr, gateway) in &changes.installed {
                    tracing::info!(%cidr, %gateway, "node route installed");
                }
                for cidr in &changes.removed {
                    tracing::info!(%cidr, "node route removed");
                }
                for e in failed {
                    tracing::warn!(error = %e, "node route not installed; retried on the next change");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "syncing node routes failed; retried on the next change")
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::manifests::parse_objects;
    use std::path::Path;

    const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.100.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.77.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDRs: [10.100.2.0/24, "fd00:2::/64"]}
status: {addresses: [{type: Hostname, address: n2}, {type: InternalIP, address: 192.168.77.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: n3}
spec: {podCIDR: 10.100.3.0/24}
"#;

    #[test]
    fn every_other_nodes_ipv4_pod_cidr_via_its_internal_ip() {
        let (state, problems) =
            ClusterState::from_objects(parse_objects(Path::new("n.yaml"), NODES).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        let want = desired_routes(&state, "n1");
        let expect: BTreeMap<Ipv4Net, Ipv4Addr> = [(
            "10.100.2.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 168, 77, 2),
        )]
        .into();
        // n3 has no address: nothing to route it through.
        assert_eq!(want, expect);
    }

    #[test]
    fn diff_installs_changed_gateways_and_removes_departed_nodes() {
        let a: Ipv4Net = "10.100.2.0/24".parse().unwrap();
        let b: Ipv4Net = "10.100.3.0/24".parse().unwrap();
        let c: Ipv4Net = "10.100.4.0/24".parse().unwrap();
        let g2 = Ipv4Addr::new(192, 168, 77, 2);
        let g3 = Ipv4Addr::new(192, 168, 77, 3);
        let have = [(a, g2), (b, g2)].into();
        let want = [(a, g2), (b, g3), (c, g3)].into();
        let d = diff(&have, &want);
        assert_eq!(d.installed, vec![(b, g3), (c, g3)]);
        assert!(d.removed.is_empty());
        let d = diff(&want, &[(a, g2)].into());
        assert_eq!(d.removed, vec![b, c]);
    }
}
