//! SVG drawing of a laid-out service map: boxes for nodes, curves with arrowheads for edges,
//! each edge a link chosen by the caller. Every text and attribute value is XML-escaped.

use std::fmt::Write as _;

use lumen_api::flow::DropReason;

use super::graph::Edge;
use super::layout::CHAR_W;
use super::node::{Node, NodeKey, MAX_ADDRESSES};
use super::ServiceGraph;

/// Ports written on an edge label before `+N`.
const LABEL_PORTS: usize = 2;

/// How an edge looks, from its verdicts: any drop wins, then audit, then forwarded.
#[derive(Clone, Copy)]
enum Style {
    Dropped,
    Audit,
    Forwarded,
    Other,
}

impl Style {
    fn of(e: &Edge) -> Style {
        let v = &e.verdicts;
        if v.dropped > 0 {
            Style::Dropped
        } else if v.audit > 0 {
            Style::Audit
        } else if v.forwarded > 0 {
            Style::Forwarded
        } else {
            Style::Other
        }
    }

    fn class(self) -> &'static str {
        match self {
            Style::Dropped => "dropped",
            Style::Audit => "audit",
            Style::Forwarded => "forwarded",
            Style::Other => "other",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Style::Dropped => "#d62728",
            Style::Audit => "#e08a00",
            Style::Forwarded => "#3a9d5d",
            Style::Other => "#8c8c8c",
        }
    }

    const ALL: [Style; 4] = [Style::Forwarded, Style::Other, Style::Audit, Style::Dropped];
}

/// Draws `graph` with its layout. `link` gives the target of each edge from its client and
/// server node (typically the flows page filtered to the two workloads); links with a
/// scheme other than `http` or `https` are replaced by `#`.
pub fn render_svg(graph: &ServiceGraph, link: &dyn Fn(&Node, &Node) -> String) -> String {
    let l = &graph.layout;
    let mut out = String::with_capacity(1024 + 700 * graph.edges.len() + 600 * graph.nodes.len());
    if graph.nodes.is_empty() {
        out.push_str(concat!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" class="service-map empty" width="320" height="80" "##,
            r##"viewBox="0 0 320 80" role="img" aria-label="Service map: no flows">"##,
            r##"<text x="160" y="44" text-anchor="middle" font-family="system-ui, sans-serif" "##,
            r##"font-size="13" fill="#666">No flows to map</text></svg>"##
        ));
        return out;
    }
    let (w, h) = (l.width.max(1.0), l.height.max(1.0));
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="service-map" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="Service map: {} nodes, {} edges" font-family="system-ui, -apple-system, sans-serif" font-size="12">"#,
        graph.nodes.len(),
        graph.edges.len()
    );
    out.push_str("<defs>");
    for s in Style::ALL {
        let _ = write!(
            out,
            r#"<marker id="map-arrow-{}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0L10,5L0,10z" fill="{}"/></marker>"#,
            s.class(),
            s.colour()
        );
    }
    out.push_str("</defs><g class=\"edges\">");
    // Dropped edges last, so they are drawn over the others.
    let mut order: Vec<usize> = (0..graph.edges.len()).collect();
    order.sort_by_key(|&i| (graph.edges[i].verdicts.dropped > 0, i));
    for i in order {
        edge(&mut out, graph, i, link);
    }
    out.push_str("</g><g class=\"nodes\">");
    for (i, n) in graph.nodes.iter().enumerate() {
        node(&mut out, graph, i, n);
    }
    out.push_str("</g></svg>");
    out
}

