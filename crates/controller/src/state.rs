//! The shared state of the HTTP/WebSocket adapters: one mutex owning the [`Relay`] plus the
//! senders of every agent connection and every open event stream, and the delivery of the
//! relay's [`Outbound`] messages to them (immediately, under the same lock, so ordering holds and
//! a new event stream's replay and its live events neither overlap nor leave a gap). The lock is
//! never held across an `.await`. No HTTP parsing here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vdesk_protocol::{ControllerToAgent, ControllerToViewer, SessionId};

use crate::config::Config;
use crate::limits::RateLimiter;
use crate::relay::{ConnId, Outbound, Relay, RelayConfig, AGENT_GRACE, TOMBSTONE_TTL};

/// What an agent connection's task is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentCommand {
    Send(ControllerToAgent),
    Close,
}

/// One event for an open event stream: sequence number and event.
pub type ViewerEvent = (u64, ControllerToViewer);

/// The relay and the channels to everyone connected. Locked as a whole.
#[derive(Debug)]
pub struct Hub {
    pub relay: Relay,
    agents: HashMap<ConnId, mpsc::UnboundedSender<AgentCommand>>,
    streams: HashMap<SessionId, Vec<mpsc::UnboundedSender<ViewerEvent>>>,
}

impl Hub {
    /// Delivers everything the relay produced. Channels are unbounded: per session the relay
    /// bounds what it produces (candidate and state caps), and agents are authenticated.
    fn flush(&mut self) {
        for out in self.relay.take_outbound() {
            match out {
                Outbound::ToAgent { conn, msg } => {
                    if let Some(tx) = self.agents.get(&conn) {
                        let _ = tx.send(AgentCommand::Send(msg));
                    }
                }
                Outbound::CloseAgent { conn } => {
                    if let Some(tx) = self.agents.get(&conn) {
                        let _ = tx.send(AgentCommand::Close);
                    }
                }
                Outbound::ToViewer {
                    session,
                    seq,
                    event,
                } => {
                    let ended = matches!(event, ControllerToViewer::Ended { .. });
                    if let Some(subs) = self.streams.get_mut(&session) {
                        subs.retain(|tx| tx.send((seq, event.clone())).is_ok());
                    }
                    if ended {
                        // Dropping the senders ends the streams once they have sent `ended`.
                        self.streams.remove(&session);
                    }
                }
            }
        }
    }

    /// Registers an agent connection's channel (before the relay hears of it); `nonce` is the
    /// challenge it was sent.
    pub fn add_agent(
        &mut self,
        conn: ConnId,
        tx: mpsc::UnboundedSender<AgentCommand>,
        nonce: String,
    ) {
        self.agents.insert(conn, tx);
        self.relay.agent_connected(conn, nonce);
    }

    pub fn remove_agent(&mut self, conn: ConnId, now: Instant) {
        self.agents.remove(&conn);
        self.relay.agent_disconnected(conn, now);
    }

    /// Event streams of `session` still open (closed ones are forgotten here).
    pub fn open_streams(&mut self, session: &SessionId) -> usize {
        match self.streams.get_mut(session) {
            Some(subs) => {
                subs.retain(|tx| !tx.is_closed());
                subs.len()
            }
            None => 0,
        }
    }

    /// Registers an event stream of `session` that gets every event after the replay.
    pub fn add_stream(&mut self, session: SessionId, tx: mpsc::UnboundedSender<ViewerEvent>) {
        self.streams.entry(session).or_default().push(tx);
    }
}

/// A locked hub; delivers the relay's output when dropped, so no caller can forget to.
#[derive(Debug)]
pub struct HubGuard<'a>(MutexGuard<'a, Hub>);

impl std::ops::Deref for HubGuard<'_> {
    type Target = Hub;
    fn deref(&self) -> &Hub {
        &self.0
    }
}

impl std::ops::DerefMut for HubGuard<'_> {
    fn deref_mut(&mut self) -> &mut Hub {
        &mut self.0
    }
}

