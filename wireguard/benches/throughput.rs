//! TCP throughput between two network namespaces joined by a veth, measured with `iperf3`
//! through (1) the plain veth, (2) `lumen-wireguard` on both ends and (3) `wireguard-go`
//! on both ends, in one run on the same machine, so the figures compare.
//!
//! Run as root: `cargo bench -p lumen-wireguard --bench throughput` (release build).
//! `LUMEN_BENCH_SECONDS` sets each measurement's length (default 10), `LUMEN_BENCH_STREAMS`
//! the parallel TCP streams (default 1). Prints one line per path and a summary ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use lumen_wireguard::PrivateKey;

/// An `iperf3 -s -1` in a namespace, killed on drop if still there.
struct Server(Child);

impl Server {
    fn start(ns: &Netns, bind: &str) -> Server {
        let child = ns
            .command("iperf3")
            .args(["-s", "-1", "-B", bind])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s");
        std::thread::sleep(Duration::from_millis(500));
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Gbit/s received, from `iperf3 -c <to> -J`.
fn iperf(pair: &Pair, to: &str) -> f64 {
    let seconds = env_or("LUMEN_BENCH_SECONDS", 10);
    let streams = env_or("LUMEN_BENCH_STREAMS", 1);
    let _server = Server::start(&pair.b.ns, to);
    let out = pair
        .a
        .ns
        .command("iperf3")
        .args(["-c", to, "-J", "-t", &seconds.to_string()])
        .args(["-P", &streams.to_string()])
        .output()
        .expect("iperf3 -c");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 -c {to}: {text}");
    // "sum_received": {..., "bits_per_second": N, ...}
    let received = text.split("\"sum_received\"").nth(1).expect(&text);
    let bps: f64 = received
        .split("\"bits_per_second\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .expect(&text);
    bps / 1e9
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and must not spend
    // a minute measuring.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("throughput: measures only under `cargo bench`");
        return;
    }
    if !privileged("throughput bench") {
        return;
    }
    assert!(
        Command::new("iperf3").arg("--version").output().is_ok(),
        "iperf3 missing: run `cargo xtask setup`"
    );

    let veth = {
        let pair = Pair::new("bv");
        iperf(&pair, &pair.b.underlay)
    };
    println!("plain veth:                 {veth:6.2} Gbit/s");

    let lumen = {
        let pair = Pair::new("bl");
        let (ka, kb) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let _a = lumen_device(&pair.a, ka.clone(), &pair.b, kb.public_key());
        let _b = lumen_device(&pair.b, kb.clone(), &pair.a, ka.public_key());
        wait_reachable(&pair.a.ns, &pair.b.tunnel_ip);
        iperf(&pair, &pair.b.tunnel_ip)
    };
    println!("lumen-wireguard both ends:  {lumen:6.2} Gbit/s");

    let go = {
        let pair = Pair::new("bg");
        let (ka, kb) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let _a = WireguardGo::new(&pair.a, &ka, &pair.b, kb.public_key());
        let _b = WireguardGo::new(&pair.b, &kb, &pair.a, ka.public_key());
        wait_reachable(&pair.a.ns, &pair.b.tunnel_ip);
        iperf(&pair, &pair.b.tunnel_ip)
    };
    println!("wireguard-go both ends:     {go:6.2} Gbit/s");
    println!(
        "lumen-wireguard / wireguard-go: {:.2}x (WireGuard costs {:.0}% of the veth's throughput)",
        lumen / go,
        100.0 * (1.0 - lumen / veth)
    );
}
