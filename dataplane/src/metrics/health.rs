//! The agent's own health as `lumen_*` gauges, read when scraped: how full the flow ring
//! is, how full the kernel maps the agent fills are, and how full the kernel→agent ring
//! buffer is.

use crate::{events::Event, ring::Ring};
use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::Arc;

/// One kernel map's fill: (map name, entries, capacity).
pub type MapFill = (&'static str, u64, u64);

/// Where the map fill comes from (the agent's last regeneration).
pub type MapFillSource = Arc<dyn Fn() -> Vec<MapFill> + Send + Sync>;

/// The ring buffer's (pending bytes, size), when it can be read.
pub type RingUsageSource = Arc<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;

type MapLabels = Vec<(&'static str, &'static str)>;

/// Gauges refreshed on each scrape.
pub struct Health {
    ring: Arc<Ring<Arc<Event>>>,
    ring_events: Gauge,
    ring_capacity: Gauge,
    maps: MapFillSource,
    map_entries: Family<MapLabels, Gauge>,
    map_capacity: Family<MapLabels, Gauge>,
    events: RingUsageSource,
    events_pending: Gauge,
    events_size: Gauge,
}

impl Health {
    /// Registers the gauges of `ring` and of the maps `maps` reports.
    pub fn new(
        ring: Arc<Ring<Arc<Event>>>,
        maps: MapFillSource,
        events: RingUsageSource,
        reg: &mut Registry,
    ) -> Self {
        let events_pending = Gauge::default();
        let events_size = Gauge::default();
        reg.register(
            "lumen_bpf_ring_buffer_pending_bytes",
            "Bytes the datapath wrote into the EVENTS ring buffer that the agent has not read yet",
            events_pending.clone(),
        );
        reg.register(
            "lumen_bpf_ring_buffer_size_bytes",
            "Size of the EVENTS ring buffer (bpf.eventsRingBytes); records are lost when it is full",
            events_size.clone(),
        );
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
        let map_entries = Family::<MapLabels, Gauge>::default();
        let map_capacity = Family::<MapLabels, Gauge>::default();
        reg.register(
            "lumen_bpf_map_entries",
            "Entries the agent keeps in a kernel map",
            map_entries.clone(),
        );
        reg.register(
            "lumen_bpf_map_capacity",
            "Entries a kernel map holds at most",
            map_capacity.clone(),
        );
        Health {
            ring,
            ring_events,
            ring_capacity,
            maps,
            map_entries,
            map_capacity,
            events,
            events_pending,
            events_size,
        }
    }

    /// Reads the current values.
    pub fn refresh(&self) {
        self.ring_events.set(self.ring.len() as i64);
        self.ring_capacity.set(self.ring.capacity() as i64);
        if let Some((pending, size)) = (self.events)() {
            self.events_pending.set(pending as i64);
            self.events_size.set(size as i64);
        }
        for (map, entries, capacity) in (self.maps)() {
            let labels = vec![("map", map)];
            self.map_entries.get_or_create(&labels).set(entries as i64);
            self.map_capacity
                .get_or_create(&labels)
                .set(capacity as i64);
        }
    }
}
