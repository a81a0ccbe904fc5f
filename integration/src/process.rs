//! Processes the lab runs: finding the project's binaries, the [`Spawned`] guard for programs
//! started inside a namespace, and small helpers for waiting with a deadline and reading logs.

use crate::lab::Shared;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Directories searched for the project's binaries, best first: only `$LUMEN_BIN_DIR` when set;
/// else the directory of the running executable's build (`target/<…>/debug`, which holds this
/// crate's own `lab-traffic` under `cargo test`), then `<workspace>/target/debug`.
pub fn bin_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("LUMEN_BIN_DIR") {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // Test binaries live in target/<profile>/deps, programs in target/<profile>.
        for dir in exe.ancestors().skip(1).take(2) {
            dirs.push(dir.to_path_buf());
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    dirs.push(workspace.join("target").join("debug"));
    dirs.dedup();
    dirs
}

/// Finds a project binary (`lumen-agent`, `lumen-cni`, `lab-traffic`) in [`bin_dirs`].
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let dirs = bin_dirs();
    for dir in &dirs {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "{name} not found (searched {}): build the binaries first with `cargo build --workspace --bins`, \
         or point LUMEN_BIN_DIR at the directory holding them",
        searched.join(", ")
    )
}

/// The traffic tool (`lab-traffic`), to run inside pods and nodes.
pub fn traffic_bin() -> Result<PathBuf> {
    find_binary("lab-traffic")
}

/// The last `max_lines` lines of a text file (empty if it cannot be read).
pub fn tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// Waits for `child` up to `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL; reaps the child either way.
pub fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // SAFETY: the child is not reaped yet (try_wait said so), so its pid is still ours.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if let Some(status) = wait_timeout(child, grace)? {
        return Ok(status);
    }
    let _ = child.kill();
    Ok(child.wait()?)
}

/// A program started inside a pod or node namespace, its stdout and stderr going to a log
/// file in the lab directory. Dropping it kills it (SIGKILL) and reaps it; dropping the lab
/// kills it too.
pub struct Spawned {
    child: Child,
    log: PathBuf,
    lab: Arc<Shared>,
    key: u64,
}

impl Spawned {
    pub(crate) fn new(child: Child, log: PathBuf, lab: Arc<Shared>) -> Spawned {
        let key = lab.register_child(child.id());
        Spawned {
            child,
            log,
            lab,
            key,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file holding its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether it has exited (without blocking).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits until its output contains `needle` (e.g. `lab-traffic serve`'s `"listening"` line);
    /// fails, with the output, if it exits first or `timeout` passes.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "process exited ({status}) before printing {needle:?}; output:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {needle:?} in the output after {timeout:?}; output:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for it to exit by itself; returns its status and output.
    pub fn wait(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        match wait_timeout(&mut self.child, timeout)? {
            Some(status) => Ok((status, self.log())),
            None => bail!(
                "still running after {timeout:?}; output so far:\n{}",
                self.log()
            ),
        }
    }

    /// Stops it (SIGTERM, 5 s grace, SIGKILL) and returns its output.
    pub fn stop(mut self) -> Result<String> {
        terminate(&mut self.child, Duration::from_secs(5)).context("stopping process")?;
        Ok(self.log())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.lab.unregister_child(self.key);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("pid", &self.child.id())
            .field("log", &self.log)
            .finish()
    }
}

/// `program args…` inside `netns`, waited for.
pub(crate) fn exec_in<I, S>(
    netns: &str,
    program: impl AsRef<std::ffi::OsStr>,
    args: I,
) -> Result<std::process::Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let program = program.as_ref();
    crate::netns::netns_command(netns, program)?
        .args(args)
        .output()
        .with_context(|| format!("running {} in netns {netns}", program.to_string_lossy()))
}

/// Like [`exec_in`], but a non-zero exit is an error carrying stdout and stderr; returns stdout.
pub(crate) fn exec_ok_in<I, S>(
    netns: &str,
    program: impl AsRef<std::ffi::OsStr>,
    args: I,
) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = exec_in(netns, program.as_ref(), &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let cmdline: Vec<String> = std::iter::once(program.as_ref())
            .chain(args.iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        bail!(
            "`{}` in netns {netns} failed ({}):\nstdout: {}\nstderr: {}",
            cmdline.join(" "),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

/// Starts `program args…` inside `netns` with its output in `<labdir>/logs/<label>-<n>-<program>.log`.
pub(crate) fn spawn_in<I, S>(
    lab: &Arc<Shared>,
    netns: &str,
    label: &str,
    program: impl AsRef<std::ffi::OsStr>,
    args: I,
) -> Result<Spawned>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    lab.ensure_alive()?;
    let program = program.as_ref();
    let base = Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy()
        .into_owned();
    let logs = lab.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{label}-{}-{base}.log", lab.next_seq()));
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = crate::netns::netns_command(netns, program)?
        .args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {base} in netns {netns}"))?;
    Ok(Spawned::new(child, log, lab.clone()))
}
