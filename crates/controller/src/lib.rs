//! vdesk's controller: the HTTP server that serves the viewer and relays WebRTC signalling
//! between browsers and the agents inside VMs. No media and no GStreamer pass through here.
//!
//! [`app`] builds the router over an [`AppState`]; [`serve`] runs it on a listener with the
//! relay's ticker and a graceful shutdown. The signalling logic is the socket-free
//! [`relay::Relay`]; everything else adapts HTTP, SSE and WebSocket to it.

pub mod access;
pub mod agent_ws;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod error;
pub mod extract;
mod io_with;
pub mod limits;
pub mod metrics;
pub mod qr;
pub mod relay;
pub mod routes;
pub mod server;
pub mod sse;
pub mod state;
pub mod tls;
pub mod turn;
pub mod viewer_token;
pub mod wsmedia;

use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::info;
use vdesk_protocol::ErrorCode;

pub use auth::{AgentToken, ControllerSecret};
pub use config::{Args, Config, ConfigError};
pub use error::AppError;
pub use state::AppState;

/// How often the relay checks idle sessions and expires tombstones.
pub const TICK: Duration = Duration::from_secs(1);

/// Every route of docs/protocol.md (the table [`routes::ROUTES`]), with JSON errors for unknown
/// routes and methods, and `Referrer-Policy: no-referrer` on every response.
pub fn app(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    let mut router = routes::router();
    if let Some(cluster) = state.cluster() {
        router = router.layer(axum::middleware::from_fn_with_state(
            (state.clone(), cluster.clone()),
            cluster::route,
        ));
    }
    Router::new()
        .merge(router)
        .fallback(|method: Method, uri: Uri| async move {
            AppError::not_found(format!("no route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::BadRequest,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        // Viewer links carry their token in the address: no page of ours, and no answer, may
        // hand it to another site in a `Referer`.
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        // Refusals (404, 503...) are normal answers, logged by the relay; not tower's errors.
        // The span names the path only: a query may carry a viewer token (`?token=`).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                })
                .on_failure(()),
        )
        .with_state(state)
}

/// Serves [`app`] on `listener` (over TLS when the configuration has a certificate) with the
/// configured connection limits, until `shutdown` completes; then every session ends with
/// `shutting_down`, agents and viewers are told, and their connections close.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ticker = tokio::spawn(state.clone().run_ticker(TICK));
    let on_shutdown = state.clone();
    let config = state.config();
    let limits = server::Limits {
        header_timeout: config.header_timeout,
        max_conns_per_ip: config.max_conns_per_ip,
        tls: config.tls.clone(),
    };
    let result = server::run(listener, app(state), limits, shutdown, move || {
        info!("shutting down: ending every session");
        on_shutdown.shutdown();
    })
    .await;
    ticker.abort();
    result
}
