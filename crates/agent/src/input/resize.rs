//! Sets the X screen size through RandR 1.2: finds (or creates and adds) a mode of the wanted
//! size on the first output that has a CRTC, switches the CRTC to it and sets the screen size
//! (growing the screen before the CRTC, shrinking it after). Xvfb allows any size up to the one
//! it was started with (its RandR maximum), and modes can be added to its one output `screen`.

use x11rb::connection::Connection;
use x11rb::protocol::randr::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, Window};

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// A mode line for `w`×`h` at 60 Hz (blanking as CVT reduced blanking roughly has it).
pub fn mode_info(w: u16, h: u16) -> randr::ModeInfo {
    let htotal = w.saturating_add(160);
    let vtotal = h.saturating_add(30);
    randr::ModeInfo {
        id: 0,
        width: w,
        height: h,
        dot_clock: u32::from(htotal)
            .saturating_mul(u32::from(vtotal))
            .saturating_mul(60),
        hsync_start: w.saturating_add(48),
        hsync_end: w.saturating_add(80),
        htotal,
        hskew: 0,
        vsync_start: h.saturating_add(3),
        vsync_end: h.saturating_add(8),
        vtotal,
        name_len: 0,
        mode_flags: randr::ModeFlag::HSYNC_POSITIVE | randr::ModeFlag::VSYNC_NEGATIVE,
    }
}

/// Sets the screen of `root` to `width`×`height`.
pub fn set_screen_size(
    conn: &impl Connection,
    root: Window,
    width: u32,
    height: u32,
) -> Result<(), String> {
    let (w, h) = (
        u16::try_from(width).map_err(e)?,
        u16::try_from(height).map_err(e)?,
    );
    let range = conn
        .randr_get_screen_size_range(root)
        .map_err(e)?
        .reply()
        .map_err(e)?;
    if w > range.max_width || h > range.max_height || w < range.min_width || h < range.min_height {
        return Err(format!(
            "the X server allows {}x{} to {}x{} (Xvfb: at most the size it was started with)",
            range.min_width, range.min_height, range.max_width, range.max_height
        ));
    }
    let res = conn
        .randr_get_screen_resources_current(root)
        .map_err(e)?
        .reply()
        .map_err(e)?;
    let mut target = None;
    for &output in &res.outputs {
        let info = conn
            .randr_get_output_info(output, res.config_timestamp)
            .map_err(e)?
            .reply()
            .map_err(e)?;
        if info.crtc != 0 {
            target = Some((output, info.crtc));
            break;
        }
    }
    let (output, crtc) = target.ok_or("no RandR output with a CRTC")?;
    let mode = match res.modes.iter().find(|m| m.width == w && m.height == h) {
        Some(m) => m.id,
        None => {
            let name = format!("{w}x{h}");
            let mut info = mode_info(w, h);
            info.name_len = u16::try_from(name.len()).map_err(e)?;
            conn.randr_create_mode(root, info, name.as_bytes())
                .map_err(e)?
                .reply()
                .map_err(e)?
                .mode
        }
    };
    // Adding a mode the output already has is harmless (BadMatch is not raised for it by Xvfb,
    // and a failure shows up in set_crtc_config below).
    conn.randr_add_output_mode(output, mode).map_err(e)?;
    let crtc_info = conn
        .randr_get_crtc_info(crtc, res.config_timestamp)
        .map_err(e)?
        .reply()
        .map_err(e)?;
    let geom = conn.get_geometry(root).map_err(e)?.reply().map_err(e)?;
    let mm = |px: u16| (u32::from(px) * 254 / 960).max(1); // 96 dpi
    let (grow_w, grow_h) = (w.max(geom.width), h.max(geom.height));
    if (grow_w, grow_h) != (geom.width, geom.height) {
        conn.randr_set_screen_size(root, grow_w, grow_h, mm(grow_w), mm(grow_h))
            .map_err(e)?
            .check()
            .map_err(e)?;
    }
    let reply = conn
        .randr_set_crtc_config(
            crtc,
            x11rb::CURRENT_TIME,
            res.config_timestamp,
            0,
            0,
            mode,
            crtc_info.rotation,
            &[output],
        )
        .map_err(e)?
        .reply()
        .map_err(e)?;
    if reply.status != randr::SetConfig::SUCCESS {
        return Err(format!("RandR refused the mode ({:?})", reply.status));
    }
    if (w, h) != (grow_w, grow_h) {
        conn.randr_set_screen_size(root, w, h, mm(w), mm(h))
            .map_err(e)?
            .check()
            .map_err(e)?;
    }
    conn.flush().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_lines_are_consistent() {
        // The largest sizes X can name: saturates instead of overflowing.
        assert_eq!(mode_info(u16::MAX, u16::MAX).dot_clock, u32::MAX);
        let m = mode_info(1024, 600);
        assert!(m.hsync_start > m.width && m.hsync_end > m.hsync_start && m.htotal > m.hsync_end);
        assert!(m.vsync_start > m.height && m.vsync_end > m.vsync_start && m.vtotal > m.vsync_end);
        assert_eq!(m.dot_clock, 1184 * 630 * 60);
    }
}
