//! URL query filters → GetFlows requests, through the `hubble` CLI's filter builder so a
//! page filter means exactly what the same `hubble observe` flag means.
//!
//! A parameter is a CLI filter flag with `_` for `-` (`from_pod`, `to_port`, `verdict`,
//! `http_status`, ...), plus the short names `node` (`--node-name`), `direction`
//! (`--traffic-direction`) and `drop_reason` (`--drop-reason-desc`); `since`/`until` take
//! what `--since`/`--until` take. Parameters apply in URL order, repeated ones OR as in the
//! CLI, `not` negates the next one, and empty values (blank form fields) are ignored.

use hubble_cli::filters::{FilterBuilder, FILTER_FLAGS};
use lumen_api::{observer::GetFlowsRequest, wkt::Timestamp};
use std::time::SystemTime;

/// Flags that take no value.
const VALUELESS: &[&str] = &[
    "not",
    "ipv4",
    "ipv6",
    "all-namespaces",
    "from-all-namespaces",
    "to-all-namespaces",
];

/// Why a query cannot be turned into filters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter that is not a filter.
    #[error("unknown filter {0:?}")]
    Unknown(String),
    /// A filter the CLI's builder (or time parser) refuses.
    #[error("invalid filter: {0}")]
    Invalid(String),
}

/// The hubble flag (without `--`) a URL parameter stands for.
pub fn flag_for(param: &str) -> Option<&'static str> {
    let name = match param {
        "node" => "node-name".to_string(),
        "direction" => "traffic-direction".to_string(),
        "drop_reason" => "drop-reason-desc".to_string(),
        other => other.replace('_', "-"),
    };
    FILTER_FLAGS.iter().copied().find(|f| *f == name)
}

/// A parsed query: the parameters as given (to rebuild links) and the filters they make.
#[derive(Debug, Clone, Default)]
pub struct FlowQuery {
    /// The non-empty parameters, in order.
    pub pairs: Vec<(String, String)>,
    filters: FilterBuilder,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
}

