//! DNS-aware policy in the lab: a real authoritative DNS server (a small responder run in
//! the underlay, on a "world" address) answers the client pod's queries through the agent's
//! transparent DNS proxy; `toFQDNs` lets the pod reach exactly the addresses its names
//! resolved to, follows the server's changes without a policy change, DNS rules refuse
//! names, and broken answers become SERVFAIL without hurting the proxy.

mod common;

use common::{privileged, wait_until, OneNode};
use lumen_api::flow::{EventTypeFilter, FlowFilter, Verdict};
use lumen_integration::{policy, traffic_bin, AgentOptions, Lab, Pod, Spawned};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The DNS server, and the addresses its names resolve to (TCP 8080 served on each).
const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
const WEB_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const WEB_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const WEB_C: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
const PORT: u16 = 8080;
const POLICY_DENIED: i32 = 133;
const ACCESS_LOG: i32 = 129;
const L7_FLOW: i32 = 2;
const L7_REQUEST: i32 = 1;
const L7_RESPONSE: i32 = 2;

/// The `l7.dns` of a flow.
fn dns_of(f: &lumen_api::flow::Flow) -> Option<lumen_api::flow::Dns> {
    match f.l7.as_ref().and_then(|l| l.record.clone()) {
        Some(lumen_api::flow::layer7::Record::Dns(d)) => Some(d),
        _ => None,
    }
}

/// An authoritative responder for a zone kept in a JSON file (`{"name": ["ip", ...],
/// "_ttl": seconds}`, re-read on every query). Names starting with `garbage.` get a
/// response whose counts promise records that are not there; `trunc-x.…` the first 20
/// bytes of the answer for `x.…`; `loop.` an answer whose name is a compression pointer to
/// itself.
const DNS_SERVER_PY: &str = r#"
import json, socket, struct, sys, threading
zone_path, addr = sys.argv[1], sys.argv[2]

def respond(data):
    if len(data) < 12:
        return None
    i, labels = 12, []
    while i < len(data) and data[i] != 0:
        labels.append(data[i + 1:i + 1 + data[i]].decode().lower())
        i += 1 + data[i]
    question = data[12:i + 5]
    name = ".".join(labels)
    zone = json.load(open(zone_path))
    qid = data[:2]
    if name.startswith("garbage."):
        return qid + b"\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00" + question + b"\xc0\x0c\x00\x01"
    if name.startswith("loop."):
        body = question + b"\xc0\x2a\x00\x01\x00\x01\x00\x00\x00\x01\x00\x04\x01\x02\x03\x04"
        return qid + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + body
    ttl = zone.get("_ttl", 1)
    ips = zone.get(name[6:] if name.startswith("trunc-") else name, [])
    rcode = 0 if ips or name in zone else 3
    hdr = qid + struct.pack(">HHHHH", 0x8180 | rcode, 1, len(ips), 0, 0)
    answers = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip) for ip in ips)
    msg = hdr + question + answers
    return msg[:20] if name.startswith("trunc-") else msg

def serve_tcp():
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, 53))
    t.listen(64)
    while True:
        c, _ = t.accept()
        try:
            n = struct.unpack(">H", c.recv(2))[0]
            data = b""
            while len(data) < n:
                data += c.recv(n - len(data))
            r = respond(data)
            if r is not None:
                c.sendall(struct.pack(">H", len(r)) + r)
        finally:
            c.close()

threading.Thread(target=serve_tcp, daemon=True).start()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    r = respond(data)
    if r is not None:
        s.sendto(r, peer)
"#;

/// Asks `server` for the A records of a name over UDP or TCP; prints `{"rcode", "ips", "from"}` or
/// `{"timeout": true}`.
const DNS_CLIENT_PY: &str = r#"
import json, random, socket, struct, sys
server, name, transport = sys.argv[1], sys.argv[2], sys.argv[3]
qid = random.randint(0, 65535)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
try:
    if transport == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(4)
        s.sendto(q, (server, 53))
        data, peer = s.recvfrom(4096)
    else:
        s = socket.create_connection((server, 53), timeout=4)
        s.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", s.recv(2))[0]
        data = b""
        while len(data) < n:
            data += s.recv(n - len(data))
        peer = s.getpeername()
