//! The session grant's clipboard direction and permission, enforced by the agent's input side
//! against a real Xvfb: the viewer's clipboard becomes the VM's CLIPBOARD only for a control
//! session whose link allows browser -> VM; a view-only session never writes it. (VM -> browser
//! is filtered where messages leave for the viewer: see `input::tests`.) And the review's wheel
//! message, sent over a real data channel into the agent's GLib callback, does not take the
//! process down (it used to overflow there: a panic across C, which aborts).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{Browser, Xvfb};
use vdesk_agent::control::Room;
use vdesk_agent::input::{InputSettings, SessionInput};
use vdesk_protocol::{ClipboardPolicy, Permission, SessionGrant, SessionId};
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
    // Each session in a room of its own, seated: the first viewer holds control (if it may).
    let room = Room::default();
    let grant = SessionGrant {
        permission,
        clipboard,
        ..SessionGrant::default()
    };
    let input = SessionInput::start(SessionId::random(), &grant, &settings, None, &room);
    input.take_seat();
    input
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_over_a_real_data_channel_does_not_take_the_agent_down() {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_webrtc as gst_webrtc;
    use vdesk_agent::codec::Codec;
    use vdesk_agent::pipeline::CaptureMode;
    use vdesk_agent::session::Session;
    use vdesk_protocol::{AgentToController, SessionGrant};

    gst::init().unwrap();
    let x = Xvfb::start();
    let browser = Browser::new();
    let mut brx = browser.candidates();
    let offer = browser.offer().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = InputSettings {
        display: x.display.clone(),
        allow_resize: false,
    };
    let grant = SessionGrant {
        permission: Permission::Control,
        ..SessionGrant::default()
    };
    let hub = common::hub(&x.display, CaptureMode::Damage, 500);
    let room = Room::default();
    let session = Session::start_with_input(
        &hub,
        SessionId::random(),
        &offer,
        &[],
        &[Codec::Vp8],
        tx,
        grant,
        Some((&settings, &room)),
    )
    .unwrap();
    let channel = browser.channel.clone();
    let open = || channel.ready_state() == gst_webrtc::WebRTCDataChannelState::Open;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = false;
    let mut frames_then = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "sent={sent} frames={}",
            browser.frames.lock().unwrap()
        );
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                AgentToController::Answer { sdp, .. } => browser.set_answer(&sdp),
                AgentToController::Candidate { candidate, .. } if !candidate.is_end_of_candidates() => {
                    browser.webrtc.emit_by_name::<()>(
                        "add-ice-candidate",
                        &[&candidate.sdp_m_line_index.unwrap(), &candidate.candidate],
                    );
                }
                AgentToController::SessionEnded { reason, .. } => panic!("session ended: {reason}"),
                _ => {}
            },
            Some(c) = brx.recv() => session.add_remote_candidate(c),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if !sent && open() && *browser.frames.lock().unwrap() > 0 {
            for text in [
                r#"{"type":"wheel","dx":0,"dy":-2147483648,"x":1,"y":1,"w":2,"h":2}"#,
                r#"{"type":"wheel","dx":-2147483648,"dy":-2147483648,"x":-2147483648,"y":2147483647,"w":4294967295,"h":1}"#,
                r#"{"type":"pointerMove","x":2147483647,"y":-2147483648,"w":1,"h":1}"#,
                "{",
            ] {
                channel.send_string(Some(text));
            }
            sent = true;
            frames_then = *browser.frames.lock().unwrap();
        }
        // Still alive and streaming well after the messages were handled.
        if sent && *browser.frames.lock().unwrap() > frames_then + 5 {
            break;
        }
    }
    drop(session);
}
