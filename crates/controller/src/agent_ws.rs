//! `GET /api/agent/ws`: one agent's WebSocket, as a thin adapter between frames and the relay.
//! [`run`] is generic over any `Sink`/`Stream` of messages so tests can drive it with channels.
//! It owns the transport rules: a `challenge` with a fresh nonce first, hello within 5 s and in
//! at most [`PRE_HELLO_BYTES`] bytes, then frames up to [`MAX_FRAME_BYTES`], ping every 15 s,
//! dead after 45 s of silence, one JSON text frame per message. What a message means is the
//! relay's business, not this file's. The upgrade is done here (not by axum's
//! `WebSocketUpgrade`) so that the byte budget before hello sits under the WebSocket codec: a
//! huge frame before hello is refused before it is read.

use std::fmt::Display;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{self as ws, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};
use vdesk_protocol::{AgentToController, ControllerToAgent};

use crate::error::AppError;
use crate::io_with::{ReadThrough, With};
use crate::state::{AgentCommand, AppState};

/// Largest frame an agent may send once registered (an answer is at most 64 KiB of SDP).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Most bytes an agent may send before its `hello` is accepted (a hello is about 300 bytes):
/// beyond it the connection is dropped, so an unauthenticated peer cannot make the controller
/// buffer a large frame.
pub const PRE_HELLO_BYTES: usize = 4096;

/// The transport's timers; [`Default`] is the protocol's 5 s / 15 s / 45 s.
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
            hello_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
            dead_after: Duration::from_secs(45),
        }
    }
}

pub(crate) fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

pub(crate) async fn upgrade(State(state): State<AppState>, req: Request) -> Response {
    // A small read buffer: an idle or unauthenticated socket costs little memory.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    upgrade_agent_socket(
        req,
        "the agents' WebSocket",
        config,
        |socket, budget| async move {
            let (sink, stream) = socket.split();
            let sink = Box::pin(sink.with(|m: Message| async move {
                Ok::<_, tokio_tungstenite::tungstenite::Error>(to_tungstenite(m))
            }));
            let stream = stream.filter_map(|r| async move { r.map(from_tungstenite).transpose() });
            let lift = move || budget.store(usize::MAX, Ordering::Relaxed);
            run_with(state, sink, Box::pin(stream), AgentTiming::default(), lift).await;
        },
    )
}

/// An agent's socket as `AgentSocket` hands it over: the upgraded connection behind a byte
/// budget of [`PRE_HELLO_BYTES`] (the `Arc`, lifted to `usize::MAX` once the hello is good).
pub(crate) type AgentSocket = WebSocketStream<With<TokioIo<hyper::upgrade::Upgraded>, ReadBudget>>;

/// The upgrade of an agent link (signalling, `/api/agent/ws`, or media, `/api/agent/media`):
/// Origin, upgrade headers and version checked (a 400 naming `what` otherwise), then `serve`
/// gets the socket with `config` and its pre-hello byte budget; the secret is checked in the
/// hello, by `serve`.
pub(crate) fn upgrade_agent_socket<F, Fut>(
    mut req: Request,
    what: &'static str,
    config: WebSocketConfig,
    serve: F,
) -> Response
where
    F: FnOnce(AgentSocket, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    if let Err(e) = crate::access::check_origin(headers) {
        warn!("{what} refused: Origin does not match Host");
        return e.into_response();
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_upgrade = req.method() == Method::GET
        && header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket");
    let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let (Some(key), Some(on_upgrade), true) = (key, on_upgrade, is_upgrade) else {
        return AppError::bad_request(format!("this route is {what}: it needs an upgrade"))
            .into_response();
    };
    if req.headers().get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return AppError::bad_request("Sec-WebSocket-Version must be 13").into_response();
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "{what}: upgrade failed");
                return;
            }
        };
        let budget = Arc::new(AtomicUsize::new(PRE_HELLO_BYTES));
        let io = With {
            io: TokioIo::new(upgraded),
            attached: ReadBudget(budget.clone()),
        };
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        serve(socket, budget).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

pub(crate) fn to_tungstenite(m: Message) -> ws::Message {
    match m {
        Message::Text(t) => ws::Message::text(t.as_str()),
        Message::Binary(b) => ws::Message::Binary(b),
        Message::Ping(b) => ws::Message::Ping(b),
        Message::Pong(b) => ws::Message::Pong(b),
        Message::Close(c) => ws::Message::Close(c.map(|c| ws::CloseFrame {
            code: c.code.into(),
            reason: c.reason.as_str().into(),
        })),
    }
}

pub(crate) fn from_tungstenite(m: ws::Message) -> Option<Message> {
    Some(match m {
        ws::Message::Text(t) => Message::Text(t.as_str().into()),
        ws::Message::Binary(b) => Message::Binary(b),
        ws::Message::Ping(b) => Message::Ping(b),
        ws::Message::Pong(b) => Message::Pong(b),
        ws::Message::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: c.code.into(),
            reason: c.reason.as_str().into(),
        })),
        // Raw frames only appear when writing.
        ws::Message::Frame(_) => return None,
    })
}

/// Reads through to the socket until its budget of bytes is spent, then fails; `usize::MAX`:
/// no limit (lifted once the agent is registered). Also the media link's (`wsmedia::agent`).
pub(crate) struct ReadBudget(pub(crate) Arc<AtomicUsize>);

impl ReadThrough for ReadBudget {
    fn poll_read_through<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.0.load(Ordering::Relaxed);
        if left == usize::MAX {
            return Pin::new(io).poll_read(cx, buf);
        }
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {PRE_HELLO_BYTES} bytes before a valid hello"),
            )));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut tmp = [0u8; 1024];
        let n = left.min(tmp.len()).min(buf.remaining());
        let mut small = ReadBuf::new(&mut tmp[..n]);
        match Pin::new(io).poll_read(cx, &mut small) {
            Poll::Ready(Ok(())) => {
                let got = small.filled();
                buf.put_slice(got);
                let used = got.len();
                let _ = self
                    .0
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                        (l != usize::MAX).then(|| l.saturating_sub(used))
                    });
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// [`run_with`] without a hook: for tests that drive the adapter through channels.
pub async fn run<S, R, E>(state: AppState, sink: S, stream: R, timing: AgentTiming)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    run_with(state, sink, stream, timing, || {}).await
}

/// Serves one agent connection until it closes, is closed by the relay, or goes silent:
/// sends the `challenge`, then relays frames. `on_welcome` runs once, when the agent is
/// registered (the socket path lifts its pre-hello byte budget there).
pub async fn run_with<S, R, E>(
    state: AppState,
    mut sink: S,
    mut stream: R,
    timing: AgentTiming,
    on_welcome: impl FnOnce(),
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    let conn = state.next_conn_id();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let nonce = crate::auth::hex(&rand::random::<[u8; 32]>());
    let challenge = ControllerToAgent::Challenge {
        nonce: nonce.clone(),
    };
    let Ok(text) = serde_json::to_string(&challenge) else {
        return;
    };
    if sink.send(Message::Text(text.into())).await.is_err() {
        return;
    }
    state.hub().add_agent(conn, tx, nonce);
    let mut on_welcome = Some(on_welcome);

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
                        if on_welcome.is_some() {
                            warn!(conn = %conn, error = %e, "agent connection dropped before hello");
                        } else {
                            debug!(conn = %conn, error = %e, "agent socket error");
                        }
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
                    if matches!(msg, ControllerToAgent::Welcome { .. }) {
                        if let Some(f) = on_welcome.take() {
                            f();
                        }
                    }
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
