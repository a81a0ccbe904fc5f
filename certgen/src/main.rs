//! `lumen-certgen`: writes the CA and the mTLS certificates of a Lumen deployment (see
//! the library docs for the layout).
//!
//! ```sh
//! lumen-certgen --out /etc/lumen/tls --cluster default --node node1=192.168.1.10 --node node2
//! ```

use clap::Parser;
use lumen_certgen::{generate, NodeSpec, Spec};
use std::path::PathBuf;

/// Generate the CA and the certificates for Lumen agents, the relay and the hubble CLI.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Output directory (created if missing).
    #[arg(long, default_value = "tls")]
    out: PathBuf,
    /// Cluster name, as `cluster.name` in the agents' configuration.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// A node: `NAME` or `NAME=SAN,SAN,...` (extra IP addresses or DNS names). Repeat.
    #[arg(long = "node", value_name = "NAME[=SANS]")]
    nodes: Vec<String>,
    /// Validity of every certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

fn main() {
    let args = Args::parse();
    let nodes = args
        .nodes
        .iter()
        .map(|n| match n.split_once('=') {
            Some((name, sans)) => NodeSpec {
                name: name.into(),
                extra_sans: sans
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            },
            None => NodeSpec {
                name: n.clone(),
                extra_sans: vec![],
            },
        })
        .collect();
    let spec = Spec {
        cluster: args.cluster,
        nodes,
        days: args.days,
    };
    match generate(&spec).and_then(|b| b.write(&args.out, args.force)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
        }
        Err(e) => {
            eprintln!("lumen-certgen: {e}");
            std::process::exit(1);
        }
    }
}
