//! `GET /api/agent/media`: an agent's media link (the WebSocket fallback's video), next to its
//! signalling link. Authenticated like it: a `challenge` with a fresh nonce first, a `hello`
//! whose proof (HMAC of the agent secret over the nonce and the VM id) must verify within 5 s
//! and within 4 KiB read (`agent_ws::ReadBudget`), then `welcome`. After that: binary frames
//! (one encoded video frame each, for one WebSocket viewer of this agent's VM only) and JSON
//! text (`MediaToController`) from the agent, `ControllerToMedia` to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::warn;
use vdesk_protocol::wsmedia::{MediaToController, MAX_WS_FRAME, MAX_WS_TEXT};
use vdesk_protocol::{AgentToController, ControllerToAgent, ErrorCode, VmId, PROTOCOL_VERSION};

use crate::agent_ws::upgrade_agent_socket;
use crate::state::AppState;

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(15);
const DEAD_AFTER: Duration = Duration::from_secs(45);

/// The upgrade (400 without one); the secret is checked in the hello.
pub(crate) async fn upgrade(State(state): State<AppState>, req: Request) -> Response {
    let config = WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_WS_FRAME + 1024))
        .max_frame_size(Some(MAX_WS_FRAME + 1024));
    upgrade_agent_socket(
        req,
        "the agents' media WebSocket",
        config,
        |socket, budget| serve(state, socket, budget),
    )
}

fn json(msg: &ControllerToAgent) -> Message {
    Message::text(serde_json::to_string(msg).unwrap_or_default())
}

/// The hello: the VM it proves to be, or why not.
async fn hello<S>(
    state: &AppState,
    socket: &mut S,
    nonce: &str,
) -> Result<VmId, (ErrorCode, String)>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| {
                (
                    ErrorCode::BadRequest,
                    "no hello received in time".to_string(),
                )
            })?
            .ok_or((ErrorCode::BadRequest, "closed before hello".to_string()))?
            .map_err(|e| (ErrorCode::BadRequest, format!("before hello: {e}")))?;
        let Message::Text(text) = frame else { continue };
        return match serde_json::from_str::<AgentToController>(text.as_str()) {
            Ok(AgentToController::Hello {
                vm_id,
                proof: Some(proof),
                protocol_version,
                ..
            }) => {
                if !state
                    .config()
                    .agent_auth()
                    .accepts_proof(&vm_id, nonce, &proof)
                {
                    warn!(vm = %vm_id, "agent media link refused: wrong proof of its secret");
                    return Err((
                        ErrorCode::Unauthorized,
                        "invalid agent secret (the hello's proof does not verify)".into(),
                    ));
                }
                if protocol_version != PROTOCOL_VERSION {
                    return Err((
                        ErrorCode::BadRequest,
                        format!("protocolVersion {protocol_version} is not supported"),
                    ));
                }
                Ok(vm_id)
            }
            Ok(_) => Err((
                ErrorCode::BadRequest,
                "the first message must be a hello with a proof".into(),
            )),
            Err(e) => Err((ErrorCode::BadRequest, format!("invalid hello: {e}"))),
        };
    }
}

async fn serve<IO>(state: AppState, socket: WebSocketStream<IO>, budget: Arc<AtomicUsize>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let nonce = crate::auth::hex(&rand::random::<[u8; 32]>());
    if sink
        .send(json(&ControllerToAgent::Challenge {
            nonce: nonce.clone(),
        }))
        .await
        .is_err()
    {
        return;
    }
    let vm = match hello(&state, &mut stream, &nonce).await {
        Ok(vm) => vm,
        Err((code, message)) => {
            let _ = sink
                .send(json(&ControllerToAgent::Error { code, message }))
                .await;
            let _ = sink.close().await;
            return;
        }
    };
    budget.store(usize::MAX, Ordering::Relaxed);
    if sink
        .send(json(&ControllerToAgent::Welcome {
            ice_servers: Vec::new(),
        }))
        .await
        .is_err()
    {
        return;
    }
    let media = state.wsmedia();
    let (link, mut rx) = media.attach_link(&vm);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let silence = tokio::time::sleep(DEAD_AFTER);
    tokio::pin!(silence);
    let mut told_bad = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                silence.as_mut().reset(tokio::time::Instant::now() + DEAD_AFTER);
                let problem = match frame {
                    Message::Binary(bytes) => media.on_frame(&vm, &bytes).err(),
                    Message::Text(text) if text.len() <= MAX_WS_TEXT => {
                        match serde_json::from_str::<MediaToController>(text.as_str()) {
                            Ok(msg) => {
                                media.on_agent_message(&vm, msg);
                                None
                            }
                            Err(e) => Some(format!("invalid message: {e}")),
                        }
                    }
                    Message::Text(_) => Some("text message too large".into()),
                    Message::Close(_) => break,
                    _ => None,
                };
                if let Some(p) = problem {
                    if !std::mem::replace(&mut told_bad, true) {
                        warn!(vm = %vm, "agent media link: dropping a bad frame: {p} (logged once)");
                    }
                }
            }
            text = rx.recv() => {
                // None: a newer link of the same VM replaced this one.
                let Some(text) = text else { break };
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            () = &mut silence => {
                warn!(vm = %vm, "agent media link silent too long, dropping it");
                break;
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    media.detach_link(&vm, link);
    let _ = sink.close().await;
}
