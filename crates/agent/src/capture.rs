//! Damage-driven screen capture: a thread watches the X display with the DAMAGE extension and
//! pushes a frame into the session's `appsrc` as soon as something changed (at most `max_fps`
//! a second), copying only the damaged rectangles into a frame it keeps. A static screen costs
//! (almost) nothing and a change does not wait for the next tick of a fixed-rate capture, which
//! is where `ximagesrc` spends half a frame period on average. When nothing changes the last
//! frame is repeated every `idle` (the agent's `--still-fps`), so a keyframe asked for (PLI) never waits
//! for the screen to change. No unsafe code: images come over the X socket with `GetImage`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{debug, info, warn};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, EventMask, ImageFormat, Rectangle};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

use crate::pacing::Pacer;
use crate::stage_timing::{Stage, StageTimes};

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open X display {display}: {reason}")]
    Connect { display: String, reason: String },
    #[error("the X server lacks the {0} extension (damage-driven capture needs it; try --capture ximagesrc)")]
    MissingExtension(&'static str),
    #[error("the X screen is {depth}-bit with {bpp} bits per pixel; damage capture needs 24/32 (try --capture ximagesrc)")]
    UnsupportedFormat { depth: u8, bpp: u8 },
    #[error("X request failed: {0}")]
    X(String),
}

fn x_err(e: impl std::fmt::Display) -> CaptureError {
    CaptureError::X(e.to_string())
}

/// Capture pacing, and where the capture's time per frame is recorded.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    pub max_fps: u32,
    /// Repeat the last frame after this long without damage.
    pub idle: Duration,
    /// The agent's stage times (`context::AgentContext`).
    pub stage_times: Arc<StageTimes>,
}

/// The running capture thread; dropping it stops the thread.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The screen as the capture thread sees it.
struct Screen {
    conn: RustConnection,
    root: u32,
    damage: u32,
    region: u32,
    width: u16,
    height: u16,
}

impl Screen {
    fn open(display: &str) -> Result<Screen, CaptureError> {
        let (conn, n) = x11rb::connect(Some(display)).map_err(|e| CaptureError::Connect {
            display: display.to_owned(),
            reason: e.to_string(),
        })?;
        let screen = &conn.setup().roots[n];
        let (root, width, height, depth) = (
            screen.root,
            screen.width_in_pixels,
            screen.height_in_pixels,
            screen.root_depth,
        );
        let bpp = conn
            .setup()
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel)
            .unwrap_or(0);
        if depth != 24 || bpp != 32 {
            return Err(CaptureError::UnsupportedFormat { depth, bpp });
        }
        if conn
            .extension_information(damage::X11_EXTENSION_NAME)
            .map_err(x_err)?
            .is_none()
        {
            return Err(CaptureError::MissingExtension("DAMAGE"));
        }
        if conn
            .extension_information(xfixes::X11_EXTENSION_NAME)
            .map_err(x_err)?
            .is_none()
        {
            return Err(CaptureError::MissingExtension("XFIXES"));
        }
        conn.xfixes_query_version(5, 0)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        conn.damage_query_version(1, 1)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let damage = conn.generate_id().map_err(x_err)?;
        conn.damage_create(damage, root, damage::ReportLevel::NON_EMPTY)
            .map_err(x_err)?;
        let region = conn.generate_id().map_err(x_err)?;
        conn.xfixes_create_region(region, &[]).map_err(x_err)?;
        // Screen size changes (RandR) arrive as ConfigureNotify on the root window.
        conn.change_window_attributes(
            root,
            &x11rb::protocol::xproto::ChangeWindowAttributesAux::new()
                .event_mask(EventMask::STRUCTURE_NOTIFY),
        )
        .map_err(x_err)?;
        conn.flush().map_err(x_err)?;
        Ok(Screen {
            conn,
            root,
            damage,
            region,
            width,
            height,
        })
    }

    /// Takes the damage accumulated so far, as rectangles clipped to the screen.
    fn take_damage(&self) -> Result<Vec<Rectangle>, CaptureError> {
        self.conn
            .damage_subtract(self.damage, x11rb::NONE, self.region)
            .map_err(x_err)?;
        let reply = self
            .conn
            .xfixes_fetch_region(self.region)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        Ok(reply
            .rectangles
            .into_iter()
            .filter_map(|r| clip(r, self.width, self.height))
            .collect())
    }

    /// Copies `rect` of the screen into `frame` (BGRx, `width * 4` bytes per row).
    fn copy(&self, rect: Rectangle, frame: &mut [u8]) -> Result<(), CaptureError> {
        let img = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                rect.x,
                rect.y,
                rect.width,
                rect.height,
                !0,
            )
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let row = usize::from(rect.width) * 4;
        let stride = usize::from(self.width) * 4;
        for (i, src) in img.data.chunks_exact(row).enumerate() {
            let y = usize::try_from(rect.y).unwrap_or(0) + i;
            let start = y * stride + usize::try_from(rect.x).unwrap_or(0) * 4;
            if let Some(dst) = frame.get_mut(start..start + row) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }
}

