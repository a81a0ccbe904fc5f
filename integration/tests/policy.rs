//! Network policy enforced in the lab: for each case, the connection's real outcome
//! (connects, or times out) and what the flows say (verdict, drop reason, direction,
//! match type, the policy named), plus what the agent and its admin CLI report.

mod common;

use common::{privileged, OneNode, ALLOW_CLIENT, TCP_PORT};
use lumen_api::flow::{EventTypeFilter, Flow, FlowFilter, Verdict};
use lumen_integration::{policy, traffic_bin, AgentOptions, Lab, Pod, Spawned};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

const DENY_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: demo
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

/// Cilium event types (`event_type.type`).
const DROP: i32 = 1;
const POLICY_VERDICT: i32 = 5;
/// Drop reasons: no rule allows it (default deny), a deny rule matched.
const POLICY_DENIED: i32 = 133;
const POLICY_DENY: i32 = 181;
/// `traffic_direction`.
const INGRESS: i32 = 1;
const EGRESS: i32 = 2;
/// `policy_match_type`.
const MATCH_NONE: u32 = 0;
const MATCH_L3_ONLY: u32 = 1;
const MATCH_L3_L4: u32 = 2;
const MATCH_ALL: u32 = 4;
const CIDR_IDENTITY_BASE: u32 = 1 << 24;
const WORLD_IDENTITY: u32 = 2;

/// Two "world" addresses (outside every pod and node CIDR) served from the underlay.
const WORLD_OK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const WORLD_EXCEPT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

fn events(kind: i32, src: Option<&str>, dst: Option<&str>) -> FlowFilter {
    FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: kind,
            ..Default::default()
        }],
        source_pod: src.into_iter().map(str::to_string).collect(),
        destination_pod: dst.into_iter().map(str::to_string).collect(),
        ..Default::default()
    }
}

/// Flows of connections attempted after this moment.
#[derive(Clone, Copy)]
struct Since(SystemTime);

impl Since {
    fn now() -> Since {
        Since(SystemTime::now())
    }

    fn holds(&self, f: &Flow) -> bool {
        let t = f.time.as_ref().expect("flow time");
        let at = SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32);
        at >= self.0
    }
}

fn dst_port(f: &Flow) -> Option<u32> {
    common::l4_ports(f).map(|(_, d)| d)
}

fn names(p: &[lumen_api::flow::Policy]) -> Vec<String> {
    p.iter()
        .map(|p| format!("{} {}/{}", p.kind, p.namespace, p.name))
        .collect()
}

/// The drop flow of a denied connection attempted since `since` (first SYN dropped by policy).
fn drop_flow(
    node: &lumen_integration::Node,
    src: &str,
    dst: Option<&str>,
    port: u16,
    since: Since,
) -> Flow {
    policy::wait_flow(node, events(DROP, Some(src), dst), "a policy drop", |f| {
        since.holds(f) && dst_port(f) == Some(port as u32) && f.verdict == Verdict::Dropped as i32
    })
    .unwrap()
}

/// The policy-verdict flow of a connection attempted since `since`.
fn verdict_flow(
    node: &lumen_integration::Node,
    src: &str,
    dst: Option<&str>,
    port: u16,
    verdict: Verdict,
    since: Since,
) -> Flow {
    policy::wait_flow(
        node,
        events(POLICY_VERDICT, Some(src), dst),
        &format!("a {verdict:?} policy verdict"),
        |f| since.holds(f) && dst_port(f) == Some(port as u32) && f.verdict == verdict as i32,
    )
    .unwrap()
}

fn assert_denied_flow(f: &Flow, reason: i32, direction: i32, policy: &str) {
    assert_eq!(f.verdict, Verdict::Dropped as i32, "{f:#?}");
    assert_eq!(f.drop_reason_desc, reason, "{f:#?}");
    assert_eq!(f.traffic_direction, direction, "{f:#?}");
    let by = if direction == INGRESS {
        &f.ingress_denied_by
    } else {
        &f.egress_denied_by
    };
    assert!(
        names(by).iter().any(|n| n.ends_with(&format!("/{policy}"))),
        "denied by {policy}: {f:#?}"
    );
}

