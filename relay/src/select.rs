//! Which nodes a GetFlows request asks: all of them, unless every whitelist filter names
//! node(s) (`node_name`), then only the nodes those patterns match.
//!
//! `lumen_filter`'s node-name matcher is private to the crate, so the relay reuses it
//! through its public face: a [`FlowMatcher`] over the filters' `node_name` parts, tested
//! against a flow that carries only the candidate node's name. Same patterns, same
//! semantics (`cluster/node`, `*`, bare node names in any cluster).

use crate::error::RelayError;
use lumen_api::flow::{Flow, FlowFilter};
use lumen_filter::FlowMatcher;

/// The node selection of one request.
pub struct NodeSelector(Option<FlowMatcher>);

impl NodeSelector {
    /// From the request's whitelist.
    pub fn from_whitelist(whitelist: &[FlowFilter]) -> Result<Self, RelayError> {
        if whitelist.is_empty() || whitelist.iter().any(|f| f.node_name.is_empty()) {
            return Ok(NodeSelector(None));
        }
        let only_nodes: Vec<FlowFilter> = whitelist
            .iter()
            .map(|f| FlowFilter {
                node_name: f.node_name.clone(),
                ..Default::default()
            })
            .collect();
        FlowMatcher::compile(&only_nodes, &[])
            .map(|m| NodeSelector(Some(m)))
            .map_err(|e| RelayError::InvalidRequest(e.to_string()))
    }

    /// Whether node `name` (`cluster/node`) is asked.
    pub fn matches(&self, name: &str) -> bool {
        match &self.0 {
            None => true,
            Some(m) => m.matches(&Flow {
                node_name: name.to_string(),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(filters: &[&[&str]]) -> NodeSelector {
        let wl: Vec<FlowFilter> = filters
            .iter()
            .map(|n| FlowFilter {
                node_name: n.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .collect();
        NodeSelector::from_whitelist(&wl).unwrap()
    }

    #[test]
    fn selects_by_node_name() {
        assert!(sel(&[]).matches("lab/node1"));
        let s = sel(&[&["node1"]]);
        assert!(s.matches("lab/node1") && !s.matches("lab/node2"));
        let s = sel(&[&["lab/node*"], &["other/x"]]);
        assert!(s.matches("lab/node2") && s.matches("other/x") && !s.matches("other/y"));
        let s = sel(&[&["lab/"]]);
        assert!(s.matches("lab/anything") && !s.matches("x/anything"));
    }

    #[test]
    fn a_filter_without_node_name_asks_everyone() {
        let wl = vec![
            FlowFilter {
                node_name: vec!["node1".into()],
                ..Default::default()
            },
            FlowFilter {
                source_pod: vec!["demo/".into()],
                ..Default::default()
            },
        ];
        assert!(NodeSelector::from_whitelist(&wl)
            .unwrap()
            .matches("lab/node2"));
    }

    #[test]
    fn bad_pattern_is_an_invalid_request() {
        let wl = vec![FlowFilter {
            node_name: vec!["a/b/c".into()],
            ..Default::default()
        }];
        assert!(matches!(
            NodeSelector::from_whitelist(&wl),
            Err(RelayError::InvalidRequest(_))
        ));
    }
}