/// The pipeline's running time now, if `src` is playing (has a clock and a base time).
fn running_time(src: &gst_app::AppSrc) -> Option<gst::ClockTime> {
    if src.current_state() != gst::State::Playing {
        return None;
    }
    let now = src.clock()?.time()?;
    now.checked_sub(src.base_time()?)
}

fn clip(r: Rectangle, width: u16, height: u16) -> Option<Rectangle> {
    let x0 = i32::from(r.x).max(0);
    let y0 = i32::from(r.y).max(0);
    let x1 = (i32::from(r.x) + i32::from(r.width)).min(i32::from(width));
    let y1 = (i32::from(r.y) + i32::from(r.height)).min(i32::from(height));
    (x1 > x0 && y1 > y0).then(|| Rectangle {
        x: x0 as i16,
        y: y0 as i16,
        width: (x1 - x0) as u16,
        height: (y1 - y0) as u16,
    })
}

/// Caps for a BGRx frame of this size (variable frame rate).
pub fn frame_caps(width: u16, height: u16, max_fps: u32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "BGRx")
        .field("width", i32::from(width))
        .field("height", i32::from(height))
        .field("framerate", gst::Fraction::new(0, 1))
        .field(
            "max-framerate",
            gst::Fraction::new(i32::try_from(max_fps).unwrap_or(60), 1),
        )
        .build()
}

/// Opens the display (so errors surface before the session starts), configures `src` and starts
/// the capture thread.
pub fn start(
    display: &str,
    src: &gst_app::AppSrc,
    settings: CaptureSettings,
) -> Result<Capture, CaptureError> {
    let screen = Screen::open(display)?;
    src.set_caps(Some(&frame_caps(
        screen.width,
        screen.height,
        settings.max_fps,
    )));
    src.set_is_live(true);
    src.set_format(gst::Format::Time);
    // Timestamps are set by `run` (running time at capture), not by appsrc's do-timestamp,
    // which stamps garbage on a buffer pushed while the pipeline is still PAUSED.
    src.set_max_buffers(2);
    src.set_leaky_type(gst_app::AppLeakyType::Downstream);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let src = src.clone();
    let display_name = display.to_owned();
    let thread = std::thread::Builder::new()
        .name("vdesk-capture".into())
        .spawn(move || {
            if let Err(e) = run(screen, &src, settings, &stop2) {
                warn!(display = %display_name, "capture stopped: {e}");
                src.post_error_message(gst::error_msg!(
                    gst::ResourceError::Read,
                    ["screen capture failed: {}", e]
                ));
            }
        })
        .map_err(x_err)?;
    Ok(Capture {
        stop,
        thread: Some(thread),
    })
}

