//! A lab [`Pod`] and the way the lab calls the CNI plugin: exactly like a container runtime
//! (plugin spawned in the node namespace, `CNI_*` environment, network config on stdin, result
//! or error JSON on stdout).

use crate::manifest::{self, Labels, PodManifest};
use crate::netns;
use crate::node::Node;
use crate::process::{self, Spawned};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

/// How long one CNI plugin call may take.
pub const CNI_TIMEOUT: Duration = Duration::from_secs(30);

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// `ADD`: wire the pod.
    Add,
    /// `DEL`: unwire it (idempotent).
    Del,
    /// `CHECK`: verify the wiring.
    Check,
}

impl CniCommand {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// A failed CNI call: the plugin's error JSON (`code`, `msg`, `details`), or what it printed
/// instead. Reach it with `err.downcast_ref::<CniError>()`.
#[derive(Debug, Clone)]
pub struct CniError {
    /// The operation.
    pub command: CniCommand,
    /// `code` of the error JSON, if there was one.
    pub code: Option<u64>,
    /// `msg` of the error JSON (or a description of what went wrong).
    pub msg: String,
    /// `details` of the error JSON.
    pub details: Option<String>,
    /// What the plugin wrote to stderr.
    pub stderr: String,
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI {} failed", self.command.as_str())?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        write!(f, ": {}", self.msg)?;
        if let Some(details) = self.details.as_deref().filter(|d| !d.is_empty()) {
            write!(f, " ({details})")?;
        }
        let stderr = self.stderr.trim();
        if !stderr.is_empty() {
            write!(f, "; plugin stderr: {stderr}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// `CNI_ARGS` for a Kubernetes pod.
pub fn cni_args(namespace: &str, name: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}")
}

/// The network configuration given on stdin; `prev_result` (the ADD result) goes along with
/// CHECK and DEL, as CNI 1.0 runtimes do.
pub fn cni_config(agent_socket: &Path, prev_result: Option<&Value>) -> Value {
    let mut config = json!({
        "cniVersion": "1.0.0",
        "name": "lumen",
        "type": "lumen-cni",
        "agentSocket": agent_socket.to_string_lossy(),
    });
    if let Some(prev) = prev_result {
        config["prevResult"] = prev.clone();
    }
    config
}

/// The pod address of an ADD result: `ips[0].address` without its prefix length.
pub fn result_ip(result: &Value) -> Result<IpAddr> {
    let address = result["ips"][0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("CNI result has no ips[0].address: {result}"))?;
    let ip = address.split('/').next().unwrap_or(address);
    ip.parse()
        .with_context(|| format!("CNI result address {address:?}"))
}

/// What a runtime knows of one pod sandbox: enough to call the plugin and clean up.
pub(crate) struct PodRecord {
    node: Node,
    netns: String,
    container_id: String,
    namespace: String,
    name: String,
    manifest_file: String,
    add_result: Option<Value>,
}

impl PodRecord {
    fn call(&self, command: CniCommand, timeout: Duration) -> Result<Option<Value>> {
        let prev = if command == CniCommand::Add {
            None
        } else {
            self.add_result.as_ref()
        };
        invoke_cni(
            &self.node,
            command,
            &self.container_id,
            &self.netns,
            &self.namespace,
            &self.name,
            prev,
            timeout,
        )
    }

    /// CNI DEL (best effort), delete the namespace, remove the manifest.
    pub(crate) fn teardown(self) {
        if let Err(e) = self.call(CniCommand::Del, Duration::from_secs(10)) {
            eprintln!(
                "lab: CNI DEL of pod {}/{} (best effort): {e:#}",
                self.namespace, self.name
            );
        }
        if let Err(e) = self.node.lab.delete_netns(&self.netns) {
            eprintln!("lab: deleting netns {}: {e:#}", self.netns);
        }
        let _ = std::fs::remove_file(self.node.lab.manifests_dir().join(&self.manifest_file));
    }
}

/// A pod: its own namespace wired by the CNI plugin. Dropping it does CNI DEL (best effort),
/// deletes the namespace and removes its manifest; dropping the lab does the same.
pub struct Pod {
    node: Node,
    seq: u64,
    ip: IpAddr,
    netns: String,
    namespace: String,
    name: String,
    container_id: String,
    result: Value,
}

impl Pod {
    pub(crate) fn create(node: &Node, namespace: &str, name: &str, labels: &Labels) -> Result<Pod> {
        let lab = &node.lab;
        lab.ensure_alive()?;
        netns::validate_dns_label(namespace, 63)
            .with_context(|| format!("invalid namespace {namespace:?}"))?;
        netns::validate_dns_label(name, 63)
            .with_context(|| format!("invalid pod name {name:?}"))?;
        let manifest_file = manifest::pod_file(namespace, name);
        if lab
            .lock()
            .pods
            .values()
            .any(|p| p.manifest_file == manifest_file)
        {
            bail!("pod {namespace}/{name} already exists (or another pod with manifest {manifest_file})");
        }
        let seq = lab.next_seq();
        let container_id = format!("{}-c{seq}", lab.id);
        let netns_name = netns::pod_netns_name(&lab.id, node.name(), seq, name);
        let mut pod_manifest = PodManifest {
            namespace,
            name,
            uid: &container_id,
            labels,
            node_name: node.name(),
            host_ip: node.ip(),
            pod_ip: None,
        };
        // As Kubernetes does: the Pod object exists (scheduled, no IP) before the runtime calls CNI ADD.
        lab.ensure_namespace(namespace)?;
        manifest::write_atomic(
            &lab.manifests_dir(),
            &manifest_file,
            &manifest::pod_yaml(&pod_manifest),
        )?;
        let mut record = PodRecord {
            node: node.clone(),
            netns: netns_name.clone(),
            container_id: container_id.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            manifest_file: manifest_file.clone(),
            add_result: None,
        };
        let added = lab
            .create_netns(&netns_name)
            .and_then(|()| {
                record
                    .call(CniCommand::Add, CNI_TIMEOUT)?
                    .ok_or_else(|| anyhow!("CNI ADD printed no result"))
            })
            .and_then(|result| Ok((result_ip(&result)?, result)));
        let (ip, result) = match added {
            Ok(added) => added,
            Err(e) => {
                // A runtime cleans up a failed ADD with a DEL.
                record.teardown();
                return Err(e.context(format!("adding pod {namespace}/{name} on {}", node.name())));
            }
        };
        record.add_result = Some(result.clone());
        pod_manifest.pod_ip = Some(ip);
        let written = manifest::write_atomic(
            &lab.manifests_dir(),
            &manifest_file,
            &manifest::pod_yaml(&pod_manifest),
        );
        if let Err(e) = written {
            record.teardown();
            return Err(e);
        }
        lab.lock().pods.insert(seq, record);
        Ok(Pod {
            node: node.clone(),
            seq,
            ip,
            netns: netns_name,
            namespace: namespace.to_string(),
            name: name.to_string(),
            container_id,
            result,
        })
    }

    /// Its address (from the CNI result).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Its namespace (the network one).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The node it runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Its Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `CNI_CONTAINERID` used for it.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The CNI ADD result (`ips`, `interfaces`, …).
    pub fn cni_result(&self) -> &Value {
        &self.result
    }

    /// Calls the plugin for this pod (with the ADD result as `prevResult` for CHECK and DEL);
    /// returns what it printed on success (`None` for an empty stdout). A plugin error is a
    /// [`CniError`].
    pub fn cni(&self, command: CniCommand) -> Result<Option<Value>> {
        let prev = if command == CniCommand::Add {
            None
        } else {
            Some(&self.result)
        };
        invoke_cni(
            &self.node,
            command,
            &self.container_id,
            &self.netns,
            &self.namespace,
            &self.name,
            prev,
            CNI_TIMEOUT,
        )
    }

    /// A [`std::process::Command`] for `program` that runs inside this pod's namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<std::process::Command> {
        netns::netns_command(&self.netns, program)
    }

    /// Runs `program args…` inside the pod namespace and waits for it.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        process::exec_in(&self.netns, program, args)
    }

