//! Helpers shared by the integration tests: a configured state, requests (by default carrying a
//! viewer token for the VM they name, see [`get`] and [`post_json`]), JSON bodies, and a fake
//! agent driving `agent_ws::run` through channels (no socket).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::Message;
use axum::http::{Request, Response};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;
use vdesk_controller::agent_ws::{self, AgentTiming};
use vdesk_controller::config::Password;
use vdesk_controller::viewer_token::{self, unix_now};
use vdesk_controller::{AgentToken, AppState, Config, ControllerSecret};
use vdesk_protocol::{ControllerToAgent, Permission, VmId};

/// The shared (any VM) agent token of [`config`].
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// The controller secret of [`config`]: viewer tokens and per-VM agent secrets come from it.
pub const SECRET: &str = "test-controller-secret-0123456789abcdef";
/// The admin token of [`config`].
pub const ADMIN: &str = "test-admin-token-0123456789";
pub const OFFER: &str =
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
pub const ANSWER: &str =
    "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
/// Upper bound for anything a test waits for; a hang fails instead of blocking the suite.
pub const WAIT: Duration = Duration::from_secs(3);

pub fn config() -> Config {
    let mut c = Config::new(AgentToken::new(TOKEN));
    c.secret = ControllerSecret::new(SECRET);
    c.admin_token = Some(Password(ADMIN.into()));
    c.vms = vec![VmId::new("demo").unwrap()];
    c.ice_servers = vec![vdesk_protocol::IceServer {
        urls: vec!["stun:192.0.2.1:3478".into()],
        username: None,
        credential: None,
    }];
    c
}

pub fn state() -> AppState {
    AppState::new(config())
}

pub fn cand(n: u32) -> Value {
    json!({"candidate": format!("candidate:{n} 1 UDP 2122252543 192.0.2.{n} 5000{n} typ host"),
           "sdpMid": "0", "sdpMLineIndex": 0})
}

