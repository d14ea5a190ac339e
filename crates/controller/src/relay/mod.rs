//! The signalling relay as a state machine with no sockets, no tasks and no clock: inputs are
//! calls (an agent connected, sent a message, left; a viewer created a session, posted a
//! candidate, polled, opened or closed an event stream; time passed), outputs are [`Outbound`]
//! messages addressed to an agent connection or a viewer's session, collected with
//! [`Relay::take_outbound`]. The HTTP/WebSocket/SSE adapters deliver them. Time is always passed
//! in, so the idle timeout and tombstones are tested without sleeping.

mod admin;
mod counters;
mod session;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_resume;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vdesk_protocol::{
    AgentToController, CandidateList, ControllerToAgent, ControllerToViewer, ErrorCode,
    IceCandidate, IceServer, Permission, ResumedSession, SdpType, SessionDescription, SessionGrant,
    SessionId, SessionStats, Side, ValidationError, VmId, VmInfo, PROTOCOL_VERSION,
};

use crate::auth::AgentAuth;
use crate::turn::TurnRest;
pub use admin::{check_thumbnail, Thumbnail, ThumbnailState, VmView, MAX_REVOKED};
pub use counters::{Counters, MetricsSnapshot, SessionMetrics, SessionView};
use session::Session;
pub use session::{MAX_CANDIDATES_PER_SIDE, MAX_CANDIDATE_BYTES_PER_SIDE, MAX_PEER_STATES};

/// How long an ended session is remembered, so that late requests get 410 and its reason.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);
/// Longest `peerState` string relayed.
pub const MAX_STATE_LEN: usize = 64;
/// Longest human-readable reason relayed from an agent.
pub const MAX_REASON_LEN: usize = 256;
/// How long the sessions of an agent whose link dropped wait for it to come back and `resume`
/// them before they end with `agent_disconnected`.
pub const AGENT_GRACE: Duration = Duration::from_secs(10);
/// The agent's `peerState` values that mean the session's peer connection is up (the end of
/// `--connect-timeout`'s watch).
pub const CONNECTED_STATES: [&str; 3] = ["peer:connected", "ice:connected", "ice:completed"];
/// Most sessions one `resume` may name (an agent streams a handful).
pub const MAX_RESUMED_SESSIONS: usize = 64;
/// The `transport` values a `sessionStats` may carry (ICE candidate types); others are dropped.
pub const ICE_CANDIDATE_TYPES: [&str; 4] = ["host", "srflx", "prflx", "relay"];

/// One agent WebSocket connection, numbered by the adapter. A VM's agent may reconnect, so
/// messages go to a connection, not to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the relay wants delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Send `msg` on agent connection `conn`.
    ToAgent {
        conn: ConnId,
        msg: ControllerToAgent,
    },
    /// Close agent connection `conn` (after the messages queued before this one).
    CloseAgent { conn: ConnId },
    /// Push event `seq` of `session` to the viewer's open event streams. After an `ended`
    /// event the streams close.
    ToViewer {
        session: SessionId,
        seq: u64,
        event: ControllerToViewer,
    },
}

/// Why a request on the relay was refused; the HTTP adapter maps each to a status and code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RelayError {
    #[error("VM {0} is not known")]
    VmNotFound(VmId),
    #[error("VM agent is offline")]
    AgentOffline,
    #[error("session not found")]
    SessionNotFound,
    /// The session is a tombstone: it ended with this code and reason.
    #[error("{reason}")]
    Ended { code: ErrorCode, reason: String },
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("too many {0} in this session")]
    TooMany(&'static str),
    /// A configured cap (sessions per VM, per token) is reached; the message names it.
    #[error("{0}")]
    Limit(String),
    #[error("the controller is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Conflict(&'static str),
}

impl RelayError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RelayError::VmNotFound(_) => ErrorCode::VmNotFound,
            RelayError::AgentOffline => ErrorCode::AgentOffline,
            RelayError::SessionNotFound => ErrorCode::SessionNotFound,
            RelayError::Ended { code, .. } => *code,
            RelayError::Invalid(_) => ErrorCode::BadRequest,
            RelayError::TooMany(_) | RelayError::Limit(_) => ErrorCode::TooManyRequests,
            RelayError::ShuttingDown => ErrorCode::ShuttingDown,
            RelayError::Conflict(_) => ErrorCode::Conflict,
        }
    }
}

impl From<ValidationError> for RelayError {
    fn from(e: ValidationError) -> Self {
        RelayError::Invalid(e)
    }
}

/// Settings of the relay (a subset of [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Who may register as which VM.
    pub agent_auth: AgentAuth,
    /// Static ICE servers (STUN, TURN with fixed credentials), given to both sides.
    pub ice_servers: Vec<IceServer>,
    /// TURN servers with time-limited credentials, made per VM (welcome) and per session (offer).
    pub turn: Option<TurnRest>,
    pub idle_timeout: Duration,
    pub tombstone_ttl: Duration,
    /// See [`AGENT_GRACE`].
    pub agent_grace: Duration,
    /// Most live sessions per VM, and per viewer token (0 = no limit).
    pub max_sessions_per_vm: usize,
    pub max_sessions_per_token: usize,
    /// Most live sessions in all (at least 1): created and adopted alike. Bounds the memory a
    /// hostile agent or many links can take, and what [`Relay::tick`] walks.
    pub max_sessions: usize,
    /// A session whose peer has not reported `connected` this long after its offer ends
    /// (`connect_timeout`).
    pub connect_timeout: Duration,
}

/// Most tombstones kept, per allowed live session: past it the oldest are forgotten early (a
/// late request then gets 404 instead of 410), so that churn cannot grow them without bound.
pub const TOMBSTONES_PER_SESSION: usize = 4;

