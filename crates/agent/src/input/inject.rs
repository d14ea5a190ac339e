//! Puts one viewer's keys, buttons, wheel and motion into X through XTEST, and remembers what it
//! pressed so that `release_all` (page lost focus, channel closed, session ended) leaves nothing
//! stuck. Characters the keymap lacks get a spare keycode bound for them, as xdotool does; the
//! bindings are kept (least recently used reused first) so a client reading the keycode a little
//! later still sees the right keysym, and are undone when the injector is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{debug, warn};
use vdesk_protocol::ViewerToAgent;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

use super::keys::{self, KeyAction, Keymap, Keysym, NO_SYMBOL};
use super::plan::{self, PointerEvent, MAX_HELD_KEYS};

/// An X request failed (the X server went away, most likely).
#[derive(Debug, thiserror::Error)]
#[error("X request failed: {0}")]
pub struct XError(String);

fn xerr(e: impl std::fmt::Display) -> XError {
    XError(e.to_string())
}

/// One viewer's injector on its own X connection.
#[derive(Debug)]
pub struct Injector {
    conn: Arc<RustConnection>,
    root: xproto::Window,
    /// Viewer key id (`code`, or `key:` + key when there is no code) -> (keycode, keysym) held.
    keys: HashMap<String, (u8, Keysym)>,
    buttons: Vec<u8>,
    /// Spare keycodes this injector bound, oldest use first.
    bound: Vec<(u8, Keysym)>,
    spare: Option<Vec<u8>>,
}

const MAX_BOUND: usize = 16;

impl Injector {
    pub fn new(conn: Arc<RustConnection>, root: xproto::Window) -> Injector {
        Injector {
            conn,
            root,
            keys: HashMap::new(),
            buttons: Vec::new(),
            bound: Vec::new(),
            spare: None,
        }
    }

    /// Handles one input message; clipboard, resize and control are not for the injector and are
    /// ignored. The arithmetic (where on the screen, how many wheel clicks) is `plan`'s, bounded.
    pub fn handle(&mut self, msg: &ViewerToAgent) -> Result<(), XError> {
        match msg {
            ViewerToAgent::PointerMove { .. }
            | ViewerToAgent::PointerButton { .. }
            | ViewerToAgent::Wheel { .. } => {
                let (w, h) = self.screen_size()?;
                let tracked = matches!(msg, ViewerToAgent::PointerButton { .. });
                for event in plan::pointer_events(msg, w, h) {
                    match event {
                        PointerEvent::Motion { x, y } => self.move_to(x, y)?,
                        // A button: remembered, so that `release_all` lets go of it.
                        PointerEvent::Button { button, down } if tracked => {
                            self.button(button, down)?
                        }
                        // A wheel click: pressed and released at once, nothing held.
                        PointerEvent::Button { button, down } => self.fake(
                            if down {
                                xproto::BUTTON_PRESS_EVENT
                            } else {
                                xproto::BUTTON_RELEASE_EVENT
                            },
                            button,
                        )?,
                    }
                }
            }
            ViewerToAgent::Key { key, code, down } => self.key(key, code, *down)?,
            ViewerToAgent::ReleaseAll => self.release_all()?,
            ViewerToAgent::Clipboard { .. }
            | ViewerToAgent::Resize { .. }
            | ViewerToAgent::RequestControl
            | ViewerToAgent::ReleaseControl
            | ViewerToAgent::GiveControl { .. }
            | ViewerToAgent::TakeControl => {}
        }
        self.conn.flush().map_err(xerr)
    }

    fn screen_size(&self) -> Result<(u32, u32), XError> {
        let g = self
            .conn
            .get_geometry(self.root)
            .map_err(xerr)?
            .reply()
            .map_err(xerr)?;
        Ok((u32::from(g.width), u32::from(g.height)))
    }

    fn move_to(&mut self, x: i16, y: i16) -> Result<(), XError> {
        self.conn
            .xtest_fake_input(
                xproto::MOTION_NOTIFY_EVENT,
                0,
                x11rb::CURRENT_TIME,
                self.root,
                x,
                y,
                0,
            )
            .map_err(xerr)?;
        Ok(())
    }

