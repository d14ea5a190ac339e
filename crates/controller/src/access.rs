//! Who may use which route. Viewers: a token (`Authorization: Bearer`, or `?token=` where a
//! header cannot be set, as for `EventSource`) for the VM, and for a session the very token that
//! created it. Agents on their HTTP routes: their VM's agent secret. The admin API: the admin
//! token. WebSocket upgrades: a browser's `Origin` must match `Host`. Also the keys that rate
//! limits count by. Decisions only; no relay logic.
//!
//! A handler gets a session id from the path only through [`ViewerSession`] or
//! [`SessionCaller`], which parse `{id}` and check the caller's right to it in one step: there
//! is no unchecked way to name a session (the parser, [`session_id`], is private).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Uri};
use vdesk_protocol::{SessionGrant, SessionId, VmId};

use crate::auth::{bearer, ct_eq};
use crate::error::AppError;
use crate::limits::Kind;
use crate::relay::Owner;
use crate::state::AppState;
use crate::viewer_token::{self, unix_now, Claims};

/// The `token` query parameter, if any.
fn query_token(uri: &Uri) -> Option<&str> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// The viewer's token from the header or the query, checked: 401 if there is none, 403 if it is
/// not valid (bad signature, expired, malformed).
pub fn viewer_claims(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Claims, AppError> {
    let token = bearer(headers)
        .or_else(|| query_token(uri))
        .ok_or_else(AppError::no_viewer_token)?;
    let claims = viewer_token::verify(&state.config().secret, token, unix_now())
        .map_err(|e| AppError::forbidden(e.to_string()))?;
    if state.relay(|r, _| r.is_revoked(&claims.id, claims.expires)) {
        return Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            vdesk_protocol::ErrorCode::LinkRevoked,
            "this viewer link was revoked by the operator; ask for a new link",
        ));
    }
    Ok(claims)
}

/// What a session created with `claims` grants: the link's permission, its expiry (Unix ms; the
/// session ends then), clipboard direction and display name, and the owner tag of its token (see [`crate::auth::ControllerSecret::owner_tag`]). It goes to the agent with the offer.
pub fn grant_of(state: &AppState, claims: &Claims) -> SessionGrant {
    SessionGrant {
        permission: claims.permission,
        owner: Some(state.config().secret.owner_tag(&claims.id)),
        expires_at: Some(claims.expires.saturating_mul(1000)),
        clipboard: claims.clipboard,
        name: claims.name.clone(),
    }
}

/// 403 unless the token is for `vm`.
pub fn check_vm(claims: &Claims, vm: &VmId) -> Result<(), AppError> {
    if &claims.vm == vm {
        Ok(())
    } else {
        Err(AppError::forbidden(format!(
            "this viewer token is for another VM, not {vm}"
        )))
    }
}

/// The VM and token of session `id`; 404 if the relay has never heard of it.
pub fn session_owner(state: &AppState, id: &SessionId) -> Result<Owner, AppError> {
    state.relay(|r, _| r.owner(id)).ok_or_else(|| {
        AppError::new(
            axum::http::StatusCode::NOT_FOUND,
            vdesk_protocol::ErrorCode::SessionNotFound,
            "session not found",
        )
    })
}

/// `{id}` of the path: a session id (32 lowercase hex digits). Private on purpose, see the
/// module's doc.
async fn session_id(parts: &mut Parts) -> Result<SessionId, AppError> {
    let raw = crate::extract::param(parts, "id").await?;
    Ok(SessionId::parse(&raw)?)
}

/// Session `{id}` of the path, for its owner: the viewer token (header or `?token=`) that
/// created it, for its VM. 401 without a token, 403 with another link's, 404 for no such
/// session. Runs before the body is read.
#[derive(Debug)]
pub struct ViewerSession {
    pub id: SessionId,
    pub claims: Claims,
}

impl FromRequestParts<AppState> for ViewerSession {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let id = session_id(parts).await?;
        let claims = viewer_session(state, &parts.headers, &parts.uri, &id)?;
        Ok(Self { id, claims })
    }
}

/// Session `{id}` of the path, for the routes both sides use (`candidate`, `candidates/{side}`):
/// its owner's viewer token as in [`ViewerSession`], or the agent secret of the session's VM in
/// `Authorization: Bearer`. Which one it was decides what the handler lets it do.
#[derive(Debug)]
pub enum SessionCaller {
    Viewer(ViewerSession),
    /// The agent of the session's VM.
    Agent(SessionId),
}

impl FromRequestParts<AppState> for SessionCaller {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let id = session_id(parts).await?;
        if let Some(given) = bearer(&parts.headers) {
            let owner = session_owner(state, &id)?;
            if state
                .config()
                .agent_auth()
                .authorizes(&owner.vm, &parts.headers)
            {
                return Ok(Self::Agent(id));
            }
            // Viewer tokens are `payload.signature`; anything else was meant as an agent secret.
            if !given.contains('.') {
                return Err(AppError::unauthorized_with(
                    "wrong agent secret for this session's VM (Authorization: Bearer <agent secret>)",
                ));
            }
        }
        let claims = viewer_session(state, &parts.headers, &parts.uri, &id)?;
        Ok(Self::Viewer(ViewerSession { id, claims }))
    }
}

