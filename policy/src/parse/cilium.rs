//! CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy rules (`spec` / `specs`).

use serde_yaml::Value;

use super::common::{cidr_peer, port_spec, selector};
use super::fields::{scalar_string, wrong_type, Obj};
use super::Ctx;
use crate::error::PolicyError;
use crate::fqdn::{normalize, valid_name, valid_pattern, FqdnSelector};
use crate::identity::Entity;
use crate::model::{Item, Peer, Rule, Section};
use crate::ports::{PortSel, PortSpec, Proto};

static NULL: Value = Value::Null;

const RULE_FIELDS: &[&str] = &[
    "endpointSelector",
    "nodeSelector",
    "ingress",
    "ingressDeny",
    "egress",
    "egressDeny",
    "enableDefaultDeny",
    "description",
    "labels",
    "log",
];
const INGRESS_FIELDS: &[&str] = &[
    "fromEndpoints",
    "fromRequires",
    "fromCIDR",
    "fromCIDRSet",
    "fromEntities",
    "fromGroups",
    "fromNodes",
    "toPorts",
    "icmps",
    "authentication",
];
const INGRESS_DENY_FIELDS: &[&str] = &[
    "fromEndpoints",
    "fromRequires",
    "fromCIDR",
    "fromCIDRSet",
    "fromEntities",
    "fromGroups",
    "fromNodes",
    "toPorts",
    "icmps",
];
const EGRESS_FIELDS: &[&str] = &[
    "toEndpoints",
    "toRequires",
    "toCIDR",
    "toCIDRSet",
    "toEntities",
    "toGroups",
    "toNodes",
    "toServices",
    "toFQDNs",
    "toPorts",
    "icmps",
    "authentication",
];
const EGRESS_DENY_FIELDS: &[&str] = &[
    "toEndpoints",
    "toRequires",
    "toCIDR",
    "toCIDRSet",
    "toEntities",
    "toGroups",
    "toNodes",
    "toServices",
    "toPorts",
    "icmps",
];
const PORT_RULE_FIELDS: &[&str] = &[
    "ports",
    "rules",
    "serverNames",
    "originatingTLS",
    "terminatingTLS",
    "listener",
];
const PORT_DENY_RULE_FIELDS: &[&str] = &["ports"];

