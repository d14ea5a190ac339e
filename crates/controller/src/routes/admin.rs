//! The admin API (needs `Authorization: Bearer <--admin-token>`; off without that flag):
//! `POST /api/admin/links` mints a viewer link; `GET /api/admin/sessions` lists the live sessions. Listing VMs (`GET /api/vms`) is in `vms.rs`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use vdesk_protocol::{ClipboardPolicy, Permission, VmId};

use crate::access;
use crate::cli::{parse_ttl, viewer_link};
use crate::error::AppError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::viewer_token::{self, unix_now};

/// A lifetime: seconds, or text such as `"15m"`, `"1h"`, `"7d"`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Ttl {
    Secs(u64),
    Text(String),
}

/// Body of `POST /api/admin/links`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MintLink {
    pub vm_id: VmId,
    #[serde(default)]
    pub permission: Permission,
    /// Default one hour; at most 30 days.
    pub ttl: Option<Ttl>,
    /// Default `both`.
    #[serde(default)]
    pub clipboard: ClipboardPolicy,
    /// The viewer's display name (at most 40 characters).
    pub name: Option<String>,
}

/// Reply of `POST /api/admin/links`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub url: String,
    pub token: String,
    pub vm_id: VmId,
    pub permission: Permission,
    /// Unix seconds.
    pub expires_at: u64,
    pub clipboard: ClipboardPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[utoipa::path(post, path = "/api/admin/links", tag = "admin", security(("bearer" = [])),
    request_body = MintLink,
    responses((status = 201, description = "A viewer link", body = Link)))]
pub(crate) async fn mint_link(
    State(state): State<AppState>,
    _admin: access::AdminToken,
    headers: HeaderMap,
    ApiJson(body): ApiJson<MintLink>,
) -> Result<Response, AppError> {
    let ttl = match &body.ttl {
        None => 3600,
        Some(Ttl::Secs(s)) => Some(*s)
            .filter(|s| (1..=viewer_token::MAX_TTL_SECS).contains(s))
            .ok_or_else(|| AppError::bad_request("ttl: must be 1 s to 30 days"))?,
        Some(Ttl::Text(t)) => parse_ttl(t).ok_or_else(|| {
            AppError::bad_request("ttl: use seconds or a number with s, m, h or d, up to 30d")
        })?,
    };
    let name = body
        .name
        .as_deref()
        .map(|n| {
            viewer_token::check_name(n).map_err(|e| AppError::bad_request(format!("name: {e}")))
        })
        .transpose()?;
    let expires_at = unix_now() + ttl;
    let extras = viewer_token::Extras {
        clipboard: body.clipboard,
        name: name.clone(),
    };
    let token = viewer_token::mint_with(
        &state.config().secret,
        &body.vm_id,
        body.permission,
        expires_at,
        &extras,
    );
    let base = match &state.config().public_url {
        Some(u) => u.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or("127.0.0.1");
            format!("http://{host}")
        }
    };
    tracing::info!(vm = %body.vm_id, permission = ?body.permission, ttl_s = ttl, "viewer link minted");
    let link = Link {
        url: viewer_link(&base, &body.vm_id, &token),
        token,
        vm_id: body.vm_id,
        permission: body.permission,
        expires_at,
        clipboard: body.clipboard,
        name,
    };
    Ok((StatusCode::CREATED, Json(link)).into_response())
}

/// Reply of `GET /api/admin/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionViews {
    pub sessions: Vec<crate::relay::SessionView>,
}

#[utoipa::path(get, path = "/api/admin/sessions", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every live session: VM, viewer name, permission, \
        whether it connected, and the agent's last bitrate and RTT", body = SessionViews)))]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    _admin: access::AdminToken,
) -> Json<SessionViews> {
    Json(SessionViews {
        sessions: state.relay(|r, _| r.session_views()),
    })
}
