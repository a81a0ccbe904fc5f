//! Uplink auto-detection for `devices: []` (the chart's default): like Cilium, the
//! interfaces that carry a default route are the node's uplinks. Read from
//! `/proc/net/route` (IPv4), so it needs no netlink round trip.

/// Interfaces with an IPv4 default route in a `/proc/net/route` table, in table order,
/// without duplicates; Lumen's own devices and loopback are never uplinks.
pub fn default_route_devices(route_table: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for line in route_table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        let (Some(iface), Some(dest), Some(mask)) = (f.first(), f.get(1), f.get(7)) else {
            continue;
        };
        let ours = iface.starts_with("lumen_") || iface.starts_with("lxc") || *iface == "lo";
        if *dest == "00000000" && *mask == "00000000" && !ours && !out.iter().any(|d| d == iface) {
            out.push(iface.to_string());
        }
    }
    out
}

/// [`default_route_devices`] of this network namespace.
pub fn detect() -> Vec<String> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| default_route_devices(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
lumen_wg0\t00006410\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
bond0\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t0201A8C0\t0003\t0\t0\t300\t00000000\t0\t0\t0
";

    #[test]
    fn uplinks_are_the_interfaces_with_a_default_route() {
        assert_eq!(default_route_devices(TABLE), ["eth0", "bond0"]);
        assert!(default_route_devices("Iface\tDestination\n").is_empty());
        assert!(default_route_devices("garbage").is_empty());
    }
}
