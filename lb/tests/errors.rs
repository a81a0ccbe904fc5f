//! Invalid objects are rejected with the path of the offending field.

mod common;

#[test]
fn each_invalid_document_names_its_field() {
    let docs = common::documents("invalid.yaml");
    let got: Vec<String> = docs.iter().map(common::parse_error).collect();
    let want = [
        "spec.ports[1].protocol: unknown protocol \"HTTP\"",
        "spec.type: unsupported service type ExternalName (DNS only, no load balancing)",
        "spec.ports[0].nodePort: 0 is out of range 1..=65535",
        "spec.externalTrafficPolicy: unknown traffic policy \"Nearest\"",
        "endpoints[1].addresses[0]: invalid IP address \"10.0.0.300\"",
        "endpoints[0].conditions.ready: expected a boolean",
        "spec.blocks[1].stop: fd00::1 is not an address of the same family at or after start 10.1.0.1",
    ];
    assert_eq!(got, want);
}
