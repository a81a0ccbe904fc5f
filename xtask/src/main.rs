//! `cargo xtask`: the project's own commands.
//!
//! - `setup`: installs what a fresh Debian 12 machine lacks (idempotent, fast when done);
//! - `build`: builds every binary (the agent build also builds the eBPF object);
//! - `test`: setup, the unprivileged tests, then the privileged lab tests (which must not
//!   skip: they fail without root);
//! - `demo`: builds everything and runs the demo lab until Ctrl-C;
//! - `bench`: the benchmarks (criterion, and the lab's throughput/loss/RSS figures).

mod setup;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::Command};

#[derive(Parser)]
#[command(about = "Lumen project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain and tools the build and tests need.
    Setup,
    /// Build every binary (debug, or --release).
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Run all tests: unprivileged, then the privileged lab tests.
    Test {
        /// Extra arguments for the lab tests' harness (e.g. a test name filter).
        args: Vec<String>,
    },
    /// Build everything and run the demo lab until interrupted.
    Demo,
    /// Run the benchmarks and print the figures.
    Bench {
        /// Only the criterion micro-benchmarks.
        #[arg(long)]
        micro: bool,
    },
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--workspace", "--bins"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" }))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::all(),
        Cmd::Build { release } => build(release).map(drop),
        Cmd::Test { args } => {
            setup::all()?;
            run(cargo().args(["test", "--workspace", "--exclude", "lumen-integration"]))?;
            if !is_root() {
                bail!("the lab tests need root (network namespaces, eBPF): run `sudo -E cargo xtask test`");
            }
            let bins = build(true)?;
            run(cargo()
                .args([
                    "test",
                    "--release",
                    "-p",
                    "lumen-integration",
                    "--",
                    "--test-threads=1",
                ])
                .args(&args)
                .env("LUMEN_BIN_DIR", &bins)
                .env("LUMEN_REQUIRE_PRIVILEGED", "1"))
        }
        Cmd::Demo => {
            setup::all()?;
            if !is_root() {
                bail!("the demo lab needs root (network namespaces, eBPF): run `sudo -E cargo xtask demo`");
            }
            let bins = build(true)?;
            run(Command::new(bins.join("lab-demo")).env("LUMEN_BIN_DIR", &bins))
        }
        Cmd::Bench { micro } => {
            setup::all()?;
            run(cargo().args(["bench", "-p", "lumen-dataplane", "--bench", "pipeline"]))?;
            if micro {
                return Ok(());
            }
            if !is_root() {
                bail!("the lab benchmarks need root: run `sudo -E cargo xtask bench`");
            }
            let bins = build(true)?;
            run(Command::new(bins.join("lab-bench")).env("LUMEN_BIN_DIR", &bins))?;
            run(Command::new(bins.join("policy-bench")).env("LUMEN_BIN_DIR", &bins))?;
            run(Command::new(bins.join("lb-bench")).env("LUMEN_BIN_DIR", &bins))?;
            run(Command::new(bins.join("routing-bench")).env("LUMEN_BIN_DIR", &bins))?;
            run(Command::new(bins.join("relay-bench")).env("LUMEN_BIN_DIR", &bins))?;
            run(Command::new(bins.join("l2-bench")).env("LUMEN_BIN_DIR", &bins))?;
            run(Command::new(bins.join("ui-bench")).env("LUMEN_BIN_DIR", &bins))?;
            // DNS proxy: queries/s and added latency vs direct (a lab scenario, release agent).
            run(cargo()
                .args([
                    "test",
                    "--release",
                    "-p",
                    "lumen-integration",
                    "--test",
                    "dns",
                ])
                .args([
                    "--",
                    "--ignored",
                    "--exact",
                    "dns_proxy_benchmark",
                    "--nocapture",
                ])
                .env("LUMEN_BIN_DIR", &bins))
        }
    }
}
