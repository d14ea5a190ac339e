//! The session grant's clipboard direction and permission, enforced by the agent's input side
//! against a real Xvfb: the viewer's clipboard becomes the VM's CLIPBOARD only for a control
//! session whose link allows browser -> VM; a view-only session never writes it. (VM -> browser
//! is filtered where messages leave for the viewer: see `input::tests`.)

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::Xvfb;
use vdesk_agent::input::{InputSettings, SessionInput};
use vdesk_protocol::{ClipboardPolicy, Permission, SessionId};
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _};

/// Whether someone owns the X CLIPBOARD within `wait`.
fn clipboard_owned(display: &str, wait: Duration) -> bool {
    let (conn, _) = x11rb::connect(Some(display)).unwrap();
    let clipboard = conn
        .intern_atom(false, b"CLIPBOARD")
        .unwrap()
        .reply()
        .unwrap()
        .atom;
    let deadline = Instant::now() + wait;
    loop {
        let owner = conn
            .get_selection_owner(clipboard)
            .unwrap()
            .reply()
            .unwrap()
            .owner;
        if owner != u32::from(AtomEnum::NONE) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn session(
    display: &str,
    permission: Permission,
    clipboard: ClipboardPolicy,
) -> std::sync::Arc<SessionInput> {
    let settings = InputSettings {
        display: display.to_owned(),
        allow_resize: false,
    };
    SessionInput::start(SessionId::random(), permission, clipboard, &settings, None)
}

const PASTE: &str = r#"{"type":"clipboard","text":"from the browser"}"#;

#[test]
fn the_browser_clipboard_reaches_x_only_when_the_grant_allows_it() {
    // Refused: a control session on a from-vm or off link, and any view-only session. Each on
    // its own X server, so that nothing one did is seen by the next.
    for (permission, policy) in [
        (Permission::Control, ClipboardPolicy::FromVm),
        (Permission::Control, ClipboardPolicy::Off),
        (Permission::View, ClipboardPolicy::Both),
    ] {
        let x = Xvfb::start();
        let input = session(&x.display, permission, policy);
        input.on_message(PASTE);
        assert!(
            !clipboard_owned(&x.display, Duration::from_millis(700)),
            "{permission:?} {policy:?}: the VM's CLIPBOARD was written"
        );
        drop(input);
    }
    // Allowed: the same message on a control session of a to-vm link takes the CLIPBOARD.
    let x = Xvfb::start();
    let input = session(&x.display, Permission::Control, ClipboardPolicy::ToVm);
    input.on_message(PASTE);
    assert!(
        clipboard_owned(&x.display, Duration::from_secs(5)),
        "a to-vm control session must write the VM's CLIPBOARD"
    );
}
