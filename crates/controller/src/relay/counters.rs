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

/// One live session as the admin sees it (`GET /api/admin/sessions`): who, with what grant, and
/// the agent's last numbers. No token, no owner tag, no SDP.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub session_id: vdesk_protocol::SessionId,
    pub vm_id: VmId,
    pub permission: vdesk_protocol::Permission,
    /// The viewer's name from its link.
    pub name: Option<String>,
    /// When the viewer's link expires, Unix milliseconds.
    pub expires_at: Option<u64>,
    /// The peer connection reported `connected` (or the session was adopted while streaming).
    pub connected: bool,
    /// The VM's agent is connected to the controller (false while it reconnects).
    pub agent_attached: bool,
    /// From the agent's last `sessionStats` (none yet: absent).
    pub codec: Option<String>,
    pub bitrate_kbps: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// Whether this viewer holds control now (the agent's last `sessionStats`; absent from
    /// older agents, and for WebSocket viewers).
    pub holds_control: Option<bool>,
    /// How the media travels: `host`, `srflx`, `prflx` (WebRTC, directly) or `relay` (WebRTC
    /// through TURN): the local candidate type of the selected pair, from the agent's last
    /// `sessionStats`; `websocket` for the WebSocket fallback through the controller. Absent
    /// until known.
    #[schema(pattern = "^(host|srflx|prflx|relay|websocket)$")]
    pub transport: Option<String>,
    /// The id of the viewer link that created the session (for `POST
    /// /api/admin/links/{linkId}/revoke`); absent for sessions adopted after a restart.
    pub link_id: Option<String>,
}
