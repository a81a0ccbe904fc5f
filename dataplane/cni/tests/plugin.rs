//! End-to-end runs of the real `lumen-cni` binary, as a runtime invokes it (env, stdin,
//! stdout, exit code), inside a "node" namespace the test creates, against
//! `TestAgentDouble`: a stand-in for lumen-agent's local API on a temp socket. The double
//! exists only in this test; the plugin itself talks to whatever is on its socket.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::{node_with_gateway, privileged, TestNs};
use lumen_cni::ipam::Ipam;
use lumen_cni::protocol::{Attachment, EndpointSpec, IpamResult, Request, Response};
use serde_json::{json, Value};

const GW: &str = "10.244.8.1";

/// TEST DOUBLE of lumen-agent's local API: the real [`Ipam`] plus an in-memory endpoint
/// table, one JSON line in and out per connection. Records every request it gets.
struct TestAgentDouble {
    dir: tempfile::TempDir,
    socket: PathBuf,
    state: Arc<Mutex<DoubleState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct DoubleState {
    ipam: Ipam,
    endpoints: HashMap<Attachment, (EndpointSpec, u32)>,
    next_id: u32,
    requests: Vec<Request>,
    refuse_endpoint_add: bool,
}

impl TestAgentDouble {
    fn start() -> TestAgentDouble {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let ipam = Ipam::open(
            &dir.path().join("ipam.json"),
            "10.244.8.0/24".parse().unwrap(),
            GW.parse().unwrap(),
        )
        .unwrap();
        let state = Arc::new(Mutex::new(DoubleState {
            ipam,
            endpoints: HashMap::new(),
            next_id: 100,
            requests: Vec::new(),
            refuse_endpoint_add: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = UnixListener::bind(&socket).unwrap();
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        continue;
                    }
                    let request: Request = serde_json::from_str(line.trim_end()).unwrap();
                    let response = state.lock().unwrap().handle(request);
                    let mut out = serde_json::to_string(&response).unwrap();
                    out.push('\n');
                    let _ = reader.get_mut().write_all(out.as_bytes());
                }
            })
        };
        TestAgentDouble {
            dir,
            socket,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn endpoint(&self, attachment: &Attachment) -> Option<EndpointSpec> {
        self.state
            .lock()
            .unwrap()
            .endpoints
            .get(attachment)
            .map(|(s, _)| s.clone())
    }

    fn allocated(&self, attachment: &Attachment) -> Option<IpAddr> {
        self.state.lock().unwrap().ipam.get(attachment)
    }
}

impl DoubleState {
    fn handle(&mut self, request: Request) -> Response {
        self.requests.push(request.clone());
        match request {
            Request::IpamAllocate {
                attachment,
                pod_namespace,
                pod_name,
            } => {
                match self
                    .ipam
                    .allocate(&attachment, &format!("{pod_namespace}/{pod_name}"))
                {
                    Ok(ip) => Response::Allocated(IpamResult {
                        mtu: None,
                        ip,
                        prefix_len: 24,
                        gateway: self.ipam.gateway(),
                    }),
                    Err(e) => Response::Error {
                        message: e.to_string(),
                    },
                }
            }
            Request::EndpointAdd(spec) => {
                if self.refuse_endpoint_add {
                    return Response::Error {
                        message: "test double refuses EndpointAdd".into(),
                    };
                }
                let id = self
                    .endpoints
                    .get(&spec.attachment)
                    .map(|(_, id)| *id)
                    .unwrap_or_else(|| {
                        self.next_id += 1;
                        self.next_id
                    });
                self.endpoints.insert(spec.attachment.clone(), (spec, id));
                Response::EndpointAdded { endpoint_id: id }
            }
            Request::EndpointDel { attachment } => {
                let spec = self.endpoints.remove(&attachment).map(|(s, _)| s);
                self.ipam.release(&attachment).unwrap();
                Response::EndpointDeleted { spec }
            }
            Request::EndpointGet { attachment } => {
                let found = self.endpoints.get(&attachment).cloned();
                Response::Endpoint {
                    endpoint_id: found.as_ref().map(|(_, id)| *id),
                    spec: found.map(|(s, _)| s),
                }
            }
        }
    }
}

impl Drop for TestAgentDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    json: Value,
}

/// Runs the plugin binary inside `node`'s namespace, as a runtime would.
fn cni(node: &TestNs, command: &str, env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let node_ns = File::open(&node.path).unwrap();
    let fd = node_ns.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lumen-cni"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe; fd stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"))
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        json,
    }
}

fn conf(agent: &Path, extra: Value) -> Vec<u8> {
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": "lumen",
        "type": "lumen-cni",
        "agentSocket": agent,
        "mtu": 1450,
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    serde_json::to_vec(&conf).unwrap()
}

fn pod_env<'a>(container: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", container),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=client;K8S_POD_INFRA_CONTAINER_ID=x"),
    ]
}

