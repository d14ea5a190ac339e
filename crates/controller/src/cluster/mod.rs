//! Controllers as a cluster on NATS (`--cluster nats://...`): any controller answers any viewer
//! request. Off by default; without `--cluster` nothing here runs and the controller is the
//! single in-memory process it always was. The relay state machine (`relay/`) knows nothing of
//! this: each node keeps its own relay for the agents connected to it, and this module routes
//! every viewer request to the node whose relay holds the session or the VM.
//!
//! What lives in NATS (JetStream key-value, file storage):
//! - bucket `vdesk_leases`: VM id -> node id of the controller holding that VM's agent link, a
//!   lease with a TTL of [`LEASE_TTL`], renewed every [`RENEW`] while the link lives (and
//!   written at once when an agent registers); a node cut off from NATS cannot renew, so its
//!   leases lapse and no other node routes to it.
//! - bucket `vdesk_sessions`: session id -> VM id, written when a session is created.
//!
//! Subjects: `vdesk.node.{node}.http` (request/reply: a viewer request forwarded whole to the
//! node that holds its VM, run through that node's own router, access checks included) and
//! `vdesk.node.{node}.sse` (an event stream opened on the holder and its bytes streamed to the
//! entry node on a subject of its own, `vdesk.sse.{random}`, with heartbeats both ways).
//! `vdesk.revoke` carries link revocations (`{"node", "link"}`): every node applies one that
//! another node published through [`AppState::revoke_link`], so a revoked link is refused and
//! its sessions end on every node (nothing is forwarded: no loop).
//! While NATS is unreachable, requests that need the cluster get 503 at once; event streams
//! already open stay open (the media is peer to peer and never needed the controller).

mod wire;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use tower::ServiceExt;
use tracing::{debug, info, warn};
use vdesk_protocol::{ErrorCode, SessionId, VmId};

use crate::error::AppError;
use crate::state::AppState;

pub use wire::{decode_request, decode_response, encode_request, encode_response, WireRequest};

/// A lease not renewed for this long lapses: other nodes stop routing to its holder.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Leases of live agent links are renewed this often (new links are claimed within [`SCAN`]).
pub const RENEW: Duration = Duration::from_secs(1);
/// How often the node looks for agent links that came or went.
pub const SCAN: Duration = Duration::from_millis(200);
/// Longest wait for NATS on a viewer request before it gets 503.
pub const NATS_DEADLINE: Duration = Duration::from_secs(3);
/// Heartbeats of a forwarded event stream, both ways; one missing for [`SSE_SILENCE`] ends it.
const SSE_BEAT: Duration = Duration::from_secs(2);
const SSE_SILENCE: Duration = Duration::from_secs(6);
const LEASES: &str = "vdesk_leases";
/// Subject of link revocations, published by the node that revoked, applied by the others.
const REVOKE: &str = "vdesk.revoke";
const SESSIONS: &str = "vdesk_sessions";
/// A session's VM is remembered this long after it was written (longer than a link lives).
const SESSION_KEY_AGE: Duration = Duration::from_secs(31 * 24 * 3600);

/// Checks a `--cluster` value: comma-separated `nats://`, `tls://`, `ws://` or `wss://` URLs.
pub fn check_url(raw: &str) -> Result<(), String> {
    let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(
            "give one or more NATS URLs, comma-separated, e.g. nats://127.0.0.1:4222".into(),
        );
    }
    for p in parts {
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| p.starts_with(s) && p.len() > s.len());
        if !scheme_ok || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(
                "each URL must be nats://HOST:PORT, tls://HOST:PORT, ws:// or wss:// (with \
                 user:password@ or TOKEN@ if the NATS server wants them)"
                    .into(),
            );
        }
    }
    Ok(())
}

fn percent(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The two key-value buckets, once NATS answered.
#[derive(Clone)]
struct Stores {
    leases: kv::Store,
    sessions: kv::Store,
}

/// This node's handle on the cluster.
pub struct Cluster {
    client: async_nats::Client,
    node: String,
    stores: Mutex<Option<Stores>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

/// Marks a request that came over NATS from another node: it is served here, never forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded;

fn unavailable(why: &str) -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal,
        format!("the controller cluster is unavailable ({why}); try again in a few seconds"),
    )
}

