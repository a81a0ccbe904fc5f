//! The `peer.Peer` service: streams the cluster's nodes, as the state source knows them
//! (its `Node` objects), to a relay. A new stream first gets `PEER_ADDED` for every node,
//! then `PEER_ADDED` / `PEER_DELETED` / `PEER_UPDATED` as the state changes.
//!
//! A peer is named `<cluster>/<node>` (`cluster.name` of this agent: the state source is
//! per cluster) and addressed `<InternalIP>:<port of hubble.listenAddress>` (the first
//! InternalIP, else any address; only the IP when the agent serves no TCP). Nodes without
//! any address are not announced until they get one: nothing could dial them.
//! When the agent serves TLS on TCP, each peer carries `tls.server_name`, Hubble's
//! `<node>.<cluster>.hubble-grpc.cilium.io`, the name its certificate is issued for.

use crate::state::ClusterState;
use lumen_api::peer::{
    peer_server::{Peer, PeerServer},
    ChangeNotification, ChangeNotificationType, NotifyRequest, Tls,
};
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How to reach one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// Its observer address.
    pub address: String,
    /// The TLS server name it serves under, when it serves TLS.
    pub tls_server_name: Option<String>,
}

/// Peer name → how to reach it.
pub type PeerSet = BTreeMap<String, PeerAddress>;

/// The peers of a state snapshot; `tls`: the agents serve TLS on TCP.
pub fn peers(state: &ClusterState, cluster: &str, port: Option<u16>, tls: bool) -> PeerSet {
    state
        .nodes
        .values()
        .filter_map(|n| {
            let ip = n.internal_ip()?;
            let address = match port {
                Some(p) => SocketAddr::new(ip, p).to_string(),
                None => ip.to_string(),
            };
            let tls_server_name = tls.then(|| lumen_certgen::node_server_name(&n.name, cluster));
            Some((
                format!("{cluster}/{}", n.name),
                PeerAddress {
                    address,
                    tls_server_name,
                },
            ))
        })
        .collect()
}

fn note(name: &str, peer: &PeerAddress, kind: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: name.to_string(),
        address: peer.address.clone(),
        r#type: kind as i32,
        tls: peer.tls_server_name.as_ref().map(|n| Tls {
            server_name: n.clone(),
        }),
    }
}

/// What a client that knows `old` must be told to know `new`: deletions first, then
/// additions and updates, each in name order.
pub fn diff(old: &PeerSet, new: &PeerSet) -> Vec<ChangeNotification> {
    let mut out: Vec<ChangeNotification> = old
        .iter()
        .filter(|(name, _)| !new.contains_key(*name))
        .map(|(name, addr)| note(name, addr, ChangeNotificationType::PeerDeleted))
        .collect();
    for (name, addr) in new {
        match old.get(name) {
            None => out.push(note(name, addr, ChangeNotificationType::PeerAdded)),
            Some(prev) if prev != addr => {
                out.push(note(name, addr, ChangeNotificationType::PeerUpdated))
            }
            Some(_) => {}
        }
    }
    out
}

/// The Peer service over the agent's state source.
#[derive(Clone)]
pub struct PeerService {
    cluster: String,
    port: Option<u16>,
    tls: bool,
    state: watch::Receiver<Arc<ClusterState>>,
}

impl PeerService {
    /// Peers of cluster `cluster` from `state`, addressed with `port` (`None`: IP only);
    /// `tls`: they serve TLS there.
    pub fn new(
        cluster: impl Into<String>,
        port: Option<u16>,
        tls: bool,
        state: watch::Receiver<Arc<ClusterState>>,
    ) -> Self {
        PeerService {
            cluster: cluster.into(),
            port,
            tls,
            state,
        }
    }

