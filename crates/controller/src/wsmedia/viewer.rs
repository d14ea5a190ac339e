//! `GET /api/vms/{vmId}/stream`: a viewer's WebSocket (the fallback when WebRTC cannot
//! connect). The viewer token (`?token=`, as a browser cannot set headers on a WebSocket) is
//! checked before the upgrade, like every viewer route, and the `Origin` must be this host.
//! Then: `wsWelcome` (text), one binary frame per encoded video frame (header in
//! docs/protocol.md), the agent's `AgentToViewer` messages as text, `wsStats` every second, and
//! `wsEnded` before the controller closes. The viewer sends `ViewerToAgent` messages as text
//! (relayed to the agent, which applies the grant's rules) and `{"type": "wsKeyframe"}`.
//! Flow control: frames wait in the viewer's bounded queue while its socket is busy; when the
//! queue overflows it skips to the next keyframe (`queue.rs`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tracing::{debug, info};
use vdesk_protocol::wsmedia::ControllerToMedia;
use vdesk_protocol::{SessionGrant, VmId};

use crate::access::{self, Peer};
use crate::error::AppError;
use crate::extract::VmParam;
use crate::limits::Kind;
use crate::state::AppState;

/// Largest message a viewer may send (the agent drops input messages over 64 KiB too).
pub const MAX_VIEWER_MESSAGE: usize = 64 * 1024;
const PING_EVERY: Duration = Duration::from_secs(15);
const STATS_EVERY: Duration = Duration::from_secs(1);

#[utoipa::path(get, path = "/api/vms/{vmId}/stream", tag = "viewer",
    security(("bearer" = []), ("token" = [])),
    params(("vmId" = VmId, Path, description = "The VM")),
    description = "The WebSocket fallback (upgrade): the VM's desktop as encoded video frames, \
        and input, clipboard and control messages both ways (docs/protocol.md, WebSocket media).",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade"),
        (status = 401, description = "No viewer token"),
        (status = 403, description = "A token for another VM, an invalid token, or a foreign Origin"),
        (status = 429, description = "Too many sessions from this client or link")))]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    VmParam(vm): VmParam,
    peer: Peer,
    req: Request,
) -> Response {
    match check(&state, vm, peer, req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn check(state: &AppState, vm: VmId, peer: Peer, req: Request) -> Result<Response, Response> {
    let (mut parts, _) = req.into_parts();
    let claims = access::viewer_claims(state, &parts.headers, &parts.uri)
        .map_err(IntoResponse::into_response)?;
    access::check_vm(&claims, &vm).map_err(IntoResponse::into_response)?;
    access::check_origin(&parts.headers).map_err(IntoResponse::into_response)?;
    access::rate_limit(state, Kind::CreateSession, &parts.headers, peer, &claims)
        .map_err(IntoResponse::into_response)?;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, state)
        .await
        .map_err(|_| {
            AppError::bad_request("this route is a WebSocket: it needs an upgrade").into_response()
        })?;
    let grant = access::grant_of(state, &claims);
    let state = state.clone();
    Ok(ws
        .max_message_size(MAX_VIEWER_MESSAGE)
        .max_frame_size(MAX_VIEWER_MESSAGE)
        .on_upgrade(move |socket| serve(state, vm, grant, socket))
        .into_response())
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn serve(state: AppState, vm: VmId, grant: SessionGrant, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let media = state.wsmedia();
    let max = state.config().max_sessions_per_vm;
    let mut open = match media.open_viewer(&vm, grant.clone(), max) {
        Ok(o) => o,
        Err(reason) => {
            let _ = sink
                .send(text(
                    json!({"type": "wsEnded", "code": "vm_offline", "reason": reason}),
                ))
                .await;
            let _ = sink.close().await;
            return;
        }
    };
    let id = open.id.clone();
    info!(vm = %vm, session = %id, permission = ?grant.permission, "WebSocket viewer connected");
    // The viewer is told what its link grants, but not the owner tag (it is the server's).
    let told = SessionGrant {
        owner: None,
        ..grant.clone()
    };
    let welcome = json!({"type": "wsWelcome", "sessionId": id, "vmId": vm, "grant": told});
    if sink.send(text(welcome)).await.is_err() {
        media.close_viewer(&id);
        return;
    }
    let expiry = grant.expires_at.map(|ms| {
        let now = crate::viewer_token::unix_now().saturating_mul(1000);
        tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now))
    });
    let expired = async {
        match expiry {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut sent_frames = 0u64;
    let mut sent_bytes = 0u64;
    let end =
        |code: &str, reason: &str| text(json!({"type": "wsEnded", "code": code, "reason": reason}));
    let goodbye = loop {
        tokio::select! {
            biased;
            msg = open.rx.recv() => match msg {
                Some(super::ToViewer::Text(t)) => {
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        break None;
                    }
                }
                Some(super::ToViewer::End(reason)) => break Some(end("agent_error", &reason)),
                None => break Some(end("agent_error", "the stream ended")),
            },
            () = open.frames.ready.notified() => {
                let mut failed = false;
                while let Some(frame) = open.frames.pop() {
                    let n = frame.len() as u64;
                    // While this waits (a slow viewer), the queue fills and skips ahead.
                    if sink.send(Message::Binary(frame)).await.is_err() {
                        failed = true;
                        break;
                    }
                    sent_frames += 1;
                    sent_bytes += n;
                    media.counters.frames_relayed.fetch_add(1, Ordering::Relaxed);
                    media.counters.bytes_relayed.fetch_add(n, Ordering::Relaxed);
                }
                if failed {
                    break None;
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str().contains("\"wsKeyframe\"")
                        && serde_json::from_str::<serde_json::Value>(t.as_str())
                            .is_ok_and(|v| v["type"] == "wsKeyframe")
                    {
                        media.viewer_message(&id, ControllerToMedia::WsKeyframe { session_id: id.clone() });
                    } else {
                        media.viewer_message(&id, ControllerToMedia::WsInput {
                            session_id: id.clone(),
                            text: t.as_str().to_owned(),
                        });
                    }
                }
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(e)) => {
                    debug!(session = %id, "WebSocket viewer: {e}");
                    break None;
                }
                Some(Ok(_)) => {}
            },
            () = &mut expired => break Some(end("link_expired", "this link has expired")),
            _ = stats.tick() => {
                let s = json!({"type": "wsStats", "queue": open.frames.depth(),
                    "dropped": open.frames.dropped(), "frames": sent_frames, "bytes": sent_bytes});
                if sink.send(text(s)).await.is_err() {
                    break None;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
        }
    };
    media.close_viewer(&id);
    if let Some(msg) = goodbye {
        let _ = sink.send(msg).await;
    }
    let _ = sink.close().await;
    info!(vm = %vm, session = %id, frames = sent_frames, "WebSocket viewer left");
}
