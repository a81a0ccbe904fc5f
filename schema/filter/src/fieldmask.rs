//! Field masks for `GetFlowsRequest.field_mask`: keep only the selected fields of each
//! flow.
//!
//! Paths are dot-separated proto field names of `flow.Flow` (`time`, `source.namespace`,
//! `l4.TCP.source_port`, `IP`), validated against the message descriptors of
//! [`lumen_api::FILE_DESCRIPTOR_SET`] the way `google.protobuf.FieldMask` validation does: every
//! segment names a field of the message the previous segment selects, and a repeated field
//! may only be the last segment. A path selecting a message keeps all of it; a sub-path
//! keeps only that sub-field (and its parents). A parent absent from the flow stays absent
//! (no empty message is created for it). An empty mask keeps everything.
//!
//! Pruning works on the wire format: the flow is encoded, the fields whose numbers are not in
//! the mask are skipped (recursing into sub-messages that have sub-paths), and the result is
//! decoded again. This covers every field, oneofs included, with no per-type code.

use std::collections::HashMap;
use std::sync::OnceLock;

use lumen_api::flow::Flow;
use pbjson_types::FieldMask;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// The full name of the message a [`FlowMask`] applies to.
const FLOW_MESSAGE: &str = "flow.Flow";

/// Why a field-mask path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldMaskError {
    /// A path that is empty or has an empty segment (`source..pod_name`).
    #[error("invalid field mask path {path:?}: empty field name")]
    EmptySegment {
        /// The offending path.
        path: String,
    },
    /// A segment that names no field of the message it applies to.
    #[error("invalid field mask path {path:?}: {message} has no field {field:?}")]
    UnknownField {
        /// The offending path.
        path: String,
        /// The segment that names no field.
        field: String,
        /// The full name of the message searched (`flow.Endpoint`).
        message: String,
    },
    /// A path that continues past a scalar or repeated field.
    #[error("invalid field mask path {path:?}: cannot select inside {field:?} ({reason})")]
    NotTraversable {
        /// The offending path.
        path: String,
        /// The segment that cannot have sub-fields.
        field: String,
        /// `not a message` or `repeated field`.
        reason: &'static str,
    },
    /// The embedded descriptor set could not be read (a build problem, not a client error).
    #[error("cannot read the flow message descriptors: {0}")]
    Descriptors(String),
}

impl FieldMaskError {
    /// The offending path (empty for [`FieldMaskError::Descriptors`]).
    pub fn path(&self) -> &str {
        match self {
            Self::EmptySegment { path }
            | Self::UnknownField { path, .. }
            | Self::NotTraversable { path, .. } => path,
            Self::Descriptors(_) => "",
        }
    }
}

/// What the mask needs to know about a field.
#[derive(Debug, Clone)]
struct FieldInfo {
    number: u32,
    /// Full name (no leading dot) of the field's message type, if it is a message.
    message: Option<String>,
    repeated: bool,
}

/// Fields by name, for every message of the descriptor set, by full name.
type Index = HashMap<String, HashMap<String, FieldInfo>>;

fn index_messages(index: &mut Index, scope: &str, messages: &[DescriptorProto]) {
    for msg in messages {
        let full = if scope.is_empty() {
            msg.name().to_owned()
        } else {
            format!("{scope}.{}", msg.name())
        };
        let fields = msg
            .field
            .iter()
            .map(|f| {
                let message = matches!(f.r#type(), Type::Message | Type::Group)
                    .then(|| f.type_name().trim_start_matches('.').to_owned());
                let info = FieldInfo {
                    number: f.number() as u32,
                    message,
                    repeated: f.label() == Label::Repeated,
                };
                (f.name().to_owned(), info)
            })
            .collect();
        index.insert(full.clone(), fields);
        index_messages(index, &full, &msg.nested_type);
    }
}

fn descriptor_index() -> Result<&'static Index, FieldMaskError> {
    static INDEX: OnceLock<Result<Index, String>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let set = FileDescriptorSet::decode(lumen_api::FILE_DESCRIPTOR_SET)
                .map_err(|e| e.to_string())?;
            let mut index = Index::new();
            for file in &set.file {
                index_messages(&mut index, file.package(), &file.message_type);
            }
            if index.contains_key(FLOW_MESSAGE) {
                Ok(index)
            } else {
                Err(format!("no {FLOW_MESSAGE} message in the descriptor set"))
            }
        })
        .as_ref()
        .map_err(|e| FieldMaskError::Descriptors(e.clone()))
}

/// The selected fields of one message, by field number; `None`: the whole field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    fields: Vec<(u32, Option<Node>)>,
}