    /// As a tonic service.
    pub fn into_server(self) -> PeerServer<Self> {
        PeerServer::new(self)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = ReceiverStream<Result<ChangeNotification, Status>>;

    async fn notify(
        &self,
        _req: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let mut state = self.state.clone();
        let (cluster, port, tls) = (self.cluster.clone(), self.port, self.tls);
        tokio::spawn(async move {
            let mut known = PeerSet::new();
            loop {
                let now = peers(&state.borrow_and_update(), &cluster, port, tls);
                for n in diff(&known, &now) {
                    if tx.send(Ok(n)).await.is_err() {
                        return;
                    }
                }
                known = now;
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Node, NodeAddress};

    fn node(name: &str, addrs: &[(&str, &str)]) -> Node {
        Node {
            name: name.into(),
            labels: Default::default(),
            pod_cidrs: vec![],
            addresses: addrs
                .iter()
                .map(|(k, a)| NodeAddress {
                    kind: k.to_string(),
                    address: a.parse().unwrap(),
                })
                .collect(),
            wg_pub_key: None,
        }
    }

    fn state(nodes: Vec<Node>) -> ClusterState {
        let mut st = ClusterState::default();
        for n in nodes {
            st.nodes.insert(n.name.clone(), n);
        }
        st
    }

    fn kinds(v: &[ChangeNotification]) -> Vec<(String, String, ChangeNotificationType)> {
        v.iter()
            .map(|n| (n.name.clone(), n.address.clone(), n.r#type()))
            .collect()
    }

    #[test]
    fn names_and_addresses() {
        let st = state(vec![
            node(
                "n1",
                &[("ExternalIP", "1.2.3.4"), ("InternalIP", "192.168.77.1")],
            ),
            node("n2", &[("ExternalIP", "fd00::2")]),
            node("n3", &[]),
        ]);
        let p = peers(&st, "lab", Some(4244), false);
        assert_eq!(p.len(), 2, "a node without address is not a peer: {p:?}");
        assert_eq!(p["lab/n1"].address, "192.168.77.1:4244");
        assert_eq!(p["lab/n2"].address, "[fd00::2]:4244");
        assert_eq!(
            peers(&st, "lab", None, false)["lab/n1"].address,
            "192.168.77.1"
        );
    }

    #[test]
    fn first_everything_added_then_deltas() {
        use ChangeNotificationType::*;
        let a = peers(
            &state(vec![
                node("n1", &[("InternalIP", "10.0.0.1")]),
                node("n2", &[("InternalIP", "10.0.0.2")]),
            ]),
            "c",
            Some(4244),
            false,
        );
        assert_eq!(
            kinds(&diff(&PeerSet::new(), &a)),
            [
                ("c/n1".into(), "10.0.0.1:4244".into(), PeerAdded),
                ("c/n2".into(), "10.0.0.2:4244".into(), PeerAdded)
            ]
        );
        assert!(diff(&a, &a).is_empty());
        let b = peers(
            &state(vec![
                node("n2", &[("InternalIP", "10.0.0.22")]),
                node("n3", &[("InternalIP", "10.0.0.3")]),
            ]),
            "c",
            Some(4244),
            false,
        );
        assert_eq!(
            kinds(&diff(&a, &b)),
            [
                ("c/n1".into(), "10.0.0.1:4244".into(), PeerDeleted),
                ("c/n2".into(), "10.0.0.22:4244".into(), PeerUpdated),
                ("c/n3".into(), "10.0.0.3:4244".into(), PeerAdded),
            ]
        );
    }

    #[tokio::test]
    async fn notify_streams_initial_set_then_changes() {
        use tokio_stream::StreamExt;
        let (tx, rx) = watch::channel(Arc::new(state(vec![node(
            "n1",
            &[("InternalIP", "10.0.0.1")],
        )])));
        let svc = PeerService::new("lab", Some(4244), false, rx);
        let mut s = svc
            .notify(Request::new(NotifyRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(first.name, "lab/n1");
        assert_eq!(first.r#type(), ChangeNotificationType::PeerAdded);
        assert_eq!(first.tls, None, "plaintext agents announce no TLS");
        tx.send(Arc::new(state(vec![
            node("n1", &[("InternalIP", "10.0.0.1")]),
            node("n2", &[("InternalIP", "10.0.0.2")]),
        ])))
        .unwrap();
        let second = s.next().await.unwrap().unwrap();
        assert_eq!(
            (second.name.as_str(), second.r#type()),
            ("lab/n2", ChangeNotificationType::PeerAdded)
        );
        tx.send(Arc::new(state(vec![]))).unwrap();
        let mut deleted: Vec<String> = vec![];
        for _ in 0..2 {
            let n = s.next().await.unwrap().unwrap();
            assert_eq!(n.r#type(), ChangeNotificationType::PeerDeleted);
            deleted.push(n.name);
        }
        assert_eq!(deleted, ["lab/n1", "lab/n2"]);
    }

    #[tokio::test]
    async fn agents_serving_tls_announce_their_server_name() {
        use tokio_stream::StreamExt;
        let (_tx, rx) = watch::channel(Arc::new(state(vec![
            node("n1", &[("InternalIP", "10.0.0.1")]),
            node("worker.zone-a", &[("InternalIP", "10.0.0.2")]),
        ])));
        let svc = PeerService::new("lab", Some(4244), true, rx);
        let mut s = svc
            .notify(Request::new(NotifyRequest {}))
            .await
            .unwrap()
            .into_inner();
        let mut got = vec![];
        for _ in 0..2 {
            let n = s.next().await.unwrap().unwrap();
            got.push((n.name, n.tls.map(|t| t.server_name)));
        }
        assert_eq!(
            got,
            [
                (
                    "lab/n1".to_string(),
                    Some("n1.lab.hubble-grpc.cilium.io".to_string())
                ),
                (
                    "lab/worker.zone-a".to_string(),
                    Some("worker-zone-a.lab.hubble-grpc.cilium.io".to_string())
                ),
            ]
        );
    }
}
