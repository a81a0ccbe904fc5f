//! The state source: Kubernetes manifests (one object per YAML file) that the lab writes into
//! `<labdir>/manifests/`, where every node's agent reads the cluster state. Files are replaced
//! atomically (temporary file, then rename) so an agent never reads half an object.

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// Labels, sorted so the rendered YAML is stable.
pub type Labels = BTreeMap<String, String>;

/// Turns `[("app", "web")]` into [`Labels`].
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A `v1 Node`: its labels (the lab adds `kubernetes.io/hostname` and `kubernetes.io/os`),
/// `spec.podCIDR` and its underlay address as the `InternalIP`.
pub fn node_yaml(
    name: &str,
    extra_labels: &Labels,
    pod_cidr: &str,
    internal_ip: Ipv4Addr,
) -> String {
    let mut labels = extra_labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    render(&json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": labels },
        "spec": { "podCIDR": pod_cidr, "podCIDRs": [pod_cidr] },
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": internal_ip.to_string() },
                { "type": "Hostname", "address": name },
            ]
        }
    }))
}

/// A `v1 Namespace`, labelled `kubernetes.io/metadata.name` as the API server does.
pub fn namespace_yaml(name: &str, extra_labels: &Labels) -> String {
    let mut labels = extra_labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), name.into());
    render(&json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    }))
}

/// What a `v1 Pod` manifest says about a pod.
#[derive(Debug, Clone)]
pub struct PodManifest<'a> {
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.uid`.
    pub uid: &'a str,
    /// `metadata.labels`.
    pub labels: &'a Labels,
    /// `spec.nodeName`.
    pub node_name: &'a str,
    /// `status.hostIP`: the node's underlay address.
    pub host_ip: Ipv4Addr,
    /// `status.podIP`, once the CNI plugin has given it one (phase `Running`; before: `Pending`).
    pub pod_ip: Option<IpAddr>,
}

/// A `v1 Pod` (without `ownerReferences`).
pub fn pod_yaml(pod: &PodManifest<'_>) -> String {
    let mut status = Map::new();
    status.insert("hostIP".into(), json!(pod.host_ip.to_string()));
    match pod.pod_ip {
        Some(ip) => {
            status.insert("phase".into(), json!("Running"));
            status.insert("podIP".into(), json!(ip.to_string()));
            status.insert("podIPs".into(), json!([{ "ip": ip.to_string() }]));
        }
        None => {
            status.insert("phase".into(), json!("Pending"));
        }
    }
    render(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "labels": pod.labels,
        },
        "spec": {
            "nodeName": pod.node_name,
            "containers": [{ "name": "main", "image": "lumen/lab-traffic" }],
        },
        "status": status,
    }))
}

/// File name of a Node manifest.
pub fn node_file(name: &str) -> String {
    format!("node-{name}.yaml")
}

/// An EndpointSlice of Service `namespace/service` on `port`/`protocol` whose endpoints
/// are `(address, nodeName)` pairs, all ready.
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    port: u16,
    protocol: &str,
    endpoints: &[(String, Option<String>)],
) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|(ip, node)| {
            let node = node
                .as_ref()
                .map(|n| format!("  nodeName: {n}\n"))
                .unwrap_or_default();
            format!("- addresses: [{ip}]\n{node}  conditions: {{ready: true}}\n")
        })
        .collect();
    let endpoints = if endpoints.is_empty() {
        " []\n".to_string()
    } else {
        format!("\n{endpoints}")
    };
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
ports: [{{port: {port}, protocol: {protocol}}}]
endpoints:{endpoints}"
    )
}

/// File name of a Namespace manifest.
pub fn namespace_file(name: &str) -> String {
    format!("ns-{name}.yaml")
}

/// File name of a Pod manifest.
pub fn pod_file(namespace: &str, name: &str) -> String {
    format!("pod-{namespace}-{name}.yaml")
}

/// Replaces `dir/file_name` atomically: writes a hidden temporary file, syncs it, renames it.
pub fn write_atomic(dir: &Path, file_name: &str, contents: &str) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let target = dir.join(file_name);
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("renaming into {}", target.display()))?;
    Ok(())
}

fn render(value: &Value) -> String {
    // A json Value always serialises.
    serde_yaml::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_manifest() {
        let yaml = node_yaml(
            "node1",
            &labels(&[("zone", "a")]),
            "10.100.1.0/24",
            Ipv4Addr::new(192, 168, 77, 1),
        );
        assert_eq!(
            yaml,
            "\
apiVersion: v1
kind: Node
metadata:
  labels:
    kubernetes.io/hostname: node1
    kubernetes.io/os: linux
    zone: a
  name: node1
spec:
  podCIDR: 10.100.1.0/24
  podCIDRs:
  - 10.100.1.0/24
status:
  addresses:
  - address: 192.168.77.1
    type: InternalIP
  - address: node1
    type: Hostname
"
        );
    }

    #[test]
    fn namespace_manifest() {
        let yaml = namespace_yaml("demo", &Labels::new());
        let v: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["metadata"]["name"], "demo");
        assert_eq!(
            v["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "demo"
        );
    }

    #[test]
    fn pod_manifest_before_and_after_cni() {
        let labels = labels(&[("app", "client")]);
        let mut pod = PodManifest {
            namespace: "demo",
            name: "client",
            uid: "lum1-0-1",
            labels: &labels,
            node_name: "node1",
            host_ip: Ipv4Addr::new(192, 168, 77, 1),
            pod_ip: None,
        };
        let v: Value = serde_yaml::from_str(&pod_yaml(&pod)).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["metadata"]["namespace"], "demo");
        assert_eq!(v["metadata"]["labels"]["app"], "client");
        assert_eq!(v["spec"]["nodeName"], "node1");
        assert_eq!(v["status"]["phase"], "Pending");
        assert!(v["status"].get("podIP").is_none());

        pod.pod_ip = Some("10.100.1.5".parse().unwrap());
        let v: Value = serde_yaml::from_str(&pod_yaml(&pod)).unwrap();
        assert_eq!(v["status"]["podIP"], "10.100.1.5");
        assert_eq!(v["status"]["podIPs"][0]["ip"], "10.100.1.5");
        assert_eq!(v["status"]["hostIP"], "192.168.77.1");
        assert_eq!(v["status"]["phase"], "Running");
    }

    #[test]
    fn file_names_and_atomic_write() {
        assert_eq!(node_file("node1"), "node-node1.yaml");
        assert_eq!(namespace_file("demo"), "ns-demo.yaml");
        assert_eq!(pod_file("demo", "client"), "pod-demo-client.yaml");
        let dir = std::env::temp_dir().join(format!("lumen-manifest-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_atomic(&dir, "a.yaml", "one").unwrap();
        write_atomic(&dir, "a.yaml", "two").unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.yaml"]);
        assert_eq!(std::fs::read_to_string(dir.join("a.yaml")).unwrap(), "two");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
