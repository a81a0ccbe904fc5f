//! Privileged tests of `wire`: real veth pairs between two namespaces the test creates
//! (a stand-in "node" and a "pod"), inspected with `ip -j`. They skip unless root.
//! Every namespace is an RAII guard, so even a failed assertion leaves nothing behind.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::{node_with_gateway, privileged, TestNs};
use lumen_cni::wire::{self, CheckFailure, Netns, WireError, WireSpec, Wired};

const GW: &str = "10.244.7.1";

fn spec(pod: &TestNs, container_id: &str, ip: &str) -> WireSpec {
    WireSpec {
        container_id: container_id.to_string(),
        ifname: "eth0".to_string(),
        netns: pod.path.clone(),
        ip: ip.parse().unwrap(),
        gateway: GW.parse().unwrap(),
        mtu: 1400,
    }
}

/// Runs `f` from inside the test's node namespace, as the plugin runs in the node's.
fn on_node<T: Send>(
    node: &TestNs,
    f: impl FnOnce() -> Result<T, WireError> + Send,
) -> Result<T, WireError> {
    Netns::open(&node.path).expect("test node namespace").run(f)
}

fn lxc_links(node: &TestNs) -> Vec<String> {
    node.link_names()
        .into_iter()
        .filter(|n| n.starts_with("lxc"))
        .collect()
}

#[test]
fn setup_wires_both_sides_and_teardown_removes_them() {
    if !privileged("setup_wires_both_sides_and_teardown_removes_them") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let spec = spec(&pod, "c0ffee01", "10.244.7.10");
    let wired = on_node(&node, || wire::setup(&spec)).unwrap();

    // Node side: the host veth, up, MTU, its index, the /32 route, the sysctls.
    let host = wire::host_veth_name("c0ffee01", "eth0");
    assert_eq!(wired.host_ifname, host);
    assert!(!wired.reused);
    let link = node.link(&host).expect("host veth in node namespace");
    assert_eq!(link["ifindex"], wired.host_ifindex);
    assert_eq!(link["mtu"], 1400);
    assert!(
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{link}"
    );
    assert_eq!(link["address"], wired.host_mac);
    let route = node
        .routes()
        .into_iter()
        .find(|r| r["dst"] == "10.244.7.10")
        .expect("pod route on node");
    assert_eq!(route["dev"], host.as_str());
    assert_eq!(route["scope"], "link");
    let sysctl = |path: String| {
        on_node(&node, move || {
            Ok(std::fs::read_to_string(path).unwrap().trim().to_string())
        })
        .unwrap()
    };
    assert_eq!(
        sysctl(format!("/proc/sys/net/ipv4/conf/{host}/rp_filter")),
        "0"
    );
    assert_eq!(
        sysctl(format!("/proc/sys/net/ipv4/conf/{host}/forwarding")),
        "1"
    );
    assert!(pod.link(&host).is_none(), "host end must stay on the node");

    // Pod side: eth0 (not left under a temporary name), up, MTU, MAC, /32, routes, lo up.
    let eth0 = pod.link("eth0").expect("eth0 in pod");
    assert_eq!(eth0["address"], wired.pod_mac);
    assert_eq!(eth0["ifindex"], wired.pod_ifindex);
    assert_eq!(eth0["mtu"], 1400);
    assert!(
        eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{eth0}"
    );
    assert!(node.link("eth0").is_none());
    let lo = pod.link("lo").unwrap();
    assert!(
        lo["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{lo}"
    );
    let addrs = pod.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    let infos = addrs[0]["addr_info"].as_array().unwrap();
    assert_eq!(infos.len(), 1, "{addrs}");
    assert_eq!(infos[0]["local"], "10.244.7.10");
    assert_eq!(infos[0]["prefixlen"], 32);
    let routes = pod.routes();
    let gw_route = routes
        .iter()
        .find(|r| r["dst"] == GW)
        .expect("gateway route");
    assert_eq!(gw_route["dev"], "eth0");
    assert_eq!(gw_route["scope"], "link");
    let default = routes
        .iter()
        .find(|r| r["dst"] == "default")
        .expect("default route");
    assert_eq!(default["gateway"], GW);
    assert_eq!(default["dev"], "eth0");

    // verify() agrees with what setup() reported.
    let checked = on_node(&node, || wire::verify(&spec)).unwrap();
    assert_eq!(
        Wired {
            reused: false,
            ..checked
        },
        wired
    );

    // Traffic both ways, inside the two test namespaces only.
    udp_round_trip(&node, &pod, spec.ip);

    // Teardown removes the pair from both namespaces; a second teardown is a no-op.
    assert!(on_node(&node, || wire::teardown(&host)).unwrap());
    assert!(lxc_links(&node).is_empty());
    assert!(pod.link("eth0").is_none());
    assert!(!node.routes().iter().any(|r| r["dst"] == "10.244.7.10"));
    assert!(!on_node(&node, || wire::teardown(&host)).unwrap());
}

/// Pod sends a datagram to the gateway address on the node; the node answers to the
/// source it saw, which must be the pod's address.
fn udp_round_trip(node: &TestNs, pod: &TestNs, pod_ip: IpAddr) {
    let gw: IpAddr = GW.parse().unwrap();
    let server = on_node(node, || Ok(UdpSocket::bind((gw, 0)).unwrap())).unwrap();
    let server_addr = server.local_addr().unwrap();
    let client = Netns::open(&pod.path)
        .unwrap()
        .run(|| Ok(UdpSocket::bind((pod_ip, 0)).unwrap()))
        .unwrap();
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    client.send_to(b"ping", server_addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, from): (usize, SocketAddr) = server
        .recv_from(&mut buf)
        .expect("node got the pod's datagram");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from.ip(), pod_ip);
    server.send_to(b"pong", from).unwrap();
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("pod got the node's answer");
    assert_eq!(&buf[..n], b"pong");
}

