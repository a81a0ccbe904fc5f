//! Generates the certificates of a Lumen deployment the way Hubble lays them out: one CA,
//! a server certificate per node whose SAN is `<node>.<cluster>.hubble-grpc.cilium.io`
//! (the name the relay and the CLI verify, as Cilium's certgen does), a client
//! certificate for the relay and one for the `hubble` CLI. Everything is PEM; keys are
//! written with mode 0600. [`load`] reads them back for the agent's and relay's TLS.

pub mod load;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// Why generating or writing certificates failed.
#[derive(Debug, thiserror::Error)]
pub enum CertgenError {
    /// rcgen refused a name or could not sign.
    #[error("generating {what}: {source} (check the node names, IPs and DNS names given)")]
    Generate {
        /// Which certificate.
        what: String,
        /// Why.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("{path}: cannot write: {source} (is the output directory writable?)")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file exists and `overwrite` was not requested.
    #[error("{0}: already exists; pass --force to overwrite, or use another --out directory")]
    Exists(PathBuf),
}

/// One node's server certificate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node name (`node1`).
    pub name: String,
    /// Extra SANs: IP addresses or DNS names.
    pub extra_sans: Vec<String>,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Cluster name (Cilium's `cluster.name`), part of the node SAN.
    pub cluster: String,
    /// One server certificate per node.
    pub nodes: Vec<NodeSpec>,
    /// Validity in days of every certificate.
    pub days: u32,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// Everything generated.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The CA (`ca.crt`, `ca.key`).
    pub ca: Pem,
    /// Per node, in `Spec::nodes` order (`<node>.crt`, `<node>.key`).
    pub nodes: Vec<(String, Pem)>,
    /// The relay's client certificate (`relay-client.crt`, `.key`).
    pub relay_client: Pem,
    /// The CLI's client certificate (`hubble-client.crt`, `.key`).
    pub cli_client: Pem,
}

/// The server name Hubble gives node `node` of cluster `cluster`:
/// `<node>.<cluster>.hubble-grpc.cilium.io`, with dots in either name turned into dashes
/// (so that every node's name is at the same DNS level) and `default` for an empty cluster.
pub fn node_server_name(node: &str, cluster: &str) -> String {
    let cluster = if cluster.is_empty() {
        "default"
    } else {
        cluster
    };
    format!(
        "{}.{}.hubble-grpc.cilium.io",
        node.replace('.', "-"),
        cluster.replace('.', "-")
    )
}

fn validity(p: &mut CertificateParams, days: u32) {
    let start = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let end = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400 * days as u64);
    p.not_before = start.into();
    p.not_after = end.into();
}

fn leaf(
    what: &str,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    days: u32,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Pem, CertgenError> {
    let err = |source| CertgenError::Generate {
        what: what.into(),
        source,
    };
    let mut p = CertificateParams::new(sans).map_err(err)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, days);
    let key = KeyPair::generate().map_err(err)?;
    let cert = p.signed_by(&key, issuer).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Generates a CA and every certificate of `spec`, in memory.
pub fn generate(spec: &Spec) -> Result<Bundle, CertgenError> {
    let err = |source| CertgenError::Generate {
        what: "the CA".into(),
        source,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("Lumen CA ({})", spec.cluster));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, spec.days);
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let ca_pem = Pem {
        cert: ca_cert.pem(),
        key: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca, ca_key);
    let mut nodes = Vec::new();
    for n in &spec.nodes {
        let server_name = node_server_name(&n.name, &spec.cluster);
        let mut sans = vec![server_name.clone()];
        sans.extend(n.extra_sans.iter().cloned());
        let pem = leaf(
            &format!("node {}", n.name),
            &server_name,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            spec.days,
            &issuer,
        )?;
        nodes.push((n.name.clone(), pem));
    }
    let relay_name = "*.hubble-relay.cilium.io".to_string();
    let relay_client = leaf(
        "the relay client certificate",
        &relay_name,
        vec![relay_name.clone()],
        ExtendedKeyUsagePurpose::ClientAuth,
        spec.days,
        &issuer,
    )?;
    let cli_client = leaf(
        "the CLI client certificate",
        "hubble-cli",
        vec!["hubble-cli".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        spec.days,
        &issuer,
    )?;
    Ok(Bundle {
        ca: ca_pem,
        nodes,
        relay_client,
        cli_client,
    })
}

impl Bundle {
    /// The files this bundle writes, relative to the output directory, with their contents.
    pub fn files(&self) -> Vec<(String, &str)> {
        let mut v = vec![
            ("ca.crt".to_string(), self.ca.cert.as_str()),
            ("ca.key".to_string(), self.ca.key.as_str()),
        ];
        for (n, p) in &self.nodes {
            v.push((format!("{n}.crt"), p.cert.as_str()));
            v.push((format!("{n}.key"), p.key.as_str()));
        }
        v.push(("relay-client.crt".into(), self.relay_client.cert.as_str()));
        v.push(("relay-client.key".into(), self.relay_client.key.as_str()));
        v.push(("hubble-client.crt".into(), self.cli_client.cert.as_str()));
        v.push(("hubble-client.key".into(), self.cli_client.key.as_str()));
        v
    }

    /// Writes every file under `dir` (created if missing): certificates 0644, keys 0600.
    /// Refuses to replace existing files unless `overwrite`.
    pub fn write(&self, dir: &Path, overwrite: bool) -> Result<Vec<PathBuf>, CertgenError> {
        std::fs::create_dir_all(dir).map_err(|source| CertgenError::Write {
            path: dir.into(),
            source,
        })?;
        let files = self.files();
        if !overwrite {
            for (name, _) in &files {
                let p = dir.join(name);
                if p.exists() {
                    return Err(CertgenError::Exists(p));
                }
            }
        }
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(&name);
            let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
            let _ = std::fs::remove_file(&path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()).map(|_| f))
                .map_err(|source| CertgenError::Write {
                    path: path.clone(),
                    source,
                })?;
            f.flush().map_err(|source| CertgenError::Write {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_pem_files_with_private_keys_0600() {
        let spec = Spec {
            cluster: "lab".into(),
            nodes: vec![NodeSpec {
                name: "node1".into(),
                extra_sans: vec!["10.0.0.1".into(), "node1.example".into()],
            }],
            days: 30,
        };
        let b = generate(&spec).unwrap();
        assert_eq!(
            node_server_name("node1", "lab"),
            "node1.lab.hubble-grpc.cilium.io"
        );
        // Hubble's rule: dots become dashes, an empty cluster is `default`.
        assert_eq!(
            node_server_name("ip-10-0-0-1.ec2.internal", "prod.eu"),
            "ip-10-0-0-1-ec2-internal.prod-eu.hubble-grpc.cilium.io"
        );
        assert_eq!(
            node_server_name("n1", ""),
            "n1.default.hubble-grpc.cilium.io"
        );
        let dir = tempfile::tempdir().unwrap();
        let files = b.write(dir.path(), false).unwrap();
        assert_eq!(files.len(), 8);
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", f.display());
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            if f.extension().unwrap() == "key" {
                assert_eq!(mode, 0o600, "{}", f.display());
            } else {
                assert_eq!(mode, 0o644, "{}", f.display());
            }
        }
        let e = b.write(dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        b.write(dir.path(), true).unwrap();
    }
}