fn edge(out: &mut String, graph: &ServiceGraph, i: usize, link: &dyn Fn(&Node, &Node) -> String) {
    let (Some(e), Some(route)) = (graph.edges.get(i), graph.layout.edges.get(i)) else {
        return;
    };
    let (Some(from), Some(to)) = (graph.nodes.get(e.from), graph.nodes.get(e.to)) else {
        return;
    };
    let Some(&start) = route.points.first() else {
        return;
    };
    let style = Style::of(e);
    let mut d = format!("M{:.1},{:.1}", start.x, start.y);
    for [_, c1, c2, b] in route.segments() {
        let _ = write!(
            d,
            "C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
            c1.x, c1.y, c2.x, c2.y, b.x, b.y
        );
    }
    // Thicker with traffic (log scale), and much thicker when anything was dropped.
    let mut width = 1.2 + (e.flows.max(1) as f64).log10().min(3.0) * 0.5;
    if matches!(style, Style::Dropped) {
        width += 1.8;
    }
    let dash = if matches!(style, Style::Audit) {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = write!(
        out,
        r##"<a class="edge {}" href="{}"><title>{}</title><path d="{d}" fill="none" stroke="{}" stroke-width="{width:.1}"{dash} marker-end="url(#map-arrow-{})"/><text class="edge-label" x="{:.1}" y="{:.1}" font-size="10" fill="{}" stroke="#fff" stroke-width="3" paint-order="stroke">{}</text></a>"##,
        style.class(),
        escape(safe_href(&link(from, to))),
        escape(&tooltip(e, from, to)),
        style.colour(),
        style.class(),
        route.label.x,
        route.label.y - 3.0,
        if matches!(style, Style::Dropped) {
            "#b01c1c"
        } else {
            "#444"
        },
        escape(&label(e)),
    );
}

/// `80/TCP, 443/TCP +3 ×12`, then the dropped count when there is one.
fn label(e: &Edge) -> String {
    let mut s = e
        .ports
        .iter()
        .take(LABEL_PORTS)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let more = e.ports.len().saturating_sub(LABEL_PORTS);
    if more > 0 || e.more_ports {
        let _ = write!(s, " +{}{}", more, if e.more_ports { "…" } else { "" });
    }
    let _ = write!(
        s,
        "{}×{}",
        if s.is_empty() { "" } else { " " },
        e.connections
    );
    if e.verdicts.dropped > 0 {
        let _ = write!(s, " ({} dropped)", e.verdicts.dropped);
    }
    s
}

fn node_title(n: &Node) -> String {
    if n.namespace.is_empty() {
        n.name.clone()
    } else {
        format!("{}/{}", n.namespace, n.name)
    }
}

/// Edge tooltip: ends, ports, counts and verdicts with drop reasons.
fn tooltip(e: &Edge, from: &Node, to: &Node) -> String {
    let v = &e.verdicts;
    let mut s = format!("{} → {}\n", node_title(from), node_title(to));
    if !e.ports.is_empty() {
        s.push_str(
            &e.ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
        if e.more_ports {
            s.push_str(", …");
        }
        s.push('\n');
    }
    let _ = write!(
        s,
        "{} connections, {} flows\n{} forwarded, {} dropped",
        e.connections, e.flows, v.forwarded, v.dropped
    );
    if v.denied > 0 {
        let _ = write!(s, " ({} denied by policy)", v.denied);
    }
    let _ = write!(s, ", {} audit", v.audit);
    if v.other > 0 {
        let _ = write!(s, ", {} other", v.other);
    }
    for (reason, count) in &v.drop_reasons {
        let name = DropReason::try_from(*reason).map_or_else(
            |_| format!("reason {reason}"),
            |r| r.as_str_name().to_owned(),
        );
        let _ = write!(s, "\n{name}: {count}");
    }
    s
}

fn node(out: &mut String, graph: &ServiceGraph, i: usize, n: &Node) {
    let Some(b) = graph.layout.nodes.get(i) else {
        return;
    };
    let (class, fill, stroke) = match n.key {
        NodeKey::Workload { .. } | NodeKey::App { .. } | NodeKey::Pod { .. } => {
            ("pod", "#ffffff", "#4a6fa5")
        }
        NodeKey::World { .. } => ("world", "#fff8e1", "#c9a227"),
        NodeKey::Entity { .. } => ("reserved", "#eef1f4", "#7a8794"),
        NodeKey::Identity { .. } => ("identity", "#f4f4f4", "#999999"),
    };
    let outside = match graph.namespace.as_deref() {
        Some(ns) if n.is_pod() && n.namespace != ns => " outside",
        _ => "",
    };
    // Second line: the namespace, else the addresses of a peer outside the cluster.
    let second = if !n.namespace.is_empty() {
        n.namespace.clone()
    } else {
        match n.addresses.len() {
            0 => String::new(),
            1 if n.addresses.contains(&n.name) => String::new(),
            1 => n.addresses.iter().next().cloned().unwrap_or_default(),
            k if k >= MAX_ADDRESSES => format!("{k}+ addresses"),
            k => format!("{k} addresses"),
        }
    };
    let mut title = format!("{} {}", n.kind, node_title(n));
    for a in &n.addresses {
        let _ = write!(title, "\n{a}");
    }
    let fit = |size: f64| ((b.w - 20.0) / (CHAR_W * size / 13.0)).max(1.0) as usize;
    let _ = write!(
        out,
        r##"<g class="node {class}{outside}"><title>{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/><text x="{:.1}" y="{:.1}" font-size="13" font-weight="600" fill="#1f2d3d">{}</text><text x="{:.1}" y="{:.1}" font-size="11" fill="#5f6b7a">{}</text><text x="{:.1}" y="{:.1}" font-size="9" fill="#8a94a0" letter-spacing="0.4">{}</text></g>"##,
        escape(&title),
        b.x,
        b.y,
        b.w,
        b.h,
        b.x + 10.0,
        b.y + 20.0,
        escape(&truncate(&n.name, fit(13.0))),
        b.x + 10.0,
        b.y + 36.0,
        escape(&truncate(&second, fit(11.0))),
        b.x + 10.0,
        b.y + 50.0,
        escape(&truncate(&n.kind.to_uppercase(), fit(10.0))),
    );
}

/// At most `max` characters, the last replaced by `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// `href` unless it has a scheme other than `http` or `https` (e.g. `javascript:`).
fn safe_href(href: &str) -> &str {
    let t = href.trim_start();
    match t.find([':', '/', '?', '#']) {
        Some(i) if t[i..].starts_with(':') => {
            let scheme = &t[..i];
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
                href
            } else {
                "#"
            }
        }
        _ => href,
    }
}

/// XML escaping for text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::build;
    use crate::map::graph::tests::{flow, pod};
    use lumen_api::flow::{Verdict, Workload};

    fn link(a: &Node, b: &Node) -> String {
        format!("/flows?from={}&to={}", a.name, b.name)
    }

    #[test]
    fn escapes_every_text() {
        let evil = "<script>alert(1)</script>";
        let mut src = pod(evil, "web");
        src.workloads = vec![Workload {
            name: evil.into(),
            kind: "\"'&<".into(),
        }];
        let mut dst = pod("shop", "db");
        dst.workloads.clear();
        dst.labels = vec![format!("k8s:app={evil}")];
        let g = build(&[flow(src, dst, 1, 80, Verdict::Dropped)], None);
        let svg = render_svg(&g, &link);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("alert(1)</"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("/flows?from=&lt;script&gt;alert(1)&lt;/script&gt;&amp;to="));
        assert!(svg.contains("&quot;&#39;&amp;&lt;"));
    }

    #[test]
    fn edges_are_links_with_tooltips_and_denied_stands_out() {
        let mut denied = flow(
            pod("shop", "web"),
            pod("shop", "db"),
            1,
            5432,
            Verdict::Dropped,
        );
        denied.drop_reason_desc = DropReason::PolicyDenied as i32;
        let ok = flow(
            pod("shop", "web"),
            pod("shop", "cache"),
            1,
            6379,
            Verdict::Forwarded,
        );
        let audit = flow(
            pod("shop", "web"),
            pod("shop", "queue"),
            1,
            5672,
            Verdict::Audit,
        );
        let g = build(&[denied, ok, audit], None);
        let svg = render_svg(&g, &link);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains(&format!(
            "viewBox=\"0 0 {:.0} {:.0}\"",
            g.layout.width, g.layout.height
        )));
        assert_eq!(svg.matches("<a class=\"edge").count(), 3);
        assert!(svg.contains(r##"<a class="edge dropped" href="/flows?from=web&amp;to=db"><title>shop/web → shop/db"##));
        assert!(svg.contains("POLICY_DENIED: 1"));
        assert!(svg.contains("(1 denied by policy)"));
        assert!(svg.contains("stroke=\"#d62728\" stroke-width=\"3.0\""));
        assert!(svg.contains("5432/TCP ×1 (1 dropped)"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("marker-end=\"url(#map-arrow-forwarded)\""));
        assert_eq!(svg.matches("<rect").count(), 4);
        // The dropped edge is drawn last, over the others.
        let last_edge = svg.rfind("<a class=\"edge").unwrap();
        assert!(svg[last_edge..].starts_with("<a class=\"edge dropped\""));
    }

    #[test]
    fn unsafe_links_are_neutralised() {
        let g = build(
            &[flow(
                pod("a", "x"),
                pod("a", "y"),
                1,
                80,
                Verdict::Forwarded,
            )],
            None,
        );
        let svg = render_svg(&g, &|_, _| " JavaScript:alert(1)".to_owned());
        assert!(svg.contains("href=\"#\""));
        assert_eq!(safe_href("https://x/y"), "https://x/y");
        assert_eq!(safe_href("/flows?x=a:b"), "/flows?x=a:b");
        assert_eq!(safe_href("data:text/html,x"), "#");
    }

    #[test]
    fn empty_graph_and_truncation() {
        let svg = render_svg(&build(&[], None), &link);
        assert!(svg.contains("No flows to map"));
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("é€𝄞", 3), "é€𝄞");
        assert_eq!(escape("a\u{1}b"), "a\u{fffd}b");
    }
}
