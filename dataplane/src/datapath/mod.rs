//! The eBPF datapath as the agent sees it: loading and pinning the object, attaching its
//! programs to interfaces (adopting what a previous agent left pinned), configuring it,
//! filling its identity and policy maps, and reading its ring buffer.

pub mod l2;
mod loader;
pub mod maps;
pub mod reader;
pub mod ring_usage;
pub mod services;
pub mod wg;

pub use loader::{AttachOutcome, Datapath, DatapathError, Hook, NatSettings};

/// The eBPF object built from `dataplane-ebpf/` by this crate's build script.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lumen.bpf.o"));
