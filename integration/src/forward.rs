//! A userspace TCP forwarder from the host (root namespace) into a node namespace: how the demo
//! exposes an agent's API on the host's `127.0.0.1:4244`.
//!
//! The listening socket is made by the caller's thread, in the host namespace; the accepting
//! thread then joins the node namespace, so every upstream socket it connects lives there
//! (a socket keeps the namespace it was made in).

use crate::netns;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running forwarder; dropping it stops it (listener closed, open connections shut down).
pub struct Forward {
    ctl: Arc<ForwardCtl>,
    local_addr: SocketAddr,
}

impl Forward {
    /// The host address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn ctl_weak(&self) -> Weak<ForwardCtl> {
        Arc::downgrade(&self.ctl)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.ctl.stop();
    }
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// What the guard and the lab's teardown use to stop a forwarder (whichever comes first).
#[derive(Default)]
pub(crate) struct ForwardCtl {
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, [TcpStream; 2]>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ForwardCtl {
    /// Stops accepting, shuts every connection down and joins all threads (they live in the
    /// node namespace, which they would otherwise keep alive). Idempotent.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Repeat until no thread is left: the acceptor may add a connection while it winds down.
        loop {
            // Threads first: a pump's connection is registered before the pump, so it is drained below.
            let threads =
                std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
            for [a, b] in self
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .map(|(_, c)| c)
            {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }

    fn track(&self, thread: JoinHandle<()>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }
}

/// Listens on `host_addr` here and forwards to `127.0.0.1:<port>` inside namespace `netns`.
pub(crate) fn start(netns_name: &str, host_addr: impl ToSocketAddrs, port: u16) -> Result<Forward> {
    let listener = TcpListener::bind(host_addr).context("binding the forwarder's host address")?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let fd = netns::open_netns(netns_name)?;
    let ctl = Arc::new(ForwardCtl::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread_ctl = ctl.clone();
    let acceptor = std::thread::Builder::new()
        .name(format!("fwd-{port}"))
        .spawn(move || {
            let entered = netns::enter_netns(&fd);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if ok {
                accept_loop(&listener, port, &thread_ctl);
            }
        })?;
    let entered = ready_rx.recv().context("forwarder thread died")?;
    ctl.track(acceptor);
    if let Err(e) = entered {
        ctl.stop();
        return Err(e).with_context(|| format!("entering netns {netns_name}"));
    }
    Ok(Forward { ctl, local_addr })
}

fn accept_loop(listener: &TcpListener, port: u16, ctl: &Arc<ForwardCtl>) {
    let upstream_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut next_key = 0u64;
    while !ctl.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(25));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(25));
                continue;
            }
        };
        // Connecting from this thread makes the upstream socket in the node namespace.
        let Ok(upstream) = TcpStream::connect_timeout(&upstream_addr, Duration::from_secs(5))
        else {
            continue; // dropping `client` closes it: nothing listens inside the node
        };
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        ) else {
            continue;
        };
        next_key += 1;
        let key = next_key;
        ctl.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, [c3, u3]);
        let remaining = Arc::new(AtomicUsize::new(2));
        for (from, to) in [(client, upstream), (u2, c2)] {
            let (ctl_weak, remaining) = (Arc::downgrade(ctl), remaining.clone());
            let pump = std::thread::spawn(move || {
                if std::io::copy(&mut &from, &mut &to).is_ok() {
                    let _ = to.shutdown(Shutdown::Write);
                } else {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                }
                if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                    if let Some(ctl) = ctl_weak.upgrade() {
                        ctl.conns
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                    }
                }
            });
            ctl.track(pump);
        }
    }
}