fn lxc_links(node: &TestNs) -> Vec<String> {
    node.link_names()
        .into_iter()
        .filter(|n| n.starts_with("lxc"))
        .collect()
}

fn att(container: &str) -> Attachment {
    Attachment {
        container_id: container.into(),
        ifname: "eth0".into(),
    }
}

#[test]
fn version_lists_supported_versions() {
    let out = Command::new(env!("CARGO_BIN_EXE_lumen-cni"))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn missing_env_is_code_4_on_stdout() {
    let out = Command::new(env!("CARGO_BIN_EXE_lumen-cni"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 4);
    assert!(
        v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{v}"
    );
}

#[test]
fn add_check_del_round_trip() {
    if !privileged("add_check_del_round_trip") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let agent = TestAgentDouble::start();
    let log = agent.dir.path().join("cni.log");
    let stdin = conf(&agent.socket, json!({ "logFile": log }));
    let netns_path = pod.path.to_str().unwrap().to_string();
    let netns = netns_path.as_str();
    let env = pod_env("ctr1", netns);

    let add = cni(&node, "ADD", &env, &stdin);
    assert_eq!(add.code, 0, "{}", add.stdout);
    let host = lumen_cni::wire::host_veth_name("ctr1", "eth0");
    let r = &add.json;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], host.as_str());
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], netns);
    assert_eq!(r["ips"][0]["address"], "10.244.8.2/32");
    assert_eq!(r["ips"][0]["gateway"], GW);
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": GW}));

    // What the agent was told matches what the node has.
    let ep = agent.endpoint(&att("ctr1")).expect("endpoint registered");
    let link = node.link(&host).unwrap();
    assert_eq!(link["ifindex"], ep.host_ifindex);
    assert_eq!(link["mtu"], 1450);
    assert_eq!(pod.link("eth0").unwrap()["address"], ep.mac.as_str());
    assert_eq!(r["interfaces"][1]["mac"], ep.mac.as_str());
    assert_eq!(
        (ep.pod_namespace.as_str(), ep.pod_name.as_str()),
        ("demo", "client")
    );

    // ADD again: same answer, one veth.
    let again = cni(&node, "ADD", &env, &stdin);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert_eq!(again.stdout, add.stdout);
    assert_eq!(lxc_links(&node), vec![host.clone()]);

    // CHECK with the ADD result as prevResult.
    let check_conf = conf(
        &agent.socket,
        json!({ "prevResult": add.json, "logFile": log }),
    );
    let check = cni(&node, "CHECK", &env, &check_conf);
    assert_eq!((check.code, check.stdout.as_str()), (0, ""));
    pod.ip(&["route", "del", "default"]);
    let check = cni(&node, "CHECK", &env, &check_conf);
    assert_eq!(check.code, 1);
    assert_eq!(check.json["code"], 103, "{}", check.stdout);
    assert!(
        check.json["msg"].as_str().unwrap().contains("default via"),
        "{}",
        check.stdout
    );

    // DEL: gone everywhere; again: still fine; with the namespace gone: still fine.
    let del = cni(&node, "DEL", &env, &stdin);
    assert_eq!((del.code, del.stdout.as_str()), (0, ""));
    assert!(lxc_links(&node).is_empty());
    assert!(pod.link("eth0").is_none());
    assert_eq!(agent.endpoint(&att("ctr1")), None);
    assert_eq!(agent.allocated(&att("ctr1")), None);
    assert_eq!(cni(&node, "DEL", &env, &stdin).code, 0);
    drop(pod);
    let del = cni(&node, "DEL", &env, &stdin);
    assert_eq!((del.code, del.stdout.as_str()), (0, ""));

    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().count(), 7, "{lines}");
    assert!(
        lines.lines().next().unwrap().contains("ADD container=ctr1"),
        "{lines}"
    );
}

#[test]
fn older_versions_get_older_results() {
    if !privileged("older_versions_get_older_results") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let agent = TestAgentDouble::start();
    let stdin = conf(&agent.socket, json!({ "cniVersion": "0.3.1" }));
    let env = pod_env("ctr2", pod.path.to_str().unwrap());
    let add = cni(&node, "ADD", &env, &stdin);
    assert_eq!(add.code, 0, "{}", add.stdout);
    assert_eq!(add.json["cniVersion"], "0.3.1");
    assert_eq!(add.json["ips"][0]["version"], "4");
    let check = cni(&node, "CHECK", &env, &stdin);
    assert_eq!(
        check.json["code"], 1,
        "CHECK does not exist in 0.3.1: {}",
        check.stdout
    );
    assert_eq!(cni(&node, "DEL", &env, &stdin).code, 0);
}