impl FlowQuery {
    /// Parses a raw query string (`None` when the URL has none); `now` anchors `since=5m`.
    pub fn parse(raw: Option<&str>, now: SystemTime) -> Result<FlowQuery, QueryError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        FlowQuery::from_pairs(pairs, now)
    }

    /// Builds the filters for `(parameter, value)` pairs.
    pub fn from_pairs(
        pairs: Vec<(String, String)>,
        now: SystemTime,
    ) -> Result<FlowQuery, QueryError> {
        let mut q = FlowQuery::default();
        let invalid = |e: hubble_cli::Error| QueryError::Invalid(e.to_string());
        for (k, v) in pairs {
            match k.as_str() {
                "since" | "until" if v.is_empty() => continue,
                "since" => {
                    q.since =
                        Some(hubble_cli::timeparse::parse_time("since", &v, now).map_err(invalid)?)
                }
                "until" => {
                    q.until =
                        Some(hubble_cli::timeparse::parse_time("until", &v, now).map_err(invalid)?)
                }
                _ => {
                    let flag = flag_for(&k).ok_or_else(|| QueryError::Unknown(k.clone()))?;
                    if v.is_empty() && !VALUELESS.contains(&flag) {
                        continue;
                    }
                    q.filters.set(flag, &v).map_err(invalid)?;
                }
            }
            q.pairs.push((k, v));
        }
        if q.pairs.last().is_some_and(|(k, _)| k == "not") {
            return Err(QueryError::Invalid(
                "not must be followed by a filter".into(),
            ));
        }
        Ok(q)
    }

    /// This query plus more pairs (parsed the same way).
    pub fn with(&self, extra: &[(&str, &str)], now: SystemTime) -> Result<FlowQuery, QueryError> {
        let mut pairs = self.pairs.clone();
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        FlowQuery::from_pairs(pairs, now)
    }

    /// The value of the first parameter `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The GetFlows request for the last `number` matching flows, or for a `follow` stream
    /// of new flows only: it ignores `until` (as the CLI does) and `since` (the page has
    /// rendered the history already, so replaying it would duplicate rows).
    pub fn request(&self, number: u64, follow: bool) -> GetFlowsRequest {
        GetFlowsRequest {
            number,
            follow,
            whitelist: self.filters.whitelist(),
            blacklist: self.filters.blacklist(),
            since: if follow { None } else { self.since },
            until: if follow { None } else { self.until },
            ..Default::default()
        }
    }

    /// The URL query string (without `?`).
    pub fn query_string(&self) -> String {
        encode(self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The equivalent `hubble observe` command line.
    pub fn cli_command(&self) -> String {
        cli_command(self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// Encodes pairs as a URL query string.
pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `hubble observe` with the flags for URL parameters (`since`/`until` included).
pub fn cli_command<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = "hubble observe".to_string();
    for (k, v) in pairs {
        let flag = match k {
            "since" | "until" => k,
            _ => flag_for(k).unwrap_or(k),
        };
        out.push_str(" --");
        out.push_str(flag);
        if !VALUELESS.contains(&flag) {
            out.push(' ');
            out.push_str(&shell_quote(v));
        }
    }
    out
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_api::flow::{DropReason, TrafficDirection, Verdict};

    fn parse(q: &str) -> Result<FlowQuery, QueryError> {
        FlowQuery::parse(
            Some(q),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3600),
        )
    }

    #[test]
    fn empty_query_selects_everything() {
        let q = FlowQuery::parse(None, SystemTime::now()).unwrap();
        let r = q.request(500, false);
        assert!(r.whitelist.is_empty() && r.blacklist.is_empty());
        assert_eq!(r.number, 500);
        // Blank form fields are ignored.
        assert!(parse("namespace=&pod=&verdict=").unwrap().pairs.is_empty());
    }

    #[test]
    fn filters_match_the_cli() {
        let q = parse("namespace=demo&verdict=DROPPED&to_port=8080&protocol=tcp&node=lab%2Fn1&direction=ingress").unwrap();
        let cli = FilterBuilder::from_flags([
            ("namespace", "demo"),
            ("verdict", "DROPPED"),
            ("to-port", "8080"),
            ("protocol", "tcp"),
            ("node-name", "lab/n1"),
            ("traffic-direction", "ingress"),
        ])
        .unwrap();
        let r = q.request(10, false);
        assert_eq!(r.whitelist, cli.whitelist());
        assert_eq!(
            r.whitelist[0].traffic_direction,
            [TrafficDirection::Ingress as i32]
        );
        assert_eq!(q.cli_command(), "hubble observe --namespace demo --verdict DROPPED --to-port 8080 --protocol tcp --node-name lab/n1 --traffic-direction ingress");
    }

    #[test]
    fn policy_denied_and_not() {
        let q = parse("verdict=policy_denied&not=&from_pod=kube-system%2F").unwrap();
        let r = q.request(1, false);
        assert_eq!(r.whitelist.len(), 1);
        assert_eq!(r.whitelist[0].verdict, [Verdict::Dropped as i32]);
        assert_eq!(
            r.whitelist[0].drop_reason_desc,
            [
                DropReason::PolicyDenied as i32,
                DropReason::PolicyDeny as i32
            ]
        );
        assert_eq!(r.blacklist[0].source_pod, ["kube-system/"]);
    }

    #[test]
    fn times() {
        let q = parse("since=5m&until=2026-01-02T03:04:05Z").unwrap();
        let r = q.request(1, false);
        assert_eq!(r.since.unwrap().seconds, 3600 - 300);
        assert_eq!(r.until.unwrap().seconds, 1_767_323_045);
        let live = q.request(0, true);
        assert!(
            live.until.is_none() && live.since.is_none(),
            "follow: new flows only"
        );
    }

    #[test]
    fn invalid_filters() {
        for bad in [
            "verdict=MAYBE",
            "direction=sideways",
            "since=yesterday-ish",
            "from_pod=a&namespace=b",
            "not=&not=",
            "not=",
            "from_identity=nobody",
        ] {
            assert!(matches!(parse(bad), Err(QueryError::Invalid(_))), "{bad}");
        }
        assert_eq!(
            parse("colour=red").unwrap_err(),
            QueryError::Unknown("colour".into())
        );
    }

    #[test]
    fn links_round_trip() {
        let q = parse("label=app%3Dweb&pod=demo%2Fa+b").unwrap();
        assert_eq!(q.query_string(), "label=app%3Dweb&pod=demo%2Fa+b");
        assert_eq!(q.get("pod"), Some("demo/a b"));
        assert_eq!(
            q.cli_command(),
            "hubble observe --label app=web --pod 'demo/a b'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
