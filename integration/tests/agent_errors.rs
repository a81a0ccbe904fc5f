//! An agent that cannot work says what is missing and exits, instead of half-starting.

mod common;

use common::privileged;
use lumen_integration::find_binary;
use std::{os::unix::process::CommandExt, path::Path, process::Command};

fn run_agent(dir: &Path, bpf_root: &Path, uid: Option<u32>) -> (i32, String) {
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "nodeName: errtest\nbpfRoot: {}\nstateDir: {d}/state\nmanifestsDir: {d}/manifests\nagentSocket: {d}/agent.sock\nhubble:\n  listenAddress: ''\n  socketPath: {d}/hubble.sock\n",
            bpf_root.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let mut agent = find_binary("lumen-agent").unwrap();
    if uid.is_some() {
        // The build tree may sit under a directory only root can enter (a 0700 temp dir):
        // run a copy the unprivileged user can reach.
        let copy = dir.join("lumen-agent");
        std::fs::copy(&agent, &copy).unwrap();
        agent = copy;
    }
    let mut cmd = Command::new(agent);
    cmd.args(["--config", cfg.to_str().unwrap()]);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_bpffs_the_agent_says_how_to_mount_it() {
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lumen-errtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, err) = run_agent(&dir, &dir.join("not-bpffs"), None);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not on a bpf filesystem") && err.contains("mount -t bpf"),
        "{err}"
    );
}

#[test]
fn without_privileges_the_agent_names_the_capabilities() {
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lumen-errtest-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Command::new("chown")
        .args(["-R", "65534:65534", dir.to_str().unwrap()])
        .status()
        .unwrap();
    let (code, err) = run_agent(&dir, Path::new("/sys/fs/bpf/lumen-errtest"), Some(65534));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN") && err.contains("root"),
        "{err}"
    );
    assert!(
        !Path::new("/sys/fs/bpf/lumen-errtest").exists(),
        "nothing pinned"
    );
}
