//! `GET /api/agent/ws`: one agent's WebSocket, as a thin adapter between frames and the relay.
//! [`run`] is generic over any `Sink`/`Stream` of messages so tests can drive it with channels.
//! It owns the transport rules: hello within 10 s, ping every 15 s, dead after 45 s of silence,
//! one JSON text frame per message. What a message means is the relay's business, not this file's.

use std::fmt::Display;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use vdesk_protocol::AgentToController;

use crate::error::AppError;
use crate::state::{AgentCommand, AppState};

/// Largest frame an agent may send (an answer is at most 64 KiB of SDP).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// The transport's timers; [`Default`] is the protocol's 10 s / 15 s / 45 s.
#[derive(Debug, Clone, Copy)]
pub struct AgentTiming {
    /// The first message must be a valid `hello` within this time.
    pub hello_timeout: Duration,
    /// How often we ping.
    pub ping_interval: Duration,
    /// A connection silent (no frame at all, pongs included) for this long is dead.
    pub dead_after: Duration,
}

impl Default for AgentTiming {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            dead_after: Duration::from_secs(45),
        }
    }
}

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = crate::access::check_origin(&headers) {
        warn!("agent WebSocket refused: Origin does not match Host");
        return e.into_response();
    }
    match ws {
        Ok(ws) => ws
            .max_message_size(MAX_FRAME_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .on_upgrade(move |socket| {
                let (sink, stream) = socket.split();
                run(state, sink, stream, AgentTiming::default())
            }),
        Err(_) => AppError::bad_request("this route is the agents' WebSocket: it needs an upgrade")
            .into_response(),
    }
}

/// Serves one agent connection until it closes, is closed by the relay, or goes silent.
pub async fn run<S, R, E>(state: AppState, mut sink: S, mut stream: R, timing: AgentTiming)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    let conn = state.next_conn_id();
    let (tx, mut rx) = mpsc::unbounded_channel();
    state.hub().add_agent(conn, tx);

    let hello_deadline = tokio::time::sleep(timing.hello_timeout);
    tokio::pin!(hello_deadline);
    let mut hello_checked = false;
    let silence = tokio::time::sleep(timing.dead_after);
    tokio::pin!(silence);
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + timing.ping_interval, timing.ping_interval);

    loop {
        tokio::select! {
            frame = stream.next() => {
                let msg = match frame {
                    None => break,
                    Some(Err(e)) => {
                        debug!(conn = %conn, error = %e, "agent socket error");
                        break;
                    }
                    Some(Ok(msg)) => msg,
                };
                silence.as_mut().reset(tokio::time::Instant::now() + timing.dead_after);
                match msg {
                    Message::Text(text) => on_text(&state, conn, text.as_str()),
                    Message::Binary(_) => state.relay(|r, _| {
                        r.agent_bad_frame(conn, "binary frames are not supported; send JSON text")
                    }),
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(_) => break,
                }
            }
            cmd = rx.recv() => match cmd {
                Some(AgentCommand::Send(msg)) => {
                    let Ok(text) = serde_json::to_string(&msg) else { continue };
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(AgentCommand::Close) | None => {
                    let close = CloseFrame { code: 1000, reason: "closed by the controller".into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
            },
            () = &mut hello_deadline, if !hello_checked => {
                hello_checked = true;
                state.relay(|r, _| r.agent_hello_timeout(conn));
            }
            () = &mut silence => {
                warn!(conn = %conn, secs = timing.dead_after.as_secs(), "agent silent too long, dropping it");
                break;
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
    state.hub().remove_agent(conn, Instant::now());
}

fn on_text(state: &AppState, conn: crate::relay::ConnId, text: &str) {
    match serde_json::from_str::<AgentToController>(text) {
        Ok(msg) => state.relay(|r, now| r.agent_message(conn, msg, now)),
        Err(e) => {
            let problem = format!("invalid message: {e}");
            state.relay(|r, _| r.agent_bad_frame(conn, &problem));
        }
    }
}
