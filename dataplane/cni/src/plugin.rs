//! The plugin's command dispatch: turns one invocation (environment + stdin) into the
//! stdout text and exit code the runtime expects. `ADD` allocates through the agent,
//! wires the veth pair and registers the endpoint, undoing everything if a step fails;
//! `DEL` unregisters and unwires, idempotently; `CHECK` compares the agent's record,
//! `prevResult` and the live interfaces.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::client::AgentClient;
use crate::protocol::{Attachment, EndpointSpec, IpamResult, Request, Response};
use crate::spec::{
    sniff_version, CniError, CniResult, CniVersion, Command, DelTarget, Dns, ErrorReply, Interface,
    IpConfig, NetConf, Route, Target, VersionInfo, FALLBACK_VERSION,
};
use crate::wire::{self, WireSpec};

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Everything for stdout (a JSON document, or empty).
    pub stdout: String,
    /// 0 on success, 1 on error.
    pub exit_code: i32,
}

/// A failure plus what rolling back could not undo.
struct Failure {
    // Boxed: every command returns Result<_, Failure> and CniError is large.
    error: Box<CniError>,
    rollback: Vec<String>,
}

impl From<CniError> for Failure {
    fn from(error: CniError) -> Failure {
        Failure {
            error: Box::new(error),
            rollback: Vec::new(),
        }
    }
}

/// What a successful command leaves for stdout and the log.
struct Done {
    stdout: String,
    log: String,
}

/// Runs one invocation: `env` reads `CNI_*` variables, `stdin` is the network config.
pub fn run(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let started = Instant::now();
    let answer_version = sniff_version(stdin).unwrap_or_else(|| FALLBACK_VERSION.to_string());
    let command = match Command::from_env(env) {
        Ok(command) => command,
        Err(error) => {
            let conf = NetConf::parse(stdin).ok();
            return finish(
                conf.as_ref(),
                "?",
                "",
                &answer_version,
                Err(error.into()),
                started,
            );
        }
    };
    if command == Command::Version {
        let info = VersionInfo::new(sniff_version(stdin).as_deref());
        return Outcome {
            stdout: json_line(&info),
            exit_code: 0,
        };
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        Err(error) => {
            return finish(
                None,
                command.name(),
                "",
                &answer_version,
                Err(error.into()),
                started,
            )
        }
    };
    let who = describe(&command);
    let result = match &command {
        Command::Add(target) => add(&conf, target),
        Command::Del(target) => del(&conf, target),
        Command::Check(target) => check(&conf, target),
        Command::Status => status(&conf),
        // Stale attachments are released by DEL; a GC that can enumerate the agent's
        // endpoints needs a protocol request the agent does not offer yet.
        Command::Gc => Ok(Done {
            stdout: String::new(),
            log: "nothing to collect".into(),
        }),
        Command::Version => unreachable!("answered above"),
    };
    finish(
        Some(&conf),
        command.name(),
        &who,
        &conf.cni_version,
        result,
        started,
    )
}

fn finish(
    conf: Option<&NetConf>,
    command: &str,
    who: &str,
    version: &str,
    result: Result<Done, Failure>,
    started: Instant,
) -> Outcome {
    let (outcome, summary) = match result {
        Ok(done) => (
            Outcome {
                stdout: done.stdout,
                exit_code: 0,
            },
            format!("ok {}", done.log),
        ),
        Err(failure) => {
            let mut reply = ErrorReply::from_error(version, &failure.error);
            if !failure.rollback.is_empty() {
                let notes = format!("rollback incomplete: {}", failure.rollback.join("; "));
                reply.details = if reply.details.is_empty() {
                    notes
                } else {
                    format!("{}; {notes}", reply.details)
                };
            }
            let summary = format!("error {}: {} ({})", reply.code, reply.msg, reply.details);
            (
                Outcome {
                    stdout: json_line(&reply),
                    exit_code: 1,
                },
                summary,
            )
        }
    };
    if let Some(path) = conf.and_then(|c| c.log_file.as_deref()) {
        log_line(path, command, who, &summary, started);
    }
    outcome
}

