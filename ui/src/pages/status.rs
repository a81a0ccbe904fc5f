//! The status page (`/status`): the relay's ServerStatus, its nodes (GetNodes), and the
//! lost events this UI met in flow streams, per node.

use super::{html, Layout};
use crate::{app::App, error::PageError};
use askama::Template;
use axum::{extract::State, response::Html};
use hubble_cli::cmd::{go_duration_secs, thousands};
use lumen_api::{
    observer::{Node, ServerStatusResponse},
    relay::NodeState,
};

/// The relay's numbers, formatted.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    /// `current/max (pct%)`.
    pub flows: String,
    /// Flows seen since start.
    pub seen: String,
    /// Flows per second.
    pub rate: String,
    /// Uptime.
    pub uptime: String,
    /// `connected/total`, when the server is a relay.
    pub nodes: Option<String>,
    /// Names of the unavailable nodes, sorted.
    pub unavailable: Vec<String>,
    /// The server's version.
    pub version: String,
}

/// One node, formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node name.
    pub name: String,
    /// Connected, Unavailable, Gone, Error or Unknown.
    pub state: &'static str,
    /// CSS class for the state.
    pub class: &'static str,
    /// Agent version.
    pub version: String,
    /// Observer address.
    pub address: String,
    /// `yes (server name)` or `no`.
    pub tls: String,
    /// Uptime, `N/A` when not connected.
    pub uptime: String,
    /// `current/max`, `N/A` when not connected.
    pub flows: String,
    /// Flows seen.
    pub seen: String,
}

/// The status view of a ServerStatus.
pub fn status_view(s: &ServerStatusResponse) -> StatusView {
    let pct = if s.max_flows > 0 {
        s.num_flows as f64 / s.max_flows as f64 * 100.0
    } else {
        0.0
    };
    let rate = if s.flows_rate > 0.0 || s.uptime_ns == 0 {
        s.flows_rate
    } else {
        s.seen_flows as f64 / (s.uptime_ns as f64 / 1e9)
    };
    let mut unavailable = s.unavailable_nodes.clone();
    unavailable.sort();
    StatusView {
        flows: format!(
            "{}/{} ({pct:.2}%)",
            thousands(s.num_flows),
            thousands(s.max_flows)
        ),
        seen: thousands(s.seen_flows),
        rate: format!("{rate:.2}"),
        uptime: go_duration_secs(s.uptime_ns),
        nodes: s.num_connected_nodes.as_ref().map(|c| {
            let u = s.num_unavailable_nodes.as_ref().map_or(0, |u| u.value);
            format!("{}/{}", c.value, c.value + u)
        }),
        unavailable,
        version: s.version.clone(),
    }
}

/// The node views, sorted by name.
pub fn node_views(nodes: &[Node]) -> Vec<NodeView> {
    let mut out: Vec<NodeView> = nodes
        .iter()
        .map(|n| {
            let connected = n.state == NodeState::NodeConnected as i32;
            let (state, class) = match NodeState::try_from(n.state) {
                Ok(NodeState::NodeConnected) => ("Connected", "forwarded"),
                Ok(NodeState::NodeUnavailable) => ("Unavailable", "dropped"),
                Ok(NodeState::NodeGone) => ("Gone", "other"),
                Ok(NodeState::NodeError) => ("Error", "dropped"),
                _ => ("Unknown", "other"),
            };
            NodeView {
                name: n.name.clone(),
                state,
                class,
                version: n.version.clone(),
                address: n.address.clone(),
                tls: match &n.tls {
                    Some(t) if t.enabled && !t.server_name.is_empty() => {
                        format!("yes ({})", t.server_name)
                    }
                    Some(t) if t.enabled => "yes".into(),
                    _ => "no".into(),
                },
                uptime: if connected {
                    go_duration_secs(n.uptime_ns)
                } else {
                    "N/A".into()
                },
                flows: if connected {
                    format!("{}/{}", thousands(n.num_flows), thousands(n.max_flows))
                } else {
                    "N/A".into()
                },
                seen: thousands(n.seen_flows),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The status page.
#[derive(Template)]
#[template(path = "status.html")]
pub struct StatusPage {
    layout: Layout,
    address: String,
    status: StatusView,
    nodes: Vec<NodeView>,
    lost: Vec<(String, u64)>,
}

/// The page for what the relay answered.
pub fn view(
    address: &str,
    s: &ServerStatusResponse,
    nodes: &[Node],
    lost: Vec<(String, u64)>,
) -> StatusPage {
    StatusPage {
        layout: Layout::new("Status", "status"),
        address: address.to_string(),
        status: status_view(s),
        nodes: node_views(nodes),
        lost,
    }
}

/// `GET /status`.
pub async fn page(State(app): State<App>) -> Result<Html<String>, PageError> {
    let (status, nodes) = tokio::join!(app.relay.server_status(), app.relay.nodes());
    html(&view(
        app.relay.address(),
        &status?,
        &nodes?,
        app.relay.lost_events(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_api::observer::Tls;

    #[test]
    fn status_and_nodes() {
        let s = ServerStatusResponse {
            num_flows: 8190,
            max_flows: 8190,
            seen_flows: 100_000,
            uptime_ns: 1_000_000_000,
            num_connected_nodes: Some(pbjson_types::UInt32Value { value: 1 }),
            num_unavailable_nodes: Some(pbjson_types::UInt32Value { value: 1 }),
            unavailable_nodes: vec!["lab/node2".into()],
            version: "lumen 0.1.0".into(),
            flows_rate: 0.0,
        };
        let v = status_view(&s);
        assert_eq!(v.flows, "8,190/8,190 (100.00%)");
        assert_eq!(v.rate, "100000.00");
        assert_eq!(v.nodes.as_deref(), Some("1/2"));
        let nodes = vec![
            Node {
                name: "lab/node2".into(),
                state: NodeState::NodeUnavailable as i32,
                ..Default::default()
            },
            Node {
                name: "lab/node1".into(),
                state: NodeState::NodeConnected as i32,
                address: "10.0.0.1:4244".into(),
                tls: Some(Tls {
                    enabled: true,
                    server_name: "node1.hubble".into(),
                }),
                uptime_ns: 3_723_000_000_000,
                num_flows: 1234,
                max_flows: 4095,
                ..Default::default()
            },
        ];
        let p = view("127.0.0.1:4245", &s, &nodes, vec![("lab/node1".into(), 7)]);
        assert_eq!(p.nodes[0].name, "lab/node1");
        assert_eq!(p.nodes[0].uptime, "1h2m3s");
        assert_eq!(p.nodes[0].tls, "yes (node1.hubble)");
        assert_eq!(p.nodes[1].flows, "N/A");
        let html = p.render().unwrap();
        assert!(html.contains("lumen 0.1.0"));
        assert!(html.contains("Unavailable"));
        assert!(html.contains("1,234/4,095"));
    }
}
