//! Label filters: `source_label`, `destination_label` and `node_labels`, with Kubernetes
//! label-selector syntax over Cilium label strings.
//!
//! A selector is a comma-separated list of requirements, all of which must hold:
//! `key=value` (or `==`), `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists),
//! `!key` (does not exist), `key>N`, `key<N` (integer values). An empty selector selects
//! everything, as in Kubernetes.
//!
//! Flow labels are Cilium strings `source:key=value` (`k8s:app=web`, `reserved:world`); a
//! label without a `:` before its `=` has no source. A selector key may carry a source
//! prefix: `k8s:app=web` only looks at labels of source `k8s`; a bare key (`app=web`) or the
//! `any:` source looks at labels of every source, as in Hubble (which adds `any:` to bare
//! keys).
//!
//! When several labels of different sources share a key (`k8s:app` and `container:app`),
//! `=` / `in` / `>` / `<` hold if one of them has a matching value, and `!=` / `notin` hold if
//! none of them has a listed value (Cilium looks only at the first one; the difference only
//! shows with duplicated keys).

use lumen_api::flow::Flow;

use crate::error::FilterError;
use crate::k8s::Side;

/// Which label list a [`LabelFilter`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelTarget {
    /// The labels of the source or destination endpoint.
    Endpoint(Side),
    /// `Flow.node_labels`.
    Node,
}

/// A compiled label filter: ORed selectors.
#[derive(Debug, Clone)]
pub(crate) struct LabelFilter {
    target: LabelTarget,
    selectors: Vec<Selector>,
}

impl LabelFilter {
    pub(crate) fn compile(
        target: LabelTarget,
        field: &'static str,
        values: &[String],
    ) -> Result<Self, FilterError> {
        let selectors = values
            .iter()
            .map(|value| {
                Selector::parse(value).map_err(|reason| FilterError::InvalidSelector {
                    field,
                    value: value.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { target, selectors })
    }

    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        let labels: &[String] = match self.target {
            LabelTarget::Endpoint(side) => side.endpoint(flow).map_or(&[], |ep| &ep.labels),
            LabelTarget::Node => &flow.node_labels,
        };
        self.selectors.iter().any(|s| s.matches(labels))
    }
}

/// A parsed label selector: ANDed requirements (none = everything).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    /// `None`: labels of any source.
    source: Option<String>,
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
    GreaterThan(i64),
    LessThan(i64),
}

/// A Cilium label string split into source (if any), key and value.
fn split_label(label: &str) -> (Option<&str>, &str, &str) {
    let eq = label.find('=');
    let (source, rest) = match label.find(':') {
        Some(colon) if eq.is_none_or(|eq| colon < eq) => {
            (Some(&label[..colon]), &label[colon + 1..])
        }
        _ => (None, label),
    };
    match rest.split_once('=') {
        Some((key, value)) => (source, key, value),
        None => (source, rest, ""),
    }
}

impl Requirement {
    /// The values of the labels this requirement's key selects.
    fn values<'a>(&'a self, labels: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        labels.iter().filter_map(move |label| {
            let (source, key, value) = split_label(label);
            let source_ok = match &self.source {
                None => true,
                Some(want) => source == Some(want.as_str()),
            };
            (source_ok && key == self.key).then_some(value)
        })
    }

    fn matches(&self, labels: &[String]) -> bool {
        let mut values = self.values(labels);
        match &self.op {
            Op::Exists => values.next().is_some(),
            Op::DoesNotExist => values.next().is_none(),
            Op::In(set) => values.any(|v| set.iter().any(|s| s == v)),
            Op::NotIn(set) => !values.any(|v| set.iter().any(|s| s == v)),
            Op::GreaterThan(n) => values.any(|v| v.parse::<i64>().is_ok_and(|v| v > *n)),
            Op::LessThan(n) => values.any(|v| v.parse::<i64>().is_ok_and(|v| v < *n)),
        }
    }
}

