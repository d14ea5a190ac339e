//! The operator's view of the relay and its levers (the admin API and the `/admin` page):
//! revoked viewer links (refused from then on, their sessions ended; each entry kept as long as
//! the link could still be valid, at most [`MAX_REVOKED`]), ending one session, what each VM's
//! agent said about itself in its `hello` (version, start time, encoders), and each VM's
//! thumbnail (asked of the agent on demand, at most one request in flight per agent, cached
//! [`THUMBNAIL_FRESH`], checked before it is kept: a hostile agent can only waste its own
//! request). Same rules as the rest of the relay: no sockets, time passed in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tracing::{debug, info, warn};
use vdesk_protocol::{
    AgentInfo, ControllerToAgent, EncoderInfo, ErrorCode, SessionId, VmId, MAX_THUMBNAIL_BYTES,
    MAX_THUMBNAIL_SIDE,
};

use super::{ConnId, Relay, RelayError};
use crate::viewer_token::{unix_now, unix_now_ms, MAX_TTL_SECS};

/// Most revoked links remembered at once (each entry goes when its link would have expired).
pub const MAX_REVOKED: usize = 65_536;
/// A thumbnail younger than this is served from the cache without asking the agent.
pub const THUMBNAIL_FRESH: Duration = Duration::from_secs(4);
/// A thumbnail request the agent has not answered in this long may be sent again.
pub const THUMBNAIL_RETRY: Duration = Duration::from_secs(3);
/// Most encoders kept from a `hello`, and the longest name kept.
const MAX_ENCODERS: usize = 8;
const MAX_NAME: usize = 32;

/// What the relay keeps for the operator.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    /// Revoked link id -> Unix seconds until which it is refused (its expiry, when known).
    revoked: HashMap<String, u64>,
    /// What each VM's agent said in its last `hello` (kept while it is offline).
    agents: HashMap<VmId, AgentSeen>,
    thumbs: HashMap<VmId, Thumbnail>,
    /// The last thumbnail refused per VM: when, and why.
    refused: HashMap<VmId, (Instant, String)>,
    /// Agent connections asked for a thumbnail, and when.
    asked: HashMap<ConnId, Instant>,
}

#[derive(Debug, Clone)]
struct AgentSeen {
    version: String,
    info: AgentInfo,
}

/// A VM's last thumbnail: a checked JPEG.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    pub jpeg: Arc<[u8]>,
    pub at: Instant,
}

/// One VM as `GET /api/admin/vms` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmView {
    pub vm_id: VmId,
    pub online: bool,
    /// The agent's version, from its last `hello` (also while it is offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the agent process started, Unix milliseconds (agents before this field: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// Seconds since then, while it is online.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// The encoder of each codec the agent offers, in its order of preference.
    pub encoders: Vec<EncoderInfo>,
    /// The agent makes thumbnails (`GET /api/admin/vms/{vmId}/thumbnail`).
    pub thumbnails: bool,
    /// Its live sessions.
    pub sessions: usize,
}

/// What [`Relay::thumbnail`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum ThumbnailState {
    /// Fresh enough to serve.
    Fresh(Thumbnail),
    /// Asked of the agent (now or a moment ago); the last one, if any, meanwhile.
    Asked(Option<Thumbnail>),
    /// The agent does not make thumbnails (older than them).
    Unsupported,
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_NAME)
        .collect()
}

/// The agent's `hello` information, bounded and printable.
fn clean_info(info: AgentInfo) -> AgentInfo {
    AgentInfo {
        started_at: info.started_at,
        encoders: info
            .encoders
            .into_iter()
            .take(MAX_ENCODERS)
            .map(|e| EncoderInfo {
                codec: clean(&e.codec),
                encoder: clean(&e.encoder),
                hardware: e.hardware,
            })
            .collect(),
        thumbnails: info.thumbnails,
    }
}

