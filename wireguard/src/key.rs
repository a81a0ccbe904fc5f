//! WireGuard keys: Curve25519 private and public keys, written as `wg genkey` /
//! `wg pubkey` write them (standard base64 of the 32 raw bytes, with padding), and the
//! node's private key file.
//!
//! The key file holds one base64 line, like `wg genkey > key`. It must be owned by the
//! caller's rules, not readable by anyone else: [`PrivateKey::load_or_create`] refuses a
//! file whose mode gives any access to group or others (it would mean the key has
//! possibly leaked already, and silently tightening it would hide that), and creates a
//! missing one with mode `0600`.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519;

/// Why a key could not be read, parsed or stored.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not base64 of exactly 32 bytes.
    #[error("a WireGuard key is 44 characters of base64 (32 bytes), as `wg genkey` prints; got {len} characters")]
    Malformed {
        /// Length of the rejected text (the text itself may be secret).
        len: usize,
    },
    /// The key file exists with a mode that lets others read or change it.
    #[error("private key file {path} has mode {mode:04o}: it must not be accessible to group or others; check whether it leaked, then `chmod 600 {path}` or delete it to have a new key generated")]
    LoosePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading, creating or writing the key file failed.
    #[error("{op} private key file {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel's random source failed.
    #[error("getrandom failed: {0}")]
    Random(io::Error),
}

/// A Curve25519 private key (clamped as `wg genkey` clamps it).
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

/// A Curve25519 public key: a peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

/// A 32-byte pre-shared symmetric key (`wg genpsk`), mixed into the handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(pub(crate) [u8; 32]);

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let malformed = || KeyError::Malformed { len: text.len() };
    let bytes = STANDARD.decode(text).map_err(|_| malformed())?;
    bytes.try_into().map_err(|_| malformed())
}

fn random32() -> Result<[u8; 32], KeyError> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(KeyError::Random(err));
        }
        filled += n as usize;
    }
    Ok(bytes)
}

impl PrivateKey {
    /// A new random key (`wg genkey`).
    pub fn generate() -> Result<PrivateKey, KeyError> {
        Ok(PrivateKey::from_bytes(random32()?))
    }

    /// The key from 32 raw bytes, clamped as RFC 7748 and `wg` do.
    pub fn from_bytes(mut bytes: [u8; 32]) -> PrivateKey {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        PrivateKey(bytes)
    }

    /// The matching public key (`wg pubkey`).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.secret()).to_bytes())
    }

    /// Base64, as `wg genkey` prints it. This is the secret: never log it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub(crate) fn secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }

    /// Reads the key at `path`, or creates it (mode `0600`, parent directories `0700`)
    /// when missing. Refuses a file readable or writable by group or others.
    pub fn load_or_create(path: &Path) -> Result<PrivateKey, KeyError> {
        let io_err = |op| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { op, path, source }
        };
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::LoosePermissions {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let text = fs::read_to_string(path).map_err(io_err("reading"))?;
                text.parse()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(io_err("creating the directory of"))?;
                }
                let key = PrivateKey::generate()?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_err("creating"))?;
                file.write_all(format!("{}\n", key.to_base64()).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io_err("writing"))?;
                tracing::info!(path = %path.display(), public_key = %key.public_key(), "created WireGuard private key");
                Ok(key)
            }
            Err(e) => Err(io_err("inspecting")(e)),
        }
    }
}

impl PrivateKey {
    /// Replaces the key file at `path` with this key, atomically (a `0600` file renamed
    /// over it): a crash leaves the old key or the new one, never half of either.
    pub fn store(&self, path: &Path) -> Result<(), KeyError> {
        let io_err = |op| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { op, path, source }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.new"));
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("creating"))?;
        file.write_all(format!("{}\n", self.to_base64()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err("writing"))?;
        fs::rename(&tmp, path).map_err(io_err("replacing"))
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<PrivateKey, KeyError> {
        decode32(s).map(PrivateKey::from_bytes)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the public half: debug output ends up in logs.
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

impl PublicKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Base64, as `wg pubkey` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub(crate) fn x25519(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        decode32(s).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl PresharedKey {
    /// A new random key (`wg genpsk`).
    pub fn generate() -> Result<PresharedKey, KeyError> {
        random32().map(PresharedKey)
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<PresharedKey, KeyError> {
        decode32(s).map(PresharedKey)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 section 6.1 (Alice), in base64 as `wg` writes it; checked with
    // `echo <private> | wg pubkey`.
    const RFC_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const RFC_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

    #[test]
    fn public_key_matches_wg_pubkey_on_the_rfc_vector() {
        let private: PrivateKey = RFC_PRIVATE.parse().unwrap();
        assert_eq!(private.public_key().to_base64(), RFC_PUBLIC);
        // Clamping changes these bits of the RFC key, as `wg genkey` would have.
        assert_ne!(private.to_base64(), RFC_PRIVATE);
    }

    #[test]
    fn a_stored_key_replaces_the_old_one_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg.key");
        let old = PrivateKey::load_or_create(&path).unwrap();
        let new = PrivateKey::generate().unwrap();
        new.store(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = PrivateKey::load_or_create(&path).unwrap();
        assert_eq!(loaded.public_key(), new.public_key());
        assert_ne!(loaded.public_key(), old.public_key());
        // Nothing left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn generated_keys_are_clamped_distinct_and_round_trip() {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        assert_ne!(a.to_base64(), b.to_base64());
        assert_eq!(a.0[0] & 7, 0);
        assert_eq!(a.0[31] & 0xc0, 0x40);
        let text = a.to_base64();
        assert_eq!(text.len(), 44);
        let again: PrivateKey = text.parse().unwrap();
        assert_eq!(again.public_key(), a.public_key());
        let public: PublicKey = a.public_key().to_base64().parse().unwrap();
        assert_eq!(public, a.public_key());
    }

    #[test]
    fn malformed_keys_are_rejected_without_echoing_them() {
        for bad in ["", "not base64!", "AAAA", &"A".repeat(44)] {
            let err = bad.parse::<PublicKey>().unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{bad:?}: {err}");
            assert!(!err.to_string().contains("not base64"));
        }
        // 33 bytes.
        assert!(STANDARD.encode([1u8; 33]).parse::<PrivateKey>().is_err());
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let key = PrivateKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_base64()));
        assert!(shown.contains(&key.public_key().to_base64()));
    }

    #[test]
    fn key_file_is_created_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/wg.key");
        let created = PrivateKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = PrivateKey::load_or_create(&path).unwrap();
        assert_eq!(loaded.public_key(), created.public_key());
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), created.to_base64());
    }

    #[test]
    fn key_file_readable_by_others_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg.key");
        fs::write(&path, format!("{}\n", RFC_PRIVATE)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = PrivateKey::load_or_create(&path).unwrap_err();
        assert!(matches!(
            err,
            KeyError::LoosePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let key = PrivateKey::load_or_create(&path).unwrap();
        assert_eq!(key.public_key().to_base64(), RFC_PUBLIC);
    }

    #[test]
    fn key_file_with_garbage_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg.key");
        fs::write(&path, "garbage\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            PrivateKey::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage\n");
    }
}