impl Node {
    fn get(&self, number: u32) -> Option<&Option<Node>> {
        self.fields
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// Adds a path of field numbers; a shorter path wins over a longer one.
    fn add(&mut self, numbers: &[u32]) {
        let Some((&first, rest)) = numbers.split_first() else {
            return;
        };
        let i = match self.fields.binary_search_by_key(&first, |(n, _)| *n) {
            Ok(i) => i,
            Err(i) => {
                let child = if rest.is_empty() {
                    None
                } else {
                    Some(Node::default())
                };
                self.fields.insert(i, (first, child));
                if rest.is_empty() {
                    return;
                }
                i
            }
        };
        match (&mut self.fields[i].1, rest.is_empty()) {
            // Already the whole field.
            (None, _) => {}
            (slot @ Some(_), true) => *slot = None,
            (Some(child), false) => child.add(rest),
        }
    }
}

/// A compiled field mask over `flow.Flow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowMask {
    /// `None`: keep everything.
    root: Option<Node>,
}

impl FlowMask {
    /// Validates and compiles the paths of a `google.protobuf.FieldMask` over `flow.Flow`.
    /// No paths: a mask that keeps everything.
    pub fn compile(paths: &[String]) -> Result<FlowMask, FieldMaskError> {
        if paths.is_empty() {
            return Ok(FlowMask::default());
        }
        let index = descriptor_index()?;
        let mut root = Node::default();
        let mut numbers = Vec::new();
        for path in paths {
            numbers.clear();
            let mut message = FLOW_MESSAGE;
            let mut stop: Option<(&str, &'static str)> = None;
            for segment in path.split('.') {
                if segment.is_empty() {
                    return Err(FieldMaskError::EmptySegment { path: path.clone() });
                }
                if let Some((field, reason)) = stop {
                    return Err(FieldMaskError::NotTraversable {
                        path: path.clone(),
                        field: field.to_owned(),
                        reason,
                    });
                }
                let field = index
                    .get(message)
                    .and_then(|fields| fields.get(segment))
                    .ok_or_else(|| FieldMaskError::UnknownField {
                        path: path.clone(),
                        field: segment.to_owned(),
                        message: message.to_owned(),
                    })?;
                numbers.push(field.number);
                match (&field.message, field.repeated) {
                    (_, true) => stop = Some((segment, "repeated field")),
                    (Some(m), false) => message = m.as_str(),
                    (None, false) => stop = Some((segment, "not a message")),
                }
            }
            root.add(&numbers);
        }
        Ok(FlowMask { root: Some(root) })
    }

    /// Compiles `GetFlowsRequest.field_mask` as it arrives (`None`: keep everything).
    pub fn from_field_mask(mask: Option<&FieldMask>) -> Result<FlowMask, FieldMaskError> {
        Self::compile(mask.map_or(&[], |m| m.paths.as_slice()))
    }

    /// Whether the mask keeps every field (no paths).
    pub fn is_keep_all(&self) -> bool {
        self.root.is_none()
    }

    /// A copy of `flow` with only the selected fields.
    pub fn apply(&self, flow: &Flow) -> Flow {
        let Some(root) = &self.root else {
            return flow.clone();
        };
        let encoded = flow.encode_to_vec();
        let mut pruned = Vec::with_capacity(encoded.len());
        match prune(&encoded, root, &mut pruned) {
            Some(()) => Flow::decode(pruned.as_slice()).unwrap_or_else(|e| {
                debug_assert!(false, "pruned flow does not decode: {e}");
                Flow::default()
            }),
            // Not reachable with prost-encoded flows (no groups, well-formed).
            None => flow.clone(),
        }
    }
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Copies the fields of the encoded message `buf` that `node` selects to `out`.
/// `None` on malformed input or groups.
fn prune(mut buf: &[u8], node: &Node, out: &mut Vec<u8>) -> Option<()> {
    while !buf.is_empty() {
        let start = buf;
        let key = read_varint(&mut buf)?;
        let number = u32::try_from(key >> 3).ok()?;
        let payload: &[u8] = match key & 7 {
            0 => {
                read_varint(&mut buf)?;
                &[]
            }
            1 => {
                buf = buf.get(8..)?;
                &[]
            }
            5 => {
                buf = buf.get(4..)?;
                &[]
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).ok()?;
                let payload = buf.get(..len)?;
                buf = &buf[len..];
                payload
            }
            _ => return None,
        };
        let record = &start[..start.len() - buf.len()];
        match node.get(number) {
            None => {}
            Some(None) => out.extend_from_slice(record),
            Some(Some(child)) if key & 7 == 2 => {
                let mut sub = Vec::with_capacity(payload.len());
                prune(payload, child, &mut sub)?;
                write_varint(key, out);
                write_varint(sub.len() as u64, out);
                out.extend_from_slice(&sub);
            }
            Some(Some(_)) => out.extend_from_slice(record),
        }
    }
    Some(())
}
