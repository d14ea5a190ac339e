//! `vdesk-xprobe`: a test X client for remote control. Maps a window, gives it the input focus,
//! and prints every key, button, motion and keymap event it receives as one JSON line each, with
//! the character a key press types (read from the server's core keymap with the modifiers of the
//! event, like a plain Xlib client). The browser tests type and click through vdesk and compare
//! what this client saw. Not part of the product.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ConnectionExt, CreateWindowAux, EventMask, InputFocus, KeyButMask, Keysym, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::wrapper::ConnectionExt as _;

#[derive(Parser, Debug)]
#[command(about = "Print the X input events a window receives, as JSON lines")]
struct Args {
    /// X display (defaults to $DISPLAY).
    #[arg(long, env = "DISPLAY")]
    display: String,
    /// The window: X,Y,WIDTH,HEIGHT in screen pixels.
    #[arg(long, default_value = "0,0,1280,720")]
    rect: String,
    /// Background colour, RRGGBB.
    #[arg(long, default_value = "202020")]
    color: String,
}

struct Keymap {
    min: u8,
    per: usize,
    syms: Vec<Keysym>,
    /// Modifier bits that ISO_Level3_Shift / Mode_switch are on.
    level3_mask: u16,
}

fn load_keymap(conn: &impl Connection) -> Result<Keymap> {
    let setup = conn.setup();
    let (min, max) = (setup.min_keycode, setup.max_keycode);
    let map = conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
    let per = usize::from(map.keysyms_per_keycode).max(1);
    let mods = conn.get_modifier_mapping()?.reply()?;
    let per_mod = usize::from(mods.keycodes_per_modifier());
    let mut level3_mask = 0u16;
    for (i, kc) in mods.keycodes.iter().enumerate() {
        if *kc < min {
            continue;
        }
        let row = &map.keysyms[usize::from(kc - min) * per..][..per];
        if row.iter().any(|s| *s == 0xfe03 || *s == 0xff7e) && per_mod > 0 {
            level3_mask |= 1 << (i / per_mod);
        }
    }
    Ok(Keymap {
        min,
        per,
        syms: map.keysyms,
        level3_mask,
    })
}

impl Keymap {
    /// The keysym `keycode` gives with `state`: column 0 plain, 1 Shift, 4 level 3, 5 both,
    /// falling back to the level below when a column is empty.
    fn keysym(&self, keycode: u8, state: u16) -> Keysym {
        let Some(i) = keycode.checked_sub(self.min) else {
            return 0;
        };
        let row = self.syms.get(usize::from(i) * self.per..).unwrap_or(&[]);
        let row = &row[..self.per.min(row.len())];
        let at = |c: usize| row.get(c).copied().unwrap_or(0);
        let shift = state & u16::from(KeyButMask::SHIFT) != 0;
        let l3 = state & self.level3_mask != 0;
        let mut col = usize::from(shift) + if l3 { 4 } else { 0 };
        if l3 && at(col) == 0 {
            col -= 4;
        }
        if shift && at(col) == 0 {
            col -= 1;
        }
        at(col)
    }
}

fn char_of(sym: Keysym) -> Option<char> {
    match sym {
        0x20..=0x7e | 0xa0..=0xff => char::from_u32(sym),
        0x0100_0100..=0x0110_ffff => char::from_u32(sym - 0x0100_0000),
        0x20ac => Some('€'),
        _ => None,
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    let v: Vec<i64> = args
        .rect
        .split(',')
        .map(|v| v.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .context("--rect must be X,Y,WIDTH,HEIGHT")?;
    let [x, y, w, h] = v[..] else {
        bail!("--rect must be X,Y,WIDTH,HEIGHT");
    };
    let colour = u32::from_str_radix(args.color.trim_start_matches('#'), 16)
        .context("--color must be RRGGBB")?;
    let (conn, screen) = x11rb::connect(Some(&args.display))
        .map_err(|e| anyhow!("cannot open X display {}: {e}", args.display))?;
    let root = conn.setup().roots[screen].root;
    let win = conn.generate_id()?;
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        win,
        root,
        i16::try_from(x)?,
        i16::try_from(y)?,
        u16::try_from(w)?,
        u16::try_from(h)?,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new()
            .background_pixel(colour)
            .override_redirect(1)
            .event_mask(
                EventMask::KEY_PRESS
                    | EventMask::KEY_RELEASE
                    | EventMask::BUTTON_PRESS
                    | EventMask::BUTTON_RELEASE
                    | EventMask::POINTER_MOTION
                    | EventMask::FOCUS_CHANGE,
            ),
    )?;
    conn.map_window(win)?;
    conn.sync()?;
    conn.set_input_focus(InputFocus::POINTER_ROOT, win, x11rb::CURRENT_TIME)?;
    conn.sync()?;
    let mut keymap = load_keymap(&conn)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, r#"{{"ev":"ready","window":{win}}}"#)?;
    out.flush()?;
    loop {
        let line = match conn.wait_for_event()? {
            Event::KeyPress(e) | Event::KeyRelease(e) => {
                let down = e.response_type & 0x7f == x11rb::protocol::xproto::KEY_PRESS_EVENT;
                let state = u16::from(e.state);
                let sym = keymap.keysym(e.detail, state);
                let ch = if down { char_of(sym) } else { None };
                let ch = ch
                    .map(|c| json_str(&c.to_string()))
                    .unwrap_or("null".into());
                format!(
                    r#"{{"ev":"key","down":{down},"keycode":{},"state":{state},"keysym":{sym},"char":{ch}}}"#,
                    e.detail
                )
            }
            Event::ButtonPress(e) | Event::ButtonRelease(e) => {
                let down = e.response_type & 0x7f == x11rb::protocol::xproto::BUTTON_PRESS_EVENT;
                format!(
                    r#"{{"ev":"button","down":{down},"button":{},"x":{},"y":{},"rootX":{},"rootY":{},"state":{}}}"#,
                    e.detail,
                    e.event_x,
                    e.event_y,
                    e.root_x,
                    e.root_y,
                    u16::from(e.state)
                )
            }
            Event::MotionNotify(e) => format!(
                r#"{{"ev":"motion","x":{},"y":{},"rootX":{},"rootY":{},"state":{}}}"#,
                e.event_x,
                e.event_y,
                e.root_x,
                e.root_y,
                u16::from(e.state)
            ),
            Event::MappingNotify(_) => {
                keymap = load_keymap(&conn)?;
                r#"{"ev":"mapping"}"#.to_owned()
            }
            Event::FocusIn(_) => r#"{"ev":"focus","in":true}"#.to_owned(),
            Event::FocusOut(_) => r#"{"ev":"focus","in":false}"#.to_owned(),
            _ => continue,
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}
