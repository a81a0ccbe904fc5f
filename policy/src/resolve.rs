//! Resolving a set of policies into one endpoint's per-identity map entries.

use std::collections::BTreeSet;

use crate::cidr::Cidr;
use crate::entry::{match_type, Action, DirectionPolicy, EndpointPolicy, Entry, PolicyRef};
use crate::fqdn::{DnsPolicy, FqdnIdentity, FqdnSelector};
use crate::identity::{
    Entity, CIDR_IDENTITY_BASE, CLUSTER_IDENTITY_MAX, CLUSTER_IDENTITY_MIN, CLUSTER_RESERVED,
    IDENTITY_ANY, IDENTITY_WORLD, IDENTITY_WORLD_IPV4, IDENTITY_WORLD_IPV6,
};
use crate::labels::Label;
use crate::merge::EntryMap;
use crate::model::{Item, Peer, Policy, Rule, Section};
use crate::ports::{port_range_prefixes, PortSel, PortSpec};
use crate::view::{Direction, EndpointView, Universe};

/// All policies of the cluster, ordered by (kind, namespace, name), with their CIDR identities.
/// Built once per state change.
#[derive(Debug, Clone)]
pub struct PolicySet {
    policies: Vec<Policy>,
    global_audit: bool,
    cidrs: Vec<(u32, Cidr)>,
    fqdn: Vec<(FqdnIdentity, Option<Cidr>)>,
}

/// Per-call resolution context: the universe with its labels parsed once.
struct Resolver<'a> {
    idents: Vec<(u32, Vec<Label<'a>>)>,
    cidrs: &'a [(u32, Cidr)],
    fqdn: &'a [(FqdnIdentity, Option<Cidr>)],
    universe: &'a Universe,
    ep: &'a EndpointView,
    warnings: Vec<String>,
}

impl PolicySet {
    /// Orders the policies and numbers the CIDR identities. `global_audit` makes every deny and
    /// default deny an audit.
    pub fn new(mut policies: Vec<Policy>, global_audit: bool) -> Self {
        policies.sort_by(|a, b| {
            (a.kind, &a.meta.namespace, &a.meta.name).cmp(&(
                b.kind,
                &b.meta.namespace,
                &b.meta.name,
            ))
        });
        // `0.0.0.0/0` and `::/0` are the world identities, never CIDR identities.
        let prefixes: BTreeSet<Cidr> = policies
            .iter()
            .flat_map(|p| p.rules.iter())
            .flat_map(Rule::cidrs)
            .filter(|c| !c.is_default())
            .collect();
        let cidrs = (CIDR_IDENTITY_BASE..).zip(prefixes).collect();
        PolicySet {
            policies,
            global_audit,
            cidrs,
            fqdn: Vec::new(),
        }
    }

    /// Adds the addresses `toFQDNs` names resolved to, each with its identity: `toFQDNs`
    /// peers select those whose names match; `toCIDR`/`toCIDRSet` and the world entity
    /// select them by address, as they would the address without a name.
    pub fn with_fqdn_identities(mut self, fqdn: Vec<FqdnIdentity>) -> Self {
        self.fqdn = fqdn
            .into_iter()
            .map(|f| {
                let c = Cidr::parse(&f.ip.to_string());
                (f, c)
            })
            .collect();
        self
    }

    /// The addresses given by [`PolicySet::with_fqdn_identities`].
    pub fn fqdn_identities(&self) -> impl Iterator<Item = &FqdnIdentity> {
        self.fqdn.iter().map(|(f, _)| f)
    }

