//! Cluster-pool IPAM (`ipam.mode: cluster-pool`): each node's pod CIDR is carved from
//! `ipam.operator.clusterPoolIPv4PodCIDRList` in blocks of
//! `ipam.operator.clusterPoolIPv4MaskSize`, and recorded as a `CiliumNode` object
//! (`spec.ipam.podCIDRs`) in the state source's `status/` directory, where every agent
//! (and the routes to that node) finds it.
//!
//! An agent claims its own block under the state source's lock ([`crate::state::lock`]),
//! so two agents never take the same one; a block it already holds is kept, so the pod
//! CIDR is stable across restarts. A pool with no free block is an error naming the pool.

use crate::state::lock::FileLock;
use crate::state::manifests::{parse_objects, ManifestDir};
use crate::state::node_record;
use ipnet::Ipv4Net;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// Errors claiming a pod CIDR.
#[derive(Debug, thiserror::Error)]
pub enum PodCidrError {
    /// The configuration cannot produce blocks.
    #[error("ipam.operator: {0}")]
    Config(String),
    /// Every block of every pool is taken.
    #[error(
        "no free /{mask} left in {pools}: add a range to ipam.operator.clusterPoolIPv4PodCIDRList"
    )]
    Exhausted {
        /// Block size.
        mask: u8,
        /// The pools, comma-separated.
        pools: String,
    },
    /// Reading or writing the state source failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The block for node `me`: the one it holds if that is still in a pool and not claimed by
