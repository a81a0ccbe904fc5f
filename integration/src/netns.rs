//! Network namespaces: how the lab names them, creating and deleting them with `ip`, and
//! running code inside one without touching the mount namespace (so the host's `/sys/fs/bpf`
//! stays visible, unlike `ip netns exec`).

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Prefix of every lab id (`lum<pid>-<seq>`).
pub const LAB_ID_PREFIX: &str = "lum";

/// The id of the `seq`-th lab made by process `pid`: short, and naming the pid so leftovers
/// of a crashed run can be recognised.
pub fn lab_id(pid: u32, seq: u64) -> String {
    format!("{LAB_ID_PREFIX}{pid}-{seq}")
}

/// If `name` (a lab id, or a netns or directory named after one) belongs to a lab, the lab
/// id and the pid of the process that made it.
pub fn parse_lab_id(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(LAB_ID_PREFIX)?;
    let pid_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let pid: u32 = rest[..pid_len].parse().ok()?;
    let rest = rest[pid_len..].strip_prefix('-')?;
    let seq_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if seq_len == 0 {
        return None;
    }
    let end = LAB_ID_PREFIX.len() + pid_len + 1 + seq_len;
    match name.as_bytes().get(end) {
        None | Some(b'-') => Some((&name[..end], pid)),
        Some(_) => None,
    }
}

/// The underlay (bridge) namespace of a lab. `ul` is therefore not a valid node name.
pub fn underlay_netns_name(lab_id: &str) -> String {
    format!("{lab_id}-ul")
}

/// The namespace of a node.
pub fn node_netns_name(lab_id: &str, node: &str) -> String {
    format!("{lab_id}-{node}")
}

/// The namespace of a pod: the node name, then a `.` (node names cannot hold one), the lab's
/// pod sequence number (what makes it unique), and the start of the pod name for humans.
pub fn pod_netns_name(lab_id: &str, node: &str, seq: u64, pod: &str) -> String {
    let short: String = pod.chars().take(16).collect();
    format!("{lab_id}-{node}.{seq}-{short}")
}

/// Checks a node name: a short DNS label (it becomes part of netns and file names).
pub fn validate_node_name(name: &str) -> Result<()> {
    validate_dns_label(name, 20).with_context(|| format!("invalid node name {name:?}"))?;
    if name == "ul" {
        bail!("node name \"ul\" is reserved for the underlay namespace");
    }
    Ok(())
}

/// Checks a Kubernetes-style DNS-1123 label of at most `max` characters.
pub fn validate_dns_label(name: &str, max: usize) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > max
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        bail!("must be 1-{max} characters of [a-z0-9-], not starting or ending with '-'");
    }
    Ok(())
}

/// The handle of a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Opens a named namespace (close-on-exec).
pub fn open_netns(name: &str) -> Result<OwnedFd> {
    let file = File::open(netns_path(name)).with_context(|| format!("opening netns {name}"))?;
    Ok(file.into())
}

/// Moves the calling thread into the namespace `fd` refers to.
pub fn enter_netns(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: setns on a valid fd only changes the calling thread's network namespace.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread that first joins namespace `name`; the caller's thread never moves.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let fd = open_netns(name)?;
    std::thread::spawn(move || {
        enter_netns(&fd).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread inside netns panicked"))?
}

/// A [`Command`] that runs `program` inside namespace `netns`: `setns` between fork and exec,
/// same mount namespace, its own process group (a terminal's Ctrl-C reaches only the lab, which
/// then tears down in order), stdin from `/dev/null`.
pub fn netns_command(netns: &str, program: impl AsRef<OsStr>) -> Result<Command> {
    let fd = open_netns(netns)?;
    let mut cmd = Command::new(program);
    cmd.stdin(std::process::Stdio::null()).process_group(0);
    // SAFETY: the closure only calls setns, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || enter_netns(&fd));
    }
    Ok(cmd)
}

/// Runs `ip` with `args` in the caller's namespace; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates a named namespace with `lo` up.
pub fn create_netns(name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])
}

/// Names of all namespaces under [`NETNS_DIR`].
pub fn list_netns() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// SIGKILLs every process (other than this one) whose network namespace is `name`; returns
/// their pids. Used before deleting a namespace, so nothing keeps it (and its links) alive.
pub fn kill_processes_in(name: &str) -> Vec<u32> {
    let Ok(target) = std::fs::metadata(netns_path(name)) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in proc_dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if ns.ino() == target.ino() && ns.dev() == target.dev() {
            // SAFETY: plain kill(2) of a pid we just saw in our own lab's namespace.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            killed.push(pid);
        }
    }
    killed
}

/// Kills what runs inside namespace `name`, then deletes it. Missing namespaces are fine.
pub fn delete_netns(name: &str) -> Result<()> {
    if !netns_path(name).exists() {
        return Ok(());
    }
    kill_processes_in(name);
    ip(&["netns", "del", name])
}

/// Whether process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_ids_round_trip_and_prefix_names() {
        let id = lab_id(4242, 7);
        assert_eq!(id, "lum4242-7");
        assert_eq!(parse_lab_id(&id), Some(("lum4242-7", 4242)));
        assert_eq!(
            parse_lab_id(&node_netns_name(&id, "node1")),
            Some(("lum4242-7", 4242))
        );
        assert_eq!(
            parse_lab_id(&underlay_netns_name(&id)),
            Some(("lum4242-7", 4242))
        );
        assert_eq!(
            parse_lab_id(&pod_netns_name(&id, "node1", 3, "client")),
            Some(("lum4242-7", 4242))
        );
    }

    #[test]
    fn foreign_names_are_not_lab_ids() {
        for name in [
            "lum",
            "lum12",
            "lum12-",
            "lum-1",
            "lumx1-2",
            "lum1-2x",
            "cni-1234",
            "lum12-3.4",
        ] {
            assert_eq!(parse_lab_id(name), None, "{name}");
        }
    }

    #[test]
    fn netns_names_are_short_and_distinct() {
        let id = lab_id(4_194_304, 12);
        let node = node_netns_name(&id, "node-with-long-name");
        let pod = pod_netns_name(&id, "node1", 1, "a-very-long-pod-name-that-goes-on");
        assert_eq!(node, "lum4194304-12-node-with-long-name");
        assert_eq!(pod, "lum4194304-12-node1.1-a-very-long-pod-");
        // Same pod name in two namespaces on the same node: the sequence number keeps them apart.
        assert_ne!(
            pod_netns_name(&id, "n", 1, "web"),
            pod_netns_name(&id, "n", 2, "web")
        );
        // A node named like a pod suffix cannot collide: node names have no '.'.
        assert_ne!(
            node_netns_name(&id, "node1-1"),
            pod_netns_name(&id, "node1", 1, "")
        );
        assert_eq!(underlay_netns_name(&id), "lum4194304-12-ul");
    }

    #[test]
    fn node_names_are_validated() {
        assert!(validate_node_name("node1").is_ok());
        for bad in [
            "",
            "ul",
            "Node1",
            "n_1",
            "n.1",
            "-n",
            "n-",
            "abcdefghijklmnopqrstu",
        ] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }
}
