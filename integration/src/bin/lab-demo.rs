//! The demo lab: two nodes with their agents, pods in a `demo` namespace on each exchanging
//! TCP, UDP and ICMP traffic continuously, node1's Hubble Observer API on the host at
//! 127.0.0.1:4244 and the relay on 127.0.0.1:4245, the web UI on http://127.0.0.1:12000,
//! until Ctrl-C (which tears everything down).
//!
//! The agents run from the homelab's Talos values file, unchanged
//! (`docker/helm/lumen/ci/talos-values.yaml`, the file the Helm chart's tests render; or
//! `$LUMEN_DEMO_VALUES`), with the lab's node-local settings layered on top; its
//! `hubble.relay.enabled` and `hubble.ui.enabled` decide whether the relay and UI start.
//! Networking as in the homelab's Talos cluster: `routingMode: native` with
//! `autoDirectNodeRoutes`, `ipv4NativeRoutingCIDR: 10.100.0.0/16`, cluster-pool IPAM
//! carving each node's pod CIDR from `10.100.0.0/16`, no masquerading, and WireGuard
//! (`encryption.enabled: true`, `type: wireguard`): each frontend client talks to the
//! server on the *other* node, so `hubble observe --to-pod demo/server2` shows the
//! traffic leaving at `to-crypto` and arriving at `from-crypto`, encrypted.
//!
//! Policy, as the homelab's apps ship it: a default-deny baseline for the namespace, allow
//! rules for the intended traffic (frontend clients → servers), and one deliberately missing
//! rule: the `clientNb` pods (app=client but not tier=frontend) have no egress allow, so
//! `hubble observe --verdict policy_denied` shows real denials right away.
//!
//! Services (`kubeProxyReplacement: true`, `l2announcements.enabled: true` on both
//! agents): `demo/web` (ClusterIP 10.96.0.100), `demo/web-np` (NodePort 30080) and
//! `demo/web-lb` (LoadBalancer, its address assigned by LB-IPAM from the `demo-pool`
//! pool 192.168.77.200-209 on the underlay, announced by the `demo-lb`
//! CiliumL2AnnouncementPolicy), all backed by both server pods. A client on the underlay
//! (192.168.77.254, outside the cluster) connects to the LoadBalancer IP and to node1's
//! NodePort every 2 s; `lumen service list` shows the frontends, the LB-IPAM status is in
//! `<labdir>/manifests/status/`.
//!
//! The relay runs in the host namespace. It discovers the nodes through node1's peer
//! service over node1's unix socket, and reaches every agent through its unix socket
//! (`nodeAddresses` in `<labdir>/relay.yaml`): the InternalIPs the peer service advertises
//! live on the lab's underlay, which the host cannot route to.

use anyhow::Result;
use lumen_integration::{
    install_interrupt_handler, traffic_bin, AgentOptions, Lab, Relay, RelayOptions,
};
use std::time::Duration;

/// The demo namespace's policies (see the module docs).
const DEMO_POLICY: &str = r#"# Baseline: nothing in or out of demo unless a rule below allows it.
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: default-deny
  namespace: demo
spec:
  description: default deny for the namespace
  endpointSelector: {}
  ingress:
  - {}
  egress:
  - {}
---
# Frontend clients may talk to the servers (TCP 8080, UDP 5353; ICMP needs L3-only).
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: frontend-egress
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {app: client, tier: frontend}
  egress:
  - toEndpoints:
    - matchLabels: {app: server}
---
# Servers accept every client pod (the missing piece is on the client side).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: server-ingress
  namespace: demo
spec:
  podSelector:
    matchLabels: {app: server}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: client}
"#;

/// The LoadBalancer address LB-IPAM assigns to `demo/web-lb` (the pool's first).
const LB_IP: &str = "192.168.77.200";
/// `demo/web-np`'s node port.
const NODE_PORT: u16 = 30080;

/// The demo services, the LB-IPAM pool, the L2 announcement policy, and a policy letting
/// the world reach the servers through them.
const DEMO_SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.100
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: demo}
spec:
  type: NodePort
  clusterIP: 10.96.0.101
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: demo, labels: {announce: l2}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.102
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081, protocol: TCP}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: demo-pool}
spec:
  blocks: [{start: 192.168.77.200, stop: 192.168.77.209}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: demo-lb}
spec:
  serviceSelector:
    matchLabels: {announce: l2}
  loadBalancerIPs: true
---
# Clients outside the cluster reach the servers through the NodePort and LoadBalancer:
# directly when the server is on the entry node (world), source-NATed to the entry node's
# address when it is on the other one (remote-node; externalTrafficPolicy Cluster).
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: server-from-world
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {app: server}
  ingress:
  - fromEntities: [world, remote-node]
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
"#;

