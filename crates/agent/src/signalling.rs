//! The agent's link to its controller: a WebSocket it dials out on (the VM needs no open port),
//! with `hello`/`welcome` registration, reconnection with backoff, keep-alive pings, and the
//! dispatch of offers, candidates and session ends to the `Session`s it owns. One session's
//! failure ends that session only.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, warn};
use vdesk_protocol::{
    AgentToController, ControllerToAgent, ErrorCode, SessionId, PROTOCOL_VERSION,
};

use crate::config::Config;
use crate::session::Session;

const PING_EVERY: Duration = Duration::from_secs(15);
const DEAD_AFTER: Duration = Duration::from_secs(45);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why the agent stopped for good (as opposed to reconnecting).
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("the controller refused this agent: {0} (check --vm-id and --token)")]
    Refused(String),
}

/// The sessions this agent is streaming, by id.
#[derive(Debug, Default)]
struct Sessions {
    map: HashMap<SessionId, Session>,
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
}

/// Runs until `shutdown` resolves or the controller refuses the agent for good.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), FatalError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<AgentToController>();
    let mut sessions = Sessions::default();
    let mut backoff = BACKOFF_START;
    tokio::pin!(shutdown);
    loop {
        let outcome = tokio::select! {
            r = connect_and_serve(&config, &tx, &mut rx, &mut sessions, &mut backoff) => r,
            () = &mut shutdown => {
                info!("shutting down: ending {} session(s)", sessions.map.len());
                sessions.clear();
                return Ok(());
            }
        };
        match outcome {
            Err(Disconnect::Fatal(e)) => {
                sessions.clear();
                return Err(e);
            }
            Err(Disconnect::Retry(why)) => {
                // The controller ends these sessions on its side too (viewers get `ended` and
                // reconnect), so keeping them would only leak pipelines.
                if !sessions.map.is_empty() {
                    warn!(
                        "ending {} session(s): controller link lost",
                        sessions.map.len()
                    );
                    sessions.clear();
                }
                warn!(
                    "controller link down ({why}); retrying in {:.1}s",
                    backoff.as_secs_f32()
                );
            }
            Ok(()) => {}
        }
        tokio::select! {
            () = sleep(backoff) => {}
            () = &mut shutdown => {
                sessions.clear();
                return Ok(());
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Disconnect {
    Retry(String),
    Fatal(FatalError),
}

async fn connect_and_serve(
    config: &Config,
    tx: &mpsc::UnboundedSender<AgentToController>,
    rx: &mut mpsc::UnboundedReceiver<AgentToController>,
    sessions: &mut Sessions,
    backoff: &mut Duration,
) -> Result<(), Disconnect> {
    let retry = |what: &str, e: &dyn std::fmt::Display| Disconnect::Retry(format!("{what}: {e}"));
    let (ws, _) = timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::connect_async(config.ws_url.as_str()),
    )
    .await
    .map_err(|e| retry(&format!("connecting to {}", config.ws_url), &e))?
    .map_err(|e| retry(&format!("connecting to {}", config.ws_url), &e))?;
    let (mut sink, mut stream) = ws.split();

    let hello = AgentToController::Hello {
        vm_id: config.vm_id.clone(),
        token: config.token.clone(),
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    sink.send(Message::text(to_json(&hello)))
        .await
        .map_err(|e| retry("sending hello", &e))?;

    // Wait for welcome (or a refusal).
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let frame = timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.next(),
        )
        .await
        .map_err(|_| Disconnect::Retry("no welcome from the controller".into()))?;
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

    // Anything sessions said while we were away is stale for the new controller connection.
    while rx.try_recv().is_ok() {}

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
        }
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
            permission,
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
            info!(session = %session_id, ?permission, "offer received");
            match Session::start_with_input(
                session_id.clone(),
                &sdp,
                &ice_servers,
                &config.media,
                &config.codecs,
                tx.clone(),
                permission,
                Some(&config.input),
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
    }
}

fn to_json(msg: &AgentToController) -> String {
    // Our own types always serialize; an empty object would be refused loudly by the controller.
    serde_json::to_string(msg).unwrap_or_else(|_| "{}".into())
}
