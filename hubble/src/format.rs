//! Flow output formats of `hubble observe`, as the upstream Hubble CLI prints them: plain
//! functions from a flow to text (compact line, dict record, table row, JSON line) and a
//! [`Printer`] that writes a stream of responses in one format.

use crate::error::Result;
use lumen_api::{
    flow::{
        layer4::Protocol, layer7::Record, AuthType, Endpoint, Flow, L7FlowType, LostEvent,
        LostEventSource, Policy, TrafficDirection, Verdict,
    },
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    relay::{NodeState, NodeStatusEvent},
    wkt::Timestamp,
};
use std::io::Write;

/// An output format of `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One line per flow (the default).
    Compact,
    /// A `KEY: value` block per flow.
    Dict,
    /// One protobuf-JSON `GetFlowsResponse` per line (`json` and `jsonpb`).
    Json,
    /// An aligned table, printed when the stream ends.
    Table,
}

impl std::str::FromStr for Output {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "compact" => Ok(Output::Compact),
            "dict" => Ok(Output::Dict),
            "json" | "jsonpb" => Ok(Output::Json),
            "table" | "tab" => Ok(Output::Table),
            other => Err(crate::error::Error::InvalidArgument(format!(
                "invalid output format: {other} (expected compact, dict, json, jsonpb or table)"
            ))),
        }
    }
}

/// How flows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrintOptions {
    /// The format.
    pub output: Output,
    /// `--print-node-name`.
    pub node_name: bool,
    /// `--print-policy-names`.
    pub policy_names: bool,
    /// ANSI colours (never in table output).
    pub color: bool,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions {
            output: Output::Compact,
            node_name: false,
            policy_names: false,
            color: false,
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A timestamp in the local time zone as `Mon _D HH:MM:SS.mmm` (Go's `StampMilli`), or
/// `N/A` when missing or invalid.
pub fn format_timestamp(ts: Option<&Timestamp>) -> String {
    static TZSET: std::sync::Once = std::sync::Once::new();
    let Some(ts) = ts else {
        return "N/A".into();
    };
    // The range protobuf allows: 0001-01-01 to 9999-12-31.
    if !(0..1_000_000_000).contains(&ts.nanos)
        || !(-62_135_596_800..=253_402_300_799).contains(&ts.seconds)
    {
        return "N/A".into();
    }
    TZSET.call_once(|| {
        // SAFETY: tzset only reads TZ and initialises libc's time zone state.
        unsafe { tzset() }
    });
    let t = ts.seconds as libc::time_t;
    // SAFETY: an all-zero `tm` is valid; localtime_r writes into it and reads `t` only.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return "N/A".into();
    }
    format!(
        "{} {:>2} {:02}:{:02}:{:02}.{:03}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ts.nanos / 1_000_000
    )
}

extern "C" {
    fn tzset();
}

fn paint(on: bool, code: &str, s: &str) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Source and destination ports of TCP, UDP and SCTP flows.
pub fn ports(f: &Flow) -> (Option<u32>, Option<u32>) {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (Some(t.source_port), Some(t.destination_port)),
        Some(Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port)),
        Some(Protocol::Sctp(s)) => (Some(s.source_port), Some(s.destination_port)),
        _ => (None, None),
    }
}

fn host(
    ip: &str,
    port: Option<u32>,
    ep: Option<&Endpoint>,
    svc: Option<&lumen_api::flow::Service>,
    names: &[String],
    color: bool,
) -> String {
    let join = |ns: &str, name: &str| {
        if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        }
    };
    let pod = ep.filter(|e| !e.pod_name.is_empty());
    let svc = svc.filter(|s| !s.name.is_empty());
    let mut h = if let Some(e) = pod {
        // A service's namespace wins, as upstream.
        let ns = svc.map_or(e.namespace.as_str(), |s| s.namespace.as_str());
        join(ns, &e.pod_name)
    } else if let Some(s) = svc {
        join(&s.namespace, &s.name)
    } else if let Some(n) = names.first() {
        n.clone()
    } else {
        ip.to_string()
    };
    match port.filter(|p| *p != 0) {
        Some(p) => {
            if h.contains(':') {
                h = format!("[{h}]");
            }
            paint(
                color,
                "36",
                &format!("{h}:{}", paint(color, "33", &p.to_string())),
            )
        }
        None => paint(color, "36", &h),
    }
}

