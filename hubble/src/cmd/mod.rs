//! The commands: `observe`, `status`, `list`.

pub mod list;
pub mod observe;
pub mod status;

use crate::{cli::Cli, error::Result};
use lumen_api::observer::observer_client::ObserverClient;
use tonic::transport::Channel;

/// Connects an Observer client as the global flags say.
pub async fn observer(cli: &Cli) -> Result<ObserverClient<Channel>> {
    let ch = crate::conn::connect(&cli.server, &cli.tls(), cli.timeout).await?;
    Ok(ObserverClient::new(ch))
}

/// Formats `n` with thousands separators (`8190` → `8,190`).
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration as Go prints a `time.Duration` rounded to seconds (`1h2m3s`, `45s`, `0s`).
pub fn go_duration_secs(ns: u64) -> String {
    let secs = (ns + 500_000_000) / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}