impl Cluster {
    /// Connects to NATS (in the background: the controller starts even when NATS is down) and
    /// returns the node's handle. `url` is the `--cluster` value.
    pub async fn connect(url: &str) -> Result<Arc<Self>, String> {
        let node = format!("{:016x}", rand::random::<u64>());
        // Credentials in the URL (`user:password@`, or `TOKEN@`) become NATS credentials; the
        // addresses go to the client without them.
        let mut options = async_nats::ConnectOptions::new();
        let mut servers = Vec::new();
        for raw in url.split(',').map(str::trim) {
            let mut u = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
            let user = percent(u.username());
            match u.password().map(percent) {
                Some(pass) if !user.is_empty() => {
                    options = options.user_and_password(user, pass);
                }
                None if !user.is_empty() => options = options.token(user),
                _ => {}
            }
            let _ = u.set_username("");
            let _ = u.set_password(None);
            servers.push(u.to_string());
        }
        let client = options
            .name(format!("vdesk-controller {node}"))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(NATS_DEADLINE))
            .retry_on_initial_connect()
            .event_callback(|ev| async move { info!(event = %ev, "NATS") })
            .connect(servers.join(","))
            .await
            .map_err(|e| format!("cannot connect to NATS: {e}"))?;
        Ok(Arc::new(Self {
            client,
            node,
            stores: Mutex::new(None),
        }))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the NATS connection is up right now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn stores(&self) -> Option<Stores> {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn open_stores(&self) -> Result<Stores, String> {
        let js = jetstream::new(self.client.clone());
        // The bucket's stream is made here rather than by `create_key_value`, whose account
        // query does not parse the reply of Debian 12's nats-server 2.9; same settings.
        let bucket = |name: &str, age: Duration| jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age: age,
            duplicate_window: age.min(Duration::from_secs(120)),
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        };
        let mut stores = Vec::new();
        for (name, age) in [(LEASES, LEASE_TTL), (SESSIONS, SESSION_KEY_AGE)] {
            js.get_or_create_stream(bucket(name, age))
                .await
                .map_err(|e| format!("JetStream stream KV_{name}: {e}"))?;
            stores.push(
                js.get_key_value(name)
                    .await
                    .map_err(|e| format!("JetStream bucket {name}: {e}"))?,
            );
        }
        let sessions = stores.pop().ok_or("no sessions bucket")?;
        let leases = stores.pop().ok_or("no leases bucket")?;
        Ok(Stores { leases, sessions })
    }

