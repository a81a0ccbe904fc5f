//! LB-IPAM in the API server: the same [`crate::lbipam::plan`] the agents run on the
//! manifest directory, fed with the Services and `CiliumLoadBalancerIPPool`s from the
//! watch caches and their current status, written back through the status subresource
//! with JSON merge patches. Conditions of other controllers on the same objects are kept.

use crate::lbipam::{
    current_file, is_lbipam_condition, log_changes, plan, planned_status, pool_file, service_file,
    FileChange,
};
use k8s_openapi::api::core::v1::Service as KubeService;
use kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    Client,
};
use lumen_lb::{IpPool, Service, ServiceName};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The `CiliumLoadBalancerIPPool` resource (`cilium.io/v2alpha1`, cluster-scoped).
pub fn pool_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2alpha1", "CiliumLoadBalancerIPPool"),
        "ciliumloadbalancerippools",
    )
}

/// Which object a status file stands for.
#[derive(Debug, Clone)]
enum Target {
    Service {
        namespace: String,
        name: String,
        status: Value,
    },
    Pool {
        name: String,
        status: Value,
    },
}

fn to_yaml(v: &impl serde::Serialize) -> Option<serde_yaml::Value> {
    serde_yaml::to_value(v).ok()
}

/// Plans and writes LB-IPAM status for `services` and `pools`; returns how many writes
/// failed (they are retried). Dormant while there is no pool and no status of ours.
pub async fn reconcile(
    client: &Client,
    services: &[KubeService],
    pools: &[DynamicObject],
) -> usize {
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    let mut parsed_pools = vec![];
    let mut parsed_services = vec![];
    for p in pools {
        let name = p.metadata.name.clone().unwrap_or_default();
        let status = p.data.get("status").cloned().unwrap_or(Value::Null);
        match to_yaml(p).map(|y| IpPool::parse(&y)) {
            Some(Ok(pool)) => parsed_pools.push(pool),
            Some(Err(e)) => tracing::warn!(pool = %name, error = %e, "LB-IPAM: pool ignored"),
            None => {}
        }
        if let Some((file, text)) = current_file("CiliumLoadBalancerIPPool", None, &name, &status) {
            current.insert(file, text);
        }
        targets.insert(pool_file(&name), Target::Pool { name, status });
    }
    for s in services {
        let namespace = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = s.metadata.name.clone().unwrap_or_default();
        let status = s
            .status
            .as_ref()
            .and_then(|st| serde_json::to_value(st).ok())
            .unwrap_or(Value::Null);
        if let Some(Ok(svc)) = to_yaml(s).map(|y| Service::parse(&y)) {
            parsed_services.push(svc);
        }
        if let Some((file, text)) = current_file("Service", Some(&namespace), &name, &status) {
            current.insert(file, text);
        }
        let file = service_file(&ServiceName {
            namespace: namespace.clone(),
            name: name.clone(),
        });
        targets.insert(
            file,
            Target::Service {
                namespace,
                name,
                status,
            },
        );
    }
    if parsed_pools.is_empty() && current.is_empty() {
        return 0;
    }
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let plan = plan(&current, &parsed_pools, &parsed_services, &now);
    let mut failed = 0;
    for change in &plan.changes {
        let (file, wanted) = match change {
            FileChange::Write { name, text } => (name, planned_status(text)),
            FileChange::Remove { name } => (name, None),
        };
        let Some(target) = targets.get(file) else {
            continue;
        };
        let result = match target {
            Target::Service {
                namespace,
                name,
                status,
            } => {
                let patch = service_patch(status, wanted.as_ref());
                let api: Api<KubeService> = Api::namespaced(client.clone(), namespace);
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            // A pool is only removed from the plan when it no longer parses; leave it.
            Target::Pool { name, status } => match &wanted {
                Some(w) => {
                    let patch = json!({"status": {"conditions": merged_conditions(status, w)}});
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &pool_resource());
                    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
                None => Ok(()),
            },
        };
        if let Err(e) = result {
            failed += 1;
            tracing::warn!(object = %file, error = %e, "LB-IPAM: status write failed, will retry");
        }
    }
    log_changes(&plan);
    failed
}

/// Conditions of other controllers from `current`, then LB-IPAM's from `wanted`.
fn merged_conditions(current: &Value, wanted: &Value) -> Value {
    let mut out: Vec<Value> = current
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            !c.get("type")
                .and_then(Value::as_str)
                .is_some_and(is_lbipam_condition)
        })
        .cloned()
        .collect();
    out.extend(
        wanted
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .cloned(),
    );
    Value::Array(out)
}

/// The status merge patch for a Service: `wanted`'s ingress (explicitly null when there is
/// none, or when LB-IPAM no longer manages the Service) and conditions.
fn service_patch(current: &Value, wanted: Option<&Value>) -> Value {
    let empty = json!({});
    let w = wanted.unwrap_or(&empty);
    let ingress = w
        .pointer("/loadBalancer/ingress")
        .filter(|i| i.as_array().is_some_and(|a| !a.is_empty()))
        .cloned()
        .unwrap_or(Value::Null);
    let conditions = merged_conditions(current, w);
    let conditions = if conditions.as_array().is_some_and(Vec::is_empty) {
        Value::Null
    } else {
        conditions
    };
    json!({"status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_patches_keep_foreign_conditions_and_clear_what_was_ours() {
        let current = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}, "conditions": [
            {"type": "cilium.io/IPAMRequestSatisfied", "status": "True"},
            {"type": "example.com/Ready", "status": "True"}]});
        let wanted = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}, "conditions": [
            {"type": "cilium.io/IPAMRequestSatisfied", "status": "True", "message": "new"}]});
        assert_eq!(
            service_patch(&current, Some(&wanted)),
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}, "conditions": [
                {"type": "example.com/Ready", "status": "True"},
                {"type": "cilium.io/IPAMRequestSatisfied", "status": "True", "message": "new"}]}})
        );
        assert_eq!(
            service_patch(&current, None),
            json!({"status": {"loadBalancer": {"ingress": null}, "conditions": [
                {"type": "example.com/Ready", "status": "True"}]}})
        );
        let unsatisfied = json!({"loadBalancer": {}, "conditions": []});
        assert_eq!(
            service_patch(&json!(null), Some(&unsatisfied)),
            json!({"status": {"loadBalancer": {"ingress": null}, "conditions": null}})
        );
    }
}