/// A thumbnail as an agent sent it, checked: sizes within bounds, base64 of at most
/// [`MAX_THUMBNAIL_BYTES`] (the length is checked before decoding), a JPEG from its start-of-image
/// to its end-of-image marker. The error says what is wrong, for the log.
pub fn check_thumbnail(width: u32, height: u32, jpeg: &str) -> Result<Vec<u8>, String> {
    if !(1..=MAX_THUMBNAIL_SIDE).contains(&width) || !(1..=MAX_THUMBNAIL_SIDE).contains(&height) {
        return Err(format!(
            "size {width}x{height} is outside 1..={MAX_THUMBNAIL_SIDE}"
        ));
    }
    if jpeg.len() > MAX_THUMBNAIL_BYTES.div_ceil(3) * 4 {
        return Err(format!(
            "{} bytes of base64: over the {MAX_THUMBNAIL_BYTES}-byte limit",
            jpeg.len()
        ));
    }
    let bytes = STANDARD
        .decode(jpeg)
        .map_err(|e| format!("not base64: {e}"))?;
    if bytes.len() < 4 || bytes[..2] != [0xFF, 0xD8] || bytes[bytes.len() - 2..] != [0xFF, 0xD9] {
        return Err("not a JPEG (no start or end of image marker)".into());
    }
    Ok(bytes)
}

impl Relay {
    // ---------------------------------------------------------------------------------------
    // revocation and ending sessions
    // ---------------------------------------------------------------------------------------

    /// Revokes viewer link `link_id` (whose owner tag is `tag`): its live sessions end with
    /// `link_revoked` (viewer and agent told) and [`Self::is_revoked`] says so until the link
    /// would have expired (its sessions' expiry; otherwise the longest a link lives, shortened
    /// when the link is next seen). Returns the number of sessions ended and the Unix second
    /// until which the link is refused.
    pub fn revoke_link(
        &mut self,
        link_id: &str,
        tag: &str,
        now: Instant,
    ) -> Result<(usize, u64), RelayError> {
        let mut ids: Vec<SessionId> = Vec::new();
        let mut until: Option<u64> = None;
        for (id, s) in &self.sessions {
            if s.grant.owner.as_deref() == Some(tag) {
                ids.push(id.clone());
                let exp = s.grant.expires_at.map(|ms| ms.div_ceil(1000));
                until = until.max(exp);
            }
        }
        let until = until.unwrap_or_else(|| unix_now().saturating_add(MAX_TTL_SECS));
        let known = self.admin.revoked.contains_key(link_id);
        if !known && self.admin.revoked.len() >= MAX_REVOKED {
            self.prune_revoked();
            if self.admin.revoked.len() >= MAX_REVOKED {
                return Err(RelayError::Limit(format!(
                    "{MAX_REVOKED} links are revoked already, the most remembered; change \
                     --secret to revoke every link at once"
                )));
            }
        }
        let entry = self.admin.revoked.entry(link_id.to_owned()).or_insert(0);
        *entry = (*entry).max(until);
        let until = *entry;
        ids.sort();
        info!(
            link = link_id,
            sessions = ids.len(),
            until,
            "viewer link revoked"
        );
        for id in &ids {
            self.end_session(
                id,
                ErrorCode::LinkRevoked,
                "the operator revoked this viewer link",
                true,
                now,
            );
        }
        Ok((ids.len(), until))
    }

    /// Whether link `link_id` (valid until `link_expires`, Unix seconds: its signed expiry) was
    /// revoked. Seeing the link tells its expiry: the entry is kept no longer than that.
    pub fn is_revoked(&mut self, link_id: &str, link_expires: u64) -> bool {
        match self.admin.revoked.get_mut(link_id) {
            Some(until) => {
                *until = (*until).min(link_expires);
                true
            }
            None => false,
        }
    }

    /// Number of links remembered as revoked.
    pub fn revoked_count(&self) -> usize {
        self.admin.revoked.len()
    }

    /// Forgets revoked links that have expired by now (wall clock).
    pub(crate) fn prune_revoked(&mut self) {
        let now = unix_now();
        self.admin.revoked.retain(|_, until| *until > now);
    }

    /// The operator ends session `id`: viewer (`ended_by_admin`) and agent are told.
    pub fn end_session_by_admin(&mut self, id: &SessionId, now: Instant) -> Result<(), RelayError> {
        self.live(id)?;
        self.end_session(
            id,
            ErrorCode::EndedByAdmin,
            "the operator ended this session",
            true,
            now,
        );
        Ok(())
    }

