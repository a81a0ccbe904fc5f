//! The application: shared state (configuration and relay client) and the routes.

use crate::{config::Config, error::PageError, pages, relay::Relay, sse};
use axum::{routing::get, Router};
use std::sync::Arc;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct App {
    /// The configuration.
    pub config: Arc<Config>,
    /// The relay client.
    pub relay: Arc<Relay>,
}

impl App {
    /// The state for a configuration; the relay is connected on first use.
    pub fn new(config: Config) -> App {
        let relay = Relay::new(&config.relay.address, config.relay.timeout());
        App {
            config: Arc::new(config),
            relay: Arc::new(relay),
        }
    }
}

/// All routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(pages::flows::page))
        .route("/flows/stream", get(sse::stream))
        .route("/flow/{uuid}", get(pages::detail::page))
        .route("/denied", get(pages::denied::page))
        .route("/status", get(pages::status::page))
        .route("/map", get(pages::map::page))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> PageError {
    PageError::NotFound("no such page".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// An app whose relay address has nothing listening.
    fn unreachable_app() -> (App, String) {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let address = format!("127.0.0.1:{port}");
        let mut config = Config::default();
        config.relay.address = address.clone();
        config.relay.timeout_ms = 500;
        (App::new(config), address)
    }

    async fn get(app: &App, uri: &str) -> (StatusCode, String) {
        let resp = router(app.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn every_page_shows_the_unreachable_relay() {
        let (app, address) = unreachable_app();
        for uri in [
            "/",
            "/?namespace=demo",
            "/denied",
            "/status",
            "/map",
            "/flow/0b7c-11",
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert!(
                body.contains(&format!("relay unreachable at {address}: "))
                    && body.contains("is lumen-relay running?"),
                "{uri}: {body}"
            );
            assert!(body.contains("<nav"), "{uri}: rendered in the layout");
        }
    }

    #[tokio::test]
    async fn the_stream_reports_the_unreachable_relay() {
        let (app, address) = unreachable_app();
        let resp = router(app)
            .oneshot(Request::get("/flows/stream").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("event: relay-error"), "{body}");
        assert!(
            body.contains(&format!("relay unreachable at {address}")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn invalid_filters_are_400_not_500() {
        let (app, _) = unreachable_app();
        for uri in [
            "/?verdict=MAYBE",
            "/?colour=red",
            "/?from_pod=a&namespace=b",
            "/denied?since=someday",
            "/map?direction=up",
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains("Invalid filter"), "{uri}: {body}");
        }
        let resp = router(app)
            .oneshot(
                Request::get("/flows/stream?verdict=MAYBE")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn health_and_unknown_pages() {
        let (app, _) = unreachable_app();
        assert_eq!(get(&app, "/healthz").await, (StatusCode::OK, "ok".into()));
        let (status, body) = get(&app, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no such page"));
        // Not a UUID: no relay request at all.
        let (status, _) = get(&app, "/flow/%3Cscript%3E").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
