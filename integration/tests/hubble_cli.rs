//! The `hubble` CLI against a real agent, over its unix socket and over TCP (:4244):
//! observe (JSON, pod and protocol filters), status, list nodes, and a clear error when the
//! server is unreachable.

mod common;

use common::*;
use lumen_api::observer::{get_flows_response::ResponseTypes, GetFlowsResponse};
use lumen_integration::{find_binary, AgentOptions};
use std::process::{Command, Output};

fn hubble(server: &str, args: &[&str]) -> Output {
    let bin = find_binary("hubble").expect("the hubble binary");
    Command::new(bin)
        .args(args)
        .args(["--server", server])
        .env("TZ", "UTC")
        .env_remove("HUBBLE_SERVER")
        .output()
        .expect("run hubble")
}

fn ok(server: &str, args: &[&str]) -> String {
    let out = hubble(server, args);
    assert!(
        out.status.success(),
        "hubble {args:?} --server {server}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn json_lines(text: &str) -> Vec<GetFlowsResponse> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn flow_of(r: &GetFlowsResponse) -> &lumen_api::flow::Flow {
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => f,
        other => panic!("not a flow: {other:?}"),
    }
}

#[test]
fn hubble_cli_against_an_agent() {
    if !privileged() {
        return;
    }
    let lab = OneNode::new("hubblecli", AgentOptions::default());
    let server_ip = lab.server.ip().to_string();
    let out = lab.client_traffic(&["tcp", "--to", &format!("{server_ip}:{TCP_PORT}")]);
    assert_eq!(out["ok"], true, "{out}");
    let out = lab.client_traffic(&[
        "udp",
        "--to",
        &format!("{server_ip}:{UDP_PORT}"),
        "--count",
        "3",
    ]);
    assert_eq!(out["ok"], true, "{out}");
    lab.wait_for_flows(
        lumen_api::flow::FlowFilter {
            protocol: vec!["udp".into()],
            ..pod_filter("demo/client", "demo/server")
        },
        "UDP flows from the client",
        |f| !f.is_empty(),
    );

    let fwd = lab.node.forward_tcp("127.0.0.1:0", 4244).unwrap();
    let servers = [
        format!("unix://{}", lab.node.hubble_socket().display()),
        fwd.local_addr().to_string(),
    ];
    for server in &servers {
        // --last 5 -o json: five protobuf-JSON responses, oldest first.
        let text = ok(server, &["observe", "--last", "5", "-o", "json"]);
        let resps = json_lines(&text);
        assert_eq!(resps.len(), 5, "{server}: {text}");
        let times: Vec<_> = resps
            .iter()
            .map(|r| {
                let t = flow_of(r).time.unwrap();
                (t.seconds, t.nanos)
            })
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{server}: {times:?}"
        );
        assert!(resps.iter().all(|r| r.node_name == "lab/node1"));

        // --pod demo/client: every flow has the client on one side.
        let text = ok(
            server,
            &["observe", "--pod", "demo/client", "-o", "jsonpb", "--all"],
        );
        let resps = json_lines(&text);
        assert!(!resps.is_empty(), "{server}: no flows for demo/client");
        for r in &resps {
            let f = flow_of(r);
            let pods = [
                f.source
                    .as_ref()
                    .map(|e| (e.namespace.as_str(), e.pod_name.as_str())),
                f.destination
                    .as_ref()
                    .map(|e| (e.namespace.as_str(), e.pod_name.as_str())),
            ];
            assert!(pods.contains(&Some(("demo", "client"))), "{server}: {f:?}");
        }

        // --protocol udp, compact: UDP lines between the pods.
        let text = ok(server, &["observe", "--protocol", "udp", "--last", "100"]);
        assert!(!text.is_empty(), "{server}: no UDP flows");
        for line in text.lines() {
            assert!(line.ends_with("(UDP)"), "{server}: {line}");
            assert!(
                line.contains("demo/client:") || line.contains("demo/server:"),
                "{line}"
            );
            assert!(line.contains(&format!(":{UDP_PORT} ")), "{server}: {line}");
        }
        assert!(
            text.lines().any(|l| l.contains("demo/client:")
                && l.contains(&format!("-> demo/server:{UDP_PORT} "))),
            "{server}: the client's datagrams to the server: {text}"
        );

        // status: health, then flow counts.
        let text = ok(server, &["status"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("Healthcheck (via {server}): Ok"),
            "{text}"
        );
        assert!(lines[1].starts_with("Current/Max Flows: "), "{text}");
        assert!(lines[2].starts_with("Flows/s: "), "{text}");

        // list nodes: the table with this node, connected.
        let text = ok(server, &["list", "nodes"]);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.starts_with("NAME") && header.ends_with("CURRENT/MAX-FLOWS"),
            "{text}"
        );
        let row = lines.next().unwrap_or_default();
        assert!(
            row.starts_with("lab/node1 ") && row.contains(" Connected "),
            "{text}"
        );
    }

    // Nothing listens there: a non-zero exit and one line on stderr.
    let out = hubble("127.0.0.1:1", &["observe", "--timeout", "2s"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("Error: failed to connect to '127.0.0.1:1'"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
