//! The messages of vdesk's signalling, named by direction: agent <-> controller over a WebSocket,
//! controller -> viewer over server-sent events (or polls), and the JSON bodies of the HTTP API.
//! All are `#[serde(tag = "type", rename_all = "camelCase")]` so the viewer reads them as-is.

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{SessionId, VmId};
use crate::validate::{
    check_candidate_line, check_candidate_token, check_sdp, ValidationError, MAX_SDP_MID_LEN,
    MAX_UFRAG_LEN,
};

/// An ICE candidate exactly as the browser's `RTCIceCandidateInit` spells it. An empty
/// `candidate` string means end-of-candidates (as browsers send it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    #[serde(default)]
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

impl IceCandidate {
    /// The end-of-candidates marker for m-line `index` (what a browser's `onicecandidate` gives
    /// in `event.candidate` once gathering is complete).
    pub fn end_of_candidates(index: u32) -> Self {
        Self {
            candidate: String::new(),
            sdp_mid: None,
            sdp_m_line_index: Some(index),
            username_fragment: None,
        }
    }

    pub fn is_end_of_candidates(&self) -> bool {
        self.candidate.is_empty()
    }

    /// Structural checks and size caps of every field (`candidate` [`MAX_CANDIDATE_LEN`] bytes,
    /// `sdpMid` [`MAX_SDP_MID_LEN`], `usernameFragment` [`MAX_UFRAG_LEN`]); the error names the
    /// field. See [`check_candidate_line`].
    ///
    /// [`MAX_CANDIDATE_LEN`]: crate::validate::MAX_CANDIDATE_LEN
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_candidate_line(&self.candidate)?;
        if self.sdp_mid.is_none() && self.sdp_m_line_index.is_none() && !self.candidate.is_empty() {
            return Err(ValidationError::new(
                "candidate",
                "needs sdpMid or sdpMLineIndex",
            ));
        }
        if self.sdp_m_line_index.is_some_and(|i| i > 255) {
            return Err(ValidationError::new("sdpMLineIndex", "is larger than 255"));
        }
        check_candidate_token("sdpMid", self.sdp_mid.as_deref(), MAX_SDP_MID_LEN)?;
        check_candidate_token(
            "usernameFragment",
            self.username_fragment.as_deref(),
            MAX_UFRAG_LEN,
        )?;
        Ok(())
    }

    /// Bytes of its text fields, for per-session budgets.
    pub fn text_len(&self) -> usize {
        self.candidate.len()
            + self.sdp_mid.as_ref().map_or(0, String::len)
            + self.username_fragment.as_ref().map_or(0, String::len)
    }
}

/// Deserializes `null` (and a missing value) as the end-of-candidates marker, so that the report's
/// `{"candidate": null, "from": "browser"}` works too.
pub fn candidate_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<IceCandidate, D::Error> {
    Ok(Option::<IceCandidate>::deserialize(d)?.unwrap_or_default())
}

/// One STUN or TURN server, as `RTCIceServer` spells it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    Offer,
    Answer,
}

/// `RTCSessionDescriptionInit`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: SdpType,
    pub sdp: String,
}

impl SessionDescription {
    pub fn validate(&self, expected: SdpType) -> Result<(), ValidationError> {
        if self.kind != expected {
            return Err(ValidationError::new(
                "type",
                format!("must be {:?}", expected).to_lowercase(),
            ));
        }
        check_sdp(&self.sdp)
    }
}

/// What a viewer may do in a session: watch only (`view`), also send input while holding control
/// (`control`), or also take control from whoever holds it (`admin`). Ordered: view < control <
/// admin. Enforced by the agent (it drops input from a session that may not send it) and decided
/// by the controller (from the viewer's token). A message without it means `View`: the safe side.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    #[default]
    View,
    Control,
    Admin,
}

impl Permission {
    /// Whether this permission may ever send input (it still needs to hold control).
    pub fn may_control(self) -> bool {
        self >= Permission::Control
    }
}

/// Which peer a candidate comes from, in the report's words.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Vm,
    Browser,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Vm => Side::Browser,
            Side::Browser => Side::Vm,
        }
    }
}

