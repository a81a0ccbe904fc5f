//! LB-IPAM over realistic pools and services: determinism, stability, conflicts, usage.

mod common;

use std::net::IpAddr;

use lumen_lb::{allocate, ConditionReason, IpamResult, Service, ServiceName};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn line(r: &IpamResult, ns: &str, name: &str) -> String {
    let a = r
        .service(&ServiceName::new(ns, name))
        .expect("service is managed");
    let ips: Vec<String> = a
        .ips
        .iter()
        .map(|i| format!("{}@{}", i.ip, i.pool))
        .collect();
    format!(
        "{} [{}] {}: {}",
        a.service,
        ips.join(" "),
        a.condition.reason,
        a.condition.message
    )
}

#[test]
fn allocates_in_creation_order() {
    let (services, _, pools) = common::load("lbipam.yaml");
    let r = allocate(&pools, &services);
    let got: Vec<String> = r
        .services
        .iter()
        .map(|s| line(&r, &s.service.namespace, &s.service.name))
        .collect();
    let want = [
        "infra/legacy [172.40.0.3@retired] satisfied: 172.40.0.3 from pool retired",
        "shop/web [172.20.0.1@blue] satisfied: 172.20.0.1 from pool blue",
        "shop/api [172.20.0.2@blue fd00:20::@blue] satisfied: 172.20.0.2 from pool blue, fd00:20:: from pool blue",
        "shop/late [] out_of_ips: no free IPv4 address in pool(s) blue",
        "infra/dns [172.30.0.101@default] satisfied: 172.30.0.101 from pool default",
        "infra/dns-copy [] already_allocated: IP 172.30.0.101 is already allocated to infra/dns",
        "infra/outside [] not_in_pool: IP 192.0.2.1 is not in any pool",
    ];
    assert_eq!(got, want);
    let usage: Vec<String> = r
        .pools
        .iter()
        .map(|p| format!("{} {}/{} free {}", p.name, p.used, p.total, p.available))
        .collect();
    assert_eq!(
        usage,
        [
            "blue 3/6 free 3",
            "default 1/2 free 1",
            "retired 1/6 free 0"
        ]
    );
}

#[test]
fn same_inputs_in_any_order_same_result() {
    let (services, _, pools) = common::load("lbipam.yaml");
    let first = allocate(&pools, &services);
    let mut s = services.clone();
    let mut p = pools.clone();
    s.reverse();
    p.reverse();
    assert_eq!(allocate(&p, &s), first);
    s.rotate_left(3);
    assert_eq!(allocate(&pools, &s), first);
}

#[test]
fn existing_status_ips_are_kept() {
    let (mut services, _, pools) = common::load("lbipam.yaml");
    // `late` already holds what `web` would get first: it keeps it, `web` gets the next one.
    let late = services.iter_mut().find(|s| s.meta.name == "late").unwrap();
    late.ingress_ips = vec![ip("172.20.0.1")];
    let r = allocate(&pools, &services);
    assert_eq!(
        r.ips(&ServiceName::new("shop", "late")),
        vec![ip("172.20.0.1")]
    );
    assert_eq!(
        r.ips(&ServiceName::new("shop", "web")),
        vec![ip("172.20.0.2")]
    );
    let api = r.service(&ServiceName::new("shop", "api")).unwrap();
    assert_eq!(api.condition.reason, ConditionReason::OutOfIps);
    assert_eq!(
        api.ips.iter().map(|a| a.ip).collect::<Vec<_>>(),
        vec![ip("fd00:20::")]
    );
}

#[test]
fn stale_status_ips_are_replaced() {
    let (mut services, _, pools) = common::load("lbipam.yaml");
    // The web service's old IP belongs to a pool that does not select it any more.
    let web = services.iter_mut().find(|s| s.meta.name == "web").unwrap();
    web.ingress_ips = vec![ip("172.30.0.100")];
    let r = allocate(&pools, &services);
    assert_eq!(
        r.ips(&ServiceName::new("shop", "web")),
        vec![ip("172.20.0.1")]
    );
}

#[test]
fn requested_ip_in_unselecting_pool_is_reported() {
    let (mut services, _, pools) = common::load("lbipam.yaml");
    let outside: &mut Service = services
        .iter_mut()
        .find(|s| s.meta.name == "outside")
        .unwrap();
    outside.load_balancer_ip = Some(ip("fd00:20::3"));
    let r = allocate(&pools, &services);
    assert_eq!(
        line(&r, "infra", "outside"),
        "infra/outside [] not_in_pool: IP fd00:20::3 is in pool blue which does not select this service"
    );
}

#[test]
fn broadcast_address_is_never_allocatable() {
    let (mut services, _, pools) = common::load("lbipam.yaml");
    let outside: &mut Service = services
        .iter_mut()
        .find(|s| s.meta.name == "outside")
        .unwrap();
    outside.load_balancer_ip = Some(ip("172.20.0.3"));
    outside.meta.labels.insert("color".into(), "blue".into());
    let r = allocate(&pools, &services);
    assert_eq!(
        line(&r, "infra", "outside"),
        "infra/outside [] not_in_pool: IP 172.20.0.3 is not in any pool"
    );
}

#[test]
fn no_pools_is_a_condition_not_a_failure() {
    let (services, _, _) = common::load("lbipam.yaml");
    let r = allocate(&[], &services);
    assert_eq!(r.services.len(), 7);
    assert!(r.pools.is_empty());
    assert_eq!(
        line(&r, "shop", "web"),
        "shop/web [] no_pool: no enabled IPv4 pool selects this service"
    );
}
