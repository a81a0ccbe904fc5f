//! The flow detail page (`/flow/{uuid}`): every field of the flow (its protobuf JSON,
//! flattened), both endpoints' labels, policy attribution, and the `hubble observe`
//! command (and flows-page link) for flows like it.

use super::{html, Layout};
use crate::{
    app::App,
    error::PageError,
    query,
    view::{self, FlowRow},
};
use askama::Template;
use axum::{
    extract::{Path, State},
    response::Html,
};
use hubble_cli::format::policy_match_text;
use lumen_api::{
    flow::{Flow, FlowFilter, Policy, TrafficDirection},
    observer::GetFlowsRequest,
};
use serde_json::Value;

/// One policy the flow names, with how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    /// `allowed` or `denied`.
    pub effect: &'static str,
    /// `ingress` or `egress`.
    pub side: &'static str,
    /// `namespace/name`.
    pub name: String,
    /// e.g. `CiliumNetworkPolicy`.
    pub kind: String,
    /// The policy revision.
    pub revision: u64,
    /// The policy's labels, comma separated.
    pub labels: String,
}

/// The detail page.
#[derive(Template)]
#[template(path = "detail.html")]
pub struct DetailPage {
    layout: Layout,
    row: FlowRow,
    source_labels: Vec<String>,
    destination_labels: Vec<String>,
    policies: Vec<PolicyView>,
    match_type: String,
    direction: String,
    cli: String,
    similar: String,
    fields: Vec<(String, String)>,
}

/// The page for a flow.
pub fn view(f: &Flow) -> DetailPage {
    let mut policies = vec![];
    let mut add = |effect, side, list: &[Policy]| {
        policies.extend(list.iter().map(|p| PolicyView {
            effect,
            side,
            name: view::policy_name(p),
            kind: p.kind.clone(),
            revision: p.revision,
            labels: p.labels.join(", "),
        }))
    };
    add("allowed", "ingress", &f.ingress_allowed_by);
    add("allowed", "egress", &f.egress_allowed_by);
    add("denied", "ingress", &f.ingress_denied_by);
    add("denied", "egress", &f.egress_denied_by);
    let pairs = similar_pairs(f);
    let pairs = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let row = FlowRow::new(f);
    DetailPage {
        layout: Layout::new(&format!("Flow {}", f.uuid), "flows"),
        source_labels: f
            .source
            .as_ref()
            .map(|e| e.labels.clone())
            .unwrap_or_default(),
        destination_labels: f
            .destination
            .as_ref()
            .map(|e| e.labels.clone())
            .unwrap_or_default(),
        policies,
        match_type: policy_match_text(f.policy_match_type).to_string(),
        direction: TrafficDirection::try_from(f.traffic_direction)
            .map_or("unknown".to_string(), |d| {
                d.as_str_name().to_ascii_lowercase()
            }),
        cli: query::cli_command(pairs.clone()),
        similar: query::encode(pairs),
        fields: flatten(&serde_json::to_value(f).unwrap_or(Value::Null)),
        row,
    }
}

/// The filters selecting flows like `f`: its two endpoints, destination port and protocol.
pub fn similar_pairs(f: &Flow) -> Vec<(String, String)> {
    let mut pairs = vec![];
    for source in [true, false] {
        let ep = if source {
            f.source.as_ref()
        } else {
            f.destination.as_ref()
        };
        let side = if source { "from" } else { "to" };
        let ip =
            f.ip.as_ref()
                .map(|i| if source { &i.source } else { &i.destination });
        match (ep.filter(|e| !e.pod_name.is_empty()), ip) {
            (Some(e), _) if !e.namespace.is_empty() => pairs.push((
                format!("{side}_pod"),
                format!("{}/{}", e.namespace, e.pod_name),
            )),
            (Some(e), _) => pairs.push((format!("{side}_pod"), e.pod_name.clone())),
            (None, Some(ip)) if !ip.is_empty() => pairs.push((format!("{side}_ip"), ip.clone())),
            _ => {}
        }
    }
    if let Some(port) = hubble_cli::format::ports(f).1.filter(|p| *p != 0) {
        pairs.push(("to_port".into(), port.to_string()));
    }
    if let Some(p) = view::protocol_name(f) {
        pairs.push(("protocol".into(), p.into()));
    }
    pairs
}

