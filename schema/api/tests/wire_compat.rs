//! Wire compatibility with Hubble v1.19, checked on the compiled `FileDescriptorSet`.
//!
//! `contract_matches_descriptor` reads the Hubble API contract (`shared/contracts/hubble-api.md`
//! next to the repository) and checks every service, method, message field (number, name,
//! type, label, oneof) and enum value against the descriptor, in both directions. Without the
//! contract file it prints a notice and passes; `selected_facts` always runs.

use std::collections::{BTreeMap, BTreeSet};

use lumen_api::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    MethodDescriptorProto,
};

const CONTRACT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/contracts/hubble-api.md"
);

const OUR_PACKAGES: &[&str] = &["flow", "observer", "peer", "relay"];

/// The descriptor set, flattened: messages and enums by full name (no leading dot).
struct Schema {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
    /// Services by full name, with their methods.
    services: BTreeMap<String, Vec<MethodDescriptorProto>>,
    /// Package of each file.
    packages: BTreeSet<String>,
}

impl Schema {
    fn load() -> Self {
        let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decode descriptor set");
        let mut schema = Schema {
            messages: BTreeMap::new(),
            enums: BTreeMap::new(),
            services: BTreeMap::new(),
            packages: BTreeSet::new(),
        };
        for file in &fds.file {
            let pkg = file.package().to_owned();
            for m in &file.message_type {
                schema.add_message(&pkg, m);
            }
            for e in &file.enum_type {
                schema
                    .enums
                    .insert(format!("{pkg}.{}", e.name()), e.clone());
            }
            for s in &file.service {
                schema
                    .services
                    .insert(format!("{pkg}.{}", s.name()), s.method.clone());
            }
            schema.packages.insert(pkg);
        }
        schema
    }

    fn add_message(&mut self, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for nested in &m.nested_type {
            self.add_message(&name, nested);
        }
        for e in &m.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        self.messages.insert(name, m.clone());
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        self.messages
            .get(name)
            .unwrap_or_else(|| panic!("message {name} missing from the descriptor"))
    }

    fn field(&self, message: &str, field: &str) -> &FieldDescriptorProto {
        self.message(message)
            .field
            .iter()
            .find(|f| f.name() == field)
            .unwrap_or_else(|| panic!("field {message}.{field} missing"))
    }

    fn enum_value(&self, enum_name: &str, value: &str) -> i32 {
        self.enums
            .get(enum_name)
            .unwrap_or_else(|| panic!("enum {enum_name} missing"))
            .value
            .iter()
            .find(|v| v.name() == value)
            .unwrap_or_else(|| panic!("enum value {enum_name}.{value} missing"))
            .number()
    }

