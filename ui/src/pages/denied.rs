//! The denied page (`/denied`): flows dropped by policy (the CLI's `--verdict
//! policy_denied`), grouped by source workload, destination workload, destination port and
//! protocol, and denying policy, most recently seen first — the "missing allow rule"
//! worklist. Each group links to the flows page filtered to it.

use super::{html, Layout};
use crate::{
    app::App,
    error::PageError,
    query::{self, FlowQuery},
    view::{self, Peer},
};
use askama::Template;
use axum::{
    extract::{RawQuery, State},
    response::Html,
};
use hubble_cli::format::format_timestamp;
use lumen_api::{flow::Flow, wkt::Timestamp};
use std::{collections::HashMap, time::SystemTime};

/// One group of denied flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The source workload.
    pub source: Peer,
    /// The destination workload.
    pub destination: Peer,
    /// Destination port (empty for port-less protocols).
    pub port: String,
    /// Protocol (`tcp`, `udp`, ...; empty when unknown).
    pub protocol: String,
    /// The denying policies, or empty when no allow rule matched (default deny).
    pub policy: String,
    /// How many flows.
    pub count: u64,
    /// The newest flow's time.
    pub last_seen: Option<Timestamp>,
    /// The flows page query selecting the group.
    pub query: String,
    /// The equivalent `hubble observe` command.
    pub cli: String,
}

impl Group {
    /// `last_seen` as the flows table shows times.
    pub fn last_seen_text(&self) -> String {
        format_timestamp(self.last_seen.as_ref())
    }
}

fn key_of(t: Option<&Timestamp>) -> (i64, i32) {
    t.map_or((i64::MIN, 0), |t| (t.seconds, t.nanos))
}

/// Groups the policy-denied flows among `flows`, most recently seen first (ties by count).
pub fn group(flows: &[Flow]) -> Vec<Group> {
    let mut groups: HashMap<(Peer, Peer, String, String, String), Group> = HashMap::new();
    for f in flows.iter().filter(|f| view::is_policy_denied(f)) {
        let source = Peer::of(f, true);
        let destination = Peer::of(f, false);
        let port = hubble_cli::format::ports(f)
            .1
            .filter(|p| *p != 0)
            .map_or(String::new(), |p| p.to_string());
        let protocol = view::protocol_name(f).unwrap_or_default().to_string();
        let policy = view::attributed_policies(f)
            .iter()
            .map(|p| view::policy_name(p))
            .collect::<Vec<_>>()
            .join(", ");
        let key = (source, destination, port, protocol, policy);
        let g = groups.entry(key.clone()).or_insert_with(|| {
            let (source, destination, port, protocol, policy) = key;
            let mut pairs = vec![
                (source.param(true), source.value.clone()),
                (destination.param(false), destination.value.clone()),
            ];
            if !port.is_empty() {
                pairs.push(("to_port".into(), port.clone()));
            }
            if !protocol.is_empty() {
                pairs.push(("protocol".into(), protocol.clone()));
            }
            pairs.push(("verdict".into(), "policy_denied".into()));
            let pairs = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            Group {
                source,
                destination,
                port,
                protocol,
                policy,
                count: 0,
                last_seen: None,
                query: query::encode(pairs.clone()),
                cli: query::cli_command(pairs),
            }
        });
        g.count += 1;
        if key_of(f.time.as_ref()) >= key_of(g.last_seen.as_ref()) {
            g.last_seen = f.time;
        }
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    out.sort_by(|a, b| {
        key_of(b.last_seen.as_ref())
            .cmp(&key_of(a.last_seen.as_ref()))
            .then(b.count.cmp(&a.count))
            .then_with(|| a.query.cmp(&b.query))
    });
    out
}

/// The denied page.
#[derive(Template)]
#[template(path = "denied.html")]
pub struct DeniedPage {
    layout: Layout,
    namespace: String,
    since: String,
    groups: Vec<Group>,
    flows: usize,
    read: u64,
}

/// The page for the flows read (at most `read`).
pub fn view(q: &FlowQuery, flows: &[Flow], read: u64) -> DeniedPage {
    DeniedPage {
        layout: Layout::new("Denied flows", "denied"),
        namespace: q.get("namespace").unwrap_or_default().to_string(),
        since: q.get("since").unwrap_or_default().to_string(),
        groups: group(flows),
        flows: flows.iter().filter(|f| view::is_policy_denied(f)).count(),
        read,
    }
}

/// `GET /denied` (takes the flows page's filters, e.g. `namespace`, `since`).
pub async fn page(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let now = SystemTime::now();
    let q = FlowQuery::parse(raw.as_deref(), now)?;
    let denied = q.with(&[("verdict", "policy_denied")], now)?;
    let flows = app
        .relay
        .flows(denied.request(app.config.denied_flows, false))
        .await?;
    html(&view(&q, &flows, app.config.denied_flows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::{denied, flow};
    use lumen_api::flow::{Endpoint, Verdict};

    #[test]
    fn groups_by_workloads_port_and_policy() {
        let mut other_pod = denied("b", 30);
        if let Some(s) = other_pod.source.as_mut() {
            s.pod_name = "client-7d9f-xyz".into(); // same Deployment `client`
        }
        let mut world = denied("c", 20);
        world.source = Some(Endpoint {
            identity: 2,
            ..Default::default()
        });
        world.ingress_denied_by.clear();
        let flows = vec![
            denied("a", 10),
            other_pod,
            world,
            flow("d", Verdict::Forwarded),
            flow("e", Verdict::Dropped), // dropped, but not by policy
        ];
        let groups = group(&flows);
        assert_eq!(groups.len(), 2, "{groups:#?}");
        let g = &groups[0];
        assert_eq!(g.source.label, "demo/client");
        assert_eq!(g.destination.label, "demo/server-xyz");
        assert_eq!((g.port.as_str(), g.protocol.as_str()), ("8080", "tcp"));
        assert_eq!(g.policy, "demo/deny-all");
        assert_eq!(g.count, 2);
        assert_eq!(g.last_seen.unwrap().seconds, 30);
        assert_eq!(
            g.query,
            "from_pod=demo%2Fclient&to_pod=demo%2Fserver-xyz&to_port=8080&protocol=tcp&verdict=policy_denied"
        );
        // The link is a valid flows page query.
        assert!(FlowQuery::parse(Some(&g.query), SystemTime::now()).is_ok());
        let w = &groups[1];
        assert_eq!(w.source.label, "(world)");
        assert_eq!(w.policy, "");
        assert!(w.query.starts_with("from_identity=world&"));
        assert!(FlowQuery::parse(Some(&w.query), SystemTime::now()).is_ok());
    }

    #[test]
    fn page_renders_groups() {
        let q = FlowQuery::parse(Some("namespace=demo"), SystemTime::now()).unwrap();
        let mut f = denied("a", 10);
        f.ingress_denied_by.clear();
        let html = view(&q, &[f], 2000).render().unwrap();
        assert!(html.contains("demo/client"));
        assert!(html.contains("no allow rule"));
        assert!(html.contains("href=\"/?from_pod=demo%2Fclient&amp;to_pod="));
        let empty = view(&q, &[], 2000).render().unwrap();
        assert!(empty.contains("No policy-denied flows"));
    }
}
