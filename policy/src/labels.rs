//! Identity labels (`source:key=value`) and label-key parsing as selectors write them.

/// Label key of a pod's namespace.
pub(crate) const NAMESPACE_KEY: &str = "io.kubernetes.pod.namespace";
/// Prefix that turns a namespace label into an identity label key.
pub(crate) const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// Source of labels coming from Kubernetes.
pub(crate) const SOURCE_K8S: &str = "k8s";
/// Source of reserved labels.
pub(crate) const SOURCE_RESERVED: &str = "reserved";

/// One identity label, borrowed from its `source:key=value` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label<'a> {
    /// Source (`k8s`, `reserved`, `cidr`...); `unspec` when the string has none.
    pub source: &'a str,
    /// Key.
    pub key: &'a str,
    /// Value, empty when the string has no `=`.
    pub value: &'a str,
}

impl<'a> Label<'a> {
    /// Splits `source:key=value`. The source is only taken if its `:` comes before any `=`.
    pub(crate) fn parse(s: &'a str) -> Self {
        let (source, rest) = match (s.find(':'), s.find('=')) {
            (Some(c), Some(e)) if c < e => (&s[..c], &s[c + 1..]),
            (Some(c), None) => (&s[..c], &s[c + 1..]),
            _ => ("unspec", s),
        };
        let (key, value) = match rest.find('=') {
            Some(e) => (&rest[..e], &rest[e + 1..]),
            None => (rest, ""),
        };
        Label { source, key, value }
    }
}

/// Splits a selector key into (source, key); `None` source (unprefixed or `any:`) matches any source.
/// `$name` is Cilium's shorthand for `reserved:name`.
pub(crate) fn parse_selector_key(k: &str) -> (Option<String>, String) {
    if let Some(rest) = k.strip_prefix('$') {
        return (Some(SOURCE_RESERVED.to_string()), rest.to_string());
    }
    match k.split_once(':') {
        Some(("any", key)) => (None, key.to_string()),
        Some((src, key)) => (Some(src.to_string()), key.to_string()),
        None => (None, k.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels() {
        let l = Label::parse("k8s:app=web");
        assert_eq!((l.source, l.key, l.value), ("k8s", "app", "web"));
        let l = Label::parse("reserved:host");
        assert_eq!((l.source, l.key, l.value), ("reserved", "host", ""));
        let l = Label::parse("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=demo");
        assert_eq!(
            l.key,
            "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
        );
        assert_eq!(l.value, "demo");
        let l = Label::parse("app=a:b");
        assert_eq!((l.source, l.key, l.value), ("unspec", "app", "a:b"));
        let l = Label::parse("cidr:10.0.0.0/8");
        assert_eq!((l.source, l.key, l.value), ("cidr", "10.0.0.0/8", ""));
    }

    #[test]
    fn parses_selector_keys() {
        assert_eq!(parse_selector_key("app"), (None, "app".into()));
        assert_eq!(parse_selector_key("any:app"), (None, "app".into()));
        assert_eq!(
            parse_selector_key("k8s:app"),
            (Some("k8s".into()), "app".into())
        );
        assert_eq!(
            parse_selector_key("$host"),
            (Some("reserved".into()), "host".into())
        );
    }
}
