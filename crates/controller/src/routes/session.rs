//! The session routes: create (the offer), a new offer on it (ICE restart), answer, candidate
//! (post), candidates (poll) and end (`DELETE`). The event stream is in `sse.rs`; the routes
//! themselves are in the table of `routes/mod.rs`. A handler names a session only through
//! `access.rs`'s checked extractors ([`ViewerSession`]: the owner's viewer token;
//! [`SessionCaller`]: that or the agent secret, for `from: "vm"` and `candidates/browser`), which
//! run before the body is read; handlers charge rate limits; everything else is the relay's
//! business.

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use vdesk_protocol::{
    CandidateList, CreateSession, PostCandidate, SessionCreated, SessionDescription, SessionGrant,
    SessionId, Side,
};

use crate::access::{self, Peer, SessionCaller, ViewerSession};
use crate::error::AppError;
use crate::extract::{ApiJson, SideParam};
use crate::limits::Kind;
use crate::state::AppState;

/// The 202 body of `answer` (nothing yet) and `offer` (sent on): `{"status": "pending"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pending {
    #[schema(pattern = "^pending$")]
    pub status: &'static str,
}

const PENDING: Pending = Pending { status: "pending" };

fn session_url(id: &SessionId) -> String {
    format!("/api/webrtc/session/{id}")
}

#[utoipa::path(post, path = "/api/webrtc/session", tag = "viewer",
    security(("bearer" = []), ("token" = [])), request_body = CreateSession,
    responses((status = 201, description = "The session is open; the answer comes as an event",
        body = SessionCreated, headers(("Location" = String, description = "The session's URL")))))]
pub(crate) async fn create(
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
    let grant = access::grant_of(&state, &claims);
    // The viewer is told what its link grants, but not the owner tag (it is the server's).
    let told = SessionGrant {
        owner: None,
        ..grant.clone()
    };
    let link = claims.id.clone();
    let session_id = state.relay(move |r, now| {
        let id = r.create_session_as(vm, body.offer, &grant, now)?;
        r.note_link(&id, &link);
        Ok::<_, crate::relay::RelayError>(id)
    })?;
    let location = session_url(&session_id);
    let created = SessionCreated {
        grant: told,
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

#[utoipa::path(get, path = "/api/webrtc/session/{id}/answer", tag = "viewer",
    security(("bearer" = []), ("token" = [])), params(("id" = SessionId, Path, description = "The session")),
    responses((status = 200, description = "The agent's answer", body = SessionDescription),
        (status = 202, description = "No answer yet", body = Pending)))]
pub(crate) async fn answer(
    State(state): State<AppState>,
    ViewerSession { id, .. }: ViewerSession,
) -> Result<Response, AppError> {
    Ok(match state.relay(|r, now| r.answer(&id, now))? {
        Some(answer) => Json(answer).into_response(),
        None => (StatusCode::ACCEPTED, Json(PENDING)).into_response(),
    })
}

/// A new offer on an existing session (ICE restart); the answer comes as an `answer` event.
#[utoipa::path(post, path = "/api/webrtc/session/{id}/offer", tag = "viewer",
    security(("bearer" = []), ("token" = [])), params(("id" = SessionId, Path, description = "The session")), request_body = SessionDescription,
    responses((status = 202, description = "Sent to the agent; the answer comes as an event", body = Pending)))]
pub(crate) async fn reoffer(
    State(state): State<AppState>,
    ViewerSession { id, claims }: ViewerSession,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(offer): ApiJson<SessionDescription>,
) -> Result<Response, AppError> {
    access::rate_limit(&state, Kind::Offer, &headers, peer, &claims)?;
    state.relay(|r, now| r.reoffer(&id, offer, now))?;
    Ok((StatusCode::ACCEPTED, Json(PENDING)).into_response())
}

/// 401 for a caller posting or reading the other side's candidates (a viewer token on the
/// agent's side: the agent secret is what is missing).
fn wrong_side(caller: &SessionCaller) -> AppError {
    match caller {
        SessionCaller::Viewer(_) => AppError::unauthorized_with(
            "the VM's side of a session needs its agent secret (Authorization: Bearer <agent secret>)",
        ),
        SessionCaller::Agent(_) => {
            AppError::forbidden("the agent posts candidates from: vm and reads candidates/browser")
        }
    }
}

#[utoipa::path(post, path = "/api/webrtc/session/{id}/candidate", tag = "viewer",
    security(("bearer" = []), ("token" = [])), params(("id" = SessionId, Path, description = "The session")), request_body = PostCandidate,
    responses((status = 204, description = "Relayed to the other side")))]
pub(crate) async fn candidate(
    State(state): State<AppState>,
    caller: SessionCaller,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostCandidate>,
) -> Result<StatusCode, AppError> {
    let id = match (&caller, body.from) {
        (SessionCaller::Agent(id), Side::Vm) => id,
        (SessionCaller::Viewer(v), Side::Browser) => {
            access::rate_limit(&state, Kind::Candidate, &headers, peer, &v.claims)?;
            &v.id
        }
        _ => return Err(wrong_side(&caller)),
    };
    state.relay(|r, now| r.post_candidate(id, body.from, body.candidate, now))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/webrtc/session/{id}/candidates/{side}", tag = "viewer",
    security(("bearer" = []), ("token" = [])),
    params(("id" = SessionId, Path, description = "The session"),
        ("side" = Side, Path, description = "Whose candidates: `vm` for the viewer, `browser` for the agent")),
    responses((status = 200, description = "That side's candidates not read yet", body = CandidateList)))]
pub(crate) async fn candidates(
    State(state): State<AppState>,
    caller: SessionCaller,
    SideParam(side): SideParam,
) -> Result<Json<CandidateList>, AppError> {
    let id = match (&caller, side) {
        (SessionCaller::Agent(id), Side::Browser) => id,
        (SessionCaller::Viewer(v), Side::Vm) => &v.id,
        _ => return Err(wrong_side(&caller)),
    };
    Ok(Json(
        state.relay(|r, now| r.poll_candidates(id, side, now))?,
    ))
}

#[utoipa::path(delete, path = "/api/webrtc/session/{id}", tag = "viewer",
    security(("bearer" = []), ("token" = [])), params(("id" = SessionId, Path, description = "The session")),
    responses((status = 204, description = "The session is over")))]
pub(crate) async fn end(
    State(state): State<AppState>,
    ViewerSession { id, .. }: ViewerSession,
) -> Result<StatusCode, AppError> {
    state.relay(|r, now| r.viewer_left(&id, now))?;
    Ok(StatusCode::NO_CONTENT)
}
