//! LB-IPAM status write-back: assigns LoadBalancer IPs from `CiliumLoadBalancerIPPool`s
//! with [`lumen_lb::allocate`] and writes the outcome as status objects into the state
//! source's `status/` directory (one `service.<namespace>.<name>.yaml` per managed
//! Service, one `ciliumloadbalancerippool.<name>.yaml` per pool), which the manifest
//! scanner merges back into the objects ([`crate::state::manifests`]).
//!
//! Every agent runs [`reconcile`] on each state change. It holds an exclusive `flock` on
//! `status/.lock` while it re-reads the manifests and the current status and writes the
//! difference, so concurrent agents act as one writer (compare and swap): the same inputs
//! give the same files, and the second agent finds nothing to change. Conditions follow
//! Cilium's operator: type `cilium.io/IPAMRequestSatisfied` on services (reasons from
//! [`ConditionReason`]); `cilium.io/PoolConflict`, `cilium.io/IPsTotal`,
//! `cilium.io/IPsAvailable`, `cilium.io/IPsUsed` on pools. A pool whose blocks overlap
//! an older pool's is conflicting and hands out nothing, as in Cilium.
//!
//! LB-IPAM is dormant until the first pool appears (like Cilium's); once pools are gone it
//! still runs while status files remain, to clear them.

