//! The VM's cursor image for the viewer: XFixes hands out premultiplied ARGB pixels; the viewer
//! wants straight-alpha RGBA (what a canvas `ImageData` holds), base64 in a `cursor` message.
//! `CursorWatch` is a view-only session's whole X side: the cursor image, where the pointer is,
//! and the screen size, read on its own X connection that sends X nothing but queries. A session
//! that may control but does not hold control gets where the pointer is from one too
//! (`CursorWatch::positions`; its own X side sends the image and the size), while it does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use tracing::{debug, info};
use vdesk_protocol::{AgentToViewer, SessionId, MAX_CURSOR_EDGE};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xfixes::ConnectionExt as _;
use x11rb::protocol::xproto::ConnectionExt as _;
use x11rb::protocol::{randr, xfixes, Event};

use super::Out;

/// Whether a session is sent where the VM's pointer is (`cursorAt`): a view-only viewer always,
/// a viewer who may control while someone else (or nobody) holds control, so that it sees the
/// holder's pointer; not the holder, whose own pointer is the one on its screen.
pub fn sends_pointer_position(permission: vdesk_protocol::Permission, holds_control: bool) -> bool {
    !permission.may_control() || !holds_control
}

/// How often a view-only session reads where the pointer is (XFixes tells image changes, not
/// motion): 30 times a second, a message only when it moved.
const POINTER_POLL: Duration = Duration::from_millis(33);

/// A view-only session's X side: a thread that sends the viewer the cursor image when it
/// changes, the pointer position when it moves (`cursorAt`) and the screen size. It injects
/// nothing (no XTEST), owns no selection and reads no clipboard. Dropping it stops the thread.
#[derive(Debug)]
pub(super) struct CursorWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CursorWatch {
    /// A view-only session's: the cursor image, the screen size and the pointer position.
    pub(super) fn start(id: &SessionId, x_display: &str, out: Arc<Out>) -> Result<Self, String> {
        Self::open(id, x_display, out, None)
    }

    /// Only the pointer position, and only while `send` holds (a control session that does not
    /// hold control). When `send` turns on, the position is sent at once.
    pub(super) fn positions(
        id: &SessionId,
        x_display: &str,
        out: Arc<Out>,
        send: Arc<AtomicBool>,
    ) -> Result<Self, String> {
        Self::open(id, x_display, out, Some(send))
    }

