//! Remote control for one session: the viewer's `input` and `pointer` data channels in, X out.
//! A control session gets its own X connection with two threads: a worker that injects input
//! (XTEST), takes the CLIPBOARD and resizes the screen, and an event thread that sends the
//! viewer the cursor image, the CLIPBOARD and the screen size when they change. A view-only
//! session gets neither: its input is dropped (logged and told to the viewer once); its X
//! connection is `cursor::CursorWatch`, which only reads the cursor image, the pointer position
//! and the screen size (so it can share the stream that leaves the cursor out).
//! Dropping `SessionInput` releases every key and button the viewer held and stops both threads.
//! Every session is a seat in the agent's `control::Room` once its `input` channel opens: only
//! the viewer that holds control has its input put into X; control messages go to the room.

mod atoms;
mod clipboard;
pub mod cursor;
mod inject;
pub mod keys;
pub mod plan;
pub mod resize;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gstreamer_webrtc as gst_webrtc;
use tracing::{debug, info, warn};
use vdesk_protocol::{
    clipboard_chunks, AgentToViewer, ClipboardAssembler, ClipboardPolicy, Permission, SessionGrant,
    SessionId, ViewerToAgent, INPUT_CHANNEL, POINTER_CHANNEL,
};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{
    ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, Window, WindowClass,
};
use x11rb::protocol::{randr, xfixes, Event};
use x11rb::rust_connection::RustConnection;

use crate::control::{Command, Outcome, Room, Seat, ViewerId};
use atoms::Atoms;
use clipboard::Clipboard;
use inject::Injector;

/// Stops (`false`) and restarts (`true`) the session's screen capture around a screen size
/// change, so that the capture reopens at the new size inside the same pipeline.
pub type CaptureHook = Arc<dyn Fn(bool) + Send + Sync>;

/// What remote control may do on this agent.
#[derive(Debug, Clone)]
pub struct InputSettings {
    pub display: String,
    /// Let viewers set the screen size (RandR).
    pub allow_resize: bool,
}

/// Where a WebSocket viewer's messages go (the agent's media link, `wsmedia.rs`): one
/// `AgentToViewer` JSON text per call.
#[derive(Clone)]
pub struct TextSink(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for TextSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextSink")
    }
}

/// Messages to the viewer, and what to replay when its `input` channel (re)appears.
#[derive(Debug, Default)]
struct ViewerOut {
    channel: Option<gst_webrtc::WebRTCDataChannel>,
    /// A WebSocket viewer's way out instead of a data channel.
    text: Option<TextSink>,
    cursor: Option<String>,
    cursor_at: Option<String>,
    screen: Option<String>,
}

/// The one way out to the viewer: the VM's clipboard goes no further than here unless the
/// session's grant allows VM -> browser.
#[derive(Debug, Default)]
struct Out {
    state: Mutex<ViewerOut>,
    clipboard_from_vm: bool,
}

