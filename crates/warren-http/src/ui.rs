//! The web UI (issue 10, item 5): plain HTML, CSS and JavaScript embedded
//! in the binary and served beside the API on `--http-listen`; nothing is
//! fetched at run time but the API itself. The page logs in against
//! `/api/whoami` (HTTP Basic, as every API call after it).

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::Sources;

const INDEX: &str = include_str!("../ui/index.html");
const APP: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/style.css");

/// The UI's routes.
pub(crate) fn routes() -> Router<Arc<Sources>> {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route("/index.html", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route(
            "/ui/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
