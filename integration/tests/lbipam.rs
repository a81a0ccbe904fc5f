//! LB-IPAM and `lumen service list` on a two-node lab (`kubeProxyReplacement: true`): a
//! two-address pool in the underlay subnet hands out LoadBalancer IPs, which the agents
//! write back as status files (`<manifests>/status/`) and read back as the Services'
//! `status.loadBalancer.ingress`; an exhausted pool and a request for a taken address are
//! reported as conditions; deleting a service frees its address for the waiting one. Also:
//! backends that only terminate are listed as `terminating`.

mod common;

use common::privileged;
use lumen_integration::{policy, AgentOptions, Lab, Node};
use serde_json::json;
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

const POOL: &str = "apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: lab, creationTimestamp: \"2026-01-01T00:00:00Z\"}
spec:
  blocks: [{start: 192.168.77.240, stop: 192.168.77.241}]
";

/// A LoadBalancer service `demo/<name>` created at second `n`, with extra metadata.
fn lb_service(name: &str, n: u32, extra_meta: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: demo
  creationTimestamp: \"2026-01-01T00:00:{n:02}Z\"
{extra_meta}spec:
  type: LoadBalancer
  clusterIP: 10.96.1.{n}
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080, protocol: TCP, nodePort: {np}}}]
",
        np = 30080 + n
    )
}

/// An EndpointSlice for `demo/<service>` with one endpoint per (address, conditions).
fn slice(service: &str, endpoints: &[(&str, &str)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(ip, cond)| format!("- addresses: [{ip}]\n  conditions: {cond}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-1
  namespace: demo
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
{eps}"
    )
}

fn status_path(lab: &Lab, file: &str) -> PathBuf {
    lab.manifests_dir().join("status").join(file)
}

/// The parsed status file, if it exists.
fn status(lab: &Lab, file: &str) -> Option<serde_yaml::Value> {
    let text = std::fs::read_to_string(status_path(lab, file)).ok()?;
    serde_yaml::from_str(&text).ok()
}

/// `(ingress IPs, condition status, reason, message)` of service `demo/<name>`.
fn service_status(lab: &Lab, name: &str) -> Option<(Vec<String>, String, String, String)> {
    let v = status(lab, &format!("service.demo.{name}.yaml"))?;
    let ips = v["status"]["loadBalancer"]["ingress"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_string))
        .collect();
    let c = v["status"]["conditions"]
        .as_sequence()?
        .iter()
        .find(|c| c["type"].as_str() == Some("cilium.io/IPAMRequestSatisfied"))?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((ips, s("status"), s("reason"), s("message")))
}

