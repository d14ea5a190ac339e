//! The viewer's files (`web/`), compiled into the binary and served with their content type and
//! `Cache-Control: no-cache`, so an upgraded controller never serves a stale viewer. It serves
//! these files only (the viewer's eight, the admin page's three): no directory is ever read at
//! run time.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

pub const VIEWER_HTML: &str = include_str!("../../../web/viewer.html");
pub const VIEWER_JS: &str = include_str!("../../../web/viewer.js");
pub const VIEWER_CSS: &str = include_str!("../../../web/viewer.css");
pub const VDESK_JS: &str = include_str!("../../../web/vdesk.js");
pub const INPUT_JS: &str = include_str!("../../../web/input.js");
pub const STATS_JS: &str = include_str!("../../../web/stats.js");
pub const WSPLAYER_JS: &str = include_str!("../../../web/wsplayer.js");
pub const VDESK_D_TS: &str = include_str!("../../../web/vdesk.d.ts");
pub const ADMIN_HTML: &str = include_str!("../../../web/admin.html");
pub const ADMIN_JS: &str = include_str!("../../../web/admin.js");
pub const ADMIN_CSS: &str = include_str!("../../../web/admin.css");

pub const HTML: &str = "text/html; charset=utf-8";
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";
/// TypeScript has no registered type; browsers show `text/plain` instead of downloading it.
pub const TYPESCRIPT: &str = "text/plain; charset=utf-8";

/// A static text file with its content type, never cached without revalidation.
pub fn file(content_type: &'static str, body: impl Into<Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body.into(),
    )
        .into_response()
}