    fn open(
        id: &SessionId,
        x_display: &str,
        out: Arc<Out>,
        positions_only: Option<Arc<AtomicBool>>,
    ) -> Result<Self, String> {
        let (conn, screen) = x11rb::connect(Some(x_display))
            .map_err(|e| format!("cannot open X display {x_display}: {e}"))?;
        let root = conn.setup().roots[screen].root;
        if conn
            .extension_information(xfixes::X11_EXTENSION_NAME)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err("the X server has no XFIXES extension (cursor)".into());
        }
        xfixes::query_version(&conn, 5, 0)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        let full = positions_only.is_none();
        if full {
            conn.xfixes_select_cursor_input(root, xfixes::CursorNotifyMask::DISPLAY_CURSOR)
                .map_err(|e| e.to_string())?;
        }
        if full
            && conn
                .extension_information(randr::X11_EXTENSION_NAME)
                .map_err(|e| e.to_string())?
                .is_some()
        {
            use randr::ConnectionExt as _;
            let _ = conn.randr_query_version(1, 3).map(|c| c.reply());
            conn.randr_select_input(root, randr::NotifyMask::SCREEN_CHANGE)
                .map_err(|e| e.to_string())?;
        }
        conn.flush().map_err(|e| e.to_string())?;
        if full {
            if let Ok(Ok(g)) = conn.get_geometry(root).map(|c| c.reply()) {
                out.send(&AgentToViewer::ScreenSize {
                    width: u32::from(g.width),
                    height: u32::from(g.height),
                });
            }
            match current(&conn) {
                Ok(Some(c)) => {
                    out.send(&c);
                }
                Ok(None) => {}
                Err(e) => debug!("no cursor image yet: {e}"),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let id = id.clone();
            std::thread::Builder::new()
                .name(format!("cursor-{}", &id.as_str()[..8]))
                .spawn(move || {
                    let mut at = None;
                    while !stop.load(Ordering::Relaxed) {
                        loop {
                            match conn.poll_for_event() {
                                Ok(None) => break,
                                Ok(Some(Event::XfixesCursorNotify(_))) => match current(&conn) {
                                    Ok(Some(c)) => {
                                        out.send(&c);
                                    }
                                    Ok(None) => debug!("cursor image too large; not sent"),
                                    Err(e) => debug!("cursor image: {e}"),
                                },
                                Ok(Some(Event::RandrScreenChangeNotify(e))) => {
                                    out.send(&AgentToViewer::ScreenSize {
                                        width: u32::from(e.width),
                                        height: u32::from(e.height),
                                    });
                                }
                                Ok(Some(_)) => {}
                                Err(e) => {
                                    debug!(session = %id, "cursor watch ends: {e}");
                                    return;
                                }
                            }
                        }
                        if let Some(send) = &positions_only {
                            if !send.load(Ordering::Relaxed) {
                                // In control: its own pointer is the one it sees. Sent again
                                // (moved or not) once it is not.
                                at = None;
                                std::thread::sleep(POINTER_POLL);
                                continue;
                            }
                        }
                        let reply = conn
                            .query_pointer(root)
                            .map_err(x11rb::errors::ReplyError::from)
                            .and_then(|c| c.reply());
                        match reply {
                            Ok(p) if p.same_screen => {
                                let now = (
                                    u32::try_from(p.root_x).unwrap_or(0),
                                    u32::try_from(p.root_y).unwrap_or(0),
                                );
                                if at != Some(now) {
                                    at = Some(now);
                                    out.send(&AgentToViewer::CursorAt { x: now.0, y: now.1 });
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                debug!(session = %id, "cursor watch ends: {e}");
                                return;
                            }
                        }
                        std::thread::sleep(POINTER_POLL);
                    }
                })
                .map_err(|e| e.to_string())?
        };
        if full {
            info!(session = %id, display = %x_display, "view-only: cursor watch ready (no input)");
        } else {
            debug!(session = %id, display = %x_display, "pointer position watch ready (while not in control)");
        }
        Ok(CursorWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for CursorWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Premultiplied `0xAARRGGBB` pixels to straight-alpha RGBA bytes.
pub fn argb_to_rgba(pixels: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pixels.len().saturating_mul(4));
    for &p in pixels {
        let a = (p >> 24) & 0xff;
        let un = |c: u32| -> u8 {
            (c * 255 + a / 2)
                .checked_div(a)
                .map_or(0, |v| v.min(255) as u8)
        };
        out.extend_from_slice(&[
            un((p >> 16) & 0xff),
            un((p >> 8) & 0xff),
            un(p & 0xff),
            a as u8,
        ]);
    }
    out
}

/// The `cursor` message for an image, or `None` when it is larger than the viewer takes.
pub fn cursor_message(
    width: u16,
    height: u16,
    xhot: u16,
    yhot: u16,
    pixels: &[u32],
) -> Option<AgentToViewer> {
    let (w, h) = (u32::from(width), u32::from(height));
    if w > MAX_CURSOR_EDGE
        || h > MAX_CURSOR_EDGE
        || Some(pixels.len()) != usize::try_from(w * h).ok()
    {
        return None;
    }
    Some(AgentToViewer::Cursor {
        width: w,
        height: h,
        xhot: u32::from(xhot).min(w.saturating_sub(1)),
        yhot: u32::from(yhot).min(h.saturating_sub(1)),
        rgba: base64::engine::general_purpose::STANDARD.encode(argb_to_rgba(pixels)),
    })
}

/// Reads the current cursor image from X.
pub fn current(conn: &impl Connection) -> Result<Option<AgentToViewer>, String> {
    let img = conn
        .xfixes_get_cursor_image()
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| e.to_string())?;
    Ok(cursor_message(
        img.width,
        img.height,
        img.xhot,
        img.yhot,
        &img.cursor_image,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn who_is_sent_the_pointer_position() {
        use vdesk_protocol::Permission::*;
        for holds in [false, true] {
            assert!(sends_pointer_position(View, holds), "view-only: always");
        }
        for p in [Control, Admin] {
            assert!(sends_pointer_position(p, false), "{p:?}, not holding: yes");
            assert!(!sends_pointer_position(p, true), "{p:?}, holding: no");
        }
    }

    #[test]
    fn unpremultiplies_and_reorders() {
        // Opaque red, half-transparent white (premultiplied 0x80), fully transparent.
        let px = [0xffff0000, 0x80808080, 0x00000000];
        assert_eq!(
            argb_to_rgba(&px),
            vec![255, 0, 0, 255, 255, 255, 255, 128, 0, 0, 0, 0]
        );
    }

    #[test]
    fn builds_a_message_and_refuses_odd_sizes() {
        let m = cursor_message(2, 1, 5, 0, &[0xff000000, 0xffffffff]).unwrap();
        let AgentToViewer::Cursor {
            width,
            height,
            xhot,
            rgba,
            ..
        } = m
        else {
            panic!()
        };
        assert_eq!((width, height, xhot), (2, 1, 1));
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(rgba)
                .unwrap(),
            vec![0, 0, 0, 255, 255, 255, 255, 255]
        );
        assert!(cursor_message(2, 2, 0, 0, &[0; 3]).is_none());
        assert!(cursor_message(300, 1, 0, 0, &[0; 300]).is_none());
    }
}
