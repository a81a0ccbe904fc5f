//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016): a lookup table of backend indices that spreads slots evenly
//! and changes little when the backend set changes.
//!
//! Each backend gets a permutation of the `M` slots, `slot_j = (offset + j * skip) mod M`,
//! from two hashes of its name; backends take turns claiming their next free slot until the
//! table is full. `M` must be prime so every `skip` in `1..M` visits all slots.
//!
//! Hashes: `offset = h(name, 0) mod M` and `skip = h(name, 1) mod (M - 1) + 1`, where
//! `h(name, seed)` is 64-bit FNV-1a of the seed byte followed by the name, passed through the
//! MurmurHash3 64-bit finalizer (FNV alone mixes short, similar names such as
//! `10.0.0.1:80/TCP` and `10.0.0.2:80/TCP` poorly in the low bits). The table is computed
//! in userspace; the datapath only indexes it with the 5-tuple hash, so it never needs `h`.

use crate::error::MaglevError;
use crate::hash::{fnv1a_64, FNV64_OFFSET};

/// Cilium's default `maglev.tableSize`.
pub const DEFAULT_TABLE_SIZE: u32 = 16_381;

/// Table sizes Cilium accepts for `maglev.tableSize` (all prime).
pub const SUPPORTED_TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16_381, 32_749, 65_521, 131_071,
];

/// A Maglev table builder of a fixed prime size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maglev {
    size: u32,
}

impl Default for Maglev {
    fn default() -> Self {
        Self {
            size: DEFAULT_TABLE_SIZE,
        }
    }
}

impl Maglev {
    /// A builder for tables of `size` slots; `size` must be a prime of at least 2.
    pub fn new(size: u32) -> Result<Self, MaglevError> {
        if is_prime(size) {
            Ok(Self { size })
        } else {
            Err(MaglevError::NotPrime { size })
        }
    }

    /// The table size `M`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// A table over equally weighted backends, identified by stable names (e.g.
    /// [`Backend::maglev_name`](crate::Backend::maglev_name)).
    pub fn table<S: AsRef<[u8]>>(&self, names: &[S]) -> Result<MaglevTable, MaglevError> {
        let weighted: Vec<(&[u8], u32)> = names.iter().map(|n| (n.as_ref(), 1)).collect();
        self.weighted_table(&weighted)
    }

    /// A table over weighted backends: a backend of weight `w` gets about `w / Σw` of the
    /// slots; weight 0 excludes it. Entries are indices into `backends`. No backend (or only
    /// zero weights) gives an empty table.
    pub fn weighted_table<S: AsRef<[u8]>>(
        &self,
        backends: &[(S, u32)],
    ) -> Result<MaglevTable, MaglevError> {
        let live: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
        if live.is_empty() {
            return Ok(MaglevTable {
                entries: Vec::new(),
            });
        }
        let m = u64::from(self.size);
        if live.len() as u64 > m {
            return Err(MaglevError::TooManyBackends {
                backends: live.len(),
                size: self.size,
            });
        }
        let perms: Vec<(u64, u64)> = live
            .iter()
            .map(|&i| {
                let name = backends[i].0.as_ref();
                let offset = seeded_hash(0, name) % m;
                let skip = if m > 1 {
                    seeded_hash(1, name) % (m - 1) + 1
                } else {
                    1
                };
                (offset, skip)
            })
            .collect();
        let max_weight = live
            .iter()
            .map(|&i| u64::from(backends[i].1))
            .max()
            .unwrap_or(1);
        let mut next = vec![0u64; live.len()];
        let mut credit = vec![0u64; live.len()];
        let mut entries = vec![u32::MAX; self.size as usize];
        let mut filled = 0usize;
        // Each round every backend earns its weight in credit and claims one slot per
        // `max_weight` of credit, so the heaviest backend claims exactly one per round.
        while filled < entries.len() {
            for (k, &i) in live.iter().enumerate() {
                credit[k] += u64::from(backends[i].1);
                while credit[k] >= max_weight && filled < entries.len() {
                    credit[k] -= max_weight;
                    let (offset, skip) = perms[k];
                    // A full permutation has a free slot within M steps since the table is
                    // not full.
                    loop {
                        let slot = ((offset + next[k] * skip) % m) as usize;
                        next[k] += 1;
                        if entries[slot] == u32::MAX {
                            entries[slot] = u32::try_from(i).unwrap_or(u32::MAX);
                            filled += 1;
                            break;
                        }
                    }
                }
            }
        }
        Ok(MaglevTable { entries })
    }
}

/// A built lookup table: `entries[hash % M]` is the index of the chosen backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaglevTable {
    entries: Vec<u32>,
}

