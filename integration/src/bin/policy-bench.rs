//! `policy-bench`: what enforcing network policy costs, measured on the lab.
//!
//! 1. TCP throughput pod → pod (iperf3, one stream) with a 50-rule policy on both pods vs
//!    no policy, interleaved rounds in the same run. Target ≥ 97 %.
//! 2. New TCP connections per second (one client, sequential connect/exchange/close) with
//!    and without that policy.
//! 3. Time from a policy file write to enforcement on every node: the policy flips 30
//!    times between allowing and denying, and each agent reports when its maps hold the new
//!    revision (the admin report is published after the map update). Target p99 ≤ 1 s.
//!    Also the first successful connection after an allow, as a packet-level check.
//! 4. Policy map memory for 1,000 identities × 100 rules (kernel `memlock` of the POLICY
//!    map as bpftool reports it), and how long that regeneration took.
//!
//! Prints one line per figure, with its target, and a JSON summary at the end.

use anyhow::{bail, Context, Result};
use lumen_integration::{policy, traffic_bin, AgentOptions, Lab, Node, Pod};
use serde_json::json;
use std::time::{Duration, Instant};

const SECONDS: &str = "5";
const ROUNDS: usize = 3;

/// 49 rules for peers that never talk, and the one that matters (client → server:5201/8080).
fn fifty_rules() -> String {
    let mut s = String::from(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: fifty, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: server}}\n  ingress:\n",
    );
    for i in 0..49 {
        s.push_str(&format!(
            "  - fromEndpoints: [{{matchLabels: {{app: peer{i}}}}}]\n    toPorts: [{{ports: [{{port: \"{}\", protocol: TCP}}]}}]\n",
            10000 + i
        ));
    }
    s.push_str("  - fromEndpoints: [{matchLabels: {app: client}}]\n    toPorts: [{ports: [{port: \"5201\", protocol: TCP}, {port: \"8080\", protocol: TCP}]}]\n");
    s.push_str("---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: fifty-egress, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: client}}\n  egress:\n");
    for i in 0..49 {
        s.push_str(&format!(
            "  - toEndpoints: [{{matchLabels: {{app: peer{i}}}}}]\n    toPorts: [{{ports: [{{port: \"{}\", protocol: TCP}}]}}]\n",
            10000 + i
        ));
    }
    s.push_str("  - toEndpoints: [{matchLabels: {app: server}}]\n");
    s
}

fn iperf_gbps(client: &Pod, server_ip: &str) -> Result<f64> {
    let out = client.exec("iperf3", ["-c", server_ip, "-t", SECONDS, "-J"])?;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stdout)))?;
    if let Some(e) = j.get("error") {
        bail!("iperf3: {e}");
    }
    Ok(j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9)
}

