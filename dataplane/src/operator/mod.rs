//! `lumen-operator`: the cluster-wide allocator (what cilium-operator does for Cilium).
//! Instances compete for a Lease ([`leader`]); the leader alone allocates: pod CIDRs from
//! the cluster pool into CiliumNodes ([`ipam`]) and LoadBalancer addresses into Service
//! and pool status ([`lbipam`]), from watch caches of the objects involved ([`run`]).

pub mod config;
pub mod health;
pub mod ipam;
pub mod lbipam;
pub mod leader;
pub mod run;

pub use config::{ConfigError, OperatorConfig};
pub use run::run;

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No API client (configuration, address or credentials).
    #[error(transparent)]
    Kube(#[from] crate::state::kube::KubeSourceError),
}

/// This instance's Lease `holderIdentity`: `$POD_NAME`, else the host name.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "lumen-operator".into())
}

/// A client for the API server ([`crate::state::kube::client`]): in-cluster, else the
/// kubeconfig, with `k8sServiceHost`/`k8sServicePort` replacing the address.
pub async fn client(cfg: &OperatorConfig) -> Result<kube::Client, OperatorError> {
    Ok(crate::state::kube::client(cfg.k8s_service_host.as_deref(), cfg.k8s_service_port).await?)
}