fn assert_allowed_flow(f: &Flow, direction: i32, match_type: u32, policy: &str) {
    assert_eq!(f.verdict, Verdict::Forwarded as i32, "{f:#?}");
    assert_eq!(f.traffic_direction, direction, "{f:#?}");
    assert_eq!(f.policy_match_type, match_type, "{f:#?}");
    let by = if direction == INGRESS {
        &f.ingress_allowed_by
    } else {
        &f.egress_allowed_by
    };
    assert!(
        names(by).iter().any(|n| n.ends_with(&format!("/{policy}"))),
        "allowed by {policy}: {f:#?}"
    );
}

fn connects(from: &Pod, to: IpAddr, port: u16) -> bool {
    policy::tcp_connects(from, to, port)
}

fn serve(pod: &Pod, ports: &[u16]) -> Spawned {
    let mut args = vec!["serve".to_string(), "--tcp".to_string()];
    args.extend(ports.iter().map(u16::to_string));
    let mut s = pod.spawn(traffic_bin().unwrap(), &args).expect("server");
    s.wait_for_output("listening", Duration::from_secs(5))
        .expect("listening");
    s
}

/// Serves TCP on the lab's "world" addresses (see [`Lab::add_world`]).
fn serve_world(lab: &Lab) -> Spawned {
    lab.add_world(&[WORLD_OK, WORLD_EXCEPT]).expect("world");
    let mut s = lab
        .spawn_in_underlay(
            traffic_bin().unwrap(),
            ["serve", "--tcp", &TCP_PORT.to_string()],
        )
        .expect("world server");
    s.wait_for_output("listening", Duration::from_secs(5))
        .expect("listening");
    s
}

impl OneNode {
    fn connects(&self) -> bool {
        connects(&self.client, self.server.ip(), TCP_PORT)
    }

    fn apply(&self, file: &str, yaml: &str, ns: &str, name: &str) {
        policy::apply(&self.lab, file, yaml, ns, name).unwrap();
    }
}

#[test]
fn default_deny_then_allow_by_label_then_removed() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-basic", AgentOptions::default());
    assert!(t.connects(), "no policy: the connection works");

    t.apply("deny.yaml", DENY_INGRESS, "demo", "default-deny");
    let since = Since::now();
    assert!(!t.connects(), "default deny: the connection times out");
    let drop = drop_flow(&t.node, "demo/client", Some("demo/server"), TCP_PORT, since);
    assert_denied_flow(&drop, POLICY_DENIED, INGRESS, "default-deny");
    assert_eq!(drop.ingress_denied_by.len(), 1, "{drop:#?}");
    assert_eq!(drop.ingress_denied_by[0].kind, "NetworkPolicy");
    let pv = verdict_flow(
        &t.node,
        "demo/client",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Dropped,
        since,
    );
    assert_eq!(pv.policy_match_type, MATCH_NONE);
    assert_eq!(pv.drop_reason_desc, POLICY_DENIED);
    assert_eq!(pv.source.as_ref().unwrap().pod_name, "client");
    assert_eq!(pv.destination.as_ref().unwrap().pod_name, "server");

    t.apply("allow.yaml", ALLOW_CLIENT, "demo", "allow-client");
    let since = Since::now();
    assert!(t.connects(), "allowed by label and port");
    let allowed = verdict_flow(
        &t.node,
        "demo/client",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Forwarded,
        since,
    );
    assert_allowed_flow(&allowed, INGRESS, MATCH_L3_L4, "allow-client");
    assert_eq!(allowed.ingress_allowed_by[0].kind, "CiliumNetworkPolicy");

    policy::remove(&t.lab, "allow.yaml", "demo", "allow-client").unwrap();
    assert!(!t.connects(), "allow removed: denied again");
    policy::remove(&t.lab, "deny.yaml", "demo", "default-deny").unwrap();
    assert!(t.connects(), "policy removed: traffic flows");
}

