//! Network policy in the lab: write policy manifests into the shared state source and wait
//! until every agent has them in force (or has rejected them), asking each agent's admin
//! API (the same requests `lumen policy get` makes).

use crate::{Lab, Node};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

/// Sends one admin request (`{"op": ...}`) to a node's agent and returns its answer.
pub fn admin(node: &Node, request: Value) -> Result<Value> {
    let path = node.agent_socket();
    let mut s =
        UnixStream::connect(&path).with_context(|| format!("agent socket {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    let v: Value = serde_json::from_str(&answer).with_context(|| format!("answer {answer:?}"))?;
    if v["result"] == "error" {
        bail!("agent: {}", v["message"]);
    }
    Ok(v)
}

/// The status of policy `namespace/name` on a node (`null` when the agent does not know it).
pub fn policy_status(node: &Node, namespace: &str, name: &str) -> Result<Value> {
    let v = admin(node, json!({"op": "policy_get"}))?;
    Ok(v["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["namespace"] == namespace && p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null))
}

fn wait_all(lab: &Lab, what: &str, pred: impl Fn(&Node) -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut all = true;
        for n in lab.nodes() {
            all &= pred(&n)?;
        }
        if all {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("timed out after 10 s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `yaml` as `<file>` into the lab's manifests directory (atomically) and waits until
/// every agent has a newer revision of `namespace/name` in force; returns how long that took.
/// Fails at once when an agent rejects the new version (an error the old version already had
/// does not count).
pub fn apply(lab: &Lab, file: &str, yaml: &str, namespace: &str, name: &str) -> Result<Duration> {
    // (revision, error) per node before: an error already there is the old version's.
    let before: Vec<(u64, Value)> = lab
        .nodes()
        .iter()
        .map(|n| {
            policy_status(n, namespace, name)
                .map(|s| (s["revision"].as_u64().unwrap_or(0), s["error"].clone()))
        })
        .collect::<Result<_>>()?;
    write(lab, file, yaml)?;
    let nodes = lab.nodes();
    wait_all(lab, &format!("policy {namespace}/{name} in force"), |n| {
        let idx = nodes.iter().position(|m| m.name() == n.name()).unwrap_or(0);
        let s = policy_status(n, namespace, name)?;
        if s["revision"].as_u64().unwrap_or(0) > before[idx].0 {
            return Ok(true);
        }
        if let Some(e) = s["error"].as_str().filter(|_| s["error"] != before[idx].1) {
            bail!("policy {namespace}/{name} rejected on {}: {e}", n.name());
        }
        Ok(false)
    })
}

/// Writes a manifest file atomically (write + rename), as editors and `kubectl` do.
pub fn write(lab: &Lab, file: &str, yaml: &str) -> Result<()> {
    let dir = lab.manifests_dir();
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, dir.join(file))?;
    Ok(())
}

/// Removes a policy file and waits until no agent knows `namespace/name`.
pub fn remove(lab: &Lab, file: &str, namespace: &str, name: &str) -> Result<Duration> {
    std::fs::remove_file(lab.manifests_dir().join(file))?;
    wait_all(lab, &format!("policy {namespace}/{name} removed"), |n| {
        Ok(policy_status(n, namespace, name)?.is_null())
    })
}

/// Waits until every agent reports `namespace/name` rejected; returns the message.
pub fn wait_rejected(lab: &Lab, namespace: &str, name: &str) -> Result<String> {
    wait_all(lab, &format!("policy {namespace}/{name} rejected"), |n| {
        Ok(policy_status(n, namespace, name)?["error"].is_string())
    })?;
    let first = lab.nodes().into_iter().next().context("no nodes")?;
    Ok(policy_status(&first, namespace, name)?["error"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Whether `lab-traffic tcp` from `pod` to `ip:port` completes an echo within 1 s (a
/// connection denied by policy times out: its SYN is dropped).
pub fn tcp_connects(pod: &crate::Pod, ip: std::net::IpAddr, port: u16) -> bool {
    let to = std::net::SocketAddr::new(ip, port).to_string();
    pod.exec(
        crate::traffic_bin().expect("lab-traffic"),
        ["tcp", "--to", &to, "--timeout", "1s"],
    )
    .map(|o| o.status.success())
    .unwrap_or(false)
}

/// The agent's `status` answer.
pub fn status(node: &Node) -> Result<Value> {
    admin(node, json!({"op": "status"}))
}

/// The agent's local endpoints (`endpoint_list`).
pub fn endpoints(node: &Node) -> Result<Vec<Value>> {
    let v = admin(node, json!({"op": "endpoint_list"}))?;
    Ok(v["endpoints"].as_array().cloned().unwrap_or_default())
}

/// The local endpoint of pod `namespace/name` (`endpoint_list`), if the agent has it.
pub fn endpoint(node: &Node, namespace: &str, name: &str) -> Result<Option<Value>> {
    let pod = format!("{namespace}/{name}");
    Ok(endpoints(node)?
        .into_iter()
        .find(|e| e["pod"] == pod.as_str()))
}

/// The agent's identities (`identity_list`): identity → labels.
pub fn identities(node: &Node) -> Result<std::collections::BTreeMap<u32, Vec<String>>> {
    let v = admin(node, json!({"op": "identity_list"}))?;
    let mut out = std::collections::BTreeMap::new();
    for row in v["identities"].as_array().context("identities")? {
        let id = row["id"].as_u64().context("id")? as u32;
        out.insert(id, serde_json::from_value(row["labels"].clone())?);
    }
    Ok(out)
}

/// Waits until every agent's `status` has a `source_errors` entry containing `needle`;
/// returns that entry (from the first node).
pub fn wait_source_error(lab: &Lab, needle: &str) -> Result<String> {
    let find = |n: &Node| -> Result<Option<String>> {
        Ok(status(n)?["source_errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|e| e.contains(needle))
            .map(str::to_string))
    };
    wait_all(
        lab,
        &format!("a state-source error mentioning {needle:?}"),
        |n| Ok(find(n)?.is_some()),
    )?;
    let first = lab.nodes().into_iter().next().context("no nodes")?;
    find(&first)?.context("source error vanished")
}

/// Waits until every agent has a local endpoint for `namespace/name` with its policy
/// computed (it appears in `endpoint_list`); returns the first node's view of it.
pub fn wait_endpoint(node: &Node, namespace: &str, name: &str) -> Result<Value> {
    let start = Instant::now();
    loop {
        if let Some(e) = endpoint(node, namespace, name)? {
            return Ok(e);
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "timed out after 10 s waiting for endpoint {namespace}/{name} on {}",
                node.name()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the `lumen` admin CLI against a node's agent (`lumen --socket <agent socket> args…`)
/// and returns its stdout; a non-zero exit is an error with stderr.
pub fn lumen_cli(node: &Node, args: &[&str]) -> Result<String> {
    let bin = crate::find_binary("lumen")?;
    let out = std::process::Command::new(&bin)
        .arg("--socket")
        .arg(node.agent_socket())
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`lumen {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every flow stored by a node's agent that matches `filter` (GetFlows over its unix socket).
pub fn flows(
    node: &Node,
    filter: lumen_api::flow::FlowFilter,
) -> Result<Vec<lumen_api::flow::Flow>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = crate::hubble::connect_unix(&node.hubble_socket()).await?;
        let req = lumen_api::observer::GetFlowsRequest {
            whitelist: vec![filter],
            ..Default::default()
        };
        let r = crate::hubble::collect(&mut c, req, usize::MAX, Duration::from_secs(3)).await?;
        Ok(crate::hubble::flows(&r))
    })
}

/// Polls a node's flows matching `filter` until one satisfies `pred` (10 s at most); returns it.
pub fn wait_flow(
    node: &Node,
    filter: lumen_api::flow::FlowFilter,
    what: &str,
    pred: impl Fn(&lumen_api::flow::Flow) -> bool,
) -> Result<lumen_api::flow::Flow> {
    let start = Instant::now();
    loop {
        let all = flows(node, filter.clone())?;
        if let Some(f) = all.iter().find(|f| pred(f)) {
            return Ok(f.clone());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "timed out after 10 s waiting on {} for {what}; {} flows matched the filter, the last ones: {:#?}",
                node.name(),
                all.len(),
                all.iter().rev().take(4).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every agent reports `namespace/name` rejected with a message containing
/// `needle`; returns the message (from the first node).
pub fn wait_rejected_with(lab: &Lab, namespace: &str, name: &str, needle: &str) -> Result<String> {
    let error = |n: &Node| -> Result<String> {
        Ok(policy_status(n, namespace, name)?["error"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    wait_all(
        lab,
        &format!("policy {namespace}/{name} rejected for {needle:?}"),
        |n| Ok(error(n)?.contains(needle)),
    )?;
    error(&lab.nodes().into_iter().next().context("no nodes")?)
}