impl Drop for HubGuard<'_> {
    fn drop(&mut self) {
        self.0.flush();
    }
}

#[derive(Debug)]
struct Shared {
    config: Config,
    hub: Mutex<Hub>,
    limiter: Mutex<RateLimiter>,
    next_conn: AtomicU64,
    /// The WebSocket media path (agents' media links and WebSocket viewers).
    wsmedia: Arc<crate::wsmedia::WsMedia>,
    /// Set once when the controller joins a cluster (`--cluster`); empty in a single process.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Cheap to clone; handed to every handler.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(config: Config) -> Self {
        let relay = Relay::new(
            RelayConfig {
                agent_auth: config.agent_auth(),
                ice_servers: config.ice_servers.clone(),
                turn: config.turn.clone(),
                idle_timeout: config.session_idle_timeout,
                tombstone_ttl: TOMBSTONE_TTL,
                agent_grace: AGENT_GRACE,
                max_sessions_per_vm: config.max_sessions_per_vm,
                max_sessions_per_token: config.max_sessions_per_token,
                max_sessions: config.max_sessions,
                connect_timeout: config.connect_timeout,
            },
            config.vms.iter().cloned(),
        );
        let limiter = RateLimiter::new(config.session_rate_limit, config.candidate_rate_limit);
        Self(Arc::new(Shared {
            limiter: Mutex::new(limiter),
            config,
            hub: Mutex::new(Hub {
                relay,
                agents: HashMap::new(),
                streams: HashMap::new(),
            }),
            next_conn: AtomicU64::new(1),
            wsmedia: Arc::default(),
            cluster: std::sync::OnceLock::new(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Locks the hub. Output of the relay is delivered when the guard drops.
    pub fn hub(&self) -> HubGuard<'_> {
        // A panic while holding the lock cannot leave the relay half-updated in a way that
        // matters more than stopping the whole service would, so a poisoned lock is used as is.
        HubGuard(self.0.hub.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `f` on the relay with the current time, then delivers its output.
    pub fn relay<R>(&self, f: impl FnOnce(&mut Relay, Instant) -> R) -> R {
        let mut hub = self.hub();
        f(&mut hub.relay, Instant::now())
    }

    /// The rate limits (never held across an `.await`, never together with the hub).
    pub fn limiter(&self) -> MutexGuard<'_, RateLimiter> {
        self.0.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The WebSocket media path's registry.
    pub fn wsmedia(&self) -> Arc<crate::wsmedia::WsMedia> {
        self.0.wsmedia.clone()
    }

    /// This node's cluster handle, if it joined one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.0.cluster.get()
    }

    /// Joins the cluster at `url` (`--cluster`): connects to NATS (in the background if it is
    /// down) and starts the node's leases and service. Call before [`crate::app`].
    pub async fn join_cluster(&self, url: &str) -> Result<(), String> {
        let cluster = crate::cluster::Cluster::connect(url).await?;
        if self.0.cluster.set(cluster.clone()).is_err() {
            return Err("already in a cluster".into());
        }
        cluster.start(self.clone());
        Ok(())
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.0.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Revokes viewer link `link_id` (the `n` of its token, 16 hex digits): its live sessions
    /// end with `link_revoked` and the link is refused until it would have expired. Returns the
    /// sessions ended and the Unix second until which it is refused. (One call for whoever
    /// revokes: the admin route, or another controller of a cluster passing it on.)
    pub fn revoke_link(&self, link_id: &str) -> Result<(usize, u64), crate::relay::RelayError> {
        let tag = self.config().secret.owner_tag(link_id);
        self.relay(|r, now| r.revoke_link(link_id, &tag, now))
    }

    /// Ends every session, tells everyone, closes agent connections and event streams.
    pub fn shutdown(&self) {
        self.relay(|r, now| r.shutdown(now));
    }

    /// Ticks the relay every `period` (idle timeouts, tombstones) until the task is dropped.
    pub async fn run_ticker(self, period: Duration) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.relay(|r, now| r.tick(now));
            self.limiter().prune(Instant::now());
        }
    }
}
