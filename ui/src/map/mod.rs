//! The service map: which workloads talk to which, drawn as an SVG on the server.
//!
//! [`build`] groups flows into nodes (pods by workload, else `app` label, else pod name;
//! other peers as `world`, `host`, `remote-node`... from reserved labels and identities) and
//! client → server edges (replies skipped) with their ports and verdict counts, then lays
//! the graph out ([`layout()`]). [`render_svg`] draws it, each edge a link supplied by the
//! caller.
//!
//! ```
//! # use lumen_ui::map::{build, render_svg};
//! let graph = build(&[], Some("shop"));
//! let svg = render_svg(&graph, &|from, to| format!("/flows?from={}&to={}", from.name, to.name));
//! assert!(svg.starts_with("<svg"));
//! ```

mod graph;
mod layout;
mod node;
mod svg;

use lumen_api::flow::Flow;

pub use graph::{Edge, Port, Protocol, VerdictSummary};
pub use layout::{layout, EdgeRoute, Layout, NodeBox, Point, Shape};
pub use node::{Node, NodeKey};
pub use svg::render_svg;

/// A service map ready to draw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceGraph {
    /// Nodes, sorted by [`NodeKey`].
    pub nodes: Vec<Node>,
    /// Edges, sorted by client then server index; at most one per ordered pair.
    pub edges: Vec<Edge>,
    /// Positions of the nodes and edges, by index.
    pub layout: Layout,
    /// The namespace the map was built for, if any.
    pub namespace: Option<String>,
}

/// Builds and lays out the map of `flows`. With `namespace` (non-empty), only flows with at
/// least one end in that namespace are kept.
pub fn build(flows: &[Flow], namespace: Option<&str>) -> ServiceGraph {
    let namespace = namespace.filter(|ns| !ns.is_empty());
    let (nodes, edges) = graph::aggregate(flows, namespace);
    let layout = layout::layout(&nodes, &edges);
    ServiceGraph {
        nodes,
        edges,
        layout,
        namespace: namespace.map(str::to_owned),
    }
}
