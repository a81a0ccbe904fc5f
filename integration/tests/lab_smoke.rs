//! Privileged smoke test of the lab itself (no agent, no pods): two nodes on the underlay
//! bridge reach each other, the traffic tool works between them, the host forwarder reaches
//! into a node, and teardown leaves nothing behind, also after a panic. Skips unless root.

use lumen_integration::netns::{list_netns, parse_lab_id, pid_alive};
use lumen_integration::{Lab, Node, BPF_BASE};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_lab-traffic");

/// These tests compare namespace lists: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: the lab needs root");
    }
    root
}

/// Namespaces that labs of this process made: `lum<our pid>-…`. (Other people's labs and
/// tests may come and go on the same machine meanwhile; they are not ours to judge.)
fn our_netns() -> BTreeSet<String> {
    let me = std::process::id();
    list_netns()
        .into_iter()
        .filter(|n| parse_lab_id(n).is_some_and(|(_, pid)| pid == me))
        .collect()
}

/// Link names of the host namespace.
fn host_links() -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
        })
        .collect()
}

/// Host links that appeared since `before` and carry a name the lab uses inside its
/// namespaces (`br0`, `eth0`, `n<k>` underlay ports): a sign the lab made one in the wrong place.
fn lab_like_links_since(before: &BTreeSet<String>) -> Vec<String> {
    host_links()
        .difference(before)
        .filter(|l| {
            *l == "br0"
                || *l == "eth0"
                || l.strip_prefix('n')
                    .is_some_and(|k| k.parse::<u32>().is_ok())
        })
        .cloned()
        .collect()
}

struct Made {
    id: String,
    dir: PathBuf,
    netns: Vec<String>,
}

fn assert_gone(made: &Made, netns_before: &BTreeSet<String>, links_before: &BTreeSet<String>) {
    let now = our_netns();
    for name in &made.netns {
        assert!(!now.contains(name), "netns {name} survived teardown");
    }
    assert!(
        !now.iter().any(|n| n.starts_with(&format!("{}-", made.id))),
        "a netns of {} survived: {now:?}",
        made.id
    );
    assert_eq!(&now, netns_before, "namespaces differ from before the lab");
    assert_eq!(
        lab_like_links_since(links_before),
        Vec::<String>::new(),
        "host links appeared"
    );
    assert!(
        !made.dir.exists(),
        "{} survived teardown",
        made.dir.display()
    );
    assert!(
        !PathBuf::from(BPF_BASE).join(&made.id).exists(),
        "bpffs pins of {} survived",
        made.id
    );
}