impl Out {
    fn new(clipboard: ClipboardPolicy) -> Out {
        Out {
            state: Mutex::default(),
            clipboard_from_vm: clipboard.allows_from_vm(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ViewerOut> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the grant lets `msg` reach the viewer.
    fn allowed(&self, msg: &AgentToViewer) -> bool {
        !matches!(msg, AgentToViewer::Clipboard { .. }) || self.clipboard_from_vm
    }

    /// Sends `msg` if the grant allows it (returns whether it did).
    fn send(&self, msg: &AgentToViewer) -> bool {
        if !self.allowed(msg) {
            return false;
        }
        let Ok(text) = serde_json::to_string(msg) else {
            return false;
        };
        let mut out = self.lock();
        match msg {
            AgentToViewer::Cursor { .. } => out.cursor = Some(text.clone()),
            AgentToViewer::CursorAt { .. } => out.cursor_at = Some(text.clone()),
            AgentToViewer::ScreenSize { .. } => out.screen = Some(text.clone()),
            _ => {}
        }
        if let Some(ch) = &out.channel {
            if let Err(e) = ch.send_string_full(Some(&text)) {
                debug!("could not send to the viewer: {e}");
            }
        }
        if let Some(sink) = &out.text {
            (sink.0)(&text);
        }
        true
    }

    fn attach_text(&self, sink: TextSink) {
        let mut out = self.lock();
        for text in [&out.screen, &out.cursor, &out.cursor_at]
            .into_iter()
            .flatten()
        {
            (sink.0)(text);
        }
        out.text = Some(sink);
    }

    fn attach(&self, ch: gst_webrtc::WebRTCDataChannel) {
        let mut out = self.lock();
        for text in [&out.screen, &out.cursor, &out.cursor_at]
            .into_iter()
            .flatten()
        {
            let _ = ch.send_string_full(Some(text));
        }
        out.channel = Some(ch);
    }
}

enum Cmd {
    Viewer(ViewerToAgent),
    ChannelClosed,
}

/// The X side of a control session.
#[derive(Debug)]
struct XSide {
    conn: Arc<RustConnection>,
    win: Window,
    atoms: Atoms,
    tx: mpsc::Sender<Cmd>,
    threads: Vec<JoinHandle<()>>,
}

/// One session's remote control.
#[derive(Debug)]
pub struct SessionInput {
    id: SessionId,
    permission: Permission,
    clipboard: ClipboardPolicy,
    out: Arc<Out>,
    x: Option<XSide>,
    /// A view-only session's cursor (image, position, screen size); for control, the pointer
    /// position while it does not hold control (`cursor::sends_pointer_position`).
    _cursor: Option<cursor::CursorWatch>,
    told_refused: AtomicBool,
    told_clipboard: AtomicBool,
    told_bad: AtomicBool,
    /// Told "not in control" since it last lost control.
    told_not_holder: Arc<AtomicBool>,
    /// Whether the pointer position is sent now (see `InputSeat`).
    pointer_position: Arc<AtomicBool>,
    clipboard_in: Mutex<ClipboardAssembler>,
    room: Room,
    name: Option<String>,
    owner: Option<String>,
    /// Its seat in the room, once the `input` channel has opened.
    seat: Mutex<Option<ViewerId>>,
}

/// How the room reaches this session.
struct InputSeat {
    out: Arc<Out>,
    x: Option<mpsc::Sender<Cmd>>,
    told_not_holder: Arc<AtomicBool>,
    permission: Permission,
    /// Whether the session is sent the pointer position now (its `CursorWatch` reads it).
    pointer_position: Arc<AtomicBool>,
}

impl Seat for InputSeat {
    fn send(&self, msg: &AgentToViewer) {
        if let AgentToViewer::Control { holder, you, .. } = msg {
            let holds = holder.as_ref() == Some(you);
            if holds {
                self.told_not_holder.store(false, Ordering::Relaxed);
            }
            self.pointer_position.store(
                cursor::sends_pointer_position(self.permission, holds),
                Ordering::Relaxed,
            );
        }
        self.out.send(msg);
    }

    fn release_all(&self) {
        if let Some(tx) = &self.x {
            let _ = tx.send(Cmd::Viewer(ViewerToAgent::ReleaseAll));
        }
    }
}

impl SessionInput {
    /// Starts remote control for a session. A view-only session opens nothing. If X cannot be
    /// reached (or lacks XTEST), the session still streams and its input is dropped with a warning.
    /// The grant's `clipboard` is the link's direction: browser -> VM text is dropped unless it
    /// allows `to-vm`, the VM's CLIPBOARD is neither read nor sent unless it allows `from-vm`.
    /// Its `name` and `owner` seat the viewer in `room` (who holds control).
    pub fn start(
        id: SessionId,
        grant: &SessionGrant,
        settings: &InputSettings,
        capture: Option<CaptureHook>,
        room: &Room,
    ) -> Arc<SessionInput> {
        let (permission, clipboard) = (grant.permission, grant.clipboard);
        let out = Arc::new(Out::new(clipboard));
        // Off until the room says who holds control (the seat is told when it joins).
        let pointer_position = Arc::new(AtomicBool::new(false));
        let cursor = match permission {
            Permission::View => {
                match cursor::CursorWatch::start(&id, &settings.display, out.clone()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        warn!(session = %id, "view-only viewer gets no cursor: {e}");
                        None
                    }
                }
            }
            Permission::Control | Permission::Admin => {
                // While it does not hold control, it sees where the holder's pointer is.
                match cursor::CursorWatch::positions(
                    &id,
                    &settings.display,
                    out.clone(),
                    pointer_position.clone(),
                ) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        warn!(session = %id, "no pointer position while not in control: {e}");
                        None
                    }
                }
            }
        };
        let x = match permission {
            Permission::View => None,
            Permission::Control | Permission::Admin => {
                match XSide::start(&id, settings, out.clone(), capture) {
                    Ok(x) => Some(x),
                    Err(e) => {
                        warn!(session = %id, "remote control unavailable: {e}");
                        None
                    }
                }
            }
        };
        Arc::new(SessionInput {
            id,
            permission,
            clipboard,
            out,
            x,
            _cursor: cursor,
            told_refused: AtomicBool::new(false),
            told_clipboard: AtomicBool::new(false),
            told_bad: AtomicBool::new(false),
            told_not_holder: Arc::default(),
            pointer_position,
            clipboard_in: Mutex::new(ClipboardAssembler::default()),
            room: room.clone(),
            name: grant.name.clone(),
            owner: grant.owner.clone(),
            seat: Mutex::new(None),
        })
    }

