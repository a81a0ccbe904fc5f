//! The `v1 Service` model: the fields kube-proxy replacement needs, parsed from a full
//! Service object (`metadata`, `spec`, `status`) with field-path errors.

use std::net::IpAddr;

use serde_yaml::Value;

use crate::error::ParseError;
use crate::field::{child, ip, join, mapping, opt_bool, opt_int, opt_port, opt_str, seq, wrong};
use crate::meta::{expect_kind, ObjectMeta, ServiceName};
use crate::protocol::Protocol;

/// Annotation listing the IPs a LoadBalancer service requests from LB-IPAM (comma separated).
pub const ANNOTATION_LBIPAM_IPS: &str = "lbipam.cilium.io/ips";
/// Annotation that lets services share one LB-IPAM IP. Parsed into
/// [`Service::sharing_key`] but not honoured yet: LB-IPAM reports two services wanting the same
/// IP as a conflict even when their sharing keys match.
pub const ANNOTATION_LBIPAM_SHARING_KEY: &str = "lbipam.cilium.io/sharing-key";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours), as in Kubernetes.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;
/// Largest allowed affinity timeout (one day), as Kubernetes validates it.
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86_400;

/// `spec.type`. `ExternalName` is rejected at parse time: it is DNS-only and has no frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ServiceType {
    /// Cluster-internal virtual IP.
    #[default]
    ClusterIp,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus an external load-balancer IP.
    LoadBalancer,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Any ready endpoint in the cluster.
    #[default]
    Cluster,
    /// Only endpoints on the node that received the traffic.
    Local,
}

/// `spec.ipFamilies` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpFamilyPolicy {
    /// One family.
    #[default]
    SingleStack,
    /// Both families when the cluster has them.
    PreferDualStack,
    /// Both families.
    RequireDualStack,
}

/// A service port's `targetPort`: a number, or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A named container port, resolved per endpoint through the EndpointSlice ports.
    Named(String),
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `name`; required by Kubernetes when there are several ports.
    pub name: Option<String>,
    /// `protocol`, default TCP.
    pub protocol: Protocol,
    /// `port`, the frontend port.
    pub port: u16,
    /// `targetPort`, default the same number as `port`.
    pub target_port: TargetPort,
    /// `nodePort`, allocated for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
}