fn json_line(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn ping(from: &Node, to: &Node, count: u32) -> Value {
    let out = from
        .exec_ok(
            TRAFFIC,
            [
                "icmp",
                "--to",
                &to.ip().to_string(),
                "--count",
                &count.to_string(),
                "--interval",
                "50ms",
            ],
        )
        .unwrap();
    json_line(&out)
}

#[test]
fn two_nodes_talk_over_the_underlay_and_teardown_is_complete() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root() {
        return;
    }
    Lab::sweep_stale().unwrap();
    let (netns_before, links_before) = (our_netns(), host_links());

    let lab = Lab::new("smoke").unwrap();
    let node1 = lab.add_node("node1").unwrap();
    let node2 = lab.add_node("node2").unwrap();
    assert_eq!(node2.ip().to_string(), "192.168.77.2");
    assert_eq!(node2.pod_cidr(), "10.100.2.0/24");
    assert!(
        lab.add_node("node1").is_err(),
        "duplicate node names are refused"
    );
    let made = Made {
        id: lab.id().to_string(),
        dir: lab.dir().to_path_buf(),
        netns: lab.netns_names(),
    };
    assert_eq!(made.netns.len(), 3, "{:?}", made.netns);
    assert!(made
        .netns
        .iter()
        .all(|n| n.starts_with(&format!("{}-", made.id))));
    assert_eq!(
        our_netns(),
        made.netns.iter().cloned().collect(),
        "the lab made namespaces it does not list"
    );
    assert!(lab.manifests_dir().join("node-node1.yaml").is_file());
    assert_eq!(
        node1
            .exec_ok("cat", ["/proc/sys/net/ipv4/ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        lab_like_links_since(&links_before),
        Vec::<String>::new(),
        "the lab made a host link"
    );

    // ICMP both ways over the bridge.
    let summary = ping(&node1, &node2, 3);
    assert_eq!(summary["received"], 3, "{summary}");
    assert_eq!(ping(&node2, &node1, 2)["received"], 2);

    // TCP and UDP echo between the nodes.
    let mut server = node2
        .spawn(TRAFFIC, ["serve", "--tcp", "7000", "--udp", "7001"])
        .unwrap();
    server
        .wait_for_output("listening", Duration::from_secs(5))
        .unwrap();
    let to_tcp = format!("{}:7000", node2.ip());
    let to_udp = format!("{}:7001", node2.ip());
    let tcp = json_line(
        &node1
            .exec_ok(
                TRAFFIC,
                [
                    "tcp",
                    "--to",
                    &to_tcp,
                    "--bytes",
                    "200000",
                    "--connections",
                    "3",
                ],
            )
            .unwrap(),
    );
    assert_eq!(tcp["bytes_received"], 600_000, "{tcp}");
    let udp = json_line(
        &node1
            .exec_ok(
                TRAFFIC,
                ["udp", "--to", &to_udp, "--count", "20", "--size", "512"],
            )
            .unwrap(),
    );
    assert_eq!(udp["received"], 20, "{udp}");
    let looped = node1
        .exec_ok(
            TRAFFIC,
            [
                "loop",
                "--to",
                &node2.ip().to_string(),
                "--tcp-port",
                "7000",
                "--udp-port",
                "7001",
                "--interval",
                "50ms",
                "--iterations",
                "2",
            ],
        )
        .unwrap();
    for line in looped.lines() {
        let round: Value = serde_json::from_str(line).unwrap();
        assert!(
            round["tcp"] == true && round["udp"] == true && round["icmp"] == true,
            "{round}"
        );
    }
    let flood = json_line(
        &node1
            .exec_ok(
                TRAFFIC,
                [
                    "udp-flood",
                    "--to",
                    &to_udp,
                    "--size",
                    "64",
                    "--seconds",
                    "0.3",
                ],
            )
            .unwrap(),
    );
    assert!(
        flood["packets_per_second"].as_f64().unwrap() > 0.0,
        "{flood}"
    );
    assert!(server.log().contains("tcp_closed"));

    // The host forwarder reaches the server inside node2's namespace.
    let forward = node2.forward_tcp("127.0.0.1:0", 7000).unwrap();
    let mut conn = TcpStream::connect(forward.local_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"hello through the forwarder").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = String::new();
    conn.read_to_string(&mut echoed).unwrap();
    assert_eq!(echoed, "hello through the forwarder");
    let addr = forward.local_addr();
    drop(forward);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the forwarder still listens after its guard dropped"
    );
    // Another forwarder stays up until the lab goes.
    let _kept = node2.forward_tcp("127.0.0.1:0", 7000).unwrap();

    drop(lab);
    // The lab killed the server its guard still holds.
    let mut exited = false;
    for _ in 0..100 {
        if server.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(exited, "the lab did not kill a spawned child");
    assert!(
        node1.exec("true", [] as [&str; 0]).is_err(),
        "the node netns is still usable"
    );
    assert_gone(&made, &netns_before, &links_before);
}

#[test]
fn teardown_runs_while_unwinding_from_a_panic() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root() {
        return;
    }
    Lab::sweep_stale().unwrap();
    let (netns_before, links_before) = (our_netns(), host_links());
    let made = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new("panics").unwrap();
        let node = lab.add_node("node1").unwrap();
        lab.add_node("node2").unwrap();
        let _server = node.spawn(TRAFFIC, ["serve", "--udp", "7001"]).unwrap();
        let _forward = node.forward_tcp("127.0.0.1:0", 7000).unwrap();
        lumen_integration::ensure_bpffs().unwrap();
        std::fs::create_dir_all(lab.bpf_root().join("node1")).unwrap(); // as an agent would pin
        *made.lock().unwrap() = Some(Made {
            id: lab.id().into(),
            dir: lab.dir().into(),
            netns: lab.netns_names(),
        });
        panic!("deliberate panic inside the lab");
    });
    assert!(result.is_err());
    let made = made.into_inner().unwrap().expect("the lab was made");
    assert_eq!(made.netns.len(), 3);
    assert_gone(&made, &netns_before, &links_before);
}

#[test]
fn labs_of_dead_processes_are_swept() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root() {
        return;
    }
    // A pid that surely is dead: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    assert!(!pid_alive(dead));
    let id = lumen_integration::netns::lab_id(dead, 0);
    let netns = lumen_integration::netns::node_netns_name(&id, "node1");
    lumen_integration::netns::create_netns(&netns).unwrap();
    let base = std::env::var_os("LUMEN_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp/lumen-lab".into());
    std::fs::create_dir_all(base.join(&id).join("manifests")).unwrap();

    let swept = Lab::sweep_stale().unwrap();
    assert!(swept.contains(&id), "{swept:?}");
    assert!(!list_netns().contains(&netns));
    assert!(!base.join(&id).exists());
}