    /// Every `toFQDNs` selector of the policies (deduplicated): the names whose addresses
    /// need identities.
    pub fn fqdn_selectors(&self) -> Vec<FqdnSelector> {
        let set: BTreeSet<FqdnSelector> = self
            .policies
            .iter()
            .flat_map(|p| p.rules.iter())
            .flat_map(|r| r.egress.allow.iter())
            .flat_map(|i| i.peers.iter().flatten())
            .filter_map(|p| match p {
                Peer::Fqdn(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        set.into_iter().collect()
    }

    /// What one endpoint's egress policy asks of the DNS proxy: redirect when a rule
    /// selecting it has `toFQDNs` or DNS rules; the names it may resolve are the union of
    /// its DNS rules (Lumen merges them per endpoint, not per port and server as Cilium).
    pub fn dns_policy(&self, ep: &EndpointView) -> DnsPolicy {
        let ep_labels: Vec<Label<'_>> = ep.labels.iter().map(|s| Label::parse(s)).collect();
        let mut out = DnsPolicy::default();
        for rule in self.policies.iter().flat_map(|p| p.rules.iter()) {
            if !rule.egress.selects || !subject_matches(rule, ep, &ep_labels) {
                continue;
            }
            for item in &rule.egress.allow {
                for p in item.peers.iter().flatten() {
                    if let Peer::Fqdn(s) = p {
                        out.redirect = true;
                        if !out.selectors.contains(s) {
                            out.selectors.push(s.clone());
                        }
                    }
                }
                if let Some(names) = &item.dns {
                    out.redirect = true;
                    let allowed = out.allowed.get_or_insert_with(Vec::new);
                    for n in names {
                        if !allowed.contains(n) {
                            allowed.push(n.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// CIDR identities needed by all policies: (identity, prefix such as "10.0.0.0/8").
    /// Deterministic: prefixes sorted (IPv4 first, by address then length), numbered from 1<<24.
    /// Includes every cidr and except prefix except `0.0.0.0/0` and `::/0`, which are world.
    pub fn cidr_identities(&self) -> Vec<(u32, String)> {
        self.cidrs
            .iter()
            .map(|(id, c)| (*id, c.to_string()))
            .collect()
    }

    /// The policies, in resolution order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Computes the policy of one endpoint.
    pub fn resolve(&self, universe: &Universe, ep: &EndpointView) -> EndpointPolicy {
        let mut r = Resolver {
            idents: universe
                .identities
                .iter()
                .map(|(id, ls)| (*id, ls.iter().map(|s| Label::parse(s)).collect()))
                .collect(),
            cidrs: &self.cidrs,
            fqdn: &self.fqdn,
            universe,
            ep,
            warnings: Vec::new(),
        };
        let ep_labels: Vec<Label<'_>> = ep.labels.iter().map(|s| Label::parse(s)).collect();
        let mut out = EndpointPolicy::default();
        let mut maps = [EntryMap::default(), EntryMap::default()];
        let mut all_audit = [true, true];

        for policy in &self.policies {
            let audit = policy.audit || self.global_audit;
            let mut ref_idx = None;
            for rule in &policy.rules {
                if !subject_matches(rule, ep, &ep_labels) {
                    continue;
                }
                let ri = *ref_idx.get_or_insert_with(|| {
                    out.refs.push(policy_ref(policy));
                    out.refs.len() - 1
                });
                for (di, dir) in [(0, Direction::Ingress), (1, Direction::Egress)] {
                    let sec: &Section = if dir == Direction::Ingress {
                        &rule.ingress
                    } else {
                        &rule.egress
                    };
                    if !sec.selects {
                        continue;
                    }
                    let dp: &mut DirectionPolicy = if di == 0 {
                        &mut out.ingress
                    } else {
                        &mut out.egress
                    };
                    if sec.default_deny {
                        dp.enforced = true;
                        if !dp.selected_by.contains(&ri) {
                            dp.selected_by.push(ri);
                        }
                        all_audit[di] &= audit;
                    }
                    for item in &sec.allow {
                        r.emit(item, dir, policy, Action::Allow, false, ri, &mut maps[di]);
                    }
                    for item in &sec.deny {
                        r.emit(item, dir, policy, Action::Deny, audit, ri, &mut maps[di]);
                    }
                }
            }
        }

        let [ingress, egress] = maps;
        out.ingress.entries = ingress.finish();
        out.egress.entries = egress.finish();
        out.ingress.default_audit = out.ingress.enforced && all_audit[0];
        out.egress.default_audit = out.egress.enforced && all_audit[1];
        out.warnings = r.warnings;
        out
    }
}

fn subject_matches(rule: &Rule, ep: &EndpointView, labels: &[Label<'_>]) -> bool {
    rule.namespace.as_ref().is_none_or(|ns| *ns == ep.namespace) && rule.subject.matches(labels)
}

fn policy_ref(p: &Policy) -> PolicyRef {
    PolicyRef {
        name: p.meta.name.clone(),
        namespace: p.meta.namespace.clone(),
        kind: p.kind,
        labels: p.labels(),
        revision: p.meta.revision,
    }
}

impl Resolver<'_> {
    /// Adds the entries of one item: every peer identity × every L4 block.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        item: &Item,
        dir: Direction,
        policy: &Policy,
        action: Action,
        audit: bool,
        ri: usize,
        map: &mut EntryMap,
    ) {
        let ids: Vec<u32> = match &item.peers {
            None => vec![IDENTITY_ANY],
            Some(peers) => {
                let mut set = BTreeSet::new();
                for p in peers {
                    self.peer_ids(p, &mut set);
                }
                // Any peer subsumes the specific ones in both allow and deny.
                if set.contains(&IDENTITY_ANY) {
                    vec![IDENTITY_ANY]
                } else {
                    set.into_iter().collect()
                }
            }
        };
        if ids.is_empty() {
            return;
        }
        let mut l4 = BTreeSet::new();
        match &item.ports {
            None => {
                l4.insert((0u8, 0u16, 0u8));
            }
            Some(specs) => {
                for s in specs {
                    self.l4(s, dir, policy, &mut l4);
                }
            }
        }
        for id in ids {
            for &(proto, port, port_prefix) in &l4 {
                map.insert(Entry {
                    identity: id,
                    proto,
                    port,
                    port_prefix,
                    action,
                    audit,
                    match_type: match_type(id, proto, port_prefix),
                    policy: ri,
                });
            }
        }
    }

    fn peer_ids(&self, peer: &Peer, out: &mut BTreeSet<u32>) {
        match peer {
            Peer::Selector(sel) => {
                out.extend(
                    self.idents
                        .iter()
                        .filter(|(_, ls)| sel.matches(ls))
                        .map(|(id, _)| *id),
                );
            }
            Peer::Entity(Entity::World) => {
                out.extend([IDENTITY_WORLD, IDENTITY_WORLD_IPV4, IDENTITY_WORLD_IPV6]);
                out.extend(self.cidrs.iter().map(|(id, _)| *id));
                out.extend(self.fqdn.iter().map(|(f, _)| f.identity));
            }
            Peer::Fqdn(sel) => out.extend(
                self.fqdn
                    .iter()
                    .filter(|(f, _)| f.selected_by(sel))
                    .map(|(f, _)| f.identity),
            ),
            Peer::Entity(Entity::Cluster) => {
                out.extend(CLUSTER_RESERVED);
                out.extend(
                    self.universe
                        .identities
                        .range(CLUSTER_IDENTITY_MIN..=CLUSTER_IDENTITY_MAX)
                        .map(|(id, _)| *id),
                );
            }
            Peer::Entity(e) => out.extend(e.reserved_identity()),
            Peer::Cidr { cidr, except } => {
                out.extend(
                    self.cidrs
                        .iter()
                        .filter(|(_, c)| cidr.contains(c) && !except.iter().any(|x| x.contains(c)))
                        .map(|(id, _)| *id),
                );
                out.extend(
                    self.fqdn
                        .iter()
                        .filter(|(_, c)| {
                            c.is_some_and(|c| {
                                cidr.contains(&c) && !except.iter().any(|x| x.contains(&c))
                            })
                        })
                        .map(|(f, _)| f.identity),
                );
                if cidr.is_default() {
                    out.insert(IDENTITY_WORLD);
                    out.insert(if cidr.is_v6() {
                        IDENTITY_WORLD_IPV6
                    } else {
                        IDENTITY_WORLD_IPV4
                    });
                }
            }
        }
    }

    /// Expands one port selection into (proto, port, prefix) blocks.
    fn l4(
        &mut self,
        spec: &PortSpec,
        dir: Direction,
        policy: &Policy,
        out: &mut BTreeSet<(u8, u16, u8)>,
    ) {
        match &spec.port {
            PortSel::Any => out.extend(spec.proto.numbers().into_iter().map(|p| (p, 0, 0))),
            PortSel::Range(lo, hi) => {
                for p in spec.proto.numbers() {
                    out.extend(
                        port_range_prefixes(*lo, *hi)
                            .into_iter()
                            .map(|(port, pfx)| (p, port, pfx)),
                    );
                }
            }
            PortSel::Named(name) => {
                let before = out.len();
                match dir {
                    Direction::Ingress => out.extend(
                        self.ep
                            .named_ports
                            .get(name)
                            .filter(|(p, port)| spec.proto.includes(*p) && *port != 0)
                            .map(|&(p, port)| (p, port, 16)),
                    ),
                    Direction::Egress => out.extend(
                        self.universe
                            .named_ports
                            .get(name)
                            .into_iter()
                            .flatten()
                            .filter(|(p, port)| spec.proto.includes(*p) && *port != 0)
                            .map(|&(p, port)| (p, port, 16)),
                    ),
                }
                if out.len() == before {
                    let where_ = if dir == Direction::Ingress {
                        "on this endpoint"
                    } else {
                        "on any pod"
                    };
                    let ns = if policy.meta.namespace.is_empty() {
                        String::new()
                    } else {
                        format!("{}/", policy.meta.namespace)
                    };
                    let w = format!(
                        "{} {ns}{}: {dir} named port \"{name}\" not found {where_}; nothing matched for it",
                        policy.kind, policy.meta.name
                    );
                    if !self.warnings.contains(&w) {
                        self.warnings.push(w);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use serde_yaml::Value;

    use super::*;
    use crate::model::PolicyMeta;
    use crate::parse::parse;

    fn cnp(name: &str, spec: &str) -> Policy {
        let spec: Value = serde_yaml::from_str(spec).unwrap();
        let meta = PolicyMeta {
            name: name.into(),
            namespace: "demo".into(),
            ..PolicyMeta::default()
        };
        parse("CiliumNetworkPolicy", meta, &spec, &Value::Null).unwrap()
    }

    /// 1,000 identities (10 per app label), 100 policies each allowing one app on one port.
    #[test]
    fn thousand_identities_hundred_rules() {
        let mut identities = BTreeMap::new();
        for i in 0..1000u32 {
            identities.insert(
                CLUSTER_IDENTITY_MIN + i,
                vec![
                    format!("k8s:app=app{}", i % 100),
                    format!("k8s:pod=p{i}"),
                    "k8s:io.kubernetes.pod.namespace=demo".to_string(),
                ],
            );
        }
        let universe = Universe {
            identities,
            named_ports: BTreeMap::new(),
        };
        let policies: Vec<Policy> = (0..100)
            .map(|j| {
                cnp(
                    &format!("p{j:03}"),
                    &format!(
                        "{{endpointSelector: {{}}, ingress: [{{fromEndpoints: [{{matchLabels: {{app: app{j}}}}}], toPorts: [{{ports: [{{port: '{}', protocol: TCP}}]}}]}}], egress: [{{toEntities: [cluster], toPorts: [{{ports: [{{port: '53', protocol: UDP}}]}}]}}]}}",
                        1000 + j
                    ),
                )
            })
            .collect();
        let set = PolicySet::new(policies, false);
        let ep = EndpointView {
            identity: CLUSTER_IDENTITY_MIN,
            labels: universe.identities[&CLUSTER_IDENTITY_MIN].clone(),
            namespace: "demo".into(),
            named_ports: BTreeMap::new(),
        };
        let start = Instant::now();
        let p = set.resolve(&universe, &ep);
        let took = start.elapsed();
        assert_eq!(p.refs.len(), 100);
        // 100 rules × 10 identities × 1 port.
        assert_eq!(p.ingress.entries.len(), 1000);
        // Every rule allows the same cluster keys: 1,000 pods + 6 reserved, merged to the first policy.
        assert_eq!(p.egress.entries.len(), 1006);
        assert!(p.egress.entries.iter().all(|e| e.policy == 0));
        let e = p
            .ingress
            .entries
            .iter()
            .find(|e| e.identity == CLUSTER_IDENTITY_MIN + 105)
            .unwrap();
        assert_eq!((e.proto, e.port, e.port_prefix, e.policy), (6, 1005, 16, 5));
        // Generous bound for unoptimised test builds on a shared machine.
        assert!(took.as_millis() < 2000, "resolve took {took:?}");
    }

    #[test]
    fn cidr_identities_skip_default_route_and_dedup() {
        let a = cnp("a", "{endpointSelector: {}, egress: [{toCIDRSet: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8, 10.0.0.0/8]}]}, {toCIDR: ['::/0', 'fd00::/8', 10.0.0.1/8]}]}");
        let set = PolicySet::new(vec![a], false);
        assert_eq!(
            set.cidr_identities(),
            vec![
                (CIDR_IDENTITY_BASE, "10.0.0.0/8".to_string()),
                (CIDR_IDENTITY_BASE + 1, "fd00::/8".to_string())
            ]
        );
        let universe = Universe::default();
        let ep = EndpointView {
            namespace: "demo".into(),
            ..EndpointView::default()
        };
        let ids: Vec<u32> = set
            .resolve(&universe, &ep)
            .egress
            .entries
            .iter()
            .map(|e| e.identity)
            .collect();
        // 0.0.0.0/0 except 10/8 -> world + world-ipv4; ::/0 -> world + world-ipv6 + fd00::/8; 10/8 -> its identity.
        assert_eq!(
            ids,
            vec![2, 9, 10, CIDR_IDENTITY_BASE, CIDR_IDENTITY_BASE + 1]
        );
    }

    #[test]
    fn selector_selecting_nobody_allows_nothing() {
        let a = cnp(
            "a",
            "{endpointSelector: {}, ingress: [{fromEndpoints: [{matchLabels: {app: ghost}}]}]}",
        );
        let ep = EndpointView {
            namespace: "demo".into(),
            ..EndpointView::default()
        };
        let p = PolicySet::new(vec![a], false).resolve(&Universe::default(), &ep);
        assert!(p.ingress.enforced);
        assert!(p.ingress.entries.is_empty());
    }

    fn fqdn_id(identity: u32, ip: &str, names: &[&str]) -> FqdnIdentity {
        FqdnIdentity {
            identity,
            ip: ip.parse().unwrap(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    const FQDN_POLICY: &str = "{endpointSelector: {matchLabels: {app: client}}, egress: [{toEndpoints: [{matchLabels: {app: dns}}], toPorts: [{ports: [{port: '53', protocol: ANY}], rules: {dns: [{matchPattern: '*.example.test'}, {matchName: api.example.test}]}}]}, {toFQDNs: [{matchName: api.example.test}], toPorts: [{ports: [{port: '80', protocol: TCP}]}]}, {toFQDNs: [{matchPattern: '*.example.test'}]}]}";

    fn client() -> EndpointView {
        EndpointView {
            identity: CLUSTER_IDENTITY_MIN,
            labels: vec![
                "k8s:app=client".into(),
                "k8s:io.kubernetes.pod.namespace=demo".into(),
            ],
            namespace: "demo".into(),
            named_ports: BTreeMap::new(),
        }
    }

    #[test]
    fn to_fqdns_selects_the_identities_of_the_addresses_names_resolved_to() {
        let p = cnp("fqdn", FQDN_POLICY);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let base = crate::fqdn::FQDN_IDENTITY_BASE;
        let set = PolicySet::new(vec![p], false).with_fqdn_identities(vec![
            fqdn_id(base, "192.0.2.10", &["api.example.test"]),
            fqdn_id(base + 1, "192.0.2.11", &["www.example.test"]),
            // The apex: not selected by `*.example.test`.
            fqdn_id(base + 2, "192.0.2.12", &["example.test"]),
            fqdn_id(base + 3, "192.0.2.13", &["other.test"]),
        ]);
        assert_eq!(set.fqdn_selectors().len(), 2);
        let r = set.resolve(&Universe::default(), &client());
        let keys: Vec<(u32, u8, u16)> = r
            .egress
            .entries
            .iter()
            .map(|e| (e.identity, e.proto, e.port))
            .collect();
        assert_eq!(
            keys,
            vec![(base, 0, 0), (base, 6, 80), (base + 1, 0, 0)],
            "{:?}",
            r.egress.entries
        );
        assert!(r.egress.enforced);
        // Nothing resolved yet: the rule allows nothing.
        let empty = PolicySet::new(vec![cnp("fqdn", FQDN_POLICY)], false);
        assert!(empty
            .resolve(&Universe::default(), &client())
            .egress
            .entries
            .is_empty());
    }

    #[test]
    fn cidr_rules_and_world_still_cover_addresses_that_have_names() {
        let p = cnp(
            "c",
            "{endpointSelector: {}, egress: [{toCIDRSet: [{cidr: 192.0.2.0/24, except: [192.0.2.128/25]}]}]}",
        );
        let w = cnp(
            "w",
            "{endpointSelector: {}, egress: [{toEntities: [world]}]}",
        );
        let base = crate::fqdn::FQDN_IDENTITY_BASE;
        let ids = vec![
            fqdn_id(base, "192.0.2.10", &["a.test"]),
            fqdn_id(base + 1, "192.0.2.200", &["b.test"]),
        ];
        let ep = EndpointView {
            namespace: "demo".into(),
            ..EndpointView::default()
        };
        let set = PolicySet::new(vec![p], false).with_fqdn_identities(ids.clone());
        let got: Vec<u32> = set
            .resolve(&Universe::default(), &ep)
            .egress
            .entries
            .iter()
            .map(|e| e.identity)
            .collect();
        assert!(got.contains(&base) && !got.contains(&(base + 1)), "{got:?}");
        let set = PolicySet::new(vec![w], false).with_fqdn_identities(ids);
        let got: Vec<u32> = set
            .resolve(&Universe::default(), &ep)
            .egress
            .entries
            .iter()
            .map(|e| e.identity)
            .collect();
        assert!(got.contains(&base) && got.contains(&(base + 1)), "{got:?}");
    }

    #[test]
    fn dns_policy_merges_the_dns_rules_of_the_rules_selecting_the_endpoint() {
        let set = PolicySet::new(vec![cnp("fqdn", FQDN_POLICY)], false);
        let d = set.dns_policy(&client());
        assert!(d.redirect);
        assert!(d.allows("api.example.test"));
        assert!(d.allows("cdn.example.test"));
        assert!(!d.allows("example.test"));
        assert!(!d.allows("evil.test"));
        assert_eq!(d.selectors.len(), 2);
        // Another endpoint: not selected, nothing redirected.
        let other = EndpointView {
            labels: vec!["k8s:app=web".into()],
            namespace: "demo".into(),
            ..EndpointView::default()
        };
        assert_eq!(set.dns_policy(&other), DnsPolicy::default());
    }

    #[test]
    fn invalid_fqdn_selectors_are_rejected_with_their_path() {
        for (spec, path) in [
            ("{endpointSelector: {}, egress: [{toFQDNs: [{matchName: 'a b'}]}]}", "spec.egress[0].toFQDNs[0].matchName"),
            ("{endpointSelector: {}, egress: [{toFQDNs: [{matchName: a, matchPattern: b}]}]}", "spec.egress[0].toFQDNs[0]"),
            ("{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: '53'}], rules: {dns: [{matchPattern: 'a?'}]}}]}]}", "spec.egress[0].toPorts[0].rules.dns[0].matchPattern"),
        ] {
            let spec: Value = serde_yaml::from_str(spec).unwrap();
            let err = parse("CiliumNetworkPolicy", PolicyMeta::default(), &spec, &Value::Null)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("{path}:")), "{err}");
        }
        // HTTP rules stay unsupported: the item allows nothing, with a warning.
        let p = cnp("h", "{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: '80'}], rules: {http: [{method: GET}]}}]}]}");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("rules.http"), "{:?}", p.warnings);
    }
}
