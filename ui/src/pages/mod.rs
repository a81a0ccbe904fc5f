//! The pages: each module has its handler (thin), the plain function that builds its
//! view, and its template. This module has what they share: the layout data and the
//! error page every failure renders as.

pub mod denied;
pub mod detail;
pub mod flows;
pub mod map;
pub mod status;

use crate::error::PageError;
use askama::Template;
use axum::response::{Html, IntoResponse, Response};

/// What the shared layout (`base.html`) needs: title, active navigation entry, banner.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The page title.
    pub title: String,
    /// The active navigation entry: `flows`, `denied`, `map` or `status`.
    pub active: &'static str,
    /// A message shown above the content (relay unreachable, ...).
    pub banner: Option<String>,
}

impl Layout {
    /// A layout without banner.
    pub fn new(title: &str, active: &'static str) -> Layout {
        Layout {
            title: title.to_string(),
            active,
            banner: None,
        }
    }
}

/// The page every error renders as: the layout with the message as banner.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    heading: &'a str,
}

/// The HTML of the error page for `e`.
pub fn error_html(e: &PageError) -> Result<String, askama::Error> {
    ErrorPage {
        layout: Layout {
            title: e.heading().to_string(),
            active: "",
            banner: Some(e.message()),
        },
        heading: e.heading(),
    }
    .render()
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "page failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "page refused");
        }
        match error_html(&self) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => (
                status,
                format!("{}\n(rendering the error page failed: {e})", self.message()),
            )
                .into_response(),
        }
    }
}

/// Renders a template into an HTML response.
pub fn html(t: &impl Template) -> Result<Html<String>, PageError> {
    Ok(Html(t.render()?))
}
