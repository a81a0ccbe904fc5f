//! `l2-bench`: L2 announcement failover on the lab ([`lumen_integration::l2`]): two nodes
//! announce a LoadBalancer IP; five times over, the holder's agent is killed (SIGKILL)
//! and the time until the other node holds the lease, until the client's neighbour entry
//! shows its MAC (gratuitous ARP), and until a TCP exchange through the LB IP succeeds
//! again is measured; the killed agent is restarted before the next round. Prints p50 and
//! max of each, against the 3 s target, and a JSON summary at the end.
//!
//! The defaults (`leaseDuration: 2s`, `leaseRetryPeriod: 200ms`) bound the failover at
//! about 2.2 s plus the gratuitous ARP.

use anyhow::{ensure, Context, Result};
use lumen_integration::l2::{uplink_mac, wait_for, Failover, L2Lab};
use std::time::Duration;

const ROUNDS: usize = 5;
const TARGET: Duration = Duration::from_secs(3);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn p50_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

fn main() -> Result<()> {
    lumen_integration::install_interrupt_handler();
    let c = L2Lab::new("l2-bench")?;
    let mut rounds: Vec<Failover> = vec![];
    for round in 1..=ROUNDS {
        ensure!(!lumen_integration::interrupted(), "interrupted");
        let holder = wait_for("a lease holder", Duration::from_secs(10), || {
            Ok(c.lease_holder())
        })?;
        // The client talks to the holder first, so it has a neighbour entry to update.
        wait_for("TCP through the LB IP", Duration::from_secs(10), || {
            Ok(c.tcp_ok().then_some(()))
        })?;
        let other = c
            .nodes
            .iter()
            .find(|n| n.name() != holder)
            .context("a second node")?;
        let (new_holder, t) =
            c.kill_and_time_failover(&holder, &uplink_mac(other)?, Duration::from_secs(10))?;
        eprintln!(
            "round {round}: {holder} killed, {new_holder} took over: lease {:.0} ms, gratuitous ARP {:.0} ms, reachable {:.0} ms",
            ms(t.lease),
            ms(t.garp),
            ms(t.reachable)
        );
        rounds.push(t);
        // The killed node's agent comes back as a candidate for the next round.
        c.node(&holder).restart_agent()?;
    }
    let mut summary = serde_json::Map::new();
    for (name, pick) in [
        (
            "lease",
            (|t: &Failover| t.lease) as fn(&Failover) -> Duration,
        ),
        ("garp", |t| t.garp),
        ("reachable", |t| t.reachable),
    ] {
        let (p50, max) = p50_max(rounds.iter().map(pick).collect());
        println!(
            "l2-failover {name:<9}  p50 {:>6.0} ms  max {:>6.0} ms  (target <= {} ms, kill -> {name})",
            ms(p50),
            ms(max),
            TARGET.as_millis()
        );
        summary.insert(
            name.into(),
            serde_json::json!({"p50_ms": ms(p50), "max_ms": ms(max)}),
        );
    }
    summary.insert("rounds".into(), ROUNDS.into());
    summary.insert("target_ms".into(), (TARGET.as_millis() as u64).into());
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}
