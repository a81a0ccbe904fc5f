//! The run loop: watch caches of Nodes, CiliumNodes, Services and pools for every
//! instance; leader election; and, while leading, one allocation round per change (or
//! after `retryPeriod` when a write failed). Losing the Lease cancels the round at once.

use super::{
    config::OperatorConfig,
    ipam::{self, cilium_node_resource, pod_cidrs, PodCidrAllocator},
    lbipam::{self, pool_resource},
    leader::{Elector, LeaseSettings},
};
use crate::config::IpamMode;
use futures::{future::BoxFuture, FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::{
    api::{Api, DynamicObject},
    runtime::{
        events::{Recorder, Reporter},
        reflector::{self, store::Writer, Store},
        watcher, WatchStreamExt,
    },
    Client, Resource,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::Arc,
    time::Duration,
};
use tokio::sync::{watch, Notify};

/// How often the leader re-checks everything without a change (a safety net).
const RESYNC: Duration = Duration::from_secs(60);

/// The watch caches.
struct Caches {
    nodes: Option<Store<Node>>,
    cilium_nodes: Option<Store<DynamicObject>>,
    services: Store<Service>,
    pools: Store<DynamicObject>,
}

impl Caches {
    async fn ready(&self) {
        if let Some(s) = &self.nodes {
            let _ = s.wait_until_ready().await;
        }
        if let Some(s) = &self.cilium_nodes {
            let _ = s.wait_until_ready().await;
        }
        let _ = self.services.wait_until_ready().await;
        let _ = self.pools.wait_until_ready().await;
    }
}

/// A future that keeps `writer`'s cache in sync with `api` and signals `changed`.
fn reflect<K>(api: Api<K>, writer: Writer<K>, changed: Arc<Notify>) -> BoxFuture<'static, ()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    reflect_stream(
        kind,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer),
        changed,
    )
}

fn reflect_dyn(
    api: Api<DynamicObject>,
    writer: Writer<DynamicObject>,
    kind: String,
    changed: Arc<Notify>,
) -> BoxFuture<'static, ()> {
    reflect_stream(
        kind,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer),
        changed,
    )
}

fn reflect_stream<K: Send + 'static>(
    kind: String,
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    changed: Arc<Notify>,
) -> BoxFuture<'static, ()> {
    stream
        .for_each(move |ev| {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(kind = %kind, error = %e, "watch failed, retrying"),
            }
            futures::future::ready(())
        })
        .boxed()
}

/// Runs the operator on `client` as `identity` until `shutdown` completes; then gives the
/// Lease up if it holds it.
pub async fn run(
    client: Client,
    cfg: OperatorConfig,
    identity: String,
    shutdown: impl Future<Output = ()>,
) {
    let cluster_pool = cfg.ipam.mode() == IpamMode::ClusterPool;
    let changed = Arc::new(Notify::new());
    let mut drivers: Vec<BoxFuture<'static, ()>> = vec![];
    let (nodes, cilium_nodes) = if cluster_pool {
        let w = Writer::<Node>::default();
        let nodes = w.as_reader();
        drivers.push(reflect(Api::all(client.clone()), w, changed.clone()));
        let ar = cilium_node_resource();
        let w = Writer::<DynamicObject>::new(ar.clone());
        let cns = w.as_reader();
        drivers.push(reflect_dyn(
            Api::all_with(client.clone(), &ar),
            w,
            ar.kind.clone(),
            changed.clone(),
        ));
        (Some(nodes), Some(cns))
    } else {
        (None, None)
    };
    let (services, w) = reflector::store::<Service>();
    drivers.push(reflect(Api::all(client.clone()), w, changed.clone()));
    let ar = pool_resource();
    let w = Writer::<DynamicObject>::new(ar.clone());
    let pools = w.as_reader();
    drivers.push(reflect_dyn(
        Api::all_with(client.clone(), &ar),
        w,
        ar.kind.clone(),
        changed.clone(),
    ));
    let caches = Caches {
        nodes,
        cilium_nodes,
        services,
        pools,
    };

    let le = &cfg.leader_election;
    let mut elector = Elector::new(
        client.clone(),
        LeaseSettings {
            name: le.lease_name.clone(),
            namespace: le.namespace(),
            identity: identity.clone(),
            lease_duration: le.lease_duration,
            renew_deadline: le.renew_deadline,
            retry_period: le.retry_period,
        },
    );
    let (leading_tx, mut leading) = watch::channel(false);
    let work = async {
        loop {
            let _ = leading.wait_for(|l| *l).await;
            tokio::select! {
                _ = allocate(&client, &cfg, &identity, &caches, &changed) => {}
                _ = leading.wait_for(|l| !*l) => {}
            }
        }
    };
    tokio::select! {
        _ = futures::future::join_all(drivers) => {}
        _ = elector.run(leading_tx) => {}
        _ = work => {}
        _ = shutdown => {
            match elector.release().await {
                Ok(()) => tracing::info!("shutting down, Lease released"),
                Err(e) => tracing::warn!(error = %e, "shutting down, could not release the Lease"),
            }
        }
    }
}

/// Allocation rounds while leading (cancelled by the caller when leadership ends).
async fn allocate(
    client: &Client,
    cfg: &OperatorConfig,
    identity: &str,
    caches: &Caches,
    changed: &Notify,
) {
    caches.ready().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "lumen-operator".into(),
            instance: Some(identity.into()),
        },
    );
    let seen_blocks = |cns: &Store<DynamicObject>| -> BTreeMap<String, Vec<ipnet::Ipv4Net>> {
        cns.state()
            .iter()
            .filter_map(|cn| Some((cn.metadata.name.clone()?, pod_cidrs(cn))))
            .collect()
    };
    let mut pod_cidrs_alloc = caches.cilium_nodes.as_ref().map(|cns| {
        let op = &cfg.ipam.operator;
        PodCidrAllocator::new(
            op.cluster_pool_ipv4_pod_cidr_list.clone(),
            op.cluster_pool_ipv4_mask_size,
            seen_blocks(cns),
        )
    });
    tracing::info!(
        cluster_pool = pod_cidrs_alloc.is_some(),
        "leading: caches synced, allocating"
    );
    loop {
        let mut failed = 0;
        if let (Some(alloc), Some(nodes), Some(cns)) = (
            pod_cidrs_alloc.as_mut(),
            &caches.nodes,
            &caches.cilium_nodes,
        ) {
            let nodes: BTreeMap<String, Node> = nodes
                .state()
                .iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, Node::clone(n))))
                .collect();
            let names: BTreeSet<String> = nodes.keys().cloned().collect();
            let actions = alloc.plan(&names, &seen_blocks(cns));
            failed += ipam::apply(client, &recorder, alloc, &nodes, actions).await;
        }
        let services: Vec<Service> = caches
            .services
            .state()
            .iter()
            .map(|s| Service::clone(s))
            .collect();
        let pools: Vec<DynamicObject> = caches
            .pools
            .state()
            .iter()
            .map(|p| DynamicObject::clone(p))
            .collect();
        failed += lbipam::reconcile(client, &services, &pools).await;
        let wait = if failed > 0 {
            cfg.leader_election.retry_period
        } else {
            RESYNC
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Let a burst of watch events (our own writes coming back) settle into one round.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
