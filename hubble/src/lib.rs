//! The `hubble` command line of Lumen, compatible with the upstream Hubble CLI (v1.19):
//! `observe`, `status`, `list nodes`, `list namespaces`, against a Lumen agent or relay (or
//! any Hubble server).
//!
//! - [`cli`]: flags and subcommands;
//! - [`filters`]: filter flags → `FlowFilter`s;
//! - [`timeparse`]: `--since`/`--until` and durations;
//! - [`format`]: flow → text in each output format;
//! - [`conn`]: connecting over TCP, unix sockets and TLS;
//! - [`cmd`]: the commands;
//! - [`error`]: the error type.

pub mod cli;
pub mod cmd;
pub mod conn;
pub mod error;
pub mod filters;
pub mod format;
pub mod timeparse;

pub use error::{Error, Result};