    /// Takes a seat in the room (once): everyone, this viewer included, is told who is here.
    /// `attach` does it when the viewer's first data channel opens; public for tests that feed
    /// `on_message` without a channel.
    pub fn take_seat(&self) {
        let mut seat = self.seat.lock().unwrap_or_else(|p| p.into_inner());
        if seat.is_some() {
            return;
        }
        let s = InputSeat {
            out: self.out.clone(),
            x: self.x.as_ref().map(|x| x.tx.clone()),
            told_not_holder: self.told_not_holder.clone(),
            permission: self.permission,
            pointer_position: self.pointer_position.clone(),
        };
        *seat = Some(self.room.join(
            self.name.as_deref(),
            self.permission,
            self.owner.as_deref(),
            Arc::new(s),
        ));
    }

    /// Whether this viewer holds control now (false before it took its seat).
    pub fn holds_control(&self) -> bool {
        self.seat().is_some_and(|id| self.room.is_holder(id))
    }

    fn seat(&self) -> Option<ViewerId> {
        *self.seat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wires a data channel the viewer opened.
    pub fn attach(self: &Arc<Self>, ch: &gst_webrtc::WebRTCDataChannel) {
        let label = ch.label().map(|l| l.to_string()).unwrap_or_default();
        if label != INPUT_CHANNEL && label != POINTER_CHANNEL {
            debug!(session = %self.id, label, "data channel ignored");
            return;
        }
        // The viewer is here: whichever of its channels opens first seats it.
        self.take_seat();
        let me = Arc::downgrade(self);
        ch.connect_on_message_string(move |_, text| {
            crate::guard::catch("input on-message-string", (), || {
                if let (Some(me), Some(text)) = (me.upgrade(), text) {
                    me.on_message(text);
                }
            })
        });
        let me = Arc::downgrade(self);
        ch.connect_on_message_data(move |_, _| {
            crate::guard::catch("input on-message-data", (), || {
                if let Some(me) = me.upgrade() {
                    me.bad("binary messages are not part of the protocol");
                }
            })
        });
        if label == INPUT_CHANNEL {
            let me = Arc::downgrade(self);
            ch.connect_on_close(move |_| {
                crate::guard::catch("input on-close", (), || {
                    if let Some(me) = me.upgrade() {
                        info!(session = %me.id, "input channel closed: releasing keys and buttons, leaving the room");
                        me.out.lock().channel = None;
                        // Gone as far as control goes (a page that went away); a new channel seats it again.
                        let seat = me.seat.lock().unwrap_or_else(|p| p.into_inner()).take();
                        if let Some(seat) = seat {
                            me.room.leave(seat);
                        }
                        if let Some(x) = &me.x {
                            let _ = x.tx.send(Cmd::ChannelClosed);
                        }
                    }
                })
            });
            self.out.attach(ch.clone());
            if let Some(seat) = self.seat() {
                // What the room said when it seated the viewer had no channel to go out on.
                self.out.send(&self.room.message(seat));
            }
            if self.permission.may_control() && self.x.is_none() {
                self.out.send(&AgentToViewer::Notice {
                    code: "input_unavailable".into(),
                    message: "this VM's agent cannot inject input (no X or no XTEST)".into(),
                });
            }
        }
    }

    /// Wires a WebSocket viewer (the agent's media link): like its `input` channel opening, with
    /// messages to the viewer going to `sink`. Its messages come in through `on_message`, under
    /// the same rules as a data channel's.
    pub fn attach_text(&self, sink: TextSink) {
        self.take_seat();
        self.out.attach_text(sink);
        if let Some(seat) = self.seat() {
            self.out.send(&self.room.message(seat));
        }
        if self.permission.may_control() && self.x.is_none() {
            self.out.send(&AgentToViewer::Notice {
                code: "input_unavailable".into(),
                message: "this VM's agent cannot inject input (no X or no XTEST)".into(),
            });
        }
    }

    fn bad(&self, why: &str) {
        if !self.told_bad.swap(true, Ordering::Relaxed) {
            warn!(session = %self.id, "dropping input: {why} (logged once)");
        }
    }

    /// One message from the viewer. Malformed or forbidden input is dropped, never fatal.
    pub fn on_message(&self, text: &str) {
        let msg = match ViewerToAgent::parse(text) {
            Ok(m) => m,
            Err(e) => return self.bad(&e.to_string()),
        };
        let command = match &msg {
            ViewerToAgent::RequestControl => Some(Command::Request),
            ViewerToAgent::ReleaseControl => Some(Command::Release),
            ViewerToAgent::GiveControl { to } => Some(Command::Give { to: to.clone() }),
            ViewerToAgent::TakeControl => Some(Command::Take),
            _ => None,
        };
        if let Some(command) = command {
            let Some(seat) = self.seat() else {
                return self.bad("control message before the input channel opened");
            };
            if let Outcome::Refused(why) = self.room.command(seat, &command) {
                self.out.send(&AgentToViewer::Notice {
                    code: "control_refused".into(),
                    message: why.into(),
                });
            }
            return;
        }
        match admit(self.permission, self.clipboard, &msg) {
            Ok(()) => {}
            Err(Refusal::ViewOnly) => {
                if !self.told_refused.swap(true, Ordering::Relaxed) {
                    warn!(session = %self.id, "input refused: this session is view-only (logged once)");
                    self.out.send(&AgentToViewer::Notice {
                        code: "view_only".into(),
                        message: "this session is view-only: input is ignored".into(),
                    });
                }
                return;
            }
            Err(Refusal::ClipboardToVm) => {
                if !self.told_clipboard.swap(true, Ordering::Relaxed) {
                    warn!(session = %self.id, "clipboard refused: this link does not allow browser -> VM (logged once)");
                    self.out.send(&AgentToViewer::Notice {
                        code: "clipboard_off".into(),
                        message: "this link does not allow copying into the VM".into(),
                    });
                }
                return;
            }
        }
        let Some(x) = &self.x else {
            return;
        };
        if !self.seat().is_some_and(|seat| self.room.is_holder(seat)) {
            // A viewer without control holds nothing: its release-all is no news.
            if msg != ViewerToAgent::ReleaseAll
                && !self.told_not_holder.swap(true, Ordering::Relaxed)
            {
                debug!(session = %self.id, "input refused: another viewer holds control");
                self.out.send(&AgentToViewer::Notice {
                    code: "not_in_control".into(),
                    message: "another viewer holds control: ask for it (requestControl)".into(),
                });
            }
            return;
        }
        let msg = match msg {
            ViewerToAgent::Clipboard { text, more } => {
                let whole = self
                    .clipboard_in
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(&text, more);
                match whole {
                    None => return,
                    Some(Err(e)) => return self.bad(&e.to_string()),
                    Some(Ok(text)) => ViewerToAgent::Clipboard { text, more: false },
                }
            }
            other => other,
        };
        let _ = x.tx.send(Cmd::Viewer(msg));
    }
}

/// Why a well-formed viewer message does not reach X.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The session is view-only: nothing reaches X (keys, pointer, wheel, clipboard, resize).
    ViewOnly,
    /// The link's clipboard direction does not include browser -> VM.
    ClipboardToVm,
}

