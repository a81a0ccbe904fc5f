//! A deterministic summary of frontends for `lumen service list`, printed like
//! `cilium service list`.

use std::fmt;

use crate::frontend::{BackendState, Frontend, FrontendKind};
use crate::meta::ServiceName;

/// One backend as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableBackend {
    /// `address:port/PROTO`.
    pub address: String,
    /// State.
    pub state: BackendState,
}

/// One frontend as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// 1-based position in the sorted table.
    pub id: u32,
    /// `address:port/PROTO` (IPv6 in brackets).
    pub frontend: String,
    /// Frontend kind.
    pub service_type: FrontendKind,
    /// Owning service.
    pub service: ServiceName,
    /// Backends in frontend order.
    pub backends: Vec<TableBackend>,
}

/// The table: rows sorted by frontend address, port, protocol and kind (IPv4 before IPv6),
/// so the same frontends in any order print the same text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceTable {
    /// Rows.
    pub rows: Vec<ServiceRow>,
}

impl ServiceTable {
    /// Builds the table from the frontends of any number of services.
    pub fn new(frontends: &[Frontend]) -> Self {
        let mut sorted: Vec<&Frontend> = frontends.iter().collect();
        sorted.sort_by(|a, b| {
            (a.address, a.port, a.protocol, a.kind, &a.service)
                .cmp(&(b.address, b.port, b.protocol, b.kind, &b.service))
        });
        let rows = sorted
            .into_iter()
            .zip(1u32..)
            .map(|(f, id)| ServiceRow {
                id,
                frontend: format!("{}/{}", f.socket_addr(), f.protocol),
                service_type: f.kind,
                service: f.service.clone(),
                backends: f
                    .backends
                    .iter()
                    .map(|b| TableBackend {
                        address: format!("{}/{}", b.socket_addr(), b.protocol),
                        state: b.state,
                    })
                    .collect(),
            })
            .collect();
        Self { rows }
    }
}

const GAP: usize = 3;

impl fmt::Display for ServiceTable {
    /// Columns `ID`, `Frontend`, `Service Type`, `Backend`; one line per backend
    /// (`N => address (state)`), continuation lines indented; no trailing spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers = ["ID", "Frontend", "Service Type"];
        let mut widths = headers.map(str::len);
        for r in &self.rows {
            widths[0] = widths[0].max(r.id.to_string().len());
            widths[1] = widths[1].max(r.frontend.len());
            widths[2] = widths[2].max(r.service_type.as_str().len());
        }
        let line = |f: &mut fmt::Formatter<'_>, cols: [&str; 3], last: &str| -> fmt::Result {
            let mut s = String::new();
            for (c, w) in cols.iter().zip(widths) {
                s.push_str(&format!("{c:<width$}", width = w + GAP));
            }
            s.push_str(last);
            writeln!(f, "{}", s.trim_end())
        };
        line(f, headers, "Backend")?;
        for r in &self.rows {
            let id = r.id.to_string();
            let first = r
                .backends
                .first()
                .map(|b| format!("1 => {} ({})", b.address, b.state))
                .unwrap_or_default();
            line(f, [&id, &r.frontend, r.service_type.as_str()], &first)?;
            for (i, b) in r.backends.iter().enumerate().skip(1) {
                line(
                    f,
                    ["", "", ""],
                    &format!("{} => {} ({})", i + 1, b.address, b.state),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::Backend;
    use crate::protocol::Protocol;
    use crate::service::TrafficPolicy;

    fn fe(
        addr: &str,
        port: u16,
        proto: Protocol,
        kind: FrontendKind,
        backends: &[(&str, u16, BackendState)],
    ) -> Frontend {
        Frontend {
            address: addr.parse().unwrap(),
            port,
            protocol: proto,
            kind,
            service: ServiceName::new("default", "x"),
            port_name: None,
            traffic_policy: TrafficPolicy::Cluster,
            affinity_timeout: None,
            backends: backends
                .iter()
                .map(|(a, p, s)| Backend {
                    address: a.parse().unwrap(),
                    port: *p,
                    protocol: proto,
                    node_name: None,
                    state: *s,
                    target_ref: None,
                })
                .collect(),
        }
    }

    #[test]
    fn renders_like_cilium_service_list() {
        use BackendState::*;
        let fronts = vec![
            fe(
                "fd00::10",
                80,
                Protocol::Tcp,
                FrontendKind::ClusterIp,
                &[("fd00:1::5", 8080, Active)],
            ),
            fe(
                "10.96.0.10",
                53,
                Protocol::Udp,
                FrontendKind::ClusterIp,
                &[("10.0.1.2", 53, Active), ("10.0.2.3", 53, Terminating)],
            ),
            fe("0.0.0.0", 30080, Protocol::Tcp, FrontendKind::NodePort, &[]),
            fe(
                "10.96.0.1",
                443,
                Protocol::Tcp,
                FrontendKind::ClusterIp,
                &[("172.18.0.3", 6443, Active)],
            ),
        ];
        let text = ServiceTable::new(&fronts).to_string();
        let want = "\
ID   Frontend            Service Type   Backend
1    0.0.0.0:30080/TCP   NodePort
2    10.96.0.1:443/TCP   ClusterIP      1 => 172.18.0.3:6443/TCP (active)
3    10.96.0.10:53/UDP   ClusterIP      1 => 10.0.1.2:53/UDP (active)
                                        2 => 10.0.2.3:53/UDP (terminating)
4    [fd00::10]:80/TCP   ClusterIP      1 => [fd00:1::5]:8080/TCP (active)
";
        assert_eq!(text, want);
        let mut rev = fronts.clone();
        rev.reverse();
        assert_eq!(ServiceTable::new(&rev).to_string(), want);
    }
}