/// Source and destination as printed (`ns/pod:port`, a DNS name, or the IP; MAC addresses
/// for non-IP flows).
pub fn host_names(f: &Flow, color: bool) -> (String, String) {
    let Some(ip) = f.ip.as_ref() else {
        return match f.ethernet.as_ref() {
            Some(e) => (
                paint(color, "36", &e.source),
                paint(color, "36", &e.destination),
            ),
            None => (String::new(), String::new()),
        };
    };
    let (sp, dp) = ports(f);
    (
        host(
            &ip.source,
            sp,
            f.source.as_ref(),
            f.source_service.as_ref(),
            &f.source_names,
            color,
        ),
        host(
            &ip.destination,
            dp,
            f.destination.as_ref(),
            f.destination_service.as_ref(),
            &f.destination_names,
            color,
        ),
    )
}

/// A security identity as `(ID:n)`, or `(name)` for Cilium's reserved identities.
pub fn format_identity(id: u32, color: bool) -> String {
    let s = match crate::filters::RESERVED_IDENTITIES
        .iter()
        .find(|(_, n)| *n == id)
    {
        Some((name, _)) => format!("({name})"),
        None => format!("(ID:{id})"),
    };
    paint(color, "35", &s)
}

/// The description Cilium gives a drop reason code (`133` → `Policy denied`).
pub fn drop_reason_text(code: u32) -> String {
    let s = match code {
        0 => "Success",
        2 => "Invalid packet",
        3 => "Interface",
        4 => "Interface Decrypted",
        5 => "LB, sock cgroup: No backend slot entry found",
        6 => "LB, sock cgroup: No backend entry found",
        7 => "LB, sock cgroup: Reverse entry update failed",
        8 => "LB, sock cgroup: Reverse entry stale",
        9 => "Fragmented packet",
        10 => "Fragmented packet entry update failed",
        11 => "Missed tail call to custom program",
        130 => "Invalid source mac",
        131 => "Invalid destination mac",
        132 => "Invalid source ip",
        133 => "Policy denied",
        134 => "Invalid packet",
        135 => "CT: Truncated or invalid header",
        136 => "Fragmentation needed",
        137 => "CT: Unknown L4 protocol",
        138 => "CT: Can't create entry from packet",
        139 => "Unsupported L3 protocol",
        140 => "Missed tail call",
        141 => "Error writing to packet",
        142 => "Unknown L4 protocol",
        143 => "Unknown ICMPv4 code",
        144 => "Unknown ICMPv4 type",
        145 => "Unknown ICMPv6 code",
        146 => "Unknown ICMPv6 type",
        147 => "Error retrieving tunnel key",
        148 => "Error retrieving tunnel options",
        149 => "Invalid Geneve option",
        150 => "Unknown L3 target address",
        151 => "Stale or unroutable IP",
        152 => "No matching local container found",
        153 => "Error while correcting L3 checksum",
        154 => "Error while correcting L4 checksum",
        155 => "CT map insertion failed",
        156 => "Invalid IPv6 extension header",
        157 => "IP fragmentation not supported",
        158 => "Service backend not found",
        160 => "No tunnel/encapsulation endpoint (datapath BUG!)",
        161 => "NAT 46/64 not enabled",
        162 => "Reached EDT rate-limiting drop horizon",
        163 => "Unknown connection tracking state",
        164 => "Local host is unreachable",
        165 => "No configuration available to perform policy decision",
        166 => "Unsupported L2 protocol",
        167 => "No mapping for NAT masquerade",
        168 => "Unsupported protocol for NAT masquerade",
        169 => "FIB lookup failed",
        170 => "Encapsulation traffic is prohibited",
        171 => "Invalid identity",
        172 => "Unknown sender",
        173 => "NAT not needed",
        174 => "Is a ClusterIP",
        175 => "First logical datagram fragment not found",
        176 => "Forbidden ICMPv6 message",
        177 => "Denied by LB src range check",
        178 => "Socket lookup failed",
        179 => "Socket assign failed",
        180 => "Proxy redirection not supported for protocol",
        181 => "Policy denied by denylist",
        182 => "VLAN traffic disallowed by VLAN filter",
        183 => "Incorrect VNI from VTEP",
        184 => "Failed to update or lookup TC buffer",
        185 => "No SID was found for the IP address",
        186 => "SRv6 state was removed during tail call",
        187 => "L3 translation from IPv4 to IPv6 failed (NAT46)",
        188 => "L3 translation from IPv6 to IPv4 failed (NAT64)",
        189 => "Authentication required",
        190 => "No conntrack map found",
        191 => "No nat map found",
        192 => "Invalid ClusterID",
        193 => "Unsupported packet protocol for DSR encapsulation",
        194 => "No egress gateway found",
        195 => "Traffic is unencrypted",
        196 => "TTL exceeded",
        197 => "No node ID found",
        198 => "Rate limited",
        199 => "IGMP handled",
        200 => "IGMP subscribed",
        201 => "Multicast handled",
        202 => "Host datapath not ready",
        203 => "Endpoint policy program not available",
        204 => "No Egress IP configured",
        205 => "Punt to proxy",
        other => return other.to_string(),
    };
    s.to_string()
}