#[test]
fn default_deny_namespace_denies_egress_and_ingress() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-nsdeny", AgentOptions::default());
    // Cilium's empty rules: every endpoint of the namespace selected in both directions,
    // nothing allowed.
    t.apply(
        "lockdown.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: lockdown, namespace: demo}
spec:
  endpointSelector: {}
  ingress: [{}]
  egress: [{}]
",
        "demo",
        "lockdown",
    );
    let since = Since::now();
    assert!(
        !t.connects(),
        "namespace locked down: the connection times out"
    );
    let drop = drop_flow(&t.node, "demo/client", Some("demo/server"), TCP_PORT, since);
    // Decided at the client's egress, before the packet ever reaches the server.
    assert_denied_flow(&drop, POLICY_DENIED, EGRESS, "lockdown");
    assert_eq!(drop.egress_denied_by[0].kind, "CiliumNetworkPolicy");
    assert!(drop.ingress_denied_by.is_empty(), "{drop:#?}");
    let pv = verdict_flow(
        &t.node,
        "demo/client",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Dropped,
        since,
    );
    assert_eq!(pv.traffic_direction, EGRESS);
    assert_eq!(pv.policy_match_type, MATCH_NONE);

    // Once the client may send, the server's ingress still denies.
    t.apply(
        "client-egress.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: server}}]
",
        "demo",
        "client-egress",
    );
    let since = Since::now();
    assert!(!t.connects(), "the server's ingress is still locked down");
    let pv = verdict_flow(
        &t.node,
        "demo/client",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Forwarded,
        since,
    );
    assert_allowed_flow(&pv, EGRESS, MATCH_L3_ONLY, "client-egress");
    let drop = drop_flow(&t.node, "demo/client", Some("demo/server"), TCP_PORT, since);
    assert_denied_flow(&drop, POLICY_DENIED, INGRESS, "lockdown");

    policy::remove(&t.lab, "lockdown.yaml", "demo", "lockdown").unwrap();
    policy::remove(&t.lab, "client-egress.yaml", "demo", "client-egress").unwrap();
    assert!(t.connects(), "policies removed: traffic flows");
}

#[test]
fn network_policy_namespace_selector_allows_another_namespace() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-nssel", AgentOptions::default());
    t.lab
        .set_namespace_labels("other", &[("team", "blue")])
        .unwrap();
    t.lab
        .set_namespace_labels("third", &[("team", "red")])
        .unwrap();
    let visitor = t
        .node
        .add_pod("other", "visitor", &[("app", "visitor")])
        .unwrap();
    let stranger = t
        .node
        .add_pod("third", "stranger", &[("app", "visitor")])
        .unwrap();
    let ep = policy::wait_endpoint(&t.node, "other", "visitor").unwrap();
    let labels: Vec<&str> = ep["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        labels.contains(&"k8s:io.cilium.k8s.namespace.labels.team=blue"),
        "{labels:?}"
    );

    t.apply(
        "from-blue.yaml",
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-blue, namespace: demo}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
",
        "demo",
        "from-blue",
    );
    let server = t.server.ip();
    let since = Since::now();
    assert!(
        connects(&visitor, server, TCP_PORT),
        "a pod of a team=blue namespace is allowed"
    );
    let pv = verdict_flow(
        &t.node,
        "other/visitor",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Forwarded,
        since,
    );
    assert_allowed_flow(&pv, INGRESS, MATCH_L3_ONLY, "from-blue");
    assert_eq!(pv.ingress_allowed_by[0].kind, "NetworkPolicy");
    assert_eq!(pv.ingress_allowed_by[0].namespace, "demo");

    let since = Since::now();
    assert!(
        !connects(&stranger, server, TCP_PORT),
        "same pod labels, team=red namespace: denied"
    );
    let drop = drop_flow(
        &t.node,
        "third/stranger",
        Some("demo/server"),
        TCP_PORT,
        since,
    );
    assert_denied_flow(&drop, POLICY_DENIED, INGRESS, "from-blue");
    let since = Since::now();
    assert!(
        !t.connects(),
        "the server's own namespace is not team=blue: denied"
    );
    let drop = drop_flow(&t.node, "demo/client", Some("demo/server"), TCP_PORT, since);
    assert_denied_flow(&drop, POLICY_DENIED, INGRESS, "from-blue");
}