    /// Like [`Pod::exec`]; a non-zero exit is an error (with stdout and stderr). Returns stdout.
    pub fn exec_ok<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        process::exec_ok_in(&self.netns, program, args)
    }

    /// Starts `program args…` inside the pod namespace; output goes to a log file.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let label = format!("{}-{}-{}", self.node.name(), self.namespace, self.name);
        process::spawn_in(&self.node.lab, &self.netns, &label, program, args)
    }

    /// Starts `lab-traffic serve <args>` in the pod and waits until it listens, e.g.
    /// `pod.serve(&["--tcp", "8080"])`.
    pub fn serve(&self, args: &[&str]) -> Result<Spawned> {
        let mut server = self.spawn(
            crate::traffic_bin()?,
            std::iter::once("serve").chain(args.iter().copied()),
        )?;
        server.wait_for_output("listening", Duration::from_secs(5))?;
        Ok(server)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let record = self.node.lab.lock().pods.remove(&self.seq);
        if let Some(record) = record {
            record.teardown();
        }
    }
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("node", &self.node.name())
            .field("ip", &self.ip)
            .field("netns", &self.netns)
            .finish()
    }
}

/// Runs `lumen-cni` in the node namespace as a runtime would.
#[allow(clippy::too_many_arguments)]
fn invoke_cni(
    node: &Node,
    command: CniCommand,
    container_id: &str,
    pod_netns: &str,
    namespace: &str,
    name: &str,
    prev_result: Option<&Value>,
    timeout: Duration,
) -> Result<Option<Value>> {
    let bin = process::find_binary("lumen-cni")?;
    let bin_dir = bin.parent().unwrap_or(Path::new("/"));
    let config = cni_config(&node.agent_socket(), prev_result);
    let mut child = netns::netns_command(node.netns(), &bin)?
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns::netns_path(pod_netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", cni_args(namespace, name))
        .env("CNI_PATH", bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading stdin is reported through its exit status.
        let _ = stdin.write_all(config.to_string().as_bytes());
    }
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    })
    .collect();
    let status = process::wait_timeout(&mut child, timeout)?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut outputs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    let (stdout, stderr) = (
        outputs.next().unwrap_or_default(),
        outputs.next().unwrap_or_default(),
    );
    let fail = |code: Option<u64>, msg: String, details: Option<String>| CniError {
        command,
        code,
        msg,
        details,
        stderr: stderr.clone(),
    };
    let Some(status) = status else {
        return Err(fail(
            None,
            format!("plugin still running after {timeout:?}, killed"),
            None,
        )
        .into());
    };
    if !status.success() {
        let err = match serde_json::from_str::<Value>(&stdout) {
            Ok(v) if v.get("msg").is_some() || v.get("code").is_some() => fail(
                v["code"].as_u64(),
                v["msg"].as_str().unwrap_or("(no msg)").to_string(),
                v["details"].as_str().map(str::to_string),
            ),
            _ => fail(
                None,
                format!("plugin exited with {status}; stdout: {}", stdout.trim()),
                None,
            ),
        };
        return Err(err.into());
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    let value = serde_json::from_str(&stdout).map_err(|e| {
        fail(
            None,
            format!("plugin printed invalid JSON ({e}): {}", stdout.trim()),
            None,
        )
    })?;
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_for_a_pod() {
        assert_eq!(
            cni_args("demo", "client"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=client"
        );
    }

    #[test]
    fn cni_config_with_and_without_prev_result() {
        let sock = Path::new("/tmp/lumen-lab/lum1-0/node1/agent.sock");
        let config = cni_config(sock, None);
        assert_eq!(
            config,
            json!({"cniVersion": "1.0.0", "name": "lumen", "type": "lumen-cni", "agentSocket": "/tmp/lumen-lab/lum1-0/node1/agent.sock"})
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.100.1.5/32"}]});
        assert_eq!(cni_config(sock, Some(&prev))["prevResult"], prev);
    }

    #[test]
    fn ip_of_a_result() {
        let result = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.100.1.5/32", "interface": 0}]});
        assert_eq!(
            result_ip(&result).unwrap(),
            "10.100.1.5".parse::<IpAddr>().unwrap()
        );
        assert!(result_ip(&json!({"ips": []})).is_err());
    }

    #[test]
    fn cni_error_message_surfaces_msg() {
        let err = CniError {
            command: CniCommand::Add,
            code: Some(11),
            msg: "agent not reachable".into(),
            details: Some("connect: no such file".into()),
            stderr: String::new(),
        };
        assert_eq!(
            err.to_string(),
            "CNI ADD failed (code 11): agent not reachable (connect: no such file)"
        );
    }
}
