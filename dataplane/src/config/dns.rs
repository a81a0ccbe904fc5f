//! `dnsProxy.*`: the transparent DNS proxy (Cilium's Helm names). The proxy only sees the
//! DNS traffic of endpoints whose egress policy has `toFQDNs` or `toPorts.rules.dns`.

use serde::Deserialize;

/// `dnsProxy.*`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsProxyConfig {
    /// `dnsProxy.minTtl`: seconds an answered address stays allowed at least, whatever
    /// the record's TTL (Cilium's `tofqdns-min-ttl`). Default 0: the record's TTL.
    #[serde(default)]
    pub min_ttl: u64,
    /// `dnsProxy.proxyPort`: the proxy's port on the pods' gateway address (UDP and TCP).
    /// Default 0: any free port.
    #[serde(default)]
    pub proxy_port: u16,
    /// `dnsProxy.dnsRejectResponseCode`: the answer to a query policy forbids,
    /// `refused` (default) or `nameError` (NXDOMAIN).
    #[serde(default)]
    pub dns_reject_response_code: RejectCode,
    /// `dnsProxy.proxyResponseMaxDelay`-like upstream timeout: how long the proxy waits for
    /// the server before answering SERVFAIL. Lumen's; default `2s`.
    #[serde(
        default = "default_upstream_timeout",
        with = "super::humantime_serde_compat"
    )]
    pub upstream_timeout: std::time::Duration,
}

/// `dnsProxy.dnsRejectResponseCode`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum RejectCode {
    /// REFUSED (5).
    #[default]
    Refused,
    /// NXDOMAIN (3).
    NameError,
}

fn default_upstream_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(2)
}

impl Default for DnsProxyConfig {
    fn default() -> Self {
        DnsProxyConfig {
            min_ttl: 0,
            proxy_port: 0,
            dns_reject_response_code: RejectCode::Refused,
            upstream_timeout: default_upstream_timeout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_names_and_defaults() {
        let c: DnsProxyConfig = serde_yaml::from_str(
            "minTtl: 3600\nproxyPort: 10053\ndnsRejectResponseCode: nameError\nupstreamTimeout: 500ms\n",
        )
        .unwrap();
        assert_eq!(c.min_ttl, 3600);
        assert_eq!(c.proxy_port, 10053);
        assert_eq!(c.dns_reject_response_code, RejectCode::NameError);
        assert_eq!(c.upstream_timeout, std::time::Duration::from_millis(500));
        assert_eq!(
            serde_yaml::from_str::<DnsProxyConfig>("{}").unwrap(),
            DnsProxyConfig::default()
        );
        assert!(serde_yaml::from_str::<DnsProxyConfig>("preCache: x").is_err());
    }
}