    /// The node holding `vm`'s agent link, if a lease is live.
    pub async fn holder(&self, vm: &VmId) -> Result<Option<String>, AppError> {
        let stores = self
            .stores()
            .ok_or_else(|| unavailable("JetStream not ready"))?;
        match tokio::time::timeout(NATS_DEADLINE, stores.leases.get(vm.as_str())).await {
            Ok(Ok(v)) => Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned())),
            Ok(Err(e)) => Err(unavailable(&format!("lease lookup failed: {e}"))),
            Err(_) => Err(unavailable("lease lookup timed out")),
        }
    }

    /// The VM of session `id`, if any node created it.
    pub async fn session_vm(&self, id: &SessionId) -> Result<Option<VmId>, AppError> {
        let stores = self
            .stores()
            .ok_or_else(|| unavailable("JetStream not ready"))?;
        match tokio::time::timeout(NATS_DEADLINE, stores.sessions.get(id.as_str())).await {
            Ok(Ok(v)) => Ok(v.and_then(|b| VmId::new(String::from_utf8_lossy(&b)).ok())),
            Ok(Err(e)) => Err(unavailable(&format!("session lookup failed: {e}"))),
            Err(_) => Err(unavailable("session lookup timed out")),
        }
    }

    async fn remember_session(&self, id: &str, vm: &VmId) -> Result<(), AppError> {
        let stores = self
            .stores()
            .ok_or_else(|| unavailable("JetStream not ready"))?;
        let put = stores
            .sessions
            .put(id, Bytes::copy_from_slice(vm.as_str().as_bytes()));
        match tokio::time::timeout(NATS_DEADLINE, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(&format!("cannot record the session: {e}"))),
            Err(_) => Err(unavailable("recording the session timed out")),
        }
    }

    /// Starts the node's background work: the buckets, the leases of its agent links, and the
    /// service answering other nodes' forwarded requests. Runs until the tasks are dropped
    /// with the runtime.
    pub fn start(self: &Arc<Self>, state: AppState) {
        let router = crate::app(state.clone());
        tokio::spawn(self.clone().keep_leases(state.clone()));
        tokio::spawn(self.clone().serve_http(router.clone()));
        tokio::spawn(self.clone().serve_sse(router));
        tokio::spawn(self.clone().serve_revocations(state));
    }

    /// Tells every other node that link `link_id` was revoked here (they end its sessions and
    /// refuse it). Fails with 503 when NATS does not take it within [`NATS_DEADLINE`].
    pub async fn publish_revocation(&self, link_id: &str) -> Result<(), AppError> {
        if !self.connected() {
            return Err(unavailable(
                "NATS is unreachable: the link is revoked on this controller only; try again",
            ));
        }
        let msg = serde_json::json!({"node": self.node, "link": link_id}).to_string();
        let sent = async {
            self.client.publish(REVOKE, msg.into()).await.ok()?;
            self.client.flush().await.ok()
        };
        match tokio::time::timeout(NATS_DEADLINE, sent).await {
            Ok(Some(())) => Ok(()),
            _ => Err(unavailable(
                "the revocation did not reach NATS: the link is revoked on this controller \
                 only; try again",
            )),
        }
    }

    /// Applies the revocations other nodes publish.
    async fn serve_revocations(self: Arc<Self>, state: AppState) {
        let mut sub = loop {
            match self.client.subscribe(REVOKE).await {
                Ok(s) => break s,
                Err(e) => {
                    warn!("cluster: cannot subscribe to {REVOKE}: {e}");
                    tokio::time::sleep(RENEW).await;
                }
            }
        };
        while let Some(msg) = sub.next().await {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
                warn!("cluster: malformed revocation dropped");
                continue;
            };
            let (Some(node), Some(link)) = (v["node"].as_str(), v["link"].as_str()) else {
                warn!("cluster: malformed revocation dropped");
                continue;
            };
            if node == self.node {
                continue; // applied already, by the route that published it
            }
            let valid = link.len() == 16
                && link
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !valid {
                warn!("cluster: revocation of a malformed link id dropped");
                continue;
            }
            match state.revoke_link(link) {
                Ok((ended, _)) => info!(link, from = node, ended, "cluster: link revoked"),
                Err(e) => warn!(link, from = node, "cluster: revocation not applied: {e}"),
            }
        }
    }

    /// Opens the buckets, then claims and renews a lease for every VM whose agent link is on
    /// this node, and gives up those whose link is gone.
    async fn keep_leases(self: Arc<Self>, state: AppState) {
        let mut held: HashSet<VmId> = HashSet::new();
        let mut last_renew = Instant::now();
        let mut scan = tokio::time::interval(SCAN);
        loop {
            scan.tick().await;
            if self.stores().is_none() {
                if !self.connected() {
                    continue;
                }
                match self.open_stores().await {
                    Ok(s) => {
                        info!(node = %self.node, "cluster: JetStream buckets ready");
                        *self.stores.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                    }
                    Err(e) => {
                        warn!("cluster: {e}");
                        continue;
                    }
                }
            }
            let Some(stores) = self.stores() else {
                continue;
            };
            let online: HashSet<VmId> = state.relay(|r, _| {
                r.vms()
                    .into_iter()
                    .filter(|v| v.online)
                    .map(|v| v.vm_id)
                    .collect()
            });
            let renew_all = last_renew.elapsed() >= RENEW;
            if renew_all {
                last_renew = Instant::now();
            }
            if !self.connected() {
                // Cut off: claim nothing; the leases lapse on their own.
                held.clear();
                continue;
            }
            for vm in &online {
                if renew_all || !held.contains(vm) {
                    let put = stores
                        .leases
                        .put(vm.as_str(), Bytes::from(self.node.clone()));
                    match tokio::time::timeout(NATS_DEADLINE, put).await {
                        Ok(Ok(_)) => {
                            if held.insert(vm.clone()) {
                                info!(vm = %vm, node = %self.node, "cluster: lease claimed");
                            }
                        }
                        Ok(Err(e)) => {
                            warn!(vm = %vm, "cluster: lease not renewed: {e}");
                            held.remove(vm);
                        }
                        Err(_) => {
                            warn!(vm = %vm, "cluster: lease renewal timed out");
                            held.remove(vm);
                        }
                    }
                }
            }
            let gone: Vec<VmId> = held.difference(&online).cloned().collect();
            for vm in gone {
                held.remove(&vm);
                // Give it up only if it is still ours (the agent may have moved already).
                if let Ok(Ok(Some(entry))) =
                    tokio::time::timeout(NATS_DEADLINE, stores.leases.entry(vm.as_str())).await
                {
                    if entry.value.as_ref() == self.node.as_bytes() {
                        let _ = stores
                            .leases
                            .delete_expect_revision(vm.as_str(), Some(entry.revision))
                            .await;
                        info!(vm = %vm, "cluster: lease released");
                    }
                }
            }
        }
    }

    /// Answers forwarded plain requests: runs them through this node's router.
    async fn serve_http(self: Arc<Self>, router: Router) {
        let subject = format!("vdesk.node.{}.http", self.node);
        let mut sub = loop {
            match self.client.subscribe(subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    warn!("cluster: cannot subscribe to {subject}: {e}");
                    tokio::time::sleep(RENEW).await;
                }
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let router = router.clone();
            let client = self.client.clone();
            tokio::spawn(async move {
                let resp = match decode_request(&msg.payload) {
                    Ok(req) => router.oneshot(req).await.into_response(),
                    Err(e) => AppError::bad_request(e).into_response(),
                };
                if let Ok(bytes) = encode_response(resp).await {
                    let _ = client.publish(reply, bytes).await;
                }
            });
        }
    }

    /// Answers forwarded event streams: opens the stream here and pumps its bytes to the entry
    /// node's subject until either side goes quiet or away.
    async fn serve_sse(self: Arc<Self>, router: Router) {
        let subject = format!("vdesk.node.{}.sse", self.node);
        let mut sub = loop {
            match self.client.subscribe(subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    warn!("cluster: cannot subscribe to {subject}: {e}");
                    tokio::time::sleep(RENEW).await;
                }
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let router = router.clone();
            let client = self.client.clone();
            tokio::spawn(async move {
                let (req, to) = match wire::decode_stream_request(&msg.payload) {
                    Ok(x) => x,
                    Err(e) => {
                        if let Ok(b) =
                            encode_response(AppError::bad_request(e).into_response()).await
                        {
                            let _ = client.publish(reply, b).await;
                        }
                        return;
                    }
                };
                // Listen for the entry node's heartbeats before it can send one.
                let Ok(mut ctl) = client.subscribe(format!("{to}.ctl")).await else {
                    return;
                };
                let resp = router.oneshot(req).await.into_response();
                if resp.status() != StatusCode::OK {
                    if let Ok(b) = encode_response(resp).await {
                        let _ = client.publish(reply, b).await;
                    }
                    return;
                }
                let (parts, body) = resp.into_parts();
                let head = Response::from_parts(parts, Body::empty());
                let Ok(b) = encode_response(head).await else {
                    return;
                };
                if client.publish(reply, b).await.is_err() {
                    return;
                }
                pump(client, body, &to, &mut ctl).await;
            });
        }
    }
}

