//! Regeneration: from the identities, the local endpoints and the policies in force to
//! what the kernel maps must hold, what flows need to name policies, and what the admin
//! CLI shows. A pure function of its inputs, so it is tested without a kernel.

use super::attribution::{Attribution, RuleRefs};
use crate::{
    datapath::maps::{ipcache_prefix, DesiredMaps},
    ipcache::IpCache,
    state::ClusterState,
};
use lumen_abi::{
    action, direction, ep_flags, policy_flags, EndpointValue, PolicyKey, PolicyValue,
    POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_PROTO, RULE_REF_NONE,
};
use lumen_policy::{Action, DirectionPolicy, EndpointView, PolicySet, Universe};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

/// Hubble's `policy_match_type` for "any peer, any port".
const MATCH_ALL: u8 = 4;
/// Hubble's `policy_match_type` for "this peer, any port".
const MATCH_L3_ONLY: u8 = 1;

/// One rule of an endpoint's effective policy, as `lumen policy get` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleReport {
    /// Peer identity (0: any).
    pub identity: u32,
    /// Peer labels (empty for any).
    pub peer: Vec<String>,
    /// `TCP`, `UDP`, `SCTP` or `ANY`.
    pub protocol: String,
    /// `80`, `8000-8063` (one aligned block), or `ANY`.
    pub ports: String,
    /// `allow`, `deny` or `audit` (a deny that only reports).
    pub action: String,
    /// `Kind namespace/name` of the policy, or the built-in reason.
    pub policy: String,
}

/// One direction of an endpoint's effective policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DirectionReport {
    /// Default-deny in this direction.
    pub enforced: bool,
    /// Default-deny only reports (audit mode).
    pub audit: bool,
    /// Policies selecting the endpoint in this direction.
    pub selected_by: Vec<String>,
    /// Rules, most specific first.
    pub rules: Vec<RuleReport>,
}

/// A local endpoint and its effective policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointReport {
    /// Endpoint id.
    pub id: u32,
    /// Host-side interface.
    pub interface: String,
    /// `namespace/pod`.
    pub pod: String,
    /// Identity.
    pub identity: u32,
    /// Security labels.
    pub labels: Vec<String>,
    /// Addresses.
    pub ips: Vec<String>,
    /// Ingress.
    pub ingress: DirectionReport,
    /// Egress.
    pub egress: DirectionReport,
    /// Problems resolving its policy (e.g. a named port it does not have).
    pub warnings: Vec<String>,
}

/// The result of a regeneration.
#[derive(Debug, Default)]
pub struct Regenerated {
    /// What the kernel maps must hold.
    pub maps: DesiredMaps,
    /// Naming policies in flows.
    pub attribution: Attribution,
    /// Local endpoints with their policies.
    pub endpoints: Vec<EndpointReport>,
    /// Every identity with its labels (cluster, reserved and CIDR).
    pub identities: BTreeMap<u32, Vec<String>>,
    /// Local endpoints by address, with what their policy asks of the DNS proxy.
    pub dns: HashMap<std::net::IpAddr, crate::dns::EndpointDns>,
}

