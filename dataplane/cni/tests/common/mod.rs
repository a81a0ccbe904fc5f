//! Helpers for the privileged tests: self-cleaning network namespaces (RAII, so a
//! failing assertion still removes them) and `ip -j` inspection. The `ip` binary is
//! used only here, to set up and observe; the code under test uses netlink.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// Whether the privileged tests can run here; prints why not otherwise.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: needs root (creates network namespaces and veths)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIP {test}: needs iproute2's `ip` to create test namespaces");
        return false;
    }
    true
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace named `lcni<pid>-<n>-<tag>`, deleted on drop (with every
/// interface inside it).
pub struct TestNs {
    pub name: String,
    pub path: PathBuf,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("lcni{}-{n}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let path = PathBuf::from(format!("/run/netns/{name}"));
        TestNs { name, path }
    }

    /// `ip -n <ns> <args>`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip -n <ns> -j <args>` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.ip(&full);
        if text.trim().is_empty() {
            return Value::Array(Vec::new());
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {text}"))
    }

    /// The link called `name`, if present.
    pub fn link(&self, name: &str) -> Option<Value> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .cloned()
    }

    /// Names of all links.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// `ip route show` entries of the main table (IPv4).
    pub fn routes(&self) -> Vec<Value> {
        self.ip_json(&["-4", "route", "show"])
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!(
                "warning: could not delete test namespace {}: {out:?}",
                self.name
            );
        }
    }
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A node namespace holding the pods' gateway address, as the agent's `lumen_host` does
/// on a real node (on `lo` here: the test kernel may lack the dummy driver, and any
/// local address answers ARP on the veth the same way).
pub fn node_with_gateway(tag: &str, gateway: &str) -> TestNs {
    let node = TestNs::new(tag);
    node.ip(&["addr", "add", &format!("{gateway}/32"), "dev", "lo"]);
    node.ip(&["link", "set", "lo", "up"]);
    node
}
