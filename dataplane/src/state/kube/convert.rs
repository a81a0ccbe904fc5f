//! A watched object as the manifest source would have delivered it: the same
//! [`Object`], so [`ClusterState::from_objects`](crate::state::ClusterState::from_objects)
//! cannot tell the sources apart.

use super::kinds::WatchedKind;
use crate::state::Object;
use kube::core::DynamicObject;
use std::sync::Arc;

/// Why an object from the API server could not be taken in (it is left out).
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The object does not serialise to JSON (cannot happen for what serde read).
    #[error("re-encoding: {0}")]
    Encode(#[source] serde_json::Error),
    /// The object does not have the shape of a Kubernetes object.
    #[error("not a Kubernetes object: {0}")]
    Shape(#[source] serde_yaml::Error),
}

/// `obj`, a `kind` object from the API server, as an [`Object`]. List items carry no
/// `apiVersion`/`kind`, so both come from `kind`; `metadata.managedFields`, the API
/// server's bookkeeping (often as large as the object), is dropped.
pub fn to_object(kind: &WatchedKind, obj: &DynamicObject) -> Result<Object, ConvertError> {
    let mut json = serde_json::to_value(obj).map_err(ConvertError::Encode)?;
    if let serde_json::Value::Object(m) = &mut json {
        m.insert("apiVersion".into(), kind.api_version().into());
        m.insert("kind".into(), kind.kind.into());
        if let Some(serde_json::Value::Object(meta)) = m.get_mut("metadata") {
            meta.remove("managedFields");
        }
    }
    let raw: serde_yaml::Value = serde_yaml::to_value(&json).map_err(ConvertError::Shape)?;
    let mut out: Object = serde_yaml::from_value(raw.clone()).map_err(ConvertError::Shape)?;
    out.raw = Some(Arc::new(raw));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::kube::kinds::DEFAULT_KINDS;

    #[test]
    fn list_items_get_their_kind_and_lose_managed_fields() {
        let pod: DynamicObject = serde_json::from_str(
            r#"{"metadata":{"name":"a","namespace":"demo","resourceVersion":"7",
                "managedFields":[{"manager":"kubelet"}]},
               "spec":{"nodeName":"node1"},"status":{"podIP":"10.0.0.1"}}"#,
        )
        .unwrap();
        let kind = DEFAULT_KINDS.iter().find(|k| k.kind == "Pod").unwrap();
        let o = to_object(kind, &pod).unwrap();
        assert_eq!((o.api_version.as_str(), o.kind.as_str()), ("v1", "Pod"));
        assert_eq!(o.metadata.namespace.as_deref(), Some("demo"));
        assert_eq!(o.status["podIP"].as_str(), Some("10.0.0.1"));
        let raw = o.raw.as_deref().unwrap();
        assert!(raw["metadata"].get("managedFields").is_none());
        assert_eq!(raw["kind"].as_str(), Some("Pod"));
    }
}