fn proto_name(p: u8) -> String {
    match p {
        0 => "ANY".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

fn ports_text(port: u16, prefix: u8, proto: u8) -> String {
    if proto == 0 || prefix == 0 {
        return "ANY".into();
    }
    if prefix >= 16 {
        return port.to_string();
    }
    let span = 1u32 << (16 - prefix as u32);
    format!("{port}-{}", port as u32 + span - 1)
}

/// Builds everything from the ipcache snapshot, the state and the policies in force.
pub fn regenerate(
    ipcache: &IpCache,
    state: &ClusterState,
    set: &PolicySet,
    refs: &mut RuleRefs,
) -> Regenerated {
    let mut out = Regenerated::default();
    let mut identities = ipcache.identities().clone();
    let cidrs = set.cidr_identities();
    for (id, prefix) in &cidrs {
        let labels = vec![format!("cidr:{prefix}"), "reserved:world".to_string()];
        out.attribution
            .cidr_labels
            .insert(*id, Arc::new(labels.clone()));
        identities.insert(*id, labels);
        if let Ok(net) = prefix.parse::<ipnet::IpNet>() {
            out.maps.ipcache.insert(ipcache_prefix(&net), *id);
        }
    }
    // Addresses `toFQDNs` names resolved to: a /32 (/128) each, labelled like Cilium's
    // CIDR identities plus the names, under the pods' own addresses.
    for f in set.fqdn_identities() {
        let net = ipnet::IpNet::from(f.ip);
        let mut labels = vec![format!("cidr:{net}")];
        labels.extend(f.names.iter().map(|n| format!("fqdn:{n}")));
        labels.push("reserved:world".to_string());
        out.attribution
            .cidr_labels
            .insert(f.identity, Arc::new(labels.clone()));
        identities.insert(f.identity, labels);
        out.maps.ipcache.insert(ipcache_prefix(&net), f.identity);
    }
    for (ip, identity) in ipcache.addresses() {
        out.maps
            .ipcache
            .insert(ipcache_prefix(&ipnet::IpNet::from(ip)), identity);
    }
    let mut named_ports: BTreeMap<String, BTreeSet<(u8, u16)>> = BTreeMap::new();
    for p in state.pods.values() {
        for (name, pp) in &p.named_ports {
            named_ports.entry(name.clone()).or_default().insert(*pp);
        }
    }
    let universe = Universe {
        identities: ipcache
            .identities()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
        named_ports,
    };
    out.attribution.rules = HashMap::new();

    for (ifindex, local) in ipcache.locals() {
        let ep = &local.endpoint;
        let pod = state.pod(&ep.namespace, &ep.pod_name);
        let view = EndpointView {
            identity: ep.identity,
            labels: ep.labels.clone(),
            namespace: ep.namespace.clone(),
            named_ports: pod.map(|p| p.named_ports.clone()).unwrap_or_default(),
        };
        let resolved = set.resolve(&universe, &view);
        let dns = set.dns_policy(&view);
        let ids: Vec<u32> = resolved.refs.iter().map(|r| refs.id(r)).collect();
        let mut flags = 0;
        let mut report = EndpointReport {
            id: ep.id,
            interface: local.ifname.to_string(),
            pod: format!("{}/{}", ep.namespace, ep.pod_name),
            identity: ep.identity,
            labels: ep.labels.clone(),
            ips: ipcache
                .ips_of_endpoint(ep.id)
                .iter()
                .map(|i| i.to_string())
                .collect(),
            ingress: DirectionReport::default(),
            egress: DirectionReport::default(),
            warnings: resolved.warnings.clone(),
        };
        for (dir, dp, enforced_bit, audit_bit) in [
            (
                direction::INGRESS,
                &resolved.ingress,
                ep_flags::INGRESS_ENFORCED,
                ep_flags::INGRESS_AUDIT,
            ),
            (
                direction::EGRESS,
                &resolved.egress,
                ep_flags::EGRESS_ENFORCED,
                ep_flags::EGRESS_AUDIT,
            ),
        ] {
            let names: Vec<_> = dp
                .selected_by
                .iter()
                .filter_map(|i| resolved.refs.get(*i))
                .map(super::attribution::api_policy)
                .collect();
            let selected_text = names
                .iter()
                .map(|p| policy_text(&p.kind, &p.namespace, &p.name))
                .collect();
            if !names.is_empty() {
                out.attribution
                    .default_deny
                    .insert((ep.id, dir), Arc::new(names));
            }
            let dr = write_direction(
                &mut out.maps,
                ep.id,
                dir,
                dp,
                &ids,
                &resolved.refs,
                &identities,
            );
            if dp.enforced || !dp.entries.is_empty() {
                flags |= enforced_bit;
            }
            if dp.enforced && dp.default_audit {
                flags |= audit_bit;
            }
            let r = DirectionReport {
                enforced: dp.enforced,
                audit: dp.enforced && dp.default_audit,
                selected_by: selected_text,
                rules: dr,
            };
            if dir == direction::INGRESS {
                report.ingress = r;
            } else {
                report.egress = r;
            }
        }
        if dns.redirect {
            flags |= ep_flags::DNS_REDIRECT;
        }
        for ip in ipcache.ips_of_endpoint(ep.id) {
            out.dns.insert(
                ip,
                crate::dns::EndpointDns {
                    id: ep.id,
                    ifindex: *ifindex,
                    identity: ep.identity,
                    policy: dns.clone(),
                },
            );
        }
        out.maps.endpoints.insert(
            *ifindex,
            EndpointValue {
                endpoint_id: ep.id,
                identity: ep.identity,
                flags,
                _pad: 0,
            },
        );
        out.endpoints.push(report);
    }
    out.endpoints.sort_by_key(|e| e.id);
    out.attribution.rules = refs.snapshot();
    out.identities = identities;
    out
}

fn policy_text(kind: &str, ns: &str, name: &str) -> String {
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

/// Writes one direction's entries into the desired policy map and describes them.
fn write_direction(
    maps: &mut DesiredMaps,
    ep: u32,
    dir: u8,
    dp: &DirectionPolicy,
    ids: &[u32],
    refs: &[lumen_policy::PolicyRef],
    identities: &BTreeMap<u32, Vec<String>>,
) -> Vec<RuleReport> {
    let mut rules = vec![];
    let key = |identity: u32, proto: u8, port: u16, port_prefix: u8| {
        let (plen, port) = if proto == 0 {
            (POLICY_PREFIX_ANY_PROTO, 0)
        } else {
            let bits = port_prefix.min(16) as u32;
            let mask = if bits == 0 {
                0
            } else {
                u16::MAX << (16 - bits)
            };
            (POLICY_PREFIX_PROTO + bits, port & mask)
        };
        (
            plen,
            PolicyKey {
                endpoint_id: ep,
                identity,
                direction: dir,
                proto,
                port_be: port.to_be_bytes(),
            },
        )
    };
    for e in &dp.entries {
        let deny = matches!(e.action, Action::Deny);
        maps.policy.insert(
            key(e.identity, e.proto, e.port, e.port_prefix),
            PolicyValue {
                action: if deny { action::DENY } else { action::ALLOW },
                flags: if e.audit { policy_flags::AUDIT } else { 0 },
                match_type: e.match_type,
                _pad: 0,
                rule_ref: ids.get(e.policy).copied().unwrap_or(RULE_REF_NONE),
            },
        );
        let r = refs.get(e.policy);
        rules.push(RuleReport {
            identity: e.identity,
            peer: identities.get(&e.identity).cloned().unwrap_or_default(),
            protocol: proto_name(e.proto),
            ports: ports_text(e.port, e.port_prefix, e.proto),
            action: match (deny, e.audit) {
                (false, _) => "allow",
                (true, false) => "deny",
                (true, true) => "audit",
            }
            .into(),
            policy: r
                .map(|r| policy_text(&r.kind.to_string(), &r.namespace, &r.name))
                .unwrap_or_default(),
        });
    }
    let builtin = |maps: &mut DesiredMaps,
                   rules: &mut Vec<RuleReport>,
                   identity: u32,
                   match_type: u8,
                   why: &str| {
        maps.policy
            .entry(key(identity, 0, 0, 0))
            .or_insert(PolicyValue {
                action: action::ALLOW,
                flags: 0,
                match_type,
                _pad: 0,
                rule_ref: RULE_REF_NONE,
            });
        rules.push(RuleReport {
            identity,
            peer: identities.get(&identity).cloned().unwrap_or_default(),
            protocol: "ANY".into(),
            ports: "ANY".into(),
            action: "allow".into(),
            policy: why.into(),
        });
    };
    if dp.enforced && dir == direction::INGRESS {
        // Cilium's allow-localhost: the node itself (kubelet probes) always reaches its pods.
        builtin(
            maps,
            &mut rules,
            crate::identity::reserved::HOST,
            MATCH_L3_ONLY,
            "(allow-localhost)",
        );
    }
    if !dp.enforced && !dp.entries.is_empty() {
        // Deny rules without default deny: everything else stays allowed.
        builtin(maps, &mut rules, 0, MATCH_ALL, "(no default deny)");
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        endpoints::LocalEndpoint, ipcache::NodeView, policy::PolicyEngine,
        state::manifests::parse_objects,
    };
    use std::path::Path;

    const STATE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: demo, labels: {app: client}}\nspec: {nodeName: n1}\nstatus: {podIP: 10.100.1.2}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace: demo, labels: {app: server}}\nspec: {nodeName: n1, containers: [{ports: [{name: http, containerPort: 8080}]}]}\nstatus: {podIP: 10.100.1.3}\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-http, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: server}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n    toPorts: [{ports: [{port: http, protocol: TCP}]}]\n  egress:\n  - toCIDRSet: [{cidr: 192.0.2.0/24, except: [192.0.2.7/32]}]\n";

    fn setup() -> (IpCache, ClusterState, PolicySet) {
        let (state, problems) =
            ClusterState::from_objects(parse_objects(Path::new("t.yaml"), STATE).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        let locals: Vec<LocalEndpoint> = serde_json::from_str(
            r#"[{"id":4,"spec":{"attachment":{"container_id":"c1","ifname":"eth0"},"netns":"/run/netns/x","host_ifname":"lxc4","host_ifindex":40,"ip":"10.100.1.3","mac":"02:00:00:00:00:01","pod_namespace":"demo","pod_name":"server"}}]"#,
        )
        .unwrap();
        let cache = IpCache::build(
            &state,
            &locals,
            &NodeView {
                node_name: "n1",
                cluster: "lab",
                host_ips: &[],
                uplinks: &[],
            },
        );
        let mut engine = PolicyEngine::default();
        engine.update(&state);
        (cache, state, engine.policy_set(false))
    }

    #[test]
    fn a_policy_becomes_endpoint_flags_rules_and_cidr_identities() {
        let (cache, state, set) = setup();
        let mut refs = RuleRefs::default();
        let r = regenerate(&cache, &state, &set, &mut refs);
        let ep = r.maps.endpoints[&40];
        assert_eq!(ep.endpoint_id, 4);
        assert_eq!(
            ep.flags & ep_flags::INGRESS_ENFORCED,
            ep_flags::INGRESS_ENFORCED
        );
        assert_eq!(
            ep.flags & ep_flags::EGRESS_ENFORCED,
            ep_flags::EGRESS_ENFORCED
        );
        assert_eq!(
            ep.flags & (ep_flags::INGRESS_AUDIT | ep_flags::EGRESS_AUDIT),
            0
        );

        let client_id = cache.lookup(&"10.100.1.2".parse().unwrap()).identity;
        // Ingress: the client's identity on TCP 8080 (the named port), exact port.
        let (plen, key) = r
            .maps
            .policy
            .keys()
            .find(|(_, k)| k.direction == direction::INGRESS && k.identity == client_id)
            .copied()
            .expect("an ingress entry for the client");
        assert_eq!(plen, lumen_abi::POLICY_PREFIX_FULL);
        assert_eq!((key.proto, u16::from_be_bytes(key.port_be)), (6, 8080));
        let v = r.maps.policy[&(plen, key)];
        assert_eq!((v.action, v.match_type), (action::ALLOW, 2));
        assert_eq!(r.attribution.rules[&v.rule_ref].name, "allow-http");
        // The host always reaches its pods (allow-localhost).
        assert!(r
            .maps
            .policy
            .keys()
            .any(|(p, k)| *p == POLICY_PREFIX_ANY_PROTO
                && k.identity == crate::identity::reserved::HOST
                && k.direction == direction::INGRESS));

        // Egress CIDR with except: two CIDR identities in the ipcache, only the outer allowed.
        let cidr_ids: Vec<u32> = r.attribution.cidr_labels.keys().copied().collect();
        assert_eq!(cidr_ids.len(), 2);
        let egress: Vec<_> = r
            .maps
            .policy
            .iter()
            .filter(|((_, k), _)| k.direction == direction::EGRESS)
            .collect();
        assert_eq!(egress.len(), 1, "{egress:?}");
        let allowed = egress[0].0 .1.identity;
        assert!(r.attribution.cidr_labels[&allowed].contains(&"cidr:192.0.2.0/24".to_string()));
        let (outer, _) = ipcache_prefix(&"192.0.2.0/24".parse().unwrap());
        assert_eq!(r.maps.ipcache[&(outer, 120)], allowed);
        // Pod addresses are in the kernel ipcache too, as /32 (128 in the mapped space).
        let (addr, _) = ipcache_prefix(&"10.100.1.2/32".parse().unwrap());
        assert_eq!(r.maps.ipcache[&(addr, 128)], client_id);
        // Default deny names the policy that selects the endpoint.
        assert_eq!(
            r.attribution.default_deny[&(4, direction::EGRESS)][0].name,
            "allow-http"
        );
    }

    #[test]
    fn rule_references_are_stable_across_regenerations() {
        let (cache, state, set) = setup();
        let mut refs = RuleRefs::default();
        let a = regenerate(&cache, &state, &set, &mut refs);
        let b = regenerate(&cache, &state, &set, &mut refs);
        assert_eq!(a.maps, b.maps);
    }

    #[test]
    fn fqdn_addresses_get_ipcache_entries_and_dns_policies_redirect() {
        let (cache, state, _) = setup();
        let fqdn = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: fqdn, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: server}}\n  egress:\n  - toFQDNs: [{matchPattern: '*.example.test'}]\n";
        let (st, _) = ClusterState::from_objects(parse_objects(Path::new("f.yaml"), fqdn).unwrap());
        let mut engine = PolicyEngine::default();
        engine.update(&st);
        let base = lumen_policy::FQDN_IDENTITY_BASE;
        let set = engine
            .policy_set(false)
            .with_fqdn_identities(vec![lumen_policy::FqdnIdentity {
                identity: base,
                ip: "192.0.2.10".parse().unwrap(),
                names: vec!["api.example.test".into()],
            }]);
        let r = regenerate(&cache, &state, &set, &mut RuleRefs::default());
        let (addr, _) = ipcache_prefix(&"192.0.2.10/32".parse().unwrap());
        assert_eq!(r.maps.ipcache[&(addr, 128)], base);
        assert_eq!(
            r.identities[&base],
            vec![
                "cidr:192.0.2.10/32",
                "fqdn:api.example.test",
                "reserved:world"
            ]
        );
        assert!(r
            .maps
            .policy
            .keys()
            .any(|(_, k)| k.identity == base && k.direction == direction::EGRESS));
        assert_eq!(
            r.maps.endpoints[&40].flags & ep_flags::DNS_REDIRECT,
            ep_flags::DNS_REDIRECT
        );
        let ep = &r.dns[&"10.100.1.3".parse().unwrap()];
        assert_eq!((ep.id, ep.ifindex), (4, 40));
        assert!(ep.policy.redirect);
    }
}