/// Whose a session is: its VM and the owner tag of the link that created it (see
/// [`crate::auth::ControllerSecret::owner_tag`]); `None` for sessions of trusted callers (tests,
/// embedders) and sessions adopted from an agent that sent no tag: no viewer token may use those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub vm: VmId,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    AwaitingHello,
    Registered(VmId),
    /// Refused or replaced: everything it still sends is ignored until it is gone.
    Closed,
}

#[derive(Debug)]
struct Tombstone {
    code: ErrorCode,
    reason: String,
    owner: Owner,
}

/// The relay: registry of VMs and agent connections, live sessions and tombstones.
#[derive(Debug)]
pub struct Relay {
    cfg: RelayConfig,
    /// Every known VM and its registered agent connection, if any.
    vms: BTreeMap<VmId, Option<ConnId>>,
    conns: HashMap<ConnId, ConnState>,
    /// The `challenge` nonce each connection awaiting `hello` must prove its secret over.
    challenges: HashMap<ConnId, String>,
    sessions: HashMap<SessionId, Session>,
    tombstones: HashMap<SessionId, Tombstone>,
    /// The tombstones in the order they expire (oldest first): the tick pops what is due.
    tombstone_order: VecDeque<(Instant, SessionId)>,
    /// Registered connections that may still send their one `resume` (from `welcome` until
    /// their first message other than `sessionEnded`).
    resume_window: HashSet<ConnId>,
    outbox: Vec<Outbound>,
    shutting_down: bool,
    counters: Counters,
    /// Revoked links, agents' `hello` information, thumbnails (`admin.rs`).
    admin: admin::AdminState,
}

