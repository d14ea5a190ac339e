//! Integration tier: many viewers, one encoder. Several in-process `webrtcbin` "browsers" connect
//! to sessions on one `MediaHub` over real ICE/DTLS/SRTP, capturing one real Xvfb display: all
//! decode the colour painted on X, the agent runs one capture and one encoder for them (its
//! counters say so), a viewer that leaves or dies changes nothing for the others, a viewer that
//! joins a still screen gets a picture at once (a forced keyframe: the encoder's own keyframes
//! are 600 frames apart), and the encoder stops with its last viewer.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::peers::{until, Peer};
use common::Xvfb;
use gstreamer as gst;
use gstreamer::prelude::*;
use vdesk_agent::codec::Codec;
use vdesk_agent::media::Rung;
use vdesk_agent::pipeline::CaptureMode;

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_share_one_encoder_and_do_not_hold_each_other_back() {
    gst::init().unwrap();
    let x = Xvfb::start();
    let painter = x.painter();
    let hub = common::hub(&x.display, CaptureMode::Damage, 1500);
    let counters = hub.counters();
    let codecs = [Codec::H264];

    let mut a = Peer::start("a", &hub, &codecs).await;
    let mut b = Peer::start("b", &hub, &codecs).await;
    assert_eq!(counters.encoders(), 0, "no encoder before a peer connects");
    until(&mut [&mut a, &mut b], 20, "a and b see red", |p| {
        p.iter().all(|p| p.sees(RED))
    })
    .await;
    assert_eq!(counters.encoders(), 1, "two viewers, one encoder");
    assert_eq!(counters.captures(), 1);
    painter.paint(0x00ff00).unwrap();
    until(&mut [&mut a, &mut b], 10, "a and b see green", |p| {
        p.iter().all(|p| p.sees(GREEN))
    })
    .await;

    // The screen is still now: the encoder's next keyframe of its own is a minute away. A viewer
    // that joins gets a forced one at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let forced = counters.keyframes_forced();
    let mut c = Peer::start("c", &hub, &codecs).await;
    until(&mut [&mut a, &mut b, &mut c], 20, "c connects", |p| {
        p[2].session.as_ref().unwrap().stream().is_some()
    })
    .await;
    let joined = Instant::now();
    until(&mut [&mut a, &mut b, &mut c], 5, "c sees green", |p| {
        p[2].sees(GREEN)
    })
    .await;
    let first_picture = joined.elapsed();
    println!(
        "joining viewer: first picture {} ms after connecting",
        first_picture.as_millis()
    );
    assert!(
        first_picture < Duration::from_millis(2000),
        "first picture {first_picture:?} after connecting"
    );
    assert!(
        counters.keyframes_forced() > forced,
        "the join forced a keyframe"
    );
    assert_eq!(counters.encoders(), 1, "three viewers, one encoder");

    // a dies (its browser is gone without a word), b leaves: c goes on.
    drop(a.browser.take());
    drop(b.session.take());
    drop(b.browser.take());
    let before = c.frames();
    painter.paint(0x0000ff).unwrap();
    until(
        &mut [&mut c],
        10,
        "c sees blue after a died and b left",
        |p| p[0].sees(BLUE),
    )
    .await;
    assert!(c.frames() > before);
    assert_eq!(counters.encoders(), 1);
    let sent = c.session.as_ref().unwrap().frames_sent();
    painter.paint(0xff0000).unwrap();
    until(&mut [&mut c], 10, "c sees red", |p| p[0].sees(RED)).await;
    assert!(c.session.as_ref().unwrap().frames_sent() > sent);

    // The last viewers go: the encoder and the capture stop.
    drop(a.session.take());
    drop(c.session.take());
    assert_eq!(counters.encoders(), 0, "no viewer, no encoder");
    assert_eq!(counters.captures(), 0, "no encoder, no capture");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_of_different_codecs_get_an_encoder_each_and_one_capture() {
    gst::init().unwrap();
    let x = Xvfb::start();
    let _painter = x.painter();
    let hub = common::hub(&x.display, CaptureMode::Damage, 1500);
    let counters = hub.counters();
    let mut h264 = Peer::start("h264", &hub, &[Codec::H264]).await;
    let mut vp8 = Peer::start("vp8", &hub, &[Codec::Vp8]).await;
    until(&mut [&mut h264, &mut vp8], 20, "both see red", |p| {
        p.iter().all(|p| p.sees(RED))
    })
    .await;
    assert_eq!(counters.encoders(), 2);
    assert_eq!(counters.captures(), 1, "one capture feeds both encoders");
    drop(vp8.session.take());
    assert_eq!(counters.encoders(), 1);
    assert_eq!(counters.captures(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_a_bad_link_moves_to_the_low_rung_alone() {
    gst::init().unwrap();
    let x = Xvfb::start();
    let painter = x.painter();
    let hub = common::hub(&x.display, CaptureMode::Damage, 1500);
    let counters = hub.counters();
    let mut good = Peer::start("good", &hub, &[Codec::H264]).await;
    let mut bad = Peer::start("bad", &hub, &[Codec::H264]).await;
    until(&mut [&mut good, &mut bad], 20, "both see red", |p| {
        p.iter().all(|p| p.sees(RED))
    })
    .await;
    assert_eq!(counters.encoders(), 1);
    // The bad viewer's link carries 200 kbit/s: its target stays there past the ladder's hold
    // (its stats loop hands the target on every 500 ms).
    bad.session.as_ref().unwrap().cap_target_kbps(200);
    let stream = |p: &Peer| p.session.as_ref().unwrap().stream().unwrap();
    until(
        &mut [&mut good, &mut bad],
        5,
        "bad moves to the low rung",
        |p| stream(p[1]).rung == Rung::Low,
    )
    .await;
    assert_eq!(
        stream(&good).rung,
        Rung::Full,
        "the good viewer stays on the full rung"
    );
    assert_eq!(counters.encoders(), 2, "one encoder per rung");
    // Both keep a picture: the low rung starts at a keyframe.
    painter.paint(0x00ff00).unwrap();
    until(
        &mut [&mut good, &mut bad],
        10,
        "both see green at their rung's size",
        |p| {
            p.iter().all(|p| p.sees(GREEN))
                && p[0].decoded_size() == Some((320, 240))
                && p[1].decoded_size() == Some((160, 120))
        },
    )
    .await;
    // The good viewer leaves: the full rung's encoder stops, the low one goes on.
    drop(good.session.take());
    assert_eq!(counters.encoders(), 1);
    painter.paint(0x0000ff).unwrap();
    until(&mut [&mut bad], 10, "bad sees blue", |p| p[0].sees(BLUE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_viewer_holds_nobody_back_and_its_backlog_stays_bounded() {
    gst::init().unwrap();
    let x = Xvfb::start();
    let painter = x.painter();
    let hub = common::hub(&x.display, CaptureMode::Damage, 1500);
    let counters = hub.counters();
    let mut good = Peer::start("good", &hub, &[Codec::Vp8]).await;
    until(&mut [&mut good], 20, "good sees red", |p| p[0].sees(RED)).await;
    // A viewer whose pipeline never plays: nothing it is sent ever leaves its queue.
    let stuck_pipeline = gst::Pipeline::new();
    let stuck_src = gstreamer_app::AppSrc::builder().build();
    let sink = gst::ElementFactory::make("fakesink").build().unwrap();
    stuck_pipeline
        .add_many([stuck_src.upcast_ref::<gst::Element>(), &sink])
        .unwrap();
    stuck_src.link(&sink).unwrap();
    let stuck = hub.viewer("stuck");
    let key = good.session.as_ref().unwrap().stream().unwrap();
    let subscription = hub.subscribe(key, &stuck, stuck_src).unwrap();
    assert_eq!(
        counters.encoders(),
        1,
        "the stuck viewer shares the encoder"
    );
    // The screen keeps changing: the good viewer follows every change.
    for (fill, rgb) in [
        (0x00ff00, GREEN),
        (0x0000ff, BLUE),
        (0xff0000, RED),
        (0x00ff00, GREEN),
    ] {
        painter.paint(fill).unwrap();
        until(&mut [&mut good], 10, "good follows the screen", |p| {
            p[0].sees(rgb)
        })
        .await;
    }
    // More frames than a queue holds (the still screen is repeated 10 times a second).
    let seen = good.frames();
    until(&mut [&mut good], 10, "20 more frames", |p| {
        p[0].frames() >= seen + 20
    })
    .await;
    drop(subscription);
    assert!(
        counters
            .frames_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the stuck viewer's frames were dropped, not kept"
    );
    assert_eq!(
        stuck
            .counters
            .frames
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