/// Streams `body` to subject `to`: `d` + bytes per chunk, `h` heartbeats, `e` at the end.
async fn pump(client: async_nats::Client, body: Body, to: &str, ctl: &mut async_nats::Subscriber) {
    let to = to.to_owned();
    let mut data = body.into_data_stream();
    let mut beat = tokio::time::interval(SSE_BEAT);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            chunk = data.next() => match chunk {
                Some(Ok(bytes)) => {
                    let mut m = Vec::with_capacity(bytes.len() + 1);
                    m.push(b'd');
                    m.extend_from_slice(&bytes);
                    if client.publish(to.clone(), m.into()).await.is_err() { break; }
                }
                _ => {
                    let _ = client.publish(to.clone(), Bytes::from_static(b"e")).await;
                    break;
                }
            },
            m = ctl.next() => match m {
                Some(m) if m.payload.as_ref() == b"a" => heard = Instant::now(),
                _ => break,
            },
            _ = beat.tick() => {
                if heard.elapsed() > SSE_SILENCE { debug!("cluster: forwarded stream's entry node went quiet"); break; }
                if client.publish(to.clone(), Bytes::from_static(b"h")).await.is_err() { break; }
            }
        }
    }
}

/// Where a viewer request must be served.
enum Target {
    /// `POST /api/webrtc/session`: the VM named in the body.
    Create,
    Vm(VmId),
    Session(SessionId, bool),
}