/// The policy match type as Cilium names it (`none`, `L3-Only`, `L3-L4`, ...).
pub fn policy_match_text(m: u32) -> &'static str {
    match m {
        0 => "none",
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "unknown",
    }
}

fn event_type(f: &Flow) -> (i32, i32) {
    f.event_type
        .as_ref()
        .map_or((0, 0), |e| (e.r#type, e.sub_type))
}

/// The TYPE column: L7 record type (`dns-request `, `http-response`), else by event type:
/// trace observation point, drop reason, `policy-verdict:<match> <DIRECTION>`, ...
pub fn flow_type(f: &Flow) -> String {
    if let Some(l7) = f.l7.as_ref() {
        let mut ty = L7FlowType::try_from(l7.r#type).map_or("unknown_l7_type".to_string(), |t| {
            t.as_str_name().to_ascii_lowercase()
        });
        let proto = match l7.record.as_ref() {
            Some(Record::Http(_)) => "http",
            Some(Record::Dns(d)) => {
                ty = format!("{ty} {}", d.observation_source);
                "dns"
            }
            Some(Record::Kafka(_)) => "kafka",
            None => "l7",
        };
        return format!("{proto}-{ty}");
    }
    let (ty, sub) = event_type(f);
    match ty {
        4 => trace_point_name(sub as u8),
        1 => drop_reason_text(u32::from(sub as u8)),
        5 => format!(
            "policy-verdict:{} {}",
            policy_match_text(f.policy_match_type),
            TrafficDirection::try_from(f.traffic_direction)
                .map_or("TRAFFIC_DIRECTION_UNKNOWN", |d| d.as_str_name())
        ),
        3 => lumen_api::flow::DebugCapturePoint::try_from(f.debug_capture_point)
            .map_or(f.debug_capture_point.to_string(), |p| {
                p.as_str_name().to_string()
            }),
        7 => match f.sock_xlate_point {
            1 => "pre-xlate-fwd".into(),
            2 => "post-xlate-fwd".into(),
            3 => "pre-xlate-rev".into(),
            4 => "post-xlate-rev".into(),
            _ => "SOCK_XLATE_POINT_UNKNOWN".into(),
        },
        _ => "UNKNOWN".into(),
    }
}

fn trace_point_name(sub: u8) -> String {
    crate::filters::TRACE_POINTS
        .get(usize::from(sub))
        .map_or_else(|| sub.to_string(), |s| s.to_string())
}

fn is_policy_verdict(f: &Flow) -> bool {
    event_type(f).0 == 5
}

/// The VERDICT column: the verdict name, or ALLOWED/DENIED/AUDITED for policy verdicts.
pub fn verdict_text(f: &Flow, color: bool) -> String {
    let pv = is_policy_verdict(f);
    let v = Verdict::try_from(f.verdict).unwrap_or(Verdict::Unknown);
    let name = v.as_str_name();
    match v {
        Verdict::Forwarded | Verdict::Redirected => {
            paint(color, "32", if pv { "ALLOWED" } else { name })
        }
        Verdict::Dropped | Verdict::Error => paint(color, "31", if pv { "DENIED" } else { name }),
        Verdict::Audit => paint(color, "33", if pv { "AUDITED" } else { name }),
        Verdict::Traced | Verdict::Translated => paint(color, "33", name),
        Verdict::Unknown => name.to_string(),
    }
}

/// ` BY <name> (<kind>)[, ...]` for allowed and denied policy verdicts that name their
/// policies, else empty.
pub fn policy_names(f: &Flow) -> String {
    if !is_policy_verdict(f) {
        return String::new();
    }
    let dir = TrafficDirection::try_from(f.traffic_direction).ok();
    let pick = |ingress: &[Policy], egress: &[Policy]| -> Vec<Policy> {
        match dir {
            Some(TrafficDirection::Ingress) => ingress.to_vec(),
            Some(TrafficDirection::Egress) => egress.to_vec(),
            _ => ingress.iter().chain(egress).cloned().collect(),
        }
    };
    let policies = match Verdict::try_from(f.verdict) {
        Ok(Verdict::Forwarded | Verdict::Redirected) => {
            pick(&f.ingress_allowed_by, &f.egress_allowed_by)
        }
        Ok(Verdict::Dropped | Verdict::Error) => pick(&f.ingress_denied_by, &f.egress_denied_by),
        _ => vec![],
    };
    if policies.is_empty() {
        return String::new();
    }
    let names: Vec<String> = policies
        .iter()
        .map(|p| {
            if p.kind.is_empty() {
                p.name.clone()
            } else {
                format!("{} ({})", p.name, p.kind)
            }
        })
        .collect();
    format!(" BY {}", names.join(", "))
}

/// The summary as printed: the flow's `Summary`, plus `; Auth: <type>` when auth is on.
pub fn summary_text(f: &Flow) -> String {
    match AuthType::try_from(f.auth_type) {
        Ok(AuthType::Disabled) => f.summary.clone(),
        Ok(a) => format!("{}; Auth: {}", f.summary, a.as_str_name()),
        Err(_) => format!("{}; Auth: {}", f.summary, f.auth_type),
    }
}

/// One compact line (with its newline).
pub fn compact_line(f: &Flow, opts: &PrintOptions) -> String {
    let c = opts.color;
    let (mut src, mut dst) = host_names(f, c);
    let mut src_id = format_identity(f.source.as_ref().map_or(0, |e| e.identity), c);
    let mut dst_id = format_identity(f.destination.as_ref().map_or(0, |e| e.identity), c);
    let arrow = match f.is_reply.as_ref() {
        None => "<>",
        Some(r) if r.value => {
            std::mem::swap(&mut src, &mut dst);
            std::mem::swap(&mut src_id, &mut dst_id);
            "<-"
        }
        Some(_) => "->",
    };
    let node = if opts.node_name {
        format!(" [{}]", f.node_name)
    } else {
        String::new()
    };
    let by = if opts.policy_names {
        policy_names(f)
    } else {
        String::new()
    };
    format!(
        "{}{node}: {src} {src_id} {arrow} {dst} {dst_id} {} {}{by} ({})\n",
        format_timestamp(f.time.as_ref()),
        flow_type(f),
        verdict_text(f, c),
        summary_text(f)
    )
}

/// One dict record (without the `------------` separator printed between records).
pub fn dict_record(f: &Flow, opts: &PrintOptions) -> String {
    let (src, dst) = host_names(f, opts.color);
    let mut s = format!("  TIMESTAMP: {}\n", format_timestamp(f.time.as_ref()));
    if opts.node_name {
        s += &format!("       NODE: {}\n", f.node_name);
    }
    s += &format!(
        "     SOURCE: {src}\nDESTINATION: {dst}\n       TYPE: {}\n    VERDICT: {}\n    SUMMARY: {}\n",
        flow_type(f),
        verdict_text(f, opts.color),
        f.summary
    );
    s
}

/// The table's header cells.
pub fn table_header(opts: &PrintOptions) -> Vec<String> {
    let mut h = vec!["TIMESTAMP"];
    if opts.node_name {
        h.push("NODE");
    }
    h.extend(["SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]);
    h.into_iter().map(String::from).collect()
}

/// A flow's table cells (never coloured).
pub fn table_row(f: &Flow, opts: &PrintOptions) -> Vec<String> {
    let (src, dst) = host_names(f, false);
    let mut r = vec![format_timestamp(f.time.as_ref())];
    if opts.node_name {
        r.push(f.node_name.clone());
    }
    r.extend([
        src,
        dst,
        flow_type(f),
        verdict_text(f, false),
        summary_text(f),
    ]);
    r
}

/// Aligns rows like Go's `tabwriter` with minimum width 2 and padding 3: every cell but the
/// last of a row is padded to its column's width; the last is printed as is.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![2usize; cols];
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count() + 3);
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            out += cell;
            if i + 1 < r.len() {
                out += &" ".repeat(widths[i] - cell.chars().count());
            }
        }
        out.push('\n');
    }
    out
}

