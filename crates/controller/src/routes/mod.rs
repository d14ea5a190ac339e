//! The HTTP routes of docs/protocol.md, one file per family: pages (HTML), vms (registry and ICE
//! config), session (offer, answer, candidates, end), admin (minting links); plus the event
//! stream (`sse.rs`), the agents' WebSocket (`agent_ws.rs`), `/metrics` and the viewer's files.
//! Handlers only parse, check access, call the relay and render; they hold no state of their own.
//!
//! Every route is a row of [`ROUTES`] and the router is built from that table only, so the
//! table is the whole list: `tests/auth.rs` walks it and checks that every route refuses a
//! request without its credential (and every session route another link's token), so a route
//! added without a check fails that test.

pub mod admin;
pub mod openapi;
pub mod pages;
pub mod session;
pub mod vms;

use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::assets::{self, file, CSS, HTML, JAVASCRIPT, TYPESCRIPT};
use crate::state::AppState;

/// Who may call a route (what the test of the table checks; the handlers' extractors enforce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the pages, the viewer's files, `/healthz`.
    Public,
    /// A viewer token for the VM (`/api/vms/{vmId}` also takes the admin token).
    Viewer,
    /// The viewer token that created session `{id}` (`access::ViewerSession`).
    ViewerSession,
    /// That token, or the agent secret of the session's VM (`access::SessionCaller`).
    ViewerOrAgentSession,
    /// The admin token.
    Admin,
    /// The agents' WebSocket: the agent secret, checked in its `hello`.
    AgentHello,
}

/// One route: method, path (axum syntax), who may call it, and its handler for that method.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

const fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every route the controller serves.
pub static ROUTES: &[Route] = &[
    route(Method::GET, "/", Access::Public, |m| on(m, pages::index)),
    route(Method::GET, "/vm/{vmId}", Access::Public, |m| {
        on(m, pages::viewer)
    }),
    route(Method::GET, "/admin", Access::Public, |m| {
        on(m, || async { file(HTML, assets::ADMIN_HTML) })
    }),
    route(Method::GET, "/assets/admin.js", Access::Public, |m| {
        on(m, || async { file(JAVASCRIPT, assets::ADMIN_JS) })
    }),
    route(Method::GET, "/assets/admin.css", Access::Public, |m| {
        on(m, || async { file(CSS, assets::ADMIN_CSS) })
    }),
    route(Method::GET, "/healthz", Access::Public, |m| {
        on(m, pages::healthz)
    }),
    route(Method::GET, "/assets/vdesk.js", Access::Public, |m| {
        on(m, || async { file(JAVASCRIPT, assets::VDESK_JS) })
    }),
    route(Method::GET, "/assets/input.js", Access::Public, |m| {
        on(m, || async { file(JAVASCRIPT, assets::INPUT_JS) })
    }),
    route(Method::GET, "/assets/stats.js", Access::Public, |m| {
        on(m, || async { file(JAVASCRIPT, assets::STATS_JS) })
    }),
    route(Method::GET, "/assets/wsplayer.js", Access::Public, |m| {
        on(m, || async { file(JAVASCRIPT, assets::WSPLAYER_JS) })
    }),
    route(Method::GET, "/assets/vdesk.d.ts", Access::Public, |m| {
        on(m, || async { file(TYPESCRIPT, assets::VDESK_D_TS) })
    }),
    route(Method::GET, "/assets/viewer.js", Access::Public, |m| {
        on(m, || async { file(JAVASCRIPT, assets::VIEWER_JS) })
    }),
    route(Method::GET, "/assets/viewer.css", Access::Public, |m| {
        on(m, || async { file(CSS, assets::VIEWER_CSS) })
    }),
    route(Method::GET, "/api/vms", Access::Admin, |m| on(m, vms::list)),
    route(Method::GET, "/api/vms/{vmId}", Access::Viewer, |m| {
        on(m, vms::one)
    }),
    route(Method::GET, "/api/webrtc/config", Access::Viewer, |m| {
        on(m, vms::rtc_config)
    }),
    route(Method::POST, "/api/webrtc/session", Access::Viewer, |m| {
        on(m, session::create)
    }),
    route(
        Method::DELETE,
        "/api/webrtc/session/{id}",
        Access::ViewerSession,
        |m| on(m, session::end),
    ),
    route(
        Method::GET,
        "/api/webrtc/session/{id}/answer",
        Access::ViewerSession,
        |m| on(m, session::answer),
    ),
    route(
        Method::POST,
        "/api/webrtc/session/{id}/offer",
        Access::ViewerSession,
        |m| on(m, session::reoffer),
    ),
    route(
        Method::GET,
        "/api/webrtc/session/{id}/events",
        Access::ViewerSession,
        |m| on(m, crate::sse::events),
    ),
    route(
        Method::POST,
        "/api/webrtc/session/{id}/candidate",
        Access::ViewerOrAgentSession,
        |m| on(m, session::candidate),
    ),
    route(
        Method::GET,
        "/api/webrtc/session/{id}/candidates/{side}",
        Access::ViewerOrAgentSession,
        |m| on(m, session::candidates),
    ),
    route(Method::POST, "/api/admin/links", Access::Admin, |m| {
        on(m, admin::mint_link)
    }),
    route(Method::GET, "/api/admin/sessions", Access::Admin, |m| {
        on(m, admin::sessions)
    }),
    route(
        Method::DELETE,
        "/api/admin/sessions/{sessionId}",
        Access::Admin,
        |m| on(m, admin::end_session),
    ),
    route(
        Method::POST,
        "/api/admin/links/{linkId}/revoke",
        Access::Admin,
        |m| on(m, admin::revoke_link),
    ),
    route(Method::GET, "/api/admin/vms", Access::Admin, |m| {
        on(m, admin::vms)
    }),
    route(
        Method::GET,
        "/api/admin/vms/{vmId}/thumbnail",
        Access::Admin,
        |m| on(m, admin::thumbnail),
    ),
    route(Method::GET, "/api/openapi.json", Access::Public, |m| {
        on(m, openapi::serve)
    }),
    route(Method::GET, "/metrics", Access::Admin, |m| {
        on(m, crate::metrics::metrics)
    }),
    route(Method::GET, "/api/agent/ws", Access::AgentHello, |m| {
        on(m, crate::agent_ws::upgrade)
    }),
    route(Method::GET, "/api/vms/{vmId}/stream", Access::Viewer, |m| {
        on(m, crate::wsmedia::viewer::upgrade)
    }),
    route(Method::GET, "/api/agent/media", Access::AgentHello, |m| {
        on(m, crate::wsmedia::agent::upgrade)
    }),
];

/// The router of [`ROUTES`] (routes on the same path with other methods are merged).
pub fn router() -> Router<AppState> {
    ROUTES.iter().fold(Router::new(), |router, r| {
        // Every method of the table has a filter; a bad row fails every test at start-up.
        let filter = MethodFilter::try_from(r.method.clone())
            .unwrap_or_else(|_| panic!("no method filter for {}", r.method));
        router.route(r.path, (r.handler)(filter))
    })
}