/// another node, else the first free block of the pools in order.
pub fn choose(
    pools: &[Ipv4Net],
    mask: u8,
    claimed: &BTreeMap<String, Vec<Ipv4Net>>,
    me: &str,
) -> Result<Ipv4Net, PodCidrError> {
    if pools.is_empty() {
        return Err(PodCidrError::Config(
            "clusterPoolIPv4PodCIDRList is empty (ipam.mode cluster-pool needs at least one range)"
                .into(),
        ));
    }
    if let Some(p) = pools.iter().find(|p| p.prefix_len() > mask) {
        return Err(PodCidrError::Config(format!(
            "clusterPoolIPv4MaskSize /{mask} is larger than the range {p}"
        )));
    }
    let others: Vec<Ipv4Net> = claimed
        .iter()
        .filter(|(n, _)| n.as_str() != me)
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    let overlaps = |b: &Ipv4Net| others.iter().any(|o| o.contains(b) || b.contains(o));
    let in_pool = |b: &Ipv4Net| pools.iter().any(|p| p.contains(b)) && b.prefix_len() == mask;
    if let Some(mine) = claimed
        .get(me)
        .and_then(|c| c.iter().find(|b| in_pool(b) && !overlaps(b)))
    {
        return Ok(*mine);
    }
    for pool in pools {
        let Ok(blocks) = pool.subnets(mask) else {
            continue;
        };
        if let Some(b) = blocks.into_iter().find(|b| !overlaps(b)) {
            return Ok(b);
        }
    }
    Err(PodCidrError::Exhausted {
        mask,
        pools: pools
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Every node's claimed pod CIDRs from the `CiliumNode` records in `status_dir`.
fn read_claims(status_dir: &Path) -> Result<BTreeMap<String, Vec<Ipv4Net>>, PodCidrError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(status_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(PodCidrError::Io {
                path: status_dir.into(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("ciliumnode.") || !name.ends_with(".yaml") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // A record that does not parse claims nothing (and is rewritten by its owner).
        for obj in parse_objects(&path, &text).unwrap_or_default() {
            let cidrs = obj
                .raw
                .as_ref()
                .and_then(|r| r.get("spec")?.get("ipam")?.get("podCIDRs"))
                .and_then(|v| v.as_sequence())
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str()?.parse().ok())
                        .collect::<Vec<Ipv4Net>>()
                })
                .unwrap_or_default();
            out.insert(obj.metadata.name.clone(), cidrs);
        }
    }
    Ok(out)
}

/// Claims (or confirms) node `me`'s pod CIDR in the state source at `manifests_dir`.
pub fn claim(
    manifests_dir: &Path,
    me: &str,
    pools: &[Ipv4Net],
    mask: u8,
) -> Result<Ipv4Net, PodCidrError> {
    let dir = ManifestDir::status_dir(manifests_dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PodCidrError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock = dir.join(".lock");
    let _held = FileLock::exclusive(&lock).map_err(io(&lock))?;
    let claimed = read_claims(&dir)?;
    let cidr = choose(pools, mask, &claimed, me)?;
    if claimed.get(me).map(Vec::as_slice) != Some(&[cidr][..]) {
        let path = node_record::path(&dir, me);
        node_record::modify(&dir, me, |doc| {
            node_record::set_pod_cidrs(doc, &[cidr.to_string()])
        })
        .map_err(io(&path))?;
        tracing::info!(node = me, %cidr, "pod CIDR claimed from the cluster pool");
    }
    Ok(cidr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn nodes_get_distinct_blocks_and_keep_theirs() {
        let pools = [net("10.100.0.0/16")];
        let mut claimed = BTreeMap::new();
        let a = choose(&pools, 24, &claimed, "a").unwrap();
        claimed.insert("a".to_string(), vec![a]);
        let b = choose(&pools, 24, &claimed, "b").unwrap();
        assert_eq!((a, b), (net("10.100.0.0/24"), net("10.100.1.0/24")));
        claimed.insert("b".to_string(), vec![b]);
        // Stable: asking again gives the same block, whatever else is claimed.
        claimed.remove("a");
        assert_eq!(choose(&pools, 24, &claimed, "b").unwrap(), b);
        // A departed node's block is reused.
        assert_eq!(choose(&pools, 24, &claimed, "c").unwrap(), a);
    }

    #[test]
    fn a_held_block_outside_the_pools_or_taken_is_replaced() {
        let pools = [net("10.100.0.0/23")];
        let claimed: BTreeMap<String, Vec<Ipv4Net>> = [
            ("a".to_string(), vec![net("10.100.0.0/24")]),
            ("b".to_string(), vec![net("10.100.0.0/24")]),
        ]
        .into();
        assert_eq!(
            choose(&pools, 24, &claimed, "b").unwrap(),
            net("10.100.1.0/24")
        );
        let elsewhere: BTreeMap<String, Vec<Ipv4Net>> =
            [("a".to_string(), vec![net("10.200.0.0/24")])].into();
        assert_eq!(
            choose(&pools, 24, &elsewhere, "a").unwrap(),
            net("10.100.0.0/24")
        );
    }

    #[test]
    fn exhaustion_and_bad_settings_say_what_to_change() {
        let pools = [net("10.100.0.0/24")];
        let full: BTreeMap<String, Vec<Ipv4Net>> =
            [("a".to_string(), vec![net("10.100.0.0/24")])].into();
        let e = choose(&pools, 24, &full, "b").unwrap_err();
        assert!(e.to_string().contains("clusterPoolIPv4PodCIDRList"), "{e}");
        let e = choose(&pools, 16, &BTreeMap::new(), "a").unwrap_err();
        assert!(e.to_string().contains("clusterPoolIPv4MaskSize"), "{e}");
        assert!(choose(&[], 24, &BTreeMap::new(), "a").is_err());
    }

    #[test]
    fn claims_are_recorded_as_cilium_nodes_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pools = [net("10.100.0.0/16")];
        let a = claim(dir.path(), "a", &pools, 24).unwrap();
        let b = claim(dir.path(), "b", &pools, 24).unwrap();
        assert_ne!(a, b);
        assert_eq!(claim(dir.path(), "a", &pools, 24).unwrap(), a);
        let text =
            std::fs::read_to_string(node_record::path(&ManifestDir::status_dir(dir.path()), "b"))
                .unwrap();
        assert!(
            text.contains("kind: CiliumNode") && text.contains(&b.to_string()),
            "{text}"
        );
    }
}
