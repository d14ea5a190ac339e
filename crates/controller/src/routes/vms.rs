//! The VM registry and ICE configuration as JSON: `GET /api/vms` (admin token),
//! `GET /api/vms/{vmId}` (that VM's viewer token, or the admin token), `GET /api/webrtc/config`
//! (a viewer token, at the session rate; TURN credentials are made for its VM and end no later
//! than its link). Read-only.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::Json;
use vdesk_protocol::{RtcConfig, VmId, VmInfo, VmList};

use crate::access;
use crate::error::AppError;
use crate::extract::VmParam;
use crate::limits::Kind;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/vms", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every VM known, online or not", body = VmList)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<VmList>, AppError> {
    access::admin(&state, &headers)?;
    Ok(Json(VmList {
        vms: state.relay(|r, _| r.vms()),
    }))
}

#[utoipa::path(get, path = "/api/vms/{vmId}", tag = "viewer",
    security(("bearer" = []), ("token" = [])),
    params(("vmId" = VmId, Path, description = "The VM")),
    responses((status = 200, description = "The VM and whether its agent is online", body = VmInfo)))]
pub(crate) async fn one(
    State(state): State<AppState>,
    VmParam(vm): VmParam,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<VmInfo>, AppError> {
    if !access::is_admin(&state, &headers) {
        let claims = access::viewer_claims(&state, &headers, &uri)?;
        access::check_vm(&claims, &vm)?;
    }
    state
        .relay(|r, _| r.vm(&vm))
        .map(Json)
        .ok_or_else(AppError::vm_not_found)
}

#[utoipa::path(get, path = "/api/webrtc/config", tag = "viewer",
    security(("bearer" = []), ("token" = [])),
    responses((status = 200, description = "What the browser passes to `new RTCPeerConnection`", body = RtcConfig)))]
pub(crate) async fn rtc_config(
    State(state): State<AppState>,
    peer: access::Peer,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<RtcConfig>, AppError> {
    let claims = access::viewer_claims(&state, &headers, &uri)?;
    // It mints TURN credentials: at the session rate, per client and per link.
    access::rate_limit(&state, Kind::Config, &headers, peer, &claims)?;
    Ok(Json(RtcConfig {
        ice_servers: state
            .relay(|r, _| r.ice_servers_for(claims.vm.as_str(), Some(claims.expires))),
    }))
}
