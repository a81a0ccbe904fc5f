//! Lumen's node-to-node encryption: a userspace WireGuard tunnel.
//!
//! The kernel here has no WireGuard module, so the protocol runs in this process:
//! boringtun's `noise` engine (the real WireGuard protocol — Noise IK handshake,
//! ChaCha20-Poly1305 transport, cookies, timers) drives one `Tunn` per peer, and this crate
//! supplies what boringtun's engine leaves out: the TUN interface ([`tun`]), the UDP
//! socket and the threads that move packets between them ([`device`]), cryptokey routing
//! ([`allowed_ips`]), TCP segmentation of the TUN's offloaded super-packets ([`tso`]) and
//! coalescing of received segments into super-packets ([`gro`]),
//! UDP segmentation offloads so datagrams move in batches ([`offload`]), keys compatible with `wg genkey`/`wg pubkey` ([`key`]) and the checked
//! configuration ([`config`]). It interoperates with `wireguard-go` and the kernel
//! module: the wire format is the protocol's.
//!
//! One [`Device`] per node: its private key on disk (mode `0600`), its public key
//! published on its Node object, and one peer per other node whose allowed IPs are that
//! node's pod CIDR. The eBPF datapath sends cross-node pod traffic into the TUN; the
//! device encrypts it to the owning peer over UDP (port 51871 by default, as Cilium) and
//! writes what it decrypts back into the TUN, having checked that the inner source
//! belongs to the sending peer.
//!
//! Control: [`Device::set_peers`] adds, updates and removes peers without disturbing the
//! sessions of unchanged ones; [`Device::set_private_key`] rotates the key (sessions
//! re-handshake; established TCP connections survive on retransmission);
//! [`Device::stats`] reports each peer's endpoint, last handshake and byte counters.
//! See [`device`] for the threads and the failure modes.

pub mod allowed_ips;
pub mod config;
pub mod device;
pub mod gro;
pub mod key;
pub mod offload;
pub mod tso;
pub mod tun;

pub use allowed_ips::AllowedIps;
pub use config::{ConfigError, DeviceConfig, PeerConfig, DEFAULT_LISTEN_PORT, DEFAULT_MTU};
pub use device::{Device, DeviceError, PeerStats};
pub use key::{KeyError, PresharedKey, PrivateKey, PublicKey};
pub use tun::TunError;
