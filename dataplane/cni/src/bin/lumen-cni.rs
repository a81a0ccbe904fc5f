//! `lumen-cni`: the CNI plugin binary. Everything is in [`lumen_cni::plugin`]; this
//! only reads stdin, runs it, prints the answer and exits with its code.

use std::io::{Read, Write};

use lumen_cni::plugin;
use lumen_cni::spec::CniError;

fn main() {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => plugin::run(&|key| std::env::var(key).ok(), &stdin),
        Err(e) => plugin::failed(CniError::Stdin(e)),
    };
    let mut stdout = std::io::stdout().lock();
    // Nothing useful is left to do if the runtime closed our stdout.
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    std::process::exit(outcome.exit_code);
}
