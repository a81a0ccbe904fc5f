//! Running `lumen-ui` for a lab, in the host's network namespace, reading from a relay.

use crate::{process, Lab, Relay};
use anyhow::{bail, Context, Result};
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

/// A running UI; dropping it stops it.
pub struct Ui {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Ui {
    /// Writes `<labdir>/ui.yaml` and starts the UI on `listen` (`None`: a free port on
    /// 127.0.0.1) against `relay`; returns once it answers `/healthz`'s TCP port.
    pub fn start(lab: &Lab, relay: &Relay, listen: Option<&str>, extra_yaml: &str) -> Result<Ui> {
        let listen = match listen {
            Some(a) => a.to_string(),
            None => format!(
                "127.0.0.1:{}",
                TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
            ),
        };
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen address {listen:?}"))?;
        let yaml = format!(
            "listenAddress: {listen:?}\nrelay:\n  address: \"{}\"\n{extra_yaml}",
            relay.addr()
        );
        let config = lab.dir().join("ui.yaml");
        std::fs::write(&config, yaml)?;
        let log = lab.dir().join("ui.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let bin = process::find_binary("lumen-ui")?;
        let child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut ui = Ui {
            child: Some(child),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = ui.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "lumen-ui exited early ({status}); log:\n{}",
                    process::tail(&ui.log, 40)
                );
            }
            if TcpStream::connect(addr).is_ok() {
                return Ok(ui);
            }
            if Instant::now() >= deadline {
                bail!(
                    "lumen-ui not listening on {addr} after 10 s; log:\n{}",
                    process::tail(&ui.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
