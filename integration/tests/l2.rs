//! L2 announcements: a LoadBalancer IP on the underlay subnet, selected by a
//! `CiliumL2AnnouncementPolicy`, is answered for by exactly one node (the holder of the
//! service's lease); a client on the underlay reaches the service through it; when the
//! holder's agent is killed, the other node takes the lease over, announces itself with a
//! gratuitous ARP, and the service is reachable again through it within 3 s. A holder
//! that stops cleanly hands over at once.

mod common;

use common::privileged;
use lumen_integration::{
    l2::{uplink_mac, wait_for, L2Lab, LB_IP},
    policy,
};
use std::time::{Duration, Instant};

/// Waits for a holder and checks that only its uplink answers ARP; returns
/// (holder, its MAC, the other node, its MAC).
fn settled(c: &L2Lab) -> (String, String, String, String) {
    let holder = wait_for("a lease holder", Duration::from_secs(10), || {
        Ok(c.lease_holder())
    })
    .unwrap();
    let other = c
        .nodes
        .iter()
        .find(|n| n.name() != holder)
        .unwrap()
        .name()
        .to_string();
    let (holder_mac, other_mac) = (
        uplink_mac(c.node(&holder)).unwrap(),
        uplink_mac(c.node(&other)).unwrap(),
    );
    let replies = wait_for(
        "an ARP reply for the LB IP",
        Duration::from_secs(10),
        || Ok(Some(c.arp_replies()?).filter(|r| !r.is_empty())),
    )
    .unwrap();
    assert_eq!(
        replies,
        vec![holder_mac.clone()],
        "exactly one reply, from the holder {holder}'s uplink ({other}'s is {other_mac})"
    );
    (holder, holder_mac, other, other_mac)
}

#[test]
fn one_node_answers_and_another_takes_over_when_it_dies() {
    if !privileged() {
        return;
    }
    let c = L2Lab::new("l2").expect("lab");

    // (a) One node holds the lease, only its uplink answers the client's ARP, and the
    // agents say so.
    let (holder, holder_mac, other, other_mac) = settled(&c);
    let status = policy::status(c.node(&holder)).unwrap();
    assert_eq!(
        status["l2_announcements"][0]["ip"], LB_IP,
        "the holder's status lists the announcement: {status}"
    );
    assert_eq!(
        status["l2_announcements"][0]["lease"],
        "cilium-l2announce-demo-web"
    );
    let cli = policy::lumen_cli(c.node(&holder), &["status"]).unwrap();
    assert!(
        cli.contains(&format!(
            "L2 announcement:       {LB_IP} on eth0 (lease cilium-l2announce-demo-web, service demo/web)"
        )),
        "{cli}"
    );
    let other_status = policy::status(c.node(&other)).unwrap();
    assert_eq!(
        other_status["l2_announcements"],
        serde_json::json!([]),
        "{other_status}"
    );

    // (b) The client reaches the service through the LB IP, via the holder.
    wait_for(
        "a TCP exchange with the LB IP",
        Duration::from_secs(10),
        || Ok(c.tcp_ok().then_some(())),
    )
    .unwrap();
    assert_eq!(c.neighbour().unwrap(), Some(holder_mac));

    // (c) The holder's agent dies; the other node takes over.
    let (new_holder, t) = c
        .kill_and_time_failover(&holder, &other_mac, Duration::from_secs(5))
        .unwrap();
    eprintln!(
        "l2 failover: lease taken over after {:.0} ms, gratuitous ARP seen after {:.0} ms, service reachable after {:.0} ms",
        t.lease.as_secs_f64() * 1e3,
        t.garp.as_secs_f64() * 1e3,
        t.reachable.as_secs_f64() * 1e3
    );
    assert_eq!(new_holder, other);
    assert!(
        t.reachable <= Duration::from_secs(3),
        "failover took {:?} (target <= 3 s)",
        t.reachable
    );
    // The dead agent's node stopped answering once its entry expired.
    assert_eq!(
        c.arp_replies().unwrap(),
        vec![other_mac.clone()],
        "only the new holder answers"
    );
    let status = policy::status(c.node(&other)).unwrap();
    assert_eq!(status["l2_announcements"][0]["ip"], LB_IP, "{status}");

    // The old holder's agent comes back: it does not take the address back while the
    // new holder is alive.
    c.node(&holder).restart_agent().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.lease_holder().as_deref(), Some(other.as_str()));
    assert_eq!(
        c.arp_replies().unwrap(),
        vec![other_mac],
        "still only the new holder answers"
    );
}

#[test]
fn a_holder_that_stops_cleanly_hands_over_at_once() {
    if !privileged() {
        return;
    }
    let c = L2Lab::new("l2-stop").expect("lab");
    let (holder, _, other, other_mac) = settled(&c);
    let stopping = Instant::now();
    c.node(&holder).stop_agent().unwrap();
    // The agent released the lease on SIGTERM: no waiting for it to expire.
    let new_holder = wait_for("the lease to move", Duration::from_secs(5), || {
        Ok(c.lease_holder().filter(|h| *h != holder))
    })
    .unwrap();
    let moved = stopping.elapsed();
    assert_eq!(new_holder, other);
    eprintln!(
        "l2 handover on SIGTERM: lease moved after {:.0} ms",
        moved.as_secs_f64() * 1e3
    );
    assert!(
        moved < Duration::from_secs(1),
        "took {moved:?}: half the lease duration or more, so it was not released"
    );
    assert_eq!(
        c.arp_replies().unwrap(),
        vec![other_mac],
        "the stopped node withdrew its entry at once"
    );
    let log = std::fs::read_to_string(c.node(&holder).agent_log()).unwrap();
    assert!(log.contains("L2 lease released"), "{log}");
    c.node(&holder).restart_agent().unwrap();
}