use crate::state::{
    lock::{write_atomic, FileLock},
    manifests::ManifestDir,
    ClusterState,
};
use lumen_lb::{
    allocate, is_lbipam_managed, ConditionReason, IpPool, IpamResult, Service, ServiceName,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// The service condition type (Cilium's).
pub const SERVICE_CONDITION: &str = "cilium.io/IPAMRequestSatisfied";
/// The pool condition saying whether its blocks overlap an older pool's.
pub const POOL_CONFLICT: &str = "cilium.io/PoolConflict";
/// The pool condition whose message is the number of allocatable addresses.
pub const POOL_IPS_TOTAL: &str = "cilium.io/IPsTotal";
/// The pool condition whose message is the number of free addresses.
pub const POOL_IPS_AVAILABLE: &str = "cilium.io/IPsAvailable";
/// The pool condition whose message is the number of assigned addresses.
pub const POOL_IPS_USED: &str = "cilium.io/IPsUsed";

const POOL_KIND: &str = "CiliumLoadBalancerIPPool";
const SERVICE_PREFIX: &str = "service.";
const POOL_PREFIX: &str = "ciliumloadbalancerippool.";

/// Why a reconcile could not finish (the next state change retries).
#[derive(Debug, thiserror::Error)]
pub enum LbIpamError {
    /// A status file or the lock could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LbIpamError + '_ {
    move |source| LbIpamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One change to the status directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Write `text` to the file `name` (replacing it).
    Write {
        /// File name inside `status/`.
        name: String,
        /// The whole new content.
        text: String,
    },
    /// Remove the file `name`.
    Remove {
        /// File name inside `status/`.
        name: String,
    },
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The file changes, in name order.
    pub changes: Vec<FileChange>,
    /// The allocation behind them.
    pub result: IpamResult,
    /// Conflicting pools: (pool, message).
    pub conflicts: Vec<(String, String)>,
}

/// A status object as written: identity and `status` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusObject {
    api_version: String,
    kind: String,
    metadata: StatusMeta,
    status: Status,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StatusMeta {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    load_balancer: Option<LoadBalancerStatus>,
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoadBalancerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ingress: Vec<Ingress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ingress {
    ip: String,
}

/// A Kubernetes `metav1.Condition` (without `observedGeneration`: the state source keeps
/// no generations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: String,
    message: String,
    last_transition_time: String,
}

/// The status file name of service `name`.
pub fn service_file(name: &ServiceName) -> String {
    format!("{SERVICE_PREFIX}{}.{}.yaml", name.namespace, name.name)
}

/// The status file name of pool `name`.
pub fn pool_file(name: &str) -> String {
    format!("{POOL_PREFIX}{name}.yaml")
}

/// Whether `name` is a status file LB-IPAM writes (others in `status/` are left alone).
fn is_ours(name: &str) -> bool {
    (name.starts_with(SERVICE_PREFIX) || name.starts_with(POOL_PREFIX)) && name.ends_with(".yaml")
}

/// Pools overlapping an older pool (creation time, then name): (pool, message).
fn conflicts(pools: &[IpPool]) -> Vec<(String, String)> {
    let mut sorted: Vec<&IpPool> = pools.iter().collect();
    sorted.sort_by(|a, b| {
        let key = |p: &IpPool| {
            (
                p.meta.creation_timestamp.is_none(),
                p.meta.creation_timestamp.clone(),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.name().cmp(b.name()))
    });
    let mut good: Vec<&IpPool> = vec![];
    let mut out = vec![];
    for p in sorted {
        let hit = p.ranges().iter().find_map(|r| {
            good.iter().find_map(|g| {
                g.ranges()
                    .iter()
                    .find(|o| r.first <= o.last && o.first <= r.last && r.family() == o.family())
                    .map(|o| (r, o, g.name()))
            })
        });
        match hit {
            Some((r, o, other)) => out.push((
                p.name().to_string(),
                format!(
                    "Pool conflicts since range {}-{} overlaps range {}-{} from IP Pool {other}",
                    r.first, r.last, o.first, o.last
                ),
            )),
            None => good.push(p),
        }
    }
    out
}

/// Conditions of `new`, keeping `lastTransitionTime` from `old` where the status did not
/// change (Kubernetes' `SetStatusCondition` semantics).
fn carry_times(mut new: Vec<Condition>, old: Option<&StatusObject>) -> Vec<Condition> {
    for c in &mut new {
        if let Some(prev) = old
            .into_iter()
            .flat_map(|o| &o.status.conditions)
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    new
}

fn condition(type_: &str, status: &str, reason: &str, message: String, now: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: now.into(),
    }
}

/// Computes the status files for `pools` and `services` (whose `ingress_ips` are their
/// current status) given the `current` files of `status/` (name → text) and the time `now`
/// (RFC 3339) for new transitions. Only files whose content changes are written; our files
/// that are no longer wanted are removed.
pub fn plan(
    current: &BTreeMap<String, String>,
    pools: &[IpPool],
    services: &[Service],
    now: &str,
) -> Plan {
    let conflicts = conflicts(pools);
    let usable: Vec<IpPool> = pools
        .iter()
        .filter(|p| !conflicts.iter().any(|(c, _)| c == p.name()))
        .cloned()
        .collect();
    let result = allocate(&usable, services);
    let old = |name: &str| -> Option<StatusObject> {
        current
            .get(name)
            .and_then(|t| serde_yaml::from_str::<StatusObject>(t).ok())
    };
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for a in &result.services {
        let name = service_file(&a.service);
        let satisfied = a.condition.is_satisfied();
        let conds = vec![condition(
            SERVICE_CONDITION,
            if satisfied { "True" } else { "False" },
            a.condition.reason.as_str(),
            a.condition.message.clone(),
            now,
        )];
        let obj = StatusObject {
            api_version: "v1".into(),
            kind: "Service".into(),
            metadata: StatusMeta {
                name: a.service.name.clone(),
                namespace: Some(a.service.namespace.clone()),
            },
            status: Status {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: a
                        .ips
                        .iter()
                        .map(|i| Ingress {
                            ip: i.ip.to_string(),
                        })
                        .collect(),
                }),
                conditions: carry_times(conds, old(&name).as_ref()),
            },
        };
        want.insert(name, render(&obj));
    }
    let mut seen_pools = std::collections::BTreeSet::new();
    for p in pools {
        if !seen_pools.insert(p.name()) {
            continue;
        }
        let name = pool_file(p.name());
        let conflict = conflicts.iter().find(|(c, _)| c == p.name());
        let usage = result.pools.iter().find(|u| u.name == p.name());
        let (total, used, available) = match usage {
            Some(u) => (u.total, u.used, u.available),
            None => (p.size(), 0, 0),
        };
        let mut conds = vec![match conflict {
            Some((_, msg)) => condition(POOL_CONFLICT, "True", "cidr_overlap", msg.clone(), now),
            None => condition(POOL_CONFLICT, "False", "resolved", String::new(), now),
        }];
        for (t, n) in [
            (POOL_IPS_TOTAL, total),
            (POOL_IPS_AVAILABLE, available),
            (POOL_IPS_USED, used),
        ] {
            conds.push(condition(t, "Unknown", "noreason", n.to_string(), now));
        }
        let obj = StatusObject {
            api_version: "cilium.io/v2alpha1".into(),
            kind: POOL_KIND.into(),
            metadata: StatusMeta {
                name: p.name().to_string(),
                namespace: None,
            },
            status: Status {
                load_balancer: None,
                conditions: carry_times(conds, old(&name).as_ref()),
            },
        };
        want.insert(name, render(&obj));
    }
    let mut changes = vec![];
    for name in current
        .keys()
        .filter(|n| is_ours(n) && !want.contains_key(*n))
    {
        changes.push(FileChange::Remove { name: name.clone() });
    }
    for (name, text) in want {
        if current.get(&name) != Some(&text) {
            changes.push(FileChange::Write { name, text });
        }
    }
    changes.sort_by(|a, b| file_name(a).cmp(file_name(b)));
    Plan {
        changes,
        result,
        conflicts,
    }
}

