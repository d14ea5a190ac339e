//! The admin page's thumbnail from a real Xvfb: a JPEG of the requested width with the screen's
//! aspect, within the protocol's bounds, whatever width is asked for.

mod common;

use common::Xvfb;
use vdesk_agent::thumbnail::capture;
use vdesk_protocol::{MAX_THUMBNAIL_BYTES, MAX_THUMBNAIL_SIDE};

#[test]
fn a_thumbnail_is_a_small_jpeg_of_the_screen() {
    let x = Xvfb::with_screen("1280x720x24");
    let still = capture(&x.display, 320).expect("a thumbnail");
    assert_eq!(
        (still.width, still.height),
        (320, 180),
        "the screen's aspect"
    );
    assert_eq!(&still.jpeg[..2], &[0xFF, 0xD8], "JPEG SOI");
    assert_eq!(
        &still.jpeg[still.jpeg.len() - 2..],
        &[0xFF, 0xD9],
        "JPEG EOI"
    );
    assert!(
        still.jpeg.len() <= MAX_THUMBNAIL_BYTES,
        "{}",
        still.jpeg.len()
    );
    // Asked for something huge, it stays within the bound.
    let still = capture(&x.display, 100_000).expect("a thumbnail");
    assert_eq!(still.width, MAX_THUMBNAIL_SIDE);
    // No X server there: an error, no panic.
    assert!(capture(":9876", 320).is_err());
}
