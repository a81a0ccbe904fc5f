//! The Hubble-compatible API.
