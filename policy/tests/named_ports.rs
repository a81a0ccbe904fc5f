//! Named ports: ingress from the endpoint's own ports, egress from every pod's ports.

mod common;

use common::*;
use lumen_policy::PolicySet;

#[test]
fn named_ports_resolve_per_direction() {
    let set = PolicySet::new(parse_all(include_str!("fixtures/named-ports.yaml")), false);
    let p = set.resolve(&universe(), &endpoint(WEB));
    assert_eq!(keys(&p.ingress.entries), vec![allow(0, 6, 8080, 16)]);
    assert_eq!(p.ingress.entries[0].match_type, 3);
    assert_eq!(
        p.warnings,
        vec![
            "NetworkPolicy demo/named: ingress named port \"metrics\" not found on this endpoint; nothing matched for it",
            "NetworkPolicy demo/named: ingress named port \"grpc\" not found on this endpoint; nothing matched for it",
        ]
    );
    let mut want = Vec::new();
    for id in [WEB, DB, CLIENT, PROM, OTHER_WEB] {
        want.extend([
            allow(id, 6, 8080, 16),
            allow(id, 6, 8081, 16),
            allow(id, 17, 53, 16),
        ]);
    }
    assert_eq!(keys(&p.egress.entries), want);
}
