//! The pods wired into this node (registered by the CNI plugin), persisted so a restarted
//! agent knows them again, each with a small node-local endpoint id (Hubble's `Endpoint.ID`).

use lumen_cni::protocol::{Attachment, EndpointSpec};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

/// Errors of the endpoint store.
#[derive(Debug, thiserror::Error)]
pub enum EndpointStoreError {
    /// Reading or writing the state file failed.
    #[error("endpoint state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state file is not what this agent wrote.
    #[error("endpoint state {path} is corrupt ({source}); move it away to start with no endpoints (pods must then be re-added)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What serde said.
        source: serde_json::Error,
    },
    /// All 65535 endpoint ids are in use.
    #[error("no free endpoint id")]
    Exhausted,
}

/// One wired pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    /// Node-local id.
    pub id: u32,
    /// What the plugin registered.
    pub spec: EndpointSpec,
}

/// The persisted set of local endpoints.
pub struct EndpointStore {
    path: PathBuf,
    endpoints: BTreeMap<String, LocalEndpoint>,
}

fn key(a: &Attachment) -> String {
    format!("{}/{}", a.container_id, a.ifname)
}

impl EndpointStore {
    /// Opens (or starts) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, EndpointStoreError> {
        let endpoints = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| EndpointStoreError::Corrupt {
                    path: path.into(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(EndpointStoreError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        Ok(EndpointStore {
            path: path.into(),
            endpoints,
        })
    }

    fn save(&self) -> Result<(), EndpointStoreError> {
        let io = |source| EndpointStoreError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(&self.endpoints).expect("serializable"))
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Registers (or re-registers, keeping its id) an endpoint.
    pub fn add(&mut self, spec: EndpointSpec) -> Result<u32, EndpointStoreError> {
        let k = key(&spec.attachment);
        let id = match self.endpoints.get(&k) {
            Some(e) => e.id,
            None => {
                let used: std::collections::BTreeSet<u32> =
                    self.endpoints.values().map(|e| e.id).collect();
                (1..=65535)
                    .find(|i| !used.contains(i))
                    .ok_or(EndpointStoreError::Exhausted)?
            }
        };
        self.endpoints.insert(k, LocalEndpoint { id, spec });
        self.save()?;
        Ok(id)
    }

    /// Forgets an endpoint, returning it.
    pub fn remove(&mut self, a: &Attachment) -> Result<Option<LocalEndpoint>, EndpointStoreError> {
        let removed = self.endpoints.remove(&key(a));
        if removed.is_some() {
            self.save()?;
        }
        Ok(removed)
    }

    /// Looks an endpoint up.
    pub fn get(&self, a: &Attachment) -> Option<&LocalEndpoint> {
        self.endpoints.get(&key(a))
    }

    /// All endpoints.
    pub fn all(&self) -> impl Iterator<Item = &LocalEndpoint> {
        self.endpoints.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(c: &str, ip: &str) -> EndpointSpec {
        EndpointSpec {
            attachment: Attachment {
                container_id: c.into(),
                ifname: "eth0".into(),
            },
            netns: "/run/netns/x".into(),
            host_ifname: format!("lxc{c}"),
            host_ifindex: 9,
            ip: ip.parse().unwrap(),
            mac: "02:00:00:00:00:01".into(),
            pod_namespace: "demo".into(),
            pod_name: c.into(),
        }
    }

    #[test]
    fn ids_are_stable_reused_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        let mut s = EndpointStore::open(&path).unwrap();
        assert_eq!(s.add(spec("a", "10.0.0.2")).unwrap(), 1);
        assert_eq!(s.add(spec("b", "10.0.0.3")).unwrap(), 2);
        assert_eq!(
            s.add(spec("a", "10.0.0.2")).unwrap(),
            1,
            "re-adding keeps the id"
        );
        let s2 = EndpointStore::open(&path).unwrap();
        assert_eq!(s2.all().count(), 2);
        let mut s = s2;
        s.remove(&Attachment {
            container_id: "a".into(),
            ifname: "eth0".into(),
        })
        .unwrap();
        assert_eq!(s.add(spec("c", "10.0.0.4")).unwrap(), 1, "freed id reused");
    }

    #[test]
    fn corrupt_state_is_reported_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        std::fs::write(&path, "{nope").unwrap();
        let e = EndpointStore::open(&path).err().unwrap();
        assert!(e.to_string().contains("move it away"), "{e}");
    }
}
