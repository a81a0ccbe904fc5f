//! Mutual TLS on the agent's TCP listener, on loopback, unprivileged: a server set up with
//! the agent's own [`server_tls_config`] (as `observer::serve` does when
//! `hubble.tls.enabled`), certificates from `lumen-certgen`, and clients with and without
//! valid certificates — including the relay's `Dialer`.

use lumen_certgen::{generate, NodeSpec, Spec};
use lumen_dataplane::{config::HubbleTlsConfig, observer::tls::server_tls_config};
use lumen_relay::{
    config::AgentTls,
    dial::{Dialer, Target},
    tls::DialTls,
};
use std::{path::Path, time::Duration};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const SERVER_NAME: &str = "node1.lab.hubble-grpc.cilium.io";

fn certs(dir: &Path) {
    let spec = Spec {
        cluster: "lab".into(),
        nodes: vec![NodeSpec {
            name: "node1".into(),
            extra_sans: vec!["127.0.0.1".into()],
        }],
        days: 1,
    };
    generate(&spec).unwrap().write(dir, false).unwrap();
    generate(&spec)
        .unwrap()
        .write(&dir.join("other"), false)
        .unwrap();
}

async fn agent_like_server(dir: &Path) -> std::net::SocketAddr {
    let tls = server_tls_config(&HubbleTlsConfig {
        enabled: true,
        cert_file: dir.join("node1.crt"),
        key_file: dir.join("node1.key"),
        client_ca_files: vec![dir.join("ca.crt")],
    })
    .unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

async fn check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// Connects (if the handshake lets it) and calls grpc.health; Err with a description on
/// any failure.
async fn call(addr: std::net::SocketAddr, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        ep = ep.tls_config(t).map_err(|e| format!("config: {e:?}"))?;
    }
    let ch = ep.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    check(ch).await.map_err(|e| format!("rpc: {e:?}"))
}

fn client(dir: &Path, identity: Option<(&str, &str)>) -> ClientTlsConfig {
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let mut c = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(SERVER_NAME);
    if let Some((cert, key)) = identity {
        c = c.identity(Identity::from_pem(
            std::fs::read(dir.join(cert)).unwrap(),
            std::fs::read(dir.join(key)).unwrap(),
        ));
    }
    c
}

#[tokio::test]
async fn agent_tcp_requires_a_client_certificate_from_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir);
    let addr = agent_like_server(dir).await;

    // The CLI's certificate, signed by the CA: accepted.
    call(
        addr,
        Some(client(
            dir,
            Some(("hubble-client.crt", "hubble-client.key")),
        )),
    )
    .await
    .expect("a client with a certificate from the CA must be served");

    // No client certificate: refused.
    let e = call(addr, Some(client(dir, None))).await.unwrap_err();
    eprintln!("without a client certificate: {e}");
    assert!(e.contains("CertificateRequired"), "{e}");

    // A client certificate from another CA: refused.
    let e = call(
        addr,
        Some(client(
            dir,
            Some(("other/hubble-client.crt", "other/hubble-client.key")),
        )),
    )
    .await
    .unwrap_err();
    eprintln!("with another CA's certificate: {e}");

    // Plaintext HTTP/2 on the TLS port: refused.
    call(addr, None).await.unwrap_err();

    // The relay's dialer with its client certificate, verifying the node's Hubble name.
    let relay_tls = DialTls::load(&AgentTls {
        client_cert_file: dir.join("relay-client.crt"),
        client_key_file: dir.join("relay-client.key"),
        ca_files: vec![dir.join("ca.crt")],
        server_name: None,
    })
    .unwrap();
    let dialer = Dialer {
        timeout: Duration::from_secs(5),
        tls: Some(relay_tls.clone()),
    };
    let target = Target::Tcp(addr.to_string());
    let ch = dialer.dial_node(&target, Some("lab/node1")).await.unwrap();
    check(ch)
        .await
        .expect("the relay's mTLS connection is served");

    // ... and refusing a node whose certificate is not for that node name.
    let wrong = dialer.dial_node(&target, Some("lab/node2")).await;
    match wrong {
        Err(_) => {}
        Ok(ch) => {
            check(ch).await.unwrap_err();
        }
    }

    // A relay trusting another CA refuses the agent.
    let other = Dialer {
        timeout: Duration::from_secs(5),
        tls: Some(
            DialTls::load(&AgentTls {
                client_cert_file: dir.join("relay-client.crt"),
                client_key_file: dir.join("relay-client.key"),
                ca_files: vec![dir.join("other/ca.crt")],
                server_name: None,
            })
            .unwrap(),
        ),
    };
    match other.dial_node(&target, Some("lab/node1")).await {
        Err(_) => {}
        Ok(ch) => {
            check(ch).await.unwrap_err();
        }
    }
}

