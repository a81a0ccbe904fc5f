//! The demo lab: one node with its agent, pods in a `demo` namespace exchanging TCP, UDP
//! and ICMP traffic continuously, and the agent's Hubble Observer API on the host at
//! 127.0.0.1:4244, until Ctrl-C (which tears everything down).

use anyhow::Result;
use lumen_integration::{install_interrupt_handler, traffic_bin, AgentOptions, Lab};
use std::time::Duration;

fn main() -> Result<()> {
    install_interrupt_handler();
    let lab = Lab::new("demo")?;
    let node = lab.add_node("node1")?;
    eprintln!(
        "demo: starting lumen-agent on {} ({})",
        node.name(),
        node.ip()
    );
    node.start_agent(AgentOptions {
        event_buffer_capacity: 65535,
        ..AgentOptions::default()
    })?;
    let server = node.add_pod("demo", "server", &[("app", "server"), ("tier", "backend")])?;
    let client = node.add_pod("demo", "client", &[("app", "client"), ("tier", "frontend")])?;
    let client2 = node.add_pod("demo", "client2", &[("app", "client"), ("other", "client")])?;
    let traffic = traffic_bin()?;
    let mut serving = server.spawn(&traffic, ["serve", "--tcp", "8080", "--udp", "5353"])?;
    serving.wait_for_output("listening", Duration::from_secs(5))?;
    let dst = server.ip().to_string();
    let _loop1 = client.spawn(
        &traffic,
        [
            "loop",
            "--to",
            &dst,
            "--tcp-port",
            "8080",
            "--udp-port",
            "5353",
            "--interval",
            "1s",
        ],
    )?;
    let _loop2 = client2.spawn(
        &traffic,
        [
            "loop",
            "--to",
            &dst,
            "--tcp-port",
            "8080",
            "--udp-port",
            "5353",
            "--interval",
            "3s",
        ],
    )?;
    let _fwd = node.forward_tcp("127.0.0.1:4244", 4244)?;

    println!(
        "\nLumen demo lab is up.\n\
         \x20 node:    {} ({}), pod CIDR {}\n\
         \x20 pods:    demo/server {}  demo/client {}  demo/client2 {}\n\
         \x20 Hubble Observer API: 127.0.0.1:4244 (TCP) and {} (unix socket)\n\
         \x20 agent log: {}\n\n\
         Try:  grpcurl -plaintext -import-path schema/api/proto -proto observer/observer.proto \\\n\
         \x20       -d '{{\"number\": 20}}' 127.0.0.1:4244 observer.Observer/GetFlows\n\
         \x20     python3 integration/clients/observe.py --server 127.0.0.1:4244 --last 20\n\n\
         Ctrl-C tears everything down.",
        node.name(),
        node.ip(),
        node.pod_cidr(),
        server.ip(),
        client.ip(),
        client2.ip(),
        node.hubble_socket().display(),
        node.agent_log().display(),
    );
    lab.run_until_interrupted();
    eprintln!("demo: tearing down");
    Ok(())
}
