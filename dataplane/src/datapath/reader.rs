//! Draining the kernel ring buffer.
//!
//! The programs submit without waking the reader unless a lot is pending (one
//! inter-processor interrupt per record was the dominant per-packet cost measured here), so
//! the reader drains both when woken and on a short timer. Failed reservations are counted
//! per CPU in the `LOST` map; the reader turns increases into loss reports.

use aya::maps::{MapData, PerCpuArray, RingBuf};
use std::time::Duration;
use tokio::io::{unix::AsyncFd, Interest};

/// How often the ring is drained when nothing woke the reader.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// How often the lost counters are read.
pub const LOST_INTERVAL: Duration = Duration::from_secs(1);
/// Records handed over per batch at most.
pub const BATCH: usize = 4096;

/// Receives what the reader drains.
pub trait RecordSink {
    /// One record's bytes.
    fn record(&mut self, bytes: &[u8]);
    /// `count` more records were lost on `cpu` because the ring was full.
    fn lost(&mut self, cpu: i32, count: u64);
    /// End of a batch: publish what was received.
    fn flush(&mut self);
}

/// Per-CPU lost counters, remembering what was already reported.
pub struct LostCounters {
    map: PerCpuArray<MapData, u64>,
    reported: Vec<u64>,
}

impl LostCounters {
    /// Starts from the map's current values: losses from before this agent started (for
    /// example while it was restarting) are reported once, on the first poll.
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        LostCounters {
            map,
            reported: vec![],
        }
    }

    /// Reports increases since the last poll.
    pub fn poll(&mut self, sink: &mut impl RecordSink) {
        let Ok(values) = self.map.get(&0, 0) else {
            return;
        };
        if self.reported.len() < values.len() {
            self.reported.resize(values.len(), 0);
        }
        for (cpu, v) in values.iter().enumerate() {
            if *v > self.reported[cpu] {
                sink.lost(cpu as i32, v - self.reported[cpu]);
                self.reported[cpu] = *v;
            }
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, sink: &mut impl RecordSink) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        sink.record(&item);
        drop(item);
        n += 1;
        if n % BATCH == 0 {
            sink.flush();
        }
    }
    if n % BATCH != 0 {
        sink.flush();
    }
    n
}

/// Runs forever, draining `ring` into `sink`.
pub async fn run(
    ring: RingBuf<MapData>,
    mut lost: LostCounters,
    mut sink: impl RecordSink,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns the ring.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut lost_tick = tokio::time::interval(LOST_INTERVAL);
    lost_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut sink);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                drain(fd.get_mut(), &mut sink);
            }
            _ = lost_tick.tick() => {
                lost.poll(&mut sink);
            }
        }
    }
}
