//! ClusterIP load balancing in the datapath (`kubeProxyReplacement: true`): a client pod
//! reaches a Service's ClusterIP, its connections are spread over backends on both nodes,
//! the flows name the backend pod and the service, and a Service without endpoints drops
//! with SERVICE_BACKEND_NOT_FOUND.

mod common;

use common::{privileged, TCP_PORT};
use lumen_api::flow::{EventTypeFilter, FlowFilter, Verdict};
use lumen_integration::{manifest, policy, traffic_bin, AgentOptions, Lab, Node, Pod, Spawned};
use std::time::{Duration, Instant};

const CLUSTER_IP: &str = "10.96.0.10";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
";

/// An EndpointSlice of `web` listing `ips` as ready endpoints on port 8080.
fn slice(ips: &[String]) -> String {
    let endpoints: Vec<(String, Option<String>)> =
        ips.iter().map(|ip| (ip.clone(), None)).collect();
    manifest::endpoint_slice("demo", "web", TCP_PORT, "TCP", &endpoints)
}

/// Two nodes with routed pod CIDRs; `web-a` (node1) and `web-b` (node2) serve TCP 8080;
/// `client` on node1.
struct Cluster {
    node1: Node,
    client: Pod,
    web: Vec<(Pod, Spawned)>,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let lab = Lab::new(name).expect("lab");
        let node1 = lab.add_node("node1").expect("node1");
        let node2 = lab.add_node("node2").expect("node2");
        lab.route_pod_cidrs().expect("routes");
        for n in [&node1, &node2] {
            n.start_agent(AgentOptions {
                kube_proxy_replacement: true,
                ..Default::default()
            })
            .expect("agent");
        }
        let mut web = vec![];
        for (node, name) in [(&node1, "web-a"), (&node2, "web-b")] {
            let pod = node
                .add_pod("demo", name, &[("app", "web")])
                .expect("web pod");
            let serving = pod.serve(&["--tcp", &TCP_PORT.to_string()]).expect("serve");
            web.push((pod, serving));
        }
        let client = node1
            .add_pod("demo", "client", &[("app", "client")])
            .expect("client");
        Cluster {
            node1,
            client,
            web,
            lab,
        }
    }

    fn connects(&self) -> bool {
        policy::tcp_connects(&self.client, CLUSTER_IP.parse().unwrap(), 80)
    }

    /// Waits until a connection to the ClusterIP succeeds (`true`) or fails (`false`).
    fn wait_connects(&self, want: bool) {
        let start = Instant::now();
        while self.connects() != want {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the ClusterIP never {}",
                if want { "connected" } else { "failed" }
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Connections each backend served so far.
    fn served(&self) -> Vec<usize> {
        self.web
            .iter()
            .map(|(_, s)| s.log().matches("tcp_closed").count())
            .collect()
    }
}

#[test]
fn cluster_ip_balances_across_nodes_and_drops_without_backends() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-lb");
    policy::write(&c.lab, "web-svc.yaml", SERVICE).unwrap();
    let ips: Vec<String> = c.web.iter().map(|(p, _)| p.ip().to_string()).collect();
    policy::write(&c.lab, "web-slice.yaml", &slice(&ips)).unwrap();
    c.wait_connects(true);

    let before = c.served();
    let out = c
        .client
        .exec(
            traffic_bin().unwrap(),
            [
                "tcp",
                "--to",
                &format!("{CLUSTER_IP}:80"),
                "--connections",
                "30",
                "--timeout",
                "2s",
            ],
        )
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lab-traffic JSON");
    assert_eq!(
        report["ok"], true,
        "every connection through the ClusterIP succeeds: {report}"
    );
    // The server logs a connection when it closes: give the last ones a moment.
    let start = Instant::now();
    let per_backend = loop {
        let now = c.served();
        let served: Vec<usize> = now.iter().zip(&before).map(|(n, b)| n - b).collect();
        if served.iter().sum::<usize>() >= 30 || start.elapsed() > Duration::from_secs(3) {
            break served;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(per_backend.iter().sum::<usize>() >= 30, "{per_backend:?}");
    assert!(
        per_backend.iter().all(|&n| n > 0),
        "both backends (both nodes) served: {per_backend:?}"
    );

    // The client's flows name the backend pod and the service it was reached through.
    let filter = FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: 4,
            ..Default::default()
        }],
        source_pod: vec!["demo/client".into()],
        ..Default::default()
    };
    let translated = policy::wait_flow(&c.node1, filter, "a translated flow", |f| {
        f.destination
            .as_ref()
            .is_some_and(|d| d.pod_name.starts_with("web-"))
    })
    .unwrap();
    let svc = translated
        .destination_service
        .as_ref()
        .expect("destination_service");
    assert_eq!(
        (svc.namespace.as_str(), svc.name.as_str()),
        ("demo", "web"),
        "{translated:#?}"
    );

    // Each new connection's translation is reported as Hubble does: verdict TRANSLATED,
    // event type 7 (trace-sock), post-xlate-fwd, the backend and the service.
    let filter = FlowFilter {
        verdict: vec![Verdict::Translated as i32],
        source_pod: vec!["demo/client".into()],
        ..Default::default()
    };
    let xlate = policy::wait_flow(&c.node1, filter, "a TRANSLATED flow", |_| true).unwrap();
    assert_eq!(
        xlate.event_type.as_ref().map(|e| e.r#type),
        Some(7),
        "{xlate:#?}"
    );
    assert_eq!(xlate.sock_xlate_point, 2, "post-xlate-fwd: {xlate:#?}");
    assert!(
        xlate
            .destination
            .as_ref()
            .is_some_and(|d| d.pod_name.starts_with("web-")),
        "{xlate:#?}"
    );
    assert_eq!(
        xlate.destination_service.as_ref().map(|s| s.name.as_str()),
        Some("web"),
        "{xlate:#?}"
    );

    // No endpoints: new connections are dropped, and the drop is reported.
    policy::write(&c.lab, "web-slice.yaml", &slice(&[])).unwrap();
    c.wait_connects(false);
    let filter = FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: 1,
            ..Default::default()
        }],
        source_pod: vec!["demo/client".into()],
        ..Default::default()
    };
    let drop = policy::wait_flow(&c.node1, filter, "SERVICE_BACKEND_NOT_FOUND drop", |f| {
        f.drop_reason_desc == 158
    })
    .unwrap();
    assert_eq!(drop.verdict, Verdict::Dropped as i32, "{drop:#?}");
    let l4 = format!("{:?}", drop.l4);
    assert!(
        l4.contains("destination_port: 80"),
        "the frontend's port: {drop:#?}"
    );
    assert_eq!(
        drop.ip.as_ref().map(|ip| ip.destination.as_str()),
        Some(CLUSTER_IP),
        "{drop:#?}"
    );
    assert_eq!(
        drop.destination_service.as_ref().map(|s| s.name.as_str()),
        Some("web"),
        "{drop:#?}"
    );

    // Scaled back up: the service works again within a second of the EndpointSlice.
    policy::write(&c.lab, "web-slice.yaml", &slice(&ips)).unwrap();
    // Short attempts: a SYN dropped just before the update would otherwise wait for the
    // client's 1 s retransmission.
    let quick = || {
        c.client
            .exec(
                traffic_bin().unwrap(),
                [
                    "tcp",
                    "--to",
                    &format!("{CLUSTER_IP}:80"),
                    "--timeout",
                    "100ms",
                ],
            )
            .is_ok_and(|o| o.status.success())
    };
    let start = Instant::now();
    while !quick() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the ClusterIP never came back"
        );
    }
    let took = start.elapsed();
    eprintln!("scale up: the ClusterIP works again {took:?} after the EndpointSlice");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// Connections from `client` to the ClusterIP, and how many each backend served.
