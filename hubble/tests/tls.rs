//! TLS: the `hubble` binary against a fake server behind mutual TLS (certificates made with
//! the `openssl` command; the test is skipped when it is missing).

use lumen_api::observer::{
    observer_server::{Observer, ObserverServer},
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, ServerStatusRequest, ServerStatusResponse,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use std::{
    path::{Path, PathBuf},
    pin::Pin,
    process::Command,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

struct Fake;

#[tonic::async_trait]
impl Observer for Fake {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;
    async fn get_flows(
        &self,
        _: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: 10,
            max_flows: 100,
            ..Default::default()
        }))
    }
}

/// A server-side TLS stream tonic can serve.
struct Tls(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for Tls {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}
impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}
impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for `relay.lumen.test` and a client certificate.
fn certificates() -> Option<PathBuf> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no openssl command to make test certificates");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("hubble-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=lumen-test-ca",
    ]);
    openssl(&dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:relay.lumen.test\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:client.lumen.test\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let extfile = format!("{name}.ext");
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=lumen-test"]);
        openssl(&dir, &req);
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ],
        );
    }
    Some(dir)
}

fn serve_tls(rt: &tokio::runtime::Runtime, dir: &Path) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Tls>>(4);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        let _ = tx.send(Ok(Tls(tls))).await;
                    }
                });
            }
        });
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(ObserverServer::new(Fake))
                .serve_with_incoming(ReceiverStream::new(rx)),
        );
        addr
    })
}

fn hubble(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hubble"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn mutual_tls() {
    let Some(dir) = certificates() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = serve_tls(&rt, &dir);
    let p = |f: &str| dir.join(f).display().to_string();
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let base = [
        "status",
        "--server",
        addr.as_str(),
        "--tls",
        "--tls-ca-cert-files",
    ];

    let mut good = base.to_vec();
    good.extend([
        ca.as_str(),
        "--tls-server-name",
        "relay.lumen.test",
        "--tls-client-cert-file",
        cert.as_str(),
        "--tls-client-key-file",
        key.as_str(),
    ]);
    let out = hubble(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "Healthcheck (via {addr}): Ok\nCurrent/Max Flows: 10/100 (10.00%)\n"
        )),
        "{text}"
    );

    // --tls-allow-insecure skips the server's certificate (the name does not match).
    let out = hubble(&[
        "status",
        "--server",
        &addr,
        "--tls-allow-insecure",
        "--tls-client-cert-file",
        &cert,
        "--tls-client-key-file",
        &key,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let one_line_failure = |args: &[&str]| {
        let out = hubble(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    // Without a client certificate the server refuses us.
    let mut no_client = base.to_vec();
    no_client.extend([ca.as_str(), "--tls-server-name", "relay.lumen.test"]);
    one_line_failure(&no_client);
    // The server's name must match.
    let mut wrong_name = base.to_vec();
    wrong_name.extend([
        ca.as_str(),
        "--tls-client-cert-file",
        &cert,
        "--tls-client-key-file",
        &key,
    ]);
    let e = one_line_failure(&wrong_name);
    assert!(e.contains("certificate"), "{e}");
    // An untrusted CA.
    let mut untrusted = base.to_vec();
    untrusted.extend([
        cert.as_str(),
        "--tls-server-name",
        "relay.lumen.test",
        "--tls-client-cert-file",
        &cert,
        "--tls-client-key-file",
        &key,
    ]);
    one_line_failure(&untrusted);
    let _ = std::fs::remove_dir_all(&dir);
}