#[test]
fn port_range_allows_ports_inside_it_only() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-range", AgentOptions::default());
    let _more = serve(&t.server, &[9090]);
    assert!(
        connects(&t.client, t.server.ip(), 9090),
        "no policy: 9090 works"
    );
    t.apply(
        "range.yaml",
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: port-range, namespace: demo}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports:
    - {protocol: TCP, port: 8000, endPort: 8100}
",
        "demo",
        "port-range",
    );
    let since = Since::now();
    assert!(t.connects(), "8080 is within 8000-8100");
    let pv = verdict_flow(
        &t.node,
        "demo/client",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Forwarded,
        since,
    );
    assert_allowed_flow(&pv, INGRESS, MATCH_L3_L4, "port-range");

    let since = Since::now();
    assert!(
        !connects(&t.client, t.server.ip(), 9090),
        "9090 is outside 8000-8100"
    );
    let drop = drop_flow(&t.node, "demo/client", Some("demo/server"), 9090, since);
    assert_denied_flow(&drop, POLICY_DENIED, INGRESS, "port-range");
}

#[test]
fn cidr_set_with_except_toward_the_world() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-cidr", AgentOptions::default());
    let _world = serve_world(&t.lab);
    for ip in [WORLD_OK, WORLD_EXCEPT] {
        assert!(
            connects(&t.client, ip.into(), TCP_PORT),
            "no policy: {ip} is reachable"
        );
    }
    t.apply(
        "cidr.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-world-cidr, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDRSet:
    - cidr: 203.0.113.0/24
      except: [203.0.113.11/32]
",
        "demo",
        "to-world-cidr",
    );
    let world_flows = |ip: Ipv4Addr, kind: i32| FlowFilter {
        destination_ip: vec![ip.to_string()],
        ..events(kind, Some("demo/client"), None)
    };
    let since = Since::now();
    assert!(
        connects(&t.client, WORLD_OK.into(), TCP_PORT),
        "inside the CIDR: allowed"
    );
    let pv = policy::wait_flow(
        &t.node,
        world_flows(WORLD_OK, POLICY_VERDICT),
        "the allowed verdict",
        |f| since.holds(f) && f.verdict == Verdict::Forwarded as i32,
    )
    .unwrap();
    assert_allowed_flow(&pv, EGRESS, MATCH_L3_ONLY, "to-world-cidr");
    let dst = pv.destination.as_ref().unwrap();
    assert!(
        dst.identity >= CIDR_IDENTITY_BASE,
        "a CIDR identity: {dst:#?}"
    );
    assert!(
        dst.labels.iter().any(|l| l == "cidr:203.0.113.0/24"),
        "{dst:#?}"
    );

    let since = Since::now();
    assert!(
        !connects(&t.client, WORLD_EXCEPT.into(), TCP_PORT),
        "the excepted address: denied"
    );
    let drop = policy::wait_flow(&t.node, world_flows(WORLD_EXCEPT, DROP), "the drop", |f| {
        since.holds(f)
    })
    .unwrap();
    assert_denied_flow(&drop, POLICY_DENIED, EGRESS, "to-world-cidr");
    let dst = drop.destination.as_ref().unwrap();
    assert!(
        dst.identity >= CIDR_IDENTITY_BASE || dst.identity == WORLD_IDENTITY,
        "{dst:#?}"
    );
    assert!(
        !t.connects(),
        "egress default deny: pods are not in the CIDR"
    );
}