/// A response as one protobuf-JSON line (with its newline), fields in field-number order
/// as the upstream CLI prints them (`flow` first, then `node_name` and `time`).
pub fn json_line(r: &GetFlowsResponse) -> Result<String> {
    fn json<T: serde::Serialize>(v: &T) -> Result<String> {
        serde_json::to_string(v).map_err(|e| std::io::Error::other(e.to_string()).into())
    }
    let head = json(&GetFlowsResponse {
        response_types: None,
        node_name: r.node_name.clone(),
        time: r.time,
    })?;
    let oneof = match r.response_types.as_ref() {
        Some(ResponseTypes::Flow(f)) => Some(("flow", json(f)?)),
        Some(ResponseTypes::NodeStatus(s)) => Some(("node_status", json(s)?)),
        Some(ResponseTypes::LostEvents(l)) => Some(("lost_events", json(l)?)),
        None => None,
    };
    let mut s = match oneof {
        None => head,
        Some((key, body)) if head == "{}" => format!("{{\"{key}\":{body}}}"),
        Some((key, body)) => format!("{{\"{key}\":{body},{}", &head[1..]),
    };
    s.push('\n');
    Ok(s)
}

fn join_cut(names: &[String]) -> String {
    let mut len = 0;
    let mut end = names.len();
    for (i, n) in names.iter().enumerate() {
        len += n.len() + 2;
        if len > 50 && i > 0 {
            end = i;
            break;
        }
    }
    let joined = names[..end].join(", ");
    if end < names.len() {
        format!("{joined} (and {} more)", names.len() - end)
    } else {
        joined
    }
}

