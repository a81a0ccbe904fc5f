//! The agent's own health as `lumen_*` gauges, read when scraped: how full the flow ring
//! is.

use crate::{events::Event, ring::Ring};
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use std::sync::Arc;

/// Gauges refreshed on each scrape.
pub struct Health {
    ring: Arc<Ring<Arc<Event>>>,
    ring_events: Gauge,
    ring_capacity: Gauge,
}

impl Health {
    /// Registers the gauges of `ring`.
    pub fn new(ring: Arc<Ring<Arc<Event>>>, reg: &mut Registry) -> Self {
        let ring_events = Gauge::default();
        let ring_capacity = Gauge::default();
        reg.register(
            "lumen_flow_ring_events",
            "Events currently kept in the flow ring (hubble.eventBufferCapacity)",
            ring_events.clone(),
        );
        reg.register(
            "lumen_flow_ring_capacity",
            "Events the flow ring keeps at most",
            ring_capacity.clone(),
        );
        Health {
            ring,
            ring_events,
            ring_capacity,
        }
    }

    /// Reads the current values.
    pub fn refresh(&self) {
        self.ring_events.set(self.ring.len() as i64);
        self.ring_capacity.set(self.ring.capacity() as i64);
    }
}
