//! Backend selection: the `loadBalancer.algorithm` setting and the [`Selector`] interface
//! shared by random and Maglev selection.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::maglev::MaglevTable;

/// `loadBalancer.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// A per-packet random number picks the backend of a new connection (Cilium's default).
    #[default]
    Random,
    /// The 5-tuple hash indexes a Maglev table, so every node picks the same backend.
    Maglev,
}

impl FromStr for Algorithm {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" => Ok(Self::Random),
            "maglev" => Ok(Self::Maglev),
            _ => Err(ParseError::UnknownValue {
                path: "loadBalancer.algorithm".into(),
                what: "algorithm",
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Random => "random",
            Self::Maglev => "maglev",
        })
    }
}

/// Picks a backend index from a 32-bit input: a random number for [`Random`], a
/// [`FiveTuple::hash`](crate::FiveTuple::hash) for Maglev. `None` when there is no backend.
pub trait Selector {
    /// The index of the chosen backend.
    fn select(&self, input: u32) -> Option<usize>;
}

/// Uniform selection among `count` backends: `input % count`, which the datapath computes
/// the same way from `bpf_get_prandom_u32()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Random {
    /// Number of backends.
    pub count: usize,
}

impl Selector for Random {
    fn select(&self, input: u32) -> Option<usize> {
        (self.count > 0).then(|| input as usize % self.count)
    }
}

impl Selector for MaglevTable {
    fn select(&self, input: u32) -> Option<usize> {
        self.lookup(input).map(|i| i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::Maglev;

    #[test]
    fn algorithm_parses() {
        assert_eq!("maglev".parse::<Algorithm>().unwrap(), Algorithm::Maglev);
        assert_eq!(Algorithm::default().to_string(), "random");
        let e = "rr".parse::<Algorithm>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "loadBalancer.algorithm: unknown algorithm \"rr\""
        );
    }

    #[test]
    fn selectors_agree_on_interface() {
        let r = Random { count: 3 };
        assert_eq!(r.select(7), Some(1));
        assert_eq!(Random { count: 0 }.select(7), None);
        let t = Maglev::new(251).unwrap().table(&["a", "b", "c"]).unwrap();
        let selectors: [&dyn Selector; 2] = [&r, &t];
        for s in selectors {
            for h in [0u32, 1, 12345, u32::MAX] {
                assert!(s.select(h).is_some_and(|i| i < 3));
            }
        }
    }
}