fn classify(req: &Request) -> Option<Target> {
    let path = req.uri().path();
    if path == "/api/webrtc/session" {
        return (req.method() == axum::http::Method::POST).then_some(Target::Create);
    }
    if let Some(rest) = path.strip_prefix("/api/webrtc/session/") {
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let id = SessionId::parse(id).ok()?;
        return Some(Target::Session(id, tail == "events"));
    }
    if let Some(vm) = path.strip_prefix("/api/vms/") {
        return VmId::new(vm).ok().map(Target::Vm);
    }
    None
}

/// The middleware of a cluster node: serves a request here when this node holds its session
/// or VM (or nobody does), else forwards it to the holder over NATS.
pub async fn route(
    State((state, cluster)): State<(AppState, Arc<Cluster>)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(target) = classify(&req) else {
        return next.run(req).await;
    };
    let forwarded = req.extensions().get::<Forwarded>().is_some();
    if !forwarded && !cluster.connected() {
        return unavailable("NATS is unreachable").into_response();
    }
    match target {
        Target::Create => create(state, cluster, req, next, forwarded).await,
        _ if forwarded => next.run(req).await,
        Target::Vm(vm) => {
            if state.relay(|r, _| r.vm(&vm).is_some_and(|v| v.online)) {
                return next.run(req).await;
            }
            match cluster.holder(&vm).await {
                Ok(Some(node)) if node != cluster.node => forward(&cluster, &node, req).await,
                Ok(_) => next.run(req).await,
                Err(e) => e.into_response(),
            }
        }
        Target::Session(id, events) => {
            if state.relay(|r, _| r.owner(&id).is_some()) {
                return next.run(req).await;
            }
            let node = match cluster.session_vm(&id).await {
                Ok(Some(vm)) => match cluster.holder(&vm).await {
                    Ok(n) => n,
                    Err(e) => return e.into_response(),
                },
                Ok(None) => None,
                Err(e) => return e.into_response(),
            };
            match node {
                Some(node) if node != cluster.node => {
                    if events {
                        forward_stream(&cluster, &node, req).await
                    } else {
                        forward(&cluster, &node, req).await
                    }
                }
                _ => next.run(req).await,
            }
        }
    }
}

