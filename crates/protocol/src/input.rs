//! Remote-control messages on the WebRTC data channels between the viewer and the agent (never
//! through the controller): keys, pointer, wheel, clipboard and resize from the viewer; cursor
//! image, clipboard, screen size and notices from the agent. Types and limits only, no I/O.
//!
//! **Compact JSON, not binary.** The busiest message is pointer motion: at most a few hundred a
//! second of ~50 bytes, nothing next to the video stream, so a binary format would save no
//! measurable bandwidth or latency. JSON keeps one convention for every vdesk message
//! (`{"type": ...}`, camelCase, like the signalling), lets the viewer's JavaScript be checked
//! against the Rust types with the same fixture file (`web/test/fixtures/messages.json`), and can
//! be read in a browser's WebRTC internals page while debugging. The one large message, the
//! cursor image, is a base64 field, sent only when the cursor changes.
//!
//! Channels, both opened by the viewer: `input` (ordered, reliable) carries everything except
//! pointer motion, in both directions; `pointer` (unordered, `maxRetransmits: 0`) carries only
//! `pointerMove`, where a late position is worth less than the next one. Buttons and wheel carry
//! their own position, so a lost motion never puts a click in the wrong place.

use serde::{Deserialize, Serialize};

/// Label of the ordered, reliable channel.
pub const INPUT_CHANNEL: &str = "input";
/// Label of the unordered, no-retransmit channel for pointer motion.
pub const POINTER_CHANNEL: &str = "pointer";
/// Largest clipboard text carried either way, in bytes of UTF-8.
pub const MAX_CLIPBOARD_BYTES: usize = 1024 * 1024;
/// Clipboard text travels in pieces of at most this many bytes of UTF-8 (`more: true` on all but
/// the last), so that no message comes near the SCTP message size both peers accept (64 KiB),
/// even with JSON escaping.
pub const CLIPBOARD_CHUNK_BYTES: usize = 8 * 1024;
/// Largest data-channel message the agent reads.
pub const MAX_INPUT_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest `key` / `code` string accepted (DOM names are short; a pasted string is not a key).
pub const MAX_KEY_NAME_LEN: usize = 32;
/// Most wheel notches one `wheel` message may ask for, per axis.
pub const MAX_WHEEL_STEPS: i32 = 50;
/// Largest screen edge a `resize` may ask for.
pub const MAX_SCREEN_EDGE: u32 = 8192;
/// Largest cursor image edge the agent sends.
pub const MAX_CURSOR_EDGE: u32 = 256;

/// A position in the frame the viewer shows: `x` in `0..w`, `y` in `0..h`, where `w`×`h` is the
/// video's size as the viewer decodes it. The agent scales it to the screen's current size, so
/// a click stays right while a resized stream is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FramePoint {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
}

/// What a viewer sends the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ViewerToAgent {
    /// The pointer moved (on the `pointer` channel).
    PointerMove {
        #[serde(flatten)]
        at: FramePoint,
    },
    /// A button went down or up at `at`. X numbering: 1 left, 2 middle, 3 right, 8 back,
    /// 9 forward (4-7 are the wheel; use `wheel`).
    PointerButton {
        button: u8,
        down: bool,
        #[serde(flatten)]
        at: FramePoint,
    },
    /// Wheel notches at `at`: `dy > 0` scrolls down (X button 5), `dy < 0` up (4), `dx < 0`
    /// left (6), `dx > 0` right (7).
    Wheel {
        dx: i32,
        dy: i32,
        #[serde(flatten)]
        at: FramePoint,
    },
    /// A key went down or up: `KeyboardEvent.key` and `KeyboardEvent.code`.
    Key {
        key: String,
        #[serde(default)]
        code: String,
        down: bool,
    },
    /// Release every key and button this viewer holds (the page lost focus).
    ReleaseAll,
    /// The browser's clipboard text, to become the VM's CLIPBOARD selection; in pieces of at
    /// most `CLIPBOARD_CHUNK_BYTES`, `more` on all but the last.
    Clipboard {
        text: String,
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// Set the VM's screen to `width`×`height` (when the agent allows resizing).
    Resize { width: u32, height: u32 },
    /// Ask for control (one viewer holds it at a time; a `control` or `admin` link may ask).
    /// Granted at once when nobody holds it; otherwise the holder sees the request.
    RequestControl,
    /// Give up control (it passes to the first viewer that asked for it, if any).
    ReleaseControl,
    /// Hand control to viewer `to` (an id from the `control` message); the holder only.
    GiveControl { to: String },
    /// Take control from whoever holds it; an `admin` link only.
    TakeControl,
}

