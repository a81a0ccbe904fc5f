//! The Lumen node agent: loads the eBPF datapath, wires pods in through the CNI plugin's
//! local API, turns the datapath's records into Hubble flows, keeps them in a bounded ring
//! serves the Hubble Observer API, and enforces network policy.

pub mod admin;
pub mod agent;
pub mod config;
pub mod datapath;
pub mod decode;
pub mod devices;
pub mod dns;
pub mod encryption;
pub mod endpoints;
pub mod events;
pub mod flow_proto;
pub mod health;
pub mod identity;
pub mod ingest;
pub mod ipcache;
pub mod l2;
pub mod lbipam;
pub mod localapi;
pub mod metrics;
pub mod node_setup;
pub mod observer;
pub mod operator;
pub mod peer;
pub mod pipeline;
pub mod podcidr;
pub mod policy;
pub mod ring;
pub mod routing;
pub mod state;