pub fn eoc() -> Value {
    json!({"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0})
}

/// A new control token for `vm`, valid for an hour.
pub fn mint(vm: &str, permission: Permission) -> String {
    viewer_token::mint(
        &ControllerSecret::new(SECRET),
        &VmId::new(vm).unwrap(),
        permission,
        unix_now() + 3600,
    )
}

/// The control token these tests use for `vm` (always the same one, as a viewer keeps its link).
pub fn viewer_token(vm: &str) -> String {
    static TOKENS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let mut map = TOKENS.get_or_init(Default::default).lock().unwrap();
    map.entry(vm.to_owned())
        .or_insert_with(|| mint(vm, Permission::Control))
        .clone()
}

/// The VM a request is about: `/api/vms/{vm}`, else "demo" (the sessions of these tests).
fn vm_of(uri: &str) -> &str {
    uri.strip_prefix("/api/vms/")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
        .filter(|vm| !vm.is_empty())
        .unwrap_or("demo")
}

/// `GET uri` with the viewer token of the VM it names (see `vm_of`).
pub fn get(uri: &str) -> Request<Body> {
    bearer(anon_get(uri), &viewer_token(vm_of(uri)))
}

/// `GET uri` without any credential.
pub fn anon_get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// `POST uri` with a JSON body and the viewer token of the body's `vmId` (else "demo").
pub fn post_json(uri: &str, body: &Value) -> Request<Body> {
    let vm = body["vmId"].as_str().filter(|v| VmId::new(*v).is_ok());
    bearer(
        anon_post_json(uri, body),
        &viewer_token(vm.unwrap_or("demo")),
    )
}

/// `POST uri` with a JSON body and no credential.
pub fn anon_post_json(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Sets `Authorization: Bearer <token>` (replacing any).
pub fn bearer(mut req: Request<Body>, token: &str) -> Request<Body> {
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// Removes the `Authorization` header.
pub fn anon(mut req: Request<Body>) -> Request<Body> {
    req.headers_mut().remove("authorization");
    req
}

pub fn with_token(mut req: Request<Body>) -> Request<Body> {
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req
}

pub async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

pub async fn body_text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub async fn body_json(resp: Response<Body>) -> Value {
    let text = body_text(resp).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a JSON error with `status` and `code`; returns the message.
pub async fn expect_error(resp: Response<Body>, status: u16, code: &str) -> String {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "errors are JSON"
    );
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

/// An agent connection served by `agent_ws::run`, fed and read through channels.
pub struct FakeAgent {
    pub to_server: mpsc::UnboundedSender<Message>,
    pub from_server: mpsc::UnboundedReceiver<Message>,
    pub task: tokio::task::JoinHandle<()>,
    /// The nonce of the controller's `challenge`, once it arrived (see [`FakeAgent::nonce`]).
    pub challenge: Option<String>,
}

/// The `hello` of protocol 2 for `vm`, proving `secret` over `nonce`.
pub fn hello_json(vm: &str, secret: &str, nonce: &str) -> Value {
    let proof = vdesk_protocol::hello_proof(secret, nonce, &VmId::new(vm).unwrap());
    json!({"type": "hello", "vmId": vm, "proof": proof,
           "protocolVersion": vdesk_protocol::PROTOCOL_VERSION, "agentVersion": "test"})
}

impl FakeAgent {
    pub fn connect(state: &AppState, timing: AgentTiming) -> Self {
        let (to_server, server_rx) = mpsc::unbounded_channel::<Message>();
        let (server_tx, from_server) = mpsc::unbounded_channel::<Message>();
        let sink = Box::pin(futures_util::sink::unfold(
            server_tx,
            |tx, msg: Message| async move {
                tx.send(msg).map_err(|_| ())?;
                Ok::<_, ()>(tx)
            },
        ));
        let stream = Box::pin(futures_util::stream::unfold(
            server_rx,
            |mut rx| async move { rx.recv().await.map(|m| (Ok::<_, Infallible>(m), rx)) },
        ));
        let task = tokio::spawn(agent_ws::run(state.clone(), sink, stream, timing));
        Self {
            to_server,
            from_server,
            task,
            challenge: None,
        }
    }

    /// The nonce of this connection's `challenge` (the controller's first frame).
    pub async fn nonce(&mut self) -> String {
        if let Some(n) = &self.challenge {
            return n.clone();
        }
        let m = tokio::time::timeout(WAIT, self.from_server.recv())
            .await
            .expect("no challenge in time")
            .expect("agent channel closed");
        match m {
            Message::Text(t) => match serde_json::from_str(t.as_str()) {
                Ok(ControllerToAgent::Challenge { nonce }) => {
                    self.challenge = Some(nonce.clone());
                    nonce
                }
                other => panic!("expected the challenge first, got {other:?}"),
            },
            other => panic!("expected the challenge first, got {other:?}"),
        }
    }

    /// Answers the challenge: `hello` for `vm` proving `secret`.
    pub async fn hello(&mut self, vm: &str, secret: &str) {
        let nonce = self.nonce().await;
        self.send(hello_json(vm, secret, &nonce));
    }

    /// Connects and says hello for `vm`, checking the welcome.
    pub async fn registered(state: &AppState, vm: &str) -> Self {
        let mut a = Self::connect(state, AgentTiming::default());
        a.hello(vm, TOKEN).await;
        match a.recv().await {
            ControllerToAgent::Welcome { ice_servers } => assert_eq!(ice_servers.len(), 1),
            other => panic!("expected welcome, got {other:?}"),
        }
        a
    }

    pub fn send(&self, v: Value) {
        self.to_server
            .send(Message::Text(v.to_string().into()))
            .unwrap();
    }

    /// Next frame that is not a ping (nor the `challenge`, which is kept in `self.challenge`).
    pub async fn frame(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(WAIT, self.from_server.recv())
                .await
                .expect("agent got nothing in time")
                .expect("agent channel closed");
            if let Message::Text(t) = &m {
                if let Ok(ControllerToAgent::Challenge { nonce }) = serde_json::from_str(t.as_str())
                {
                    self.challenge = Some(nonce);
                    continue;
                }
            }
            if !matches!(m, Message::Ping(_)) {
                return m;
            }
        }
    }

    pub async fn recv(&mut self) -> ControllerToAgent {
        match self.frame().await {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}