/// The stderr line for a relay's node status event; `None` for informational ones
/// (connected, gone), which upstream shows only in debug mode.
pub fn node_status_line(r: &GetFlowsResponse, s: &NodeStatusEvent) -> Option<String> {
    let prefix = format!("{} [{}]", format_timestamp(r.time.as_ref()), r.node_name);
    let n = s.node_names.len();
    let names = join_cut(&s.node_names);
    match NodeState::try_from(s.state_change) {
        Ok(NodeState::NodeUnavailable) => {
            Some(format!("{prefix}: {n} nodes are unavailable: {names}"))
        }
        Ok(NodeState::NodeError) => Some(format!(
            "{prefix}: Error {:?} on {n} nodes: {names}",
            s.message
        )),
        _ => None,
    }
}

/// The stderr line for lost events.
pub fn lost_events_line(r: &GetFlowsResponse, l: &LostEvent) -> String {
    let source = LostEventSource::try_from(l.source)
        .map_or("UNKNOWN_LOST_EVENT_SOURCE", |s| s.as_str_name());
    let cpu = l
        .cpu
        .as_ref()
        .map_or("N/A".to_string(), |c| c.value.to_string());
    format!(
        "{} [{}]: EVENTS LOST: {source} CPU({cpu}) {}",
        format_timestamp(r.time.as_ref()),
        r.node_name,
        l.num_events_lost
    )
}

