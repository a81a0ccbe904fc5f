//! CIDR peers (with except), CIDR identity allocation, world vs cluster entities.

mod common;

use common::*;
use lumen_policy::{PolicySet, CIDR_IDENTITY_BASE as B};

fn set() -> PolicySet {
    let mut pols = parse_all(include_str!("fixtures/cidr-entities.yaml"));
    pols.extend(parse_all(include_str!("fixtures/world-egress.yaml")));
    PolicySet::new(pols, false)
}

#[test]
fn cidr_identities_are_sorted_and_deterministic() {
    let ids = set().cidr_identities();
    assert_eq!(
        ids,
        vec![
            (B, "10.0.0.0/8".to_string()),
            (B + 1, "10.96.0.0/12".to_string()),
            (B + 2, "192.168.1.10/32".to_string()),
            (B + 3, "2001:db8::/32".to_string()),
        ]
    );
    let mut reversed = parse_all(include_str!("fixtures/world-egress.yaml"));
    reversed.extend(parse_all(include_str!("fixtures/cidr-entities.yaml")));
    assert_eq!(PolicySet::new(reversed, false).cidr_identities(), ids);
}

#[test]
fn cidr_except_and_cluster_entity() {
    let p = set().resolve(&universe(), &endpoint(WEB));
    let mut want = Vec::new();
    for id in [1, 3, 4, 5, 6, 7, WEB, DB, CLIENT, PROM, OTHER_WEB] {
        want.push(allow(id, 17, 53, 16));
    }
    // 10.96.0.0/12 is carved out of 10.0.0.0/8.
    want.push(allow(B, 6, 443, 16));
    want.push(allow(B + 2, 0, 0, 0));
    want.push(allow(B + 3, 0, 0, 0));
    assert_eq!(keys(&p.egress.entries), want);
    assert!(p.egress.entries.iter().all(|e| e.identity != 2));
    assert!(!p.ingress.enforced);
}

#[test]
fn world_entity_and_default_route() {
    let p = set().resolve(&universe(), &endpoint(DB));
    let k = keys(&p.egress.entries);
    for id in [2, 9, 10, B, B + 1, B + 2, B + 3] {
        assert!(
            k.contains(&allow(id, 0, 0, 0)),
            "world entity includes {id}"
        );
    }
    // 0.0.0.0/0 except 10.0.0.0/8 on port 80 (protocol ANY): world, world-ipv4 and 192.168.1.10/32.
    for id in [2, 9, B + 2] {
        for proto in [6, 17, 132] {
            assert!(k.contains(&allow(id, proto, 80, 16)), "{id}/{proto}");
        }
    }
    assert!(!k.contains(&allow(B, 6, 80, 16)));
    assert!(!k.contains(&allow(10, 6, 80, 16)));
    assert_eq!(k.len(), 7 + 9);
    assert!(
        k.iter().all(|e| !(256..=65535).contains(&e.0)),
        "world excludes cluster identities"
    );
}