/// The grant's rules for one message: view-only sessions send nothing to X, and the browser's
/// clipboard goes in only when the link allows `to-vm`.
fn admit(
    permission: Permission,
    clipboard: ClipboardPolicy,
    msg: &ViewerToAgent,
) -> Result<(), Refusal> {
    if !permission.may_control() {
        return Err(Refusal::ViewOnly);
    }
    if matches!(msg, ViewerToAgent::Clipboard { .. }) && !clipboard.allows_to_vm() {
        return Err(Refusal::ClipboardToVm);
    }
    Ok(())
}

impl Drop for SessionInput {
    fn drop(&mut self) {
        if let Some(seat) = self.seat() {
            self.room.leave(seat);
        }
        {
            let mut out = self.out.lock();
            out.channel = None;
            out.text = None;
        }
        if let Some(x) = self.x.take() {
            x.stop();
        }
    }
}

impl XSide {
    fn start(
        id: &SessionId,
        settings: &InputSettings,
        out: Arc<Out>,
        capture: Option<CaptureHook>,
    ) -> Result<XSide, String> {
        let (conn, screen) = x11rb::connect(Some(&settings.display))
            .map_err(|e| format!("cannot open X display {}: {e}", settings.display))?;
        let conn = Arc::new(conn);
        let root = conn.setup().roots[screen].root;
        for (ext, what) in [
            ("XTEST", "input injection"),
            ("XFIXES", "cursor and clipboard"),
        ] {
            let present = conn
                .extension_information(ext)
                .map_err(|e| e.to_string())?
                .is_some();
            if !present {
                return Err(format!("the X server has no {ext} extension ({what})"));
            }
        }
        xfixes::query_version(&*conn, 5, 0)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        let atoms = Atoms::intern(&*conn)?;
        // An unmapped window: owns the CLIPBOARD, receives selections and our own wake-up.
        let win = conn.generate_id().map_err(|e| e.to_string())?;
        conn.create_window(
            0,
            win,
            root,
            -10,
            -10,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )
        .map_err(|e| e.to_string())?;
        use xfixes::ConnectionExt as _;
        conn.xfixes_select_cursor_input(root, xfixes::CursorNotifyMask::DISPLAY_CURSOR)
            .map_err(|e| e.to_string())?;
        conn.xfixes_select_selection_input(
            win,
            atoms.clipboard,
            xfixes::SelectionEventMask::SET_SELECTION_OWNER,
        )
        .map_err(|e| e.to_string())?;
        let randr = conn
            .extension_information(randr::X11_EXTENSION_NAME)
            .map_err(|e| e.to_string())?
            .is_some();
        if randr {
            use randr::ConnectionExt as _;
            let _ = conn.randr_query_version(1, 3).map(|c| c.reply());
            conn.randr_select_input(root, randr::NotifyMask::SCREEN_CHANGE)
                .map_err(|e| e.to_string())?;
        }
        conn.flush().map_err(|e| e.to_string())?;

        // What the viewer sees first: the screen size and the cursor.
        let mut initial_size = 0;
        if let Ok(g) = conn
            .get_geometry(root)
            .map_err(|e| e.to_string())
            .and_then(|c| c.reply().map_err(|e| e.to_string()))
        {
            out.send(&AgentToViewer::ScreenSize {
                width: u32::from(g.width),
                height: u32::from(g.height),
            });
            initial_size = pack(u32::from(g.width), u32::from(g.height));
        }
        match cursor::current(&*conn) {
            Ok(Some(c)) => {
                out.send(&c);
            }
            Ok(None) => {}
            Err(e) => debug!("no cursor image yet: {e}"),
        }

        let clipboard = Arc::new(Clipboard::default());
        let (tx, rx) = mpsc::channel::<Cmd>();
        let last_size = Arc::new(AtomicU64::new(initial_size));
        let short = id.as_str()[..8].to_owned();
        let worker = {
            let conn = conn.clone();
            let clipboard = clipboard.clone();
            let allow_resize = settings.allow_resize && randr;
            let capture_w = capture.clone();
            let last_size_w = last_size.clone();
            let out = out.clone();
            let id = id.clone();
            std::thread::Builder::new()
                .name(format!("input-{short}"))
                .spawn(move || {
                    let mut injector = Injector::new(conn.clone(), root);
                    while let Ok(cmd) = rx.recv() {
                        let r = match cmd {
                            Cmd::ChannelClosed => injector.release_all(),
                            Cmd::Viewer(ViewerToAgent::Clipboard { text, .. }) => {
                                debug!(session = %id, bytes = text.len(), "viewer clipboard -> X CLIPBOARD");
                                clipboard.offer(&*conn, &atoms, win, text);
                                Ok(())
                            }
                            Cmd::Viewer(ViewerToAgent::Resize { width, height }) => {
                                if allow_resize {
                                    if let Some(c) = &capture_w {
                                        c(false);
                                    }
                                    let r = resize::set_screen_size(&*conn, root, width, height);
                                    if r.is_ok() {
                                        last_size_w.store(pack(width, height), Ordering::SeqCst);
                                    }
                                    if let Some(c) = &capture_w {
                                        c(true);
                                    }
                                    if let Err(e) = r {
                                        warn!(session = %id, "resize to {width}x{height} refused: {e}");
                                        out.send(&AgentToViewer::Notice { code: "resize_failed".into(), message: e });
                                    }
                                } else {
                                    out.send(&AgentToViewer::Notice {
                                        code: "resize_disabled".into(),
                                        message: "this agent does not allow resizing (--allow-resize)".into(),
                                    });
                                }
                                Ok(())
                            }
                            Cmd::Viewer(msg) => injector.handle(&msg),
                        };
                        if let Err(e) = r {
                            warn!(session = %id, "input stopped: {e}");
                            break;
                        }
                    }
                    let held = injector.held();
                    if held > 0 {
                        info!(session = %id, held, "session over: releasing what the viewer held");
                    }
                    drop(injector);
                })
                .map_err(|e| e.to_string())?
        };
        let events = {
            let conn = conn.clone();
            let id = id.clone();
            std::thread::Builder::new()
                .name(format!("xevents-{short}"))
                .spawn(move || {
                    let size = SizeWatch {
                        last: last_size,
                        capture,
                    };
                    event_loop(&conn, &atoms, win, &clipboard, &out, &size, &id)
                })
                .map_err(|e| e.to_string())?
        };
        info!(session = %id, display = %settings.display, "remote control ready");
        Ok(XSide {
            conn,
            win,
            atoms,
            tx,
            threads: vec![worker, events],
        })
    }

