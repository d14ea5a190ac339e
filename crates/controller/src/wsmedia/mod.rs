//! The WebSocket media path through the controller (the fallback when WebRTC cannot connect;
//! docs/protocol.md "WebSocket media"): each agent's media link (`GET /api/agent/media`,
//! `agent.rs`) and each WebSocket viewer (`GET /api/vms/{vmId}/stream`, `viewer.rs`), and this
//! registry between them. The agent sends one copy of each encoded frame per viewer session; the
//! controller puts it in that viewer's bounded queue (`queue.rs`: full -> skip to the next
//! keyframe, and the agent is asked for one). Text goes both ways through bounded channels
//! (full -> the message is dropped). Nothing here is unbounded. The lock is never held across an
//! `.await`.

pub mod agent;
pub mod queue;
pub mod viewer;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info};
use vdesk_protocol::wsmedia::{parse_frame, strip_session, ControllerToMedia, MediaToController};
use vdesk_protocol::{SessionGrant, SessionId, VmId};

use queue::{FrameQueue, Push, VIEWER_QUEUE_FRAMES};

/// Text messages waiting for an agent's media link.
pub const LINK_TEXT_QUEUE: usize = 256;
/// Text messages waiting for one viewer.
pub const VIEWER_TEXT_QUEUE: usize = 256;

/// What the viewer's task is told besides frames.
#[derive(Debug, Clone, PartialEq)]
pub enum ToViewer {
    /// An `AgentToViewer` JSON text.
    Text(String),
    /// The stream ended (the agent's media link went away, or the agent ended it).
    End(String),
}

/// One viewer's frames, shared by the registry (which fills them) and its socket task.
#[derive(Debug)]
pub struct ViewerFrames {
    queue: Mutex<FrameQueue<Bytes>>,
    pub ready: Notify,
}

impl ViewerFrames {
    fn new() -> Self {
        Self {
            queue: Mutex::new(FrameQueue::new(VIEWER_QUEUE_FRAMES)),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FrameQueue<Bytes>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next frame to send, if any.
    pub fn pop(&self) -> Option<Bytes> {
        self.lock().pop()
    }

    /// Frames waiting now.
    pub fn depth(&self) -> usize {
        self.lock().len()
    }

    /// Frames this viewer did not get (skipped to a keyframe).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped()
    }
}

#[derive(Debug)]
struct Link {
    id: u64,
    tx: mpsc::Sender<String>,
}

#[derive(Debug)]
struct Slot {
    vm: VmId,
    grant: SessionGrant,
    frames: Arc<ViewerFrames>,
    tx: mpsc::Sender<ToViewer>,
}

#[derive(Debug, Default)]
struct Inner {
    links: HashMap<VmId, Link>,
    viewers: HashMap<SessionId, Slot>,
    next_link: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames_relayed: AtomicU64,
    pub bytes_relayed: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub text_dropped: AtomicU64,
    pub viewers_opened: AtomicU64,
}

/// The registry of media links and WebSocket viewers.
#[derive(Debug, Default)]
pub struct WsMedia {
    inner: Mutex<Inner>,
    pub counters: Counters,
}

/// A viewer the registry opened: its id, its frames and its other messages.
#[derive(Debug)]
pub struct OpenViewer {
    pub id: SessionId,
    pub frames: Arc<ViewerFrames>,
    pub rx: mpsc::Receiver<ToViewer>,
}

fn send_json(tx: &mpsc::Sender<String>, msg: &ControllerToMedia) -> bool {
    serde_json::to_string(msg).is_ok_and(|t| tx.try_send(t).is_ok())
}

impl WsMedia {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An agent's media link is up (replacing an older one for the same VM): returns its id and
    /// what to send it. The VM's current viewers are opened again on it.
    pub fn attach_link(&self, vm: &VmId) -> (u64, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(LINK_TEXT_QUEUE);
        let mut inner = self.lock();
        inner.next_link += 1;
        let id = inner.next_link;
        for (sid, slot) in inner.viewers.iter().filter(|(_, s)| &s.vm == vm) {
            send_json(
                &tx,
                &ControllerToMedia::WsOpen {
                    session_id: sid.clone(),
                    grant: slot.grant.clone(),
                },
            );
        }
        inner.links.insert(vm.clone(), Link { id, tx });
        info!(vm = %vm, "agent media link up");
        (id, rx)
    }

