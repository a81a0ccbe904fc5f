//! `hubble status`: the gRPC health check, then ServerStatus, printed as upstream.

use crate::{cli::Cli, cmd::thousands, error::Result};
use lumen_api::observer::{ServerStatusRequest, ServerStatusResponse};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

/// The status lines after the health check.
pub fn status_text(s: &ServerStatusResponse) -> String {
    let pct = if s.max_flows > 0 {
        s.num_flows as f64 / s.max_flows as f64 * 100.0
    } else {
        0.0
    };
    let mut out = format!(
        "Current/Max Flows: {}/{} ({pct:.2}%)\n",
        thousands(s.num_flows),
        thousands(s.max_flows)
    );
    let rate = if s.flows_rate > 0.0 || s.uptime_ns == 0 {
        s.flows_rate
    } else {
        s.seen_flows as f64 / (s.uptime_ns as f64 / 1e9)
    };
    out += &format!("Flows/s: {rate:.2}\n");
    if let Some(connected) = &s.num_connected_nodes {
        let unavailable = s.num_unavailable_nodes.as_ref().map_or(0, |u| u.value);
        out += &format!(
            "Connected Nodes: {}/{}\n",
            connected.value,
            connected.value + unavailable
        );
        if !s.unavailable_nodes.is_empty() {
            let mut nodes = s.unavailable_nodes.clone();
            nodes.sort();
            out += &format!("Unavailable Nodes: {}\n", nodes.len());
            for n in nodes {
                out += &format!("  - {n}\n");
            }
        }
    }
    out
}

/// Runs `hubble status`.
pub async fn run(cli: &Cli) -> Result<()> {
    let ch = crate::conn::connect(&cli.server, &cli.tls(), cli.timeout).await?;
    let mut health = HealthClient::new(ch.clone());
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(cli.timeout);
    let h = health.check(req).await?.into_inner();
    let state = match ServingStatus::try_from(h.status) {
        Ok(ServingStatus::Serving) => "Ok".to_string(),
        Ok(other) => other.as_str_name().to_string(),
        Err(_) => h.status.to_string(),
    };
    println!("Healthcheck (via {}): {state}", cli.server);
    let mut client = lumen_api::observer::observer_client::ObserverClient::new(ch);
    let mut req = tonic::Request::new(ServerStatusRequest {});
    req.set_timeout(cli.timeout);
    let s = client.server_status(req).await?.into_inner();
    print!("{}", status_text(&s));
    Ok(())
}
