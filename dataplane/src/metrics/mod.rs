//! Prometheus metrics from the agent (`hubble.metrics.*`): Hubble's flow metrics under
//! Hubble's names and labels, counted as events enter the flow ring ([`flows`]); Lumen's
//! own `lumen_*` health gauges ([`health`]); `/metrics` over HTTP ([`server`]).

pub mod family;
pub mod flows;
pub mod health;
pub mod labels;
pub mod options;
pub mod server;

use crate::{config::HubbleMetricsConfig, events::Event, ring::Ring};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// What `/metrics` serves: the registry the flow metrics feed, and the health gauges.
pub struct Exporter {
    registry: Registry,
    health: health::Health,
}

impl Exporter {
    /// The registry in the Prometheus (OpenMetrics) text format, gauges refreshed.
    pub fn encode(&self) -> String {
        self.health.refresh();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Registers the metrics `cfg` enables: the exporter to serve, and the counters the
/// ring-buffer reader feeds.
pub fn setup(
    cfg: &HubbleMetricsConfig,
    ring: Arc<Ring<Arc<Event>>>,
    maps: health::MapFillSource,
    events: health::RingUsageSource,
) -> (Arc<Exporter>, flows::FlowMetrics) {
    let mut registry = Registry::default();
    let flows = flows::FlowMetrics::new(&cfg.enabled, cfg.cardinality_limit, &mut registry);
    let health = health::Health::new(ring, maps, events, &mut registry);
    (Arc::new(Exporter { registry, health }), flows)
}