fn file_name(c: &FileChange) -> &str {
    match c {
        FileChange::Write { name, .. } | FileChange::Remove { name } => name,
    }
}

fn render(obj: &StatusObject) -> String {
    // Serialising these plain structs cannot fail.
    serde_yaml::to_string(obj).expect("status objects serialise")
}

/// Whether `type_` is a condition LB-IPAM sets (on services or pools); others on the same
/// object belong to someone else.
pub fn is_lbipam_condition(type_: &str) -> bool {
    [
        SERVICE_CONDITION,
        POOL_CONFLICT,
        POOL_IPS_TOTAL,
        POOL_IPS_AVAILABLE,
        POOL_IPS_USED,
    ]
    .contains(&type_)
}

/// The status file [`plan`] compares against, for an object whose status lives elsewhere
/// (the operator keeps it in the API server): its name and text from the object's current
/// `status`, `kind` being `Service` or `CiliumLoadBalancerIPPool`. Only LB-IPAM's own
/// conditions (and a Service's ingress) count; `None` when the object carries none of them,
/// as when no file exists.
pub fn current_file(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    status: &serde_json::Value,
) -> Option<(String, String)> {
    let mut st: Status = serde_json::from_value(status.clone()).ok()?;
    st.conditions.retain(|c| is_lbipam_condition(&c.type_));
    if st.conditions.is_empty() {
        return None;
    }
    let (file, api_version, namespace) = match kind {
        "Service" => {
            let svc = ServiceName {
                namespace: namespace.unwrap_or("default").to_string(),
                name: name.to_string(),
            };
            st.load_balancer
                .get_or_insert(LoadBalancerStatus { ingress: vec![] });
            (service_file(&svc), "v1", Some(svc.namespace))
        }
        POOL_KIND => {
            st.load_balancer = None;
            (pool_file(name), "cilium.io/v2alpha1", None)
        }
        _ => return None,
    };
    let obj = StatusObject {
        api_version: api_version.into(),
        kind: kind.into(),
        metadata: StatusMeta {
            name: name.to_string(),
            namespace,
        },
        status: st,
    };
    Some((file, render(&obj)))
}

/// The `status` a planned file's `text` sets, as JSON (for a status merge patch); `None`
/// for text that is not a status file.
pub fn planned_status(text: &str) -> Option<serde_json::Value> {
    let obj: StatusObject = serde_yaml::from_str(text).ok()?;
    serde_json::to_value(obj.status).ok()
}

