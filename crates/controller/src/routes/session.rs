//! The session routes: create (the offer), a new offer on it (ICE restart), answer, candidate
//! (post), candidates (poll) and end (`DELETE`). The event stream is in `sse.rs`. Each route asks
//! `access.rs` whether its caller may (viewer token of the session, or the agent secret for
//! `from: "vm"` and `candidates/browser`) and charges rate limits; everything else is the
//! relay's business.

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use vdesk_protocol::{
    CandidateList, CreateSession, PostCandidate, SessionCreated, SessionDescription, Side,
};

use crate::access::{self, Peer};
use crate::error::AppError;
use crate::extract::{ApiJson, SessionParam, SideParam};
use crate::limits::Kind;
use crate::relay::Grant;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/webrtc/session", post(create))
        .route("/api/webrtc/session/{id}", delete(end))
        .route("/api/webrtc/session/{id}/answer", get(answer))
        .route("/api/webrtc/session/{id}/offer", post(reoffer))
        .route("/api/webrtc/session/{id}/candidate", post(candidate))
        .route(
            "/api/webrtc/session/{id}/candidates/{side}",
            get(candidates),
        )
}

fn session_url(id: &vdesk_protocol::SessionId) -> String {
    format!("/api/webrtc/session/{id}")
}

async fn create(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    uri: Uri,
    req: Request,
) -> Result<Response, AppError> {
    // The token is checked before the body is read: strangers cost us no parsing.
    let claims = access::viewer_claims(&state, &headers, &uri)?;
    let ApiJson(body) = ApiJson::<CreateSession>::from_request(req, &state).await?;
    access::check_vm(&claims, &body.vm_id)?;
    access::rate_limit(&state, Kind::CreateSession, &headers, peer, &claims)?;
    let vm_id = body.vm_id;
    let vm = vm_id.clone();
    let grant = Grant {
        permission: claims.permission,
        token_id: Some(claims.id),
    };
    let session_id = state.relay(move |r, now| r.create_session_as(vm, body.offer, &grant, now))?;
    let location = session_url(&session_id);
    let created = SessionCreated {
        grant: vdesk_protocol::SessionGrant {
            permission: claims.permission,
            ..Default::default()
        },
        events_url: format!("{location}/events"),
        session_id,
        vm_id,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

async fn answer(
    State(state): State<AppState>,
    SessionParam(id): SessionParam,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, AppError> {
    access::viewer_session(&state, &headers, &uri, &id)?;
    Ok(match state.relay(|r, now| r.answer(&id, now))? {
        Some(answer) => Json(answer).into_response(),
        None => (StatusCode::ACCEPTED, Json(json!({"status": "pending"}))).into_response(),
    })
}

/// A new offer on an existing session (ICE restart); the answer comes as an `answer` event.
async fn reoffer(
    State(state): State<AppState>,
    SessionParam(id): SessionParam,
    ApiJson(offer): ApiJson<SessionDescription>,
) -> Result<Response, AppError> {
    state.relay(|r, now| r.reoffer(&id, offer, now))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "pending"}))).into_response())
}

async fn candidate(
    State(state): State<AppState>,
    SessionParam(id): SessionParam,
    peer: Peer,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(body): ApiJson<PostCandidate>,
) -> Result<StatusCode, AppError> {
    if body.from == Side::Vm {
        access::agent_session(&state, &headers, &id)?;
    } else {
        let claims = access::viewer_session(&state, &headers, &uri, &id)?;
        access::rate_limit(&state, Kind::Candidate, &headers, peer, &claims)?;
    }
    state.relay(|r, now| r.post_candidate(&id, body.from, body.candidate, now))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn candidates(
    State(state): State<AppState>,
    SessionParam(id): SessionParam,
    SideParam(side): SideParam,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<CandidateList>, AppError> {
    if side == Side::Browser {
        access::agent_session(&state, &headers, &id)?;
    } else {
        access::viewer_session(&state, &headers, &uri, &id)?;
    }
    Ok(Json(
        state.relay(|r, now| r.poll_candidates(&id, side, now))?,
    ))
}

async fn end(
    State(state): State<AppState>,
    SessionParam(id): SessionParam,
    headers: HeaderMap,
    uri: Uri,
) -> Result<StatusCode, AppError> {
    access::viewer_session(&state, &headers, &uri, &id)?;
    state.relay(|r, now| r.viewer_left(&id, now))?;
    Ok(StatusCode::NO_CONTENT)
}
