//! A counter family with a bounded number of label sets.
//!
//! Context labels (pods, addresses) can have as many values as the cluster has pods; a
//! scrape must stay small whatever the traffic. Once a family holds `limit` label sets,
//! increments for a new label set go to one overflow series whose every label is
//! [`OVERFLOW`] — so sums over the family stay exact — and are counted in
//! `lumen_metrics_overflow_total{metric}`.

use prometheus_client::metrics::{counter::Counter, family::Family};
use std::collections::HashSet;

/// The value of every label of the overflow series.
pub const OVERFLOW: &str = "_other";

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// A counter family capped at a number of label sets.
pub struct CappedFamily {
    names: Vec<&'static str>,
    family: Family<Labels, Counter>,
    seen: HashSet<Vec<String>>,
    limit: usize,
    overflow: Counter,
    overflowed: bool,
}

impl CappedFamily {
    /// A family with these label names (in order), holding at most `limit` label sets
    /// besides the overflow series; `overflow` counts the increments that went there.
    pub fn new(
        names: Vec<&'static str>,
        family: Family<Labels, Counter>,
        limit: usize,
        overflow: Counter,
    ) -> Self {
        CappedFamily {
            names,
            family,
            seen: HashSet::new(),
            limit,
            overflow,
            overflowed: false,
        }
    }

    /// The label names.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Adds `n` to the series of `values` (one per label name), or to the overflow series
    /// when the family is full.
    pub fn inc_by(&mut self, values: Vec<String>, n: u64) {
        debug_assert_eq!(values.len(), self.names.len());
        let values = if self.seen.contains(&values) {
            values
        } else if self.seen.len() < self.limit {
            self.seen.insert(values.clone());
            values
        } else {
            self.overflow.inc_by(n);
            self.overflowed = true;
            vec![OVERFLOW.to_string(); self.names.len()]
        };
        let labels: Labels = self.names.iter().copied().zip(values).collect();
        self.family.get_or_create(&labels).inc_by(n);
    }

    /// Series currently held (the overflow series included).
    pub fn len(&self) -> usize {
        self.seen.len() + usize::from(self.overflowed)
    }

    /// True when nothing was counted yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn beyond_the_limit_new_label_sets_go_to_one_overflow_series() {
        let overflow = Counter::default();
        let mut f = CappedFamily::new(
            vec!["reason", "source"],
            Family::default(),
            2,
            overflow.clone(),
        );
        f.inc_by(vals(&["POLICY_DENIED", "a"]), 1);
        f.inc_by(vals(&["POLICY_DENIED", "b"]), 2);
        // Full: a known label set still counts on its own series...
        f.inc_by(vals(&["POLICY_DENIED", "a"]), 5);
        // ...new ones go to the overflow series.
        f.inc_by(vals(&["POLICY_DENIED", "c"]), 3);
        f.inc_by(vals(&["POLICY_DENY", "d"]), 4);
        assert_eq!(f.len(), 3);
        assert_eq!(overflow.get(), 7);
        let get = |v: &[&str]| {
            let labels: Labels = f.names().iter().copied().zip(vals(v)).collect();
            f.family.get_or_create(&labels).get()
        };
        assert_eq!(get(&["POLICY_DENIED", "a"]), 6);
        assert_eq!(get(&["POLICY_DENIED", "b"]), 2);
        assert_eq!(get(&[OVERFLOW, OVERFLOW]), 7);
    }
}
