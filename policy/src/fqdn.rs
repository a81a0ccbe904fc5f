//! DNS names in policy: `toFQDNs` selectors and `toPorts.rules.dns` rules, matched the way
//! Cilium matches them, and the identities of the addresses names resolved to.
//!
//! Names are compared lower-case and without the trailing root dot. `matchName` is an exact
//! name. In `matchPattern`, `*` stands for any run (possibly empty) of DNS name characters
//! (`a-z`, `0-9`, `-`, `_`) inside one label, so `*.example.test` matches `api.example.test`
//! but neither `example.test` (the apex) nor `a.b.example.test`; a leading `**.` matches one
//! or more whole labels (`**.example.test` matches `a.b.example.test`); a pattern that is
//! just `*` matches every name.

use std::net::IpAddr;

/// First identity the agent gives to an address a selected name resolved to: above the
/// CIDR identities of policy prefixes (numbered from [`crate::CIDR_IDENTITY_BASE`]).
pub const FQDN_IDENTITY_BASE: u32 = crate::identity::CIDR_IDENTITY_BASE + (1 << 20);

/// One `matchName` / `matchPattern` selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FqdnSelector {
    /// `matchName`: exactly this name (normalised).
    Name(String),
    /// `matchPattern`: a wildcard pattern (normalised).
    Pattern(String),
}

impl FqdnSelector {
    /// Whether `name` (any case, with or without the trailing dot) is selected.
    pub fn matches(&self, name: &str) -> bool {
        let name = normalize(name);
        match self {
            FqdnSelector::Name(n) => *n == name,
            FqdnSelector::Pattern(p) => pattern_matches(p, &name),
        }
    }

    /// Cilium's text for it: `matchName: x` or `matchPattern: y`.
    pub fn describe(&self) -> String {
        match self {
            FqdnSelector::Name(n) => format!("matchName: {n}"),
            FqdnSelector::Pattern(p) => format!("matchPattern: {p}"),
        }
    }
}

/// Lower-case, without the trailing root dot (the root itself stays `.`).
pub fn normalize(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.strip_suffix('.') {
        Some("") | None => n,
        Some(s) => s.to_string(),
    }
}

/// Whether `s` holds only characters Cilium accepts in a `matchName`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `s` holds only characters Cilium accepts in a `matchPattern`.
pub(crate) fn valid_pattern(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'))
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if name == "." {
        return false;
    }
    if let Some(rest) = pattern.strip_prefix("**.") {
        // One or more whole labels, then the rest of the pattern.
        let mut tail = name;
        while let Some((_, after)) = tail.split_once('.') {
            if labels_match(rest, after) {
                return true;
            }
            tail = after;
        }
        return false;
    }
    labels_match(pattern, name)
}

fn labels_match(pattern: &str, name: &str) -> bool {
    let (mut p, mut n) = (pattern.split('.'), name.split('.'));
    loop {
        match (p.next(), n.next()) {
            (None, None) => return true,
            (Some(pl), Some(nl)) if label_matches(pl.as_bytes(), nl.as_bytes()) => {}
            _ => return false,
        }
    }
}

/// Glob over one label: `*` is any run of DNS characters.
fn label_matches(p: &[u8], n: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if label_matches(rest, &n[i..]) {
                    return true;
                }
                match n.get(i) {
                    Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_') => i += 1,
                    _ => return false,
                }
            }
        }
        Some((c, rest)) => n.first() == Some(c) && label_matches(rest, &n[1..]),
    }
}

/// An address a selected name resolved to, with its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FqdnIdentity {
    /// Identity (from [`FQDN_IDENTITY_BASE`]), stable while the address stays known.
    pub identity: u32,
    /// The address.
    pub ip: IpAddr,
    /// Names (normalised) that resolved to it and are still valid.
    pub names: Vec<String>,
}

impl FqdnIdentity {
    /// Whether any of its names is selected by `sel`.
    pub fn selected_by(&self, sel: &FqdnSelector) -> bool {
        self.names.iter().any(|n| sel.matches(n))
    }
}

/// What an endpoint's egress policy asks of the DNS proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsPolicy {
    /// Its DNS traffic goes through the proxy: a rule selecting it has `toFQDNs` or DNS rules.
    pub redirect: bool,
    /// Names it may resolve (`toPorts.rules.dns` of every rule selecting it, merged); `None`
    /// when no rule restricts names.
    pub allowed: Option<Vec<FqdnSelector>>,
    /// `toFQDNs` selectors of the rules selecting it (their names are learnt from answers).
    pub selectors: Vec<FqdnSelector>,
}

impl DnsPolicy {
    /// Whether the endpoint may resolve `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.iter().any(|s| s.matches(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> FqdnSelector {
        FqdnSelector::Pattern(normalize(p))
    }

    #[test]
    fn match_name_is_exact_case_insensitive_with_or_without_root_dot() {
        let s = FqdnSelector::Name(normalize("API.example.test."));
        assert!(s.matches("api.example.test"));
        assert!(s.matches("Api.Example.Test."));
        assert!(!s.matches("www.api.example.test"));
        assert!(!s.matches("example.test"));
    }

    #[test]
    fn star_label_matches_subdomains_not_the_apex() {
        let s = pat("*.example.test");
        assert!(s.matches("api.example.test"));
        assert!(s.matches("cdn-1_x.example.test."));
        assert!(!s.matches("example.test"), "the apex");
        assert!(!s.matches("a.b.example.test"), "one label only");
        assert!(!s.matches("apiexample.test"));
        assert!(!s.matches("api.example.testing"));
    }

    #[test]
    fn stars_inside_labels() {
        let s = pat("api-*.example.test");
        assert!(s.matches("api-1.example.test"));
        assert!(s.matches("api-.example.test"));
        assert!(!s.matches("api.example.test"));
        let s = pat("*cdn*.example.*");
        assert!(s.matches("eu-cdn-7.example.org"));
        assert!(!s.matches("eu.cdn.example.org"));
    }

    #[test]
    fn double_star_matches_several_labels_and_lone_star_everything() {
        let s = pat("**.example.test");
        assert!(s.matches("a.example.test"));
        assert!(s.matches("a.b.c.example.test"));
        assert!(!s.matches("example.test"));
        let all = pat("*");
        assert!(all.matches("anything.at.all"));
        assert!(all.matches("."));
    }

    #[test]
    fn dns_policy_allows_by_union_or_everything() {
        let open = DnsPolicy::default();
        assert!(open.allows("x.y"));
        let p = DnsPolicy {
            redirect: true,
            allowed: Some(vec![
                FqdnSelector::Name("api.example.test".into()),
                pat("*.cdn.test"),
            ]),
            selectors: vec![],
        };
        assert!(p.allows("api.example.test"));
        assert!(p.allows("e1.cdn.test"));
        assert!(!p.allows("evil.example.test"));
    }
}