#[test]
fn setup_twice_reuses_the_pair() {
    if !privileged("setup_twice_reuses_the_pair") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let spec = spec(&pod, "c0ffee02", "10.244.7.11");
    let first = on_node(&node, || wire::setup(&spec)).unwrap();
    let second = on_node(&node, || wire::setup(&spec)).unwrap();
    assert!(second.reused);
    assert_eq!(
        Wired {
            reused: false,
            ..second
        },
        first
    );
    assert_eq!(lxc_links(&node), vec![first.host_ifname.clone()]);
    let addrs = pod.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    assert_eq!(
        addrs[0]["addr_info"].as_array().unwrap().len(),
        1,
        "{addrs}"
    );
}

#[test]
fn a_host_veth_with_the_wrong_peer_is_replaced() {
    if !privileged("a_host_veth_with_the_wrong_peer_is_replaced") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let spec = spec(&pod, "c0ffee03", "10.244.7.12");
    let host = spec.host_ifname();
    // A leftover pair whose peer never reached the pod.
    node.ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "stray0",
    ]);
    let wired = on_node(&node, || wire::setup(&spec)).unwrap();
    assert!(!wired.reused);
    assert!(node.link("stray0").is_none());
    assert_eq!(pod.link("eth0").unwrap()["ifindex"], wired.pod_ifindex);
    on_node(&node, || wire::verify(&spec)).unwrap();
}

#[test]
fn an_existing_address_is_replaced_not_added() {
    if !privileged("an_existing_address_is_replaced_not_added") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let mut spec = spec(&pod, "c0ffee04", "10.244.7.13");
    on_node(&node, || wire::setup(&spec)).unwrap();
    spec.ip = "10.244.7.14".parse().unwrap();
    on_node(&node, || wire::setup(&spec)).unwrap();
    let addrs = pod.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    let infos = addrs[0]["addr_info"].as_array().unwrap();
    assert_eq!(infos.len(), 1, "{addrs}");
    assert_eq!(infos[0]["local"], "10.244.7.14");
}

