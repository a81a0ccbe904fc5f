//! The reader's sink: records become ring events through the [`Pipeline`], in batches, with
//! undecodable records and kernel-side losses turned into loss reports.

use crate::{
    agent::Agent,
    datapath::reader::RecordSink,
    events::{Event, LostInfo, LostSource},
    ipcache::IpCache,
    metrics::flows::FlowMetrics,
    observer::getflows::now_ns,
    pipeline::{Clock, Pipeline},
};
use std::sync::Arc;

/// Feeds the agent's ring.
pub struct RingSink {
    agent: Arc<Agent>,
    pipeline: Pipeline,
    cache: Arc<IpCache>,
    batch: Vec<Arc<Event>>,
    undecodable: u64,
    metrics: Option<FlowMetrics>,
    /// Records decoded since start.
    pub decoded: u64,
}

impl RingSink {
    /// A sink for `agent`.
    pub fn new(agent: Arc<Agent>) -> Self {
        RingSink {
            pipeline: Pipeline::new(&agent.node_name, Clock::now()),
            cache: agent.ipcache(),
            agent,
            batch: Vec::with_capacity(crate::datapath::reader::BATCH),
            undecodable: 0,
            metrics: None,
            decoded: 0,
        }
    }

    /// Also counts Hubble's flow metrics from each batch before it enters the ring.
    pub fn with_metrics(mut self, metrics: FlowMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn lost_event(&self, source: LostSource, count: u64, cpu: Option<i32>) -> Arc<Event> {
        Arc::new(Event::Lost(LostInfo {
            source,
            count,
            cpu,
            time_ns: now_ns(),
            node_name: self.agent.node_name.clone(),
        }))
    }
}

impl RecordSink for RingSink {
    fn record(&mut self, bytes: &[u8]) {
        if self.batch.is_empty() {
            // Pick up endpoint and state changes between batches, never within one.
            self.cache = self.agent.ipcache();
        }
        match self.pipeline.ingest(bytes, &self.cache) {
            Ok(ev) => {
                self.decoded += 1;
                self.batch.push(Arc::new(ev));
            }
            Err(e) => {
                if self.undecodable == 0 {
                    tracing::warn!(error = %e, "undecodable record from the datapath (reported as lost events)");
                }
                self.undecodable += 1;
            }
        }
    }

    fn lost(&mut self, cpu: i32, count: u64) {
        tracing::warn!(cpu, count, "kernel ring buffer full: records lost");
        let ev = self.lost_event(LostSource::KernelRing, count, Some(cpu));
        self.batch.push(ev);
    }

    fn flush(&mut self) {
        if self.undecodable > 0 {
            let ev = self.lost_event(LostSource::Unknown, self.undecodable, None);
            self.batch.push(ev);
            self.undecodable = 0;
        }
        if !self.batch.is_empty() {
            // The kernel ring is ordered by reservation, and two CPUs can reserve in the
            // opposite order of their timestamps by a microsecond: restore time order.
            // The batch is nearly sorted, which the stable sort handles in linear time.
            self.batch.sort_by_key(|e| e.time_ns());
            if let Some(m) = &mut self.metrics {
                m.observe(&self.batch);
            }
            self.agent.ring.push_batch(self.batch.drain(..));
        }
    }
}