    fn stop(self) {
        let XSide {
            conn,
            win,
            atoms,
            tx,
            threads,
        } = self;
        drop(tx);
        let wake = ClientMessageEvent::new(32, win, atoms.vdesk_wake, [0u32; 5]);
        let _ = conn.send_event(false, win, EventMask::NO_EVENT, wake);
        let _ = conn.flush();
        for t in threads {
            let _ = t.join();
        }
        debug!("remote control stopped: input released, X connection closed");
    }
}

fn pack(w: u32, h: u32) -> u64 {
    (u64::from(w) << 32) | u64::from(h)
}

/// The screen size the capture runs at, and how to restart it when the size changes.
struct SizeWatch {
    last: Arc<AtomicU64>,
    capture: Option<CaptureHook>,
}

impl SizeWatch {
    /// The screen is `w`×`h` now: restart the capture if that is news (someone else resized).
    fn changed(&self, w: u32, h: u32) {
        let old = self.last.swap(pack(w, h), Ordering::SeqCst);
        if old != 0 && old != pack(w, h) {
            if let Some(c) = &self.capture {
                info!("screen is now {w}x{h}: restarting the capture");
                c(false);
                c(true);
            }
        }
    }
}

fn event_loop(
    conn: &RustConnection,
    atoms: &Atoms,
    win: Window,
    clipboard: &Clipboard,
    out: &Out,
    size: &SizeWatch,
    id: &SessionId,
) {
    let mut clip_out_serial = 0u64;
    loop {
        let ev = match conn.wait_for_event() {
            Ok(ev) => ev,
            Err(e) => {
                debug!(session = %id, "X event loop ends: {e}");
                return;
            }
        };
        match ev {
            Event::ClientMessage(m) if m.window == win && m.type_ == atoms.vdesk_wake => return,
            Event::XfixesCursorNotify(_) => match cursor::current(conn) {
                Ok(Some(c)) => {
                    out.send(&c);
                }
                Ok(None) => debug!("cursor image too large; not sent"),
                Err(e) => debug!("cursor image: {e}"),
            },
            Event::XfixesSelectionNotify(e) => {
                if e.owner != win {
                    clipboard.lost();
                }
                // The VM's clipboard is not even read when the link does not allow sending it.
                if out.clipboard_from_vm {
                    Clipboard::owner_changed(conn, atoms, win, &e);
                }
            }
            Event::SelectionNotify(e) => match Clipboard::read_reply(conn, atoms, win, &e) {
                Ok(Some(text)) => {
                    clip_out_serial += 1;
                    debug!(session = %id, bytes = text.len(), n = clip_out_serial, "X CLIPBOARD -> viewer");
                    for (piece, more) in clipboard_chunks(&text) {
                        out.send(&AgentToViewer::Clipboard {
                            text: piece.to_owned(),
                            more,
                        });
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(session = %id, "{e}");
                    out.send(&AgentToViewer::Notice {
                        code: "clipboard_too_large".into(),
                        message: e,
                    });
                }
            },
            Event::SelectionRequest(r) => clipboard.answer(conn, atoms, &r),
            Event::SelectionClear(_) => clipboard.lost(),
            Event::RandrScreenChangeNotify(e) => {
                let (w, h) = (u32::from(e.width), u32::from(e.height));
                size.changed(w, h);
                out.send(&AgentToViewer::ScreenSize {
                    width: w,
                    height: h,
                });
            }
            Event::Error(e) => debug!(session = %id, "X error: {e:?}"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(text: &str) -> ViewerToAgent {
        ViewerToAgent::Clipboard {
            text: text.into(),
            more: false,
        }
    }

    #[test]
    fn a_control_viewer_gets_the_pointer_position_only_while_it_does_not_hold_control() {
        let seat = InputSeat {
            out: Arc::new(Out::new(ClipboardPolicy::Both)),
            x: None,
            told_not_holder: Arc::default(),
            permission: Permission::Control,
            pointer_position: Arc::default(),
        };
        let control = |holder: Option<&str>| AgentToViewer::Control {
            holder: holder.map(str::to_owned),
            you: "me".into(),
            viewers: Vec::new(),
        };
        let sent = || seat.pointer_position.load(Ordering::Relaxed);
        seat.send(&control(Some("other")));
        assert!(sent(), "someone else holds control: where their pointer is");
        seat.send(&control(Some("me")));
        assert!(!sent(), "the holder sees its own pointer");
        seat.send(&control(None));
        assert!(sent(), "nobody holds control");
        seat.send(&AgentToViewer::CursorAt { x: 1, y: 2 });
        assert!(sent(), "only control messages change it");
    }

    #[test]
    fn the_grant_decides_what_reaches_x() {
        use ClipboardPolicy::*;
        let key = ViewerToAgent::Key {
            key: "a".into(),
            code: "KeyA".into(),
            down: true,
        };
        // View-only: nothing at all, whatever the clipboard direction says.
        for policy in [Both, ToVm, FromVm, Off] {
            assert_eq!(
                admit(Permission::View, policy, &key),
                Err(Refusal::ViewOnly)
            );
            assert_eq!(
                admit(Permission::View, policy, &clip("x")),
                Err(Refusal::ViewOnly)
            );
        }
        // Control: input yes; the browser's clipboard only towards a to-vm link.
        for perm in [Permission::Control, Permission::Admin] {
            assert_eq!(admit(perm, Off, &key), Ok(()));
            assert_eq!(admit(perm, Both, &clip("x")), Ok(()));
            assert_eq!(admit(perm, ToVm, &clip("x")), Ok(()));
            assert_eq!(admit(perm, FromVm, &clip("x")), Err(Refusal::ClipboardToVm));
            assert_eq!(admit(perm, Off, &clip("x")), Err(Refusal::ClipboardToVm));
        }
    }

    #[test]
    fn the_vm_clipboard_goes_out_only_when_the_grant_allows_it() {
        let vm_clip = AgentToViewer::Clipboard {
            text: "secret".into(),
            more: false,
        };
        let size = AgentToViewer::ScreenSize {
            width: 8,
            height: 8,
        };
        for (policy, sent) in [
            (ClipboardPolicy::Both, true),
            (ClipboardPolicy::FromVm, true),
            (ClipboardPolicy::ToVm, false),
            (ClipboardPolicy::Off, false),
        ] {
            let out = Out::new(policy);
            assert_eq!(out.send(&vm_clip), sent, "{policy:?}");
            assert!(out.send(&size), "{policy:?}: other messages still go");
        }
    }

    #[test]
    fn a_view_only_session_takes_any_message_without_panicking() {
        let settings = InputSettings {
            display: ":nonexistent".into(),
            allow_resize: false,
        };
        let room = crate::control::Room::default();
        let input = SessionInput::start(
            SessionId::random(),
            &SessionGrant::default(),
            &settings,
            None,
            &room,
        );
        assert!(
            input.x.is_none(),
            "a view-only session opens no X connection"
        );
        // The review's message used to overflow inside this data-channel handler.
        input.on_message(r#"{"type":"wheel","dx":0,"dy":-2147483648,"x":1,"y":1,"w":2,"h":2}"#);
        input.on_message(r#"{"type":"clipboard","text":"into the VM?"}"#);
        input.on_message("{");
        assert!(input.told_bad.load(Ordering::Relaxed));
        assert!(input.told_refused.load(Ordering::Relaxed));
    }
}
