//! Shared pieces of the privileged lab tests.
#![allow(dead_code)]

pub mod history;

use lumen_api::{
    flow::{Flow, FlowFilter},
    observer::GetFlowsRequest,
};
use lumen_integration::{hubble, traffic_bin, AgentOptions, Lab, Node, Pod, Spawned};
use std::time::Duration;

/// True when the lab can run. Without root the test is skipped, unless
/// `LUMEN_REQUIRE_PRIVILEGED=1` (CI, `cargo xtask test`), where skipping is a failure.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("LUMEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("LUMEN_REQUIRE_PRIVILEGED=1 but not root: the lab tests must run as root");
    }
    eprintln!("skipped: the lab needs root (run `sudo -E cargo xtask test`)");
    false
}

/// A lab with one node, its agent, and pods `demo/server` (app=server) and `demo/client`
/// (app=client) with a TCP/UDP echo server on the server pod.
pub struct OneNode {
    pub lab: Lab,
    pub node: Node,
    pub server: Pod,
    pub client: Pod,
    pub serving: Spawned,
    pub rt: tokio::runtime::Runtime,
}

pub const TCP_PORT: u16 = 8080;

/// Lets `app=client` pods reach `app=server` pods in `demo` on TCP 8080 (and nothing else
/// into the server: selecting it makes its ingress default-deny).
pub const ALLOW_CLIENT: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-client
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {app: server}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: client}
    toPorts:
    - ports:
      - port: \"8080\"
        protocol: TCP
";
pub const UDP_PORT: u16 = 5353;

/// Polls `ok` every 100 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `from` completes a TCP echo exchange of `bytes` with `to`:[`TCP_PORT`]
/// (`lab-traffic serve`), within 1 s.
pub fn tcp_echo_ok(from: &Pod, to: impl std::fmt::Display, bytes: u64) -> bool {
    from.exec(
        traffic_bin().unwrap(),
        [
            "tcp",
            "--to",
            &format!("{to}:{TCP_PORT}"),
            "--bytes",
            &bytes.to_string(),
            "--timeout",
            "1s",
        ],
    )
    .is_ok_and(|o| o.status.success())
}

/// Whether three UDP echoes from `from` to `to`:[`UDP_PORT`] come back (500 ms each).
pub fn udp_echo_ok(from: &Pod, to: impl std::fmt::Display) -> bool {
    from.exec(
        traffic_bin().unwrap(),
        [
            "udp",
            "--to",
            &format!("{to}:{UDP_PORT}"),
            "--count",
            "3",
            "--timeout",
            "500ms",
        ],
    )
    .is_ok_and(|o| o.status.success())
}

impl OneNode {
    pub fn new(name: &str, options: AgentOptions) -> OneNode {
        let lab = Lab::new(name).expect("lab");
        let node = lab.add_node("node1").expect("node");
        node.start_agent(options).expect("agent");
        let server = node
            .add_pod("demo", "server", &[("app", "server"), ("tier", "backend")])
            .expect("server pod");
        let client = node
            .add_pod("demo", "client", &[("app", "client"), ("tier", "frontend")])
            .expect("client pod");
        let mut serving = server
            .spawn(
                traffic_bin().unwrap(),
                [
                    "serve",
                    "--tcp",
                    &TCP_PORT.to_string(),
                    "--udp",
                    &UDP_PORT.to_string(),
                ],
            )
            .expect("server");
        serving
            .wait_for_output("listening", Duration::from_secs(5))
            .expect("server listening");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        OneNode {
            lab,
            node,
            server,
            client,
            serving,
            rt,
        }
    }

    /// Runs `lab-traffic <args>` in the client pod and returns its JSON summary.
    pub fn client_traffic(&self, args: &[&str]) -> serde_json::Value {
        let out = self
            .client
            .exec_ok(traffic_bin().unwrap(), args)
            .expect("traffic");
        serde_json::from_str(out.trim().lines().last().unwrap_or("{}")).expect("traffic JSON")
    }

    pub fn client(&self) -> hubble::Client {
        self.rt
            .block_on(hubble::connect_unix(&self.node.hubble_socket()))
            .expect("connect")
    }

    /// GetFlows over the unix socket, collecting until the stream ends or 3 s pass.
    pub fn get_flows(&self, req: GetFlowsRequest) -> Result<Vec<Flow>, tonic::Status> {
        let mut c = self.client();
        self.rt
            .block_on(hubble::collect(
                &mut c,
                req,
                usize::MAX,
                Duration::from_secs(3),
            ))
            .map(|r| hubble::flows(&r))
            .map_err(|e| match e.downcast::<tonic::Status>() {
                Ok(s) => s,
                Err(e) => tonic::Status::unknown(e.to_string()),
            })
    }

    /// Every stored flow matching one filter.
    pub fn flows_matching(&self, f: FlowFilter) -> Vec<Flow> {
        self.get_flows(GetFlowsRequest {
            whitelist: vec![f],
            ..Default::default()
        })
        .expect("GetFlows")
    }

    /// Polls until `pred` holds for the stored flows matching `f` (10 s at most).
    pub fn wait_for_flows(
        &self,
        f: FlowFilter,
        what: &str,
        pred: impl Fn(&[Flow]) -> bool,
    ) -> Vec<Flow> {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let flows = self.flows_matching(f.clone());
            if pred(&flows) {
                return flows;
            }
            if std::time::Instant::now() > end {
                panic!(
                    "timed out waiting for {what}; have {} flows: {:#?}",
                    flows.len(),
                    flows.iter().take(5).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub fn pod_filter(src: &str, dst: &str) -> FlowFilter {
    FlowFilter {
        source_pod: vec![src.into()],
        destination_pod: vec![dst.into()],
        ..Default::default()
    }
}

pub fn l4_ports(f: &Flow) -> Option<(u32, u32)> {
    use lumen_api::flow::layer4::Protocol;
    match f.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => Some((t.source_port, t.destination_port)),
        Protocol::Udp(u) => Some((u.source_port, u.destination_port)),
        _ => None,
    }
}