/// The viewer's access to session `id`: its token must be for the session's VM and be the one
/// that created it, so that knowing a session id is not enough to touch it.
fn viewer_session(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    id: &SessionId,
) -> Result<Claims, AppError> {
    let claims = viewer_claims(state, headers, uri)?;
    let owner = session_owner(state, id)?;
    check_vm(&claims, &owner.vm)?;
    let mine = state.config().secret.owner_tag(&claims.id);
    match &owner.owner {
        Some(tag) if ct_eq(tag.as_bytes(), mine.as_bytes()) => Ok(claims),
        Some(_) => Err(AppError::forbidden(
            "this session belongs to another viewer link",
        )),
        // Adopted from an agent that kept no owner tag (or made by a trusted caller): nobody's.
        None => Err(AppError::forbidden(
            "this session belongs to no viewer link (it was adopted after a controller restart \
             from an agent that did not say whose it is); start a new session",
        )),
    }
}

/// The admin API: 404 when it is off, 401 without a token, 403 with a wrong one.
pub fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(ours) = &state.config().admin_token else {
        return Err(AppError::not_found(
            "the admin API is off: start the controller with --admin-token",
        ));
    };
    let given = bearer(headers).ok_or_else(|| {
        AppError::unauthorized_with("the admin API needs Authorization: Bearer <admin token>")
    })?;
    if ct_eq(ours.0.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::forbidden("wrong admin token"))
    }
}

/// Session `{sessionId}` of the path, for the admin API: the admin token is checked first
/// (as [`AdminToken`]), then the id is parsed. 404 `session_not_found` for no such session.
#[derive(Debug)]
pub struct AdminSession(pub SessionId);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        admin(state, &parts.headers)?;
        let raw = crate::extract::param(parts, "sessionId").await?;
        Ok(Self(SessionId::parse(&raw)?))
    }
}

/// The admin token, checked before anything else of the request (the body is not read for a
/// stranger): see [`admin`].
#[derive(Debug)]
pub struct AdminToken;

impl FromRequestParts<AppState> for AdminToken {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        admin(state, &parts.headers).map(|()| Self)
    }
}

/// True when `headers` carry the admin token (for routes open to admins and viewers alike).
pub fn is_admin(state: &AppState, headers: &HeaderMap) -> bool {
    state.config().admin_token.as_ref().is_some_and(|ours| {
        bearer(headers).is_some_and(|given| ct_eq(ours.0.as_bytes(), given.as_bytes()))
    })
}

/// A WebSocket upgrade from a browser must come from a page of this very host: `Origin`'s
/// host:port equals `Host`. Agents send no `Origin` and pass. (Stops other sites' pages from
/// opening sockets with the visitor's network position.)
pub fn check_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(AppError::forbidden(
            "cross-origin WebSocket refused: Origin does not match Host",
        ))
    }
}

/// The client's IP: the peer address, or with `--trust-forwarded-for` the last
/// `X-Forwarded-For` entry (the one our proxy wrote). `None` in tests without a socket.
pub fn client_ip(
    state: &AppState,
    parts_headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Option<IpAddr> {
    if state.config().trust_forwarded_for {
        let forwarded = parts_headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer.map(|a| a.ip())
}

/// The peer address of the connection, when the server was started with connect info.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// Charges one request of `kind` to the client's IP and the viewer's token; 429 when either is
/// over its limit.
pub fn rate_limit(
    state: &AppState,
    kind: Kind,
    headers: &HeaderMap,
    peer: Peer,
    claims: &Claims,
) -> Result<(), AppError> {
    let ip = client_ip(state, headers, peer.0).map(|ip| format!("ip:{ip}"));
    let token = format!("token:{}", claims.id);
    let mut keys = vec![token.as_str()];
    if let Some(ip) = &ip {
        keys.push(ip.as_str());
    }
    state
        .limiter()
        .check(kind, &keys, Instant::now())
        .map_err(|wait| {
            let what = match kind {
                Kind::CreateSession => "sessions created",
                Kind::Offer => "new offers",
                Kind::Config => "ICE configuration requests",
                Kind::Candidate => "candidates posted",
            };
            AppError::rate_limited(
                format!("too many {what} from this client or link; try again in a moment"),
                wait,
            )
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        assert!(check_origin(&h).is_ok(), "agents send no Origin");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(check_origin(&h).unwrap_err().status.as_u16(), 403);
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080.evil"),
        );
        assert!(check_origin(&h).is_err());
    }

    #[test]
    fn token_from_query() {
        let uri: Uri = "/x?a=1&token=abc.def&b=2".parse().unwrap();
        assert_eq!(query_token(&uri), Some("abc.def"));
        let uri: Uri = "/x?token=".parse().unwrap();
        assert_eq!(query_token(&uri), None);
        let uri: Uri = "/x?xtoken=abc".parse().unwrap();
        assert_eq!(query_token(&uri), None);
    }
}
