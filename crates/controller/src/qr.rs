//! QR codes of viewer links for the `/admin` page (a phone's camera opens the link): SVG made on
//! the controller with the `qrcode` crate, so the page needs no QR code of its own. Error
//! correction M, a 4-module quiet zone, black on white.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// `text` as a QR code in SVG (a `<svg>` element, 200 px or more wide). Links are at most a few
/// hundred bytes; text too long for a QR code gives an empty string.
pub fn svg(text: &str) -> String {
    match QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_becomes_an_svg_and_too_much_text_nothing() {
        let s = svg("http://127.0.0.1:8080/vm/demo?token=abc.def");
        assert!(s.contains("<svg") && s.contains("</svg>"), "{s}");
        assert!(svg(&"x".repeat(5000)).is_empty());
    }
}