#[test]
fn to_entities_cluster_versus_world() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-entity", AgentOptions::default());
    let _world = serve_world(&t.lab);
    let entities = |which: &str| {
        format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: to-entities, namespace: demo}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
  - toEntities: [{which}]
"
        )
    };
    let world_drop = |since: Since| {
        policy::wait_flow(
            &t.node,
            FlowFilter {
                destination_ip: vec![WORLD_OK.to_string()],
                ..events(DROP, Some("demo/client"), None)
            },
            "the drop toward the world",
            |f| since.holds(f),
        )
        .unwrap()
    };

    t.apply("entities.yaml", &entities("cluster"), "demo", "to-entities");
    let since = Since::now();
    assert!(t.connects(), "toEntities cluster: pod to pod allowed");
    let pv = verdict_flow(
        &t.node,
        "demo/client",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Forwarded,
        since,
    );
    assert_allowed_flow(&pv, EGRESS, MATCH_L3_ONLY, "to-entities");
    let since = Since::now();
    assert!(
        !connects(&t.client, WORLD_OK.into(), TCP_PORT),
        "toEntities cluster: world denied"
    );
    let drop = world_drop(since);
    assert_denied_flow(&drop, POLICY_DENIED, EGRESS, "to-entities");
    assert_eq!(
        drop.destination.as_ref().unwrap().identity,
        WORLD_IDENTITY,
        "{drop:#?}"
    );

    t.apply("entities.yaml", &entities("world"), "demo", "to-entities");
    let since = Since::now();
    assert!(
        connects(&t.client, WORLD_OK.into(), TCP_PORT),
        "toEntities world: world allowed"
    );
    let pv = policy::wait_flow(
        &t.node,
        FlowFilter {
            destination_ip: vec![WORLD_OK.to_string()],
            ..events(POLICY_VERDICT, Some("demo/client"), None)
        },
        "the allowed verdict toward the world",
        |f| since.holds(f) && f.verdict == Verdict::Forwarded as i32,
    )
    .unwrap();
    assert_allowed_flow(&pv, EGRESS, MATCH_L3_ONLY, "to-entities");
    let since = Since::now();
    assert!(!t.connects(), "toEntities world: pod to pod denied");
    let drop = drop_flow(&t.node, "demo/client", Some("demo/server"), TCP_PORT, since);
    assert_denied_flow(&drop, POLICY_DENIED, EGRESS, "to-entities");
}

#[test]
fn deny_rule_overrides_allow_all() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-denyrule", AgentOptions::default());
    let other = t
        .node
        .add_pod("demo", "other", &[("app", "other")])
        .unwrap();
    t.apply(
        "allow-all.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-all, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEntities: [all]
",
        "demo",
        "allow-all",
    );
    t.apply(
        "deny-client.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-client, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: \"8080\", protocol: TCP}]
",
        "demo",
        "deny-client",
    );
    let since = Since::now();
    assert!(!t.connects(), "the deny rule wins over the allow-all");
    let drop = drop_flow(&t.node, "demo/client", Some("demo/server"), TCP_PORT, since);
    assert_denied_flow(&drop, POLICY_DENY, INGRESS, "deny-client");
    assert_eq!(
        names(&drop.ingress_denied_by),
        ["CiliumNetworkPolicy demo/deny-client"]
    );
    assert_eq!(drop.policy_match_type, MATCH_L3_L4, "{drop:#?}");

    let since = Since::now();
    assert!(
        connects(&other, t.server.ip(), TCP_PORT),
        "others are still allowed by allow-all"
    );
    let pv = verdict_flow(
        &t.node,
        "demo/other",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Forwarded,
        since,
    );
    assert_allowed_flow(&pv, INGRESS, MATCH_ALL, "allow-all");
}

