//! `hubble list nodes` and `hubble list namespaces`: tables like upstream's.

use crate::{
    cli::{Cli, ListWhat},
    cmd::go_duration_secs,
    error::Result,
    format::render_table,
};
use lumen_api::{
    observer::{GetNamespacesRequest, GetNodesRequest, Namespace, Node},
    relay::NodeState,
};

fn state_text(s: i32) -> &'static str {
    match NodeState::try_from(s) {
        Ok(NodeState::NodeConnected) => "Connected",
        Ok(NodeState::NodeUnavailable) => "Unavailable",
        Ok(NodeState::NodeGone) => "Gone",
        Ok(NodeState::NodeError) => "Error",
        _ => "Unknown",
    }
}

/// The `list nodes` table (NAME, STATUS, AGE, FLOWS/S, CURRENT/MAX-FLOWS), sorted by name.
pub fn nodes_table(nodes: &[Node]) -> String {
    let mut nodes = nodes.to_vec();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = vec![["NAME", "STATUS", "AGE", "FLOWS/S", "CURRENT/MAX-FLOWS"]
        .map(String::from)
        .to_vec()];
    for n in &nodes {
        let (mut age, mut rate, mut ratio) =
            ("N/A".to_string(), "N/A".to_string(), "N/A".to_string());
        if n.state == NodeState::NodeConnected as i32 {
            age = go_duration_secs(n.uptime_ns);
            if n.uptime_ns > 0 {
                rate = format!("{:.2}", n.seen_flows as f64 / (n.uptime_ns as f64 / 1e9));
            }
            let pct = if n.max_flows > 0 {
                n.num_flows as f64 / n.max_flows as f64 * 100.0
            } else {
                0.0
            };
            ratio = format!("{}/{} ({pct:6.2}%)", n.num_flows, n.max_flows);
        }
        rows.push(vec![
            n.name.clone(),
            state_text(n.state).into(),
            age,
            rate,
            ratio,
        ]);
    }
    render_table(&rows)
}

/// The `list namespaces` table (CLUSTER, NAMESPACE), sorted.
pub fn namespaces_table(namespaces: &[Namespace]) -> String {
    let mut ns = namespaces.to_vec();
    ns.sort_by(|a, b| (&a.cluster, &a.namespace).cmp(&(&b.cluster, &b.namespace)));
    let mut rows = vec![vec!["CLUSTER".to_string(), "NAMESPACE".to_string()]];
    rows.extend(ns.into_iter().map(|n| vec![n.cluster, n.namespace]));
    render_table(&rows)
}

/// Runs `hubble list nodes|namespaces`.
pub async fn run(cli: &Cli, what: ListWhat) -> Result<()> {
    let mut client = super::observer(cli).await?;
    let text = match what {
        ListWhat::Nodes => {
            let mut req = tonic::Request::new(GetNodesRequest {});
            req.set_timeout(cli.timeout);
            nodes_table(&client.get_nodes(req).await?.into_inner().nodes)
        }
        ListWhat::Namespaces => {
            let mut req = tonic::Request::new(GetNamespacesRequest {});
            req.set_timeout(cli.timeout);
            namespaces_table(&client.get_namespaces(req).await?.into_inner().namespaces)
        }
    };
    print!("{text}");
    Ok(())
}