/// Stable error codes: on the wire (HTTP bodies, `ended` events, agent errors) and in the viewer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    VmNotFound,
    SessionNotFound,
    AgentOffline,
    AgentDisconnected,
    Unauthorized,
    Forbidden,
    PayloadTooLarge,
    Conflict,
    TooManyRequests,
    AgentError,
    IdleTimeout,
    ViewerLeft,
    ShuttingDown,
    /// The viewer link behind the session reached its expiry: the session ends at that moment.
    LinkExpired,
    /// The session's peer did not connect within the controller's deadline.
    ConnectTimeout,
    Internal,
    /// The operator revoked the viewer link behind the session (`POST
    /// /api/admin/links/{id}/revoke`): its sessions end and the link is refused from then on.
    /// Agents are told `forbidden` instead (older agents do not know this code).
    LinkRevoked,
    /// The operator ended the session (`DELETE /api/admin/sessions/{id}`). Agents are told
    /// `viewer_left` instead (older agents do not know this code).
    EndedByAdmin,
}

impl ErrorCode {
    /// The code to send an agent: the codes newer than some agents (`link_revoked`,
    /// `ended_by_admin`) become the older code of the same effect, so that an agent that cannot
    /// read the new one still ends the session.
    pub fn for_agent(self) -> ErrorCode {
        match self {
            ErrorCode::LinkRevoked => ErrorCode::Forbidden,
            ErrorCode::EndedByAdmin => ErrorCode::ViewerLeft,
            other => other,
        }
    }
}

/// Which way the clipboard may travel in a session, set per viewer link (`mint-link
/// --clipboard`) and enforced by the agent. A message without it means `Both` (the old
/// behaviour); view-only sessions send nothing to the VM whatever this says.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClipboardPolicy {
    #[default]
    Both,
    /// Browser -> VM only.
    ToVm,
    /// VM -> browser only.
    FromVm,
    Off,
}

impl ClipboardPolicy {
    /// Whether the browser's clipboard may be written into the VM.
    pub fn allows_to_vm(self) -> bool {
        matches!(self, ClipboardPolicy::Both | ClipboardPolicy::ToVm)
    }
    /// Whether the VM's clipboard may be sent to the browser.
    pub fn allows_from_vm(self) -> bool {
        matches!(self, ClipboardPolicy::Both | ClipboardPolicy::FromVm)
    }
}

/// What the viewer link behind a session grants, as the controller hands it to the agent with the
/// offer and as the agent hands it back in `resume` (so that a restarted controller can check who
/// owns an adopted session). The agent enforces `permission` and `clipboard`, and ends the session
/// at `expires_at` by itself if the controller is gone.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionGrant {
    #[serde(default)]
    pub permission: Permission,
    /// An opaque tag derived from the link's token id (not the token, not reversible to it): only
    /// requests carrying a token with the same id may touch the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the link expires, Unix milliseconds; `None` = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub clipboard: ClipboardPolicy,
    /// The viewer's display name from the link (`mint-link --name`), shown to other viewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// agent <-> controller, one JSON text frame each, over `GET /api/agent/ws` (WebSocket)
// ---------------------------------------------------------------------------------------------

/// What an agent sends its controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum AgentToController {
    /// First message on a new connection, the answer to the controller's `challenge`.
    /// `proof` is [`crate::hello_proof`] of the agent's secret over the challenge's nonce and
    /// `vm_id`: the secret itself never crosses the wire. `token` (the secret in clear) is what
    /// protocol 1 agents sent; it is read only to refuse them with a clear message.
    Hello {
        vm_id: VmId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        protocol_version: u32,
        agent_version: String,
        /// Start time, encoders, whether it makes thumbnails: all optional (agents before them
        /// send none of it, and a controller that does not know them ignores them).
        #[serde(flatten)]
        info: AgentInfo,
    },
    /// A still of the VM's screen, the answer to `thumbnailRequest`: a JPEG (base64, at most
    /// [`MAX_THUMBNAIL_BYTES`] decoded) `width` x `height` pixels. Never sent unasked.
    Thumbnail {
        width: u32,
        height: u32,
        jpeg: String,
    },
    /// Instead of `hello` (`vdesk-agent doctor`): prove the secret the same way (`proof` over
    /// the challenge's nonce and `vm_id`) without registering. The controller answers `checked`
    /// (or `error`, as for a `hello`) and closes the connection; the VM's running agent, its
    /// sessions and what viewers see are untouched. A controller that predates it refuses the
    /// frame as a malformed hello and closes, which registers nothing either.
    Check {
        vm_id: VmId,
        proof: String,
        protocol_version: u32,
        agent_version: String,
    },
    /// The `webrtcbin` answer to the session's offer.
    Answer { session_id: SessionId, sdp: String },
    /// A local candidate of the agent's peer (empty `candidate` = end of candidates).
    Candidate {
        session_id: SessionId,
        candidate: IceCandidate,
    },
    /// A state change worth showing to the viewer and the logs (ICE, DTLS, peer connection).
    PeerState {
        session_id: SessionId,
        state: String,
    },
    /// The agent ended the session (pipeline failed, peer failed...). `reason` is for humans.
    SessionEnded {
        session_id: SessionId,
        code: ErrorCode,
        reason: String,
    },
    /// Sent once right after `welcome`: the sessions this agent still streams (kept alive while
    /// its link to the controller was down, e.g. across a controller restart). The controller
    /// adopts or re-attaches each one, or ends it with `endSession`; sessions of this VM that it
    /// knows and that are not listed end (`agent_disconnected`). An empty list is normal.
    Resume { sessions: Vec<ResumedSession> },
    /// Periodic (every few seconds) numbers of a live session, for the controller's `/metrics`.
    /// Informational: a controller that does not know it may ignore it.
    SessionStats {
        session_id: SessionId,
        stats: SessionStats,
    },
}

