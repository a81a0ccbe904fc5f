//! Application-layer filters over `Flow.l7`: `dns_query`, `http_status_code`,
//! `http_method`, `http_path`, `http_url` and `http_header`.
//!
//! As in Hubble: `dns_query`, `http_path` and `http_url` are regular expressions searched
//! (unanchored) in the DNS query name, the URL's path and the whole URL; `http_status_code`
//! is `NNN` (100-599) or a prefix `N+` / `NN+` (`5+` is 500-599, `40+` is 400-409), and a
//! record without a code (a request) never matches it; `http_method` compares
//! case-insensitively; `http_header` needs one of the record's headers to equal one of the
//! listed key/value pairs exactly. A `FlowFilter` that combines an HTTP filter with an
//! `event_type` filter lacking L7 (type 129) is refused, as Hubble does.

use std::borrow::Cow;

use lumen_api::flow::{layer7, Dns, EventTypeFilter, Flow, Http, HttpHeader};
use regex::Regex;

use crate::error::FilterError;

/// Cilium's monitor message type of L7 access-log events.
pub(crate) const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// Compiles regular expressions, naming `field` on error.
pub(crate) fn compile_regexes(
    field: &'static str,
    values: &[String],
) -> Result<Vec<Regex>, FilterError> {
    values
        .iter()
        .map(|value| {
            Regex::new(value).map_err(|e| FilterError::InvalidRegex {
                field,
                value: value.clone(),
                reason: regex_reason(&e),
            })
        })
        .collect()
}

/// The one-line cause of a regex error (the syntax error's last `error: ...` line).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or_default())
        .trim()
        .to_owned()
}

/// Refuses HTTP filters next to an `event_type` filter that cannot match L7 events.
pub(crate) fn check_l7_event_type(
    field: &'static str,
    first_value: impl FnOnce() -> String,
    event_types: &[EventTypeFilter],
) -> Result<(), FilterError> {
    if event_types.is_empty()
        || event_types
            .iter()
            .any(|t| t.r#type == MESSAGE_TYPE_ACCESS_LOG)
    {
        Ok(())
    } else {
        Err(FilterError::RequiresL7EventType {
            field,
            value: first_value(),
        })
    }
}

fn dns(flow: &Flow) -> Option<&Dns> {
    match flow.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Dns(dns) => Some(dns),
        _ => None,
    }
}

fn http(flow: &Flow) -> Option<&Http> {
    match flow.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Http(http) => Some(http),
        _ => None,
    }
}

/// `dns_query`: the flow has a DNS record whose query one of the expressions matches.
pub(crate) fn dns_query_matches(regexes: &[Regex], flow: &Flow) -> bool {
    dns(flow).is_some_and(|d| regexes.iter().any(|re| re.is_match(&d.query)))
}

/// One `http_status_code` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusCode {
    /// `NNN`: exactly this code.
    Exact(u32),
    /// `N+` / `NN+`: codes whose 3-digit form starts with these digits.
    Prefix { digits: u32, len: u32 },
}

impl StatusCode {
    fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|c| (b'1'..=b'5').contains(c));
        if !first_ok {
            return None;
        }
        match b {
            [_, _, _] if b.iter().all(u8::is_ascii_digit) => s.parse().ok().map(Self::Exact),
            [_, b'+'] | [_, _, b'+'] if b[..b.len() - 1].iter().all(u8::is_ascii_digit) => {
                let digits = &s[..s.len() - 1];
                Some(Self::Prefix {
                    digits: digits.parse().ok()?,
                    len: digits.len() as u32,
                })
            }
            _ => None,
        }
    }

    fn matches(self, code: u32) -> bool {
        match self {
            Self::Exact(want) => code == want,
            Self::Prefix { digits, len } => {
                // The code printed with at least 3 digits starts with `digits`.
                let width = code.checked_ilog10().map_or(1, |l| l + 1).max(3);
                code / 10u32.pow(width - len) == digits
            }
        }
    }
}