/// Longest viewer id in a `giveControl`.
pub const MAX_VIEWER_ID_LEN: usize = 32;

/// One viewer of the VM, as every viewer sees it in `control`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlViewer {
    /// The agent's id for this viewer (not the session id).
    pub id: String,
    /// From the viewer's link (`mint-link --name`), or `viewer <id>`.
    pub name: String,
    pub permission: crate::Permission,
    /// Asked for control and waits for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub requested: bool,
}

/// What the agent sends a viewer (on the `input` channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum AgentToViewer {
    /// The VM's cursor changed: `width`×`height` straight-alpha RGBA pixels, base64, with its
    /// hotspot. An empty image (0×0) means the cursor is hidden.
    Cursor {
        width: u32,
        height: u32,
        xhot: u32,
        yhot: u32,
        rgba: String,
    },
    /// Where the VM's pointer is (screen pixels), sent to a view-only viewer when it moves, so
    /// that it can draw the cursor there (its video leaves the cursor out). Added in round 2:
    /// older viewers ignore it.
    CursorAt { x: u32, y: u32 },
    /// The VM's CLIPBOARD selection now holds this text (in pieces, as the viewer sends it).
    Clipboard {
        text: String,
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// The VM's screen size (sent when the channel opens and after every change).
    ScreenSize { width: u32, height: u32 },
    /// Something the viewer asked for was not done (sent once per kind), e.g. `view_only`.
    Notice { code: String, message: String },
    /// Who holds control (`null`: nobody) and who watches, in the order they came; `you` is the
    /// receiving viewer's own id. Sent to every viewer when the channel opens and on each change.
    Control {
        holder: Option<String>,
        you: String,
        viewers: Vec<ControlViewer>,
    },
}

/// Why a viewer message was refused before it reached X.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    Malformed(String),
    TooLarge(usize),
    Invalid(&'static str),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::Malformed(e) => write!(f, "unreadable input message: {e}"),
            InputError::TooLarge(n) => write!(f, "input message of {n} bytes is too large"),
            InputError::Invalid(why) => write!(f, "invalid input message: {why}"),
        }
    }
}

impl std::error::Error for InputError {}

impl FramePoint {
    fn check(&self) -> Result<(), InputError> {
        if self.w == 0 || self.h == 0 || self.w > MAX_SCREEN_EDGE || self.h > MAX_SCREEN_EDGE {
            return Err(InputError::Invalid("frame size out of range"));
        }
        Ok(())
    }

    /// The screen pixel for this point on a `screen_w`×`screen_h` screen, clamped to it.
    pub fn to_screen(&self, screen_w: u32, screen_h: u32) -> (u32, u32) {
        fn scale(v: i32, from: u32, to: u32) -> u32 {
            if to == 0 || from == 0 {
                return 0;
            }
            let v = i64::from(v).clamp(0, i64::from(from) - 1);
            let scaled = v * i64::from(to) / i64::from(from);
            scaled.clamp(0, i64::from(to) - 1) as u32
        }
        (
            scale(self.x, self.w, screen_w),
            scale(self.y, self.h, screen_h),
        )
    }
}

impl ViewerToAgent {
    /// Parses and checks one data-channel message. Never panics on any input.
    pub fn parse(text: &str) -> Result<ViewerToAgent, InputError> {
        if text.len() > MAX_INPUT_MESSAGE_BYTES {
            return Err(InputError::TooLarge(text.len()));
        }
        let msg: ViewerToAgent =
            serde_json::from_str(text).map_err(|e| InputError::Malformed(e.to_string()))?;
        msg.check()?;
        Ok(msg)
    }