/// The pools and the Services of `state` (with their current status). Objects that do not
/// parse are left out (the agent reports them elsewhere).
pub fn inputs(state: &ClusterState) -> (Vec<IpPool>, Vec<Service>) {
    let mut pools = vec![];
    let mut services = vec![];
    for (key, obj) in &state.objects {
        let Some(raw) = obj.raw.as_deref() else {
            continue;
        };
        match key.kind.as_str() {
            POOL_KIND => match IpPool::parse(raw) {
                Ok(p) => pools.push(p),
                Err(e) => tracing::warn!(pool = %key.name, error = %e, "LB-IPAM: pool ignored"),
            },
            "Service" => {
                if let Ok(s) = Service::parse(raw) {
                    services.push(s);
                }
            }
            _ => {}
        }
    }
    (pools, services)
}

/// What one [`reconcile`] did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Files written.
    pub written: usize,
    /// Files removed.
    pub removed: usize,
}

/// Under the status lock: re-reads the manifests in `manifests_dir` (with the current
/// status), plans, and writes the changed status files (temporary file, then rename).
/// Dormant (does nothing) while `state`, the caller's latest snapshot, has no pool and
/// `status/` none of our files. Logs every allocation change and problem. Blocking: call
/// from a blocking task.
pub fn reconcile(manifests_dir: &Path, state: &ClusterState) -> Result<Outcome, LbIpamError> {
    let dir = ManifestDir::status_dir(manifests_dir);
    if !manifests_dir.is_dir() {
        return Ok(Outcome::default());
    }
    let has_pool = state.objects.keys().any(|k| k.kind == POOL_KIND);
    if !has_pool && !has_our_files(&dir) {
        return Ok(Outcome::default());
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock_path = dir.join(".lock");
    let _lock = FileLock::exclusive(&lock_path).map_err(io(&lock_path))?;
    // Everything from here on reads what the previous holder of the lock left.
    let mut src = ManifestDir::new(manifests_dir);
    src.rescan();
    let (pools, services) = inputs(&src.state().0);
    let current = read_current(&dir)?;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let plan = plan(&current, &pools, &services, &now);
    let mut out = Outcome::default();
    for c in &plan.changes {
        match c {
            FileChange::Write { name, text } => {
                let path = dir.join(name);
                write_atomic(&path, text).map_err(io(&path))?;
                out.written += 1;
            }
            FileChange::Remove { name } => {
                let path = dir.join(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => out.removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path)(e)),
                }
                tracing::info!(file = %name, "LB-IPAM: status removed");
            }
        }
    }
    log_changes(&plan);
    Ok(out)
}

/// Logs what `plan` assigns or cannot satisfy (for the Services it changes) and its pool
/// conflicts.
pub fn log_changes(plan: &Plan) {
    for a in &plan.result.services {
        let file = service_file(&a.service);
        if !plan
            .changes
            .iter()
            .any(|c| matches!(c, FileChange::Write { name, .. } if *name == file))
        {
            continue;
        }
        let ips: Vec<String> = a.ips.iter().map(|i| i.ip.to_string()).collect();
        if a.condition.reason == ConditionReason::Satisfied {
            tracing::info!(service = %a.service, ips = %ips.join(","), "LB-IPAM: addresses assigned");
        } else {
            tracing::warn!(
                service = %a.service,
                ips = %ips.join(","),
                reason = %a.condition.reason,
                detail = %a.condition.message,
                "LB-IPAM: request not satisfied"
            );
        }
    }
    for (pool, message) in &plan.conflicts {
        tracing::warn!(pool, detail = %message, "LB-IPAM: pool conflicts, not used");
    }
}

fn has_our_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_str().is_some_and(is_ours))
    })
}

fn read_current(dir: &Path) -> Result<BTreeMap<String, String>, LbIpamError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_ours(&name) {
            continue;
        }
        let path = entry.path();
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                out.insert(name, t);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(out)
}

