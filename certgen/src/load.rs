//! Reading back what `lumen-certgen` writes: PEM files named by a configuration key, with
//! errors that say which key, which file, and what to do. Shared by the agent's and the
//! relay's TLS set-up, which turn the bytes into tonic's types.

use std::path::{Path, PathBuf};

/// Why a configured PEM file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// A file could not be read.
    #[error("{key} {path}: cannot read: {source} (check the path and this process's permissions)")]
    Read {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("{key} {path}: no PEM {expected} found (expected a file like lumen-certgen writes)")]
    NotPem {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
}

/// The bytes of `path` (named by config key `key`), which must hold a PEM block whose
/// label contains `marker` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn read_pem(key: &'static str, path: &Path, marker: &'static str) -> Result<Vec<u8>, PemError> {
    let bytes = std::fs::read(path).map_err(|source| PemError::Read {
        key,
        path: path.into(),
        source,
    })?;
    let found = String::from_utf8_lossy(&bytes)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(marker));
    if !found {
        return Err(PemError::NotPem {
            key,
            path: path.into(),
            expected: marker,
        });
    }
    Ok(bytes)
}

/// The certificates of several files as one PEM bundle (for a CA pool).
pub fn read_cert_bundle(key: &'static str, files: &[PathBuf]) -> Result<Vec<u8>, PemError> {
    let mut bundle = Vec::new();
    for f in files {
        bundle.extend(read_pem(key, f, "CERTIFICATE")?);
        bundle.push(b'\n');
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let e = read_pem("hubble.tls.certFile", &missing, "CERTIFICATE").unwrap_err();
        assert!(e.to_string().starts_with("hubble.tls.certFile "), "{e}");
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "hello").unwrap();
        let e = read_cert_bundle("tls.caFiles", &[junk]).unwrap_err();
        assert!(
            matches!(
                e,
                PemError::NotPem {
                    key: "tls.caFiles",
                    ..
                }
            ),
            "{e}"
        );
    }
}