/// A parsed Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Metadata (namespace defaults to `default`).
    pub meta: ObjectMeta,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (or `spec.clusterIP`); empty for headless services and services whose
    /// IP is not allocated yet.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.clusterIP: None`: DNS-only, no frontend.
    pub headless: bool,
    /// `spec.ipFamilies`, or the families of `cluster_ips` when absent, or IPv4.
    pub ip_families: Vec<IpFamily>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: IpFamilyPolicy,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` timeout in seconds; `None` when affinity is off.
    pub affinity_timeout: Option<u32>,
    /// `spec.externalTrafficPolicy` (NodePort, LoadBalancer and external-IP frontends).
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy` (ClusterIP frontends).
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.loadBalancerIP` (deprecated in Kubernetes, still honoured by LB-IPAM).
    pub load_balancer_ip: Option<IpAddr>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// IPs requested through the `lbipam.cilium.io/ips` annotation.
    pub requested_ips: Vec<IpAddr>,
    /// The `lbipam.cilium.io/sharing-key` annotation (not honoured yet, see
    /// [`ANNOTATION_LBIPAM_SHARING_KEY`]).
    pub sharing_key: Option<String>,
    /// `spec.allocateLoadBalancerNodePorts`, default true.
    pub allocate_load_balancer_node_ports: bool,
    /// `status.loadBalancer.ingress[].ip` (hostname-only entries are skipped). The agent
    /// replaces it with LB-IPAM's result before computing frontends.
    pub ingress_ips: Vec<IpAddr>,
}

impl Service {
    /// Parses a full Service object (`kind`, when present, must be `Service`).
    pub fn parse(object: &Value) -> Result<Self, ParseError> {
        expect_kind(object, &["Service"])?;
        mapping(object, "")?;
        let meta = ObjectMeta::parse(object)?;
        let spec = child(object, "spec").unwrap_or(&Value::Null);
        let status = child(object, "status").unwrap_or(&Value::Null);
        Self::from_parts(meta, spec, status)
    }

    /// Builds a Service from its already-parsed metadata and its `spec` and `status` values
    /// (either may be `Null`).
    pub fn from_parts(
        mut meta: ObjectMeta,
        spec: &Value,
        status: &Value,
    ) -> Result<Self, ParseError> {
        if meta.namespace.is_none() {
            meta.namespace = Some("default".into());
        }
        mapping(spec, "spec")?;
        mapping(status, "status")?;
        let service_type = match opt_str(spec, "type", "spec")? {
            None | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => {
                return Err(ParseError::Unsupported {
                    path: "spec.type".into(),
                    what: "service type ExternalName (DNS only, no load balancing)".into(),
                })
            }
            Some(other) => {
                return Err(ParseError::UnknownValue {
                    path: "spec.type".into(),
                    what: "service type",
                    value: other.to_string(),
                })
            }
        };

        let (cluster_ips, headless) = parse_cluster_ips(spec)?;
        let ip_families = parse_families(spec, &cluster_ips)?;
        let ip_family_policy = match opt_str(spec, "ipFamilyPolicy", "spec")? {
            None | Some("SingleStack") => IpFamilyPolicy::SingleStack,
            Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
            Some(other) => {
                return Err(ParseError::UnknownValue {
                    path: "spec.ipFamilyPolicy".into(),
                    what: "IP family policy",
                    value: other.to_string(),
                })
            }
        };
        let external_ips = ip_list(spec, "externalIPs", "spec")?;
        let ports = seq(spec, "ports", "spec")?
            .iter()
            .enumerate()
            .map(|(i, p)| parse_port(p, &format!("spec.ports[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        let affinity_timeout = match opt_str(spec, "sessionAffinity", "spec")? {
            None | Some("None") => None,
            Some("ClientIP") => {
                let path = "spec.sessionAffinityConfig.clientIP";
                let timeout = child(spec, "sessionAffinityConfig")
                    .and_then(|c| child(c, "clientIP"))
                    .map(|c| {
                        opt_int(
                            c,
                            "timeoutSeconds",
                            path,
                            1,
                            i64::from(MAX_AFFINITY_TIMEOUT_SECONDS),
                        )
                    })
                    .transpose()?
                    .flatten();
                Some(
                    timeout
                        .and_then(|t| u32::try_from(t).ok())
                        .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS),
                )
            }
            Some(other) => {
                return Err(ParseError::UnknownValue {
                    path: "spec.sessionAffinity".into(),
                    what: "session affinity",
                    value: other.to_string(),
                })
            }
        };

        let load_balancer_ip = opt_str(spec, "loadBalancerIP", "spec")?
            .filter(|s| !s.is_empty())
            .map(|s| ip(s, "spec.loadBalancerIP"))
            .transpose()?;
        let requested_ips = match meta.annotations.get(ANNOTATION_LBIPAM_IPS) {
            None => Vec::new(),
            Some(list) => {
                let path = format!("metadata.annotations[\"{ANNOTATION_LBIPAM_IPS}\"]");
                let mut ips = Vec::new();
                for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let a = ip(s, &path)?;
                    if !ips.contains(&a) {
                        ips.push(a);
                    }
                }
                ips
            }
        };

        let mut ingress_ips = Vec::new();
        let lb = child(status, "loadBalancer").unwrap_or(&Value::Null);
        for (i, ing) in seq(lb, "ingress", "status.loadBalancer")?
            .iter()
            .enumerate()
        {
            let p = format!("status.loadBalancer.ingress[{i}]");
            mapping(ing, &p)?;
            if let Some(s) = opt_str(ing, "ip", &p)? {
                let a = ip(s, &join(&p, "ip"))?;
                if !ingress_ips.contains(&a) {
                    ingress_ips.push(a);
                }
            }
        }

        Ok(Self {
            service_type,
            cluster_ips,
            headless,
            ip_families,
            ip_family_policy,
            external_ips,
            ports,
            affinity_timeout,
            external_traffic_policy: traffic_policy(spec, "externalTrafficPolicy")?,
            internal_traffic_policy: traffic_policy(spec, "internalTrafficPolicy")?,
            load_balancer_ip,
            load_balancer_class: opt_str(spec, "loadBalancerClass", "spec")?.map(str::to_string),
            requested_ips,
            sharing_key: meta.annotations.get(ANNOTATION_LBIPAM_SHARING_KEY).cloned(),
            allocate_load_balancer_node_ports: opt_bool(
                spec,
                "allocateLoadBalancerNodePorts",
                "spec",
            )?
            .unwrap_or(true),
            ingress_ips,
            meta,
        })
    }

    /// `namespace/name`.
    pub fn name(&self) -> ServiceName {
        ServiceName::new(self.meta.namespace_or_default(), self.meta.name.clone())
    }

    /// Every IP LB-IPAM should honour as a request: `spec.loadBalancerIP` then the
    /// `lbipam.cilium.io/ips` annotation, without duplicates.
    pub fn lb_requested_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.load_balancer_ip.into_iter().collect();
        for a in &self.requested_ips {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }
}

fn parse_cluster_ips(spec: &Value) -> Result<(Vec<IpAddr>, bool), ParseError> {
    let mut raw: Vec<(String, String)> = Vec::new();
    let list = seq(spec, "clusterIPs", "spec")?;
    if list.is_empty() {
        if let Some(s) = opt_str(spec, "clusterIP", "spec")? {
            raw.push((s.to_string(), "spec.clusterIP".into()));
        }
    } else {
        for (i, v) in list.iter().enumerate() {
            let path = format!("spec.clusterIPs[{i}]");
            match v {
                Value::String(s) => raw.push((s.clone(), path)),
                _ => return Err(wrong(&path, "a string")),
            }
        }
    }
    if raw.iter().any(|(s, _)| s == "None") {
        return Ok((Vec::new(), true));
    }
    let ips = raw
        .iter()
        .filter(|(s, _)| !s.is_empty())
        .map(|(s, p)| ip(s, p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ips, false))
}

fn parse_families(spec: &Value, cluster_ips: &[IpAddr]) -> Result<Vec<IpFamily>, ParseError> {
    let mut fams = Vec::new();
    for (i, v) in seq(spec, "ipFamilies", "spec")?.iter().enumerate() {
        let path = format!("spec.ipFamilies[{i}]");
        let f = match v {
            Value::String(s) if s == "IPv4" => IpFamily::V4,
            Value::String(s) if s == "IPv6" => IpFamily::V6,
            Value::String(s) => {
                return Err(ParseError::UnknownValue {
                    path,
                    what: "IP family",
                    value: s.clone(),
                })
            }
            _ => return Err(wrong(&path, "a string")),
        };
        if !fams.contains(&f) {
            fams.push(f);
        }
    }
    if fams.is_empty() {
        for a in cluster_ips {
            let f = IpFamily::of(a);
            if !fams.contains(&f) {
                fams.push(f);
            }
        }
    }
    if fams.is_empty() {
        fams.push(IpFamily::V4);
    }
    Ok(fams)
}

fn ip_list(v: &Value, key: &str, parent: &str) -> Result<Vec<IpAddr>, ParseError> {
    let base = join(parent, key);
    seq(v, key, parent)?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let path = format!("{base}[{i}]");
            match e {
                Value::String(s) => ip(s, &path),
                _ => Err(wrong(&path, "a string")),
            }
        })
        .collect()
}

fn traffic_policy(spec: &Value, key: &str) -> Result<TrafficPolicy, ParseError> {
    match opt_str(spec, key, "spec")? {
        // "Global" is the pre-1.22 spelling of Cluster.
        None | Some("Cluster") | Some("Global") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(ParseError::UnknownValue {
            path: join("spec", key),
            what: "traffic policy",
            value: other.to_string(),
        }),
    }
}

fn parse_port(v: &Value, path: &str) -> Result<ServicePort, ParseError> {
    mapping(v, path)?;
    let port = opt_port(v, "port", path)?.ok_or_else(|| ParseError::MissingField {
        path: join(path, "port"),
    })?;
    let protocol = match opt_str(v, "protocol", path)? {
        None => Protocol::Tcp,
        Some(s) => Protocol::parse(s, &join(path, "protocol"))?,
    };
    let tp_path = join(path, "targetPort");
    let target_port = match child(v, "targetPort") {
        None => TargetPort::Number(port),
        Some(Value::Number(_)) => {
            TargetPort::Number(opt_port(v, "targetPort", path)?.unwrap_or(port))
        }
        Some(Value::String(s)) if s.is_empty() => TargetPort::Number(port),
        Some(Value::String(s)) => match s.parse::<u16>() {
            Ok(n) if n > 0 => TargetPort::Number(n),
            _ => TargetPort::Named(s.clone()),
        },
        Some(_) => return Err(wrong(&tp_path, "a port number or name")),
    };
    Ok(ServicePort {
        name: opt_str(v, "name", path)?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        protocol,
        port,
        target_port,
        node_port: opt_port(v, "nodePort", path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(s: &str) -> Result<Service, ParseError> {
        Service::parse(&serde_yaml::from_str(s).unwrap())
    }

    #[test]
    fn defaults() {
        let s = svc("metadata: {name: web}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}")
            .unwrap();
        assert_eq!(s.name().to_string(), "default/web");
        assert_eq!(s.service_type, ServiceType::ClusterIp);
        assert_eq!(s.ports[0].protocol, Protocol::Tcp);
        assert_eq!(s.ports[0].target_port, TargetPort::Number(80));
        assert_eq!(s.ip_families, vec![IpFamily::V4]);
        assert_eq!(s.affinity_timeout, None);
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Cluster);
        assert!(s.allocate_load_balancer_node_ports);
    }

    #[test]
    fn affinity_default_and_explicit_timeout() {
        let s = svc("metadata: {name: a}\nspec: {sessionAffinity: ClientIP}").unwrap();
        assert_eq!(s.affinity_timeout, Some(10_800));
        let s = svc("metadata: {name: a}\nspec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}}").unwrap();
        assert_eq!(s.affinity_timeout, Some(60));
        let e = svc("metadata: {name: a}\nspec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}}").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("spec.sessionAffinityConfig.clientIP.timeoutSeconds:"));
    }

    #[test]
    fn headless_and_external_name() {
        let s = svc("metadata: {name: a}\nspec: {clusterIP: None, clusterIPs: [None]}").unwrap();
        assert!(s.headless && s.cluster_ips.is_empty());
        let e = svc("metadata: {name: a}\nspec: {type: ExternalName, externalName: x.example}")
            .unwrap_err();
        assert!(matches!(e, ParseError::Unsupported { .. }));
        assert!(e.to_string().starts_with("spec.type: unsupported"));
    }

    #[test]
    fn errors_name_field_paths() {
        let e = svc("metadata: {name: a}\nspec: {ports: [{port: 80}, {port: 81, protocol: HTTP}]}")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.ports[1].protocol: unknown protocol \"HTTP\""
        );
        let e = svc("metadata: {name: a}\nspec: {ports: [{name: x}]}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.ports[0].port: required field is missing"
        );
        let e = svc("metadata: {name: a}\nspec: {clusterIPs: [10.0.0.1, nope]}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.clusterIPs[1]: invalid IP address \"nope\""
        );
        let e = svc("metadata: {name: a, annotations: {lbipam.cilium.io/ips: '1.2.3.4,x'}}")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata.annotations[\"lbipam.cilium.io/ips\"]: invalid IP address \"x\""
        );
        let e = svc("kind: Pod\nmetadata: {name: a}").unwrap_err();
        assert_eq!(e.to_string(), "kind: unknown kind \"Pod\"");
    }

    #[test]
    fn named_target_port_and_requests() {
        let s = svc("metadata: {name: a, annotations: {lbipam.cilium.io/ips: '10.0.0.5, 10.0.0.6'}}\nspec: {type: LoadBalancer, loadBalancerIP: 10.0.0.5, ports: [{port: 80, targetPort: http, nodePort: 30080}]}").unwrap();
        assert_eq!(s.ports[0].target_port, TargetPort::Named("http".into()));
        assert_eq!(s.ports[0].node_port, Some(30080));
        let want: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()];
        assert_eq!(s.lb_requested_ips(), want);
    }
}