/// One EndpointSlice per demo service, listing the server pods `(ip, node)` as ready.
fn demo_slices(servers: &[(String, String)]) -> String {
    let endpoints: String = servers
        .iter()
        .map(|(ip, node)| {
            format!(
                "  - addresses: [{ip}]\n    conditions: {{ready: true}}\n    nodeName: {node}\n"
            )
        })
        .collect();
    ["web", "web-np", "web-lb"]
        .iter()
        .map(|svc| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}-1\n  namespace: demo\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{endpoints}"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn main() -> Result<()> {
    install_interrupt_handler();
    let values = demo_values()?;
    eprintln!("demo: cluster configuration from {}", values.path.display());
    let (values, relay_enabled, ui_enabled) = (values.path, values.relay, values.ui);
    let lab = Lab::new("demo")?;
    let traffic = traffic_bin()?;
    let mut keep = vec![];
    let mut pods = vec![]; // dropping a pod handle deletes the pod
    let mut lines = vec![];
    lumen_integration::policy::write(&lab, "demo-policy.yaml", DEMO_POLICY)?;
    lumen_integration::policy::write(&lab, "demo-services.yaml", DEMO_SERVICES)?;
    let mut servers = vec![];
    let mut clients = vec![];
    for (i, name) in ["node1", "node2"].into_iter().enumerate() {
        let node = lab.add_node(name)?;
        eprintln!(
            "demo: starting lumen-agent on {} ({})",
            node.name(),
            node.ip()
        );
        node.start_agent(AgentOptions {
            event_buffer_capacity: 65535,
            // Configured like the homelab's Talos cluster, from its values file: native
            // routing between nodes on one L2, pod CIDRs from the cluster pool, WireGuard
            // between nodes, kube-proxy replacement, L2 announcements.
            values: Some(values.clone()),
            metrics: &[
                "flow",
                "drop:sourceContext=namespace;destinationContext=pod",
                "policy",
                "tcp",
                "port-distribution",
                "flow-volume:sourceContext=pod;destinationContext=pod",
            ],
            ..AgentOptions::default()
        })?;
        let server = node.add_pod(
            "demo",
            &format!("server{}", i + 1),
            &[("app", "server"), ("tier", "backend")],
        )?;
        let client = node.add_pod(
            "demo",
            &format!("client{}", i + 1),
            &[("app", "client"), ("tier", "frontend")],
        )?;
        let client_b = node.add_pod(
            "demo",
            &format!("client{}b", i + 1),
            &[("app", "client"), ("other", "client")],
        )?;
        let mut serving = server.spawn(&traffic, ["serve", "--tcp", "8080", "--udp", "5353"])?;
        serving.wait_for_output("listening", Duration::from_secs(5))?;
        servers.push((server.ip().to_string(), node.name().to_string()));
        keep.push(serving);
        lines.push(format!(
            "  {}: {}; pods demo/{} {}, demo/{} {}, demo/{} {}\n\
             \x20        agent API: {} (unix socket), log {}",
            node.name(),
            node.ip(),
            server.name(),
            server.ip(),
            client.name(),
            client.ip(),
            client_b.name(),
            client_b.ip(),
            node.hubble_socket().display(),
            node.agent_log().display(),
        ));
        clients.push((client, client_b));
        pods.push(server);
    }
    // Frontend clients talk to the other node's server (encrypted between the nodes),
    // the others to their own node's (denied by policy).
    for (i, (client, client_b)) in clients.iter().enumerate() {
        let other = &servers[(i + 1) % servers.len()].0;
        let own = &servers[i].0;
        for (pod, dst, interval) in [(client, other, "1s"), (client_b, own, "3s")] {
            keep.push(pod.spawn(
                &traffic,
                [
                    "loop",
                    "--to",
                    dst,
                    "--tcp-port",
                    "8080",
                    "--udp-port",
                    "5353",
                    "--interval",
                    interval,
                ],
            )?);
        }
    }
    pods.extend(clients.into_iter().flat_map(|(a, b)| [a, b]));
    lumen_integration::policy::write(&lab, "demo-slices.yaml", &demo_slices(&servers))?;
    let node1 = lab.node("node1").expect("node1");
    // A client outside the cluster, on the underlay: the LoadBalancer IP and node1's NodePort.
    lab.add_world(&[])?;
    for (to, port) in [(LB_IP.to_string(), 80), (node1.ip().to_string(), NODE_PORT)] {
        keep.push(lab.spawn_in_underlay(
            &traffic,
            [
                "loop",
                "--to",
                &to,
                "--tcp-port",
                &port.to_string(),
                "--udp-port",
                "5353",
                "--interval",
                "2s",
            ],
        )?);
    }
    lines.push(format!(
        "  services: demo/web ClusterIP 10.96.0.100:80, demo/web-np NodePort {}:{NODE_PORT}, \
         demo/web-lb LoadBalancer {LB_IP}:80 (LB-IPAM pool demo-pool, L2 policy demo-lb)\n\
         \x20           underlay client {} → {LB_IP}:80 and {}:{NODE_PORT} every 2 s",
        node1.ip(),
        Lab::WORLD_GATEWAY,
        node1.ip(),
    ));
    let _fwd = node1.forward_tcp("127.0.0.1:4244", 4244)?;
    let _metrics = node1.forward_tcp("127.0.0.1:9965", 9965)?;
    // `hubble.relay.enabled` / `hubble.ui.enabled` of the values decide, as in the chart.
    let relay = if relay_enabled {
        Some(Relay::start(
            &lab,
            RelayOptions {
                listen_address: Some("127.0.0.1:4245".into()),
                history: Some(lab.dir().join("relay-history").join("flows.db")),
                extra_yaml: "prometheus: {enabled: true, listenAddress: \"127.0.0.1:9966\"}\n"
                    .into(),
                ..RelayOptions::default()
            },
        )?)
    } else {
        None
    };
    let ui = match (&relay, ui_enabled) {
        (Some(relay), true) => Some(lumen_integration::Ui::start(
            &lab,
            relay,
            Some("127.0.0.1:12000"),
            "",
        )?),
        _ => None,
    };
    let relay_line = match &relay {
        Some(relay) => format!(
            "  relay (all nodes):          127.0.0.1:4245, config {}, log {}\n\
             \x20 the relay's metrics:         http://127.0.0.1:9966/metrics",
            lab.dir().join("relay.yaml").display(),
            relay.log_path().display(),
        ),
        None => "  relay: off (hubble.relay.enabled: false in the values)".into(),
    };
    let ui_line = match &ui {
        Some(ui) => format!(
            "  web UI:                     {}/  (flows, denied, service map, status), log {}",
            ui.url(),
            ui.log_path().display()
        ),
        None => "  web UI: off (hubble.ui.enabled: false, or no relay)".into(),
    };

    println!(
        "\nLumen demo lab is up.\n{}\n\
         \x20 node1's Hubble Observer API: 127.0.0.1:4244 (TCP)\n\
         \x20 node1's Prometheus metrics:  http://127.0.0.1:9965/metrics\n\
         {relay_line}\n{ui_line}\n\n\
         Try:  {hubble} observe --last 5            # --server defaults to localhost:4245 (the relay)\n\
         \x20     {hubble} observe -f --pod demo/client\n\
         \x20     {hubble} observe --verdict policy_denied     # client1b/client2b lack an egress allow\n\
         \x20     {hubble} observe --to-pod demo/server2 --last 6  # to-crypto / from-crypto: WireGuard between the nodes\n\
         \x20     {lumen} --socket {sock} status       # node1's health, routing, encryption, services\n\
         \x20     {lumen} --socket {sock} encrypt status  # WireGuard peers, handshakes, bytes\n\
         \x20     {lumen} --socket {sock} policy get   # node1's effective policy\n\
         \x20     {lumen} --socket {sock} service list # frontends, backends, LB-IPAM status\n\
         \x20     {hubble} status\n\
         \x20     python3 integration/clients/observe.py --server 127.0.0.1:4245 --last 5\n\
         \x20     grpcurl -plaintext -import-path schema/api/proto -proto observer/observer.proto \\\n\
         \x20       -d '{{\"number\": 5, \"follow\": true}}' 127.0.0.1:4245 observer.Observer/GetFlows\n\
         \x20     grpcurl -plaintext -import-path schema/api/proto -proto observer/observer.proto \\\n\
         \x20       127.0.0.1:4245 observer.Observer/ServerStatus\n\n\
         Ctrl-C tears everything down.",
        lines.join("\n"),
        lumen = lumen_integration::find_binary("lumen").map(|p| p.display().to_string()).unwrap_or_else(|_| "lumen".into()),
        sock = node1.agent_socket().display(),
        hubble = lumen_integration::find_binary("hubble").map(|p| p.display().to_string()).unwrap_or_else(|_| "hubble".into()),
    );
    lab.run_until_interrupted();
    eprintln!("demo: tearing down");
    drop(ui);
    drop(relay);
    drop(keep);
    drop(pods);
    Ok(())
}

/// The cluster's values file the demo runs from, and its `hubble.relay.enabled` and
/// `hubble.ui.enabled`.
struct DemoValues {
    path: std::path::PathBuf,
    relay: bool,
    ui: bool,
}

/// `$LUMEN_DEMO_VALUES`, else the seed's Talos values as the chart's CI renders them.
fn demo_values() -> Result<DemoValues> {
    use anyhow::Context;
    let path = std::env::var_os("LUMEN_DEMO_VALUES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docker/helm/lumen/ci/talos-values.yaml")
        });
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the demo's values file {}", path.display()))?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing the demo's values file {}", path.display()))?;
    let enabled = |component: &str| {
        v.get("hubble")
            .and_then(|h| h.get(component))
            .and_then(|c| c.get("enabled"))
            .and_then(|e| e.as_bool())
            .unwrap_or(true)
    };
    Ok(DemoValues {
        relay: enabled("relay"),
        ui: enabled("ui"),
        path: path.canonicalize().unwrap_or(path),
    })
}