/// The message of pool condition `t`.
fn pool_condition(lab: &Lab, t: &str) -> Option<String> {
    let v = status(lab, "ciliumloadbalancerippool.lab.yaml")?;
    v["status"]["conditions"]
        .as_sequence()?
        .iter()
        .find(|c| c["type"].as_str() == Some(t))
        .and_then(|c| c["message"].as_str().map(str::to_string))
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_status(lab: &Lab, name: &str, want: (&[&str], &str, &str)) -> String {
    let mut last = None;
    let start = Instant::now();
    loop {
        let got = service_status(lab, name);
        if let Some((ips, st, reason, msg)) = &got {
            if ips == want.0 && st == want.1 && reason == want.2 {
                return msg.clone();
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("status of {name}: want {want:?}, last {last:?}");
        }
        last = got;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every status file's text, by name.
fn status_files(lab: &Lab) -> Vec<(String, String)> {
    let mut out: Vec<_> = std::fs::read_dir(lab.manifests_dir().join("status"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (!name.starts_with('.'))
                .then(|| (name, std::fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect();
    out.sort();
    out
}

fn two_nodes(name: &str) -> (Lab, Vec<Node>) {
    let lab = Lab::new(name).expect("lab");
    let nodes = vec![
        lab.add_node("node1").expect("node1"),
        lab.add_node("node2").expect("node2"),
    ];
    for n in &nodes {
        n.start_agent(AgentOptions {
            kube_proxy_replacement: true,
            ..Default::default()
        })
        .expect("agent");
    }
    (lab, nodes)
}

#[test]
fn pool_assigns_reports_exhaustion_and_conflicts_and_frees_on_delete() {
    if !privileged() {
        return;
    }
    let (lab, nodes) = two_nodes("lbipam");
    policy::write(&lab, "pool.yaml", POOL).unwrap();
    for (i, name) in ["svc-a", "svc-b", "svc-c"].into_iter().enumerate() {
        policy::write(
            &lab,
            &format!("{name}.yaml"),
            &lb_service(name, i as u32 + 1, ""),
        )
        .unwrap();
    }
    policy::write(
        &lab,
        "svc-a-slice.yaml",
        &slice("svc-a", &[("10.100.1.50", "{ready: true}")]),
    )
    .unwrap();

    // The first two get the pool's two addresses, in creation order; the third waits.
    wait_status(&lab, "svc-a", (&["192.168.77.240"], "True", "satisfied"));
    wait_status(&lab, "svc-b", (&["192.168.77.241"], "True", "satisfied"));
    let msg = wait_status(&lab, "svc-c", (&[], "False", "out_of_ips"));
    assert!(msg.contains("lab"), "{msg}");
    wait("pool counts", || {
        pool_condition(&lab, "cilium.io/IPsUsed").as_deref() == Some("2")
            && pool_condition(&lab, "cilium.io/IPsAvailable").as_deref() == Some("0")
            && pool_condition(&lab, "cilium.io/IPsTotal").as_deref() == Some("2")
    });

    // A request for an address another service holds is a conflict.
    policy::write(
        &lab,
        "svc-d.yaml",
        &lb_service(
            "svc-d",
            4,
            "  annotations: {lbipam.cilium.io/ips: 192.168.77.241}\n",
        ),
    )
    .unwrap();
    let msg = wait_status(&lab, "svc-d", (&[], "False", "already_allocated"));
    assert!(msg.contains("demo/svc-b"), "{msg}");

    // Two agents write as one: once settled, nothing changes any more.
    let settled = status_files(&lab);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(status_files(&lab), settled, "status files keep changing");

    // Both agents read the status back: the LoadBalancer frontends are served everywhere.
    for n in &nodes {
        wait(&format!("{}'s LoadBalancer frontends", n.name()), || {
            let out = policy::lumen_cli(n, &["service", "list"]).unwrap_or_default();
            out.lines().any(|l| {
                l.contains("192.168.77.240:80/TCP")
                    && l.contains("LoadBalancer")
                    && l.contains("1 => 10.100.1.50:8080/TCP (active)")
            }) && out
                .lines()
                .any(|l| l.contains("192.168.77.241:80/TCP") && l.contains("LoadBalancer"))
        });
        let out = policy::lumen_cli(n, &["service", "list"]).unwrap();
        let ipam_line = |svc: &str| {
            out.lines()
                .find(|l| l.starts_with(svc))
                .unwrap_or_else(|| panic!("no LB-IPAM line for {svc} in:\n{out}"))
                .to_string()
        };
        assert!(out.contains("LB-IPAM:"), "{out}");
        assert!(ipam_line("demo/svc-c").contains("out_of_ips"), "{out}");
        assert!(
            ipam_line("demo/svc-d").contains("already_allocated"),
            "{out}"
        );
        let cluster_ip = format!("{}:{}/TCP", "10.96.1.1", 80);
        assert!(
            out.lines()
                .any(|l| l.contains(&cluster_ip) && l.contains("ClusterIP")),
            "{out}"
        );
        let node_port = format!("{}:30081/TCP", n.ip());
        assert!(
            out.lines()
                .any(|l| l.contains(&node_port) && l.contains("NodePort")),
            "{out}"
        );

        let v = policy::admin(n, json!({"op": "service_list"})).unwrap();
        let lb: Vec<&str> = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["service_type"] == "LoadBalancer")
            .filter_map(|s| s["frontend"].as_str())
            .collect();
        assert_eq!(
            lb,
            ["192.168.77.240:80/TCP", "192.168.77.241:80/TCP"],
            "{v}"
        );
    }

    // Deleting svc-a frees .240 for the waiting svc-c; svc-d still conflicts with svc-b.
    std::fs::remove_file(lab.manifests_dir().join("svc-a.yaml")).unwrap();
    wait_status(&lab, "svc-c", (&["192.168.77.240"], "True", "satisfied"));
    wait("svc-a's status file to go", || {
        !status_path(&lab, "service.demo.svc-a.yaml").exists()
    });
    wait_status(&lab, "svc-d", (&[], "False", "already_allocated"));
    for n in &nodes {
        wait(&format!("{} to serve .240 for svc-c", n.name()), || {
            let v = policy::admin(n, json!({"op": "service_list"})).unwrap_or_default();
            v["services"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["frontend"] == "192.168.77.240:80/TCP" && s["service"] == "demo/svc-c")
        });
    }
}

#[test]
fn service_list_shows_terminating_backends() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("lbipam-term").expect("lab");
    let node = lab.add_node("node1").expect("node1");
    node.start_agent(AgentOptions {
        kube_proxy_replacement: true,
        ..Default::default()
    })
    .expect("agent");
    policy::write(
        &lab,
        "web.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.20
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
",
    )
    .unwrap();
    let terminating = "{ready: false, serving: true, terminating: true}";
    policy::write(
        &lab,
        "web-slice.yaml",
        &slice("web", &[("10.100.1.60", terminating)]),
    )
    .unwrap();
    wait("the terminating backend", || {
        policy::lumen_cli(&node, &["service", "list"])
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.contains("10.96.0.20:80/TCP")
                    && l.contains("ClusterIP")
                    && l.ends_with("1 => 10.100.1.60:8080/TCP (terminating)")
            })
    });

    // Once a ready endpoint exists, only it is listed (active).
    policy::write(
        &lab,
        "web-slice.yaml",
        &slice(
            "web",
            &[
                ("10.100.1.60", terminating),
                ("10.100.1.61", "{ready: true}"),
            ],
        ),
    )
    .unwrap();
    wait("the active backend replacing it", || {
        let out = policy::lumen_cli(&node, &["service", "list"]).unwrap_or_default();
        out.contains("1 => 10.100.1.61:8080/TCP (active)") && !out.contains("10.100.1.60")
    });
    let v = policy::admin(&node, json!({"op": "service_list"})).unwrap();
    assert_eq!(
        v["services"][0]["backends"],
        json!([{"address": "10.100.1.61:8080/TCP", "state": "active"}]),
        "{v}"
    );
}