impl Relay {
    pub fn new(cfg: RelayConfig, known_vms: impl IntoIterator<Item = VmId>) -> Self {
        Self {
            cfg,
            vms: known_vms.into_iter().map(|vm| (vm, None)).collect(),
            conns: HashMap::new(),
            challenges: HashMap::new(),
            sessions: HashMap::new(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            resume_window: HashSet::new(),
            outbox: Vec::new(),
            shutting_down: false,
            counters: Counters::default(),
            admin: admin::AdminState::default(),
        }
    }

    /// Messages produced since the last call, in the order they must be delivered.
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.outbox)
    }

    pub fn ice_servers(&self) -> &[IceServer] {
        &self.cfg.ice_servers
    }

    /// The static ICE servers plus, with `--turn-secret`, TURN credentials for `label` (a VM or
    /// session id) valid from now for `--turn-ttl`, and no later than `not_after` (unix seconds:
    /// the expiry of the viewer link they are for). Reads the wall clock: TURN servers check an
    /// absolute expiry.
    pub fn ice_servers_for(&self, label: &str, not_after: Option<u64>) -> Vec<IceServer> {
        let mut servers = self.cfg.ice_servers.clone();
        if let Some(turn) = &self.cfg.turn {
            servers.push(turn.ice_server_until(label, crate::viewer_token::unix_now(), not_after));
        }
        servers
    }

    /// The VM and token of a live or recently ended session, for the adapters' access checks.
    pub fn owner(&self, id: &SessionId) -> Option<Owner> {
        self.sessions
            .get(id)
            .map(|s| Owner {
                vm: s.vm.clone(),
                owner: s.grant.owner.clone(),
            })
            .or_else(|| self.tombstones.get(id).map(|t| t.owner.clone()))
    }

    pub fn vms(&self) -> Vec<VmInfo> {
        self.vms
            .iter()
            .map(|(vm, conn)| VmInfo {
                vm_id: vm.clone(),
                online: conn.is_some(),
            })
            .collect()
    }

    pub fn vm(&self, vm: &VmId) -> Option<VmInfo> {
        self.vms.get(vm).map(|conn| VmInfo {
            vm_id: vm.clone(),
            online: conn.is_some(),
        })
    }

    /// The viewer's offer of a live session.
    pub fn offer(&self, id: &SessionId) -> Option<&SessionDescription> {
        self.sessions.get(id).map(|s| &s.offer)
    }

    /// Number of live (not ended) sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of ended sessions still remembered (at most [`TOMBSTONES_PER_SESSION`] per
    /// allowed live session).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Every live session as `GET /api/admin/sessions` shows it (read-only), by VM then id.
    pub fn session_views(&self) -> Vec<SessionView> {
        let mut views: Vec<SessionView> = self
            .sessions
            .iter()
            .map(|(id, s)| SessionView {
                session_id: id.clone(),
                vm_id: s.vm.clone(),
                permission: s.grant.permission,
                name: s.grant.name.clone(),
                expires_at: s.grant.expires_at,
                connected: s.connect_by.is_none(),
                agent_attached: s.agent.is_some(),
                codec: s.stats.as_ref().map(|st| st.codec.clone()),
                bitrate_kbps: s.stats.as_ref().map(|st| st.bitrate_kbps),
                rtt_ms: s.stats.as_ref().and_then(|st| st.rtt_ms),
                holds_control: s.stats.as_ref().and_then(|st| st.holds_control),
                transport: s.stats.as_ref().and_then(|st| st.transport.clone()),
                link_id: s.link_id.clone(),
            })
            .collect();
        views.sort_by(|a, b| (&a.vm_id, &a.session_id).cmp(&(&b.vm_id, &b.session_id)));
        views
    }

    /// The numbers `GET /metrics` shows: counters, gauges, and the last stats of each session.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut sessions: Vec<SessionMetrics> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                s.stats.as_ref().map(|stats| SessionMetrics {
                    vm: s.vm.clone(),
                    session: id.as_str().chars().take(8).collect(),
                    stats: stats.clone(),
                })
            })
            .collect();
        sessions.sort_by(|a, b| (&a.vm, &a.session).cmp(&(&b.vm, &b.session)));
        MetricsSnapshot {
            agents_online: self.vms.values().filter(|c| c.is_some()).count(),
            vms_known: self.vms.len(),
            sessions_open: self.sessions.len(),
            counters: self.counters.clone(),
            sessions,
        }
    }

    // -----------------------------------------------------------------------------------------
    // agent side
    // -----------------------------------------------------------------------------------------

    /// A new agent connection, which was sent `challenge { nonce }` (fresh for each connection:
    /// the adapter draws it); its `hello` must prove its secret over that nonce.
    pub fn agent_connected(&mut self, conn: ConnId, nonce: String) {
        debug!(conn = %conn, "agent connection opened");
        self.conns.insert(conn, ConnState::AwaitingHello);
        self.challenges.insert(conn, nonce);
    }

    /// A frame from an agent that is not a valid message. Before `hello` this closes the
    /// connection; after it, the frame is refused and ignored.
    pub fn agent_bad_frame(&mut self, conn: ConnId, problem: &str) {
        match self.conns.get(&conn) {
            Some(ConnState::AwaitingHello) => {
                warn!(conn = %conn, problem, "agent's first message is not a valid hello");
                self.refuse(
                    conn,
                    ErrorCode::BadRequest,
                    format!("expected a hello message: {problem}"),
                );
            }
            Some(ConnState::Registered(vm)) => {
                warn!(conn = %conn, vm = %vm, problem, "malformed message from agent ignored");
                self.send_agent(
                    conn,
                    ControllerToAgent::Error {
                        code: ErrorCode::BadRequest,
                        message: problem.to_owned(),
                    },
                );
            }
            Some(ConnState::Closed) | None => {}
        }
    }

    /// The agent did not say `hello` in time.
    pub fn agent_hello_timeout(&mut self, conn: ConnId) {
        if self.conns.get(&conn) == Some(&ConnState::AwaitingHello) {
            warn!(conn = %conn, "agent did not say hello in time");
            self.refuse(
                conn,
                ErrorCode::BadRequest,
                "no hello received in time".into(),
            );
        }
    }

    pub fn agent_message(&mut self, conn: ConnId, msg: AgentToController, now: Instant) {
        self.counters.agent_messages += 1;
        let state = self.conns.get(&conn).cloned();
        match (state, msg) {
            (None | Some(ConnState::Closed), _) => {}
            (
                Some(ConnState::AwaitingHello),
                AgentToController::Hello {
                    vm_id,
                    proof,
                    token: _,
                    protocol_version,
                    agent_version,
                    info,
                },
            ) => {
                let vm = vm_id.clone();
                self.hello(conn, vm_id, proof, protocol_version, &agent_version, now);
                if self.conns.get(&conn) == Some(&ConnState::Registered(vm.clone())) {
                    self.agent_seen(&vm, &agent_version, info);
                }
            }
            (
                Some(ConnState::AwaitingHello),
                AgentToController::Check {
                    vm_id,
                    proof,
                    protocol_version,
                    agent_version,
                },
            ) => self.check(conn, vm_id, &proof, protocol_version, &agent_version),
            (Some(ConnState::AwaitingHello), _) => {
                self.agent_bad_frame(conn, "the first message must be hello")
            }
            (
                Some(ConnState::Registered(_)),
                AgentToController::Hello { .. } | AgentToController::Check { .. },
            ) => self.agent_error(conn, ErrorCode::BadRequest, "hello was already received"),
            (Some(ConnState::Registered(vm)), msg) => {
                self.agent_session_message(conn, &vm, msg, now)
            }
        }
    }

    /// The agent connection is gone. Its sessions are detached, not ended: the media may still
    /// flow peer to peer, and an agent that comes back within [`RelayConfig::agent_grace`]
    /// resumes them; otherwise they end with `agent_disconnected` (see [`Relay::tick`]).
    pub fn agent_disconnected(&mut self, conn: ConnId, now: Instant) {
        self.challenges.remove(&conn);
        self.resume_window.remove(&conn);
        self.admin_conn_gone(conn);
        let Some(state) = self.conns.remove(&conn) else {
            return;
        };
        if let ConnState::Registered(vm) = state {
            info!(vm = %vm, conn = %conn, "agent left");
            if let Some(slot) = self.vms.get_mut(&vm) {
                if *slot == Some(conn) {
                    *slot = None;
                }
            }
            self.detach_sessions_of(conn, now);
        } else {
            debug!(conn = %conn, "agent connection closed before registering");
        }
    }

    fn hello(
        &mut self,
        conn: ConnId,
        vm: VmId,
        proof: Option<String>,
        protocol_version: u32,
        agent_version: &str,
        now: Instant,
    ) {
        // One hello per challenge: the nonce is spent whatever the outcome.
        let nonce = self.challenges.remove(&conn).unwrap_or_default();
        if self.shutting_down {
            return self.refuse(
                conn,
                ErrorCode::ShuttingDown,
                "the controller is shutting down".into(),
            );
        }
        let Some(proof) = proof else {
            // A protocol 1 agent, which sent its secret in clear (`token`): refused, never
            // checked, so that upgrading the controller closes that hole for every VM at once.
            warn!(conn = %conn, vm = %vm, protocol_version, "agent refused: hello without proof (protocol 1 agent)");
            return self.refuse(
                conn,
                ErrorCode::BadRequest,
                format!(
                    "hello has no proof: this controller speaks protocol {PROTOCOL_VERSION}, where \
                     the agent answers the challenge with an HMAC of its secret instead of \
                     sending the secret; upgrade vdesk-agent"
                ),
            );
        };
        if !self.cfg.agent_auth.accepts_proof(&vm, &nonce, &proof) {
            warn!(conn = %conn, vm = %vm, "agent refused: wrong proof of its secret");
            return self.refuse(
                conn,
                ErrorCode::Unauthorized,
                "invalid agent secret (the hello's proof does not verify)".into(),
            );
        }
        if protocol_version != PROTOCOL_VERSION {
            warn!(conn = %conn, vm = %vm, protocol_version, "agent refused: protocol version");
            return self.refuse(
                conn,
                ErrorCode::BadRequest,
                format!(
                    "protocolVersion {protocol_version} is not supported; this controller speaks {PROTOCOL_VERSION}"
                ),
            );
        }
        let previous = self.vms.insert(vm.clone(), Some(conn)).flatten();
        if let Some(old) = previous {
            warn!(vm = %vm, old = %old, new = %conn, "agent replaced by a new connection");
            self.conns.insert(old, ConnState::Closed);
            self.send_agent(
                old,
                ControllerToAgent::Error {
                    code: ErrorCode::Conflict,
                    message: "another agent connected for this VM".into(),
                },
            );
            self.outbox.push(Outbound::CloseAgent { conn: old });
            // The new connection is usually the same agent after a network hiccup: it resumes
            // these sessions, or they end when it says which ones it still has.
            self.detach_sessions_of(old, now);
        }
        self.conns.insert(conn, ConnState::Registered(vm.clone()));
        self.resume_window.insert(conn);
        let agent_version: String = agent_version.chars().take(64).collect();
        info!(vm = %vm, conn = %conn, agent_version, "agent registered");
        // The agent's own credentials (its VM's; the agent is not a viewer link).
        let ice_servers = self.ice_servers_for(vm.as_str(), None);
        self.send_agent(conn, ControllerToAgent::Welcome { ice_servers });
    }

    /// `check` (`vdesk-agent doctor`): the proof is verified as `hello`'s is, then `checked`
    /// and close. Nothing is registered: the VM's running agent and its sessions are untouched.
    fn check(
        &mut self,
        conn: ConnId,
        vm: VmId,
        proof: &str,
        protocol_version: u32,
        agent_version: &str,
    ) {
        let nonce = self.challenges.remove(&conn).unwrap_or_default();
        if !self.cfg.agent_auth.accepts_proof(&vm, &nonce, proof) {
            warn!(conn = %conn, vm = %vm, "agent check refused: wrong proof of its secret");
            return self.refuse(
                conn,
                ErrorCode::Unauthorized,
                "invalid agent secret (the check's proof does not verify)".into(),
            );
        }
        if protocol_version != PROTOCOL_VERSION {
            return self.refuse(
                conn,
                ErrorCode::BadRequest,
                format!(
                    "protocolVersion {protocol_version} is not supported; this controller speaks {PROTOCOL_VERSION}"
                ),
            );
        }
        let agent_version: String = agent_version.chars().take(64).collect();
        info!(vm = %vm, conn = %conn, agent_version, "agent check passed (vdesk-agent doctor; not registered)");
        let ice_servers = self.ice_servers_for(vm.as_str(), None);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.conns.insert(conn, ConnState::Closed);
        self.send_agent(
            conn,
            ControllerToAgent::Checked {
                ice_servers,
                now_ms,
                controller_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        );
        self.outbox.push(Outbound::CloseAgent { conn });
    }

    fn agent_session_message(
        &mut self,
        conn: ConnId,
        vm: &VmId,
        msg: AgentToController,
        now: Instant,
    ) {
        let id = match &msg {
            AgentToController::Hello { .. } | AgentToController::Check { .. } => return,
            AgentToController::Resume { sessions } => {
                if !self.resume_window.remove(&conn) {
                    warn!(vm = %vm, conn = %conn, "resume refused: only one, right after welcome");
                    return self.agent_error(
                        conn,
                        ErrorCode::BadRequest,
                        "resume is accepted once per connection, right after welcome (before \
                         any message but sessionEnded); this one was ignored",
                    );
                }
                let sessions = sessions.clone();
                return self.resume(conn, vm, sessions, now);
            }
            AgentToController::Thumbnail {
                width,
                height,
                jpeg,
            } => return self.agent_thumbnail(conn, vm, *width, *height, jpeg, now),
            AgentToController::SessionEnded { session_id, .. } => session_id.clone(),
            AgentToController::Answer { session_id, .. }
            | AgentToController::Candidate { session_id, .. }
            | AgentToController::PeerState { session_id, .. }
            | AgentToController::SessionStats { session_id, .. } => {
                // The agent has moved on: no `resume` from now on.
                self.resume_window.remove(&conn);
                session_id.clone()
            }
        };
        match self.sessions.get(&id) {
            // Its own session, or one of its VM's detached sessions (an agent that reconnects
            // reports what happened to them while it was away, before it resumes the rest).
            Some(s) if s.agent == Some(conn) || (s.agent.is_none() && &s.vm == vm) => {}
            _ if self.tombstones.contains_key(&id) => {
                debug!(session = %id, vm = %vm, "agent message for an ended session ignored");
                return;
            }
            _ => {
                return self.agent_error(
                    conn,
                    ErrorCode::SessionNotFound,
                    &format!("session {id} not found"),
                )
            }
        }
        let result = match msg {
            AgentToController::Hello { .. }
            | AgentToController::Check { .. }
            | AgentToController::Resume { .. }
            | AgentToController::Thumbnail { .. } => Ok(()),
            AgentToController::Answer { sdp, .. } => self.set_answer(&id, sdp),
            AgentToController::Candidate { candidate, .. } => {
                self.add_candidate(&id, Side::Vm, candidate)
            }
            AgentToController::PeerState { state, .. } => self.peer_state(&id, state),
            AgentToController::SessionEnded { code, reason, .. } => {
                let reason = clean_reason(&reason, "the VM agent ended the session");
                info!(session = %id, vm = %vm, "agent ended the session");
                self.end_session(&id, code, &reason, false, now);
                Ok(())
            }
            AgentToController::SessionStats { stats, .. } => {
                self.session_stats(&id, stats);
                Ok(())
            }
        };
        if let Err(e) = result {
            let message = e.to_string();
            self.agent_error(conn, e.code(), &message);
        }
    }

    fn set_answer(&mut self, id: &SessionId, sdp: String) -> Result<(), RelayError> {
        let s = self
            .sessions
            .get_mut(id)
            .ok_or(RelayError::SessionNotFound)?;
        if s.answer.is_some() && !s.renegotiating {
            return Err(ValidationError::new("sdp", "answer was already received").into());
        }
        let answer = SessionDescription {
            kind: SdpType::Answer,
            sdp,
        };
        answer.validate(SdpType::Answer)?;
        if s.renegotiating {
            info!(session = %id, vm = %s.vm, "answer to the new offer received");
            s.renegotiating = false;
            s.answer = Some(answer.sdp.clone());
            self.send_viewer(id, ControllerToViewer::Answer { sdp: answer.sdp });
            return Ok(());
        }
        info!(session = %id, vm = %s.vm, "answer received");
        s.answer = Some(answer.sdp.clone());
        let mut events = vec![ControllerToViewer::Answer { sdp: answer.sdp }];
        // The VM's candidates that came before the answer follow it, in their order.
        events.extend(
            s.vm_side
                .all
                .iter()
                .cloned()
                .map(|candidate| ControllerToViewer::Candidate { candidate }),
        );
        for event in events {
            self.send_viewer(id, event);
        }
        Ok(())
    }

    fn add_candidate(
        &mut self,
        id: &SessionId,
        from: Side,
        c: IceCandidate,
    ) -> Result<(), RelayError> {
        c.validate()?;
        let s = self
            .sessions
            .get_mut(id)
            .ok_or(RelayError::SessionNotFound)?;
        let q = s.queue(from);
        if q.all.len() >= MAX_CANDIDATES_PER_SIDE {
            return Err(RelayError::TooMany("candidates"));
        }
        let bytes = q.bytes.saturating_add(c.text_len());
        if bytes > MAX_CANDIDATE_BYTES_PER_SIDE {
            return Err(ValidationError::new(
                "candidate",
                format!(
                    "would take this side's candidates in this session past \
                     {MAX_CANDIDATE_BYTES_PER_SIDE} bytes"
                ),
            )
            .into());
        }
        q.bytes = bytes;
        q.all.push(c.clone());
        if c.is_end_of_candidates() {
            debug!(session = %id, side = ?from, "end of candidates");
        }
        match from {
            Side::Browser => {
                // While the agent is away the candidate waits; `resume` sends it.
                if let Some(conn) = s.agent {
                    s.browser_sent = s.browser.all.len();
                    self.send_agent(
                        conn,
                        ControllerToAgent::Candidate {
                            session_id: id.clone(),
                            candidate: c,
                        },
                    );
                }
            }
            Side::Vm => {
                if s.answer.is_some() {
                    self.send_viewer(id, ControllerToViewer::Candidate { candidate: c });
                }
            }
        }
        Ok(())
    }

    /// Keeps the last stats of a session for `/metrics` and `GET /api/admin/sessions` (nothing is relayed to the viewer).
    fn session_stats(&mut self, id: &SessionId, mut stats: SessionStats) {
        // The codec becomes a metric label: keep it short and plain.
        stats.codec = stats
            .codec
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        // Shown to the admin: only the four candidate types are kept.
        stats.transport = stats
            .transport
            .filter(|t| ICE_CANDIDATE_TYPES.contains(&t.as_str()));
        if let Some(s) = self.sessions.get_mut(id) {
            s.stats = Some(stats);
        }
    }

    fn peer_state(&mut self, id: &SessionId, state: String) -> Result<(), RelayError> {
        if state.is_empty() || state.len() > MAX_STATE_LEN || state.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "state",
                format!("must be 1 to {MAX_STATE_LEN} bytes without control characters"),
            )
            .into());
        }
        let s = self
            .sessions
            .get_mut(id)
            .ok_or(RelayError::SessionNotFound)?;
        info!(session = %id, vm = %s.vm, state, "peer state");
        if CONNECTED_STATES.contains(&state.as_str()) {
            s.connect_by = None;
        }
        if s.peer_states >= MAX_PEER_STATES {
            return Ok(());
        }
        s.peer_states += 1;
        self.send_viewer(id, ControllerToViewer::PeerState { state });
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // viewer side (and the agents' HTTP routes)
    // -----------------------------------------------------------------------------------------

    /// A trusted caller's offer for `vm` (tests, embedders): like [`Self::create_session_as`]
    /// with control permission and no token.
    pub fn create_session(
        &mut self,
        vm: VmId,
        offer: SessionDescription,
        now: Instant,
    ) -> Result<SessionId, RelayError> {
        let grant = SessionGrant {
            permission: Permission::Control,
            ..SessionGrant::default()
        };
        self.create_session_as(vm, offer, &grant, now)
    }

    /// A viewer's offer for `vm`: the session is created and the offer goes to the VM's agent,
    /// with what the viewer's link grants (permission, owner tag...).
    pub fn create_session_as(
        &mut self,
        vm: VmId,
        offer: SessionDescription,
        grant: &SessionGrant,
        now: Instant,
    ) -> Result<SessionId, RelayError> {
        if self.shutting_down {
            return Err(RelayError::ShuttingDown);
        }
        offer.validate(SdpType::Offer).map_err(|e| {
            RelayError::Invalid(ValidationError::new(
                if e.field == "type" {
                    "offer.type"
                } else {
                    "offer.sdp"
                },
                e.problem,
            ))
        })?;
        let conn = match self.vms.get(&vm) {
            None => return Err(RelayError::VmNotFound(vm)),
            Some(None) => return Err(RelayError::AgentOffline),
            Some(Some(conn)) => *conn,
        };
        self.check_caps(&vm, grant.owner.as_deref())?;
        let id = loop {
            let id = SessionId::random();
            if !self.sessions.contains_key(&id) && !self.tombstones.contains_key(&id) {
                break id;
            }
        };
        info!(session = %id, vm = %vm, conn = %conn, permission = ?grant.permission, "session created");
        let ice_servers = self.ice_servers_for(id.as_str(), grant.expires_at.map(|ms| ms / 1000));
        self.counters.sessions_created += 1;
        self.send_agent(
            conn,
            ControllerToAgent::Offer {
                session_id: id.clone(),
                sdp: offer.sdp.clone(),
                ice_servers,
                grant: grant.clone(),
            },
        );
        let mut session = Session::new(vm, conn, offer, now);
        session.grant = grant.clone();
        session.expires = link_deadline(grant.expires_at, now);
        session.connect_by = now.checked_add(self.cfg.connect_timeout);
        self.sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// A new offer from the viewer on a live session (an ICE restart). It goes to the agent,
    /// whose next `answer` is relayed as a new `answer` event.
    pub fn reoffer(
        &mut self,
        id: &SessionId,
        offer: SessionDescription,
        now: Instant,
    ) -> Result<(), RelayError> {
        if self.shutting_down {
            return Err(RelayError::ShuttingDown);
        }
        offer.validate(SdpType::Offer)?;
        let s = self.live(id)?;
        s.last_seen = now;
        let Some(conn) = s.agent else {
            return Err(RelayError::AgentOffline);
        };
        if s.answer.is_none() {
            return Err(RelayError::Conflict(
                "the first answer has not arrived yet; wait for it before offering again",
            ));
        }
        info!(session = %id, vm = %s.vm, "new offer from the viewer (ICE restart)");
        s.renegotiating = true;
        s.offer = offer.clone();
        self.send_agent(
            conn,
            ControllerToAgent::Reoffer {
                session_id: id.clone(),
                sdp: offer.sdp,
            },
        );
        Ok(())
    }

    /// Refuses a new (or adopted) session when the controller, its VM or its token already has
    /// as many as allowed.
    fn check_caps(&self, vm: &VmId, owner: Option<&str>) -> Result<(), RelayError> {
        let total = self.cfg.max_sessions.max(1);
        if self.sessions.len() >= total {
            warn!(vm = %vm, limit = total, "session refused: the controller has the most sessions allowed");
            return Err(RelayError::Limit(format!(
                "this controller already has {total} sessions, the most allowed (--max-sessions)"
            )));
        }
        let per_vm = self.cfg.max_sessions_per_vm;
        if per_vm > 0 && self.sessions.values().filter(|s| &s.vm == vm).count() >= per_vm {
            warn!(vm = %vm, limit = per_vm, "session refused: too many sessions for this VM");
            return Err(RelayError::Limit(format!(
                "VM {vm} already has {per_vm} sessions, the most allowed (--max-sessions-per-vm)"
            )));
        }
        let per_token = self.cfg.max_sessions_per_token;
        if let (Some(owner), true) = (owner, per_token > 0) {
            let n = self
                .sessions
                .values()
                .filter(|s| s.grant.owner.as_deref() == Some(owner))
                .count();
            if n >= per_token {
                warn!(vm = %vm, limit = per_token, "session refused: too many sessions for one token");
                return Err(RelayError::Limit(format!(
                    "this link already has {per_token} open sessions, the most allowed \
                     (--max-sessions-per-token); close another tab first"
                )));
            }
        }
        Ok(())
    }

    /// The agent's answer, if it came. Counts as viewer activity.
    pub fn answer(
        &mut self,
        id: &SessionId,
        now: Instant,
    ) -> Result<Option<SessionDescription>, RelayError> {
        let s = self.live(id)?;
        s.last_seen = now;
        Ok(s.answer.clone().map(|sdp| SessionDescription {
            kind: SdpType::Answer,
            sdp,
        }))
    }

    /// A candidate posted over HTTP, by the viewer (`from: browser`) or an agent (`from: vm`;
    /// the adapter has checked its token).
    pub fn post_candidate(
        &mut self,
        id: &SessionId,
        from: Side,
        candidate: IceCandidate,
        now: Instant,
    ) -> Result<(), RelayError> {
        let s = self.live(id)?;
        if from == Side::Browser {
            s.last_seen = now;
        }
        self.add_candidate(id, from, candidate)
    }

    /// `GET .../candidates/{side}`: the candidates of `side` not returned by this route before.
    pub fn poll_candidates(
        &mut self,
        id: &SessionId,
        side: Side,
        now: Instant,
    ) -> Result<CandidateList, RelayError> {
        let s = self.live(id)?;
        if side == Side::Vm {
            s.last_seen = now; // the viewer reads the VM's candidates
        }
        Ok(s.poll(side))
    }

    /// The viewer left (`DELETE`): the agent is told to end the session.
    pub fn viewer_left(&mut self, id: &SessionId, now: Instant) -> Result<(), RelayError> {
        self.live(id)?;
        self.end_session(
            id,
            ErrorCode::ViewerLeft,
            "the viewer closed the session",
            true,
            now,
        );
        Ok(())
    }

    /// A new event stream: returns the events after `after` (0 = all) to replay; from now on
    /// new events of the session come as [`Outbound::ToViewer`].
    pub fn stream_opened(
        &mut self,
        id: &SessionId,
        after: u64,
        now: Instant,
    ) -> Result<Vec<(u64, ControllerToViewer)>, RelayError> {
        let s = self.live(id)?;
        s.open_streams += 1;
        s.last_seen = now;
        debug!(session = %id, after, streams = s.open_streams, "event stream opened");
        Ok(s.events_after(after))
    }

    pub fn stream_closed(&mut self, id: &SessionId, now: Instant) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.open_streams = s.open_streams.saturating_sub(1);
            s.last_seen = now;
            debug!(session = %id, streams = s.open_streams, "event stream closed");
        }
    }

    /// Time passed: sessions end whose link expired, whose peer did not connect in time, whose
    /// viewer is idle, or whose agent did not come back in time; old tombstones are forgotten. Walks the live sessions (at most `max_sessions`) and the due tombstones only.
    pub fn tick(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let grace = self.cfg.agent_grace;
        // One pass over the live sessions (at most `max_sessions`); the first reason wins.
        let mut due: Vec<(SessionId, ErrorCode, bool)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                let (code, tell_agent) = if s.expires.is_some_and(|t| t <= now) {
                    (ErrorCode::LinkExpired, true)
                } else if s.connect_by.is_some_and(|t| t <= now) {
                    (ErrorCode::ConnectTimeout, true)
                } else if s.is_idle(now, idle) {
                    (ErrorCode::IdleTimeout, true)
                } else if s
                    .detached_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= grace)
                {
                    (ErrorCode::AgentDisconnected, false)
                } else {
                    return None;
                };
                Some((id.clone(), code, tell_agent))
            })
            .collect();
        due.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, code, tell_agent) in due {
            let reason = match code {
                ErrorCode::LinkExpired => "the viewer link expired".to_owned(),
                ErrorCode::ConnectTimeout => format!(
                    "the peer connection did not connect within {} s",
                    self.cfg.connect_timeout.as_secs()
                ),
                ErrorCode::IdleTimeout => format!("the viewer was idle for {} s", idle.as_secs()),
                _ => "VM agent disconnected".to_owned(),
            };
            self.end_session(&id, code, &reason, tell_agent, now);
        }
        while let Some((until, id)) = self.tombstone_order.front() {
            if *until > now {
                break;
            }
            self.tombstones.remove(id);
            self.tombstone_order.pop_front();
        }
        self.prune_revoked();
    }

    /// The controller stops: every session ends with `shutting_down` (both sides are told) and
    /// every agent connection is closed. New sessions and agents are refused from now on.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let ids: Vec<SessionId> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.end_session(
                &id,
                ErrorCode::ShuttingDown,
                "the controller is shutting down",
                true,
                now,
            );
        }
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.conns.insert(conn, ConnState::Closed);
            self.outbox.push(Outbound::CloseAgent { conn });
        }
    }

    // -----------------------------------------------------------------------------------------
    // helpers
    // -----------------------------------------------------------------------------------------

    fn live(&mut self, id: &SessionId) -> Result<&mut Session, RelayError> {
        if let Some(t) = self.tombstones.get(id) {
            return Err(RelayError::Ended {
                code: t.code,
                reason: t.reason.clone(),
            });
        }
        self.sessions.get_mut(id).ok_or(RelayError::SessionNotFound)
    }

    fn end_session(
        &mut self,
        id: &SessionId,
        code: ErrorCode,
        reason: &str,
        tell_agent: bool,
        now: Instant,
    ) {
        let Some(mut s) = self.sessions.remove(id) else {
            return;
        };
        info!(session = %id, vm = %s.vm, ?code, reason, "session ended");
        self.counters.session_ended(code);
        self.counters.viewer_messages += 1;
        let event = ControllerToViewer::Ended {
            code,
            reason: reason.to_owned(),
        };
        let seq = s.push_event(event.clone());
        self.outbox.push(Outbound::ToViewer {
            session: id.clone(),
            seq,
            event,
        });
        let agent = s
            .agent
            .filter(|c| self.conns.get(c) == Some(&ConnState::Registered(s.vm.clone())));
        if let (true, Some(conn)) = (tell_agent, agent) {
            self.send_agent(
                conn,
                ControllerToAgent::EndSession {
                    session_id: id.clone(),
                    // Codes newer than some agents go as the older code of the same effect.
                    code: code.for_agent(),
                    reason: reason.to_owned(),
                },
            );
        }
        let until = now + self.cfg.tombstone_ttl;
        let most = self
            .cfg
            .max_sessions
            .max(1)
            .saturating_mul(TOMBSTONES_PER_SESSION);
        while self.tombstone_order.len() >= most {
            if let Some((_, old)) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
        self.tombstone_order.push_back((until, id.clone()));
        self.tombstones.insert(
            id.clone(),
            Tombstone {
                code,
                reason: reason.to_owned(),
                owner: Owner {
                    vm: s.vm.clone(),
                    owner: s.grant.owner.take(),
                },
            },
        );
    }

    /// The sessions of agent connection `conn` lose their agent until it resumes them.
    fn detach_sessions_of(&mut self, conn: ConnId, now: Instant) {
        let mut n = 0;
        for s in self.sessions.values_mut() {
            if s.agent == Some(conn) {
                s.agent = None;
                s.detached_at = Some(now);
                n += 1;
            }
        }
        if n > 0 {
            info!(conn = %conn, sessions = n, grace_s = self.cfg.agent_grace.as_secs(),
                  "agent link lost: its sessions wait for it to come back");
        }
    }

    /// `resume` from the agent of `vm` on `conn`: re-attach the sessions this controller knows,
    /// adopt those it does not (after a controller restart), refuse those that ended here, and
    /// end this VM's detached sessions that the agent no longer has.
    fn resume(&mut self, conn: ConnId, vm: &VmId, listed: Vec<ResumedSession>, now: Instant) {
        if listed.len() > MAX_RESUMED_SESSIONS {
            return self.agent_error(
                conn,
                ErrorCode::BadRequest,
                &format!("resume names more than {MAX_RESUMED_SESSIONS} sessions"),
            );
        }
        let mut kept = std::collections::HashSet::new();
        for r in listed {
            let id = r.session_id.clone();
            match self.resume_one(conn, vm, r, now) {
                Ok(()) => {
                    kept.insert(id);
                }
                Err((code, reason)) => {
                    warn!(session = %id, vm = %vm, ?code, "resumed session refused: {reason}");
                    self.send_agent(
                        conn,
                        ControllerToAgent::EndSession {
                            session_id: id,
                            code,
                            reason,
                        },
                    );
                }
            }
        }
        let mut gone: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(id, s)| &s.vm == vm && s.agent != Some(conn) && !kept.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        gone.sort();
        for id in gone {
            self.end_session(
                &id,
                ErrorCode::AgentDisconnected,
                "VM agent disconnected (it restarted without this session)",
                false,
                now,
            );
        }
    }

    fn resume_one(
        &mut self,
        conn: ConnId,
        vm: &VmId,
        r: ResumedSession,
        now: Instant,
    ) -> Result<(), (ErrorCode, String)> {
        let id = r.session_id;
        if let Some(t) = self.tombstones.get(&id) {
            return Err((t.code, t.reason.clone()));
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            if &s.vm != vm {
                return Err((ErrorCode::Conflict, "session belongs to another VM".into()));
            }
            s.agent = Some(conn);
            s.detached_at = None;
            let pending: Vec<IceCandidate> = s.browser.all[s.browser_sent..].to_vec();
            s.browser_sent = s.browser.all.len();
            info!(session = %id, vm = %vm, conn = %conn, "session resumed by its agent");
            for candidate in pending {
                self.send_agent(
                    conn,
                    ControllerToAgent::Candidate {
                        session_id: id.clone(),
                        candidate,
                    },
                );
            }
            if let Some(answer) = r.answer {
                let known = self.sessions.get(&id).and_then(|s| s.answer.clone());
                if known.as_deref() != Some(answer.as_str()) {
                    let _ = self.set_answer(&id, answer);
                }
            }
            return Ok(());
        }
        if self.shutting_down {
            return Err((
                ErrorCode::ShuttingDown,
                "the controller is shutting down".into(),
            ));
        }
        // Unknown here: a new controller process adopts the session the agent still streams.
        let offer = SessionDescription {
            kind: SdpType::Offer,
            sdp: r.offer.unwrap_or_default(),
        };
        offer
            .validate(SdpType::Offer)
            .map_err(|e| (ErrorCode::BadRequest, format!("resumed offer: {e}")))?;
        let answer = match r.answer {
            Some(sdp) => {
                let a = SessionDescription {
                    kind: SdpType::Answer,
                    sdp,
                };
                a.validate(SdpType::Answer)
                    .map_err(|e| (ErrorCode::BadRequest, format!("resumed answer: {e}")))?;
                Some(a.sdp)
            }
            None => None,
        };
        self.check_caps(vm, r.grant.owner.as_deref())
            .map_err(|e| (ErrorCode::TooManyRequests, e.to_string()))?;
        info!(session = %id, vm = %vm, conn = %conn, "session adopted from its agent");
        let mut s = Session::new(vm.clone(), conn, offer, now);
        s.answer = answer;
        // The grant it was offered with, as the agent echoes it: the owner tag decides who may
        // use the session (none: nobody's viewer token; the viewer starts a new session).
        s.expires = link_deadline(r.grant.expires_at, now);
        s.grant = r.grant;
        self.sessions.insert(id, s);
        Ok(())
    }

    fn refuse(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        self.conns.insert(conn, ConnState::Closed);
        self.challenges.remove(&conn);
        self.send_agent(conn, ControllerToAgent::Error { code, message });
        self.outbox.push(Outbound::CloseAgent { conn });
    }

    fn agent_error(&mut self, conn: ConnId, code: ErrorCode, message: &str) {
        self.send_agent(
            conn,
            ControllerToAgent::Error {
                code,
                message: message.to_owned(),
            },
        );
    }

    fn send_agent(&mut self, conn: ConnId, msg: ControllerToAgent) {
        self.counters.controller_messages += 1;
        self.outbox.push(Outbound::ToAgent { conn, msg });
    }

    fn send_viewer(&mut self, id: &SessionId, event: ControllerToViewer) {
        if let Some(s) = self.sessions.get_mut(id) {
            self.counters.viewer_messages += 1;
            let seq = s.push_event(event.clone());
            self.outbox.push(Outbound::ToViewer {
                session: id.clone(),
                seq,
                event,
            });
        }
    }
}

/// The instant a link that expires at `expires_at_ms` (Unix ms) runs out, as seen at `now`.
/// Reads the wall clock (the expiry is absolute), like the TURN credentials do. No link lives
/// longer than 30 days, whatever an agent's `resume` says.
fn link_deadline(expires_at_ms: Option<u64>, now: Instant) -> Option<Instant> {
    let left = expires_at_ms?
        .saturating_sub(crate::viewer_token::unix_now_ms())
        .min(crate::viewer_token::MAX_TTL_SECS.saturating_mul(1000));
    now.checked_add(Duration::from_millis(left)).or(Some(now))
}

/// A reason from the network, fit for a log line and the viewer: one line, bounded.
fn clean_reason(reason: &str, fallback: &str) -> String {
    let r: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_LEN)
        .collect();
    if r.trim().is_empty() {
        fallback.to_owned()
    } else {
        r
    }
}