impl MaglevTable {
    /// The slots, each a backend index; empty when there were no backends.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// The slots, consumed (what the agent writes into the eBPF inner map).
    pub fn into_vec(self) -> Vec<u32> {
        self.entries
    }

    /// The backend index for a 32-bit flow hash, or `None` for an empty table.
    pub fn lookup(&self, hash: u32) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries
            .get(hash as usize % self.entries.len())
            .copied()
    }
}

fn seeded_hash(seed: u8, name: &[u8]) -> u64 {
    let h = fnv1a_64(fnv1a_64(FNV64_OFFSET, &[seed]), name);
    fmix64(h)
}

// MurmurHash3's 64-bit finalizer: full avalanche of the FNV state.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "{prefix}10.{}.{}.{}:8080/TCP",
                    i / 65536,
                    (i / 256) % 256,
                    i % 256
                )
            })
            .collect()
    }

    fn counts(table: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &e in table.entries() {
            c[e as usize] += 1;
        }
        c
    }

    #[test]
    fn sizes_must_be_prime() {
        assert_eq!(
            Maglev::new(16_380),
            Err(MaglevError::NotPrime { size: 16_380 })
        );
        assert_eq!(Maglev::new(0), Err(MaglevError::NotPrime { size: 0 }));
        for s in SUPPORTED_TABLE_SIZES {
            assert!(Maglev::new(s).is_ok(), "{s}");
        }
        let e = Maglev::new(7).unwrap().table(&names("", 8)).unwrap_err();
        assert_eq!(
            e,
            MaglevError::TooManyBackends {
                backends: 8,
                size: 7
            }
        );
    }

    #[test]
    fn empty_and_single() {
        let m = Maglev::default();
        let empty: [&str; 0] = [];
        assert_eq!(m.table(&empty).unwrap().lookup(5), None);
        let t = m.table(&["a"]).unwrap();
        assert_eq!(t.entries().len(), 16_381);
        assert!(t.entries().iter().all(|&e| e == 0));
    }

    #[test]
    fn deterministic() {
        let m = Maglev::new(1021).unwrap();
        let n = names("", 7);
        assert_eq!(m.table(&n).unwrap(), m.table(&n).unwrap());
    }

    // Property: for many backend sets, every backend gets M/N slots within a few percent.
    #[test]
    fn property_balanced() {
        let m = Maglev::default();
        let size = m.size() as f64;
        for (run, n) in [2usize, 3, 5, 10, 17, 50, 100].into_iter().enumerate() {
            let set = names(&format!("run{run}-"), n);
            let c = counts(&m.table(&set).unwrap(), n);
            let ideal = size / n as f64;
            for (i, &got) in c.iter().enumerate() {
                let dev = (got as f64 - ideal).abs() / ideal;
                assert!(
                    dev < 0.03,
                    "n={n} backend {i}: {got} slots vs ideal {ideal:.1}"
                );
            }
        }
    }

    // Property: removing one of N backends moves its own 1/N of the slots plus at most about
    // as many others (the paper's minimal disruption; measured: 0.1-0.3x 1/N for N <= 10,
    // about 1.2x for N = 100 at M = 16381, growing as M/N shrinks, as the paper reports).
    #[test]
    fn property_minimal_disruption() {
        let m = Maglev::default();
        for (run, n) in [5usize, 10, 20, 50, 100].into_iter().enumerate() {
            let set = names(&format!("d{run}-"), n);
            let before = m.table(&set).unwrap();
            for removed in [0, n / 2, n - 1] {
                let mut rest = set.clone();
                rest.remove(removed);
                let after = m.table(&rest).unwrap();
                let mut moved_other = 0usize;
                for (b, a) in before.entries().iter().zip(after.entries()) {
                    let b = *b as usize;
                    if b == removed {
                        continue;
                    }
                    // Indices above the removed one shift down by one in `rest`.
                    let same = if b < removed { b } else { b - 1 };
                    if *a as usize != same {
                        moved_other += 1;
                    }
                }
                let share = moved_other as f64 / m.size() as f64;
                assert!(
                    share <= 2.0 / n as f64,
                    "n={n} removed={removed}: {moved_other} other slots moved ({share:.4})"
                );
            }
        }
    }

    #[test]
    fn weights_are_proportional() {
        let m = Maglev::default();
        let t = m
            .weighted_table(&[("a", 1u32), ("b", 3), ("c", 0)])
            .unwrap();
        let c = counts(&t, 3);
        assert_eq!(c[2], 0);
        let ratio = c[1] as f64 / c[0] as f64;
        assert!((ratio - 3.0).abs() < 0.1, "{c:?}");
    }
}
