//! The admin API (needs `Authorization: Bearer <--admin-token>`; off without that flag):
//! `POST /api/admin/links` mints a viewer link (with a QR code of its URL), `POST
//! /api/admin/links/{linkId}/revoke` revokes one; `GET /api/admin/sessions` lists the live
//! sessions, `DELETE /api/admin/sessions/{sessionId}` ends one; `GET /api/admin/vms` lists the
//! VMs with their agents' version, uptime and encoders, `GET /api/admin/vms/{vmId}/thumbnail`
//! serves a VM's thumbnail. The `/admin` page (`pages.rs`) is built on these. The plain VM list
//! (`GET /api/vms`) is in `vms.rs`.

use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use vdesk_protocol::{ClipboardPolicy, ErrorCode, Permission, VmId};

use crate::access::{self, AdminSession};
use crate::cli::{parse_ttl, viewer_link};
use crate::error::AppError;
use crate::extract::ApiJson;
use crate::extract::VmParam;
use crate::relay::{Thumbnail, ThumbnailState, VmView};
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
    /// The link's id (the token's `n`): what `POST /api/admin/links/{linkId}/revoke` takes.
    pub id: String,
    /// The URL as a QR code (SVG), for a phone's camera.
    pub qr_svg: String,
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
    let url = viewer_link(&base, &body.vm_id, &token);
    let id = viewer_token::verify(&state.config().secret, &token, unix_now())
        .map(|c| c.id)
        .unwrap_or_default();
    let link = Link {
        qr_svg: crate::qr::svg(&url),
        url,
        token,
        id,
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
        whether it connected, who holds control, the transport, and the agent's last bitrate and \
        RTT; WebSocket viewers too", body = SessionViews)))]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    _admin: access::AdminToken,
) -> Json<SessionViews> {
    let mut sessions = state.relay(|r, _| r.session_views());
    sessions.extend(state.wsmedia().session_views());
    sessions.sort_by(|a, b| (&a.vm_id, &a.session_id).cmp(&(&b.vm_id, &b.session_id)));
    Json(SessionViews { sessions })
}

/// `{linkId}`: a viewer link's id, 16 lowercase hex digits (the token's `n`). The admin token
/// is checked first.
#[derive(Debug)]
pub struct AdminLinkId(pub String);

impl FromRequestParts<AppState> for AdminLinkId {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        access::admin(state, &parts.headers)?;
        let raw = crate::extract::param(parts, "linkId").await?;
        if raw.len() == 16 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(raw))
        } else {
            Err(AppError::bad_request(
                "linkId: must be a link's id, 16 lowercase hex digits (the id of POST /api/admin/links)",
            ))
        }
    }
}

/// Reply of `POST /api/admin/links/{linkId}/revoke`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub link_id: String,
    /// Live sessions of the link that were ended (`link_revoked`).
    pub sessions_ended: usize,
    /// Unix seconds until which the link is refused (when it would have expired).
    pub refused_until: u64,
}

#[utoipa::path(post, path = "/api/admin/links/{linkId}/revoke", tag = "admin",
    security(("bearer" = [])),
    params(("linkId" = String, Path, description = "The link's id (16 lowercase hex digits)",
        pattern = "^[0-9a-f]{16}$")),
    responses((status = 200, description = "The link is revoked: its sessions ended, and it is \
        refused until it would have expired (on every controller of a cluster)", body = Revoked),
        (status = 503, description = "In a cluster, NATS did not take the revocation: it holds \
        on this controller only; try again")))]
pub(crate) async fn revoke_link(
    State(state): State<AppState>,
    AdminLinkId(link_id): AdminLinkId,
) -> Result<Json<Revoked>, AppError> {
    let (sessions_ended, refused_until) = state.revoke_link(&link_id)?;
    // In a cluster, every other controller ends the link's sessions and refuses it too.
    if let Some(cluster) = state.cluster() {
        cluster.publish_revocation(&link_id).await?;
    }
    Ok(Json(Revoked {
        link_id,
        sessions_ended,
        refused_until,
    }))
}

#[utoipa::path(delete, path = "/api/admin/sessions/{sessionId}", tag = "admin",
    security(("bearer" = [])),
    params(("sessionId" = String, Path, description = "The session (32 lowercase hex digits)",
        pattern = "^[0-9a-f]{32}$")),
    responses((status = 204, description = "The session ended (`ended_by_admin`); its viewer \
        and agent were told")))]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    AdminSession(id): AdminSession,
) -> Result<StatusCode, AppError> {
    state.relay(|r, now| r.end_session_by_admin(&id, now))?;
    tracing::info!(session = %id, "session ended by the operator");
    Ok(StatusCode::NO_CONTENT)
}

/// Reply of `GET /api/admin/vms`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VmViews {
    pub vms: Vec<VmView>,
}

#[utoipa::path(get, path = "/api/admin/vms", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every VM known: online or not, its agent's version, \
        start time, uptime and encoders, and its number of live sessions", body = VmViews)))]
pub(crate) async fn vms(
    State(state): State<AppState>,
    _admin: access::AdminToken,
) -> Json<VmViews> {
    Json(VmViews {
        vms: state.relay(|r, _| r.vm_views()),
    })
}

/// How long the thumbnail route waits for the agent's answer.
const THUMBNAIL_WAIT: Duration = Duration::from_secs(3);

fn jpeg(t: &Thumbnail) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // The bytes come from an agent: never anything but an image.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; sandbox"),
            ),
        ],
        axum::body::Bytes::copy_from_slice(&t.jpeg),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/admin/vms/{vmId}/thumbnail", tag = "admin",
    security(("bearer" = [])),
    params(("vmId" = VmId, Path, description = "The VM")),
    responses((status = 200, description = "A JPEG still of the VM's screen, 320 pixels wide, \
        at most a few seconds old (asked of the agent when the cached one is older)",
        content_type = "image/jpeg", body = Vec<u8>)))]
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    _admin: access::AdminToken,
    VmParam(vm): VmParam,
) -> Result<Response, AppError> {
    let asked_at = Instant::now();
    let last = match state.relay(|r, now| r.thumbnail(&vm, now))? {
        ThumbnailState::Fresh(t) => return Ok(jpeg(&t)),
        ThumbnailState::Unsupported => {
            return Err(AppError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "this VM's agent makes no thumbnails (it is older than them: upgrade it)",
            ))
        }
        ThumbnailState::Asked(last) => last,
    };
    // Whatever arrives from now on answers this call (an answer that came before it would be
    // the fresh cached one, or would have let this call ask anew).
    let since = asked_at;
    let deadline = asked_at + THUMBNAIL_WAIT;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match state.relay(|r, _| r.thumbnail_since(&vm, since)) {
            Some(Ok(t)) => return Ok(jpeg(&t)),
            Some(Err(why)) => {
                return Err(AppError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!("the VM's agent sent a thumbnail that was refused: {why}"),
                ))
            }
            None => {}
        }
    }
    match last {
        Some(t) => Ok(jpeg(&t)),
        None => Err(AppError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "the VM's agent sent no thumbnail in time; try again",
        )),
    }
}
