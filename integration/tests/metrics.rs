//! Prometheus metrics from the agent (`hubble.metrics.*`) and the relay
//! (`prometheus.enabled`): a real Prometheus server (Debian's `prometheus`) scrapes a lab
//! agent and a relay recording flow history every second while a default-deny policy
//! drops a known number of packets. PromQL over Prometheus' HTTP API returns exactly that
//! count under Hubble's metric name and labels, the relay's connected node, and the flows
//! its history stored.

mod common;

use common::{privileged, wait_until, OneNode, UDP_PORT};
use lumen_integration::{browser, policy, traffic_bin, AgentOptions, Relay, RelayOptions};
use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

const DENY_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: demo
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

/// UDP datagrams the client sends into the denied server: each is one policy drop.
const DATAGRAMS: u64 = 7;

/// A Prometheus server scraping its targets every second; killed on drop.
struct Prometheus {
    child: Child,
    url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Scrapes each `(job, address)` of `targets`.
    fn start(dir: &Path, targets: &[(&str, SocketAddr)]) -> Prometheus {
        let bin = PathBuf::from("/usr/bin/prometheus");
        assert!(
            bin.exists(),
            "/usr/bin/prometheus is missing: run `cargo xtask setup` (Debian package prometheus)"
        );
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        let mut yaml = "global: {scrape_interval: 1s, evaluation_interval: 1s}\n\
                        scrape_configs:\n"
            .to_string();
        for (job, target) in targets {
            yaml.push_str(&format!(
                "- job_name: {job}\n  static_configs:\n  - targets: ['{target}']\n"
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The value of an instant PromQL query returning one sample; None when it returns
    /// none (yet).
    fn query(&self, promql: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, percent_encode(promql));
        let r = browser::get(&url).ok()?;
        let v = r.json().ok()?;
        assert_eq!(v["status"], "success", "{promql}: {v}");
        let result = v["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql}: one sample expected: {v}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn prometheus_counts_policy_drops_under_hubbles_names_and_scrapes_the_relay() {
    if !privileged() {
        return;
    }
    let t = OneNode::new(
        "metrics",
        AgentOptions {
            metrics: &[
                "drop:sourceContext=namespace;destinationContext=pod",
                "flow",
                "policy",
            ],
            ..AgentOptions::default()
        },
    );
    // The agent listens on 127.0.0.1:9965 inside its node; Prometheus runs on the host.
    let fwd = t.node.forward_tcp("127.0.0.1:0", 9965).unwrap();
    let direct = browser::get(&format!("http://{}/metrics", fwd.local_addr())).unwrap();
    assert_eq!(direct.status, 200);
    let text = direct.text();
    assert!(
        text.contains("# TYPE hubble_flows_processed counter"),
        "{text}"
    );
    assert!(text.contains("lumen_flow_ring_capacity 65535"), "{text}");
    // Two pods: two ENDPOINTS entries, out of the map's 65536.
    assert!(
        text.contains("lumen_bpf_map_entries{map=\"ENDPOINTS\"} 2")
            && text.contains("lumen_bpf_map_capacity{map=\"ENDPOINTS\"} 65536"),
        "{text}"
    );
    // The EVENTS ring buffer: its size (bpf.eventsRingBytes, 8 MiB by default) and the
    // bytes the kernel wrote that the agent has not read yet, read from the ring itself.
    assert!(
        text.contains("lumen_bpf_ring_buffer_size_bytes 8388608"),
        "{text}"
    );
    let pending: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("lumen_bpf_ring_buffer_pending_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ring buffer fill:\n{text}"));
    assert!(pending <= 8388608, "{pending}");

    // The relay, on the host, recording the node's flows into SQLite.
    let relay_metrics = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _relay = Relay::start(
        &t.lab,
        RelayOptions {
            history: Some(t.lab.dir().join("relay-history").join("flows.db")),
            extra_yaml: format!(
                "prometheus: {{enabled: true, listenAddress: \"{relay_metrics}\"}}\n"
            ),
            ..Default::default()
        },
    )
    .expect("relay");

    let prom = Prometheus::start(
        t.lab.dir(),
        &[
            ("lumen-agent", fwd.local_addr()),
            ("lumen-relay", relay_metrics),
        ],
    );
    wait_until(
        "Prometheus scrapes the agent and the relay",
        Duration::from_secs(30),
        || {
            prom.query("up{job=\"lumen-agent\"}") == Some(1.0)
                && prom.query("up{job=\"lumen-relay\"}") == Some(1.0)
        },
    );
    assert_eq!(
        prom.query("lumen_relay_nodes{job=\"lumen-relay\",state=\"NODE_CONNECTED\"}"),
        Some(1.0),
        "the relay is connected to the one node"
    );
    let denied = "sum(hubble_drop_total{reason=\"POLICY_DENIED\"})";
    assert_eq!(prom.query(denied), None, "no drops before the policy");

    policy::apply(&t.lab, "deny.yaml", DENY_INGRESS, "demo", "default-deny").unwrap();
    // Each datagram is dropped at the server's ingress (no reply: the command fails).
    let _ = t.client.exec(
        traffic_bin().unwrap(),
        [
            "udp",
            "--to",
            &format!("{}:{UDP_PORT}", t.server.ip()),
            "--count",
            &DATAGRAMS.to_string(),
            "--timeout",
            "100ms",
        ],
    );
    wait_until(
        &format!("Prometheus sees {DATAGRAMS} policy drops"),
        Duration::from_secs(30),
        || prom.query(denied) == Some(DATAGRAMS as f64),
    );
    // With Hubble's labels and the configured contexts.
    let labelled = "hubble_drop_total{reason=\"POLICY_DENIED\",protocol=\"UDP\",source=\"demo\",destination=\"demo/server\"}";
    assert_eq!(prom.query(labelled), Some(DATAGRAMS as f64));
    assert_eq!(
        prom.query("sum(hubble_flows_processed_total{type=\"Drop\",verdict=\"DROPPED\"})"),
        Some(DATAGRAMS as f64)
    );
    assert_eq!(
        prom.query(
            "sum(hubble_policy_verdicts_total{direction=\"ingress\",match=\"none\",action=\"dropped\"})"
        ),
        Some(DATAGRAMS as f64),
        "every denied datagram is a new flow with its verdict"
    );
    // The relay recorded the dropped flows too: its history's stored count, as scraped,
    // covers at least them, and nothing was lost.
    wait_until(
        "Prometheus sees the relay's history store the drops",
        Duration::from_secs(30),
        || {
            prom.query("lumen_relay_history_flows_stored_total{job=\"lumen-relay\"}")
                .is_some_and(|n| n >= DATAGRAMS as f64)
        },
    );
    assert_eq!(
        prom.query("lumen_relay_history_flows_lost_total{job=\"lumen-relay\"}"),
        Some(0.0)
    );
    // Scraped again later: the count stays exact (no double counting across scrapes).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prom.query(denied), Some(DATAGRAMS as f64));
}
