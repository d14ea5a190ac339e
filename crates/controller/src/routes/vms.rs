//! The VM registry and ICE configuration as JSON: `GET /api/vms`, `GET /api/vms/{vmId}`,
//! `GET /api/webrtc/config`. Read-only.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use vdesk_protocol::{RtcConfig, VmInfo, VmList};

use crate::error::AppError;
use crate::extract::VmParam;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/vms", get(list))
        .route("/api/vms/{vmId}", get(one))
        .route("/api/webrtc/config", get(rtc_config))
}

async fn list(State(state): State<AppState>) -> Json<VmList> {
    Json(VmList {
        vms: state.relay(|r, _| r.vms()),
    })
}

async fn one(
    State(state): State<AppState>,
    VmParam(vm): VmParam,
) -> Result<Json<VmInfo>, AppError> {
    state
        .relay(|r, _| r.vm(&vm))
        .map(Json)
        .ok_or_else(AppError::vm_not_found)
}

async fn rtc_config(State(state): State<AppState>) -> Json<RtcConfig> {
    Json(RtcConfig {
        ice_servers: state.config().ice_servers.clone(),
    })
}