/// A JSON value as `(path, scalar)` pairs: `l4.TCP.destination_port` → `8080`.
pub fn flatten(v: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            Value::Null => {}
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = vec![];
    walk("", v, &mut out);
    out
}

/// Whether a path segment can be a flow UUID (anything else cannot name a flow).
fn plausible_uuid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `GET /flow/{uuid}`.
pub async fn page(
    State(app): State<App>,
    Path(uuid): Path<String>,
) -> Result<Html<String>, PageError> {
    let not_found = || {
        PageError::NotFound(format!(
            "no flow with UUID {uuid} among the relay's recent flows (it may have been overwritten in the agents' buffers)"
        ))
    };
    if !plausible_uuid(&uuid) {
        return Err(not_found());
    }
    let req = GetFlowsRequest {
        number: 1,
        whitelist: vec![FlowFilter {
            uuid: vec![uuid.clone()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let flows = app.relay.flows(req).await?;
    // The relay filters by UUID; checking again guards against servers that ignore it.
    let flow = flows
        .into_iter()
        .rev()
        .find(|f| f.uuid == uuid)
        .ok_or_else(not_found)?;
    html(&view(&flow))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::{denied, flow};
    use lumen_api::flow::Verdict;

    #[test]
    fn detail_of_a_denied_flow() {
        let f = denied("0b7c-11", 100);
        let p = view(&f);
        assert_eq!(p.source_labels, ["k8s:app=client"]);
        assert_eq!(
            p.policies,
            [PolicyView {
                effect: "denied",
                side: "ingress",
                name: "demo/deny-all".into(),
                kind: "CiliumNetworkPolicy".into(),
                revision: 0,
                labels: String::new(),
            }]
        );
        assert_eq!(p.direction, "ingress");
        assert_eq!(
            p.cli,
            "hubble observe --from-pod demo/client-7d9f-abc --to-pod demo/server-xyz --to-port 8080 --protocol tcp"
        );
        assert_eq!(
            p.similar,
            "from_pod=demo%2Fclient-7d9f-abc&to_pod=demo%2Fserver-xyz&to_port=8080&protocol=tcp"
        );
        assert!(p.fields.contains(&("uuid".into(), "0b7c-11".into())));
        assert!(p
            .fields
            .contains(&("l4.TCP.destination_port".into(), "8080".into())));
        assert!(p
            .fields
            .contains(&("source.labels[0]".into(), "k8s:app=client".into())));
        let html = p.render().unwrap();
        assert!(html.contains("Policy denied"));
        assert!(html.contains("demo/deny-all"));
        assert!(html.contains("href=\"/?from_pod=demo%2Fclient-7d9f-abc&amp;to_pod"));
    }

    #[test]
    fn labels_are_escaped() {
        let mut f = flow("u1", Verdict::Forwarded);
        if let Some(dst) = f.destination.as_mut() {
            dst.labels = vec!["k8s:evil=<script>alert(1)</script>".into()];
        }
        let html = view(&f).render().unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>alert(1)"));
    }

    #[test]
    fn ip_endpoints_and_uuids() {
        let mut f = flow("u1", Verdict::Forwarded);
        f.destination = None;
        assert_eq!(
            similar_pairs(&f)[1],
            ("to_ip".to_string(), "10.0.0.2".to_string())
        );
        assert!(plausible_uuid("3f2a9c1e-0000-4000-8000-0123456789ab"));
        assert!(!plausible_uuid("../etc"));
        assert!(!plausible_uuid(""));
    }
}