fn run(
    mut screen: Screen,
    src: &gst_app::AppSrc,
    settings: CaptureSettings,
    stop: &AtomicBool,
) -> Result<(), CaptureError> {
    let clock = Instant::now();
    let mut pacer = Pacer::new(settings.max_fps, settings.idle);
    let mut frame = vec![0u8; usize::from(screen.width) * usize::from(screen.height) * 4];
    // The first frame is the whole screen.
    let mut dirty = vec![Rectangle {
        x: 0,
        y: 0,
        width: screen.width,
        height: screen.height,
    }];
    let mut damaged = false;
    let mut unsent = false;
    info!(
        width = screen.width,
        height = screen.height,
        max_fps = settings.max_fps,
        "damage-driven capture started"
    );
    while !stop.load(Ordering::Relaxed) {
        while let Some(event) = screen.conn.poll_for_event().map_err(x_err)? {
            match event {
                Event::DamageNotify(_) => damaged = true,
                Event::ConfigureNotify(c)
                    if c.window == screen.root
                        && (c.width != screen.width || c.height != screen.height) =>
                {
                    info!(width = c.width, height = c.height, "screen size changed");
                    screen.width = c.width;
                    screen.height = c.height;
                    frame = vec![0u8; usize::from(c.width) * usize::from(c.height) * 4];
                    src.set_caps(Some(&frame_caps(c.width, c.height, settings.max_fps)));
                    dirty = vec![Rectangle {
                        x: 0,
                        y: 0,
                        width: c.width,
                        height: c.height,
                    }];
                }
                _ => {}
            }
        }
        let now = clock.elapsed();
        let may_take = pacer.may_take(now);
        // Replies read for our requests may bring events with them, which x11rb then queues
        // instead of leaving them on the socket: after a request, look at the queue again
        // before sleeping on the socket.
        let mut asked = false;
        if may_take && damaged {
            damaged = false;
            asked = true;
            dirty.extend(screen.take_damage()?);
        }
        if may_take && (!dirty.is_empty() || pacer.idle_due(now) || unsent) {
            let changed = !dirty.is_empty();
            for rect in dirty.drain(..) {
                screen.copy(rect, &mut frame)?;
            }
            let Some(pts) = running_time(src) else {
                // Not playing yet: keep the frame for when it is.
                unsent = true;
                std::thread::sleep(NOT_PLAYING_RETRY);
                continue;
            };
            let mut buffer = gst::Buffer::from_slice(frame.clone());
            if let Some(b) = buffer.get_mut() {
                b.set_pts(pts);
            }
            match src.push_buffer(buffer) {
                Ok(_) => {
                    unsent = false;
                    // The frame counts from when its capture started, not from now: the copy
                    // and the push must not stretch the frame period.
                    pacer.took(now);
                    if changed {
                        settings
                            .stage_times
                            .record(Stage::Capture, clock.elapsed().saturating_sub(now));
                    }
                    continue;
                }
                // Not started yet (the session sets the pipeline playing after this thread
                // starts), or stopping: keep the frame and try again until told to stop.
                Err(gst::FlowError::Flushing) => {
                    unsent = true;
                    std::thread::sleep(NOT_PLAYING_RETRY);
                    continue;
                }
                Err(gst::FlowError::Eos) => {
                    debug!("capture: end of stream");
                    return Ok(());
                }
                Err(e) => return Err(CaptureError::X(format!("push: {e:?}"))),
            }
        }
        // Sleep until the X server sends something (damage), the pacer allows the frame that
        // is waiting, the still screen is due to be repeated, or `STOP_CHECK` passes (to see
        // `stop`), whichever comes first.
        let now = clock.elapsed();
        let allowed_in = pacer.wait(now);
        let mut timeout = STOP_CHECK;
        if damaged || !dirty.is_empty() || unsent {
            timeout = timeout.min(allowed_in);
        }
        if let Some(idle) = pacer.until_idle(now) {
            timeout = timeout.min(allowed_in.max(idle));
        }
        if asked {
            continue;
        }
        if !damaged {
            wait_readable(&screen.conn, timeout);
        } else if !timeout.is_zero() {
            std::thread::sleep(timeout);
        }
    }
    Ok(())
}

/// How often a waiting capture thread looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// How often a frame is offered again while the pipeline is not playing yet.
const NOT_PLAYING_RETRY: Duration = Duration::from_millis(1);

/// Waits until the X connection has something to read, or `timeout`.
fn wait_readable(conn: &RustConnection, timeout: Duration) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(conn.stream(), PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).ok();
    // An error (EINTR) just ends the wait early: the loop looks again.
    let _ = poll(&mut fds, timeout.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_rectangles_to_the_screen() {
        let r = |x, y, width, height| Rectangle {
            x,
            y,
            width,
            height,
        };
        let t = |o: Option<Rectangle>| o.map(|r| (r.x, r.y, r.width, r.height));
        assert_eq!(t(clip(r(-10, -5, 20, 10), 100, 50)), Some((0, 0, 10, 5)));
        assert_eq!(t(clip(r(90, 40, 20, 20), 100, 50)), Some((90, 40, 10, 10)));
        assert_eq!(t(clip(r(100, 0, 5, 5), 100, 50)), None);
        assert_eq!(t(clip(r(0, 0, 0, 5), 100, 50)), None);
    }
}