#[test]
fn audit_mode_reports_but_lets_traffic_through() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-audit", AgentOptions::default());
    t.apply(
        "audit.yaml",
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-audited
  namespace: demo
  annotations: {lumen.io/audit-mode: \"true\"}
spec:
  podSelector: {}
  policyTypes: [Ingress]
",
        "demo",
        "deny-audited",
    );
    let since = Since::now();
    assert!(t.connects(), "audit mode: the connection succeeds");
    let pv = verdict_flow(
        &t.node,
        "demo/client",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Audit,
        since,
    );
    assert_eq!(pv.verdict, 4, "AUDIT");
    assert_eq!(pv.traffic_direction, INGRESS);
    assert!(
        policy::flows(
            &t.node,
            events(DROP, Some("demo/client"), Some("demo/server"))
        )
        .unwrap()
        .iter()
        .all(|f| !since.holds(f)),
        "nothing dropped"
    );
    let ep = policy::endpoint(&t.node, "demo", "server")
        .unwrap()
        .unwrap();
    assert_eq!(ep["ingress"]["audit"], true, "{ep:#}");
}

#[test]
fn recreated_pod_keeps_its_identity_and_policy() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-recreate", AgentOptions::default());
    t.apply("deny.yaml", DENY_INGRESS, "demo", "default-deny");
    t.apply("allow.yaml", ALLOW_CLIENT, "demo", "allow-client");
    let intruder = t
        .node
        .add_pod("demo", "intruder", &[("app", "intruder")])
        .unwrap();
    let labels = [("app", "client"), ("tier", "frontend")];
    let web = t.node.add_pod("demo", "web", &labels).unwrap();
    let first_ip = web.ip();
    let first = policy::wait_endpoint(&t.node, "demo", "web").unwrap();
    assert!(
        connects(&web, t.server.ip(), TCP_PORT),
        "app=client is allowed"
    );

    drop(web);
    // A pod in between takes the freed address if the allocator reuses it at once.
    let _filler = t
        .node
        .add_pod("demo", "filler", &[("app", "filler")])
        .unwrap();
    let web = t.node.add_pod("demo", "web", &labels).unwrap();
    assert_ne!(web.ip(), first_ip, "the recreated pod has a new address");
    let second = policy::wait_endpoint(&t.node, "demo", "web").unwrap();
    assert_eq!(
        second["identity"], first["identity"],
        "same labels, same identity"
    );
    assert_ne!(second["id"], first["id"], "a new endpoint");
    assert!(
        second["ips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == web.ip().to_string().as_str()),
        "{second:#}"
    );

    let since = Since::now();
    assert!(
        connects(&web, t.server.ip(), TCP_PORT),
        "the recreated pod is still allowed"
    );
    let pv = verdict_flow(
        &t.node,
        "demo/web",
        Some("demo/server"),
        TCP_PORT,
        Verdict::Forwarded,
        since,
    );
    assert_allowed_flow(&pv, INGRESS, MATCH_L3_L4, "allow-client");
    assert_eq!(
        pv.source.as_ref().unwrap().identity as u64,
        second["identity"].as_u64().unwrap()
    );
    let since = Since::now();
    assert!(
        !connects(&intruder, t.server.ip(), TCP_PORT),
        "others are still denied"
    );
    let drop = drop_flow(
        &t.node,
        "demo/intruder",
        Some("demo/server"),
        TCP_PORT,
        since,
    );
    assert_denied_flow(&drop, POLICY_DENIED, INGRESS, "default-deny");
}