/// One LB-IPAM managed service as its status tells (for `lumen service list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceIpam {
    /// `namespace/name`.
    pub service: String,
    /// Assigned addresses.
    pub ips: Vec<String>,
    /// Whether the request is satisfied (`True`, `False`, or empty before the first
    /// reconcile).
    pub satisfied: String,
    /// Condition reason.
    pub reason: String,
    /// Condition message.
    pub message: String,
}

/// The LB-IPAM status of every managed Service in `state`, by name.
pub fn service_status(state: &ClusterState) -> Vec<ServiceIpam> {
    let (_, services) = inputs(state);
    let mut out: Vec<ServiceIpam> = services
        .iter()
        .filter(|s| is_lbipam_managed(s))
        .map(|s| {
            let key = crate::state::ObjectKey {
                kind: "Service".into(),
                namespace: s.meta.namespace_or_default().into(),
                name: s.meta.name.clone(),
            };
            let cond = state
                .objects
                .get(&key)
                .and_then(|o| serde_yaml::from_value::<Status>(o.status.clone()).ok())
                .and_then(|st| {
                    st.conditions
                        .into_iter()
                        .find(|c| c.type_ == SERVICE_CONDITION)
                });
            ServiceIpam {
                service: s.name().to_string(),
                ips: s.ingress_ips.iter().map(ToString::to_string).collect(),
                satisfied: cond.as_ref().map(|c| c.status.clone()).unwrap_or_default(),
                reason: cond.as_ref().map(|c| c.reason.clone()).unwrap_or_default(),
                message: cond.map(|c| c.message).unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, ts: &str, blocks: &str) -> IpPool {
        let y = format!("apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {{name: {name}, creationTimestamp: \"{ts}\"}}\nspec:\n  blocks: {blocks}\n");
        IpPool::parse(&serde_yaml::from_str(&y).unwrap()).unwrap()
    }

    fn svc(name: &str, ts: &str, extra: &str) -> Service {
        let y = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo, creationTimestamp: \"{ts}\"{extra}}}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.{}\n  ports: [{{port: 80}}]\n", name.len());
        Service::parse(&serde_yaml::from_str(&y).unwrap()).unwrap()
    }

    /// Applies a plan to `files`, as `reconcile` does to the directory.
    fn apply(files: &mut BTreeMap<String, String>, p: &Plan) {
        for c in &p.changes {
            match c {
                FileChange::Write { name, text } => {
                    files.insert(name.clone(), text.clone());
                }
                FileChange::Remove { name } => {
                    files.remove(name);
                }
            }
        }
    }

    /// Services with their `ingress_ips` taken from `files`, as the merge does.
    fn with_status(services: &[Service], files: &BTreeMap<String, String>) -> Vec<Service> {
        services
            .iter()
            .cloned()
            .map(|mut s| {
                s.ingress_ips = files
                    .get(&service_file(&s.name()))
                    .map(|t| {
                        let o: StatusObject = serde_yaml::from_str(t).unwrap();
                        o.status
                            .load_balancer
                            .unwrap()
                            .ingress
                            .iter()
                            .map(|i| i.ip.parse().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                s
            })
            .collect()
    }

    fn cond(files: &BTreeMap<String, String>, name: &str, t: &str) -> Condition {
        let o: StatusObject = serde_yaml::from_str(&files[name]).unwrap();
        o.status
            .conditions
            .into_iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn allocates_reports_exhaustion_and_writes_only_changes() {
        let pools = vec![pool(
            "lab",
            "2026-01-01T00:00:00Z",
            "[{start: 192.168.77.240, stop: 192.168.77.241}]",
        )];
        let services = vec![
            svc("a", "2026-01-01T00:00:01Z", ""),
            svc("bb", "2026-01-01T00:00:02Z", ""),
            svc("ccc", "2026-01-01T00:00:03Z", ""),
        ];
        let mut files = BTreeMap::new();
        let p = plan(&files, &pools, &services, "T1");
        apply(&mut files, &p);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            [
                "ciliumloadbalancerippool.lab.yaml",
                "service.demo.a.yaml",
                "service.demo.bb.yaml",
                "service.demo.ccc.yaml"
            ]
        );
        assert_eq!(
            files["service.demo.a.yaml"],
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: demo\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: 192.168.77.240\n  conditions:\n  - type: cilium.io/IPAMRequestSatisfied\n    status: 'True'\n    reason: satisfied\n    message: 192.168.77.240 from pool lab\n    lastTransitionTime: T1\n"
        );
        let c = cond(&files, "service.demo.ccc.yaml", SERVICE_CONDITION);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "out_of_ips")
        );
        assert_eq!(
            cond(&files, "ciliumloadbalancerippool.lab.yaml", POOL_IPS_USED).message,
            "2"
        );
        assert_eq!(
            cond(
                &files,
                "ciliumloadbalancerippool.lab.yaml",
                POOL_IPS_AVAILABLE
            )
            .message,
            "0"
        );
        assert_eq!(
            cond(&files, "ciliumloadbalancerippool.lab.yaml", POOL_CONFLICT).status,
            "False"
        );

        // A second agent with the same inputs (and the status read back) changes nothing.
        let again = plan(&files, &pools, &with_status(&services, &files), "T2");
        assert!(again.changes.is_empty(), "{:?}", again.changes);

        // Deleting `a` frees its address for `ccc`; `a`'s file goes away.
        let rest = with_status(&services[1..], &files);
        let p = plan(&files, &pools, &rest, "T3");
        apply(&mut files, &p);
        assert!(!files.contains_key("service.demo.a.yaml"));
        let c = cond(&files, "service.demo.ccc.yaml", SERVICE_CONDITION);
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.as_str()),
            ("True", "T3")
        );
        assert!(files["service.demo.ccc.yaml"].contains("192.168.77.240"));
        // `bb` kept its address and its transition time.
        let c = cond(&files, "service.demo.bb.yaml", SERVICE_CONDITION);
        assert_eq!(c.last_transition_time, "T1");
        assert!(files["service.demo.bb.yaml"].contains("192.168.77.241"));
    }

    #[test]
    fn a_request_for_a_taken_address_is_a_conflict() {
        let pools = vec![pool(
            "lab",
            "2026-01-01T00:00:00Z",
            "[{start: 192.168.77.240, stop: 192.168.77.243}]",
        )];
        let services = vec![
            svc("a", "2026-01-01T00:00:01Z", ""),
            svc(
                "bb",
                "2026-01-01T00:00:02Z",
                ", annotations: {lbipam.cilium.io/ips: 192.168.77.240}",
            ),
        ];
        // `a` holds .240 first; `bb` asks for it later. (Within one run explicit requests
        // beat dynamic picks, so `a` alone comes first.)
        let mut files = BTreeMap::new();
        let p = plan(&files, &pools, &services[..1], "T1");
        apply(&mut files, &p);
        let p = plan(&files, &pools, &with_status(&services, &files), "T2");
        apply(&mut files, &p);
        let c = cond(&files, "service.demo.bb.yaml", SERVICE_CONDITION);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "already_allocated")
        );
        assert!(c.message.contains("demo/a"), "{}", c.message);
    }

    #[test]
    fn overlapping_newer_pool_conflicts_and_hands_out_nothing() {
        let pools = vec![
            pool(
                "old",
                "2026-01-01T00:00:00Z",
                "[{start: 192.168.77.241, stop: 192.168.77.241}]",
            ),
            pool("new", "2026-01-02T00:00:00Z", "[{cidr: 192.168.77.240/30}]"),
        ];
        let services = vec![
            svc("a", "2026-01-01T00:00:01Z", ""),
            svc("bb", "2026-01-01T00:00:02Z", ""),
        ];
        let mut files = BTreeMap::new();
        let p = plan(&files, &pools, &services, "T1");
        apply(&mut files, &p);
        let c = cond(&files, "ciliumloadbalancerippool.new.yaml", POOL_CONFLICT);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "cidr_overlap")
        );
        assert!(c.message.contains("old"), "{}", c.message);
        assert_eq!(
            cond(&files, "ciliumloadbalancerippool.old.yaml", POOL_CONFLICT).status,
            "False"
        );
        let c = cond(&files, "service.demo.bb.yaml", SERVICE_CONDITION);
        assert_eq!(c.reason, "out_of_ips");
    }

    #[test]
    fn services_that_stop_being_load_balancers_lose_their_status() {
        let pools = vec![pool(
            "lab",
            "2026-01-01T00:00:00Z",
            "[{cidr: 192.168.77.240/30}]",
        )];
        let mut files = BTreeMap::new();
        files.insert("service.demo.old.yaml".to_string(), "x".to_string());
        files.insert("README.yaml".to_string(), "kept".to_string());
        let p = plan(&files, &pools, &[], "T1");
        assert!(p.changes.contains(&FileChange::Remove {
            name: "service.demo.old.yaml".into()
        }));
        assert!(!p.changes.iter().any(|c| file_name(c) == "README.yaml"));
    }

    #[test]
    fn status_kept_in_an_object_reads_back_as_the_same_file() {
        let pools = vec![pool(
            "lab",
            "2026-01-01T00:00:00Z",
            "[{start: 192.168.77.240, stop: 192.168.77.240}]",
        )];
        let services = vec![
            svc("a", "2026-01-01T00:00:01Z", ""),
            svc("bb", "2026-01-01T00:00:02Z", ""),
        ];
        let p = plan(&BTreeMap::new(), &pools, &services, "T1");
        let mut current = BTreeMap::new();
        for c in &p.changes {
            let FileChange::Write { name, text } = c else {
                panic!("{c:?}")
            };
            // As the API server keeps it: our status plus someone else's condition.
            let mut status = planned_status(text).unwrap();
            status["conditions"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "Other", "status": "True", "reason": "x", "message": "", "lastTransitionTime": "T0"}));
            let (kind, ns, obj) = match name.strip_prefix("service.demo.") {
                Some(rest) => ("Service", Some("demo"), rest.trim_end_matches(".yaml")),
                None => (POOL_KIND, None, "lab"),
            };
            let (file, back) = current_file(kind, ns, obj, &status).unwrap();
            assert_eq!((&file, &back), (name, text));
            current.insert(file, back);
        }
        assert_eq!(current.len(), 3);
        let again = plan(&current, &pools, &with_status(&services, &current), "T2");
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        let none = serde_json::json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}});
        assert_eq!(current_file("Service", Some("demo"), "x", &none), None);
    }

    #[test]
    fn reconcile_writes_the_directory_and_the_scanner_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lb.yaml"),
            "apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: lab}\nspec:\n  blocks: [{start: 192.168.77.240}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.9\n  ports: [{port: 80}]\n",
        )
        .unwrap();
        let mut src = ManifestDir::new(dir.path());
        src.rescan();
        let before = src.state().0;
        let dormant = reconcile(dir.path(), &ClusterState::default()).unwrap();
        assert_eq!(
            (dormant.written, dormant.removed),
            (0, 0),
            "no pool known yet"
        );
        let out = reconcile(dir.path(), &before).unwrap();
        assert_eq!((out.written, out.removed), (2, 0));
        let again = reconcile(dir.path(), &before).unwrap();
        assert_eq!((again.written, again.removed), (0, 0), "idempotent");
        let mut src = ManifestDir::new(dir.path());
        src.rescan();
        let st = src.state().0;
        let status = service_status(&st);
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].ips, ["192.168.77.240"]);
        assert_eq!(
            (status[0].satisfied.as_str(), status[0].reason.as_str()),
            ("True", "satisfied")
        );
    }
}