impl Selector {
    pub(crate) fn matches(&self, labels: &[String]) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses a selector; the error is a human-readable reason.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let tokens = lex(input)?;
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if parser.peek() == &Token::End {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                Token::End => break,
                Token::Comma => continue,
                t => {
                    return Err(format!(
                        "expected ',' or end of selector, found {}",
                        t.describe()
                    ))
                }
            }
        }
        Ok(Self { requirements })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    In,
    NotIn,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Comma => "','".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Not => "'!'".into(),
            Token::Eq => "'='".into(),
            Token::DoubleEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Gt => "'>'".into(),
            Token::Lt => "'<'".into(),
            Token::In => "'in'".into(),
            Token::NotIn => "'notin'".into(),
            Token::End => "end of selector".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>') || c.is_whitespace()
}

fn lex(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let token = match c {
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '<' => Token::Lt,
            '>' => Token::Gt,
            '!' | '=' => {
                chars.next();
                let followed_by_eq = chars.peek().is_some_and(|&(_, n)| n == '=');
                if followed_by_eq {
                    chars.next();
                }
                tokens.push(match (c, followed_by_eq) {
                    ('!', true) => Token::NotEq,
                    ('!', false) => Token::Not,
                    ('=', true) => Token::DoubleEq,
                    _ => Token::Eq,
                });
                continue;
            }
            _ => {
                let mut end = input.len();
                while let Some(&(j, n)) = chars.peek() {
                    if is_special(n) {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                tokens.push(match &input[i..end] {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    word => Token::Ident(word.to_owned()),
                });
                continue;
            }
        };
        chars.next();
        tokens.push(token);
    }
    tokens.push(Token::End);
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        match self.next() {
            Token::Not => match self.next() {
                Token::Ident(key) => make_requirement(&key, Op::DoesNotExist),
                t => Err(format!(
                    "expected a label key after '!', found {}",
                    t.describe()
                )),
            },
            Token::Ident(key) => {
                let op = match self.peek() {
                    Token::End | Token::Comma => Op::Exists,
                    Token::Eq | Token::DoubleEq => {
                        self.next();
                        Op::In(vec![self.exact_value()?])
                    }
                    Token::NotEq => {
                        self.next();
                        Op::NotIn(vec![self.exact_value()?])
                    }
                    Token::Gt | Token::Lt => {
                        let greater = self.next() == Token::Gt;
                        let n = match self.next() {
                            Token::Ident(v) => v
                                .parse::<i64>()
                                .map_err(|_| format!("{v:?} is not an integer"))?,
                            t => {
                                return Err(format!("expected an integer, found {}", t.describe()))
                            }
                        };
                        if greater {
                            Op::GreaterThan(n)
                        } else {
                            Op::LessThan(n)
                        }
                    }
                    Token::In | Token::NotIn => {
                        let is_in = self.next() == Token::In;
                        let values = self.value_set()?;
                        if is_in {
                            Op::In(values)
                        } else {
                            Op::NotIn(values)
                        }
                    }
                    t => {
                        return Err(format!(
                            "expected an operator (=, ==, !=, in, notin, >, <), ',' or end \
                             after key {key:?}, found {}",
                            t.describe()
                        ))
                    }
                };
                make_requirement(&key, op)
            }
            t => Err(format!("expected a label key, found {}", t.describe())),
        }
    }

    /// The value after `=` / `!=`: an identifier, or empty before ',' or the end.
    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek() {
            Token::End | Token::Comma => Ok(String::new()),
            Token::Ident(_) => match self.next() {
                Token::Ident(v) => validate_value(v),
                _ => unreachable!("peeked an identifier"),
            },
            t => Err(format!("expected a value, found {}", t.describe())),
        }
    }

    /// `( v1, v2, ... )` after `in` / `notin`; at least one value.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Token::Open => {}
            t => {
                return Err(format!(
                    "expected '(' after in/notin, found {}",
                    t.describe()
                ))
            }
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Token::Ident(v) => values.push(validate_value(v)?),
                Token::Close if values.is_empty() => {
                    return Err("the value set of in/notin must not be empty".into())
                }
                t => return Err(format!("expected a value, found {}", t.describe())),
            }
            match self.next() {
                Token::Comma => continue,
                Token::Close => break,
                t => return Err(format!("expected ',' or ')', found {}", t.describe())),
            }
        }
        Ok(values)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// A Kubernetes label name: at most 63 characters, alphanumeric at both ends, `-_.`
