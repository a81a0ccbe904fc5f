//! The API client: in-cluster config (the pod's service account token and CA), with the
//! API server address overridden by `k8sServiceHost`/`k8sServicePort` when set (as Cilium
//! does; e.g. Talos KubePrism at `localhost:7445`, which works before kube-proxy or the
//! agent's own Service handling is up).

use super::KubeSourceError;

/// `https://host:port`, bracketing IPv6 literals.
pub fn server_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// A client for the cluster this runs in (the agent, the operator): in-cluster config,
/// else the kubeconfig (`KUBECONFIG`, `~/.kube/config`). `host` (and `port`, default 443)
/// replace the address from `KUBERNETES_SERVICE_HOST`/`_PORT`; `port` alone changes only
/// the port.
pub async fn client(
    host: Option<&str>,
    port: Option<u16>,
) -> Result<kube::Client, KubeSourceError> {
    let in_cluster = match host {
        // The environment's address is not needed, so its absence is no error.
        Some(_) => kube::Config::incluster_dns(),
        None => kube::Config::incluster(),
    };
    let mut config = match in_cluster {
        Ok(c) => c,
        Err(in_cluster) => {
            kube::Config::infer()
                .await
                .map_err(|kubeconfig| KubeSourceError::NoConfig {
                    in_cluster,
                    kubeconfig,
                })?
        }
    };
    let address = match (host, port) {
        (Some(h), p) => Some(server_url(h, p.unwrap_or(443))),
        (None, Some(p)) => config
            .cluster_url
            .host()
            .map(|h| server_url(h.trim_start_matches('[').trim_end_matches(']'), p)),
        (None, None) => None,
    };
    if let Some(address) = address {
        config.cluster_url = address.parse().map_err(|e| KubeSourceError::BadAddress {
            address: address.clone(),
            source: Box::new(e),
        })?;
    }
    tracing::info!(server = %config.cluster_url, "Kubernetes API server");
    kube::Client::try_from(config).map_err(KubeSourceError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(server_url("localhost", 7445), "https://localhost:7445");
        assert_eq!(server_url("fd00::1", 6443), "https://[fd00::1]:6443");
        assert_eq!(server_url("[fd00::1]", 6443), "https://[fd00::1]:6443");
    }
}
