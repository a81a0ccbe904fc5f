//! Shared helpers for the integration tests: loading multi-document YAML fixtures.
#![allow(dead_code)]

use std::path::Path;

use lumen_lb::{EndpointSlice, IpPool, ParseError, Service};
use serde::Deserialize;
use serde_yaml::Value;

/// Every document of `tests/fixtures/<name>`.
pub fn documents(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("fixture is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of `kind`.
pub fn of_kind(docs: &[Value], kind: &str) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .cloned()
        .collect()
}

/// Parses every object of a fixture into services, slices and pools.
pub fn load(name: &str) -> (Vec<Service>, Vec<EndpointSlice>, Vec<IpPool>) {
    let docs = documents(name);
    let services = of_kind(&docs, "Service")
        .iter()
        .map(|d| Service::parse(d).unwrap())
        .collect();
    let slices = of_kind(&docs, "EndpointSlice")
        .iter()
        .map(|d| EndpointSlice::parse(d).unwrap())
        .collect();
    let pools = of_kind(&docs, "CiliumLoadBalancerIPPool")
        .iter()
        .map(|d| IpPool::parse(d).unwrap())
        .collect();
    (services, slices, pools)
}

/// Parses one document with the parser its kind calls for and returns the error text.
pub fn parse_error(doc: &Value) -> String {
    let r: Result<(), ParseError> = match doc["kind"].as_str() {
        Some("Service") => Service::parse(doc).map(|_| ()),
        Some("EndpointSlice") => EndpointSlice::parse(doc).map(|_| ()),
        _ => IpPool::parse(doc).map(|_| ()),
    };
    r.expect_err("fixture document must be invalid").to_string()
}