/// inside.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

/// A Kubernetes label value: empty or a valid name.
fn validate_value(value: String) -> Result<String, String> {
    if value.is_empty() || valid_name(&value) {
        Ok(value)
    } else {
        Err(format!(
            "invalid label value {value:?}: at most 63 characters, alphanumeric at both ends, \
             '-', '_' or '.' inside"
        ))
    }
}

/// Builds a requirement from a `[source:]key`, validating the key as a Kubernetes
/// qualified name (`[prefix/]name`).
fn make_requirement(raw_key: &str, op: Op) -> Result<Requirement, String> {
    let (source, key) = match raw_key.split_once(':') {
        Some((source, key)) => {
            let ok = !source.is_empty()
                && source
                    .bytes()
                    .all(|c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.'));
            if !ok {
                return Err(format!(
                    "invalid label source {source:?} in key {raw_key:?}"
                ));
            }
            (if source == "any" { None } else { Some(source) }, key)
        }
        None => (None, raw_key),
    };
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .bytes()
                    .all(|c| is_alnum(c) || matches!(c, b'-' | b'.'));
            if !ok {
                return Err(format!(
                    "invalid label key prefix {prefix:?} in key {raw_key:?}"
                ));
            }
            name
        }
        None => key,
    };
    if !valid_name(name) {
        return Err(format!(
            "invalid label key {raw_key:?}: the name must be at most 63 characters, \
             alphanumeric at both ends, '-', '_' or '.' inside"
        ));
    }
    Ok(Requirement {
        source: source.map(str::to_owned),
        key: key.to_owned(),
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|s| s.to_string()).collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn splits_cilium_labels() {
        assert_eq!(split_label("k8s:app=web"), (Some("k8s"), "app", "web"));
        assert_eq!(
            split_label("reserved:world"),
            (Some("reserved"), "world", "")
        );
        assert_eq!(split_label("app=a:b"), (None, "app", "a:b"));
        assert_eq!(
            split_label("k8s:io.kubernetes.pod.namespace=shop"),
            (Some("k8s"), "io.kubernetes.pod.namespace", "shop")
        );
    }

    #[test]
    fn selector_semantics() {
        let ls = labels(&[
            "k8s:app=web",
            "k8s:tier=3",
            "container:role=db",
            "reserved:host",
        ]);
        for (s, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("k8s:app=web", true),
            ("any:app=web", true),
            ("container:app=web", false),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (a, web)", true),
            ("app in(a,b)", false),
            ("app notin (a,b)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("!k8s:role", true),
            ("!container:role", false),
            ("reserved:host", true),
            ("host", true),
            ("k8s:host", false),
            ("tier>2", true),
            ("tier<3", false),
            ("tier>3", false),
            ("app=web,role=db", true),
            ("app=web, role=web", false),
            (" app = web , tier in ( 3 ) ", true),
            ("app=", false),
        ] {
            assert_eq!(sel(s).matches(&ls), want, "selector {s:?}");
        }
        assert!(sel("app=").matches(&labels(&["k8s:app"])));
        assert!(sel("!app").matches(&[]));
        // `app==` is `app == ""`, as in Kubernetes.
        assert!(sel("app==").matches(&labels(&["k8s:app"])));
    }

    #[test]
    fn selector_errors() {
        for s in [
            "app in (a",
            "app in a",
            "app in ()",
            "app=web)",
            "=web",
            "app=we b",
            "app web",
            "app>x",
            "!",
            "app,",
            ",app",
            "-app=x",
            "app=-x-",
            ":app",
            "k8s:/app",
            "app notin",
        ] {
            assert!(Selector::parse(s).is_err(), "{s:?} should not parse");
        }
    }
}
