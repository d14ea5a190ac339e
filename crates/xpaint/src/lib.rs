//! The stimulus X client of the end-to-end tests and the latency benchmark: paints a block of a
//! known colour at a known place on an X display and repaints it on demand, returning the
//! wall-clock time right after the X server has the new pixels (an `XSync` round trip).
//! Used in-process by Rust tests and as the `vdesk-xpaint` binary by the browser tests and the
//! bench. Not part of the product.

use std::time::{SystemTime, UNIX_EPOCH};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ChangeWindowAttributesAux, ConnectionExt, CreateWindowAux, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Parses `RRGGBB` (with or without `#`) into a 24-bit TrueColor pixel value.
pub fn parse_colour(s: &str) -> Result<u32, Error> {
    let s = s.trim().trim_start_matches('#');
    if s.len() != 6 {
        return Err(format!("colour {s:?} must be RRGGBB").into());
    }
    Ok(u32::from_str_radix(s, 16).map_err(|_| format!("colour {s:?} must be hex RRGGBB"))?)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// A block on an X display; the X connection (and so the block) lives as long as this does.
#[derive(Debug)]
pub struct Painter {
    conn: RustConnection,
    root: Window,
    win: Window,
}

impl Painter {
    /// Opens `display`, optionally fills the whole screen with `background`, and maps an
    /// override-redirect window at `(x, y, w, h)` filled with `colour`.
    pub fn new(
        display: &str,
        (x, y, w, h): (i16, i16, u16, u16),
        colour: u32,
        background: Option<u32>,
    ) -> Result<Painter, Error> {
        let (conn, screen_num) = x11rb::connect(Some(display))
            .map_err(|e| format!("cannot open X display {display}: {e}"))?;
        let root = conn.setup().roots[screen_num].root;
        let win = conn.generate_id()?;
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            win,
            root,
            x,
            y,
            w,
            h,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new()
                .background_pixel(colour)
                .override_redirect(1),
        )?;
        conn.map_window(win)?;
        let painter = Painter { conn, root, win };
        if let Some(bg) = background {
            painter.fill_screen(bg)?;
        }
        painter.sync()?;
        Ok(painter)
    }

    /// Sets the root window's background (the whole screen around the block).
    pub fn fill_screen(&self, colour: u32) -> Result<u128, Error> {
        self.conn.change_window_attributes(
            self.root,
            &ChangeWindowAttributesAux::new().background_pixel(colour),
        )?;
        self.conn.clear_area(false, self.root, 0, 0, 0, 0)?;
        self.sync()
    }

    /// Repaints the block; returns the time right after the X server has it.
    pub fn paint(&self, colour: u32) -> Result<u128, Error> {
        self.conn.change_window_attributes(
            self.win,
            &ChangeWindowAttributesAux::new().background_pixel(colour),
        )?;
        self.conn.clear_area(false, self.win, 0, 0, 0, 0)?;
        self.sync()
    }

    fn sync(&self) -> Result<u128, Error> {
        self.conn.get_input_focus()?.reply()?; // XSync: a round trip
        Ok(now_us())
    }
}