except socket.timeout:
    print(json.dumps({"timeout": True}))
    sys.exit(0)
rcode, an = data[3] & 15, struct.unpack(">H", data[6:8])[0]
i = 12
while data[i] != 0:
    i += data[i] + 1
i += 5
ips = []
for _ in range(an):
    if data[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while data[i] != 0:
            i += data[i] + 1
        i += 1
    t, c, ttl, rdl = struct.unpack(">HHIH", data[i:i + 10])
    i += 10
    if t == 1:
        ips.append(socket.inet_ntoa(data[i:i + 4]))
    i += rdl
print(json.dumps({"rcode": rcode, "ips": ips, "from": peer[0], "id": struct.unpack(">H", data[:2])[0] == qid}))
"#;

const PYTHON: &str = "/usr/bin/python3";

/// Opens a connection, exchanges 100 bytes, waits, exchanges 100 more on the same one.
const HELD_CONNECTION_PY: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
def exchange(b):
    s.sendall(b * 100)
    got = b""
    while len(got) < 100:
        chunk = s.recv(100 - len(got))
        if not chunk:
            raise SystemExit("closed")
        got += chunk
exchange(b"a")
print("connected", flush=True)
time.sleep(float(sys.argv[3]))
exchange(b"b")
print("ok", flush=True)
"#;

/// The lab's world: the DNS server and the web addresses, all in the underlay.
struct World {
    zone: PathBuf,
    _dns: Spawned,
    _web: Spawned,
}

impl World {
    fn start(lab: &Lab) -> World {
        lab.add_world(&[DNS_SERVER, WEB_A, WEB_B, WEB_C])
            .expect("world");
        let zone = lab.dir().join("zone.json");
        let script = lab.dir().join("dns-server.py");
        std::fs::write(&script, DNS_SERVER_PY).unwrap();
        let w = World {
            zone: zone.clone(),
            _dns: {
                set_zone(&zone, 1, &[]);
                let mut s = lab
                    .spawn_in_underlay(
                        PYTHON,
                        [
                            script.to_str().unwrap(),
                            zone.to_str().unwrap(),
                            &DNS_SERVER.to_string(),
                        ],
                    )
                    .expect("dns server");
                s.wait_for_output("listening", Duration::from_secs(5))
                    .expect("dns server listening");
                s
            },
            _web: {
                let mut s = lab
                    .spawn_in_underlay(traffic_bin().unwrap(), ["serve", "--tcp", "8080"])
                    .expect("web server");
                s.wait_for_output("listening", Duration::from_secs(5))
                    .expect("web listening");
                s
            },
        };
        w
    }

    fn set(&self, ttl: u32, records: &[(&str, &[Ipv4Addr])]) {
        set_zone(&self.zone, ttl, records);
    }
}

fn set_zone(path: &Path, ttl: u32, records: &[(&str, &[Ipv4Addr])]) {
    let mut map: serde_json::Map<String, Value> = records
        .iter()
        .map(|(n, ips)| {
            (
                n.to_string(),
                Value::from(ips.iter().map(|i| i.to_string()).collect::<Vec<_>>()),
            )
        })
        .collect();
    map.insert("_ttl".into(), ttl.into());
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&map).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// A query from the pod (over `transport`, "udp" or "tcp"), through whatever the datapath
/// does with it.
fn resolve_over(pod: &Pod, name: &str, transport: &str) -> Value {
    let out = pod
        .exec_ok(
            PYTHON,
            [
                "-c",
                DNS_CLIENT_PY,
                &DNS_SERVER.to_string(),
                name,
                transport,
            ],
        )
        .expect("dns client");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Asserts an answer came back from the server's address with this rcode; its addresses.
fn answer(pod: &Pod, name: &str, rcode: u64) -> Vec<String> {
    answer_over(pod, name, rcode, "udp")
}

fn answer_over(pod: &Pod, name: &str, rcode: u64, transport: &str) -> Vec<String> {
    let a = resolve_over(pod, name, transport);
    assert_eq!(a["rcode"], rcode, "{name}: {a}");
    assert_eq!(
        a["from"],
        DNS_SERVER.to_string(),
        "answered as the server: {a}"
    );
    assert_eq!(a["id"], true, "{a}");
    a["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn connects(pod: &Pod, ip: Ipv4Addr) -> bool {
    policy::tcp_connects(pod, IpAddr::V4(ip), PORT)
}

/// DNS to the server (names under example.test only), and toFQDNs as given.
fn fqdn_policy(to_fqdns: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: fqdn, namespace: demo}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
  - toCIDR: [{DNS_SERVER}/32]
    toPorts:
    - ports: [{{port: \"53\", protocol: ANY}}]
      rules:
        dns: [{{matchPattern: \"*.example.test\"}}, {{matchName: example.test}}]
  - toFQDNs: [{to_fqdns}]
    toPorts:
    - ports: [{{port: \"{PORT}\", protocol: TCP}}]
"
    )
}

#[test]
fn to_fqdns_match_name_follows_the_server_and_refuses_forbidden_names() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("dns-name", AgentOptions::default());
    let world = World::start(&t.lab);
    world.set(30, &[("api.example.test", &[WEB_A])]);
    assert!(connects(&t.client, WEB_A), "no policy: reachable");
    policy::apply(
        &t.lab,
        "fqdn.yaml",
        &fqdn_policy("{matchName: api.example.test}"),
        "demo",
        "fqdn",
    )
    .unwrap();
    assert!(!connects(&t.client, WEB_A), "not resolved yet: denied");

    // Resolved through the proxy: the first connection passes, other addresses do not.
    assert_eq!(
        answer(&t.client, "api.example.test", 0),
        vec![WEB_A.to_string()]
    );
    assert!(
        connects(&t.client, WEB_A),
        "the answered address, first try"
    );

    // The proxy's DNS flows: `Type: L7`, event type 129, `l7.dns` with the query and answer.
    let access_log = FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: ACCESS_LOG,
            ..Default::default()
        }],
        ..Default::default()
    };
    let request = policy::wait_flow(
        &t.node,
        FlowFilter {
            source_pod: vec!["demo/client".into()],
            ..access_log.clone()
        },
        "a DNS request flow",
        |f| f.l7.as_ref().is_some_and(|l| l.r#type == L7_REQUEST),
    )
    .unwrap();
    assert_eq!(request.r#type, L7_FLOW, "{request:#?}");
    let d = dns_of(&request).expect("l7.dns");
    assert_eq!(d.query, "api.example.test.", "{request:#?}");
    assert_eq!(d.qtypes, vec!["A".to_string()], "{request:#?}");
    assert_eq!(
        request.ip.as_ref().unwrap().destination,
        DNS_SERVER.to_string()
    );
    let response = policy::wait_flow(
        &t.node,
        FlowFilter {
            destination_pod: vec!["demo/client".into()],
            ..access_log.clone()
        },
        "a DNS response flow",
        |f| f.l7.as_ref().is_some_and(|l| l.r#type == L7_RESPONSE),
    )
    .unwrap();
    let d = dns_of(&response).expect("l7.dns");
    assert_eq!(
        (d.rcode, d.ips.clone(), d.ttl),
        (0, vec![WEB_A.to_string()], 30),
        "{response:#?}"
    );
    assert!(response.l7.as_ref().unwrap().latency_ns > 0);
    assert_eq!(
        response.is_reply.map(|b| b.value),
        Some(true),
        "{response:#?}"
    );
    assert!(
        !connects(&t.client, WEB_B),
        "an address the name did not give"
    );

    // The "CDN rotation": the server now answers another address; no policy change.
    world.set(30, &[("api.example.test", &[WEB_B])]);
    assert_eq!(
        answer(&t.client, "api.example.test", 0),
        vec![WEB_B.to_string()]
    );
    assert!(connects(&t.client, WEB_B), "the new address, first try");

    // Later flows to the address carry the name; `--to-fqdn '*.example.test'` finds them.
    let f = policy::wait_flow(
        &t.node,
        FlowFilter {
            source_pod: vec!["demo/client".into()],
            destination_fqdn: vec!["*.example.test".into()],
            ..Default::default()
        },
        "a flow to the name",
        |f| {
            f.ip.as_ref()
                .is_some_and(|ip| ip.destination == WEB_B.to_string())
        },
    )
    .unwrap();
    assert_eq!(f.destination_names, vec!["api.example.test"], "{f:#?}");
    let dst = f.destination.as_ref().unwrap();
    assert!(
        dst.labels.iter().any(|l| l == "fqdn:api.example.test"),
        "{dst:#?}"
    );

    // The cache, as `lumen fqdn cache list` shows it.
    let cache = policy::admin(&t.node, serde_json::json!({"op": "fqdn_cache_list"})).unwrap();
    let entries = cache["entries"].as_array().unwrap();
    for ip in [WEB_A, WEB_B] {
        assert!(
            entries.iter().any(|e| e["name"] == "api.example.test"
                && e["ip"] == ip.to_string()
                && e["identity"].as_u64().is_some()
                && e["expires_unix"].as_u64().unwrap()
                    > SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                        .saturating_sub(1)),
            "{cache:#}"
        );
    }

    // A name the DNS rule does not allow: REFUSED, and a dropped, policy-denied DNS flow
    // (an L7 access-log record, as Cilium's proxy reports it) says so.
    let since = SystemTime::now() - Duration::from_millis(50);
    assert!(answer(&t.client, "evil.test", 5).is_empty());
    let drop = policy::wait_flow(
        &t.node,
        FlowFilter {
            event_type: vec![EventTypeFilter {
                r#type: ACCESS_LOG,
                ..Default::default()
            }],
            source_pod: vec!["demo/client".into()],
            destination_ip: vec![DNS_SERVER.to_string()],
            ..Default::default()
        },
        "the refused query's drop flow",
        |f| {
            let t = f.time.as_ref().unwrap();
            SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32) >= since
        },
    )
    .unwrap();
    assert_eq!(drop.verdict, Verdict::Dropped as i32, "{drop:#?}");
    assert_eq!(drop.drop_reason_desc, POLICY_DENIED, "{drop:#?}");
    assert!(
        drop.egress_denied_by.iter().any(|p| p.name == "fqdn"),
        "names the policy: {drop:#?}"
    );
    assert_eq!(common::l4_ports(&drop).map(|(_, d)| d), Some(53));
    assert_eq!(
        dns_of(&drop).map(|d| d.query),
        Some("evil.test.".to_string()),
        "the drop carries the query: {drop:#?}"
    );

    // Broken answers: SERVFAIL to the pod, and the proxy keeps serving.
    world.set(
        30,
        &[("api.example.test", &[WEB_B]), ("x.example.test", &[WEB_C])],
    );
    for name in [
        "garbage.example.test",
        "trunc-x.example.test",
        "loop.example.test",
    ] {
        assert!(answer(&t.client, name, 2).is_empty(), "{name}");
    }
    assert_eq!(
        answer(&t.client, "api.example.test", 0),
        vec![WEB_B.to_string()]
    );
    // NXDOMAIN passes through untouched.
    assert!(answer(&t.client, "nothing.example.test", 3).is_empty());

    // DNS over TCP goes through the proxy too: answered, and refused alike.
    assert_eq!(
        answer_over(&t.client, "api.example.test", 0, "tcp"),
        vec![WEB_B.to_string()]
    );
    assert!(answer_over(&t.client, "evil.test", 5, "tcp").is_empty());
}

#[test]
fn to_fqdns_match_pattern_allows_subdomains_not_the_apex_and_ages_out() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("dns-pattern", AgentOptions::default());
    let world = World::start(&t.lab);
    world.set(
        2,
        &[("www.example.test", &[WEB_A]), ("example.test", &[WEB_C])],
    );
    policy::apply(
        &t.lab,
        "fqdn.yaml",
        &fqdn_policy("{matchPattern: \"*.example.test\"}"),
        "demo",
        "fqdn",
    )
    .unwrap();
    assert_eq!(
        answer(&t.client, "www.example.test", 0),
        vec![WEB_A.to_string()]
    );
    assert_eq!(
        answer(&t.client, "example.test", 0),
        vec![WEB_C.to_string()]
    );
    assert!(connects(&t.client, WEB_A), "a subdomain: allowed");
    assert!(!connects(&t.client, WEB_C), "the apex: not selected");

    // A connection opened while allowed survives the address's expiry (TTL 2 s).
    let mut held = t
        .client
        .spawn(
            PYTHON,
            [
                "-c",
                HELD_CONNECTION_PY,
                &WEB_A.to_string(),
                &PORT.to_string(),
                "6",
            ],
        )
        .expect("long connection");
    held.wait_for_output("connected", Duration::from_secs(5))
        .expect("connected");
    wait_until(
        "the name ages out of the cache",
        Duration::from_secs(10),
        || {
            let c = policy::admin(&t.node, serde_json::json!({"op": "fqdn_cache_list"})).unwrap();
            !c["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "www.example.test")
        },
    );
    // The maps follow the cache within a regeneration.
    wait_until(
        "new connections to the expired address are denied",
        Duration::from_secs(5),
        || !connects(&t.client, WEB_A),
    );
    let (status, out) = held
        .wait(Duration::from_secs(15))
        .expect("long connection ends");
    assert!(
        status.success() && out.contains("ok"),
        "the established connection survived the expiry: {out}"
    );
}

/// Sequential latency (each query waits for its answer) and windowed throughput (32 in
/// flight on one socket) of `name` against the server; prints one JSON line.
const DNS_BENCH_PY: &str = r#"
import json, random, socket, struct, sys, time
server, name, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
qn = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
def q(i):
    return struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + qn
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((server, 53))
lat = []
for i in range(n):
    t0 = time.perf_counter_ns()
    s.send(q(i))
    while struct.unpack(">H", s.recv(4096)[:2])[0] != i:
        pass
    lat.append(time.perf_counter_ns() - t0)
lat.sort()
done, sent, start = 0, 0, time.perf_counter()
window = 32
for _ in range(window):
    s.send(q(sent & 0xffff)); sent += 1
while time.perf_counter() - start < seconds:
    try:
        s.recv(4096)
    except socket.timeout:
        break
    done += 1
    s.send(q(sent & 0xffff)); sent += 1
qps = done / (time.perf_counter() - start)
print(json.dumps({"p50_us": lat[len(lat) // 2] / 1000, "p99_us": lat[len(lat) * 99 // 100] / 1000, "qps": qps}))
"#;

/// `cargo test -p lumen-integration --test dns -- --ignored --nocapture`: queries/s
/// through the proxy and the latency it adds, against the same server queried directly.
#[test]
#[ignore = "benchmark"]
fn dns_proxy_benchmark() {
    if !privileged() {
        return;
    }
    let t = OneNode::new("dns-bench", AgentOptions::default());
    let world = World::start(&t.lab);
    world.set(3600, &[("api.example.test", &[WEB_A])]);
    let run = |label: &str| -> Value {
        let out = t
            .client
            .exec_ok(
                PYTHON,
                [
                    "-c",
                    DNS_BENCH_PY,
                    &DNS_SERVER.to_string(),
                    "api.example.test",
                    "3000",
                    "3",
                ],
            )
            .expect("bench client");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        println!("{label}: {v}");
        v
    };
    let direct = run("direct");
    policy::apply(
        &t.lab,
        "fqdn.yaml",
        &fqdn_policy("{matchName: api.example.test}"),
        "demo",
        "fqdn",
    )
    .unwrap();
    assert_eq!(
        answer(&t.client, "api.example.test", 0),
        vec![WEB_A.to_string()]
    );
    let proxied = run("through the proxy");
    let added = |k: &str| proxied[k].as_f64().unwrap() - direct[k].as_f64().unwrap();
    println!(
        "added latency: p50 {:.0} µs, p99 {:.0} µs; queries/s {:.0} direct, {:.0} through the proxy",
        added("p50_us"),
        added("p99_us"),
        direct["qps"].as_f64().unwrap(),
        proxied["qps"].as_f64().unwrap()
    );
}
