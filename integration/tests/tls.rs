//! Transport security in the lab, as Hubble deploys it: certificates from `lumen-certgen`,
//! an agent serving its TCP port only over mutual TLS (`hubble.tls`), the relay dialing it
//! over mTLS with its client certificate (`tls`), `hubble observe` through the relay, and
//! clients without a valid certificate refused at the agent's TCP port.

mod common;

use common::*;
use lumen_integration::{find_binary, AgentOptions, AgentTls, Relay, RelayOptions, CLUSTER_NAME};
use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

fn hubble(server: &str, args: &[&str]) -> Output {
    Command::new(find_binary("hubble").expect("the hubble binary"))
        .args(args)
        .args(["--server", server])
        .env_remove("HUBBLE_SERVER")
        .output()
        .expect("run hubble")
}

fn certgen(dir: &Path) {
    let out = Command::new(find_binary("lumen-certgen").expect("the lumen-certgen binary"))
        .arg("--out")
        .arg(dir)
        .args(["--cluster", CLUSTER_NAME, "--node", "node1", "--force"])
        .output()
        .expect("run lumen-certgen");
    assert!(
        out.status.success(),
        "lumen-certgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn relay_and_agents_speak_mutual_tls() {
    if !privileged() {
        return;
    }
    let certs = std::env::temp_dir().join(format!("lumen-tls-test-{}", std::process::id()));
    certgen(&certs);
    let other = certs.join("other");
    certgen(&other);
    let p = |name: &str| certs.join(name).display().to_string();

    let lab = OneNode::new(
        "tls",
        AgentOptions {
            monitor_interval: Duration::from_secs(1),
            tls: Some(AgentTls {
                cert_file: certs.join("node1.crt"),
                key_file: certs.join("node1.key"),
                client_ca_files: vec![certs.join("ca.crt")],
            }),
            ..Default::default()
        },
    );
    let fwd = lab.node.forward_tcp("127.0.0.1:0", 4244).unwrap();
    let agent_tcp = fwd.local_addr().to_string();

    // The relay reaches node1 only through its TCP port, over mTLS; `Relay::start` returns
    // once it is connected.
    let relay = Relay::start(
        &lab.lab,
        RelayOptions {
            node_addresses: [(format!("{CLUSTER_NAME}/node1"), agent_tcp.clone())].into(),
            extra_yaml: format!(
                "tls:\n  clientCertFile: {:?}\n  clientKeyFile: {:?}\n  caFiles: [{:?}]\n",
                p("relay-client.crt"),
                p("relay-client.key"),
                p("ca.crt")
            ),
            ..Default::default()
        },
    )
    .expect("the relay connects to the agent over mTLS");
    let relay_addr = relay.addr().to_string();

    // Flows through the relay.
    let to = format!("{}:{TCP_PORT}", lab.server.ip());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        lab.client_traffic(&["tcp", "--to", &to]);
        let out = hubble(&relay_addr, &["observe", "--last", "20", "-o", "json"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.contains("node1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no flows through the mTLS relay: {}\n{}\nrelay log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            text,
            relay.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let server_name = format!("node1.{CLUSTER_NAME}.hubble-grpc.cilium.io");

    // GetNodes through the relay says how the relay reaches the node: over TLS, verifying
    // Hubble's server name for it.
    let nodes = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            let mut c = lumen_integration::hubble::connect_tcp(&relay_addr).await?;
            anyhow::Ok(
                c.get_nodes(lumen_api::observer::GetNodesRequest {})
                    .await?
                    .into_inner()
                    .nodes,
            )
        })
        .expect("GetNodes through the relay");
    let tls: Vec<_> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.tls.clone()))
        .collect();
    assert_eq!(
        tls,
        [(
            format!("{CLUSTER_NAME}/node1"),
            Some(lumen_api::observer::Tls {
                enabled: true,
                server_name: server_name.clone()
            })
        )]
    );
    let tls_args = |ca: &str| {
        vec![
            "--tls".to_string(),
            "--tls-ca-cert-files".into(),
            ca.to_string(),
            "--tls-server-name".into(),
            server_name.clone(),
        ]
    };
    let run = |extra: Vec<String>| {
        let mut args: Vec<String> = vec!["status".into()];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        hubble(&agent_tcp, &args)
    };

    // Straight to the agent with the CLI's certificate: served.
    let mut with_cert = tls_args(&p("ca.crt"));
    with_cert.extend([
        "--tls-client-cert-file".into(),
        p("hubble-client.crt"),
        "--tls-client-key-file".into(),
        p("hubble-client.key"),
    ]);
    let out = run(with_cert);
    assert!(
        out.status.success(),
        "hubble status with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Plaintext, TLS without a client certificate, a certificate from another CA: refused.
    let mut other_cert = tls_args(&p("ca.crt"));
    other_cert.extend([
        "--tls-client-cert-file".into(),
        other.join("hubble-client.crt").display().to_string(),
        "--tls-client-key-file".into(),
        other.join("hubble-client.key").display().to_string(),
    ]);
    for (what, args) in [
        ("plaintext", vec![]),
        ("no client certificate", tls_args(&p("ca.crt"))),
        ("another CA's certificate", other_cert),
    ] {
        let out = run(args);
        assert!(
            !out.status.success(),
            "hubble status ({what}) straight to the agent must be refused; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    drop(relay);

    // A relay dialing the agent's TCP port in plaintext never connects.
    let plain = Relay::start(
        &lab.lab,
        RelayOptions {
            node_addresses: [(format!("{CLUSTER_NAME}/node1"), agent_tcp.clone())].into(),
            ..Default::default()
        },
    );
    assert!(
        plain.is_err(),
        "a relay without a client certificate must not reach the agent"
    );
    let log = std::fs::read_to_string(lab.node.agent_log()).unwrap_or_default();
    assert!(log.contains("TLS on the TCP listener"), "agent log:\n{log}");
    drop(fwd);
    drop(lab);
    let _ = std::fs::remove_dir_all(&certs);
}