#[test]
fn invalid_policies_are_rejected_and_the_previous_version_stays() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-invalid", AgentOptions::default());
    let intruder = t
        .node
        .add_pod("demo", "intruder", &[("app", "intruder")])
        .unwrap();
    t.apply("deny.yaml", DENY_INGRESS, "demo", "default-deny");
    t.apply("allow.yaml", ALLOW_CLIENT, "demo", "allow-client");
    let path = t
        .lab
        .manifests_dir()
        .join("allow.yaml")
        .display()
        .to_string();
    let in_force = policy::policy_status(&t.node, "demo", "allow-client").unwrap()["revision"]
        .as_u64()
        .unwrap();
    let still_enforced = |what: &str| {
        assert!(t.connects(), "{what}: the allowed client still connects");
        assert!(
            !connects(&intruder, t.server.ip(), TCP_PORT),
            "{what}: others still denied"
        );
        let st = policy::policy_status(&t.node, "demo", "allow-client").unwrap();
        assert_eq!(st["revision"].as_u64(), Some(in_force), "{what}: {st:#}");
    };
    still_enforced("valid");

    // (a) Not YAML at all: the file is reported with its line; its objects stay as they were.
    policy::write(
        &t.lab,
        "allow.yaml",
        &format!("{ALLOW_CLIENT}  - fromEndpoints: [{{\n    oops\n"),
    )
    .unwrap();
    let err = policy::wait_source_error(&t.lab, &path).unwrap();
    assert!(err.contains("line "), "names the line: {err}");
    assert_eq!(
        policy::policy_status(&t.node, "demo", "allow-client").unwrap()["error"],
        serde_json::Value::Null
    );
    still_enforced("malformed YAML");

    // (b) An unknown field: the policy is rejected naming file and field path.
    policy::write(
        &t.lab,
        "allow.yaml",
        &ALLOW_CLIENT.replace("  ingress:", "  ingres:"),
    )
    .unwrap();
    let err = policy::wait_rejected_with(&t.lab, "demo", "allow-client", "ingres").unwrap();
    assert!(err.contains(&path), "names the file: {err}");
    assert!(
        err.contains("spec.ingres: unknown field"),
        "names the field: {err}"
    );
    let status = policy::status(&t.node).unwrap();
    assert!(
        status["source_errors"].as_array().unwrap().is_empty(),
        "the YAML is fixed: {status:#}"
    );
    assert!(
        status["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("spec.ingres"))),
        "{status:#}"
    );
    still_enforced("unknown field");

    // Repaired, then (c) an unknown selector operator.
    t.apply("allow.yaml", ALLOW_CLIENT, "demo", "allow-client");
    let in_force = policy::policy_status(&t.node, "demo", "allow-client").unwrap()["revision"]
        .as_u64()
        .unwrap();
    let bad_operator = ALLOW_CLIENT.replace(
        "    - matchLabels: {app: client}\n",
        "    - matchExpressions: [{key: app, operator: Inn, values: [client]}]\n",
    );
    assert_ne!(bad_operator, ALLOW_CLIENT);
    policy::write(&t.lab, "allow.yaml", &bad_operator).unwrap();
    let err = policy::wait_rejected_with(&t.lab, "demo", "allow-client", "Inn").unwrap();
    assert!(err.contains(&path), "names the file: {err}");
    assert!(
        err.contains("spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator"),
        "names the field: {err}"
    );
    assert!(
        t.connects(),
        "unknown operator: the allowed client still connects"
    );
    assert!(
        !connects(&intruder, t.server.ip(), TCP_PORT),
        "unknown operator: others still denied"
    );
    let st = policy::policy_status(&t.node, "demo", "allow-client").unwrap();
    assert_eq!(st["revision"].as_u64(), Some(in_force), "{st:#}");
    let text = policy::lumen_cli(&t.node, &["policy", "get"]).unwrap();
    assert!(
        text.contains(&format!(
            "CiliumNetworkPolicy demo/allow-client: REJECTED, revision {in_force} stays in force"
        )),
        "{text}"
    );
}

