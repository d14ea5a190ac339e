//! Integration tier: a hardware H.264 encoder that fails when a stream's encoder is built (here: one that
//! is not installed, as on this GPU-less machine) gives way to x264enc, and the viewer still gets
//! a picture: the in-process "browser" must decode the red block painted on a real Xvfb. The
//! broken choice is made in this test's agent context only.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{close, Browser, Xvfb};
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;
use vdesk_agent::codec::Codec;
use vdesk_agent::context::AgentContext;
use vdesk_agent::encoder::{self, Choice, Kind};
use vdesk_agent::media::MediaHub;
use vdesk_agent::pipeline::CaptureMode;
use vdesk_agent::session::Session;
use vdesk_protocol::{AgentToController, SessionId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_hardware_encoder_falls_back_to_software() {
    gst::init().unwrap();
    let Some(broken) = encoder::HARDWARE_H264
        .into_iter()
        .find(|k| gst::ElementFactory::find(k.factory()).is_none())
    else {
        eprintln!("skipped: every hardware H.264 element is installed here");
        return;
    };
    let context = AgentContext::new(vec![Choice {
        codec: Codec::H264,
        kind: broken,
        why: "test".into(),
    }]);

    let x = Xvfb::start();
    let _painter = x.painter();
    let browser = Browser::new();
    let mut brx = browser.candidates();
    let offer = browser.offer().await;
    let hub = MediaHub::new(
        common::media(&x.display, CaptureMode::Damage, 2000),
        context.clone(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = Session::start(&hub, SessionId::random(), &offer, &[], &[Codec::H264], tx)
        .expect("the session starts in software");
    assert_eq!(session.codec(), Codec::H264);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "no red frame in time; frames={} last={:?}",
            browser.frames.lock().unwrap(),
            browser.last_rgb.lock().unwrap()
        );
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                AgentToController::Answer { sdp, .. } => {
                    assert!(sdp.contains("H264/90000"), "{sdp}");
                    browser.set_answer(&sdp);
                }
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
        if browser
            .last_rgb
            .lock()
            .unwrap()
            .is_some_and(|c| close(c, [255, 0, 0]))
        {
            break;
        }
    }
    // The encoder is made when the peer connects (no encoder works for an unconnected viewer).
    assert_eq!(context.encoders.for_codec(Codec::H264), Kind::X264);
    let why = context.encoders.choice(Codec::H264).unwrap().why;
    assert!(
        why.contains(&format!("{broken} failed in a session")),
        "{why}"
    );
    drop(session);
}