#[test]
fn verify_reports_what_is_missing() {
    if !privileged("verify_reports_what_is_missing") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let spec = spec(&pod, "c0ffee05", "10.244.7.15");
    let wired = on_node(&node, || wire::setup(&spec)).unwrap();

    pod.ip(&["route", "del", "default"]);
    let err = on_node(&node, || wire::verify(&spec)).unwrap_err();
    assert!(
        matches!(
            &err,
            WireError::Check(CheckFailure::RouteMissing { side: "pod", .. })
        ),
        "{err}"
    );
    pod.ip(&["route", "add", "default", "via", GW, "dev", "eth0"]);
    on_node(&node, || wire::verify(&spec)).unwrap();

    node.ip(&["link", "set", &wired.host_ifname, "down"]);
    let err = on_node(&node, || wire::verify(&spec)).unwrap_err();
    assert!(
        matches!(&err, WireError::Check(CheckFailure::LinkDown { .. })),
        "{err}"
    );

    on_node(&node, || wire::teardown(&wired.host_ifname)).unwrap();
    let err = on_node(&node, || wire::verify(&spec)).unwrap_err();
    assert!(
        matches!(&err, WireError::Check(CheckFailure::HostVethMissing { .. })),
        "{err}"
    );
}

#[test]
fn missing_pod_namespace_creates_nothing() {
    if !privileged("missing_pod_namespace_creates_nothing") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let gone = TestNs::new("gone");
    let spec = spec(&gone, "c0ffee06", "10.244.7.16");
    drop(gone);
    let err = on_node(&node, || wire::setup(&spec)).unwrap_err();
    assert!(matches!(err, WireError::NetnsMissing { .. }), "{err}");
    assert!(lxc_links(&node).is_empty());
}

#[test]
fn a_taken_pod_ifname_fails_cleanly() {
    if !privileged("a_taken_pod_ifname_fails_cleanly") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let spec = spec(&pod, "c0ffee07", "10.244.7.17");
    let err = on_node(&node, || wire::setup(&spec)).unwrap_err();
    assert!(matches!(err, WireError::PodIfnameTaken { .. }), "{err}");
    assert!(
        lxc_links(&node).is_empty(),
        "nothing may be left on the node"
    );
    assert!(
        pod.link("other0").is_some(),
        "the pod's own interfaces are untouched"
    );
}

#[test]
fn a_failure_after_creating_the_pair_removes_it() {
    if !privileged("a_failure_after_creating_the_pair_removes_it") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    // With IPv6 disabled for new interfaces in the pod, the pair is created but adding
    // the pod's IPv6 address fails: the pair must not survive.
    Netns::open(&pod.path)
        .unwrap()
        .run(|| {
            std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").unwrap();
            Ok(())
        })
        .unwrap();
    let mut spec = spec(&pod, "c0ffee08", "fd00:7::10");
    spec.gateway = "fd00:7::1".parse().unwrap();
    let err = on_node(&node, || wire::setup(&spec)).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Netlink {
                op: "add address to",
                ..
            }
        ),
        "{err}"
    );
    assert!(lxc_links(&node).is_empty(), "the pair must be rolled back");
    assert!(pod.link("eth0").is_none());
}

#[test]
fn ipv6_pods_are_wired_too() {
    if !privileged("ipv6_pods_are_wired_too") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let mut spec = spec(&pod, "c0ffee0a", "fd00:7::20");
    spec.gateway = "fd00:7::1".parse().unwrap();
    let wired = on_node(&node, || wire::setup(&spec)).unwrap();
    let addrs = pod.ip_json(&["-6", "addr", "show", "dev", "eth0", "scope", "global"]);
    let infos = addrs[0]["addr_info"].as_array().unwrap();
    assert_eq!(infos[0]["local"], "fd00:7::20");
    assert_eq!(infos[0]["prefixlen"], 128);
    let routes = pod.ip_json(&["-6", "route", "show"]);
    let default = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == "default")
        .cloned();
    assert_eq!(default.expect("v6 default route")["gateway"], "fd00:7::1");
    let node_routes = node.ip_json(&["-6", "route", "show"]);
    assert!(
        node_routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "fd00:7::20" && r["dev"] == wired.host_ifname.as_str()),
        "{node_routes}"
    );
    on_node(&node, || wire::verify(&spec)).unwrap();
    assert!(on_node(&node, || wire::teardown(&wired.host_ifname)).unwrap());
}

#[test]
fn the_node_namespace_itself_is_refused() {
    if !privileged("the_node_namespace_itself_is_refused") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let mut spec = spec(&node, "c0ffee09", "10.244.7.19");
    spec.netns = node.path.clone();
    let err = on_node(&node, || wire::setup(&spec)).unwrap_err();
    assert!(matches!(err, WireError::NodeNetns { .. }), "{err}");
    assert!(lxc_links(&node).is_empty());
}