/// `POST /api/webrtc/session`: to the VM's holder; the node that creates it records its VM.
async fn create(
    state: AppState,
    cluster: Arc<Cluster>,
    req: Request,
    next: Next,
    forwarded: bool,
) -> Response {
    let limit = state.config().max_body_bytes;
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("request body over {limit} bytes (--max-body-bytes)"),
        )
        .into_response();
    };
    let vm = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("vmId")?.as_str().and_then(|s| VmId::new(s).ok()));
    let req = Request::from_parts(parts, Body::from(bytes));
    let Some(vm) = vm else {
        return next.run(req).await; // the handler names what is wrong
    };
    let local = forwarded || state.relay(|r, _| r.vm(&vm).is_some_and(|v| v.online));
    if !local {
        match cluster.holder(&vm).await {
            Ok(Some(node)) if node != cluster.node => return forward(&cluster, &node, req).await,
            Ok(_) => {}
            Err(e) => return e.into_response(),
        }
    }
    // The session's VM must be recorded: without the buckets (NATS just came up), refuse
    // before the agent is offered a session that would end at once.
    if cluster.stores().is_none() {
        return unavailable("JetStream not ready").into_response();
    }
    let resp = next.run(req).await;
    if resp.status() != StatusCode::CREATED {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "could not read the new session",
        )
        .into_response();
    };
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("sessionId")?.as_str().map(str::to_owned));
    if let Some(id) = id {
        if let Err(e) = cluster.remember_session(&id, &vm).await {
            // Other nodes could not find it: end it rather than hand out half a session.
            if let Ok(sid) = SessionId::parse(&id) {
                let _ = state.relay(|r, now| r.viewer_left(&sid, now));
            }
            return e.into_response();
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn peer_of(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// Forwards a plain request to `node` and returns its response.
async fn forward(cluster: &Cluster, node: &str, req: Request) -> Response {
    let peer = peer_of(&req);
    let payload = match encode_request(req, peer, None).await {
        Ok(p) => p,
        Err(e) => return AppError::bad_request(e).into_response(),
    };
    let subject = format!("vdesk.node.{node}.http");
    match tokio::time::timeout(NATS_DEADLINE, cluster.client.request(subject, payload)).await {
        Ok(Ok(msg)) => decode_response(&msg.payload).unwrap_or_else(|e| {
            unavailable(&format!("bad reply from node {node}: {e}")).into_response()
        }),
        Ok(Err(e)) => {
            unavailable(&format!("node {node} holding the VM does not answer: {e}")).into_response()
        }
        Err(_) => unavailable(&format!("node {node} holding the VM timed out")).into_response(),
    }
}

/// Opens the event stream on `node` and relays its bytes to this request's client.
async fn forward_stream(cluster: &Cluster, node: &str, req: Request) -> Response {
    let peer = peer_of(&req);
    let to = format!("vdesk.sse.{:032x}", rand::random::<u128>());
    let Ok(sub) = cluster.client.subscribe(to.clone()).await else {
        return unavailable("cannot subscribe").into_response();
    };
    let payload = match encode_request(req, peer, Some(&to)).await {
        Ok(p) => p,
        Err(e) => return AppError::bad_request(e).into_response(),
    };
    let subject = format!("vdesk.node.{node}.sse");
    let head = match tokio::time::timeout(NATS_DEADLINE, cluster.client.request(subject, payload))
        .await
    {
        Ok(Ok(msg)) => match decode_response(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                return unavailable(&format!("bad reply from node {node}: {e}")).into_response()
            }
        },
        Ok(Err(e)) => {
            return unavailable(&format!("node {node} holding the VM does not answer: {e}"))
                .into_response()
        }
        Err(_) => {
            return unavailable(&format!("node {node} holding the VM timed out")).into_response()
        }
    };
    if head.status() != StatusCode::OK {
        return head;
    }
    let client = cluster.client.clone();
    let ctl = format!("{to}.ctl");
    let beats = {
        let (client, ctl) = (client.clone(), ctl.clone());
        tokio::spawn(async move {
            let mut t = tokio::time::interval(SSE_BEAT);
            loop {
                t.tick().await;
                let _ = client.publish(ctl.clone(), Bytes::from_static(b"a")).await;
            }
        })
    };
    let guard = StreamEnd { client, ctl, beats };
    let body = futures_util::stream::unfold((sub, guard), |(mut sub, guard)| async move {
        loop {
            match tokio::time::timeout(SSE_SILENCE, sub.next()).await {
                Ok(Some(m)) => match m.payload.first() {
                    Some(b'd') => {
                        let data = m.payload.slice(1..);
                        return Some((Ok::<_, std::io::Error>(data), (sub, guard)));
                    }
                    Some(b'h') => continue,
                    _ => return None,
                },
                // The holder went away (or NATS did): end the stream; the browser reopens it.
                _ => return None,
            }
        }
    });
    let (parts, _) = head.into_parts();
    Response::from_parts(parts, Body::from_stream(body))
}

/// Ends a forwarded stream's heartbeats and tells the holder, when the client goes away.
struct StreamEnd {
    client: async_nats::Client,
    ctl: String,
    beats: tokio::task::JoinHandle<()>,
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        self.beats.abort();
        let (client, ctl) = (self.client.clone(), self.ctl.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.publish(ctl, Bytes::from_static(b"c")).await;
            });
        }
    }
}