/// Writes a stream of responses in one format: flows to `out`, node status and lost events
/// to `err` (JSON output writes lost events to `out` too). Call [`Printer::finish`] at the
/// end.
pub struct Printer<W: Write, E: Write> {
    opts: PrintOptions,
    out: W,
    err: E,
    records: usize,
    rows: Vec<Vec<String>>,
}

impl<W: Write, E: Write> Printer<W, E> {
    /// A printer writing to `out` and `err`.
    pub fn new(opts: PrintOptions, out: W, err: E) -> Self {
        let mut opts = opts;
        if opts.output == Output::Table {
            opts.color = false;
        }
        Printer {
            opts,
            out,
            err,
            records: 0,
            rows: vec![],
        }
    }

    /// Prints one response.
    pub fn write(&mut self, r: &GetFlowsResponse) -> Result<()> {
        if self.opts.output == Output::Json {
            // Node status events go to stderr, and only the unavailable/error ones, as
            // upstream; flows and lost events to stdout.
            if let Some(ResponseTypes::NodeStatus(s)) = r.response_types.as_ref() {
                if node_status_line(r, s).is_some() {
                    self.err.write_all(json_line(r)?.as_bytes())?;
                }
                return Ok(());
            }
            self.out.write_all(json_line(r)?.as_bytes())?;
            return Ok(self.out.flush()?);
        }
        match r.response_types.as_ref() {
            Some(ResponseTypes::Flow(f)) => {
                match self.opts.output {
                    Output::Compact => {
                        self.out.write_all(compact_line(f, &self.opts).as_bytes())?
                    }
                    Output::Dict => {
                        if self.records > 0 {
                            self.out.write_all(b"------------\n")?;
                        }
                        self.out.write_all(dict_record(f, &self.opts).as_bytes())?;
                    }
                    Output::Table => {
                        if self.rows.is_empty() {
                            self.rows.push(table_header(&self.opts));
                        }
                        self.rows.push(table_row(f, &self.opts));
                    }
                    Output::Json => unreachable!(),
                }
                self.records += 1;
                self.out.flush()?;
            }
            Some(ResponseTypes::NodeStatus(s)) => {
                if let Some(line) = node_status_line(r, s) {
                    writeln!(self.err, "{line}")?;
                }
            }
            Some(ResponseTypes::LostEvents(l)) => writeln!(self.err, "{}", lost_events_line(r, l))?,
            None => {}
        }
        Ok(())
    }

    /// Flushes what is buffered (the table).
    pub fn finish(&mut self) -> Result<()> {
        if !self.rows.is_empty() {
            self.out
                .write_all(render_table(&std::mem::take(&mut self.rows)).as_bytes())?;
        }
        Ok(self.out.flush()?)
    }
}