fn json_line<T: serde::Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail (string keys, no custom impls).
    let mut text = serde_json::to_string(value).unwrap_or_default();
    text.push('\n');
    text
}

fn describe(command: &Command) -> String {
    let (id, ifname, netns, args) = match command {
        Command::Add(t) | Command::Check(t) => (
            &t.container_id,
            &t.ifname,
            t.netns.display().to_string(),
            &t.args,
        ),
        Command::Del(t) => (
            &t.container_id,
            &t.ifname,
            t.netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            &t.args,
        ),
        _ => return String::new(),
    };
    let pod = match (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) {
        (Some(ns), Some(name)) => format!(" pod={ns}/{name}"),
        _ => String::new(),
    };
    format!("container={id} ifname={ifname} netns={netns}{pod}")
}

/// Appends one line; the log is a convenience, so failing to write it fails nothing
/// (stdout is the protocol, stderr is what runtimes keep).
fn log_line(path: &Path, command: &str, who: &str, summary: &str, started: Instant) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "{}.{:03} lumen-cni {command} {who} -> {summary} [{} ms]\n",
        now.as_secs(),
        now.subsec_millis(),
        started.elapsed().as_millis()
    );
    let written = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "lumen-cni: cannot append to log file {}: {e}",
            path.display()
        );
    }
}

fn attachment(container_id: &str, ifname: &str) -> Attachment {
    Attachment {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
    }
}

/// Sends `request`, mapping transport failures and `Response::Error` to CNI errors.
fn ask(client: &AgentClient, request: Request, name: &'static str) -> Result<Response, CniError> {
    match client.call(&request).map_err(CniError::from_client)? {
        Response::Error { message } => Err(CniError::AgentRefused {
            request: name,
            message,
        }),
        answer => Ok(answer),
    }
}

fn unexpected(request: &'static str, answer: &Response) -> CniError {
    let kind = match answer {
        Response::Allocated(_) => "allocated",
        Response::EndpointAdded { .. } => "endpoint_added",
        Response::EndpointDeleted { .. } => "endpoint_deleted",
        Response::Endpoint { .. } => "endpoint",
        Response::Error { .. } => "error",
    };
    CniError::AgentUnexpected {
        request,
        answer: kind.to_string(),
    }
}

fn add(conf: &NetConf, target: &Target) -> Result<Done, Failure> {
    let (pod_namespace, pod_name) = target.args.pod()?;
    // Checked before allocating so a vanished pod costs no address and no rollback.
    wire::Netns::open(&target.netns).map_err(CniError::from_wire)?;

    let client = AgentClient::new(&conf.agent_socket);
    let attachment = attachment(&target.container_id, &target.ifname);
    let allocated = match ask(
        &client,
        Request::IpamAllocate {
            attachment: attachment.clone(),
            pod_namespace: pod_namespace.clone(),
            pod_name: pod_name.clone(),
        },
        "IpamAllocate",
    )? {
        Response::Allocated(result) => result,
        other => return Err(unexpected("IpamAllocate", &other).into()),
    };

    let spec = WireSpec {
        container_id: target.container_id.clone(),
        ifname: target.ifname.clone(),
        netns: target.netns.clone(),
        ip: allocated.ip,
        gateway: allocated.gateway,
        mtu: allocated.mtu.unwrap_or(conf.mtu),
    };
    let host_ifname = spec.host_ifname();
    let rollback = |error: CniError| Failure {
        error: Box::new(error),
        rollback: undo(&client, &attachment, &host_ifname),
    };
    let wired = wire::setup(&spec).map_err(|e| rollback(CniError::from_wire(e)))?;

    let endpoint = EndpointSpec {
        attachment: attachment.clone(),
        netns: target.netns.display().to_string(),
        host_ifname: wired.host_ifname.clone(),
        host_ifindex: wired.host_ifindex,
        ip: allocated.ip,
        mac: wired.pod_mac.clone(),
        pod_namespace,
        pod_name,
    };
    let endpoint_id = match ask(&client, Request::EndpointAdd(endpoint), "EndpointAdd") {
        Ok(Response::EndpointAdded { endpoint_id }) => endpoint_id,
        Ok(other) => return Err(rollback(unexpected("EndpointAdd", &other))),
        Err(error) => return Err(rollback(error)),
    };

    let result = add_result(conf, target, &allocated, &wired);
    Ok(Done {
        stdout: json_line(&result),
        log: format!(
            "ip={} veth={} ifindex={} endpoint={endpoint_id}{}",
            allocated.ip,
            wired.host_ifname,
            wired.host_ifindex,
            if wired.reused { " (reused)" } else { "" }
        ),
    })
}

