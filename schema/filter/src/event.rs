//! Filters on what the flow event is rather than whom it connects: `uuid`, `event_type`,
//! `verdict`, `drop_reason_desc`, `traffic_direction`, `reply`, `interface`, `trace_id` and
//! `ip_trace_id`.
//!
//! - `event_type`: a filter `type` of 0 matches every type; with `match_sub_type` the flow's
//!   `event_type.sub_type` must equal the filter's `sub_type` (for trace events, type 4, the
//!   sub type is the monitor's observation point: 0 to-endpoint, 3 to-stack, ...). A flow
//!   without `event_type` never matches.
//! - `reply` looks at `is_reply`: an unset `is_reply` (direction unknown) matches nothing,
//!   except on a DROPPED flow, which counts as `false` (Hubble does this for clients that
//!   still think of the deprecated `reply` field, where drops were never replies).
//! - `interface`: a non-zero `index` and a non-empty `name` must both equal the flow's.
//! - `trace_id` compares with `trace_context.parent.trace_id` (empty when absent), exactly.

use lumen_api::flow::{EventTypeFilter, Flow, NetworkInterface, Verdict};

/// `uuid`: the flow's UUID is one of the listed ones.
pub(crate) fn uuid_matches(uuids: &[String], flow: &Flow) -> bool {
    uuids.contains(&flow.uuid)
}

/// `event_type`: see the module docs.
pub(crate) fn event_type_matches(filters: &[EventTypeFilter], flow: &Flow) -> bool {
    let Some(event) = flow.event_type.as_ref() else {
        return false;
    };
    filters.iter().any(|f| {
        (f.r#type == 0 || f.r#type == event.r#type)
            && (!f.match_sub_type || f.sub_type == event.sub_type)
    })
}

/// `verdict`, `drop_reason_desc`, `traffic_direction`, `ip_version`-style enum filters: the
/// flow's value is one of the listed ones.
pub(crate) fn enum_matches(values: &[i32], value: i32) -> bool {
    values.contains(&value)
}

/// `reply`: see the module docs.
pub(crate) fn reply_matches(values: &[bool], flow: &Flow) -> bool {
    let is_reply = match flow.is_reply.as_ref() {
        Some(v) => v.value,
        None if flow.verdict == Verdict::Dropped as i32 => false,
        None => return false,
    };
    values.contains(&is_reply)
}

/// `interface`: see the module docs.
pub(crate) fn interface_matches(filters: &[NetworkInterface], flow: &Flow) -> bool {
    let Some(iface) = flow.interface.as_ref() else {
        return false;
    };
    filters.iter().any(|f| {
        (f.index == 0 || f.index == iface.index) && (f.name.is_empty() || f.name == iface.name)
    })
}

/// `trace_id`: the flow's trace ID is one of the listed ones.
pub(crate) fn trace_id_matches(ids: &[String], flow: &Flow) -> bool {
    let trace_id = flow
        .trace_context
        .as_ref()
        .and_then(|t| t.parent.as_ref())
        .map_or("", |p| p.trace_id.as_str());
    ids.iter().any(|id| id == trace_id)
}

/// `ip_trace_id`: the flow carries an IP trace ID equal to one of the listed ones.
pub(crate) fn ip_trace_id_matches(ids: &[u64], flow: &Flow) -> bool {
    flow.ip_trace_id
        .as_ref()
        .is_some_and(|t| ids.contains(&t.trace_id))
}
