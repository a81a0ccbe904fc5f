//! The CNI plugin against the real agent: idempotent ADD, CHECK, DEL releasing the address,
//! and bad input answered with a CNI error that leaks nothing.

mod common;

use common::*;
use lumen_integration::{cni_args, cni_config, find_binary, netns, AgentOptions, CniCommand};
use std::{
    io::Write,
    process::{Command, Stdio},
};

fn links(lab: &OneNode) -> String {
    let out = lab.node.exec_ok("ip", ["-o", "link", "show"]).unwrap();
    let mut names: Vec<_> = out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|s| s.split('@').next().unwrap().to_string())
        .collect();
    names.sort();
    names.join(",")
}

fn ipam_state(lab: &OneNode) -> String {
    std::fs::read_to_string(lab.node.dir().join("state/ipam.json")).unwrap_or_default()
}

/// The addresses IPAM has handed out.
fn allocated(lab: &OneNode) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&ipam_state(lab)).unwrap();
    v["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect()
}

/// Runs the plugin by hand in the node namespace: (exit ok, stdout JSON).
fn raw_cni(lab: &OneNode, netns_path: &str, stdin: &str) -> (bool, serde_json::Value) {
    let mut cmd: Command = lab.node.command(find_binary("lumen-cni").unwrap()).unwrap();
    let mut child = cmd
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "test-bad-input")
        .env("CNI_NETNS", netns_path)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", cni_args("demo", "bad"))
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), json)
}

#[test]
fn add_is_idempotent_check_passes_and_del_releases() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new("cni", AgentOptions::default());
    let first = lab.client.cni_result().clone();
    let again = lab.client.cni(CniCommand::Add).unwrap().unwrap();
    assert_eq!(
        first["ips"], again["ips"],
        "ADD twice gives the same address"
    );
    assert_eq!(
        first["interfaces"], again["interfaces"],
        "and the same interfaces"
    );
    lab.client.cni(CniCommand::Check).unwrap();
    let ip = lab.client.ip().to_string();
    assert!(allocated(&lab).contains(&ip), "{}", ipam_state(&lab));

    lab.client.cni(CniCommand::Del).unwrap();
    assert!(
        !allocated(&lab).contains(&ip),
        "DEL released {ip}: {}",
        ipam_state(&lab)
    );
    let host_if = first["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(
        !links(&lab).contains(&host_if),
        "host veth {host_if} removed"
    );
    assert!(
        lab.client.cni(CniCommand::Check).is_err(),
        "CHECK after DEL fails"
    );
    lab.client.cni(CniCommand::Del).unwrap();
}

#[test]
fn bad_input_gets_a_cni_error_and_leaks_nothing() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new("cnibad", AgentOptions::default());
    let (links_before, ipam_before) = (links(&lab), ipam_state(&lab));
    let good_netns = netns::netns_path(lab.server.netns()).display().to_string();
    let config = cni_config(&lab.node.agent_socket(), None).to_string();

    let (ok, err) = raw_cni(&lab, &good_netns, "{\"cniVersion\": \"1.0.0\", \"name\": ");
    assert!(!ok);
    assert_eq!(err["code"], 6, "broken JSON is a decoding error: {err}");
    assert!(err["msg"].as_str().unwrap().len() > 5);

    let (ok, err) = raw_cni(&lab, "/run/netns/lumen-does-not-exist", &config);
    assert!(!ok);
    assert_eq!(
        err["code"], 3,
        "a missing netns is an unknown container: {err}"
    );
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("lumen-does-not-exist"),
        "{err}"
    );

    assert_eq!(links(&lab), links_before, "no link left behind");
    assert_eq!(ipam_state(&lab), ipam_before, "no address allocated");
}
