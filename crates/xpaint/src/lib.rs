//! The stimulus X client of the end-to-end tests and the latency benchmark: paints a block of a
//! known colour at a known place on an X display and repaints it on demand, returning the
//! wall-clock time right after the X server has the new pixels (an `XSync` round trip).
//! Used in-process by Rust tests and as the `vdesk-xpaint` binary by the browser tests and the
//! bench. Not part of the product.

use std::time::{SystemTime, UNIX_EPOCH};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ChangeGCAux, ChangeWindowAttributesAux, ConnectionExt, CreateGCAux, CreateWindowAux, Rectangle,
    Window, WindowClass,
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

/// Connects to `display` and maps an override-redirect window at `(x, y, w, h)` filled with
/// `colour`: the connection, the root window and the block.
fn open_block(
    display: &str,
    (x, y, w, h): (i16, i16, u16, u16),
    colour: u32,
) -> Result<(RustConnection, Window, Window), Error> {
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
    Ok((conn, root, win))
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
        let (conn, root, win) = open_block(display, (x, y, w, h), colour)?;
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

    /// The block's window, e.g. to watch it for clicks from another connection.
    pub fn window(&self) -> Window {
        self.win
    }

    /// Repaints the block; returns the time right after the X server has it.
    pub fn paint(&self, colour: u32) -> Result<u128, Error> {
        Ok(self.paint_timed(colour)?.1)
    }

    /// Repaints the block; returns the wall clock (µs) read just before the paint request is
    /// sent and the one read right after the X server confirmed it (`XSync`). The benchmark
    /// counts from the first: the time the request spends reaching the X server is part of
    /// what a user waits for.
    pub fn paint_timed(&self, colour: u32) -> Result<(u128, u128), Error> {
        let before = now_us();
        self.conn.change_window_attributes(
            self.win,
            &ChangeWindowAttributesAux::new().background_pixel(colour),
        )?;
        self.conn.clear_area(false, self.win, 0, 0, 0, 0)?;
        Ok((before, self.sync()?))
    }

    fn sync(&self) -> Result<u128, Error> {
        self.conn.get_input_focus()?.reply()?; // XSync: a round trip
        Ok(now_us())
    }
}

/// Cells of the animation's frame counter: `COUNTER_BITS` squares of `COUNTER_CELL` px, white for
/// a 1 bit and black for a 0 (least significant first), `COUNTER_PITCH` px apart, their top-left
/// corner at `COUNTER_ORIGIN` inside the animated region. A page reads the centres of the cells to
/// tell one animation frame from the next, the same way for every system it shows.
pub const COUNTER_BITS: u32 = 8;
pub const COUNTER_CELL: u16 = 16;
pub const COUNTER_PITCH: i16 = 24;
pub const COUNTER_ORIGIN: (i16, i16) = (16, 24);

/// The counter's cells for animation frame `frame`: (ones, zeroes) as rectangles inside the
/// animated region.
pub fn counter_cells(frame: u32) -> (Vec<Rectangle>, Vec<Rectangle>) {
    let (mut ones, mut zeroes) = (Vec::new(), Vec::new());
    for bit in 0..COUNTER_BITS {
        let r = Rectangle {
            x: COUNTER_ORIGIN.0 + COUNTER_PITCH * bit as i16,
            y: COUNTER_ORIGIN.1,
            width: COUNTER_CELL,
            height: COUNTER_CELL,
        };
        if frame >> bit & 1 == 1 {
            ones.push(r);
        } else {
            zeroes.push(r);
        }
    }
    (ones, zeroes)
}

/// A "busy screen": a region whose content changes every frame (coloured bars scrolling
/// sideways), so the encoder has real motion to work on, with a frame counter in its top-left
/// corner (`counter_cells`). Runs on its own X connection and thread until dropped.
#[derive(Debug)]
pub struct Animator {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Animator {
    pub fn start(
        display: &str,
        (x, y, w, h): (i16, i16, u16, u16),
        fps: u32,
    ) -> Result<Animator, Error> {
        let (conn, _, win) = open_block(display, (x, y, w, h), 0)?;
        let gc = conn.generate_id()?;
        conn.create_gc(gc, win, &CreateGCAux::new())?;
        conn.get_input_focus()?.reply()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let period = std::time::Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
        let thread = std::thread::spawn(move || {
            const PALETTE: [u32; 6] = [0xe63946, 0xf1c453, 0x2a9d8f, 0x457b9d, 0xffffff, 0x1d1d1d];
            let bar = 24i32;
            let mut frame: i32 = 0;
            let mut next = std::time::Instant::now();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let shift = (frame * 8) % (bar * PALETTE.len() as i32);
                for (i, colour) in PALETTE.iter().enumerate() {
                    let rects: Vec<Rectangle> = (-1..=(i32::from(w) / (bar * 6)) + 1)
                        .map(|k| Rectangle {
                            x: (k * bar * 6 + i as i32 * bar + shift) as i16,
                            y: ((frame * 3 + i as i32 * 7) % 13) as i16,
                            width: bar as u16,
                            height: h,
                        })
                        .collect();
                    let ok = conn
                        .change_gc(gc, &ChangeGCAux::new().foreground(*colour))
                        .and_then(|_| conn.poly_fill_rectangle(win, gc, &rects));
                    if ok.is_err() {
                        return;
                    }
                }
                // The counter last, over the bars, in the same batch: frame mod 256.
                let (ones, zeroes) = counter_cells(frame as u32 & 0xff);
                for (colour, cells) in [(0xffffffu32, ones), (0x000000, zeroes)] {
                    let ok = conn
                        .change_gc(gc, &ChangeGCAux::new().foreground(colour))
                        .and_then(|_| conn.poly_fill_rectangle(win, gc, &cells));
                    if ok.is_err() {
                        return;
                    }
                }
                if conn.get_input_focus().map(|c| c.reply()).is_err() {
                    return;
                }
                frame = frame.wrapping_add(1);
                next += period;
                let now = std::time::Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        Ok(Animator {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Animator {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Calls `on_click(received_us)` for each button press on `window`, from a thread of its own with
/// a connection of its own, until that connection fails. For the input-to-photon measurement.
pub fn watch_clicks(
    display: &str,
    window: Window,
    on_click: impl Fn(u128) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, Error> {
    use x11rb::protocol::xproto::EventMask;
    use x11rb::protocol::Event;
    let (conn, _) = x11rb::connect(Some(display))
        .map_err(|e| format!("cannot open X display {display}: {e}"))?;
    conn.change_window_attributes(
        window,
        &ChangeWindowAttributesAux::new().event_mask(EventMask::BUTTON_PRESS),
    )?
    .check()?;
    Ok(std::thread::spawn(move || {
        while let Ok(event) = conn.wait_for_event() {
            if let Event::ButtonPress(_) = event {
                on_click(now_us());
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_encodes_the_frame_number_in_binary() {
        let (ones, zeroes) = counter_cells(0b1000_0101);
        let bits = |cells: &[Rectangle]| -> Vec<i16> {
            cells
                .iter()
                .map(|r| (r.x - COUNTER_ORIGIN.0) / COUNTER_PITCH)
                .collect()
        };
        assert_eq!(bits(&ones), vec![0, 2, 7]);
        assert_eq!(bits(&zeroes), vec![1, 3, 4, 5, 6]);
        assert!(ones
            .iter()
            .all(|r| r.y == COUNTER_ORIGIN.1 && r.width == COUNTER_CELL));
    }
}
