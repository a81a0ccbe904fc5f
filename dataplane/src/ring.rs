//! The bounded in-memory ring of events that GetFlows serves from.
//!
//! Every pushed item gets a sequence number. The ring keeps the newest `capacity` items;
//! a reader remembers the next sequence it wants, and if the writer has overtaken it
//! (its sequence fell off the back) the read reports how many it missed, so the reader can
//! tell its client with a `LostEvent` (source HUBBLE_RING_BUFFER) instead of silently
//! skipping. Readers copy out cheap clones (`Arc`s) in chunks and filter outside the lock,
//! so a slow filter never stalls the writer.

use parking_lot::RwLock;
use std::collections::VecDeque;
use tokio::sync::watch;

/// A bounded ring with sequence numbers.
pub struct Ring<T> {
    inner: RwLock<Inner<T>>,
    /// Publishes the sequence number the next push will get, after each batch.
    tail: watch::Sender<u64>,
}

struct Inner<T> {
    buf: VecDeque<T>,
    capacity: usize,
    /// Sequence number of the next item pushed.
    next: u64,
}

/// Outcome of a forward read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Items the reader wanted that were overwritten before it got to them.
    pub lost: u64,
    /// The sequence number to ask for next time.
    pub next: u64,
}

impl<T: Clone> Ring<T> {
    /// A ring keeping at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "ring capacity must be positive");
        Ring {
            inner: RwLock::new(Inner {
                buf: VecDeque::with_capacity(capacity),
                capacity,
                next: 0,
            }),
            tail: watch::channel(0).0,
        }
    }

    /// Maximum number of items kept.
    pub fn capacity(&self) -> usize {
        self.inner.read().capacity
    }

    /// Items currently kept.
    pub fn len(&self) -> usize {
        self.inner.read().buf.len()
    }

    /// True when nothing was ever pushed or everything fell off.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items ever pushed.
    pub fn seen(&self) -> u64 {
        self.inner.read().next
    }

    /// `(oldest kept sequence, next sequence)`.
    pub fn bounds(&self) -> (u64, u64) {
        let g = self.inner.read();
        (g.next - g.buf.len() as u64, g.next)
    }

    /// Appends items, evicting the oldest beyond capacity, and wakes followers once.
    pub fn push_batch<I: IntoIterator<Item = T>>(&self, items: I) {
        let next = {
            let mut g = self.inner.write();
            for it in items {
                if g.buf.len() == g.capacity {
                    g.buf.pop_front();
                }
                g.buf.push_back(it);
                g.next += 1;
            }
            g.next
        };
        self.tail.send_replace(next);
    }

    /// Appends one item.
    pub fn push(&self, item: T) {
        self.push_batch(std::iter::once(item));
    }

    /// Copies up to `max` items starting at sequence `from` into `out`.
    pub fn read_from(&self, from: u64, max: usize, out: &mut Vec<T>) -> Read {
        let g = self.inner.read();
        let oldest = g.next - g.buf.len() as u64;
        let (start, lost) = if from < oldest {
            (oldest, oldest - from)
        } else {
            (from, 0)
        };
        if start >= g.next {
            return Read {
                lost,
                next: start.max(from),
            };
        }
        let first = (start - oldest) as usize;
        let n = max.min(g.buf.len() - first);
        out.extend(g.buf.range(first..first + n).cloned());
        Read {
            lost,
            next: start + n as u64,
        }
    }

    /// Copies up to `max` items that precede sequence `before` (newest first) into `out`;
    /// returns the sequence of the oldest item copied (or the ring's oldest when none).
    pub fn read_back(&self, before: u64, max: usize, out: &mut Vec<T>) -> u64 {
        let g = self.inner.read();
        let oldest = g.next - g.buf.len() as u64;
        let end = before.min(g.next);
        if end <= oldest {
            return oldest;
        }
        let end_idx = (end - oldest) as usize;
        let n = max.min(end_idx);
        out.extend(g.buf.range(end_idx - n..end_idx).rev().cloned());
        end - n as u64
    }

    /// A receiver that changes whenever items are pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tail.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_capacity_items() {
        let r = Ring::new(3);
        r.push_batch(0..5);
        assert_eq!(r.len(), 3);
        assert_eq!(r.bounds(), (2, 5));
        assert_eq!(r.seen(), 5);
        let mut out = vec![];
        let read = r.read_from(2, 10, &mut out);
        assert_eq!(out, vec![2, 3, 4]);
        assert_eq!(read, Read { lost: 0, next: 5 });
    }

    #[test]
    fn an_overtaken_reader_learns_how_many_it_lost() {
        let r = Ring::new(4);
        r.push_batch(0..10);
        let mut out = vec![];
        let read = r.read_from(1, 2, &mut out);
        assert_eq!(read, Read { lost: 5, next: 8 });
        assert_eq!(out, vec![6, 7]);
    }

    #[test]
    fn reading_at_the_tail_returns_nothing() {
        let r = Ring::new(4);
        r.push_batch(0..2);
        let mut out = vec![];
        assert_eq!(r.read_from(2, 10, &mut out), Read { lost: 0, next: 2 });
        assert!(out.is_empty());
    }

    #[test]
    fn reads_backwards_newest_first() {
        let r = Ring::new(5);
        r.push_batch(0..8);
        let mut out = vec![];
        let oldest = r.read_back(8, 2, &mut out);
        assert_eq!(out, vec![7, 6]);
        assert_eq!(oldest, 6);
        out.clear();
        let oldest = r.read_back(6, 10, &mut out);
        assert_eq!(out, vec![5, 4, 3]);
        assert_eq!(oldest, 3);
        out.clear();
        assert_eq!(r.read_back(3, 10, &mut out), 3);
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn followers_are_woken_by_pushes() {
        let r = Ring::new(4);
        let mut rx = r.subscribe();
        r.push(1);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 1);
    }
}