/// Largest thumbnail JPEG (decoded bytes) a controller takes; larger ones are refused.
pub const MAX_THUMBNAIL_BYTES: usize = 96 * 1024;
/// Largest thumbnail size either way, pixels.
pub const MAX_THUMBNAIL_SIDE: u32 = 640;

/// What an agent says about itself in its `hello`, for the operator (`GET /api/admin/vms`).
/// Every field is optional on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// When the agent process started, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// The encoder of each codec it offers, in its order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encoders: Vec<EncoderInfo>,
    /// It answers `thumbnailRequest` with `thumbnail`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thumbnails: bool,
}

/// One codec an agent offers and the encoder element it uses for it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncoderInfo {
    /// `H264`, `VP8`, `VP9`.
    pub codec: String,
    /// The GStreamer element, e.g. `x264enc`, `vaapih264enc`.
    pub encoder: String,
    #[serde(default)]
    pub hardware: bool,
}

/// One session an agent still streams, as announced in `resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumedSession {
    pub session_id: SessionId,
    /// The viewer's (latest) offer, so that a controller that never saw it can adopt the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// The agent's (latest) answer, if it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The grant the session was offered with, unchanged.
    #[serde(flatten)]
    pub grant: SessionGrant,
}

/// What the agent measures of one session's stream (send side, plus what the viewer's RTCP
/// receiver reports say). Absent values were not measured yet (no receiver report so far).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStats {
    /// `H264` or `VP8`.
    pub codec: String,
    /// Measured send rate of the video RTP stream (payload and headers, retransmissions
    /// excluded), kbit/s.
    pub bitrate_kbps: f64,
    /// The encoder's current target, set by the agent's rate controller, kbit/s.
    pub target_kbps: u32,
    /// Frames encoded per second.
    pub fps: f64,
    /// Round-trip time from the last RTCP receiver report, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Fraction of packets lost (0..1) over the last second or so: the growth of the viewer's
    /// cumulative loss count over the packets sent meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction_lost: Option<f64>,
    /// Packets lost in total, as the viewer reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_lost: Option<i64>,
    /// Interarrival jitter the viewer reports, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    /// Totals since the session started.
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub nack_count: u64,
    pub pli_count: u64,
    pub fir_count: u64,
    /// Keyframes the encoder was asked for (the viewer's PLI/FIR reaching it).
    pub keyframes_forced: u64,
    /// Whether this viewer holds control now (the agent's room). Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds_control: Option<bool>,
    /// The type of the local ICE candidate of the selected pair: `host`, `srflx`, `prflx` or
    /// `relay` (TURN). Absent from older agents and before a pair is selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// What a controller sends an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ControllerToAgent {
    /// The first frame on every new agent connection: a fresh random nonce (64 hex digits) the
    /// agent's `hello` must prove knowledge of its secret over. A new one per connection, so a
    /// captured `hello` is worth nothing on another connection.
    Challenge { nonce: String },
    /// Reply to a valid `hello`. `ice_servers` are the same ones the viewers get.
    Welcome { ice_servers: Vec<IceServer> },
    /// Reply to a valid `check`: the ICE servers (and TURN credentials) a `welcome` would carry,
    /// and the controller's wall clock (Unix milliseconds) so the agent can compare its own.
    /// The controller closes the connection right after it.
    Checked {
        ice_servers: Vec<IceServer>,
        now_ms: u64,
        controller_version: String,
    },
    /// A viewer's offer for a new session.
    Offer {
        session_id: SessionId,
        sdp: String,
        ice_servers: Vec<IceServer>,
        /// What the viewer's link grants (permission, owner tag, expiry, clipboard direction).
        #[serde(flatten)]
        grant: SessionGrant,
    },
    /// A candidate of the viewer's peer (empty `candidate` = end of candidates).
    Candidate {
        session_id: SessionId,
        candidate: IceCandidate,
    },
    /// A new offer from the viewer on an existing session (an ICE restart): the agent applies
    /// it to the session's peer and replies with a new `answer`.
    Reoffer { session_id: SessionId, sdp: String },
    /// The session is over (viewer left, timed out...); free everything it holds.
    EndSession {
        session_id: SessionId,
        code: ErrorCode,
        reason: String,
    },
    /// Something the agent sent was refused; on `hello` the connection is closed afterwards.
    Error { code: ErrorCode, message: String },
    /// Asks for one `thumbnail` at most `max_width` pixels wide. Sent only to agents whose
    /// `hello` said `thumbnails: true`.
    ThumbnailRequest { max_width: u32 },
}

