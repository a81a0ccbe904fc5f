//! The flows page (`/`): the filter form, the last `maxRows` matching flows newest first,
//! and a small script that prepends live rows from `/flows/stream`.

use super::{html, Layout};
use crate::{app::App, error::PageError, query::FlowQuery, view::FlowRow};
use askama::Template;
use axum::{
    extract::{RawQuery, State},
    response::Html,
};
use lumen_api::flow::Flow;
use std::time::SystemTime;

/// Text fields of the filter form: parameter and label.
const TEXT_FIELDS: &[(&str, &str)] = &[
    ("namespace", "Namespace"),
    ("pod", "Pod"),
    ("label", "Label"),
    ("protocol", "Protocol"),
    ("port", "Port"),
    ("ip", "IP"),
    ("node", "Node"),
    ("since", "Since (5m, RFC 3339)"),
    ("until", "Until"),
];

/// Choices of the verdict select.
const VERDICTS: &[&str] = &[
    "FORWARDED",
    "DROPPED",
    "policy_denied",
    "AUDIT",
    "ERROR",
    "REDIRECTED",
    "TRACED",
    "TRANSLATED",
];

/// One text field of the form.
#[derive(Debug, Clone)]
pub struct Field {
    /// The URL parameter.
    pub name: &'static str,
    /// Its label.
    pub label: &'static str,
    /// The current value.
    pub value: String,
}

/// The flows page.
#[derive(Template)]
#[template(path = "flows.html")]
pub struct FlowsPage {
    layout: Layout,
    fields: Vec<Field>,
    verdict: String,
    verdicts: &'static [&'static str],
    direction: String,
    /// Parameters the form has no field for (kept as hidden inputs).
    hidden: Vec<(String, String)>,
    rows: Vec<FlowRow>,
    /// Where live rows come from; empty for none.
    stream_url: String,
    cli: String,
    max_rows: u64,
}

/// The page for a query and the flows read for it (oldest first, as the relay sends them).
pub fn view(q: &FlowQuery, flows: &[Flow], max_rows: u64) -> FlowsPage {
    let mut used: Vec<&str> = vec![];
    let mut hidden = vec![];
    let form_keys: Vec<&str> = TEXT_FIELDS
        .iter()
        .map(|(k, _)| *k)
        .chain(["verdict", "direction"])
        .collect();
    for (k, v) in &q.pairs {
        if form_keys.contains(&k.as_str()) && !used.contains(&k.as_str()) {
            used.push(k);
        } else {
            hidden.push((k.clone(), v.clone()));
        }
    }
    let value = |name: &str| q.get(name).unwrap_or_default().to_string();
    let rows = flows
        .iter()
        .rev()
        .take(usize::try_from(max_rows).unwrap_or(usize::MAX))
        .map(FlowRow::new)
        .collect();
    FlowsPage {
        layout: Layout::new("Flows", "flows"),
        fields: TEXT_FIELDS
            .iter()
            .map(|(name, label)| Field {
                name,
                label,
                value: value(name),
            })
            .collect(),
        verdict: value("verdict"),
        verdicts: VERDICTS,
        direction: value("direction"),
        hidden,
        rows,
        // A window closed by `until` gets no live rows.
        stream_url: if q.get("until").is_some() {
            String::new()
        } else {
            format!("/flows/stream?{}", q.query_string())
        },
        cli: q.cli_command(),
        max_rows,
    }
}

/// `GET /`.
pub async fn page(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let q = FlowQuery::parse(raw.as_deref(), SystemTime::now())?;
    let flows = app
        .relay
        .flows(q.request(app.config.max_rows, false))
        .await?;
    tracing::debug!(flows = flows.len(), query = %q.query_string(), "flows page");
    html(&view(&q, &flows, app.config.max_rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::flow;
    use lumen_api::flow::Verdict;

    fn query(s: &str) -> FlowQuery {
        FlowQuery::parse(Some(s), SystemTime::now()).unwrap()
    }

    #[test]
    fn rows_newest_first_and_bounded() {
        let flows: Vec<Flow> = (0..5)
            .map(|i| flow(&format!("u{i}"), Verdict::Forwarded))
            .collect();
        let p = view(&query(""), &flows, 3);
        let uuids: Vec<&str> = p.rows.iter().map(|r| r.uuid.as_str()).collect();
        assert_eq!(uuids, ["u4", "u3", "u2"]);
        let html = p.render().unwrap();
        assert!(html.contains("href=\"/flow/u4\""));
        assert!(html.contains("class=\"forwarded\""));
        assert!(html.contains("data-max=\"3\""));
    }

    #[test]
    fn form_keeps_the_filters() {
        let p = view(
            &query("namespace=demo&verdict=policy_denied&to_label=app%3Dx&pod=a&pod=b"),
            &[],
            10,
        );
        assert_eq!(p.verdict, "policy_denied");
        assert_eq!(
            p.hidden,
            [
                ("to_label".to_string(), "app=x".to_string()),
                ("pod".into(), "b".into())
            ]
        );
        let html = p.render().unwrap();
        assert!(html.contains("value=\"demo\""));
        assert!(html.contains("<option selected>policy_denied</option>"));
        assert!(html.contains("type=\"hidden\" name=\"to_label\" value=\"app=x\""));
        assert!(html.contains("/flows/stream?namespace=demo&amp;verdict=policy_denied"));
        assert!(html.contains("hubble observe --namespace demo --verdict policy_denied"));
        assert!(html.contains("No flows"));
        let closed = view(&query("until=2026-01-01"), &[], 10);
        assert!(closed.stream_url.is_empty());
    }

    #[test]
    fn flow_text_is_escaped() {
        let mut f = flow("u1", Verdict::Dropped);
        if let Some(src) = f.source.as_mut() {
            src.pod_name = "<script>alert(1)</script>".into();
            src.labels = vec!["k8s:app=<script>alert(1)</script>".into()];
        }
        f.summary = "<img src=x onerror=alert(1)>".into();
        let html = view(&query("pod=%3Cscript%3E"), &[f], 10).render().unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>alert(1)"));
        assert!(!html.contains("<img src=x"));
        // The live rows are built with textContent, never innerHTML.
        assert!(!html.contains("innerHTML"));
    }
}
