//! Publishing an annotation on this node's `CiliumNode` (the WireGuard public key,
//! `network.cilium.io/wg-pub-key`), the API counterpart of the manifest source's
//! [`node_record`](crate::state::node_record).

use super::{kinds::DEFAULT_KINDS, KubeSourceError};
use kube::{
    api::{Api, Patch, PatchParams, PostParams},
    core::DynamicObject,
};

/// Sets (or with `None` removes) annotation `key` on CiliumNode `node` with a JSON merge
/// patch, which leaves every other field and annotation as it is. A node without a
/// CiliumNode yet (`ipam.mode: kubernetes`, or before the operator's first allocation)
/// gets one created, as Cilium's agent creates its own; if the operator creates it in
/// between, the patch is retried.
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
    let err = |source| KubeSourceError::Annotate {
        node: node.into(),
        key: key.into(),
        source,
    };
    let is = |e: &kube::Error, code: u16| matches!(e, kube::Error::Api(s) if s.code == code);
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(e) if is(&e, 404) && value.is_some() => {
            let mut obj = DynamicObject::new(node, &kind.api_resource());
            obj.metadata.annotations = Some(
                [(key.to_string(), value.unwrap_or_default().to_string())]
                    .into_iter()
                    .collect(),
            );
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => tracing::info!(node, "CiliumNode created"),
                Err(e) if is(&e, 409) => {
                    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Err(e) => return Err(err(e)),
    }
    tracing::info!(node, key, "CiliumNode annotation written");
    Ok(())
}
