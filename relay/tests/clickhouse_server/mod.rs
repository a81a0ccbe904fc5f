//! A real ClickHouse server for the ClickHouse backend's tests and bench (and the relay's
//! lab test, `integration/tests/history_clickhouse.rs`, which includes this file: it
//! depends on `std` alone): Debian's `clickhouse-server` started as a child process with
//! its own config, ports and data in a temporary directory; killed and removed when the
//! guard drops (panics included).
// Each including crate uses a different part.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// A fresh directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "lumen-clickhouse-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("clickhouse scratch directory");
        Scratch(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where Debian and upstream packages put the server.
const CANDIDATES: &[(&str, Option<&str>)] = &[
    ("/usr/sbin/clickhouse-server", None),
    ("/usr/bin/clickhouse-server", None),
    ("/usr/bin/clickhouse", Some("server")),
];

/// The server binary (and the subcommand it needs), if installed.
fn binary() -> Option<(PathBuf, Option<&'static str>)> {
    CANDIDATES
        .iter()
        .find(|(p, _)| Path::new(p).exists())
        .map(|(p, sub)| (PathBuf::from(p), *sub))
}

/// True when a server can be started. Without `clickhouse-server` the test is skipped,
/// unless `LUMEN_REQUIRE_PRIVILEGED=1` (CI, `cargo xtask test`), where that is a failure.
pub fn available() -> bool {
    if binary().is_some() {
        return true;
    }
    if std::env::var("LUMEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!(
            "LUMEN_REQUIRE_PRIVILEGED=1 but clickhouse-server is not installed (cargo xtask setup)"
        );
    }
    eprintln!("skipped: clickhouse-server is not installed (apt-get install clickhouse-server)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running (or stopped) server; its data survives [`ClickHouseServer::stop`].
pub struct ClickHouseServer {
    // Dropped after the server is stopped (`Drop` below).
    dir: Scratch,
    child: Option<Child>,
    http_port: u16,
}

impl ClickHouseServer {
    /// Writes a config in a fresh directory and starts the server; waits until it answers.
    pub fn start() -> ClickHouseServer {
        let dir = Scratch::new();
        let (http_port, tcp_port) = (free_port(), free_port());
        let root = dir.path().display().to_string();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>1073741824</mark_cache_size>
</yandex>
"#
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password>
    <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota>
  </default></users>
  <quotas><default></default></quotas>
</yandex>
"#;
        std::fs::write(dir.path().join("config.xml"), config).expect("config.xml");
        std::fs::write(dir.path().join("users.xml"), users).expect("users.xml");
        let mut s = ClickHouseServer {
            dir,
            child: None,
            http_port,
        };
        s.restart();
        s
    }

    /// The HTTP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills the server (as a crash would); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server on the same ports and data; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let (bin, sub) = binary().expect("clickhouse-server installed");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let mut cmd = Command::new(bin);
        if let Some(sub) = sub {
            cmd.arg(sub);
        }
        let child = cmd
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ping() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("clickhouse-server exited ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "clickhouse-server did not answer within 60 s: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The answer to `sql` (sent as the body of an HTTP POST), e.g. `TabSeparated` rows;
    /// `None` when the server cannot be reached or refuses it.
    pub fn query(&self, sql: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let req = format!(
            "POST / HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        let status = head.lines().next()?;
        (status.starts_with("HTTP/1.") && status.contains(" 200 ")).then(|| body.to_string())
    }

    /// `SELECT 1` over HTTP.
    fn ping(&self) -> bool {
        self.query("SELECT 1").as_deref() == Some("1\n")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.stop();
    }
}