#[test]
fn bad_tls_files_name_the_key_and_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let e = server_tls_config(&HubbleTlsConfig {
        enabled: true,
        cert_file: tmp.path().join("missing.crt"),
        key_file: tmp.path().join("missing.key"),
        client_ca_files: vec![],
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("hubble.tls.certFile") && e.contains("missing.crt") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::write(tmp.path().join("x.crt"), "not pem").unwrap();
    let e = server_tls_config(&HubbleTlsConfig {
        enabled: true,
        cert_file: tmp.path().join("x.crt"),
        key_file: tmp.path().join("x.crt"),
        client_ca_files: vec![],
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("hubble.tls.certFile") && e.contains("PEM"),
        "{e}"
    );
}

#[tokio::test]
async fn relay_serves_tls_to_its_clients_and_dials_agents_over_mtls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir);
    let agent = agent_like_server(dir).await;
    let d = |f: &str| dir.join(f).display().to_string();
    // The node certificate (SAN 127.0.0.1 and node1.lab.hubble-grpc.cilium.io) doubles as
    // the relay's server certificate here.
    let cfg = lumen_relay::config::RelayConfig::parse(&format!(
        "listenAddress: '127.0.0.1:0'\nclusterName: lab\npeers: [{{name: node1, address: '{agent}'}}]\n\
         tls: {{clientCertFile: {:?}, clientKeyFile: {:?}, caFiles: [{:?}]}}\n\
         listenTls: {{certFile: {:?}, keyFile: {:?}, clientCAFiles: [{:?}]}}\n",
        d("relay-client.crt"),
        d("relay-client.key"),
        d("ca.crt"),
        d("node1.crt"),
        d("node1.key"),
        d("ca.crt"),
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lumen_relay::serve(cfg, listener, async {
        let _ = stopped.await;
    }));

    call(
        relay,
        Some(client(
            dir,
            Some(("hubble-client.crt", "hubble-client.key")),
        )),
    )
    .await
    .expect("a client with a certificate from the CA is served by the relay");
    let e = call(relay, Some(client(dir, None))).await.unwrap_err();
    assert!(e.contains("CertificateRequired"), "{e}");
    call(relay, None).await.unwrap_err();

    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // The relay's node pool (what `serve` builds from `tls`) stays connected to the agent
    // over mTLS, health stream included.
    let pool = lumen_relay::pool::Pool::new(
        Dialer {
            timeout: Duration::from_secs(5),
            tls: Some(
                DialTls::load(&AgentTls {
                    client_cert_file: dir.join("relay-client.crt"),
                    client_key_file: dir.join("relay-client.key"),
                    ca_files: vec![dir.join("ca.crt")],
                    server_name: None,
                })
                .unwrap(),
            ),
        },
        lumen_relay::config::Backoff::default(),
    );
    pool.upsert("lab/node1", &agent.to_string());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snap = pool.snapshot();
        if snap.get("lab/node1").map(|n| n.state)
            == Some(lumen_api::relay::NodeState::NodeConnected)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay's pool did not connect to the agent over mTLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pool.snapshot().get("lab/node1").map(|n| n.state),
        Some(lumen_api::relay::NodeState::NodeConnected),
        "the mTLS connection must stay up"
    );
}