    fn is_ours(name: &str) -> bool {
        OUR_PACKAGES
            .iter()
            .any(|p| name.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
    }

    /// Resolves a type name written in scope `scope` (a message or package full name) the
    /// way protoc does: innermost scope first.
    fn resolve(&self, scope: &str, name: &str) -> Option<String> {
        let mut scope = scope.to_owned();
        loop {
            let candidate = if scope.is_empty() {
                name.to_owned()
            } else {
                format!("{scope}.{name}")
            };
            if self.messages.contains_key(&candidate) || self.enums.contains_key(&candidate) {
                return Some(candidate);
            }
            if scope.is_empty() {
                return None;
            }
            scope = scope
                .rfind('.')
                .map_or(String::new(), |i| scope[..i].to_owned());
        }
    }
}

fn scalar_type(name: &str) -> Option<Type> {
    Some(match name {
        "double" => Type::Double,
        "float" => Type::Float,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "uint32" => Type::Uint32,
        "uint64" => Type::Uint64,
        "sint32" => Type::Sint32,
        "sint64" => Type::Sint64,
        "fixed32" => Type::Fixed32,
        "fixed64" => Type::Fixed64,
        "sfixed32" => Type::Sfixed32,
        "sfixed64" => Type::Sfixed64,
        "bool" => Type::Bool,
        "string" => Type::String,
        "bytes" => Type::Bytes,
        _ => return None,
    })
}

#[test]
fn selected_facts() {
    let s = Schema::load();

    let f = s.field("flow.Flow", "Summary");
    assert_eq!((f.number(), f.r#type()), (100000, Type::String));
    let f = s.field("flow.Flow", "is_reply");
    assert_eq!(f.number(), 26);
    assert_eq!(f.type_name(), ".google.protobuf.BoolValue");
    assert_eq!(s.field("flow.Flow", "extensions").number(), 150000);
    assert_eq!(s.field("flow.Flow", "egress_denied_by").number(), 21004);
    assert_eq!(
        s.field("flow.Flow", "egress_denied_by").label(),
        Label::Repeated
    );
    assert_eq!(s.field("flow.Flow", "IP").number(), 5);
    assert_eq!(s.field("flow.Flow", "Type").type_name(), ".flow.FlowType");
    assert_eq!(s.field("flow.IP", "ipVersion").number(), 3);
    assert_eq!(s.field("flow.Endpoint", "ID").number(), 1);
    assert_eq!(s.field("flow.Layer4", "ICMPv4").number(), 3);
    assert_eq!(
        s.field("flow.Tunnel", "protocol").type_name(),
        ".flow.Tunnel.Protocol"
    );

    assert_eq!(s.field("observer.GetFlowsRequest", "first").number(), 9);
    assert_eq!(
        s.field("observer.GetFlowsRequest", "experimental")
            .type_name(),
        ".observer.GetFlowsRequest.Experimental"
    );
    assert_eq!(s.field("flow.FlowFilter", "ip_trace_id").number(), 39);
    assert_eq!(
        s.field("flow.FlowFilter.Experimental", "cel_expression")
            .number(),
        1
    );

    let resp = s.message("observer.GetFlowsResponse");
    assert_eq!(resp.oneof_decl[0].name(), "response_types");
    for name in ["flow", "node_status", "lost_events"] {
        assert_eq!(
            s.field("observer.GetFlowsResponse", name).oneof_index,
            Some(0)
        );
    }
    assert_eq!(
        s.field("observer.GetFlowsResponse", "node_name")
            .oneof_index,
        None
    );

    assert_eq!(s.enum_value("flow.DropReason", "POLICY_DENIED"), 133);
    assert_eq!(s.enum_value("flow.DropReason", "POLICY_DENY"), 181);
    assert_eq!(
        s.enum_value("flow.TraceObservationPoint", "TO_ENDPOINT"),
        101
    );
    assert_eq!(s.enum_value("flow.EventType", "EventSample"), 9);
    assert_eq!(s.enum_value("flow.Tunnel.Protocol", "GENEVE"), 2);
    assert_eq!(s.enum_value("relay.NodeState", "NODE_ERROR"), 4);
    assert_eq!(
        s.enum_value("peer.ChangeNotificationType", "PEER_UPDATED"),
        3
    );

    let methods = |svc: &str| -> Vec<(String, String, String, bool, bool)> {
        s.services[svc]
            .iter()
            .map(|m| {
                (
                    m.name().to_owned(),
                    m.input_type().to_owned(),
                    m.output_type().to_owned(),
                    m.client_streaming(),
                    m.server_streaming(),
                )
            })
            .collect()
    };
    let m = |n: &str, i: &str, o: &str, stream: bool| {
        (n.to_owned(), i.to_owned(), o.to_owned(), false, stream)
    };
    assert_eq!(
        methods("observer.Observer"),
        vec![
            m(
                "GetFlows",
                ".observer.GetFlowsRequest",
                ".observer.GetFlowsResponse",
                true
            ),
            m(
                "GetAgentEvents",
                ".observer.GetAgentEventsRequest",
                ".observer.GetAgentEventsResponse",
                true
            ),
            m(
                "GetDebugEvents",
                ".observer.GetDebugEventsRequest",
                ".observer.GetDebugEventsResponse",
                true
            ),
            m(
                "GetNodes",
                ".observer.GetNodesRequest",
                ".observer.GetNodesResponse",
                false
            ),
            m(
                "GetNamespaces",
                ".observer.GetNamespacesRequest",
                ".observer.GetNamespacesResponse",
                false
            ),
            m(
                "ServerStatus",
                ".observer.ServerStatusRequest",
                ".observer.ServerStatusResponse",
                false
            ),
        ]
    );
    assert_eq!(
        methods("peer.Peer"),
        vec![m(
            "Notify",
            ".peer.NotifyRequest",
            ".peer.ChangeNotification",
            true
        )]
    );
    assert_eq!(
        s.services.keys().collect::<Vec<_>>(),
        ["observer.Observer", "peer.Peer"]
    );
}

/// One table of the contract.
#[derive(Debug, Default)]
struct Section {
    kind: String,
    /// Full name, e.g. `observer.GetFlowsRequest.Experimental`.
    name: String,
    rows: Vec<Vec<String>>,
}

/// Parses the contract's `## package` headings, `**kind `Name`**` headings and table rows.
/// "Name (continued)" tables are merged into the earlier table of the same name.
fn parse_contract(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut package = String::new();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("## package `") {
            package = rest.trim_end_matches('`').to_owned();
            current = None;
        } else if let Some(head) = line.strip_prefix("**").and_then(|l| l.strip_suffix("`**")) {
            let (kind, name) = head.split_once(" `").expect("heading `**kind `Name`**`");
            let name = name.trim_end_matches(" (continued)");
            let full = format!("{package}.{name}");
            current = Some(
                match sections
                    .iter()
                    .position(|s| s.kind == kind && s.name == full)
                {
                    Some(i) => i,
                    None => {
                        sections.push(Section {
                            kind: kind.to_owned(),
                            name: full,
                            rows: Vec::new(),
                        });
                        sections.len() - 1
                    }
                },
            );
        } else if line.starts_with('|') {
            let Some(i) = current else { continue };
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            let header = matches!(cells[0].as_str(), "number" | "value" | "rpc");
            if !header && !cells[0].starts_with("---") {
                sections[i].rows.push(cells);
            }
        } else if line.starts_with('#') {
            current = None;
        }
    }
    sections
}

/// Checks one contract message against the descriptor; returns the problems found.
fn check_message(s: &Schema, sec: &Section, problems: &mut Vec<String>) {
    let Some(msg) = s.messages.get(&sec.name) else {
        problems.push(format!("message {} missing", sec.name));
        return;
    };
    let mut seen = BTreeSet::new();
    for row in &sec.rows {
        let [number, name, ty] = &row[..] else {
            problems.push(format!("{}: bad row {row:?}", sec.name));
            continue;
        };
        let number: i32 = number.parse().expect("field number");
        let what = format!("{}.{name}", sec.name);
        seen.insert(name.clone());
        let Some(field) = msg.field.iter().find(|f| f.name() == name) else {
            problems.push(format!("field {what} missing"));
            continue;
        };
        if field.number() != number {
            problems.push(format!("{what}: number {} != {number}", field.number()));
        }

        // "repeated T", "T (oneof name)" or "T".
        let (ty, oneof) = match ty.split_once(" (oneof ") {
            Some((t, o)) => (t, Some(o.trim_end_matches(')'))),
            None => (ty.as_str(), None),
        };
        let (ty, repeated) = match ty.strip_prefix("repeated ") {
            Some(t) => (t, true),
            None => (ty, false),
        };
        let label = if repeated {
            Label::Repeated
        } else {
            Label::Optional
        };
        if field.label() != label {
            problems.push(format!("{what}: label {:?} != {label:?}", field.label()));
        }
        if field.proto3_optional() {
            problems.push(format!("{what}: unexpected proto3 `optional`"));
        }
        let got_oneof = field
            .oneof_index
            .and_then(|i| msg.oneof_decl.get(i as usize))
            .map(|o| o.name());
        if got_oneof != oneof {
            problems.push(format!("{what}: oneof {got_oneof:?} != {oneof:?}"));
        }

        if let Some(scalar) = scalar_type(ty) {
            if field.r#type() != scalar || !field.type_name().is_empty() {
                problems.push(format!("{what}: type {:?} != {ty}", field.r#type()));
            }
            continue;
        }
        let Some(resolved) = s.resolve(&sec.name, ty) else {
            problems.push(format!("{what}: contract type {ty} not found"));
            continue;
        };
        let kind = if s.enums.contains_key(&resolved) {
            Type::Enum
        } else {
            Type::Message
        };
        if field.r#type() != kind || field.type_name() != format!(".{resolved}") {
            problems.push(format!(
                "{what}: type {:?} {} != {kind:?} .{resolved}",
                field.r#type(),
                field.type_name()
            ));
        }
    }
    for f in &msg.field {
        if !seen.contains(f.name()) {
            problems.push(format!("{}.{}: not in the contract", sec.name, f.name()));
        }
    }
}

fn check_enum(s: &Schema, sec: &Section, problems: &mut Vec<String>) {
    let Some(e) = s.enums.get(&sec.name) else {
        problems.push(format!("enum {} missing", sec.name));
        return;
    };
    let want: BTreeSet<(String, i32)> = sec
        .rows
        .iter()
        .map(|r| (r[1].clone(), r[0].parse().expect("enum value")))
        .collect();
    let got: BTreeSet<(String, i32)> = e
        .value
        .iter()
        .map(|v| (v.name().to_owned(), v.number()))
        .collect();
    for v in want.difference(&got) {
        problems.push(format!("{}: value {v:?} missing or different", sec.name));
    }
    for v in got.difference(&want) {
        problems.push(format!("{}: value {v:?} not in the contract", sec.name));
    }
}

fn check_service(s: &Schema, sec: &Section, problems: &mut Vec<String>) {
    let Some(methods) = s.services.get(&sec.name) else {
        problems.push(format!("service {} missing", sec.name));
        return;
    };
    let pkg = sec.name.rsplit_once('.').expect("package.Service").0;
    let want: Vec<(String, String, String, bool, bool)> = sec
        .rows
        .iter()
        .map(|r| {
            let q = |t: &str| -> (String, bool) {
                match t.strip_prefix("stream ") {
                    Some(t) => (format!(".{pkg}.{t}"), true),
                    None => (format!(".{pkg}.{t}"), false),
                }
            };
            let (input, client_streaming) = q(&r[1]);
            let (output, server_streaming) = q(&r[2]);
            (
                r[0].clone(),
                input,
                output,
                client_streaming,
                server_streaming,
            )
        })
        .collect();
    let got: Vec<(String, String, String, bool, bool)> = methods
        .iter()
        .map(|m| {
            (
                m.name().to_owned(),
                m.input_type().to_owned(),
                m.output_type().to_owned(),
                m.client_streaming(),
                m.server_streaming(),
            )
        })
        .collect();
    if got != want {
        problems.push(format!("service {}: {got:?} != {want:?}", sec.name));
    }
}

#[test]
fn contract_matches_descriptor() {
    let Ok(text) = std::fs::read_to_string(CONTRACT) else {
        println!("NOTICE: {CONTRACT} not found; skipping the full contract check");
        return;
    };
    let sections = parse_contract(&text);
    let s = Schema::load();
    let mut problems = Vec::new();
    let mut counts = BTreeMap::<&str, usize>::new();
    for sec in &sections {
        *counts.entry(sec.kind.as_str()).or_default() += 1;
        match sec.kind.as_str() {
            "message" => check_message(&s, sec, &mut problems),
            "enum" => check_enum(&s, sec, &mut problems),
            "service" => check_service(&s, sec, &mut problems),
            other => problems.push(format!("unknown section kind {other} ({})", sec.name)),
        }
    }

    // Nothing in our packages that the contract does not list.
    let listed = |kind: &str| -> BTreeSet<&str> {
        sections
            .iter()
            .filter(|sec| sec.kind == kind)
            .map(|sec| sec.name.as_str())
            .collect()
    };
    let (messages, enums, services) = (listed("message"), listed("enum"), listed("service"));
    for name in s.messages.keys().filter(|n| Schema::is_ours(n)) {
        if !messages.contains(name.as_str()) {
            problems.push(format!("message {name} not in the contract"));
        }
    }
    for name in s.enums.keys().filter(|n| Schema::is_ours(n)) {
        if !enums.contains(name.as_str()) {
            problems.push(format!("enum {name} not in the contract"));
        }
    }
    for name in s.services.keys() {
        if !services.contains(name.as_str()) {
            problems.push(format!("service {name} not in the contract"));
        }
    }
    for pkg in OUR_PACKAGES {
        assert!(s.packages.contains(*pkg), "package {pkg} missing");
    }

    // Guard against the parser silently reading nothing.
    assert!(
        counts.get("message").copied().unwrap_or(0) > 60,
        "{counts:?}"
    );
    assert!(counts.get("enum").copied().unwrap_or(0) > 15, "{counts:?}");
    assert_eq!(counts.get("service").copied(), Some(2), "{counts:?}");
    assert!(
        problems.is_empty(),
        "{} differences from the contract:\n{}",
        problems.len(),
        problems.join("\n")
    );
    println!("contract check: {counts:?}, all fields and values match");
}
