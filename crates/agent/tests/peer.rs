//! Integration tier: the agent's `Session` answers a second, in-process `webrtcbin` that plays
//! the browser (recvonly offer + data channel), over real ICE/DTLS/SRTP on loopback, while
//! capturing a real Xvfb display. The "browser" decodes the video and checks the colour that was
//! painted on the X display, so a fake answer or a blank stream cannot pass. Each test also
//! checks that the agent timed its own stages: each test's agent has a context of its own
//! (`AgentContext`), so only its own session's frames can count, whatever runs beside it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{close, Browser, Xvfb};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_webrtc as gst_webrtc;
use tokio::sync::mpsc;
use vdesk_agent::codec::Codec;
use vdesk_agent::pipeline::CaptureMode;
use vdesk_agent::session::Session;
use vdesk_agent::stage_timing::Stage;
use vdesk_protocol::{AgentToController, SessionId};

async fn stream_and_check_colour(codec: Codec, capture: CaptureMode) {
    gst::init().unwrap();
    let x = Xvfb::start();
    let painter = x.painter();
    let browser = Browser::new();
    let mut brx = browser.candidates();
    let offer = browser.offer().await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    // This test's agent: its context is its own, so are its stage times.
    let hub = common::hub(&x.display, capture, 2000);
    let times = hub.context().stage_times().clone();
    assert_eq!(
        times.get(Stage::Encode).0,
        0,
        "a new agent has timed nothing"
    );
    let id = SessionId::random();
    let session = Session::start(&hub, id.clone(), &offer, &[], &[codec], tx).unwrap();
    assert_eq!(session.codec(), codec);

    let mut answered = false;
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_red = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "no red frame in time; answered={answered} states={states:?} frames={} last={:?}",
            browser.frames.lock().unwrap(),
            browser.last_rgb.lock().unwrap()
        );
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                AgentToController::Answer { session_id, sdp } => {
                    assert_eq!(session_id, id);
                    assert!(sdp.contains("a=sendonly"), "answer must send: {sdp}");
                    assert!(sdp.contains(&format!("{}/90000", codec.encoding_name())), "{sdp}");
                    if codec == Codec::H264 {
                        assert!(sdp.contains("packetization-mode=1"), "{sdp}");
                    }
                    browser.set_answer(&sdp);
                    answered = true;
                }
                AgentToController::Candidate { candidate, .. } => {
                    if !candidate.is_end_of_candidates() {
                        browser.webrtc.emit_by_name::<()>(
                            "add-ice-candidate",
                            &[&candidate.sdp_m_line_index.unwrap(), &candidate.candidate],
                        );
                    }
                }
                AgentToController::PeerState { state, .. } => states.push(state),
                AgentToController::SessionEnded { reason, .. } => panic!("session ended: {reason}"),
                AgentToController::SessionStats { session_id, stats } => {
                    assert_eq!(session_id, id);
                    assert_eq!(stats.codec, codec.encoding_name());
                }
                AgentToController::Hello { .. }
                | AgentToController::Check { .. }
                | AgentToController::Resume { .. }
                | AgentToController::Thumbnail { .. } => unreachable!(),
            },
            Some(c) = brx.recv() => session.add_remote_candidate(c),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let rgb = *browser.last_rgb.lock().unwrap();
        if !seen_red && rgb.is_some_and(|c| close(c, [255, 0, 0])) {
            seen_red = true;
            painter.paint(0x00ff00).unwrap();
        }
        if seen_red && rgb.is_some_and(|c| close(c, [0, 255, 0])) {
            break;
        }
    }
    assert_eq!(
        browser.state(),
        gst_webrtc::WebRTCPeerConnectionState::Connected
    );
    assert!(
        states
            .iter()
            .any(|s| s == "ice:connected" || s == "ice:completed"),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "dtls:connected"), "{states:?}");
    assert!(*browser.frames.lock().unwrap() >= 2);
    // The agent timed its own stages for the frames this session sent (its /metrics shows them).
    let (encoded, encode_secs) = times.get(Stage::Encode);
    assert!(
        encoded >= 2,
        "encode stage timed for {encoded} frames of this session"
    );
    assert!(encode_secs > 0.0 && encode_secs / (encoded as f64) < 5.0);
    if capture == CaptureMode::Damage {
        let (captured, _) = times.get(Stage::Capture);
        assert!(
            captured >= 1,
            "capture stage timed for {captured} frames of this session"
        );
    }
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_session_streams_the_x_display() {
    stream_and_check_colour(Codec::Vp8, CaptureMode::Damage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ximagesrc_capture_streams_the_x_display() {
    stream_and_check_colour(Codec::Vp8, CaptureMode::Ximagesrc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_session_streams_the_x_display() {
    stream_and_check_colour(Codec::H264, CaptureMode::Damage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_session_streams_the_x_display() {
    stream_and_check_colour(Codec::Vp9, CaptureMode::Damage).await;
}