fn spread(c: &Cluster, client: &Pod, n: u32) -> Vec<usize> {
    let before = c.served();
    let out = client
        .exec(
            traffic_bin().unwrap(),
            [
                "tcp",
                "--to",
                &format!("{CLUSTER_IP}:80"),
                "--connections",
                &n.to_string(),
            ],
        )
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lab-traffic JSON");
    assert_eq!(report["ok"], true, "{report}");
    let start = Instant::now();
    loop {
        let served: Vec<usize> = c.served().iter().zip(&before).map(|(a, b)| a - b).collect();
        if served.iter().sum::<usize>() >= n as usize || start.elapsed() > Duration::from_secs(3) {
            return served;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-aff");
    let affinity = SERVICE.replace(
        "  selector: {app: web}\n",
        "  selector: {app: web}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
    );
    assert_ne!(affinity, SERVICE);
    policy::write(&c.lab, "web-svc.yaml", &affinity).unwrap();
    let ips: Vec<String> = c.web.iter().map(|(p, _)| p.ip().to_string()).collect();
    policy::write(&c.lab, "web-slice.yaml", &slice(&ips)).unwrap();
    c.wait_connects(true);
    let served = spread(&c, &c.client, 20);
    assert!(
        served.contains(&0) && served.iter().sum::<usize>() >= 20,
        "one backend serves all of the client's connections: {served:?}"
    );
    // Without affinity the same client spreads (random choice per connection).
    policy::write(&c.lab, "web-svc.yaml", SERVICE).unwrap();
    let start = Instant::now();
    loop {
        let served = spread(&c, &c.client, 20);
        if served.iter().all(|&n| n > 0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "affinity off never spread: {served:?}"
        );
    }
}

#[test]
fn policy_applies_to_the_backend_after_translation() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-pol");
    let allowed = c
        .node1
        .add_pod("demo", "allowed", &[("app", "allowed")])
        .expect("allowed pod");
    policy::write(&c.lab, "web-svc.yaml", SERVICE).unwrap();
    let ips: Vec<String> = c.web.iter().map(|(p, _)| p.ip().to_string()).collect();
    policy::write(&c.lab, "web-slice.yaml", &slice(&ips)).unwrap();
    c.wait_connects(true);
    let cnp = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-allowed, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: allowed}}]
