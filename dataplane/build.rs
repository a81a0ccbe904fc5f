//! Builds the eBPF object (`dataplane-ebpf/`) so that building the agent always embeds a
//! datapath that matches its ABI crate.
//!
//! The eBPF crate needs `core` built for `bpfel-unknown-none`, which rustup's toolchains
//! here cannot do (no `rust-src`): it is built with Debian's `rustc-web` (`/usr/bin/cargo`,
//! `/usr/bin/rustc`) and `bpf-linker`, both installed by `cargo xtask setup`.
//! `LUMEN_EBPF_OBJECT=/path/to/object` skips the build and embeds a prebuilt object.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("lumen.bpf.o");
    println!("cargo:rerun-if-env-changed=LUMEN_EBPF_OBJECT");
    if let Ok(prebuilt) = env::var("LUMEN_EBPF_OBJECT") {
        println!("cargo:rerun-if-changed={prebuilt}");
        std::fs::copy(&prebuilt, &dest)
            .unwrap_or_else(|e| panic!("LUMEN_EBPF_OBJECT={prebuilt}: cannot copy: {e}"));
        return;
    }

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let ebpf = root.join("dataplane-ebpf");
    for p in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    for p in ["src", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("schema/abi").join(p).display()
        );
    }

    let cargo = Path::new("/usr/bin/cargo");
    let rustc = Path::new("/usr/bin/rustc");
    let linker_found = env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !cargo.exists() || !rustc.exists() || !linker_found {
        panic!(
            "\n\nthe eBPF toolchain is missing (need /usr/bin/cargo and /usr/bin/rustc from Debian's \
             rustc-web/cargo-web/rust-web-src, and bpf-linker on PATH).\n\
             Run `cargo xtask setup` once, then build again.\n\n"
        );
    }

    let target_dir = root.join("target").join("ebpf");
    // A clean environment: the outer cargo's variables (jobserver, rustflags, wrappers,
    // toolchain selection) must not leak into a build with another toolchain and target.
    let mut cmd = Command::new(cargo);
    cmd.env_clear();
    for keep in ["PATH", "HOME", "CARGO_HOME", "TMPDIR", "CARGO_NET_OFFLINE"] {
        if let Some(v) = env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.current_dir(&ebpf)
        .env("RUSTC", rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=--btf")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
        ]);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", cargo.display()));
    if !status.success() {
        panic!("building the eBPF object failed ({status}); see the compiler output above");
    }
    let built = target_dir.join("bpfel-unknown-none/release/lumen");
    std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}
