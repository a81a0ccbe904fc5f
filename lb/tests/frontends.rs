//! Frontends and backends of a realistic dual-stack LoadBalancer service, per node.

mod common;

use std::net::IpAddr;

use lumen_lb::{
    frontends, Algorithm, BackendState, FiveTuple, Frontend, FrontendKind, Maglev, Random,
    Selector, ServiceTable, TrafficPolicy,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node_ips() -> Vec<IpAddr> {
    vec![ip("fd00:192::11"), ip("192.168.0.11")]
}

fn summary(f: &Frontend) -> String {
    let backends: Vec<String> = f
        .backends
        .iter()
        .map(|b| format!("{} {}", b.socket_addr(), b.state))
        .collect();
    format!("{} {} [{}]", f.socket_addr(), f.kind, backends.join(", "))
}

#[test]
fn every_frontend_of_the_service_on_worker_1() {
    let (services, slices, _) = common::load("shop.yaml");
    let shop = &services[0];
    let got: Vec<String> = frontends(shop, &slices, "worker-1", &node_ips())
        .iter()
        .map(summary)
        .collect();
    let want = [
        "10.96.12.34:80 ClusterIP [10.244.1.11:8080 active, 10.244.2.21:8080 active]",
        "10.96.12.34:9090 ClusterIP [10.244.1.11:9090 active, 10.244.2.21:9090 active]",
        "[fd00:10:96::1234]:80 ClusterIP [[fd00:10:244:1::11]:8080 active]",
        "[fd00:10:96::1234]:9090 ClusterIP [[fd00:10:244:1::11]:9090 active]",
        "0.0.0.0:31080 NodePort [10.244.1.11:8080 active]",
        "192.168.0.11:31080 NodePort [10.244.1.11:8080 active]",
        "[::]:31080 NodePort [[fd00:10:244:1::11]:8080 active]",
        "[fd00:192::11]:31080 NodePort [[fd00:10:244:1::11]:8080 active]",
        "0.0.0.0:31090 NodePort [10.244.1.11:9090 active]",
        "192.168.0.11:31090 NodePort [10.244.1.11:9090 active]",
        "[::]:31090 NodePort [[fd00:10:244:1::11]:9090 active]",
        "[fd00:192::11]:31090 NodePort [[fd00:10:244:1::11]:9090 active]",
        "172.20.0.10:80 LoadBalancer [10.244.1.11:8080 active]",
        "172.20.0.10:9090 LoadBalancer [10.244.1.11:9090 active]",
    ];
    assert_eq!(got, want);
}

#[test]
fn frontends_carry_service_affinity_and_policy() {
    let (services, slices, _) = common::load("shop.yaml");
    let fs = frontends(&services[0], &slices, "worker-1", &node_ips());
    for f in &fs {
        assert_eq!(f.service.to_string(), "demo/shop");
        assert_eq!(f.affinity_timeout, Some(600));
        let want = if f.kind == FrontendKind::ClusterIp {
            TrafficPolicy::Cluster
        } else {
            TrafficPolicy::Local
        };
        assert_eq!(f.traffic_policy, want);
    }
    let pod = fs[0].backends[0]
        .target_ref
        .as_ref()
        .and_then(|t| t.name.clone());
    assert_eq!(pod.as_deref(), Some("shop-6d9f7c-abcde"));
    assert_eq!(fs[0].backends[0].node_name.as_deref(), Some("worker-1"));
}

#[test]
fn local_policy_without_local_endpoints_drops() {
    let (services, slices, _) = common::load("shop.yaml");
    let fs = frontends(&services[0], &slices, "worker-3", &[ip("192.168.0.13")]);
    let lb: Vec<&Frontend> = fs
        .iter()
        .filter(|f| f.kind == FrontendKind::LoadBalancer)
        .collect();
    assert_eq!(lb.len(), 2);
    assert!(lb.iter().all(|f| f.backends.is_empty()));
    // ClusterIP still reaches every ready endpoint.
    assert_eq!(fs[0].backends.len(), 2);
}

#[test]
fn terminating_fallback_is_per_locality() {
    let (services, mut slices, _) = common::load("shop.yaml");
    // The only ready pod on worker-1 goes away; its terminating sibling still serves.
    slices[0]
        .endpoints
        .retain(|e| e.addresses[0] != ip("10.244.1.11"));
    let fs = frontends(&services[0], &slices, "worker-1", &node_ips());
    let lb = fs
        .iter()
        .find(|f| f.kind == FrontendKind::LoadBalancer)
        .unwrap();
    assert_eq!(
        summary(lb),
        "172.20.0.10:80 LoadBalancer [10.244.1.12:8080 terminating]"
    );
    // Cluster-wide, worker-2's ready pod is preferred over the terminating one.
    assert_eq!(
        summary(&fs[0]),
        "10.96.12.34:80 ClusterIP [10.244.2.21:8080 active]"
    );
    assert!(fs
        .iter()
        .flat_map(|f| &f.backends)
        .all(|b| b.address != ip("10.244.3.31")));
}

#[test]
fn backend_selection_with_either_algorithm() {
    let (services, slices, _) = common::load("shop.yaml");
    let fs = frontends(&services[0], &slices, "worker-2", &node_ips());
    let cluster = &fs[0];
    let names: Vec<String> = cluster.backends.iter().map(|b| b.maglev_name()).collect();
    assert_eq!(names, ["10.244.1.11:8080/TCP", "10.244.2.21:8080/TCP"]);
    let table = Maglev::default().table(&names).unwrap();
    let flow = FiveTuple {
        src: ip("10.244.5.5"),
        dst: cluster.address,
        src_port: 51515,
        dst_port: cluster.port,
        protocol: cluster.protocol.number(),
    };
    for algo in ["maglev".parse::<Algorithm>().unwrap(), Algorithm::Random] {
        let selector: Box<dyn Selector> = match algo {
            Algorithm::Maglev => Box::new(table.clone()),
            Algorithm::Random => Box::new(Random { count: names.len() }),
        };
        let picked = selector.select(flow.hash()).unwrap();
        assert!(picked < names.len());
        // Same flow, same backend.
        assert_eq!(selector.select(flow.hash()), Some(picked));
    }
    assert_eq!(
        cluster
            .backends
            .iter()
            .filter(|b| b.state == BackendState::Active)
            .count(),
        2
    );
}

#[test]
fn service_list_text() {
    let (services, slices, _) = common::load("shop.yaml");
    let mut fs = frontends(&services[0], &slices, "worker-1", &node_ips());
    fs.retain(|f| f.port == 80 || f.port == 31080);
    let text = ServiceTable::new(&fs).to_string();
    let want = "\
ID   Frontend                    Service Type   Backend
1    0.0.0.0:31080/TCP           NodePort       1 => 10.244.1.11:8080/TCP (active)
2    10.96.12.34:80/TCP          ClusterIP      1 => 10.244.1.11:8080/TCP (active)
                                                2 => 10.244.2.21:8080/TCP (active)
3    172.20.0.10:80/TCP          LoadBalancer   1 => 10.244.1.11:8080/TCP (active)
4    192.168.0.11:31080/TCP      NodePort       1 => 10.244.1.11:8080/TCP (active)
5    [::]:31080/TCP              NodePort       1 => [fd00:10:244:1::11]:8080/TCP (active)
6    [fd00:10:96::1234]:80/TCP   ClusterIP      1 => [fd00:10:244:1::11]:8080/TCP (active)
7    [fd00:192::11]:31080/TCP    NodePort       1 => [fd00:10:244:1::11]:8080/TCP (active)
";
    assert_eq!(text, want);
}