/// Parses `http_status_code` values.
pub(crate) fn compile_status_codes(
    field: &'static str,
    values: &[String],
) -> Result<Vec<StatusCode>, FilterError> {
    values
        .iter()
        .map(|value| {
            StatusCode::parse(value).ok_or_else(|| FilterError::InvalidStatusCode {
                field,
                value: value.clone(),
            })
        })
        .collect()
}

/// `http_status_code`: the flow has an HTTP record with a non-zero code that one of the
/// values matches.
pub(crate) fn status_code_matches(codes: &[StatusCode], flow: &Flow) -> bool {
    http(flow).is_some_and(|h| h.code != 0 && codes.iter().any(|c| c.matches(h.code)))
}

/// `http_method`: the flow has an HTTP record with a method equal (ignoring ASCII case) to
/// one of the listed ones.
pub(crate) fn method_matches(methods: &[String], flow: &Flow) -> bool {
    http(flow).is_some_and(|h| {
        !h.method.is_empty() && methods.iter().any(|m| m.eq_ignore_ascii_case(&h.method))
    })
}

/// `http_url`: the flow has an HTTP record with a URL that one of the expressions matches.
pub(crate) fn url_matches(regexes: &[Regex], flow: &Flow) -> bool {
    http(flow).is_some_and(|h| !h.url.is_empty() && regexes.iter().any(|re| re.is_match(&h.url)))
}

/// `http_path`: the flow has an HTTP record whose URL parses as a request URI and one of the
/// expressions matches its (percent-decoded) path.
pub(crate) fn path_matches(regexes: &[Regex], flow: &Flow) -> bool {
    let Some(h) = http(flow) else {
        return false;
    };
    match request_path(&h.url) {
        Some(path) => regexes.iter().any(|re| re.is_match(&path)),
        None => false,
    }
}

/// `http_header`: one of the record's headers equals one of the listed key/value pairs.
pub(crate) fn header_matches(headers: &[HttpHeader], flow: &Flow) -> bool {
    http(flow).is_some_and(|h| {
        h.headers.iter().any(|fh| {
            headers
                .iter()
                .any(|w| w.key == fh.key && w.value == fh.value)
        })
    })
}

/// The path of a request URI (`/p?q`, `scheme://authority/p?q` or `*`), percent-decoded;
/// `None` when the URL is not a request URI or has a bad escape.
fn request_path(url: &str) -> Option<Cow<'_, str>> {
    if url.is_empty() {
        return None;
    }
    if url == "*" {
        return Some(Cow::Borrowed("*"));
    }
    let path = if url.starts_with('/') {
        url
    } else {
        let (scheme, rest) = url.split_once(':')?;
        let mut chars = scheme.chars();
        let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return None;
        }
        match rest.strip_prefix("//") {
            Some(after) => after.find('/').map_or("", |i| &after[i..]),
            None if rest.starts_with('/') => rest,
            // An opaque URI (`mailto:x`): no path.
            None => "",
        }
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    percent_decode(path)
}

fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        let m = |f: &str, code: u32| StatusCode::parse(f).unwrap().matches(code);
        assert!(m("200", 200));
        assert!(!m("200", 201));
        assert!(m("5+", 503));
        assert!(m("5+", 500));
        assert!(m("5+", 599));
        assert!(!m("5+", 499));
        assert!(m("40+", 404));
        assert!(!m("40+", 410));
        assert!(!m("1+", 99));
        for bad in [
            "", "600", "099", "2000", "+", "5", "50", "6+", "500+", "5x+", "abc",
        ] {
            assert_eq!(StatusCode::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn request_paths() {
        let p = |u: &str| request_path(u).map(|c| c.into_owned());
        assert_eq!(p("/api/v1?x=1").as_deref(), Some("/api/v1"));
        assert_eq!(
            p("http://shop.local:8080/cart/items?id=3").as_deref(),
            Some("/cart/items")
        );
        assert_eq!(p("https://shop.local").as_deref(), Some(""));
        assert_eq!(p("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(p("/a%2").as_deref(), None);
        assert_eq!(p("relative/path").as_deref(), None);
        assert_eq!(p("").as_deref(), None);
        assert_eq!(p("*").as_deref(), Some("*"));
    }
}
