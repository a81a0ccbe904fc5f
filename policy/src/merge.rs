//! Merging candidate entries into final LPM map entries: one per key, deny precedence, and
//! removal of allows that a broader deny of the same identity must shadow.

use std::collections::BTreeMap;

use crate::entry::{Action, Entry};

type Key = (u32, u8, u16, u8);

/// Collects entries keyed by (identity, proto, port, port_prefix).
#[derive(Debug, Default)]
pub(crate) struct EntryMap {
    map: BTreeMap<Key, Entry>,
}

/// Precedence of an entry on the same key: non-audit deny > audit deny > allow.
fn rank(e: &Entry) -> u8 {
    match (e.action, e.audit) {
        (Action::Deny, false) => 2,
        (Action::Deny, true) => 1,
        (Action::Allow, _) => 0,
    }
}

impl EntryMap {
    /// Adds an entry; on a key clash the higher precedence wins, ties keep the first.
    pub(crate) fn insert(&mut self, e: Entry) {
        let key = (e.identity, e.proto, e.port, e.port_prefix);
        match self.map.get_mut(&key) {
            Some(old) if rank(&e) > rank(old) => *old = e,
            Some(_) => {}
            None => {
                self.map.insert(key, e);
            }
        }
    }

    /// Final sorted entries, without allows covered by a broader deny of the same identity.
    pub(crate) fn finish(self) -> Vec<Entry> {
        let mut denies: BTreeMap<u32, Vec<(u8, u16, u8)>> = BTreeMap::new();
        for e in self.map.values().filter(|e| e.action == Action::Deny) {
            denies
                .entry(e.identity)
                .or_default()
                .push((e.proto, e.port, e.port_prefix));
        }
        self.map
            .into_values()
            .filter(|e| {
                e.action == Action::Deny
                    || !denies
                        .get(&e.identity)
                        .is_some_and(|ds| ds.iter().any(|&d| covers(d, e)))
            })
            .collect()
    }
}

/// Whether deny key `d` (proto, port, prefix) covers the allow entry `e` (same identity assumed).
fn covers((proto, port, prefix): (u8, u16, u8), e: &Entry) -> bool {
    if proto == 0 {
        return true;
    }
    proto == e.proto && prefix <= e.port_prefix && block_start(e.port, prefix) == port
}

fn block_start(port: u16, prefix: u8) -> u16 {
    if prefix == 0 {
        0
    } else {
        port & (u16::MAX << (16 - u32::from(prefix.min(16))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::match_type;

    fn e(
        identity: u32,
        proto: u8,
        port: u16,
        port_prefix: u8,
        action: Action,
        audit: bool,
        policy: usize,
    ) -> Entry {
        Entry {
            identity,
            proto,
            port,
            port_prefix,
            action,
            audit,
            match_type: match_type(identity, proto, port_prefix),
            policy,
        }
    }

    #[test]
    fn same_key_precedence() {
        let mut m = EntryMap::default();
        m.insert(e(300, 6, 80, 16, Action::Allow, false, 0));
        m.insert(e(300, 6, 80, 16, Action::Allow, false, 1));
        m.insert(e(300, 6, 80, 16, Action::Deny, true, 2));
        m.insert(e(300, 6, 80, 16, Action::Deny, false, 3));
        m.insert(e(300, 6, 80, 16, Action::Deny, true, 4));
        m.insert(e(301, 6, 80, 16, Action::Allow, false, 5));
        m.insert(e(301, 6, 80, 16, Action::Allow, false, 6));
        let out = m.finish();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].action, out[0].audit, out[0].policy),
            (Action::Deny, false, 3)
        );
        assert_eq!(out[1].policy, 5);
    }

    #[test]
    fn broader_deny_removes_covered_allows() {
        let mut m = EntryMap::default();
        m.insert(e(300, 6, 80, 16, Action::Allow, false, 0));
        m.insert(e(300, 17, 53, 16, Action::Allow, false, 0));
        m.insert(e(300, 6, 0, 8, Action::Deny, false, 1)); // TCP 0-255
        m.insert(e(301, 6, 443, 16, Action::Allow, false, 0));
        m.insert(e(301, 0, 0, 0, Action::Deny, false, 1));
        m.insert(e(302, 6, 1024, 16, Action::Allow, false, 0));
        m.insert(e(302, 6, 0, 8, Action::Deny, false, 1));
        m.insert(e(0, 6, 80, 16, Action::Allow, false, 0));
        let out: Vec<_> = m
            .finish()
            .into_iter()
            .map(|e| (e.identity, e.proto, e.port, e.action))
            .collect();
        assert_eq!(
            out,
            vec![
                (0, 6, 80, Action::Allow),
                (300, 6, 0, Action::Deny),
                (300, 17, 53, Action::Allow),
                (301, 0, 0, Action::Deny),
                (302, 6, 0, Action::Deny),
                (302, 6, 1024, Action::Allow),
            ]
        );
    }
}