#[test]
fn admin_cli_shows_status_endpoints_policies_identities() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("pol-cli", AgentOptions::default());
    t.apply("deny.yaml", DENY_INGRESS, "demo", "default-deny");
    t.apply("allow.yaml", ALLOW_CLIENT, "demo", "allow-client");
    let server = policy::wait_endpoint(&t.node, "demo", "server").unwrap();
    let client = policy::wait_endpoint(&t.node, "demo", "client").unwrap();
    let (server_id, client_id) = (
        server["identity"].as_u64().unwrap(),
        client["identity"].as_u64().unwrap(),
    );
    assert_ne!(server_id, client_id);

    let status = policy::lumen_cli(&t.node, &["status"]).unwrap();
    for want in [
        "node1",
        "Endpoints:             2 (2 ingress-enforced, 0 egress-enforced)",
        "Policies:              Ok   2 in force, 0 rejected, 0 warnings",
        "Datapath maps:         Ok",
    ] {
        assert!(
            status.contains(want),
            "`lumen status` lacks {want:?}:\n{status}"
        );
    }

    let list = policy::lumen_cli(&t.node, &["endpoint", "list"]).unwrap();
    for (ep, ip) in [(&server, t.server.ip()), (&client, t.client.ip())] {
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&ep["id"].to_string()))
            .unwrap_or_else(|| panic!("no line for endpoint {}:\n{list}", ep["id"]));
        let cols: Vec<&str> = line.split_whitespace().collect();
        // ENDPOINT, ingress, egress, IDENTITY, first label, IPv4, STATUS
        assert_eq!(cols[1], "Enabled", "default deny on ingress: {line}");
        assert_eq!(cols[2], "Disabled", "no egress policy: {line}");
        assert_eq!(cols[3], ep["identity"].to_string(), "{line}");
        assert!(line.contains(&ip.to_string()), "{line}");
    }
    for label in [
        "k8s:app=server",
        "k8s:app=client",
        "k8s:io.kubernetes.pod.namespace=demo",
    ] {
        assert!(
            list.contains(label),
            "`lumen endpoint list` lacks {label}:\n{list}"
        );
    }

    let pol = policy::lumen_cli(&t.node, &["policy", "get"]).unwrap();
    for want in [
        "NetworkPolicy demo/default-deny: in force (revision".to_string(),
        "CiliumNetworkPolicy demo/allow-client: in force (revision".to_string(),
        format!(
            "Endpoint {} (demo/server), identity {server_id}:",
            server["id"]
        ),
        format!(
            "Endpoint {} (demo/client), identity {client_id}:",
            client["id"]
        ),
        "Ingress: Enabled (selected by".to_string(),
    ] {
        assert!(
            pol.contains(&want),
            "`lumen policy get` lacks {want:?}:\n{pol}"
        );
    }
    let rule = pol
        .lines()
        .find(|l| {
            l.trim_start().starts_with("allow")
                && l.contains("CiliumNetworkPolicy demo/allow-client")
        })
        .unwrap_or_else(|| panic!("no allow rule naming allow-client:\n{pol}"));
    let cols: Vec<&str> = rule.split_whitespace().collect();
    assert_eq!(
        &cols[..4],
        ["allow", &client_id.to_string(), "TCP", "8080"],
        "{rule}"
    );
    assert!(rule.contains("k8s:app=client"), "{rule}");

    let json: serde_json::Value = serde_json::from_str(
        &policy::lumen_cli(&t.node, &["endpoint", "list", "-o", "json"]).unwrap(),
    )
    .unwrap();
    assert_eq!(
        json["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{json:#}"
    );

    // The agent's own answer, to compare the CLI's text with.
    let known = policy::identities(&t.node).unwrap();
    assert!(
        known[&(client_id as u32)]
            .iter()
            .any(|l| l == "k8s:app=client"),
        "{known:?}"
    );

    let ids = policy::lumen_cli(&t.node, &["identity", "list"]).unwrap();
    let block = |id: u64| -> Vec<String> {
        let mut lines = ids
            .lines()
            .skip_while(|l| l.split_whitespace().next() != Some(&id.to_string()));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("identity {id} missing:\n{ids}"));
        std::iter::once(first)
            .chain(lines.take_while(|l| l.starts_with(' ')))
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert!(
        block(client_id)
            .iter()
            .any(|l| l.ends_with("k8s:app=client")),
        "{ids}"
    );
    assert!(
        block(server_id)
            .iter()
            .any(|l| l.ends_with("k8s:app=server")),
        "{ids}"
    );
    assert!(
        block(2).iter().any(|l| l.ends_with("reserved:world")),
        "{ids}"
    );
}