    /// The link `id` of `vm` closed: its viewers' streams end (they reconnect).
    pub fn detach_link(&self, vm: &VmId, id: u64) {
        let mut inner = self.lock();
        if inner.links.get(vm).is_none_or(|l| l.id != id) {
            return;
        }
        inner.links.remove(vm);
        let gone: Vec<SessionId> = inner
            .viewers
            .iter()
            .filter(|(_, s)| &s.vm == vm)
            .map(|(id, _)| id.clone())
            .collect();
        for sid in gone {
            if let Some(slot) = inner.viewers.remove(&sid) {
                let _ = slot
                    .tx
                    .try_send(ToViewer::End("the VM's agent lost its media link".into()));
            }
        }
        info!(vm = %vm, "agent media link down");
    }

    /// Whether `vm`'s agent has a media link now.
    pub fn has_link(&self, vm: &VmId) -> bool {
        self.lock().links.contains_key(vm)
    }

    /// A binary frame from `vm`'s agent: to the viewer it names, if that viewer watches `vm`.
    pub fn on_frame(&self, vm: &VmId, bytes: &[u8]) -> Result<(), String> {
        let (header, _) = parse_frame(bytes).map_err(|e| e.to_string())?;
        let keyframe = header.keyframe;
        let sid = SessionId::parse(header.session).map_err(|e| e.to_string())?;
        let inner = self.lock();
        let Some(slot) = inner.viewers.get(&sid).filter(|s| &s.vm == vm) else {
            return Ok(()); // A viewer that just left: not an error.
        };
        let frame = Bytes::from(strip_session(bytes).map_err(|e| e.to_string())?);
        let pushed = slot.frames.lock().push(frame, keyframe);
        match pushed {
            Push::Queued => slot.frames.ready.notify_one(),
            Push::Skipped => {
                self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Push::Overflow => {
                debug!(session = %sid, "WebSocket viewer fell behind: skipping to the next keyframe");
                self.counters
                    .frames_dropped
                    .fetch_add(VIEWER_QUEUE_FRAMES as u64 + 1, Ordering::Relaxed);
                self.counters
                    .keyframe_requests
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(link) = inner.links.get(vm) {
                    send_json(&link.tx, &ControllerToMedia::WsKeyframe { session_id: sid });
                }
            }
        }
        Ok(())
    }

    /// A text message from `vm`'s agent.
    pub fn on_agent_message(&self, vm: &VmId, msg: MediaToController) {
        let mut inner = self.lock();
        match msg {
            MediaToController::WsOutput { session_id, text } => {
                if let Some(slot) = inner.viewers.get(&session_id).filter(|s| &s.vm == vm) {
                    if slot.tx.try_send(ToViewer::Text(text)).is_err() {
                        self.counters.text_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            MediaToController::WsEnded { session_id, reason } => {
                if inner.viewers.get(&session_id).is_some_and(|s| &s.vm == vm) {
                    if let Some(slot) = inner.viewers.remove(&session_id) {
                        let _ = slot.tx.try_send(ToViewer::End(reason));
                    }
                }
            }
        }
    }

    /// A new WebSocket viewer of `vm` with `grant`; refused when the VM's agent has no media
    /// link or already has `max_per_vm` WebSocket viewers.
    pub fn open_viewer(
        &self,
        vm: &VmId,
        grant: SessionGrant,
        max_per_vm: usize,
    ) -> Result<OpenViewer, String> {
        let mut inner = self.lock();
        let Some(link) = inner.links.get(vm) else {
            return Err(format!(
                "VM {vm}'s agent has no media link (offline, or a version without the \
                 WebSocket fallback)"
            ));
        };
        let here = inner.viewers.values().filter(|s| &s.vm == vm).count();
        if here >= max_per_vm {
            return Err(format!(
                "VM {vm} already has {here} WebSocket viewers (--max-sessions-per-vm)"
            ));
        }
        let id = SessionId::random();
        if !send_json(
            &link.tx,
            &ControllerToMedia::WsOpen {
                session_id: id.clone(),
                grant: grant.clone(),
            },
        ) {
            return Err("the agent's media link is congested; try again".into());
        }
        let (tx, rx) = mpsc::channel(VIEWER_TEXT_QUEUE);
        let frames = Arc::new(ViewerFrames::new());
        inner.viewers.insert(
            id.clone(),
            Slot {
                vm: vm.clone(),
                grant,
                frames: frames.clone(),
                tx,
            },
        );
        self.counters.viewers_opened.fetch_add(1, Ordering::Relaxed);
        Ok(OpenViewer { id, frames, rx })
    }

    /// A message from viewer `id` (input, clipboard, control): to its agent, if the link has
    /// room (otherwise dropped: the agent is not keeping up).
    pub fn viewer_message(&self, id: &SessionId, msg: ControllerToMedia) {
        let inner = self.lock();
        let Some(slot) = inner.viewers.get(id) else {
            return;
        };
        if let Some(link) = inner.links.get(&slot.vm) {
            if !send_json(&link.tx, &msg) {
                self.counters.text_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Viewer `id` left: the agent stops its stream.
    pub fn close_viewer(&self, id: &SessionId) {
        let mut inner = self.lock();
        let Some(slot) = inner.viewers.remove(id) else {
            return;
        };
        if let Some(link) = inner.links.get(&slot.vm) {
            send_json(
                &link.tx,
                &ControllerToMedia::WsClose {
                    session_id: id.clone(),
                },
            );
        }
    }

    /// Every WebSocket viewer as `GET /api/admin/sessions` shows it (`transport: "websocket"`;
    /// no stats, no link id).
    pub fn session_views(&self) -> Vec<crate::relay::SessionView> {
        let inner = self.lock();
        inner
            .viewers
            .iter()
            .map(|(id, slot)| crate::relay::SessionView {
                session_id: id.clone(),
                vm_id: slot.vm.clone(),
                permission: slot.grant.permission,
                name: slot.grant.name.clone(),
                expires_at: slot.grant.expires_at,
                connected: true,
                agent_attached: inner.links.contains_key(&slot.vm),
                codec: None,
                bitrate_kbps: None,
                rtt_ms: None,
                holds_control: None,
                transport: Some("websocket".into()),
                link_id: None,
            })
            .collect()
    }

    /// `(media links, viewers)` now.
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.links.len(), inner.viewers.len())
    }

    /// The WebSocket path's part of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let (links, viewers) = self.sizes();
        let c = &self.counters;
        let rows: [(&str, &str, &str, u64); 8] = [
            (
                "vdesk_ws_media_links",
                "gauge",
                "Agents with a media link (WebSocket fallback) now.",
                links as u64,
            ),
            (
                "vdesk_ws_viewers",
                "gauge",
                "WebSocket viewers streaming now.",
                viewers as u64,
            ),
            (
                "vdesk_ws_viewers_opened_total",
                "counter",
                "WebSocket viewers opened.",
                c.viewers_opened.load(Ordering::Relaxed),
            ),
            (
                "vdesk_ws_frames_relayed_total",
                "counter",
                "Video frames sent to WebSocket viewers.",
                c.frames_relayed.load(Ordering::Relaxed),
            ),
            (
                "vdesk_ws_bytes_relayed_total",
                "counter",
                "Video bytes sent to WebSocket viewers.",
                c.bytes_relayed.load(Ordering::Relaxed),
            ),
            (
                "vdesk_ws_frames_dropped_total",
                "counter",
                "Video frames WebSocket viewers did not get (fell behind: skipped to a keyframe).",
                c.frames_dropped.load(Ordering::Relaxed),
            ),
            (
                "vdesk_ws_keyframe_requests_total",
                "counter",
                "Keyframes asked of agents because a WebSocket viewer fell behind.",
                c.keyframe_requests.load(Ordering::Relaxed),
            ),
            (
                "vdesk_ws_text_dropped_total",
                "counter",
                "Text messages dropped on the WebSocket path (a full queue).",
                c.text_dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vdesk_protocol::Permission;

    #[test]
    fn websocket_viewers_are_listed_for_the_admin_with_transport_websocket() {
        let media = WsMedia::default();
        let vm = VmId::new("demo").unwrap();
        let (_id, _rx) = media.attach_link(&vm);
        let grant = SessionGrant {
            permission: Permission::View,
            name: Some("Cleo".into()),
            owner: Some("secret-owner-tag".into()),
            ..SessionGrant::default()
        };
        let open = media.open_viewer(&vm, grant, 4).unwrap();
        let views = media.session_views();
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!(v.session_id, open.id);
        assert_eq!(v.vm_id, vm);
        assert_eq!(v.permission, Permission::View);
        assert_eq!(v.name.as_deref(), Some("Cleo"));
        assert_eq!(v.transport.as_deref(), Some("websocket"));
        assert!(v.agent_attached && v.connected);
        let text = serde_json::to_string(&views).unwrap();
        assert!(!text.contains("secret-owner-tag"), "{text}");
        media.close_viewer(&open.id);
        assert!(media.session_views().is_empty());
    }
}
