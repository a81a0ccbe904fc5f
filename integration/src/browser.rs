//! A real browser for the UI tests and benchmark: `chromedriver` on a free port driving one
//! headless Chromium session over the W3C WebDriver protocol (JSON over HTTP), plus the
//! small blocking HTTP/1.1 client that protocol needs, also used to time pages and read
//! server-sent events.
//!
//! [`Browser`] is RAII: dropping it (also during a panic) saves a screenshot when asked to,
//! deletes the session and kills chromedriver's whole process group, Chromium included.
//!
//! ```no_run
//! use lumen_integration::browser::Browser;
//! # fn main() -> anyhow::Result<()> {
//! let b = Browser::start()?;
//! b.goto("http://127.0.0.1:12000/")?;
//! let rows = b.eval("return document.querySelectorAll('#rows tr').length", vec![])?;
//! # Ok(()) }
//! ```

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `chromedriver`: `$LUMEN_CHROMEDRIVER`, else the first on `PATH`.
pub fn chromedriver_path() -> Option<PathBuf> {
    from_env_or_path("LUMEN_CHROMEDRIVER", &["chromedriver"])
}

/// Chromium: `$LUMEN_CHROMIUM`, else the Debian build behind its wrapper script (the wrapper
/// only adds flags we pass ourselves), else `chromium`/`chromium-browser`/`google-chrome`
/// on `PATH`.
pub fn chromium_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LUMEN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let debian = Path::new("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    from_env_or_path(
        "LUMEN_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
}

fn from_env_or_path(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A chromedriver process and one headless Chromium session.
pub struct Browser {
    driver: Option<Child>,
    base: String,
    session: String,
    profile: PathBuf,
    screenshot_on_drop: Option<PathBuf>,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session (1400×1000).
    pub fn start() -> Result<Browser> {
        let driver_bin = chromedriver_path().ok_or_else(|| anyhow!("chromedriver not found"))?;
        let chromium = chromium_path().ok_or_else(|| anyhow!("chromium not found"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let profile =
            std::env::temp_dir().join(format!("lumen-browser-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile)?;
        let log = std::fs::File::create(profile.join("chromedriver.log"))?;
        let mut cmd = Command::new(&driver_bin);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group, so Drop can kill Chromium too even if chromedriver dies.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", driver_bin.display()))?;
        let mut b = Browser {
            driver: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            profile,
            screenshot_on_drop: None,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = request(
                "GET",
                &format!("{}/status", b.base),
                None,
                Duration::from_secs(2),
            ) {
                if r.json().ok().and_then(|v| v["value"]["ready"].as_bool()) == Some(true) {
                    break;
                }
            }
            if let Some(st) = b.driver.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("chromedriver exited ({st}): {}", b.driver_log());
            }
            if Instant::now() > deadline {
                bail!("chromedriver not ready after 15 s: {}", b.driver_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // Dialogs stay open, so a test can see that one was opened.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--window-size=1400,1000",
                    format!("--user-data-dir={}", b.profile.join("profile").display()),
                ],
            },
        }}});
        let v = b
            .raw("POST", "/session", Some(caps))
            .with_context(|| format!("new session; chromedriver log: {}", b.driver_log()))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {v}"))?
            .to_string();
        b.cmd(
            "POST",
            "/timeouts",
            json!({"script": 30_000, "pageLoad": 30_000}),
        )?;
        Ok(b)
    }

    /// Saves a screenshot to `path` when dropped (after the test's last step, or its panic).
    pub fn screenshot_on_drop(&mut self, path: impl Into<PathBuf>) {
        self.screenshot_on_drop = Some(path.into());
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(self.profile.join("chromedriver.log"))
            .map(|s| s.lines().rev().take(20).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string());
        let r = request(
            method,
            &format!("{}{path}", self.base),
            body.as_deref().map(str::as_bytes),
            Duration::from_secs(60),
        )?;
        let v: Value = r
            .json()
            .with_context(|| format!("{method} {path}: {}", r.text()))?;
        if r.status != 200 {
            bail!(
                "{method} {path}: HTTP {}: {} {}",
                r.status,
                v["value"]["error"],
                v["value"]["message"]
            );
        }
        Ok(v["value"].clone())
    }

    /// A session command (`path` after `/session/<id>`).
    pub fn cmd(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let body = if method == "GET" || method == "DELETE" {
            None
        } else {
            Some(body)
        };
        self.raw(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Navigates and waits for the page load.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", json!({ "url": url }))?;
        Ok(())
    }

    /// The current URL.
    pub fn url(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/url", Value::Null)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Runs a script body (`return …` for a value) with `arguments`.
    pub fn eval(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// Polls `script` every 20 ms until it returns something truthy; returns that value.
    pub fn wait_for(&self, script: &str, timeout: Duration, what: &str) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script, vec![])?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The element id of the first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<String> {
        let v = self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        )?;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no element id in {v}"))
    }

    /// Clicks an element (by id from [`Browser::find`]) as a user would.
    pub fn click(&self, element: &str) -> Result<()> {
        self.cmd("POST", &format!("/element/{element}/click"), json!({}))?;
        Ok(())
    }

    /// The text of an open alert/confirm/prompt dialog, if one is open.
    pub fn dialog_text(&self) -> Result<Option<String>> {
        match self.cmd("GET", "/alert/text", Value::Null) {
            Ok(v) => Ok(Some(v.as_str().unwrap_or_default().to_string())),
            Err(e) if e.to_string().contains("no such alert") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves a PNG screenshot of the viewport.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.cmd("GET", "/screenshot", Value::Null)?;
        let png = base64_decode(v.as_str().unwrap_or_default())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(path) = self.screenshot_on_drop.take() {
            // An open dialog blocks screenshots; dismiss it first.
            let _ = self.cmd("POST", "/alert/dismiss", json!({}));
            match self.screenshot(&path) {
                Ok(()) => eprintln!("screenshot: {}", path.display()),
                Err(e) => eprintln!("screenshot {} failed: {e:#}", path.display()),
            }
        }
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(mut c) = self.driver.take() {
            // SAFETY: kill has no memory preconditions; the group is chromedriver's own.
            unsafe { libc::kill(-(c.id() as libc::pid_t), libc::SIGKILL) };
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let val = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("bad base64 byte {c}"),
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b"=\r\n".contains(b)).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let k = chunk.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + k]);
    }
    Ok(out)
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding removed).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

fn send(method: &str, url: &str, body: Option<&[u8]>, timeout: Duration) -> Result<TcpStream> {
    let (host, path) = split_url(url)?;
    let s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut w = &s;
    w.write_all(head.as_bytes())?;
    if let Some(b) = body {
        w.write_all(b)?;
    }
    Ok(s)
}

fn read_head<R: BufRead>(r: &mut R) -> Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut headers = vec![];
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn body_reader<R: BufRead + Send + 'static>(
    r: R,
    headers: &[(String, String)],
) -> Box<dyn BufRead + Send> {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Box::new(BufReader::new(Chunked {
            inner: r,
            left: 0,
            done: false,
        }))
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Box::new(BufReader::new(r.take(n)))
    } else {
        Box::new(r)
    }
}