/// Unsupported fields that select peers by means Lumen cannot resolve, with a description.
const UNSUPPORTED_PEERS: &[(&str, &str)] = &[
    ("fromRequires", "requirements"),
    ("toRequires", "requirements"),
    ("fromGroups", "cloud provider groups"),
    ("toGroups", "cloud provider groups"),
    ("fromNodes", "node selectors"),
    ("toNodes", "node selectors"),
    ("toServices", "service selectors"),
];
/// Unsupported fields that restrict an item further, with a description.
const UNSUPPORTED_CONSTRAINTS: &[(&str, &str)] = &[
    ("icmps", "ICMP rules"),
    ("authentication", "mutual authentication"),
];
/// Unsupported fields of a `toPorts` entry, with a description.
const UNSUPPORTED_PORT_RULE: &[(&str, &str)] = &[
    ("serverNames", "TLS SNI matching"),
    ("originatingTLS", "TLS origination"),
    ("terminatingTLS", "TLS termination"),
    ("listener", "Envoy listeners"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

/// Parses the rules of a Cilium policy from its `spec` and/or `specs`.
pub(crate) fn rules(ctx: &mut Ctx, spec: &Value, specs: &Value) -> Result<Vec<Rule>, PolicyError> {
    if spec.is_null() && specs.is_null() {
        return Err(PolicyError::MissingSpec);
    }
    let mut out = Vec::new();
    if !spec.is_null() {
        out.extend(rule(ctx, "spec", spec)?);
    }
    match specs {
        Value::Null => {}
        Value::Sequence(seq) => {
            for (i, v) in seq.iter().enumerate() {
                out.extend(rule(ctx, &format!("specs[{i}]"), v)?);
            }
        }
        _ => return Err(wrong_type("specs", "a list")),
    }
    Ok(out)
}

fn rule(ctx: &mut Ctx, path: &str, v: &Value) -> Result<Option<Rule>, PolicyError> {
    let o = Obj::new(path, v, RULE_FIELDS)?;
    let subject = o
        .get("endpointSelector")
        .map(|v| selector(&o.path_of("endpointSelector"), v))
        .transpose()?;
    if let Some(v) = o.get("nodeSelector") {
        selector(&o.path_of("nodeSelector"), v)?;
    }
    let dd = Obj::new(
        &o.path_of("enableDefaultDeny"),
        o.get("enableDefaultDeny").unwrap_or(&NULL),
        &["ingress", "egress"],
    )?;
    let ingress = section(ctx, &o, Dir::Ingress, dd.bool("ingress")?.unwrap_or(true))?;
    let egress = section(ctx, &o, Dir::Egress, dd.bool("egress")?.unwrap_or(true))?;
    if o.has("nodeSelector") {
        ctx.warnings.push(format!(
            "{}: unsupported (host policies); rule ignored",
            o.path_of("nodeSelector")
        ));
        return Ok(None);
    }
    let subject = subject.ok_or_else(|| PolicyError::MissingField {
        path: o.path_of("endpointSelector"),
    })?;
    Ok(Some(Rule {
        subject,
        namespace: ctx.namespace.clone(),
        ingress,
        egress,
    }))
}

fn section(
    ctx: &mut Ctx,
    o: &Obj<'_>,
    dir: Dir,
    default_deny: bool,
) -> Result<Section, PolicyError> {
    let (allow_key, deny_key) = match dir {
        Dir::Ingress => ("ingress", "ingressDeny"),
        Dir::Egress => ("egress", "egressDeny"),
    };
    let allow_items = o.list_or_empty(allow_key)?;
    let deny_items = o.list_or_empty(deny_key)?;
    let mut sec = Section {
        selects: !allow_items.is_empty() || !deny_items.is_empty(),
        default_deny,
        ..Section::default()
    };
    for (p, v) in allow_items {
        sec.allow.extend(item(ctx, dir, false, &p, v)?);
    }
    for (p, v) in deny_items {
        sec.deny.extend(item(ctx, dir, true, &p, v)?);
    }
    Ok(sec)
}

/// Parses one ingress/egress(/Deny) item. `None` when the item can match nothing: it is empty,
/// or (allow items) it uses an unsupported field, which must never widen what is allowed.
fn item(
    ctx: &mut Ctx,
    dir: Dir,
    deny: bool,
    path: &str,
    v: &Value,
) -> Result<Option<Item>, PolicyError> {
    let (fields, pre) = match (dir, deny) {
        (Dir::Ingress, false) => (INGRESS_FIELDS, "from"),
        (Dir::Ingress, true) => (INGRESS_DENY_FIELDS, "from"),
        (Dir::Egress, false) => (EGRESS_FIELDS, "to"),
        (Dir::Egress, true) => (EGRESS_DENY_FIELDS, "to"),
    };
    let o = Obj::new(path, v, fields)?;
    // (field path, description, whether it selects peers)
    let mut unsupported: Vec<(String, &str, bool)> = Vec::new();
    let mut peers = Vec::new();

    for (p, s) in o.list_or_empty(&format!("{pre}Endpoints"))? {
        let mut sel = selector(&p, s)?;
        if let Some(ns) = &ctx.namespace {
            if !sel.constrains_namespace() && !sel.targets_reserved() {
                sel.restrict_to_namespace(ns);
            }
        }
        peers.push(Peer::Selector(sel));
    }
    for (p, c) in o.list_or_empty(&format!("{pre}CIDR"))? {
        peers.push(cidr_peer(&p, c, Vec::new())?);
    }
    for (p, e) in o.list_or_empty(&format!("{pre}CIDRSet"))? {
        let eo = Obj::new(
            &p,
            e,
            &["cidr", "except", "cidrGroupRef", "cidrGroupSelector"],
        )?;
        let group = ["cidrGroupRef", "cidrGroupSelector"]
            .into_iter()
            .find(|f| eo.has(f));
        if let Some(f) = group {
            unsupported.push((eo.path_of(f), "CIDR groups", true));
        }
        match eo.get("cidr") {
            Some(c) => peers.push(cidr_peer(
                &eo.path_of("cidr"),
                c,
                eo.list_or_empty("except")?,
            )?),
            None if group.is_none() => {
                return Err(PolicyError::MissingField {
                    path: eo.path_of("cidr"),
                })
            }
            None => {}
        }
    }
    for (p, e) in o.list_or_empty(&format!("{pre}Entities"))? {
        let s = scalar_string(&p, e)?;
        let ent = Entity::parse(&s).ok_or(PolicyError::UnknownEntity { path: p, value: s })?;
        peers.push(Peer::Entity(ent));
    }
    if dir == Dir::Egress && !deny {
        for (p, f) in o.list_or_empty("toFQDNs")? {
            peers.push(Peer::Fqdn(fqdn_selector(&p, f)?));
        }
    }
    for &(f, what) in UNSUPPORTED_PEERS {
        if fields.contains(&f) && o.has(f) {
            unsupported.push((o.path_of(f), what, true));
        }
    }
    for &(f, what) in UNSUPPORTED_CONSTRAINTS {
        if fields.contains(&f) && o.has(f) {
            unsupported.push((o.path_of(f), what, false));
        }
    }

    let mut ports = Vec::new();
    let mut dns: Option<Vec<FqdnSelector>> = None;
    let port_rules = o.list_or_empty("toPorts")?;
    let has_ports = !port_rules.is_empty();
    for (p, pr) in port_rules {
        let po = Obj::new(
            &p,
            pr,
            if deny {
                PORT_DENY_RULE_FIELDS
            } else {
                PORT_RULE_FIELDS
            },
        )?;
        for &(f, what) in UNSUPPORTED_PORT_RULE {
            if po.has(f) {
                unsupported.push((po.path_of(f), what, false));
            }
        }
        if let Some(r) = po.get("rules") {
            let ro = Obj::new(&po.path_of("rules"), r, L7_RULE_FIELDS)?;
            for f in L7_RULE_FIELDS.iter().filter(|f| **f != "dns") {
                if ro.has(f) {
                    unsupported.push((ro.path_of(f), "L7 rules", false));
                }
            }
            if ro.has("dns") {
                if dir == Dir::Egress {
                    let names = dns.get_or_insert_with(Vec::new);
                    for (dp, d) in ro.list_or_empty("dns")? {
                        names.push(fqdn_selector(&dp, d)?);
                    }
                } else {
                    unsupported.push((ro.path_of("dns"), "ingress DNS rules", false));
                }
            }
        }
        let entries = po.list_or_empty("ports")?;
        if entries.is_empty() {
            ports.push(PortSpec {
                port: PortSel::Any,
                proto: Proto::Any,
            });
        }
        for (pp, pv) in entries {
            let ppo = Obj::new(&pp, pv, &["port", "endPort", "protocol"])?;
            ports.push(port_spec(&ppo, Proto::Any, true)?);
        }
    }

    let dir_name = if dir == Dir::Ingress {
        "ingress"
    } else {
        "egress"
    };
    if !unsupported.is_empty() {
        for (p, what, _) in &unsupported {
            ctx.warnings.push(if deny {
                format!("{p}: unsupported ({what}); ignored, which widens this {dir_name} deny rule (fail-closed)")
            } else {
                format!("{p}: unsupported ({what}); this {dir_name} rule allows nothing")
            });
        }
        if !deny {
            return Ok(None);
        }
    }
    let unresolvable_peer = unsupported.iter().any(|u| u.2);
    if peers.is_empty() && !has_ports && unsupported.is_empty() {
        // Cilium: an item with neither L3 nor L4 selects nothing.
        return Ok(None);
    }
    Ok(Some(Item {
        peers: if peers.is_empty() || unresolvable_peer {
            None
        } else {
            Some(peers)
        },
        ports: if has_ports { Some(ports) } else { None },
        dns,
    }))
}

/// L7 rule kinds of a `toPorts` entry; only `dns` is supported.
const L7_RULE_FIELDS: &[&str] = &["dns", "http", "kafka", "l7proto", "l7"];

/// Parses one `{matchName: ...}` or `{matchPattern: ...}` (`toFQDNs`, `rules.dns`).
fn fqdn_selector(path: &str, v: &Value) -> Result<FqdnSelector, PolicyError> {
    let o = Obj::new(path, v, &["matchName", "matchPattern"])?;
    match (o.string("matchName")?, o.string("matchPattern")?) {
        (Some(n), None) if valid_name(&n) => Ok(FqdnSelector::Name(normalize(&n))),
        (Some(_), None) => Err(wrong_type(
            &o.path_of("matchName"),
            "a DNS name (letters, digits, '-', '_' and '.')",
        )),
        (None, Some(p)) if valid_pattern(&p) => Ok(FqdnSelector::Pattern(normalize(&p))),
        (None, Some(_)) => Err(wrong_type(
            &o.path_of("matchPattern"),
            "a DNS name pattern (letters, digits, '-', '_', '.' and '*')",
        )),
        _ => Err(wrong_type(
            path,
            "exactly one of matchName and matchPattern",
        )),
    }
}
