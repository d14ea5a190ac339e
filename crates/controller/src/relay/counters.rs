//! What the relay counts for `GET /metrics`: sessions created and ended (by reason), messages
//! relayed, and a snapshot type that the metrics route renders. Plain numbers; no formatting
//! (that is `crate::metrics`) and no clock.

use std::collections::BTreeMap;

use vdesk_protocol::{ErrorCode, SessionStats, VmId};

/// Totals since the controller started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub sessions_created: u64,
    /// Ended sessions by the `ErrorCode` they ended with (snake_case, as on the wire).
    pub sessions_ended: BTreeMap<String, u64>,
    /// Messages received from agents (valid JSON ones).
    pub agent_messages: u64,
    /// Messages sent to agents.
    pub controller_messages: u64,
    /// Events sent to viewers.
    pub viewer_messages: u64,
}

impl Counters {
    pub fn session_ended(&mut self, code: ErrorCode) {
        let name = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        *self.sessions_ended.entry(name).or_default() += 1;
    }
}

/// The last stats an agent reported for one live session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionMetrics {
    pub vm: VmId,
    /// The first 8 characters of the session id: enough to tell sessions apart in a dashboard,
    /// not enough to act on a session (the full id is what the session routes ask for).
    pub session: String,
    pub stats: SessionStats,
}

/// Everything `/metrics` shows, taken under the relay's lock in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub agents_online: usize,
    pub vms_known: usize,
    pub sessions_open: usize,
    pub counters: Counters,
    pub sessions: Vec<SessionMetrics>,
}
