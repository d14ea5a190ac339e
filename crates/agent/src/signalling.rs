//! The agent's link to its controller: a WebSocket it dials out on (the VM needs no open port),
//! with `challenge`/`hello`/`welcome` registration (the hello proves the secret with an HMAC
//! over the controller's nonce, never sends it), reconnection with backoff, keep-alive pings, and the
//! dispatch of offers, candidates and session ends to the `Session`s it owns. One
//! session's failure ends that session only. When the link drops the sessions keep streaming for
//! `--resume-grace` and are announced again (`resume`) once it is back; on shutdown each one is
//! ended with `shutting_down` before the link closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, warn};
use vdesk_protocol::{
    hello_proof, AgentToController, ControllerToAgent, ErrorCode, SessionId, PROTOCOL_VERSION,
};

use crate::config::Config;
use crate::context::AgentContext;
use crate::control::Room;
use crate::media::MediaHub;
use crate::session::Session;

const PING_EVERY: Duration = Duration::from_secs(15);
const DEAD_AFTER: Duration = Duration::from_secs(45);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The `sessionEnded` reason when a viewer asks for an ICE restart.
pub const ICE_RESTART_UNSUPPORTED: &str =
    "this VM agent cannot restart ICE on a running session (webrtcbin 1.22); start a new session";
/// Longest wait for the close frame to leave on shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the agent stopped for good (as opposed to reconnecting).
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("the controller refused this agent: {0} (check --vm-id and --token)")]
    Refused(String),
}

/// Most messages kept for the controller while the link is down; beyond it, candidates and
/// states are dropped (session ends never are).
const MAX_PENDING: usize = 1024;

/// The sessions this agent is streaming, by id, and the media and the control they share.
#[derive(Debug)]
struct Sessions {
    map: HashMap<SessionId, Session>,
    media: MediaHub,
    /// Who holds control among the viewers.
    room: Room,
}

impl Sessions {
    /// Stops and frees a session's pipeline off the async threads (stopping can block briefly).
    fn remove(&mut self, id: &SessionId) {
        if let Some(session) = self.map.remove(id) {
            tokio::task::spawn_blocking(move || drop(session));
        }
    }

    fn clear(&mut self) {
        let ids: Vec<_> = self.map.keys().cloned().collect();
        for id in ids {
            self.remove(&id);
        }
    }

    /// Frees every session and waits until their pipelines are stopped.
    async fn stop_all(&mut self) {
        let all: Vec<Session> = self.map.drain().map(|(_, s)| s).collect();
        let _ = tokio::task::spawn_blocking(move || drop(all)).await;
    }
}

/// What happened while the controller link was down: what the sessions said (to be sent once
/// it is back), and until when the sessions are kept.
#[derive(Debug, Default)]
struct Offline {
    pending: Vec<AgentToController>,
    keep_until: Option<Instant>,
}

impl Offline {
    /// Takes one message a session produced while the link was down.
    fn take(&mut self, msg: AgentToController, sessions: &mut Sessions) {
        if let AgentToController::SessionEnded { session_id, .. } = &msg {
            if !sessions.map.contains_key(session_id) {
                return;
            }
            sessions.remove(session_id);
        } else if self.pending.len() >= MAX_PENDING {
            return;
        }
        self.pending.push(msg);
    }
}

/// What the agent's sessions share, built once by `main`: the media (captures, encoders, the
/// fan-out, and through it the agent's context) and the room (who holds control).
#[derive(Debug, Clone)]
pub struct Shared {
    pub media: MediaHub,
    pub room: Room,
}

impl Shared {
    /// The media for `config` in the agent's `context` (with the VM's sound per `--audio`), its
    /// counters reported at that context's `/metrics`, and an empty room.
    pub fn new(config: &Config, context: Arc<AgentContext>) -> Self {
        let media = MediaHub::with_audio(
            config.media.clone(),
            context,
            crate::media::audio::from_mode(config.audio),
        );
        media.context().metrics.set_media(media.counters());
        Shared {
            media,
            room: Room::default(),
        }
    }
}

/// `run_with` on what `Shared::new` builds, in a context of its own (software encoders).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), FatalError> {
    let shared = Shared::new(&config, Arc::default());
    run_with(config, shared, shutdown).await
}

