//! The X CLIPBOARD selection, text only, for one viewer: owns it with the viewer's text (and
//! answers other clients' requests for it), and reads it when another client takes it (XFixes
//! tells us) to send to the viewer. At most `MAX_CLIPBOARD_BYTES` either way; INCR transfers
//! (what clients use for very large selections) are not read.

use std::sync::Mutex;

use tracing::{debug, warn};
use vdesk_protocol::MAX_CLIPBOARD_BYTES;
use x11rb::connection::Connection;
use x11rb::protocol::xfixes;
use x11rb::protocol::xproto::{
    self, Atom, AtomEnum, ConnectionExt as _, EventMask, PropMode, SelectionNotifyEvent,
    SelectionRequestEvent, Window,
};
use x11rb::wrapper::ConnectionExt as _;

use super::atoms::Atoms;

/// Our side of the CLIPBOARD: the text we offer while we own it.
#[derive(Debug, Default)]
pub struct Clipboard {
    offered: Mutex<Option<String>>,
}

impl Clipboard {
    /// Takes the CLIPBOARD with `text` (what the viewer copied).
    pub fn offer(&self, conn: &impl Connection, atoms: &Atoms, win: Window, text: String) {
        *self.offered.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
        let r = conn
            .set_selection_owner(win, atoms.clipboard, x11rb::CURRENT_TIME)
            .and_then(|_| conn.flush());
        if let Err(e) = r {
            warn!("could not take the CLIPBOARD: {e}");
        }
    }

    /// Another client took the CLIPBOARD.
    pub fn lost(&self) {
        *self.offered.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Answers another client's request for our selection.
    pub fn answer(&self, conn: &impl Connection, atoms: &Atoms, req: &SelectionRequestEvent) {
        let text = self
            .offered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let property = if req.property == x11rb::NONE {
            req.target // obsolete clients
        } else {
            req.property
        };
        let text_targets = [
            atoms.utf8_string,
            atoms.text,
            atoms.text_plain_utf8,
            AtomEnum::STRING.into(),
        ];
        let ok = match text {
            Some(text) if req.selection == atoms.clipboard => {
                if req.target == atoms.targets {
                    let mut list = vec![atoms.targets];
                    list.extend_from_slice(&text_targets);
                    conn.change_property32(
                        PropMode::REPLACE,
                        req.requestor,
                        property,
                        AtomEnum::ATOM,
                        &list,
                    )
                    .is_ok()
                } else if text_targets.contains(&req.target) {
                    let kind = if req.target == Atom::from(AtomEnum::STRING) {
                        AtomEnum::STRING.into()
                    } else {
                        atoms.utf8_string
                    };
                    conn.change_property8(
                        PropMode::REPLACE,
                        req.requestor,
                        property,
                        kind,
                        text.as_bytes(),
                    )
                    .is_ok()
                } else {
                    false
                }
            }
            _ => false,
        };
        let notify = SelectionNotifyEvent {
            response_type: xproto::SELECTION_NOTIFY_EVENT,
            sequence: 0,
            time: req.time,
            requestor: req.requestor,
            selection: req.selection,
            target: req.target,
            property: if ok { property } else { x11rb::NONE },
        };
        let _ = conn.send_event(false, req.requestor, EventMask::NO_EVENT, notify);
        let _ = conn.flush();
    }

    /// XFixes says the CLIPBOARD changed owner: ask the new owner for its text (unless it is us).
    pub fn owner_changed(
        conn: &impl Connection,
        atoms: &Atoms,
        win: Window,
        ev: &xfixes::SelectionNotifyEvent,
    ) {
        if ev.selection != atoms.clipboard || ev.owner == win || ev.owner == x11rb::NONE {
            return;
        }
        let r = conn
            .convert_selection(
                win,
                atoms.clipboard,
                atoms.utf8_string,
                atoms.vdesk_clip,
                ev.selection_timestamp,
            )
            .and_then(|_| conn.flush());
        if let Err(e) = r {
            warn!("could not ask for the CLIPBOARD: {e}");
        }
    }

    /// The owner answered our request: the text, if it is text of an acceptable size.
    pub fn read_reply(
        conn: &impl Connection,
        atoms: &Atoms,
        win: Window,
        ev: &SelectionNotifyEvent,
    ) -> Result<Option<String>, String> {
        if ev.requestor != win || ev.selection != atoms.clipboard {
            return Ok(None);
        }
        if ev.property == x11rb::NONE {
            debug!("the CLIPBOARD owner has no text");
            return Ok(None);
        }
        let reply = conn
            .get_property(
                true,
                win,
                ev.property,
                AtomEnum::ANY,
                0,
                (MAX_CLIPBOARD_BYTES / 4 + 1) as u32,
            )
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        if reply.type_ == atoms.incr {
            return Err("the CLIPBOARD is too large (INCR transfer): not sent".into());
        }
        if reply.bytes_after > 0 || reply.value.len() > MAX_CLIPBOARD_BYTES {
            return Err(format!(
                "the CLIPBOARD holds more than {MAX_CLIPBOARD_BYTES} bytes: not sent"
            ));
        }
        Ok(Some(String::from_utf8_lossy(&reply.value).into_owned()))
    }
}