    fn fake(&self, kind: u8, detail: u8) -> Result<(), XError> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, x11rb::NONE, 0, 0, 0)
            .map_err(xerr)?;
        Ok(())
    }

    fn button(&mut self, button: u8, down: bool) -> Result<(), XError> {
        let held = self.buttons.contains(&button);
        if down {
            if !held {
                self.buttons.push(button);
            }
            self.fake(xproto::BUTTON_PRESS_EVENT, button)
        } else if held {
            self.buttons.retain(|b| *b != button);
            self.fake(xproto::BUTTON_RELEASE_EVENT, button)
        } else {
            Ok(()) // never pressed by this viewer: nothing to release
        }
    }

    fn key(&mut self, key: &str, code: &str, down: bool) -> Result<(), XError> {
        let id = if code.is_empty() {
            format!("key:{key}")
        } else {
            code.to_owned()
        };
        if !down {
            if let Some((kc, _)) = self.keys.remove(&id) {
                self.fake(xproto::KEY_RELEASE_EVENT, kc)?;
            }
            return Ok(());
        }
        let sym = match keys::keysym_for(key, code) {
            Some(KeyAction::Keysym(s)) => s,
            Some(KeyAction::Ignore) => return Ok(()),
            None => {
                debug!(key, code, "no keysym for this key; ignored");
                return Ok(());
            }
        };
        if let Some((kc, _)) = self.keys.get(&id) {
            // Auto-repeat: press the same keycode again (one press per message, no count).
            let kc = *kc;
            return self.fake(xproto::KEY_PRESS_EVENT, kc);
        }
        if self.keys.len() >= MAX_HELD_KEYS {
            debug!(key, code, "too many keys held; this one is ignored");
            return Ok(());
        }
        let shift = self.keys.values().any(|(_, s)| keys::is_shift(*s));
        let level3 = self.keys.values().any(|(_, s)| keys::is_level3(*s));
        let map = self.keymap()?;
        let kc = match keys::find_keycode(&map, sym, shift, level3) {
            Some(kc) => kc,
            None => match self.bind_spare(&map, sym)? {
                Some(kc) => kc,
                None => {
                    warn!(
                        keysym = format!("{sym:#x}"),
                        "no keycode free to type this key"
                    );
                    return Ok(());
                }
            },
        };
        self.keys.insert(id, (kc, sym));
        self.fake(xproto::KEY_PRESS_EVENT, kc)
    }

    fn keymap(&self) -> Result<Keymap, XError> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let count = plan::keycode_count(min, max)
            .ok_or_else(|| XError(format!("the X server's keycodes run from {min} to {max}")))?;
        let reply = self
            .conn
            .get_keyboard_mapping(min, count)
            .map_err(xerr)?
            .reply()
            .map_err(xerr)?;
        Ok(Keymap {
            min,
            per_keycode: usize::from(reply.keysyms_per_keycode),
            syms: reply.keysyms,
        })
    }

    /// Binds `sym` (at every level) to a spare keycode, reusing one already bound to it.
    fn bind_spare(&mut self, map: &Keymap, sym: Keysym) -> Result<Option<u8>, XError> {
        if let Some(i) = self.bound.iter().position(|(_, s)| *s == sym) {
            let entry = self.bound.remove(i);
            if map.row(entry.0).is_some_and(|r| r.first() == Some(&sym)) {
                self.bound.push(entry);
                return Ok(Some(entry.0));
            }
        }
        let spare = self
            .spare
            .get_or_insert_with(|| map.spare_keycodes())
            .clone();
        let in_use = |kc: u8, me: &Injector| me.keys.values().any(|(k, _)| *k == kc);
        let fresh = spare
            .iter()
            .rev() // from the top: low spare keycodes are the ones other tools take first
            .copied()
            .find(|kc| !self.bound.iter().any(|(b, _)| b == kc) && !in_use(*kc, self));
        let kc = match fresh {
            Some(kc) if self.bound.len() < MAX_BOUND => kc,
            _ => {
                let Some(i) = self.bound.iter().position(|(k, _)| !in_use(*k, self)) else {
                    return Ok(None);
                };
                self.bound.remove(i).0
            }
        };
        self.conn
            .change_keyboard_mapping(1, kc, 2, &[sym, sym])
            .map_err(xerr)?
            .check()
            .map_err(xerr)?;
        debug!(
            keycode = kc,
            keysym = format!("{sym:#x}"),
            "bound a spare keycode"
        );
        self.bound.push((kc, sym));
        Ok(Some(kc))
    }

    /// Releases every key and button this viewer holds.
    pub fn release_all(&mut self) -> Result<(), XError> {
        let keys: Vec<u8> = self.keys.drain().map(|(_, (kc, _))| kc).collect();
        let buttons = std::mem::take(&mut self.buttons);
        if !keys.is_empty() || !buttons.is_empty() {
            debug!(
                keys = keys.len(),
                buttons = buttons.len(),
                "releasing everything held"
            );
        }
        for kc in keys {
            self.fake(xproto::KEY_RELEASE_EVENT, kc)?;
        }
        for b in buttons {
            self.fake(xproto::BUTTON_RELEASE_EVENT, b)?;
        }
        self.conn.flush().map_err(xerr)
    }

    /// Number of keys and buttons held (for tests and logs).
    pub fn held(&self) -> usize {
        self.keys.len() + self.buttons.len()
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        if let Err(e) = self.release_all() {
            debug!("releasing at the end: {e}");
        }
        for (kc, sym) in std::mem::take(&mut self.bound) {
            // Undo our binding unless someone rebound the keycode since.
            let still_ours = self
                .keymap()
                .ok()
                .and_then(|m| m.row(kc).map(|r| r.first() == Some(&sym)))
                .unwrap_or(false);
            if still_ours {
                let _ = self.conn.change_keyboard_mapping(1, kc, 1, &[NO_SYMBOL]);
            }
        }
        let _ = self.conn.flush();
    }
}
