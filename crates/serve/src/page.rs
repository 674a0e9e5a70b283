//! The chat page at `/`: one self-contained HTML file (no CDN, works offline) that talks to
//! `/v1/models` and the capped `/chat/api/*` endpoints with the user's API key.

use axum::response::Html;

const PAGE: &str = include_str!("../static/chat.html");

pub async fn index() -> Html<&'static str> {
    Html(PAGE)
}
