//! The agent's media link (the WebSocket fallback, docs/protocol.md "WebSocket media"): a second
//! outbound WebSocket to the controller (`GET /api/agent/media`, next to the signalling link's
//! `/api/agent/ws`, over TLS when that is `wss://`), so that video never delays a candidate.
//! Same `challenge`/`hello`/`welcome` as signalling (the hello proves the secret over the nonce).
//! Then, per WebSocket viewer (`wsOpen` with the link's grant): a subscription to the shared
//! media (`MediaHub::subscribe_frames`: bounded queue, drops to the next keyframe) whose encoded
//! frames leave as binary frames (`vdesk_protocol::wsmedia::FrameHeader`), and a
//! `SessionInput` seated in the control `Room` whose messages come in as `wsInput` and go out as
//! `wsOutput`: the same permission, clipboard and control-holder rules as a data channel.
//! Both ways are bounded: a full link makes the viewer's queue drop to the next keyframe, and a
//! full text queue drops the message (logged).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};
use url::Url;
use vdesk_protocol::wsmedia::{
    ControllerToMedia, FrameHeader, MediaToController, WsCodec, MAX_WS_TEXT,
};
use vdesk_protocol::{
    hello_proof, AgentToController, ControllerToAgent, SessionGrant, SessionId, PROTOCOL_VERSION,
};

use crate::codec::Codec;
use crate::config::Config;
use crate::control::Room;
use crate::input::{SessionInput, TextSink};
use crate::media::frames::Delivery;
use crate::media::{MediaHub, Rung, StreamKey, Subscription, Viewer};

