//! The Hubble-compatible gRPC API of Lumen.
//!
//! Four protobuf packages, wire-compatible with Cilium Hubble v1.19 (same package, service,
//! method and field names, field numbers, types, oneofs and enum values):
//!
//! - [`observer`]: the `observer.Observer` service (flows, agent and debug events, nodes,
//!   namespaces, server status), with its tonic client and server;
//! - [`flow`]: the [`flow::Flow`] record, [`flow::FlowFilter`] and the types they use;
//! - [`peer`]: the `peer.Peer` service, with which a relay discovers the nodes;
//! - [`relay`]: node-status events the relay mixes into the flow stream.
//!
//! [`encoded`] has codecs that keep GetFlows responses in their wire encoding.
//!
//! Every message implements `prost::Message` and serde's `Serialize`/`Deserialize` with
//! the protobuf JSON mapping as the Hubble CLI prints it (`hubble observe -o json`):
//! original proto field names (`source_port`, `ipVersion`, `IP`), enums as names, 64-bit
//! integers as strings, timestamps in RFC 3339 with a `Z` offset. `google.protobuf.Timestamp`
//! is [`wkt::Timestamp`] (for that `Z`); the other well-known types (wrappers, `FieldMask`,
//! `Any`) are those of [`pbjson_types`].
//!
//! The `.proto` sources live in `proto/`; the Rust code under `src/gen/` is generated from
//! them and committed (there is no build script). `tests/codegen.rs` checks it is current;
//! `LUMEN_REGEN=1 cargo test -p lumen-api --test codegen` rewrites it.

#![warn(missing_docs)]

pub mod encoded;
pub mod wkt;

/// Package `flow`: the flow record, its parts, filters, lost/agent/debug events.
#[allow(missing_docs, deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod flow {
    include!("gen/flow.rs");
    include!("gen/flow.serde.rs");
}

/// Package `observer`: the `observer.Observer` service and its messages.
#[allow(missing_docs, deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod observer {
    include!("gen/observer.rs");
    include!("gen/observer.serde.rs");
}

/// Package `peer`: the `peer.Peer` service, which streams peer (node) changes.
#[allow(missing_docs, deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod peer {
    include!("gen/peer.rs");
    include!("gen/peer.serde.rs");
}

/// Package `relay`: node status events sent by a relay in the flow stream.
#[allow(missing_docs, deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod relay {
    include!("gen/relay.rs");
    include!("gen/relay.serde.rs");
}

/// The encoded `google.protobuf.FileDescriptorSet` of the four packages and the well-known
/// types they import, with source info (comments). Use it for gRPC reflection, or to
/// resolve field names and numbers at run time (e.g. for field masks).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/descriptor.bin");
