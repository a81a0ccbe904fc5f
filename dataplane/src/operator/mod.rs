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
    /// No API server address and credentials (neither in-cluster nor a kubeconfig).
    #[error("no Kubernetes API server configuration: {0}")]
    NoKubeConfig(String),
    /// `k8sServiceHost`/`k8sServicePort` do not form a URL.
    #[error("k8sServiceHost/k8sServicePort: {0}")]
    ServiceAddress(String),
    /// The client could not be built from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
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

/// A client for the API server: in-cluster (service account), else the kubeconfig; with
/// `k8sServiceHost` (and `k8sServicePort`, default 443) replacing the address, as Cilium
/// does where the `kubernetes` Service is unreachable without a CNI.
pub async fn client(cfg: &OperatorConfig) -> Result<kube::Client, OperatorError> {
    let mut kc = match kube::Config::incluster() {
        Ok(c) => c,
        Err(in_cluster) => kube::Config::infer().await.map_err(|e| {
            OperatorError::NoKubeConfig(format!("not in a cluster ({in_cluster}), and {e}"))
        })?,
    };
    if let Some(host) = &cfg.k8s_service_host {
        let port = cfg.k8s_service_port.unwrap_or(443);
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        kc.cluster_url = parse_display(&format!("https://{host}:{port}"))
            .map_err(OperatorError::ServiceAddress)?;
    }
    kube::Client::try_from(kc).map_err(OperatorError::Client)
}

fn parse_display<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| format!("{s}: {e}"))
}