/// Runs until `shutdown` resolves or the controller refuses the agent for good. On `shutdown`
/// every session is ended with `shutting_down` (the controller tells the viewers) and every
/// pipeline is stopped before this returns.
pub async fn run_with(
    config: Config,
    shared: Shared,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), FatalError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<AgentToController>();
    // The second link, for WebSocket viewers' media (stops when this returns).
    let _media_link = crate::wsmedia::spawn(&config, &shared.media, &shared.room);
    let mut sessions = Sessions {
        map: HashMap::new(),
        media: shared.media,
        room: shared.room,
    };
    let mut offline = Offline::default();
    let mut backoff = BACKOFF_START;
    // Which of the controllers (`--controller a,b,c`) this attempt goes to.
    let mut which = 0usize;
    tokio::pin!(shutdown);
    loop {
        let url = config.ws_urls.get(which).unwrap_or(&config.ws_url).clone();
        let outcome = connect_and_serve(
            &config,
            &url,
            &tx,
            &mut rx,
            &mut sessions,
            &mut offline,
            &mut backoff,
            shutdown.as_mut(),
        )
        .await;
        match outcome {
            Ok(()) => {
                sessions.stop_all().await;
                return Ok(());
            }
            Err(Disconnect::Fatal(e)) => {
                sessions.stop_all().await;
                return Err(e);
            }
            Err(Disconnect::Retry(why)) => {
                if !sessions.map.is_empty() && offline.keep_until.is_none() {
                    // The media flows peer to peer without us: keep it flowing, and resume the
                    // sessions with the controller once it is back (it may just be restarting).
                    offline.keep_until = Some(Instant::now() + config.resume_grace);
                    warn!(
                        "controller link lost: keeping {} session(s) for up to {}s",
                        sessions.map.len(),
                        config.resume_grace.as_secs()
                    );
                }
                warn!(
                    "controller link down ({why}); retrying in {:.1}s",
                    backoff.as_secs_f32()
                );
            }
        }
        // Another controller of the cluster is tried at once; the back-off grows only once
        // every one of them failed.
        which = (which + 1) % config.ws_urls.len().max(1);
        let pause = if which != 0 { BACKOFF_START } else { backoff };
        let wake = Instant::now() + pause;
        loop {
            let give_up = offline.keep_until;
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                () = &mut shutdown => {
                    info!("shutting down: ending {} session(s) (no controller to tell)", sessions.map.len());
                    sessions.stop_all().await;
                    return Ok(());
                }
                () = sleep_until_some(give_up) => {
                    warn!(
                        "ending {} session(s): the controller did not come back within {}s",
                        sessions.map.len(),
                        config.resume_grace.as_secs()
                    );
                    sessions.clear();
                    offline = Offline::default();
                }
                Some(msg) = rx.recv() => offline.take(msg, &mut sessions),
            }
        }
        if which == 0 {
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Sleeps until `t`, or forever without one.
async fn sleep_until_some(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

enum Disconnect {
    Retry(String),
    Fatal(FatalError),
}

/// One connection: hello, welcome, resume, then serve until it drops (`Err`) or `shutdown`
/// resolves (`Ok`, after telling the controller that every session ends).
// The loop's state, passed by reference; `url` is this attempt's controller of the cluster.
#[allow(clippy::too_many_arguments)]
async fn connect_and_serve(
    config: &Config,
    url: &url::Url,
    tx: &mpsc::UnboundedSender<AgentToController>,
    rx: &mut mpsc::UnboundedReceiver<AgentToController>,
    sessions: &mut Sessions,
    offline: &mut Offline,
    backoff: &mut Duration,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<(), Disconnect> {
    let retry = |what: &str, e: &dyn std::fmt::Display| Disconnect::Retry(format!("{what}: {e}"));
    let connect = timeout(
        HANDSHAKE_TIMEOUT,
        crate::tls::connect(url, config.tls.as_ref()),
    );
    let ws = tokio::select! {
        r = connect => r
            .map_err(|e| retry(&format!("connecting to {url}"), &e))?
            .map_err(|e| retry(&format!("connecting to {url}"), &e))?,
        () = &mut shutdown => return Ok(()),
    };
    let (mut sink, mut stream) = ws.split();

    // The controller speaks first: a fresh nonce, over which we prove our secret (the secret
    // itself never crosses the wire).
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let nonce = loop {
        let frame = tokio::select! {
            f = timeout(deadline.saturating_duration_since(Instant::now()), stream.next()) => f
                .map_err(|_| Disconnect::Retry(
                    "no challenge from the controller (a controller older than protocol 2 \
                     sends none: upgrade it)".into()))?,
            () = &mut shutdown => return Ok(()),
        };
        let Some(frame) = frame else {
            return Err(Disconnect::Retry("closed before the challenge".into()));
        };
        let frame = frame.map_err(|e| retry("reading the challenge", &e))?;
        let Message::Text(text) = frame else { continue };
        match serde_json::from_str::<ControllerToAgent>(&text) {
            Ok(ControllerToAgent::Challenge { nonce }) => break nonce,
            Ok(ControllerToAgent::Error { code, message }) => {
                return Err(Disconnect::Retry(format!(
                    "controller said {code:?}: {message}"
                )))
            }
            Ok(other) => debug!("ignoring {other:?} before the challenge"),
            Err(e) => warn!("unreadable message from controller before the challenge: {e}"),
        }
    };
    let hello = AgentToController::Hello {
        vm_id: config.vm_id.clone(),
        proof: Some(hello_proof(&config.token, &nonce, &config.vm_id)),
        token: None,
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        info: crate::thumbnail::agent_info(&config.codecs, &sessions.media.context().encoders),
    };
    sink.send(Message::text(to_json(&hello)))
        .await
        .map_err(|e| retry("sending hello", &e))?;

    // Wait for welcome (or a refusal).
    loop {
        let frame = tokio::select! {
            f = timeout(deadline.saturating_duration_since(Instant::now()), stream.next()) => f
                .map_err(|_| Disconnect::Retry("no welcome from the controller".into()))?,
            () = &mut shutdown => return Ok(()),
        };
        let Some(frame) = frame else {
            return Err(Disconnect::Retry("closed before welcome".into()));
        };
        let frame = frame.map_err(|e| retry("reading welcome", &e))?;
        let Message::Text(text) = frame else { continue };
        match serde_json::from_str::<ControllerToAgent>(&text) {
            Ok(ControllerToAgent::Welcome { ice_servers }) => {
                info!(vm = %config.vm_id, controller = %config.ws_url,
                      ice_servers = ice_servers.len(), "registered with the controller");
                *backoff = BACKOFF_START;
                break;
            }
            Ok(ControllerToAgent::Error { code, message }) => {
                return Err(match code {
                    ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::BadRequest => {
                        Disconnect::Fatal(FatalError::Refused(message))
                    }
                    _ => Disconnect::Retry(format!("controller said {code:?}: {message}")),
                });
            }
            Ok(other) => debug!("ignoring {other:?} before welcome"),
            Err(e) => warn!("unreadable message from controller before welcome: {e}"),
        }
    }

    // Tell the controller what happened while we were away: sessions that ended, then the ones
    // still streaming (`resume`, always sent: an empty list ends what it kept for us), then what
    // those said meanwhile.
    while let Ok(msg) = rx.try_recv() {
        offline.take(msg, sessions);
    }
    offline.keep_until = None;
    let (ends, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut offline.pending)
        .into_iter()
        .partition(|m| matches!(m, AgentToController::SessionEnded { .. }));
    let mut resumed: Vec<_> = sessions.map.values().map(Session::resume_info).collect();
    resumed.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    if !resumed.is_empty() {
        info!("resuming {} session(s) with the controller", resumed.len());
    }
    let rest = rest
        .into_iter()
        .filter(|m| session_of(m).is_some_and(|id| sessions.map.contains_key(id)));
    let catch_up: Vec<AgentToController> = ends
        .into_iter()
        .chain([AgentToController::Resume { sessions: resumed }])
        .chain(rest)
        .collect();
    for msg in catch_up {
        sink.send(Message::text(to_json(&msg)))
            .await
            .map_err(|e| retry("resuming", &e))?;
    }

    let mut ping = tokio::time::interval(PING_EVERY);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else {
                    return Err(Disconnect::Retry("controller closed the connection".into()));
                };
                let frame = frame.map_err(|e| retry("reading", &e))?;
                last_heard = Instant::now();
                match frame {
                    Message::Text(text) => match serde_json::from_str::<ControllerToAgent>(&text) {
                        Ok(msg) => handle(config, msg, tx, sessions),
                        Err(e) => warn!("unreadable message from controller: {e}"),
                    },
                    Message::Close(_) => {
                        return Err(Disconnect::Retry("controller closed the connection".into()))
                    }
                    _ => {}
                }
            }
            Some(msg) = rx.recv() => {
                if let AgentToController::SessionEnded { session_id, code, reason } = &msg {
                    if sessions.map.contains_key(session_id) {
                        warn!(session = %session_id, ?code, "session ended by agent: {reason}");
                        sessions.remove(session_id);
                    } else {
                        continue; // already gone: do not report twice
                    }
                }
                sink.send(Message::text(to_json(&msg))).await.map_err(|e| retry("sending", &e))?;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    return Err(Disconnect::Retry(format!(
                        "nothing heard from the controller for {}s", DEAD_AFTER.as_secs()
                    )));
                }
                sink.send(Message::Ping(Vec::new().into())).await.map_err(|e| retry("ping", &e))?;
            }
            () = &mut shutdown => {
                say_goodbye(&mut sink, sessions).await;
                return Ok(());
            }
        }
    }
}

