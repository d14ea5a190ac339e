//! The X atoms remote control uses, interned once per connection.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{Atom, ConnectionExt as _};

#[derive(Debug, Clone, Copy)]
pub struct Atoms {
    pub clipboard: Atom,
    pub utf8_string: Atom,
    pub targets: Atom,
    pub text: Atom,
    pub text_plain_utf8: Atom,
    pub incr: Atom,
    pub vdesk_clip: Atom,
    pub vdesk_wake: Atom,
}

impl Atoms {
    pub fn intern(conn: &impl Connection) -> Result<Atoms, String> {
        let names = [
            "CLIPBOARD",
            "UTF8_STRING",
            "TARGETS",
            "TEXT",
            "text/plain;charset=utf-8",
            "INCR",
            "VDESK_CLIP",
            "VDESK_WAKE",
        ];
        let cookies = names
            .iter()
            .map(|n| conn.intern_atom(false, n.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut atoms = Vec::with_capacity(names.len());
        for c in cookies {
            atoms.push(c.reply().map_err(|e| e.to_string())?.atom);
        }
        Ok(Atoms {
            clipboard: atoms[0],
            utf8_string: atoms[1],
            targets: atoms[2],
            text: atoms[3],
            text_plain_utf8: atoms[4],
            incr: atoms[5],
            vdesk_clip: atoms[6],
            vdesk_wake: atoms[7],
        })
    }
}