/// Binary frames waiting for the link (all WebSocket viewers together): when full, each viewer's
/// own queue in the media part fills and drops to the next keyframe.
const FRAME_QUEUE: usize = 16;
/// Text messages waiting for the link; beyond it a message is dropped (logged).
const TEXT_QUEUE: usize = 256;
const PING_EVERY: Duration = Duration::from_secs(15);
const DEAD_AFTER: Duration = Duration::from_secs(45);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// `ws://host/prefix/api/agent/ws` -> `ws://host/prefix/api/agent/media`.
pub fn media_url(signalling: &Url) -> Url {
    let mut url = signalling.clone();
    let path = url.path();
    let base = path.strip_suffix("/api/agent/ws").unwrap_or(path);
    let path = format!("{}/api/agent/media", base.trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The link's task; aborted (and every WebSocket viewer's stream stopped) when dropped.
#[derive(Debug)]
pub struct MediaLink(tokio::task::JoinHandle<()>);

impl Drop for MediaLink {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the media link for `config`'s controller; it reconnects with backoff until dropped.
pub fn spawn(config: &Config, media: &MediaHub, room: &Room) -> MediaLink {
    let config = config.clone();
    let (media, room) = (media.clone(), room.clone());
    MediaLink(tokio::spawn(async move {
        let url = media_url(&config.ws_url);
        let mut backoff = BACKOFF_START;
        loop {
            let mut sessions = Sessions::default();
            let result = serve(&config, &url, &media, &room, &mut sessions, &mut backoff).await;
            sessions.clear().await;
            match result {
                Ok(()) => return,
                Err(why) => {
                    debug!(
                        "media link down ({why}); retrying in {:.1}s",
                        backoff.as_secs_f32()
                    )
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }))
}

/// One WebSocket viewer's stream and input.
struct WsSession {
    viewer: Arc<Viewer>,
    input: Arc<SessionInput>,
    expires_at: Option<u64>,
    // Dropped first: stops the drain thread before the input leaves the room.
    subscription: Option<Subscription>,
}

#[derive(Default)]
struct Sessions(HashMap<SessionId, WsSession>);

impl Sessions {
    /// Stops a session off the async threads (joining its drain thread can block briefly).
    fn remove(&mut self, id: &SessionId) {
        if let Some(mut s) = self.0.remove(id) {
            tokio::task::spawn_blocking(move || {
                drop(s.subscription.take());
                drop(s);
            });
        }
    }

    async fn clear(&mut self) {
        let all: Vec<WsSession> = self.0.drain().map(|(_, s)| s).collect();
        let _ = tokio::task::spawn_blocking(move || drop(all)).await;
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unix_ms() -> u64 {
    unix_us() / 1000
}

/// The codec of the WebSocket stream: the first of `--codecs` (WebCodecs decodes all three).
fn ws_codec(codecs: &[Codec]) -> (Codec, WsCodec) {
    match codecs.first() {
        Some(Codec::Vp8) => (Codec::Vp8, WsCodec::Vp8),
        Some(Codec::Vp9) => (Codec::Vp9, WsCodec::Vp9),
        _ => (Codec::H264, WsCodec::H264),
    }
}

async fn serve(
    config: &Config,
    url: &Url,
    media: &MediaHub,
    room: &Room,
    sessions: &mut Sessions,
    backoff: &mut Duration,
) -> Result<(), String> {
    let ws = timeout(
        HANDSHAKE_TIMEOUT,
        crate::tls::connect(url, config.tls.as_ref()),
    )
    .await
    .map_err(|_| format!("connecting to {url}: timed out"))?
    .map_err(|e| format!("connecting to {url}: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut read = async || -> Result<ControllerToAgent, String> {
        loop {
            let frame = timeout(
                deadline.saturating_duration_since(Instant::now()),
                stream.next(),
            )
            .await
            .map_err(|_| "no challenge/welcome in time".to_string())?
            .ok_or("closed during the hello")?
            .map_err(|e| format!("reading the hello: {e}"))?;
            if let Message::Text(text) = frame {
                return serde_json::from_str(&text).map_err(|e| format!("unreadable: {e}"));
            }
        }
    };
    let nonce = match read().await? {
        ControllerToAgent::Challenge { nonce } => nonce,
        other => return Err(format!("expected a challenge, got {other:?}")),
    };
    let hello = AgentToController::Hello {
        vm_id: config.vm_id.clone(),
        proof: Some(hello_proof(&config.token, &nonce, &config.vm_id)),
        token: None,
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        // The signalling link's hello carries the agent's details; this one only proves who it is.
        info: Default::default(),
    };
    let hello = serde_json::to_string(&hello).map_err(|e| e.to_string())?;
    sink.send(Message::text(hello))
        .await
        .map_err(|e| format!("sending hello: {e}"))?;
    match read().await? {
        ControllerToAgent::Welcome { .. } => {}
        ControllerToAgent::Error { code, message } => {
            return Err(format!("controller said {code:?}: {message}"))
        }
        other => return Err(format!("expected welcome, got {other:?}")),
    }
    info!(controller = %url, "media link up (WebSocket viewers)");
    *backoff = BACKOFF_START;

    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
    let (text_tx, mut text_rx) = mpsc::channel::<String>(TEXT_QUEUE);
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            biased;
            Some(text) = text_rx.recv() => {
                sink.send(Message::text(text)).await.map_err(|e| format!("sending: {e}"))?;
            }
            frame = stream.next() => {
                let frame = frame
                    .ok_or("controller closed the media link")?
                    .map_err(|e| format!("reading: {e}"))?;
                last_heard = Instant::now();
                match frame {
                    Message::Text(text) if text.len() <= MAX_WS_TEXT => {
                        match serde_json::from_str::<ControllerToMedia>(&text) {
                            Ok(msg) => handle(config, media, room, sessions, &frames_tx, &text_tx, msg),
                            Err(e) => warn!("unreadable message on the media link: {e}"),
                        }
                    }
                    Message::Text(_) => warn!("oversized message on the media link dropped"),
                    Message::Close(_) => return Err("controller closed the media link".into()),
                    _ => {}
                }
            }
            Some(frame) = frames_rx.recv() => {
                sink.send(Message::binary(frame)).await.map_err(|e| format!("sending: {e}"))?;
            }
            _ = expiry.tick() => {
                let now = unix_ms();
                let expired: Vec<SessionId> = sessions.0.iter()
                    .filter(|(_, s)| s.expires_at.is_some_and(|t| t <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    info!(session = %id, "WebSocket viewer's link expired: stream stopped");
                    sessions.remove(&id);
                    send_text(&text_tx, &MediaToController::WsEnded {
                        session_id: id,
                        reason: "link_expired".into(),
                    });
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    return Err("nothing heard on the media link".into());
                }
                sink.send(Message::Ping(Vec::new().into())).await.map_err(|e| format!("ping: {e}"))?;
            }
        }
    }
}

fn send_text(tx: &mpsc::Sender<String>, msg: &MediaToController) {
    if let Ok(text) = serde_json::to_string(msg) {
        if tx.try_send(text).is_err() {
            debug!("media link text queue full: message dropped");
        }
    }
}

fn handle(
    config: &Config,
    media: &MediaHub,
    room: &Room,
    sessions: &mut Sessions,
    frames: &mpsc::Sender<Vec<u8>>,
    text: &mpsc::Sender<String>,
    msg: ControllerToMedia,
) {
    match msg {
        ControllerToMedia::WsOpen { session_id, grant } => {
            if sessions.0.contains_key(&session_id) {
                return;
            }
            if sessions.0.len() >= config.max_sessions {
                warn!(session = %session_id, "WebSocket viewer refused: --max-sessions");
                send_text(
                    text,
                    &MediaToController::WsEnded {
                        session_id,
                        reason: format!(
                            "this VM already streams to {} WebSocket viewers (--max-sessions)",
                            config.max_sessions
                        ),
                    },
                );
                return;
            }
            match open(config, media, room, &session_id, &grant, frames, text) {
                Ok(s) => {
                    info!(session = %session_id, permission = ?grant.permission, "WebSocket viewer streaming");
                    sessions.0.insert(session_id, s);
                }
                Err(reason) => {
                    warn!(session = %session_id, "WebSocket viewer failed: {reason}");
                    send_text(text, &MediaToController::WsEnded { session_id, reason });
                }
            }
        }
        ControllerToMedia::WsClose { session_id } => {
            if sessions.0.contains_key(&session_id) {
                info!(session = %session_id, "WebSocket viewer left");
                sessions.remove(&session_id);
            }
        }
        ControllerToMedia::WsInput { session_id, text } => {
            if let Some(s) = sessions.0.get(&session_id) {
                s.input.on_message(&text);
            }
        }
        ControllerToMedia::WsKeyframe { session_id } => {
            if let Some(s) = sessions.0.get(&session_id) {
                s.viewer.request_keyframe();
            }
        }
        ControllerToMedia::WsRate { session_id, kbps } => {
            if let Some(s) = sessions.0.get(&session_id) {
                s.viewer.set_target_kbps(kbps);
            }
        }
    }
}

fn open(
    config: &Config,
    media: &MediaHub,
    room: &Room,
    id: &SessionId,
    grant: &SessionGrant,
    frames: &mpsc::Sender<Vec<u8>>,
    text: &mpsc::Sender<String>,
) -> Result<WsSession, String> {
    let input = SessionInput::start(
        id.clone(),
        grant,
        &config.input,
        media.capture_restarter(),
        room,
    );
    {
        let (text, id) = (text.clone(), id.clone());
        input.attach_text(TextSink(Arc::new(move |t: &str| {
            send_text(
                &text,
                &MediaToController::WsOutput {
                    session_id: id.clone(),
                    text: t.to_owned(),
                },
            );
        })));
    }
    let short = format!("ws-{}", &id.as_str()[..8]);
    let viewer = media.viewer(&short);
    {
        let (text, id) = (text.clone(), id.clone());
        viewer.on_failure(move |reason| {
            send_text(
                &text,
                &MediaToController::WsEnded {
                    session_id: id.clone(),
                    reason: reason.to_owned(),
                },
            );
        });
    }
    let (codec, ws_codec) = ws_codec(&config.codecs);
    let key = StreamKey {
        codec,
        rung: Rung::Full,
        pointer: media.settings().show_pointer,
    };
    let room_tx = frames.clone();
    let tx = frames.clone();
    let sid = id.as_str().to_owned();
    let subscription = media
        .subscribe_frames(
            key,
            &viewer,
            move || room_tx.capacity() > 0,
            move |f| {
                let bytes = FrameHeader {
                    keyframe: f.keyframe,
                    codec: ws_codec,
                    session: &sid,
                    pts_us: f.pts_us,
                    capture_us: unix_us(),
                }
                .encode(&f.data);
                match tx.try_send(bytes) {
                    Ok(()) => Delivery::Sent,
                    Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
                    Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
                }
            },
        )
        .map_err(|e| format!("the media could not start: {e}"))?;
    Ok(WsSession {
        viewer,
        input,
        expires_at: grant.expires_at,
        subscription: Some(subscription),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_media_url_sits_next_to_the_signalling_url() {
        let u = Url::parse("wss://h.example/x/api/agent/ws").unwrap();
        assert_eq!(media_url(&u).as_str(), "wss://h.example/x/api/agent/media");
        let u = Url::parse("ws://127.0.0.1:8080/api/agent/ws").unwrap();
        assert_eq!(
            media_url(&u).as_str(),
            "ws://127.0.0.1:8080/api/agent/media"
        );
    }

    #[test]
    fn the_ws_codec_is_the_first_preference() {
        assert_eq!(ws_codec(&[Codec::Vp8, Codec::H264]).1, WsCodec::Vp8);
        assert_eq!(ws_codec(&[Codec::H264]).1, WsCodec::H264);
        assert_eq!(ws_codec(&[]).1, WsCodec::H264);
    }
}
