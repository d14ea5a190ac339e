//! The VM's cursor image for the viewer: XFixes hands out premultiplied ARGB pixels; the viewer
//! wants straight-alpha RGBA (what a canvas `ImageData` holds), base64 in a `cursor` message.

use base64::Engine as _;
use vdesk_protocol::{AgentToViewer, MAX_CURSOR_EDGE};
use x11rb::connection::Connection;
use x11rb::protocol::xfixes::ConnectionExt as _;

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
