//! Publishing an annotation on this node's `CiliumNode` (the WireGuard public key,
//! `network.cilium.io/wg-pub-key`), the API counterpart of the manifest source's
//! [`node_record`](crate::state::node_record).

use super::{kinds::DEFAULT_KINDS, KubeSourceError};
use kube::{
    api::{Api, Patch, PatchParams},
    core::DynamicObject,
};

/// Sets (or with `None` removes) annotation `key` on CiliumNode `node` with a JSON merge
/// patch, which leaves every other field and annotation as it is.
pub async fn write_node_annotation(
    client: kube::Client,
    node: &str,
    key: &str,
    value: Option<&str>,
) -> Result<(), KubeSourceError> {
    let kind = DEFAULT_KINDS
        .iter()
        .find(|k| k.kind == "CiliumNode")
        .expect("CiliumNode is a default kind");
    let api: Api<DynamicObject> = Api::all_with(client, &kind.api_resource());
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| KubeSourceError::Annotate {
            node: node.into(),
            key: key.into(),
            source,
        })?;
    tracing::info!(node, key, "CiliumNode annotation written");
    Ok(())
}
