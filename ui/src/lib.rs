//! Lumen's web UI: live flows, flow detail, the denied-flows worklist, the service map and
//! the relay's status, rendered on the server from the relay's Observer API (the same gRPC
//! API the `hubble` CLI uses, with the CLI's filter semantics).
//!
//! - [`config`]: the YAML configuration;
//! - [`relay`]: the gRPC client of the relay;
//! - [`query`]: URL filters → GetFlows requests (through the CLI's filter builder);
//! - [`view`]: flows → table rows and workloads;
//! - [`map`]: the service map (graph, layout, SVG);
//! - [`pages`]: the pages and their templates;
//! - [`sse`]: live rows as server-sent events;
//! - [`app`]: state and routes;
//! - [`error`]: the HTTP boundary's error;
//! - [`escape`]: the templates' HTML escaper.

pub mod app;
pub mod config;
pub mod error;
pub mod escape;
pub mod map;
pub mod pages;
pub mod query;
pub mod relay;
pub mod sse;
pub mod view;