    /// Notes which link created session `id` (for `GET /api/admin/sessions`, so that the
    /// operator can revoke it).
    pub fn note_link(&mut self, id: &SessionId, link_id: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.link_id = Some(link_id.to_owned());
        }
    }

    // ---------------------------------------------------------------------------------------
    // agents
    // ---------------------------------------------------------------------------------------

    /// The agent of `vm` said `hello` with `version` and `info`.
    pub(crate) fn agent_seen(&mut self, vm: &VmId, version: &str, info: AgentInfo) {
        self.admin.agents.insert(
            vm.clone(),
            AgentSeen {
                version: clean(version),
                info: clean_info(info),
            },
        );
    }

    /// Every known VM with its agent's version, uptime and encoders, and its live sessions.
    pub fn vm_views(&self) -> Vec<VmView> {
        let now_ms = unix_now_ms();
        self.vms
            .iter()
            .map(|(vm, conn)| {
                let seen = self.admin.agents.get(vm);
                let online = conn.is_some();
                let started_at = seen.and_then(|a| a.info.started_at);
                VmView {
                    vm_id: vm.clone(),
                    online,
                    agent_version: seen.map(|a| a.version.clone()),
                    started_at,
                    uptime_secs: started_at
                        .filter(|_| online)
                        .map(|t| now_ms.saturating_sub(t) / 1000),
                    encoders: seen.map(|a| a.info.encoders.clone()).unwrap_or_default(),
                    thumbnails: seen.is_some_and(|a| a.info.thumbnails),
                    sessions: self.sessions.values().filter(|s| &s.vm == vm).count(),
                }
            })
            .collect()
    }

    // ---------------------------------------------------------------------------------------
    // thumbnails
    // ---------------------------------------------------------------------------------------

    /// `vm`'s thumbnail: the cached one if fresh, else a request goes to its agent (unless one
    /// is in flight) and the caller waits for [`Self::thumbnail_since`].
    pub fn thumbnail(&mut self, vm: &VmId, now: Instant) -> Result<ThumbnailState, RelayError> {
        let conn = match self.vms.get(vm) {
            None => return Err(RelayError::VmNotFound(vm.clone())),
            Some(None) => return Err(RelayError::AgentOffline),
            Some(Some(conn)) => *conn,
        };
        let cached = self.admin.thumbs.get(vm).cloned();
        if let Some(t) = &cached {
            if now.saturating_duration_since(t.at) < THUMBNAIL_FRESH {
                return Ok(ThumbnailState::Fresh(t.clone()));
            }
        }
        if !self.admin.agents.get(vm).is_some_and(|a| a.info.thumbnails) {
            return Ok(ThumbnailState::Unsupported);
        }
        let in_flight = self
            .admin
            .asked
            .get(&conn)
            .is_some_and(|t| now.saturating_duration_since(*t) < THUMBNAIL_RETRY);
        if !in_flight {
            self.admin.asked.insert(conn, now);
            self.send_agent(
                conn,
                ControllerToAgent::ThumbnailRequest {
                    max_width: crate::relay::admin::THUMBNAIL_WIDTH,
                },
            );
        }
        Ok(ThumbnailState::Asked(cached))
    }

    /// What `vm`'s agent sent at or after `since`: a thumbnail, or why its answer was
    /// refused; `None` while nothing came.
    pub fn thumbnail_since(&self, vm: &VmId, since: Instant) -> Option<Result<Thumbnail, String>> {
        if let Some(t) = self.admin.thumbs.get(vm).filter(|t| t.at >= since) {
            return Some(Ok(t.clone()));
        }
        self.admin
            .refused
            .get(vm)
            .filter(|(at, _)| *at >= since)
            .map(|(_, why)| Err(why.clone()))
    }

    /// A `thumbnail` from the agent of `vm` on `conn`: kept if it was asked for and passes
    /// [`check_thumbnail`]; otherwise dropped (logged). Never an error to the agent: a refused
    /// thumbnail costs it only its own request.
    pub(crate) fn agent_thumbnail(
        &mut self,
        conn: ConnId,
        vm: &VmId,
        width: u32,
        height: u32,
        jpeg: &str,
        now: Instant,
    ) {
        if self.admin.asked.remove(&conn).is_none() {
            debug!(vm = %vm, conn = %conn, "thumbnail nobody asked for dropped");
            return;
        }
        match check_thumbnail(width, height, jpeg) {
            Ok(bytes) => {
                self.admin.thumbs.insert(
                    vm.clone(),
                    Thumbnail {
                        width,
                        height,
                        jpeg: bytes.into(),
                        at: now,
                    },
                );
            }
            Err(e) => {
                warn!(vm = %vm, conn = %conn, "thumbnail refused: {e}");
                self.admin.refused.insert(vm.clone(), (now, e));
            }
        }
    }

    /// The agent connection `conn` is gone: its thumbnail request with it.
    pub(crate) fn admin_conn_gone(&mut self, conn: ConnId) {
        self.admin.asked.remove(&conn);
    }
}

/// The width the controller asks thumbnails in.
pub const THUMBNAIL_WIDTH: u32 = 320;
