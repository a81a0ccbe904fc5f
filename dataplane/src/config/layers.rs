//! Several config files read as one, like `helm -f a.yaml -f b.yaml`: mappings merge key
//! by key, and everything else (scalars, lists) in a later file replaces the earlier
//! value. The demo lab runs each agent from the seed's values file plus a small file of
//! node-local settings.

use serde_yaml::Value;

/// Merges `over` into `base`: nested mappings recursively, other values replaced.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        // An empty document (`~` or nothing) changes nothing.
        (_, Value::Null) => {}
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn later_files_win_and_mappings_merge() {
        let mut v =
            y("a: 1\nhubble: {relay: {enabled: true}, eventBufferCapacity: 10}\nl: [1, 2]\n");
        merge(
            &mut v,
            y("hubble: {eventBufferCapacity: 20}\nl: [3]\nb: x\n"),
        );
        assert_eq!(
            v,
            y("a: 1\nhubble: {relay: {enabled: true}, eventBufferCapacity: 20}\nl: [3]\nb: x\n")
        );
    }

    #[test]
    fn an_empty_file_changes_nothing() {
        let mut v = y("a: 1\n");
        merge(&mut v, Value::Null);
        assert_eq!(v, y("a: 1\n"));
    }
}
