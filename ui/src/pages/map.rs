//! The service map page (`/map?namespace=X`, all namespaces without it): the last
//! `mapFlows` flows, drawn by [`crate::map`]; each edge links to the flows page filtered to
//! its two nodes.

use super::{html, Layout};
use crate::{
    app::App,
    error::PageError,
    map::{self, Node, NodeKey},
    query::{self, FlowQuery},
};
use askama::Template;
use axum::{
    extract::{RawQuery, State},
    response::Html,
};
use hubble_cli::filters::RESERVED_IDENTITIES;
use lumen_api::flow::Flow;
use std::time::SystemTime;

/// The flows page parameters selecting a map node on one side (`from` or `to`).
pub fn node_filter(n: &Node, side: &str) -> Vec<(String, String)> {
    let p = |kind: &str, v: String| (format!("{side}_{kind}"), v);
    let ns_name = |ns: &str, name: &str| {
        if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        }
    };
    match &n.key {
        // A controller's pods are named after it, and pod filters match name prefixes.
        NodeKey::Workload {
            namespace, name, ..
        }
        | NodeKey::Pod { namespace, name } => vec![p("pod", ns_name(namespace, name))],
        NodeKey::App { namespace, app } => {
            let mut v = vec![p("label", format!("app={app}"))];
            if !namespace.is_empty() {
                v.push(p("namespace", namespace.clone()));
            }
            v
        }
        NodeKey::World { .. } if n.addresses.len() == 1 => {
            vec![p(
                "ip",
                n.addresses.iter().next().cloned().unwrap_or_default(),
            )]
        }
        NodeKey::World { .. } => vec![p("identity", "world".into())],
        NodeKey::Entity { name } if RESERVED_IDENTITIES.iter().any(|(r, _)| r == name) => {
            vec![p("identity", name.clone())]
        }
        NodeKey::Entity { name } => vec![p("label", format!("reserved:{name}"))],
        NodeKey::Identity { id, .. } => vec![p("identity", id.to_string())],
    }
}

/// The flows page URL for the flows from `client` to `server`.
pub fn edge_link(client: &Node, server: &Node) -> String {
    let mut pairs = node_filter(client, "from");
    pairs.extend(node_filter(server, "to"));
    format!(
        "/?{}",
        query::encode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    )
}

/// The map page.
#[derive(Template)]
#[template(path = "map.html")]
pub struct MapPage {
    layout: Layout,
    namespace: String,
    svg: String,
    flows: usize,
    nodes: usize,
    edges: usize,
}

/// The page for the flows read.
pub fn view(namespace: &str, flows: &[Flow]) -> MapPage {
    let graph = map::build(flows, Some(namespace));
    MapPage {
        layout: Layout::new("Service map", "map"),
        namespace: namespace.to_string(),
        svg: map::render_svg(&graph, &edge_link),
        flows: flows.len(),
        nodes: graph.nodes.len(),
        edges: graph.edges.len(),
    }
}

/// `GET /map` (the flows page's filters apply to the flows read, e.g. `since`).
pub async fn page(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let q = FlowQuery::parse(raw.as_deref(), SystemTime::now())?;
    let flows = app
        .relay
        .flows(q.request(app.config.map_flows, false))
        .await?;
    html(&view(q.get("namespace").unwrap_or_default(), &flows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::flow;
    use lumen_api::flow::Verdict;

    #[test]
    fn map_page_links_edges_to_filtered_flows() {
        let flows = vec![flow("a", Verdict::Forwarded), flow("b", Verdict::Dropped)];
        let p = view("demo", &flows);
        assert_eq!((p.nodes, p.edges), (2, 1));
        let html = p.render().unwrap();
        assert!(html.contains("<svg"), "the SVG is inserted unescaped");
        // demo/client is a Deployment; server-xyz has an app label.
        assert!(
            html.contains(
                "/?from_pod=demo%2Fclient&amp;to_label=app%3Dserver&amp;to_namespace=demo"
            ),
            "{html}"
        );
    }

    #[test]
    fn every_link_is_a_valid_query() {
        let flows = vec![flow("a", Verdict::Forwarded)];
        let g = map::build(&flows, None);
        for e in &g.edges {
            let link = edge_link(&g.nodes[e.from], &g.nodes[e.to]);
            let q = link.trim_start_matches("/?");
            assert!(
                FlowQuery::parse(Some(q), SystemTime::now()).is_ok(),
                "{link}"
            );
        }
        let empty = view("", &[]).render().unwrap();
        assert!(empty.contains("No flows to map"));
    }
}
