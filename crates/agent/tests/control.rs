//! Integration tier: one user in control at a time, checked on the X side. Three in-process
//! browsers connect to sessions with remote control on one Xvfb (two `control` links and one
//! `admin` link, sharing the agent's room); each sends pointer moves on its `input` data
//! channel, and the X server's pointer position says whose input landed: the first to connect
//! holds control, the others' input is refused; request + give hands it over; the admin takes it;
//! the holder leaving (its session ending, or its input channel closing) passes it on.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::Duration;

use common::peers::{until, Peer};
use common::Xvfb;
use gstreamer as gst;
use serde_json::Value;
use vdesk_agent::codec::Codec;
use vdesk_agent::control::Room;
use vdesk_agent::input::InputSettings;
use vdesk_agent::pipeline::CaptureMode;
use vdesk_protocol::{Permission, SessionGrant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;

fn grant(name: &str, permission: Permission) -> SessionGrant {
    SessionGrant {
        permission,
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn send(p: &Peer, msg: &str) {
    p.browser.as_ref().unwrap().channel.send_string(Some(msg));
}

fn move_to(p: &Peer, x: i32, y: i32) {
    send(
        p,
        &format!(r#"{{"type":"pointerMove","x":{x},"y":{y},"w":320,"h":240}}"#),
    );
}

/// The last `control` message `p` got, if any.
fn last_control(p: &Peer) -> Option<Value> {
    let received = p.browser.as_ref()?.received.lock().unwrap().clone();
    received
        .iter()
        .rev()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .find(|v| v["type"] == "control")
}

/// `p`'s own id, from its `control` messages.
fn id_of(p: &Peer) -> String {
    last_control(p).unwrap()["you"].as_str().unwrap().to_owned()
}

/// Whether `p`'s last `control` message shows viewer `id` asking for control.
fn sees_request(p: &Peer, id: &str) -> bool {
    last_control(p).is_some_and(|c| {
        c["viewers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["id"] == id && v["requested"] == true)
    })
}

fn holder_seen_by(p: &Peer) -> Option<String> {
    last_control(p).and_then(|c| c["holder"].as_str().map(str::to_owned))
}

fn notices(p: &Peer) -> Vec<String> {
    p.browser
        .as_ref()
        .unwrap()
        .received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter(|v| v["type"] == "notice")
        .map(|v| v["code"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_viewer_in_control_moves_the_pointer() {
    gst::init().unwrap();
    let x = Xvfb::start();
    let _painter = x.painter();
    let (conn, screen) = x11rb::connect(Some(&x.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let pointer = || {
        let p = conn.query_pointer(root).unwrap().reply().unwrap();
        (p.root_x, p.root_y)
    };
    let hub = common::hub(&x.display, CaptureMode::Damage, 1000);
    let room = Room::default();
    let settings = InputSettings {
        display: x.display.clone(),
        allow_resize: false,
    };
    let input = Some((&settings, &room));
    let codecs = [Codec::Vp8];

    let mut alice = Peer::start_with(
        "alice",
        &hub,
        &codecs,
        grant("alice", Permission::Control),
        input,
    )
    .await;
    until(
        &mut [&mut alice],
        20,
        "alice connects and holds control",
        |p| last_control(p[0]).is_some_and(|c| c["holder"] == c["you"]),
    )
    .await;
    let mut bob = Peer::start_with(
        "bob",
        &hub,
        &codecs,
        grant("bob", Permission::Control),
        input,
    )
    .await;
    let mut root_ = Peer::start_with(
        "root",
        &hub,
        &codecs,
        grant("root", Permission::Admin),
        input,
    )
    .await;
    until(
        &mut [&mut alice, &mut bob, &mut root_],
        20,
        "everyone sees three viewers",
        |p| {
            p.iter().all(|p| {
                last_control(p)
                    .is_some_and(|c| c["viewers"].as_array().is_some_and(|v| v.len() == 3))
            })
        },
    )
    .await;
    let (a, b, r) = (id_of(&alice), id_of(&bob), id_of(&root_));
    assert_eq!(
        holder_seen_by(&bob),
        Some(a.clone()),
        "the first to connect holds control"
    );
    let viewers = last_control(&bob).unwrap()["viewers"].clone();
    assert_eq!(viewers[0]["name"], "alice", "in the order they came");
    let root_entry = viewers
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == r.as_str())
        .unwrap()
        .clone();
    assert_eq!(root_entry["name"], "root");
    assert_eq!(root_entry["permission"], "admin");

    // Alice's input lands; Bob's does not.
    move_to(&alice, 100, 100);
    until(
        &mut [&mut alice, &mut bob, &mut root_],
        5,
        "alice moves the pointer",
        |_| pointer() == (100, 100),
    )
    .await;
    move_to(&bob, 10, 10);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pointer(), (100, 100), "bob does not hold control");
    until(&mut [&mut bob], 5, "bob is told", |p| {
        notices(p[0]).contains(&"not_in_control".to_owned())
    })
    .await;

    // Bob asks, Alice gives: now Bob's input lands and Alice's does not.
    send(&bob, r#"{"type":"requestControl"}"#);
    until(
        &mut [&mut alice, &mut bob],
        5,
        "alice sees bob's request",
        |p| sees_request(p[0], &b),
    )
    .await;
    send(&alice, &format!(r#"{{"type":"giveControl","to":"{b}"}}"#));
    until(
        &mut [&mut alice, &mut bob, &mut root_],
        5,
        "everyone sees bob in control",
        |p| {
            p.iter()
                .all(|p| holder_seen_by(p).as_deref() == Some(b.as_str()))
        },
    )
    .await;
    move_to(&bob, 20, 30);
    until(&mut [&mut bob], 5, "bob moves the pointer", |_| {
        pointer() == (20, 30)
    })
    .await;
    move_to(&alice, 200, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pointer(), (20, 30), "alice gave control away");

    // Bob may not take; the admin may.
    send(&bob, r#"{"type":"takeControl"}"#);
    send(&root_, r#"{"type":"takeControl"}"#);
    until(
        &mut [&mut alice, &mut bob, &mut root_],
        5,
        "root in control",
        |p| {
            p.iter()
                .all(|p| holder_seen_by(p).as_deref() == Some(r.as_str()))
        },
    )
    .await;
    move_to(&root_, 300, 50);
    until(&mut [&mut root_], 5, "root moves the pointer", |_| {
        pointer() == (300, 50)
    })
    .await;
    move_to(&bob, 5, 5);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pointer(), (300, 50));

    // The holder leaves: nobody asked, so nobody holds control; a request then gets it at once.
    drop(root_.session.take());
    until(&mut [&mut alice, &mut bob], 5, "nobody in control", |p| {
        p.iter().all(|p| {
            last_control(p).is_some_and(|c| {
                c["holder"].is_null() && c["viewers"].as_array().unwrap().len() == 2
            })
        })
    })
    .await;
    send(&alice, r#"{"type":"requestControl"}"#);
    until(
        &mut [&mut alice, &mut bob],
        5,
        "alice in control again",
        |p| holder_seen_by(p[1]).as_deref() == Some(a.as_str()),
    )
    .await;

    // Bob asks; Alice's page goes away (her input channel closes, her session stays a while):
    // control passes to Bob at once.
    send(&bob, r#"{"type":"requestControl"}"#);
    until(
        &mut [&mut alice, &mut bob],
        5,
        "alice sees the request",
        |p| sees_request(p[0], &b),
    )
    .await;
    alice.browser.as_ref().unwrap().channel.close();
    until(
        &mut [&mut alice, &mut bob],
        10,
        "bob in control after alice's channel closed",
        |p| holder_seen_by(p[1]).as_deref() == Some(b.as_str()),
    )
    .await;
}