    fn check(&self) -> Result<(), InputError> {
        match self {
            ViewerToAgent::PointerMove { at } => at.check(),
            ViewerToAgent::PointerButton { button, at, .. } => {
                if !matches!(button, 1..=3 | 8..=9) {
                    return Err(InputError::Invalid("button must be 1, 2, 3, 8 or 9"));
                }
                at.check()
            }
            ViewerToAgent::Wheel { dx, dy, at } => {
                // `unsigned_abs`: `i32::MIN.abs()` overflows (a panic in debug builds, a huge
                // step count after wrapping in release).
                let max = MAX_WHEEL_STEPS.unsigned_abs();
                if dx.unsigned_abs() > max || dy.unsigned_abs() > max {
                    return Err(InputError::Invalid("too many wheel steps"));
                }
                at.check()
            }
            ViewerToAgent::Key { key, code, .. } => {
                if key.is_empty() || key.len() > MAX_KEY_NAME_LEN || code.len() > MAX_KEY_NAME_LEN {
                    return Err(InputError::Invalid("key or code name length"));
                }
                Ok(())
            }
            ViewerToAgent::ReleaseAll => Ok(()),
            ViewerToAgent::Clipboard { text, .. } => {
                if text.len() > CLIPBOARD_CHUNK_BYTES {
                    return Err(InputError::Invalid("clipboard piece over 8 KiB"));
                }
                Ok(())
            }
            ViewerToAgent::GiveControl { to } => {
                if to.is_empty() || to.len() > MAX_VIEWER_ID_LEN {
                    return Err(InputError::Invalid("viewer id length"));
                }
                Ok(())
            }
            ViewerToAgent::RequestControl
            | ViewerToAgent::ReleaseControl
            | ViewerToAgent::TakeControl => Ok(()),
            ViewerToAgent::Resize { width, height } => {
                if !(64..=MAX_SCREEN_EDGE).contains(width)
                    || !(64..=MAX_SCREEN_EDGE).contains(height)
                {
                    return Err(InputError::Invalid("screen size must be 64..=8192"));
                }
                Ok(())
            }
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Splits `text` into clipboard pieces of at most `CLIPBOARD_CHUNK_BYTES`, on character
/// boundaries; the empty text is one empty piece. Each is `(piece, more)`.
pub fn clipboard_chunks(text: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let mut end = rest.len().min(CLIPBOARD_CHUNK_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push((piece, !tail.is_empty()));
        if tail.is_empty() {
            return out;
        }
        rest = tail;
    }
}

/// Puts clipboard pieces back together, refusing more than `MAX_CLIPBOARD_BYTES` in all.
#[derive(Debug, Default)]
pub struct ClipboardAssembler {
    buf: String,
    overflow: bool,
}

impl ClipboardAssembler {
    /// Adds a piece; returns the whole text after the last one (`Err` if it was too large).
    pub fn push(&mut self, piece: &str, more: bool) -> Option<Result<String, InputError>> {
        if !self.overflow && self.buf.len().saturating_add(piece.len()) <= MAX_CLIPBOARD_BYTES {
            self.buf.push_str(piece);
        } else {
            self.overflow = true;
            self.buf.clear();
        }
        if more {
            return None;
        }
        let overflow = std::mem::take(&mut self.overflow);
        let text = std::mem::take(&mut self.buf);
        Some(if overflow {
            Err(InputError::Invalid("clipboard text over 1 MiB"))
        } else {
            Ok(text)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_their_compact_form() {
        let m = ViewerToAgent::parse(r#"{"type":"pointerMove","x":10,"y":20,"w":1280,"h":720}"#)
            .unwrap();
        assert_eq!(
            m,
            ViewerToAgent::PointerMove {
                at: FramePoint {
                    x: 10,
                    y: 20,
                    w: 1280,
                    h: 720
                }
            }
        );
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"pointerMove","x":10,"y":20,"w":1280,"h":720}"#
        );
        let k =
            ViewerToAgent::parse(r#"{"type":"key","key":"a","code":"KeyA","down":true}"#).unwrap();
        assert!(matches!(k, ViewerToAgent::Key { down: true, .. }));
        assert_eq!(
            ViewerToAgent::parse(r#"{"type":"releaseAll"}"#).unwrap(),
            ViewerToAgent::ReleaseAll
        );
        assert_eq!(
            serde_json::to_string(&AgentToViewer::CursorAt { x: 3, y: 4 }).unwrap(),
            r#"{"type":"cursorAt","x":3,"y":4}"#
        );
        let c = AgentToViewer::ScreenSize {
            width: 800,
            height: 600,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"screenSize","width":800,"height":600}"#
        );
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        for bad in [
            "",
            "null",
            "{}",
            r#"{"type":"nope"}"#,
            r#"{"type":"pointerMove","x":1,"y":1,"w":0,"h":720}"#,
            r#"{"type":"pointerMove","x":1,"y":1,"w":1280}"#,
            r#"{"type":"pointerButton","button":4,"down":true,"x":1,"y":1,"w":2,"h":2}"#,
            r#"{"type":"wheel","dx":0,"dy":1000,"x":1,"y":1,"w":2,"h":2}"#,
            // The security review's message: `i32::MIN.abs()` overflowed.
            r#"{"type":"wheel","dx":0,"dy":-2147483648,"x":1,"y":1,"w":2,"h":2}"#,
            r#"{"type":"wheel","dx":-2147483648,"dy":0,"x":1,"y":1,"w":2,"h":2}"#,
            r#"{"type":"wheel","dx":0,"dy":-51,"x":1,"y":1,"w":2,"h":2}"#,
            r#"{"type":"pointerMove","x":1,"y":1,"w":8193,"h":720}"#,
            r#"{"type":"pointerMove","x":1,"y":1,"w":4294967295,"h":720}"#,
            r#"{"type":"resize","width":4294967295,"height":600}"#,
            r#"{"type":"key","key":"","down":true}"#,
            r#"{"type":"resize","width":10,"height":10}"#,
        ] {
            assert!(ViewerToAgent::parse(bad).is_err(), "{bad}");
        }
        let huge = format!(
            r#"{{"type":"clipboard","text":"{}"}}"#,
            "a".repeat(CLIPBOARD_CHUNK_BYTES + 1)
        );
        assert!(ViewerToAgent::parse(&huge).is_err());
        assert!(ViewerToAgent::parse(&"x".repeat(MAX_INPUT_MESSAGE_BYTES + 1)).is_err());
        // The limits themselves are accepted.
        for ok in [
            r#"{"type":"wheel","dx":-50,"dy":50,"x":-2147483648,"y":2147483647,"w":2,"h":2}"#,
            r#"{"type":"resize","width":8192,"height":64}"#,
        ] {
            assert!(ViewerToAgent::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn clipboard_goes_in_pieces_and_comes_back_whole() {
        let text = "é".repeat(CLIPBOARD_CHUNK_BYTES); // 2 bytes each: 2 full pieces
        let pieces = clipboard_chunks(&text);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|(p, _)| p.len() <= CLIPBOARD_CHUNK_BYTES));
        assert_eq!(
            pieces.iter().map(|(_, m)| *m).collect::<Vec<_>>(),
            [true, false]
        );
        let mut a = ClipboardAssembler::default();
        assert!(a.push(pieces[0].0, true).is_none());
        assert_eq!(a.push(pieces[1].0, false).unwrap().unwrap(), text);
        assert_eq!(clipboard_chunks(""), vec![("", false)]);
        // Over the cap: refused once complete, and the next text starts clean.
        let piece = "a".repeat(CLIPBOARD_CHUNK_BYTES);
        for _ in 0..MAX_CLIPBOARD_BYTES / CLIPBOARD_CHUNK_BYTES {
            assert!(a.push(&piece, true).is_none());
        }
        assert!(a.push("b", false).unwrap().is_err());
        assert_eq!(a.push("ok", false).unwrap().unwrap(), "ok");
        let m = ViewerToAgent::Clipboard {
            text: "hi".into(),
            more: false,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"clipboard","text":"hi"}"#
        );
    }

    #[test]
    fn frame_points_scale_to_the_screen_and_clamp() {
        let p = |x, y, w, h| FramePoint { x, y, w, h };
        // Same size: exact.
        assert_eq!(p(300, 200, 1280, 720).to_screen(1280, 720), (300, 200));
        assert_eq!(p(1279, 719, 1280, 720).to_screen(1280, 720), (1279, 719));
        // Half-size frame (stream not yet resized): doubled.
        assert_eq!(p(320, 180, 640, 360).to_screen(1280, 720), (640, 360));
        // Outside: clamped to the screen.
        assert_eq!(p(-5, 9999, 1280, 720).to_screen(1280, 720), (0, 719));
        assert_eq!(p(5, 5, 1280, 720).to_screen(0, 0), (0, 0));
    }
}