/// On shutdown: every session ends with `shutting_down` (the controller tells its viewer), then
/// the WebSocket closes cleanly. Best effort: a broken link changes nothing about stopping.
async fn say_goodbye<S>(sink: &mut S, sessions: &Sessions)
where
    S: futures_util::Sink<Message> + Unpin,
{
    info!(
        "shutting down: ending {} session(s) and telling the controller",
        sessions.map.len()
    );
    let mut ids: Vec<&SessionId> = sessions.map.keys().collect();
    ids.sort();
    for id in ids {
        let msg = AgentToController::SessionEnded {
            session_id: id.clone(),
            code: ErrorCode::ShuttingDown,
            reason: "the VM agent is shutting down".into(),
        };
        if sink.send(Message::text(to_json(&msg))).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: CloseCode::Away,
        reason: "agent shutting down".into(),
    };
    let _ = timeout(GOODBYE_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
}

fn session_of(msg: &AgentToController) -> Option<&SessionId> {
    match msg {
        AgentToController::Answer { session_id, .. }
        | AgentToController::Candidate { session_id, .. }
        | AgentToController::PeerState { session_id, .. }
        | AgentToController::SessionEnded { session_id, .. }
        | AgentToController::SessionStats { session_id, .. } => Some(session_id),
        AgentToController::Hello { .. }
        | AgentToController::Check { .. }
        | AgentToController::Resume { .. }
        | AgentToController::Thumbnail { .. } => None,
    }
}

fn handle(
    config: &Config,
    msg: ControllerToAgent,
    tx: &mpsc::UnboundedSender<AgentToController>,
    sessions: &mut Sessions,
) {
    match msg {
        ControllerToAgent::Offer {
            session_id,
            sdp,
            ice_servers,
            grant,
        } => {
            let refuse = |code, reason: String| {
                warn!(session = %session_id, "refusing offer: {reason}");
                let _ = tx.send(AgentToController::SessionEnded {
                    session_id: session_id.clone(),
                    code,
                    reason,
                });
            };
            if sessions.map.contains_key(&session_id) {
                return refuse(ErrorCode::Conflict, "session already exists".into());
            }
            if sessions.map.len() >= config.max_sessions {
                return refuse(
                    ErrorCode::TooManyRequests,
                    format!(
                        "this VM already streams to {} viewers (--max-sessions)",
                        config.max_sessions
                    ),
                );
            }
            info!(session = %session_id, permission = ?grant.permission, "offer received");
            match Session::start_with_input(
                &sessions.media,
                session_id.clone(),
                &sdp,
                &ice_servers,
                &config.codecs,
                tx.clone(),
                grant,
                Some((&config.input, &sessions.room)),
            ) {
                Ok(session) => {
                    sessions.map.insert(session_id, session);
                }
                Err(e) => refuse(ErrorCode::AgentError, e.to_string()),
            }
        }
        ControllerToAgent::Candidate {
            session_id,
            candidate,
        } => match sessions.map.get(&session_id) {
            Some(s) => s.add_remote_candidate(candidate),
            None => debug!(session = %session_id, "candidate for unknown session"),
        },
        ControllerToAgent::Reoffer { session_id, .. } => {
            // webrtcbin 1.22 cannot answer an ICE restart: given a new offer with new ICE
            // credentials it sets them as the remote ones but keeps its own, gathers nothing
            // new, and the media does not come back (tried: see docs/operations.md). So the
            // session ends, and the viewer replaces it with a fresh one at once.
            if sessions.map.contains_key(&session_id) {
                warn!(session = %session_id, "viewer asked for an ICE restart: not supported, ending the session");
                let _ = tx.send(AgentToController::SessionEnded {
                    session_id,
                    code: ErrorCode::AgentError,
                    reason: ICE_RESTART_UNSUPPORTED.into(),
                });
            }
        }
        ControllerToAgent::EndSession {
            session_id,
            code,
            reason,
        } => {
            if sessions.map.contains_key(&session_id) {
                info!(session = %session_id, ?code, "session ended by controller: {reason}");
                sessions.remove(&session_id);
            }
        }
        ControllerToAgent::Error { code, message } => {
            error!(?code, "controller reported an error: {message}");
        }
        ControllerToAgent::Welcome { .. } => debug!("duplicate welcome ignored"),
        ControllerToAgent::Checked { .. } => debug!("checked (a doctor's answer) ignored"),
        ControllerToAgent::Challenge { .. } => debug!("challenge after welcome ignored"),
        ControllerToAgent::ThumbnailRequest { max_width } => {
            crate::thumbnail::answer(config.media.display.clone(), max_width, tx.clone())
        }
    }
}

fn to_json(msg: &AgentToController) -> String {
    // Our own types always serialize; an empty object would be refused loudly by the controller.
    serde_json::to_string(msg).unwrap_or_else(|_| "{}".into())
}
