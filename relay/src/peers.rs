//! Peer discovery: feeds the [`Pool`] from the configured static list, or from an agent's
//! `peer.Peer/Notify` stream (re-subscribing with backoff when it breaks). Addresses pass
//! through `nodeAddresses` overrides ([`RelayConfig::address_for`]).

use crate::{config::RelayConfig, dial::Target, pool::Pool};
use lumen_api::peer::{peer_client::PeerClient, ChangeNotification, ChangeNotificationType};
use std::sync::Arc;

/// Applies one notification to the pool.
pub fn apply(cfg: &RelayConfig, pool: &Pool, n: &ChangeNotification) {
    let name = cfg.full_name(&n.name);
    match n.r#type() {
        ChangeNotificationType::PeerAdded | ChangeNotificationType::PeerUpdated => {
            let address = cfg.address_for(&name, &n.address);
            tracing::info!(node = %name, %address, "peer {:?}", n.r#type());
            pool.upsert(&name, &address);
        }
        ChangeNotificationType::PeerDeleted => {
            tracing::info!(node = %name, "peer deleted");
            pool.remove(&name);
        }
        ChangeNotificationType::Unknown => {}
    }
}

/// Starts discovery; runs until the pool is dropped (static peers: returns at once).
pub fn start(cfg: Arc<RelayConfig>, pool: Pool) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.peer_service.is_empty() {
        for p in &cfg.peers {
            let name = cfg.full_name(&p.name);
            pool.upsert(&name, &cfg.address_for(&name, &p.address));
        }
        return None;
    }
    Some(tokio::spawn(follow_peer_service(cfg, pool)))
}

async fn follow_peer_service(cfg: Arc<RelayConfig>, pool: Pool) {
    let dialer = pool.dialer();
    let mut attempt = 0u32;
    loop {
        let result: Result<(), String> = async {
            let target = Target::parse(&cfg.peer_service).map_err(|e| e.to_string())?;
            let channel = dialer.dial(&target).await.map_err(|e| e.to_string())?;
            let mut stream = PeerClient::new(channel)
                .notify(lumen_api::peer::NotifyRequest {})
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            tracing::info!(peer_service = %cfg.peer_service, "following the peer service");
            attempt = 0;
            while let Some(n) = stream
                .message()
                .await
                .map_err(|e| e.message().to_string())?
            {
                apply(&cfg, &pool, &n);
            }
            Err("stream ended".into())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(peer_service = %cfg.peer_service, error = %e, "peer service unavailable; retrying");
        }
        tokio::time::sleep(cfg.retry_backoff.delay(attempt, 0.5)).await;
        attempt = attempt.saturating_add(1);
    }
}