";
    policy::apply(&c.lab, "web-pol.yaml", cnp, "demo", "web-from-allowed").unwrap();
    // The backends' policy decides, on the backend pods' identity, whatever address the
    // client used: the allowed pod gets through the ClusterIP, the other one does not.
    assert!(policy::tcp_connects(
        &allowed,
        CLUSTER_IP.parse().unwrap(),
        80
    ));
    let served = spread(&c, &allowed, 10);
    assert!(served.iter().all(|&n| n > 0), "{served:?}");
    assert!(
        !c.connects(),
        "the client's connection through the ClusterIP is denied"
    );
    let filter = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        source_pod: vec!["demo/client".into()],
        ..Default::default()
    };
    let nodes = [c.node1.clone(), c.web[1].0.node().clone()];
    let start = Instant::now();
    let denied = loop {
        let found = nodes.iter().find_map(|n| {
            policy::flows(n, filter.clone())
                .ok()?
                .into_iter()
                .find(|f| f.drop_reason_desc == 133)
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no policy drop reported"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let dst = denied.destination.as_ref().expect("destination");
    assert!(
        dst.pod_name.starts_with("web-"),
        "denied at the backend pod: {denied:#?}"
    );
    assert!(
        dst.labels.iter().any(|l| l == "k8s:app=web"),
        "with the backend's identity: {denied:#?}"
    );
}

/// A client that opens one connection to the ClusterIP, exchanges a line, prints
/// `first`, waits for `go` to appear, exchanges again and prints `second ok`.
const LONG_CLIENT: &str = r#"
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=2)
s.sendall(b"ping\n"); assert s.recv(16) == b"ping\n"
print("first", flush=True)
while not os.path.exists(sys.argv[2]): time.sleep(0.05)
s.sendall(b"pong\n"); got = s.recv(16)
print("second ok" if got == b"pong\n" else "second broken %r" % got, flush=True)
"#;

#[test]
fn backend_changes_keep_established_connections() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-keep");
    policy::write(&c.lab, "web-svc.yaml", SERVICE).unwrap();
    let a = c.web[0].0.ip().to_string();
    let b = c.web[1].0.ip().to_string();
    policy::write(&c.lab, "web-slice.yaml", &slice(std::slice::from_ref(&a))).unwrap();
    c.wait_connects(true);
    let go = c.lab.dir().join("go");
    let mut client = c
        .client
        .spawn(
            "python3",
            ["-c", LONG_CLIENT, CLUSTER_IP, go.to_str().unwrap()],
        )
        .unwrap();
    client
        .wait_for_output("first", Duration::from_secs(5))
        .unwrap();
    // The connection is on web-a; web-b joins, which reorders and regrows the slots.
    policy::write(&c.lab, "web-slice.yaml", &slice(&[b.clone(), a.clone()])).unwrap();
    let start = Instant::now();
    while c.served()[1] == 0 {
        // New connections reach web-b once the maps have it.
        let _ = c.connects();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "web-b never served"
        );
    }
    std::fs::write(&go, "").unwrap();
    client
        .wait_for_output("second", Duration::from_secs(5))
        .unwrap();
    assert!(
        client.log().contains("second ok"),
        "the established connection survived: {}",
        client.log()
    );
}

