//! The UI's configuration: one YAML file (camelCase keys, unknown keys refused), every
//! field optional with the defaults documented here.
//!
//! ```yaml
//! listenAddress: 127.0.0.1:12000   # internal by default
//! relay:
//!   address: localhost:4245        # as hubble's --server: host:port or unix:///path
//!   timeoutMs: 2000                # connect and per-request timeout
//! maxRows: 500                     # rows on the flows page (live rows included)
//! mapFlows: 2000                   # flows read to draw the service map
//! deniedFlows: 2000                # denied flows read to build the denied worklist
//! ```

use serde::Deserialize;
use std::{path::Path, time::Duration};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown keys.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The YAML error.
        source: serde_yaml::Error,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Where the HTTP server listens (default `127.0.0.1:12000`).
    pub listen_address: String,
    /// The relay to read flows from.
    pub relay: RelayConfig,
    /// How many rows the flows page shows at most (default 500).
    pub max_rows: u64,
    /// How many flows are read to draw the map (default 2000).
    pub map_flows: u64,
    /// How many denied flows are read for the denied page (default 2000).
    pub denied_flows: u64,
}

/// How to reach the relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RelayConfig {
    /// `host:port` or `unix:///path`, as hubble's `--server` (default `localhost:4245`).
    pub address: String,
    /// Connect and request timeout in milliseconds (default 2000).
    pub timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_address: "127.0.0.1:12000".into(),
            relay: RelayConfig::default(),
            max_rows: 500,
            map_flows: 2000,
            denied_flows: 2000,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            address: hubble_cli::conn::DEFAULT_SERVER.into(),
            timeout_ms: 2000,
        }
    }
}

impl RelayConfig {
    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Config {
    /// Parses and checks YAML text (`path` only names it in errors).
    pub fn from_yaml(text: &str, path: &str) -> Result<Config, ConfigError> {
        // An empty file is the defaults, as a file with only comments is.
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source,
            })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and checks a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Config::from_yaml(&text, &name)
    }

    /// Checks the values: addresses parse, bounds are positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_address
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                ConfigError::Invalid(format!("listenAddress {:?}: {e}", self.listen_address))
            })?;
        hubble_cli::conn::ServerAddr::parse(&self.relay.address)
            .map_err(|e| ConfigError::Invalid(format!("relay.address: {e}")))?;
        for (name, v) in [
            ("maxRows", self.max_rows),
            ("mapFlows", self.map_flows),
            ("deniedFlows", self.denied_flows),
            ("relay.timeoutMs", self.relay.timeout_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_yaml("", "x").unwrap();
        assert_eq!(c.listen_address, "127.0.0.1:12000");
        assert_eq!(c.relay.address, "localhost:4245");
        assert_eq!(c.max_rows, 500);
        assert_eq!(c.map_flows, 2000);
        assert_eq!(c.relay.timeout(), Duration::from_secs(2));
    }

    #[test]
    fn camel_case_and_partial() {
        let c = Config::from_yaml(
            "listenAddress: 0.0.0.0:8080\nrelay:\n  address: unix:///run/relay.sock\nmaxRows: 50\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.listen_address, "0.0.0.0:8080");
        assert_eq!(c.relay.address, "unix:///run/relay.sock");
        assert_eq!(c.relay.timeout_ms, 2000);
        assert_eq!(c.max_rows, 50);
        assert_eq!(c.map_flows, 2000);
    }

    #[test]
    fn refuses_unknown_and_invalid() {
        assert!(matches!(
            Config::from_yaml("max_rows: 5\n", "x"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_yaml("maxRows: 0\n", "x"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::from_yaml("listenAddress: nowhere\n", "x"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::from_yaml("relay: {address: 'host:port'}\n", "x"),
            Err(ConfigError::Invalid(_))
        ));
    }
}