// ---------------------------------------------------------------------------------------------
// controller -> viewer: server-sent events on `GET /api/webrtc/session/{id}/events` (the SSE
// `event:` is the `type`, `data:` is this JSON, `id:` a sequence number), or polled.
// ---------------------------------------------------------------------------------------------

/// What a controller tells a viewer about its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ControllerToViewer {
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: IceCandidate,
    },
    PeerState {
        state: String,
    },
    /// The session is over; the viewer should show `reason` and may retry.
    Ended {
        code: ErrorCode,
        reason: String,
    },
}

impl ControllerToViewer {
    /// The SSE event name: the same string as the JSON `type`.
    pub fn event_name(&self) -> &'static str {
        match self {
            ControllerToViewer::Answer { .. } => "answer",
            ControllerToViewer::Candidate { .. } => "candidate",
            ControllerToViewer::PeerState { .. } => "peerState",
            ControllerToViewer::Ended { .. } => "ended",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP bodies
// ---------------------------------------------------------------------------------------------

/// `GET /api/vms` item and `GET /api/vms/{vm_id}` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmInfo {
    pub vm_id: VmId,
    pub online: bool,
}

/// `GET /api/vms` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmList {
    pub vms: Vec<VmInfo>,
}

/// `GET /api/webrtc/config` body: what the browser passes to `new RTCPeerConnection`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtcConfig {
    pub ice_servers: Vec<IceServer>,
}

/// `POST /api/webrtc/session` body: open a session for `vm_id` with the browser's offer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    pub vm_id: VmId,
    pub offer: SessionDescription,
}

/// `POST /api/webrtc/session` reply (201).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    pub session_id: SessionId,
    pub vm_id: VmId,
    /// What the viewer's link grants in this session (the owner tag is left out): the viewer
    /// sends no input in view mode and follows the clipboard direction.
    #[serde(default)]
    pub grant: SessionGrant,
    /// Path of the server-sent-events stream for this session.
    pub events_url: String,
}

/// `POST /api/webrtc/session/{id}/candidate` body, as in the report.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostCandidate {
    #[serde(deserialize_with = "candidate_or_null", default)]
    pub candidate: IceCandidate,
    pub from: Side,
}

/// `GET /api/webrtc/session/{id}/candidates/{vm|browser}` reply: the candidates of that side
/// that this reader has not been given yet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateList {
    pub candidates: Vec<IceCandidate>,
    /// True once that side has sent end-of-candidates (also included in `candidates` once).
    pub complete: bool,
}