/// Undoes a partial ADD; returns what could not be undone. The agent hears first, as
/// on DEL, so it can detach from the veth while the veth still exists.
fn undo(client: &AgentClient, attachment: &Attachment, host_ifname: &str) -> Vec<String> {
    let mut left = Vec::new();
    match client.call(&Request::EndpointDel {
        attachment: attachment.clone(),
    }) {
        Ok(Response::EndpointDeleted { .. }) => {}
        Ok(Response::Error { message }) => left.push(format!(
            "EndpointDel refused: {message} (the address stays allocated until DEL)"
        )),
        Ok(other) => left.push(unexpected("EndpointDel", &other).to_string()),
        Err(e) => left.push(format!(
            "EndpointDel: {e} (the address stays allocated until DEL)"
        )),
    }
    if let Err(e) = wire::teardown(host_ifname) {
        left.push(format!("deleting veth {host_ifname}: {e}"));
    }
    left
}

fn add_result(
    conf: &NetConf,
    target: &Target,
    allocated: &IpamResult,
    wired: &wire::Wired,
) -> CniResult {
    let any = match allocated.gateway {
        IpAddr::V4(_) => IpNet::V4(Default::default()),
        IpAddr::V6(_) => IpNet::V6(Default::default()),
    };
    CniResult {
        cni_version: String::new(),
        interfaces: vec![
            Interface {
                name: wired.host_ifname.clone(),
                mac: wired.host_mac.clone(),
                sandbox: None,
            },
            Interface {
                name: target.ifname.clone(),
                mac: wired.pod_mac.clone(),
                sandbox: Some(target.netns.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            version: None,
            // What is configured on the interface: a host route, not the node's pod CIDR.
            address: IpNet::from(allocated.ip),
            gateway: Some(allocated.gateway),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: any,
            gw: Some(allocated.gateway),
        }],
        dns: Dns::default(),
    }
    .for_version(conf.version())
}

fn del(conf: &NetConf, target: &DelTarget) -> Result<Done, Failure> {
    let client = AgentClient::new(&conf.agent_socket);
    let computed = wire::host_veth_name(&target.container_id, &target.ifname);
    let forgotten = ask(
        &client,
        Request::EndpointDel {
            attachment: attachment(&target.container_id, &target.ifname),
        },
        "EndpointDel",
    )
    .and_then(|answer| match answer {
        Response::EndpointDeleted { spec } => Ok(spec),
        other => Err(unexpected("EndpointDel", &other)),
    });

    // The veth goes even when the agent is unreachable: the runtime retries DEL, and
    // the retry must not find a half-present pod.
    let mut names = vec![computed];
    if let Ok(Some(spec)) = &forgotten {
        if !names.contains(&spec.host_ifname) {
            names.push(spec.host_ifname.clone());
        }
    }
    let mut deleted = Vec::new();
    for name in &names {
        if wire::teardown(name).map_err(|e| Failure::from(CniError::from_wire(e)))? {
            deleted.push(name.as_str());
        }
    }
    let known = forgotten?;
    Ok(Done {
        stdout: String::new(),
        log: format!(
            "agent {} deleted={}",
            if known.is_some() {
                "forgot endpoint"
            } else {
                "knew nothing"
            },
            if deleted.is_empty() {
                "none".to_string()
            } else {
                deleted.join(",")
            }
        ),
    })
}

fn check(conf: &NetConf, target: &Target) -> Result<Done, Failure> {
    if conf.version() < CniVersion::V0_4_0 {
        return Err(CniError::CheckNeedsNewerVersion {
            version: conf.cni_version.clone(),
        }
        .into());
    }
    wire::Netns::open(&target.netns).map_err(CniError::from_wire)?;
    let client = AgentClient::new(&conf.agent_socket);
    let recorded = match ask(
        &client,
        Request::EndpointGet {
            attachment: attachment(&target.container_id, &target.ifname),
        },
        "EndpointGet",
    )? {
        Response::Endpoint {
            spec: Some(spec), ..
        } => spec,
        Response::Endpoint { spec: None, .. } => {
            return Err(CniError::CheckUnknownEndpoint {
                container_id: target.container_id.clone(),
                ifname: target.ifname.clone(),
            }
            .into())
        }
        other => return Err(unexpected("EndpointGet", &other).into()),
    };

    let prev: CniResult = conf
        .prev_result
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or(CniError::CheckPrevResultMissing {
            problem: "prevResult is absent or malformed",
        })?;
    let ours = prev.ips.iter().find(|ip| ip.address.addr() == recorded.ip);
    let Some(ours) = ours else {
        let listed: Vec<String> = prev.ips.iter().map(|ip| ip.address.to_string()).collect();
        return Err(CniError::CheckPrevResult {
            listed: format!("[{}]", listed.join(", ")),
            recorded: recorded.ip,
        }
        .into());
    };
    let gateway = ours
        .gateway
        .or_else(|| {
            prev.routes
                .iter()
                .find(|r| r.dst.prefix_len() == 0)
                .and_then(|r| r.gw)
        })
        .ok_or(CniError::CheckPrevResultMissing {
            problem: "no gateway for the pod's address",
        })?;

    let spec = WireSpec {
        container_id: target.container_id.clone(),
        ifname: target.ifname.clone(),
        netns: target.netns.clone(),
        ip: recorded.ip,
        gateway,
        mtu: conf.mtu,
    };
    let live = wire::verify(&spec).map_err(CniError::from_wire)?;
    let mismatch = |what, recorded: String, live: String| {
        Failure::from(CniError::CheckAgentMismatch {
            what,
            recorded,
            live,
        })
    };
    if live.host_ifname != recorded.host_ifname {
        return Err(mismatch(
            "host veth",
            recorded.host_ifname,
            live.host_ifname,
        ));
    }
    if live.host_ifindex != recorded.host_ifindex {
        return Err(mismatch(
            "host ifindex",
            recorded.host_ifindex.to_string(),
            live.host_ifindex.to_string(),
        ));
    }
    if !live.pod_mac.eq_ignore_ascii_case(&recorded.mac) {
        return Err(mismatch("pod MAC", recorded.mac, live.pod_mac));
    }
    Ok(Done {
        stdout: String::new(),
        log: format!("ip={} veth={}", recorded.ip, live.host_ifname),
    })
}

fn status(conf: &NetConf) -> Result<Done, Failure> {
    AgentClient::new(&conf.agent_socket)
        .probe()
        .map_err(|e| Failure::from(CniError::NotAvailable(e)))?;
    Ok(Done {
        stdout: String::new(),
        log: "agent reachable".into(),
    })
}

/// The outcome for a failure before any command ran (e.g. stdin unreadable).
pub fn failed(error: CniError) -> Outcome {
    let reply = ErrorReply::from_error(FALLBACK_VERSION, &error);
    Outcome {
        stdout: json_line(&reply),
        exit_code: 1,
    }
}