/// One blocking request (`Connection: close`); the whole body is read.
pub fn request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response> {
    let s = send(method, url, body, timeout)?;
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    let mut body = vec![];
    body_reader(r, &headers).read_to_end(&mut body)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `GET url`, whole body.
pub fn get(url: &str) -> Result<Response> {
    request("GET", url, None, Duration::from_secs(60))
}

/// A chunked transfer-encoding decoder.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk's data.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("chunk size {line:?}"),
                )
            })?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = n;
        }
        let want = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= got;
        Ok(got)
    }
}

/// A server-sent events stream (`GET url` with `Accept: text/event-stream`).
pub struct EventStream {
    reader: Box<dyn BufRead + Send>,
    /// The response status.
    pub status: u16,
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// `event:` (empty for the default `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl EventStream {
    /// Opens the stream; `timeout` bounds each read.
    pub fn open(url: &str, timeout: Duration) -> Result<EventStream> {
        let s = send("GET", url, None, timeout)?;
        let mut r = BufReader::with_capacity(1 << 20, s);
        let (status, headers) = read_head(&mut r)?;
        Ok(EventStream {
            reader: body_reader(r, &headers),
            status,
        })
    }

    /// The next event (`None` at the end of the stream); comments are skipped.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        let mut ev = Event::default();
        let mut any = false;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(any.then_some(ev));
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if any {
                    return Ok(Some(ev));
                }
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            let v = v.strip_prefix(' ').unwrap_or(v);
            match k {
                "data" => {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(v);
                    any = true;
                }
                "event" => {
                    ev.event = v.to_string();
                    any = true;
                }
                _ => {}
            }
        }
    }
}
