//! The agent's RandR resize against a real Xvfb: shrinking and growing back within the size
//! Xvfb was started with (adding modes Xvfb does not have), and a clear refusal beyond it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::Xvfb;
use vdesk_agent::input::resize::set_screen_size;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;

#[test]
fn resizes_the_xvfb_screen_within_its_maximum() {
    let x = Xvfb::with_screen("1600x900x24");
    let (conn, screen) = x11rb::connect(Some(&x.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let size = || {
        let g = conn.get_geometry(root).unwrap().reply().unwrap();
        (g.width, g.height)
    };
    assert_eq!(size(), (1600, 900));
    set_screen_size(&conn, root, 1024, 600).unwrap();
    assert_eq!(size(), (1024, 600));
    set_screen_size(&conn, root, 1280, 720).unwrap();
    assert_eq!(size(), (1280, 720));
    set_screen_size(&conn, root, 1600, 900).unwrap();
    assert_eq!(size(), (1600, 900));
    let err = set_screen_size(&conn, root, 1920, 1080).unwrap_err();
    assert!(err.contains("1600x900"), "{err}");
    assert_eq!(size(), (1600, 900));
}