#[test]
fn udp_cluster_ip_replies_come_from_the_service_address() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-udp");
    let _udp_servers: Vec<Spawned> = c
        .web
        .iter()
        .map(|(pod, _)| pod.serve(&["--udp", "5353"]).unwrap())
        .collect();
    let svc = "apiVersion: v1
kind: Service
metadata: {name: dns, namespace: demo}
spec:
  clusterIP: 10.96.0.53
  selector: {app: web}
  ports: [{port: 53, targetPort: 5353, protocol: UDP}]
";
    policy::write(&c.lab, "dns-svc.yaml", svc).unwrap();
    let ips: Vec<String> = c.web.iter().map(|(p, _)| p.ip().to_string()).collect();
    let endpoints: Vec<(String, Option<String>)> = ips.into_iter().map(|ip| (ip, None)).collect();
    let dns_slice = manifest::endpoint_slice("demo", "dns", 5353, "UDP", &endpoints);
    policy::write(&c.lab, "dns-slice.yaml", &dns_slice).unwrap();
    // The client's socket is connected to the ClusterIP: an echo counts only if it comes
    // back from 10.96.0.53:53, i.e. was reverse-translated.
    let start = Instant::now();
    loop {
        let out = c
            .client
            .exec(
                traffic_bin().unwrap(),
                [
                    "udp",
                    "--to",
                    "10.96.0.53:53",
                    "--count",
                    "20",
                    "--timeout",
                    "300ms",
                ],
            )
            .unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("lab-traffic JSON");
        if report["ok"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "UDP through the ClusterIP never answered: {report}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_direct_connection_reusing_a_translated_ones_ports_is_not_rewritten() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-reuse");
    policy::write(&c.lab, "web-svc.yaml", SERVICE).unwrap();
    let a = c.web[0].0.ip().to_string();
    policy::write(&c.lab, "web-slice.yaml", &slice(std::slice::from_ref(&a))).unwrap();
    c.wait_connects(true);
    c.client
        .exec_ok("sysctl", ["-qw", "net.ipv4.tcp_tw_reuse=1"])
        .unwrap();
    let run = |to: &str| {
        let out = c
            .client
            .exec(
                traffic_bin().unwrap(),
                ["tcp", "--to", to, "--src-port", "41000", "--timeout", "2s"],
            )
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("lab-traffic JSON")
    };
    // Through the ClusterIP (to web-a), then straight to web-a from the same port: the
    // second connection's replies come from web-a itself and must stay that way.
    let via_service = run(&format!("{CLUSTER_IP}:80"));
    assert_eq!(via_service["ok"], true, "{via_service}");
    let direct = run(&format!("{a}:{TCP_PORT}"));
    assert_eq!(direct["ok"], true, "{direct}");
    // And through the service again, on the same port.
    let again = run(&format!("{CLUSTER_IP}:80"));
    assert_eq!(again["ok"], true, "{again}");
}