#[test]
fn broken_stdin_is_code_6_and_creates_nothing() {
    if !privileged("broken_stdin_is_code_6_and_creates_nothing") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let agent = TestAgentDouble::start();
    let env = pod_env("ctr3", pod.path.to_str().unwrap());
    let run = cni(
        &node,
        "ADD",
        &env,
        b"{\"cniVersion\": \"1.0.0\", \"name\": ",
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.json["code"], 6, "{}", run.stdout);
    assert_eq!(run.json["cniVersion"], "1.0.0");
    assert!(
        agent.requests().is_empty(),
        "the agent must not be asked anything"
    );
    assert!(lxc_links(&node).is_empty());
    assert!(pod.link("eth0").is_none());
}

#[test]
fn missing_netns_is_code_3_and_leaks_nothing() {
    if !privileged("missing_netns_is_code_3_and_leaks_nothing") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let agent = TestAgentDouble::start();
    let missing = format!("/run/netns/lcni{}-does-not-exist", std::process::id());
    let stdin = conf(&agent.socket, json!({}));
    let env = pod_env("ctr4", &missing);
    for command in ["ADD", "CHECK"] {
        let run = cni(&node, command, &env, &stdin);
        assert_eq!(run.code, 1);
        assert_eq!(run.json["code"], 3, "{command}: {}", run.stdout);
        assert!(
            run.json["msg"].as_str().unwrap().contains(&missing),
            "{}",
            run.stdout
        );
    }
    assert!(agent.requests().is_empty(), "no address may be allocated");
    assert!(lxc_links(&node).is_empty());
    // A path that exists but is no namespace: invalid environment.
    let plain = agent.dir.path().join("not-a-netns");
    std::fs::write(&plain, b"").unwrap();
    let run = cni(
        &node,
        "ADD",
        &pod_env("ctr4", plain.to_str().unwrap()),
        &stdin,
    );
    assert_eq!(run.json["code"], 4, "{}", run.stdout);
    assert!(agent.requests().is_empty());
}

#[test]
fn absent_agent_is_try_again_later() {
    if !privileged("absent_agent_is_try_again_later") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let stdin = conf(&socket, json!({}));
    let env = pod_env("ctr5", pod.path.to_str().unwrap());
    let run = cni(&node, "ADD", &env, &stdin);
    assert_eq!(run.code, 1);
    assert_eq!(run.json["code"], 11, "{}", run.stdout);
    assert!(
        run.json["details"]
            .as_str()
            .unwrap()
            .contains("is lumen-agent running on this node?"),
        "{}",
        run.stdout
    );
    assert!(lxc_links(&node).is_empty());
    // DEL still removes what it can, and asks to be retried.
    let run = cni(&node, "DEL", &env, &stdin);
    assert_eq!(run.json["code"], 11, "{}", run.stdout);
    // STATUS says the plugin cannot serve ADDs now.
    let run = cni(
        &node,
        "STATUS",
        &[],
        &conf(&socket, json!({ "cniVersion": "1.1.0" })),
    );
    assert_eq!(run.json["code"], 50, "{}", run.stdout);
}

#[test]
fn a_refused_endpoint_add_is_rolled_back() {
    if !privileged("a_refused_endpoint_add_is_rolled_back") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let agent = TestAgentDouble::start();
    agent.state.lock().unwrap().refuse_endpoint_add = true;
    let stdin = conf(&agent.socket, json!({}));
    let run = cni(
        &node,
        "ADD",
        &pod_env("ctr6", pod.path.to_str().unwrap()),
        &stdin,
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.json["code"], 101, "{}", run.stdout);
    assert!(
        run.json["msg"]
            .as_str()
            .unwrap()
            .contains("test double refuses"),
        "{}",
        run.stdout
    );
    assert!(lxc_links(&node).is_empty(), "veth must be rolled back");
    assert!(pod.link("eth0").is_none());
    assert_eq!(
        agent.allocated(&att("ctr6")),
        None,
        "address must be released"
    );
    let ops: Vec<&'static str> = agent
        .requests()
        .iter()
        .map(|r| match r {
            Request::IpamAllocate { .. } => "allocate",
            Request::EndpointAdd(_) => "add",
            Request::EndpointDel { .. } => "del",
            Request::EndpointGet { .. } => "get",
        })
        .collect();
    assert_eq!(ops, ["allocate", "add", "del"]);
}

#[test]
fn missing_pod_identity_is_code_4_before_anything_happens() {
    if !privileged("missing_pod_identity_is_code_4_before_anything_happens") {
        return;
    }
    let node = node_with_gateway("node", GW);
    let pod = TestNs::new("pod");
    let agent = TestAgentDouble::start();
    let netns = pod.path.to_str().unwrap();
    let env = [
        ("CNI_CONTAINERID", "ctr7"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns),
        ("CNI_ARGS", "IgnoreUnknown=1"),
    ];
    let run = cni(&node, "ADD", &env, &conf(&agent.socket, json!({})));
    assert_eq!(run.json["code"], 4, "{}", run.stdout);
    assert!(
        run.json["msg"]
            .as_str()
            .unwrap()
            .contains("K8S_POD_NAMESPACE"),
        "{}",
        run.stdout
    );
    assert!(agent.requests().is_empty());
    assert!(lxc_links(&node).is_empty());
}