/// Every error body: `{"error": {"code": "...", "message": "..."}}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sid() -> SessionId {
        SessionId::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn candidate_matches_rtc_ice_candidate_init() {
        let js = json!({"candidate": "candidate:1 1 UDP 2122252543 192.0.2.1 50000 typ host",
                        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"});
        let c: IceCandidate = serde_json::from_value(js.clone()).unwrap();
        assert_eq!(c.sdp_m_line_index, Some(0));
        assert_eq!(serde_json::to_value(&c).unwrap(), js);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn report_candidate_post_accepts_null_as_end_of_candidates() {
        let p: PostCandidate =
            serde_json::from_value(json!({"candidate": null, "from": "browser"})).unwrap();
        assert!(p.candidate.is_end_of_candidates());
        assert_eq!(p.from, Side::Browser);
        let p: PostCandidate = serde_json::from_value(json!({"from": "vm"})).unwrap();
        assert!(p.candidate.is_end_of_candidates());
        assert!(serde_json::from_value::<PostCandidate>(json!({"from": "nobody"})).is_err());
    }

    #[test]
    fn agent_messages_round_trip() {
        let msgs = vec![
            AgentToController::Hello {
                vm_id: VmId::new("demo").unwrap(),
                proof: Some("ab".repeat(32)),
                token: None,
                protocol_version: 2,
                agent_version: "0.1.0".into(),
                info: AgentInfo {
                    started_at: Some(1_767_225_600_000),
                    encoders: vec![EncoderInfo {
                        codec: "H264".into(),
                        encoder: "x264enc".into(),
                        hardware: false,
                    }],
                    thumbnails: true,
                },
            },
            AgentToController::Thumbnail {
                width: 320,
                height: 180,
                jpeg: "/9j/2Q==".into(),
            },
            AgentToController::Answer {
                session_id: sid(),
                sdp: "v=0".into(),
            },
            AgentToController::Candidate {
                session_id: sid(),
                candidate: IceCandidate::end_of_candidates(0),
            },
            AgentToController::PeerState {
                session_id: sid(),
                state: "connected".into(),
            },
            AgentToController::SessionEnded {
                session_id: sid(),
                code: ErrorCode::AgentError,
                reason: "boom".into(),
            },
            AgentToController::Resume { sessions: vec![] },
            AgentToController::Resume {
                sessions: vec![ResumedSession {
                    session_id: sid(),
                    offer: Some("v=0".into()),
                    answer: None,
                    grant: SessionGrant {
                        permission: Permission::Control,
                        owner: Some("o1".into()),
                        expires_at: None,
                        clipboard: ClipboardPolicy::Off,
                        name: None,
                    },
                }],
            },
            AgentToController::SessionStats {
                session_id: sid(),
                stats: SessionStats {
                    codec: "H264".into(),
                    bitrate_kbps: 1234.5,
                    target_kbps: 1500,
                    fps: 29.5,
                    rtt_ms: Some(101.0),
                    fraction_lost: Some(0.03),
                    packets_lost: Some(12),
                    jitter_ms: None,
                    ..Default::default()
                },
            },
        ];
        for m in msgs {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(
                serde_json::from_str::<AgentToController>(&s).unwrap(),
                m,
                "{s}"
            );
        }
        let hello = serde_json::to_value(AgentToController::Hello {
            vm_id: VmId::new("demo").unwrap(),
            proof: Some("p".into()),
            token: None,
            protocol_version: 2,
            agent_version: "x".into(),
            info: AgentInfo::default(),
        })
        .unwrap();
        assert!(
            hello.get("startedAt").is_none() && hello.get("thumbnails").is_none(),
            "the optional fields stay off the wire when unset: {hello}"
        );
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["vmId"], "demo");
        assert_eq!(hello["proof"], "p");
        assert_eq!(hello["protocolVersion"], 2);
        assert!(
            hello.get("token").is_none(),
            "no secret on the wire: {hello}"
        );
        // A protocol 1 hello still parses, so that the controller can refuse it by name.
        let old: AgentToController = serde_json::from_value(json!({"type": "hello",
            "vmId": "demo", "token": "t", "protocolVersion": 1, "agentVersion": "0.1.0"}))
        .unwrap();
        assert!(matches!(
            old,
            AgentToController::Hello {
                proof: None,
                token: Some(_),
                ref info,
                ..
            } if *info == AgentInfo::default()
        ));
    }

    #[test]
    fn new_error_codes_reach_agents_as_codes_they_know() {
        assert_eq!(ErrorCode::LinkRevoked.for_agent(), ErrorCode::Forbidden);
        assert_eq!(ErrorCode::EndedByAdmin.for_agent(), ErrorCode::ViewerLeft);
        assert_eq!(ErrorCode::IdleTimeout.for_agent(), ErrorCode::IdleTimeout);
        let req =
            serde_json::to_value(ControllerToAgent::ThumbnailRequest { max_width: 320 }).unwrap();
        assert_eq!(req, json!({"type": "thumbnailRequest", "maxWidth": 320}));
    }

    #[test]
    fn controller_messages_round_trip() {
        let msgs = vec![
            ControllerToAgent::Challenge {
                nonce: "00".repeat(32),
            },
            ControllerToAgent::Welcome {
                ice_servers: vec![IceServer {
                    urls: vec!["stun:127.0.0.1:3478".into()],
                    username: None,
                    credential: None,
                }],
            },
            ControllerToAgent::Offer {
                session_id: sid(),
                sdp: "v=0".into(),
                ice_servers: vec![],
                grant: SessionGrant {
                    permission: Permission::Control,
                    owner: Some("o1".into()),
                    expires_at: Some(1_900_000_000_000),
                    clipboard: ClipboardPolicy::ToVm,
                    name: Some("alice".into()),
                },
            },
            ControllerToAgent::EndSession {
                session_id: sid(),
                code: ErrorCode::ViewerLeft,
                reason: "bye".into(),
            },
            ControllerToAgent::Reoffer {
                session_id: sid(),
                sdp: "v=0".into(),
            },
            ControllerToAgent::Error {
                code: ErrorCode::Unauthorized,
                message: "bad token".into(),
            },
        ];
        for m in msgs {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(
                serde_json::from_str::<ControllerToAgent>(&s).unwrap(),
                m,
                "{s}"
            );
        }
        let v = serde_json::to_value(ControllerToAgent::EndSession {
            session_id: sid(),
            code: ErrorCode::AgentOffline,
            reason: String::new(),
        })
        .unwrap();
        assert_eq!(v["type"], "endSession");
        assert_eq!(v["sessionId"], sid().as_str());
        assert_eq!(v["code"], "agent_offline");
    }

    #[test]
    fn resume_and_reoffer_are_spelled_in_camel_case() {
        let v = json!({"type": "resume", "sessions": [{"sessionId": sid()}]});
        match serde_json::from_value::<AgentToController>(v).unwrap() {
            AgentToController::Resume { sessions } => {
                assert_eq!(sessions.len(), 1);
                assert_eq!(sessions[0].grant.permission, Permission::View);
                assert_eq!(sessions[0].offer, None);
            }
            other => panic!("{other:?}"),
        }
        let v = serde_json::to_value(ControllerToAgent::Reoffer {
            session_id: sid(),
            sdp: "v=0".into(),
        })
        .unwrap();
        assert_eq!(v["type"], "reoffer");
        assert_eq!(v["sessionId"], sid().as_str());
    }

    #[test]
    fn an_offer_without_permission_is_view_only() {
        let v = json!({"type": "offer", "sessionId": sid(), "sdp": "v=0", "iceServers": []});
        match serde_json::from_value::<ControllerToAgent>(v).unwrap() {
            ControllerToAgent::Offer { grant, .. } => {
                assert_eq!(grant, SessionGrant::default());
                assert_eq!(grant.permission, Permission::View);
                assert_eq!(grant.clipboard, ClipboardPolicy::Both);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn viewer_messages_carry_their_event_name_as_type() {
        let msgs = vec![
            ControllerToViewer::Answer { sdp: "v=0".into() },
            ControllerToViewer::Candidate {
                candidate: IceCandidate::end_of_candidates(0),
            },
            ControllerToViewer::PeerState {
                state: "dtls:connected".into(),
            },
            ControllerToViewer::Ended {
                code: ErrorCode::AgentDisconnected,
                reason: "VM agent disconnected".into(),
            },
        ];
        for m in msgs {
            let v = serde_json::to_value(&m).unwrap();
            assert_eq!(v["type"], m.event_name());
            assert_eq!(serde_json::from_value::<ControllerToViewer>(v).unwrap(), m);
        }
    }

    #[test]
    fn offer_validation_names_the_field() {
        let d = SessionDescription {
            kind: SdpType::Answer,
            sdp: "v=0\r\nm=video 9 x 96\r\n".into(),
        };
        assert_eq!(d.validate(SdpType::Offer).unwrap_err().field, "type");
        assert!(d.validate(SdpType::Answer).is_ok());
        let body = json!({"vmId": "demo", "offer": {"type": "offer", "sdp": "v=0"}});
        let c: CreateSession = serde_json::from_value(body).unwrap();
        assert_eq!(c.offer.validate(SdpType::Offer).unwrap_err().field, "sdp");
    }
}
