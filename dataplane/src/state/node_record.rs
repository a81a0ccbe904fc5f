//! This node's own `CiliumNode` record in the state source's status directory
//! (`<manifestsDir>/status/ciliumnode.<node>.yaml`): where an agent publishes what other
//! agents need to know about its node — the pod CIDR cluster-pool IPAM claimed
//! (`spec.ipam.podCIDRs`) and the WireGuard public key (annotation
//! `network.cilium.io/wg-pub-key`). Writers change their own part and keep the rest;
//! callers hold the status directory's lock ([`super::lock::FileLock`]).

use super::lock::write_atomic;
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

/// File name of a node's record in the status directory.
pub fn file_name(node: &str) -> String {
    format!("ciliumnode.{node}.yaml")
}

/// The record's path.
pub fn path(status_dir: &Path, node: &str) -> PathBuf {
    status_dir.join(file_name(node))
}

fn child<'a>(map: &'a mut Mapping, key: &str) -> &'a mut Mapping {
    let slot = map
        .entry(Value::from(key))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    slot.as_mapping_mut().expect("made a mapping above")
}

/// Reads `node`'s record (a missing or unreadable one starts empty), lets `change` edit
/// it, and writes it back atomically if it changed. Returns whether it was written.
pub fn modify(
    status_dir: &Path,
    node: &str,
    change: impl FnOnce(&mut Mapping),
) -> std::io::Result<bool> {
    let path = path(status_dir, node);
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // A record that does not parse is replaced: its owner (this agent) rewrites it whole.
    let mut doc = old
        .as_deref()
        .and_then(|t| serde_yaml::from_str::<Value>(t).ok())
        .and_then(|v| match v {
            Value::Mapping(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    doc.insert("apiVersion".into(), "cilium.io/v2".into());
    doc.insert("kind".into(), "CiliumNode".into());
    child(&mut doc, "metadata").insert("name".into(), node.into());
    change(&mut doc);
    let text = serde_yaml::to_string(&doc).map_err(std::io::Error::other)?;
    if old.as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    write_atomic(&path, &text)?;
    Ok(true)
}

/// Sets `spec.ipam.podCIDRs`.
pub fn set_pod_cidrs(doc: &mut Mapping, cidrs: &[String]) {
    let ipam = child(child(doc, "spec"), "ipam");
    ipam.insert(
        "podCIDRs".into(),
        Value::Sequence(cidrs.iter().map(|c| Value::from(c.as_str())).collect()),
    );
}

/// Sets (or with `None` removes) the annotation `key`.
pub fn set_annotation(doc: &mut Mapping, key: &str, value: Option<&str>) {
    let annotations = child(child(doc, "metadata"), "annotations");
    match value {
        Some(v) => {
            annotations.insert(key.into(), v.into());
        }
        None => {
            annotations.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_writer_keeps_the_others_part() {
        let dir = tempfile::tempdir().unwrap();
        assert!(modify(dir.path(), "n1", |d| set_pod_cidrs(
            d,
            &["10.100.0.0/24".into()]
        ))
        .unwrap());
        assert!(modify(dir.path(), "n1", |d| set_annotation(
            d,
            "network.cilium.io/wg-pub-key",
            Some("K=")
        ))
        .unwrap());
        // Unchanged: not rewritten.
        assert!(!modify(dir.path(), "n1", |d| set_pod_cidrs(
            d,
            &["10.100.0.0/24".into()]
        ))
        .unwrap());
        let text = std::fs::read_to_string(path(dir.path(), "n1")).unwrap();
        let objs = crate::state::manifests::parse_objects(&path(dir.path(), "n1"), &text).unwrap();
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].metadata.name, "n1");
        assert_eq!(
            objs[0]
                .metadata
                .annotations
                .get("network.cilium.io/wg-pub-key")
                .map(String::as_str),
            Some("K=")
        );
        assert!(
            text.contains("10.100.0.0/24") && text.contains("kind: CiliumNode"),
            "{text}"
        );
    }
}