fn conn_rate(client: &Pod, server_ip: &str) -> Result<f64> {
    // Few enough that the client's ephemeral ports (in TIME_WAIT for 60 s) never run out
    // over all rounds.
    let n = 1000;
    let out = client.exec_ok(
        traffic_bin()?,
        [
            "tcp",
            "--to",
            &format!("{server_ip}:8080"),
            "--connections",
            &n.to_string(),
            "--bytes",
            "64",
        ],
    )?;
    let j: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap_or("{}"))?;
    if j["ok"] != true {
        bail!("connections failed: {j}");
    }
    Ok(n as f64 / (j["elapsed_ms"].as_f64().unwrap_or(1.0) / 1000.0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn connects(client: &Pod, to: &str, timeout: &str) -> bool {
    client
        .exec(
            traffic_bin().unwrap(),
            ["tcp", "--to", to, "--timeout", timeout],
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// memlock of the node's POLICY map, from bpftool.
fn policy_map_bytes(node: &Node) -> Result<u64> {
    let pin = node.bpf_dir().join("maps").join("POLICY");
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(&pin)
        .output()
        .context("bpftool")?;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("bpftool: {}", String::from_utf8_lossy(&out.stderr)))?;
    j["bytes_memlock"].as_u64().context("bytes_memlock missing")
}

fn main() -> Result<()> {
    lumen_integration::install_interrupt_handler();
    let lab = Lab::new("polbench")?;
    let node1 = lab.add_node("node1")?;
    let node2 = lab.add_node("node2")?;
    for n in [&node1, &node2] {
        n.start_agent(AgentOptions::default())?;
    }
    let server = node1.add_pod("demo", "server", &[("app", "server")])?;
    let client = node1.add_pod("demo", "client", &[("app", "client")])?;
    let _other = node2.add_pod("demo", "other", &[("app", "other")])?;
    let traffic = traffic_bin()?;
    let mut serving = server.spawn(&traffic, ["serve", "--tcp", "8080"])?;
    serving.wait_for_output("listening", Duration::from_secs(5))?;
    let _iperf = server.spawn("iperf3", ["-s"])?;
    std::thread::sleep(Duration::from_millis(500));
    let sip = server.ip().to_string();
    let to = format!("{sip}:8080");

    // 1 + 2: interleaved rounds, policy off / on.
    let rules = fifty_rules();
    let (mut off, mut on, mut cps_off, mut cps_on) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        eprintln!("policy-bench: round {}/{ROUNDS}: no policy", round + 1);
        off.push(iperf_gbps(&client, &sip)?);
        cps_off.push(conn_rate(&client, &sip)?);
        eprintln!("policy-bench: round {}/{ROUNDS}: 50-rule policy", round + 1);
        policy::apply(&lab, "fifty.yaml", &rules, "demo", "fifty")?;
        if !connects(&client, &to, "1s") {
            bail!("the 50-rule policy should allow client → server:8080");
        }
        on.push(iperf_gbps(&client, &sip)?);
        cps_on.push(conn_rate(&client, &sip)?);
        policy::remove(&lab, "fifty.yaml", "demo", "fifty")?;
    }
    let (t_off, t_on) = (median(off.clone()), median(on.clone()));
    let (c_off, c_on) = (median(cps_off.clone()), median(cps_on.clone()));
    println!(
        "TCP pod→pod, 50-rule policy vs none: {t_on:.2} vs {t_off:.2} Gbit/s = {:.1} % (target ≥ 97 %)",
        100.0 * t_on / t_off
    );
    println!(
        "new TCP connections/s, 50-rule policy vs none: {c_on:.0} vs {c_off:.0} = {:.1} %",
        100.0 * c_on / c_off
    );

    // 3: write → enforcement on all nodes.
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: flip, namespace: demo}\nspec:\n  podSelector: {matchLabels: {app: server}}\n  policyTypes: [Ingress]\n";
    let allow = format!(
        "{deny}  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]\n"
    );
    let (mut agent_ms, mut packet_ms) = (vec![], vec![]);
    for i in 0..30 {
        if i % 2 == 0 {
            let d = policy::apply(&lab, "flip.yaml", deny, "demo", "flip")?;
            agent_ms.push(d.as_secs_f64() * 1000.0);
        } else {
            let start = Instant::now();
            let d = policy::apply(&lab, "flip.yaml", &allow, "demo", "flip")?;
            agent_ms.push(d.as_secs_f64() * 1000.0);
            while !connects(&client, &to, "100ms") {
                if start.elapsed() > Duration::from_secs(5) {
                    bail!("allow never took effect");
                }
            }
            packet_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    policy::remove(&lab, "flip.yaml", "demo", "flip")?;
    let (p50, p99) = (
        percentile(agent_ms.clone(), 0.5),
        percentile(agent_ms.clone(), 0.99),
    );
    println!("policy write → enforced on both nodes: p50 {p50:.0} ms, p99 {p99:.0} ms (target p99 ≤ 1000 ms)");
    let (k50, k99) = (
        percentile(packet_ms.clone(), 0.5),
        percentile(packet_ms.clone(), 0.99),
    );
    println!("policy write → first allowed connection: p50 {k50:.0} ms, p99 {k99:.0} ms");

    // 4: 1,000 identities × 100 rules.
    let mut pods = String::new();
    for i in 0..1000 {
        pods.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: bench{i}, namespace: demo, labels: {{bench: \"yes\", idx: \"i{i}\"}}}}\nspec: {{nodeName: elsewhere}}\nstatus: {{podIP: 10.250.{}.{}}}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let base = policy_map_bytes(&node1)?;
    policy::write(&lab, "bench-pods.yaml", &pods)?;
    let mut big = String::from("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: hundred, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: server}}\n  ingress:\n");
    for i in 0..100 {
        big.push_str(&format!(
            "  - fromEndpoints: [{{matchLabels: {{bench: \"yes\"}}}}]\n    toPorts: [{{ports: [{{port: \"{}\", protocol: TCP}}]}}]\n",
            20000 + i
        ));
    }
    let d = policy::apply(&lab, "hundred.yaml", &big, "demo", "hundred")?;
    let status = policy::admin(&node1, json!({"op": "status"}))?;
    let entries = status["map_entries"][2].as_u64().unwrap_or(0);
    let bytes = policy_map_bytes(&node1)?;
    let regen_ms = status["regeneration"][0].as_f64().unwrap_or(0.0) / 1000.0;
    println!(
        "policy map for 1,000 identities × 100 rules: {entries} entries, {:.1} MiB kernel memory ({:.0} B/entry; empty map {:.1} KiB); regeneration {regen_ms:.0} ms, write → enforced {:.0} ms",
        bytes as f64 / (1 << 20) as f64,
        (bytes.saturating_sub(base)) as f64 / entries.max(1) as f64,
        base as f64 / 1024.0,
        d.as_secs_f64() * 1000.0
    );
    println!(
        "{}",
        json!({
            "tcp_gbps_no_policy": off, "tcp_gbps_policy": on, "tcp_ratio": t_on / t_off,
            "conn_per_s_no_policy": cps_off, "conn_per_s_policy": cps_on,
            "write_to_enforced_ms": {"p50": p50, "p99": p99, "samples": agent_ms},
            "write_to_first_connection_ms": {"p50": k50, "p99": k99},
            "policy_map": {"entries": entries, "bytes": bytes, "empty_bytes": base, "regeneration_ms": regen_ms},
        })
    );
    Ok(())
}
