//! Integration tier: the agent's `Session` answers a second, in-process `webrtcbin` that plays
//! the browser (recvonly offer + data channel), over real ICE/DTLS/SRTP on loopback, while
//! capturing a real Xvfb display. The "browser" decodes the video and checks the colour that was
//! painted on the X display, so a fake answer or a blank stream cannot pass.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use tokio::sync::mpsc;
use vdesk_agent::codec::Codec;
use vdesk_agent::pipeline::{CaptureMode, MediaSettings};
use vdesk_agent::session::Session;
use vdesk_protocol::{AgentToController, IceCandidate, SessionId};
use vdesk_xpaint::Painter;

/// An Xvfb server on a free display number, killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = 100 + (std::process::id() % 50) * 8;
        loop {
            let n = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert!(n < base + 64, "no free X display number");
            if std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                || std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
            {
                continue;
            }
            #[allow(clippy::zombie_processes)] // waited for in Drop
            let child = Command::new("Xvfb")
                .args([
                    &format!(":{n}"),
                    "-screen",
                    "0",
                    "320x240x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb must be installed (apt-get install xvfb)");
            let display = format!(":{n}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                    return Xvfb { child, display };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("Xvfb {display} did not come up");
        }
    }

    /// A red 64x64 block at the top-left corner, on a dark grey screen.
    fn painter(&self) -> Painter {
        Painter::new(&self.display, (0, 0, 64, 64), 0xff0000, Some(0x202020)).unwrap()
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The "browser": webrtcbin with a recvonly video transceiver and a data channel, decoding what
/// it receives into RGB frames.
struct Browser {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    last_rgb: Arc<Mutex<Option<[u8; 3]>>>,
    frames: Arc<Mutex<u32>>,
}

impl Browser {
    fn new() -> Browser {
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        pipeline.add(&webrtc).unwrap();
        pipeline.set_state(gst::State::Ready).unwrap();
        let caps = <gst::Caps as std::str::FromStr>::from_str(
            "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000;\
             application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,\
             packetization-mode=(string)1,profile-level-id=(string)42e01f",
        )
        .unwrap();
        webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
        webrtc.emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
            "create-data-channel",
            &[&"input", &None::<gst::Structure>],
        );
        let last_rgb = Arc::new(Mutex::new(None));
        let frames = Arc::new(Mutex::new(0));
        let (pl, rgb, count) = (pipeline.clone(), last_rgb.clone(), frames.clone());
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let decode = gst::ElementFactory::make("decodebin").build().unwrap();
            let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
            let sink = gstreamer_app::AppSink::builder()
                .caps(
                    &gst::Caps::builder("video/x-raw")
                        .field("format", "RGB")
                        .build(),
                )
                .sync(false)
                .build();
            pl.add_many([&decode, &convert, sink.upcast_ref()]).unwrap();
            convert.link(&sink).unwrap();
            let conv = convert.clone();
            decode.connect_pad_added(move |_, p| {
                let _ = p.link(&conv.static_pad("sink").unwrap());
            });
            let (rgb, count) = (rgb.clone(), count.clone());
            sink.set_callbacks(
                gstreamer_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                        let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                        // Pixel (10, 10) of the frame: the root window's colour.
                        let caps = sample.caps().ok_or(gst::FlowError::Error)?;
                        let info = gstreamer_video::VideoInfo::from_caps(caps)
                            .map_err(|_| gst::FlowError::Error)?;
                        let stride = info.stride()[0] as usize;
                        let i = 10 * stride + 10 * 3;
                        *rgb.lock().unwrap() = Some([map[i], map[i + 1], map[i + 2]]);
                        *count.lock().unwrap() += 1;
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            for e in [&decode, &convert, sink.upcast_ref()] {
                e.sync_state_with_parent().unwrap();
            }
            pad.link(&decode.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Browser {
            pipeline,
            webrtc,
            last_rgb,
            frames,
        }
    }

    async fn offer(&self) -> String {
        let (promise, fut) = gst::Promise::new_future();
        self.webrtc
            .emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        let reply = fut.await.unwrap().unwrap();
        let offer = reply
            .get::<gst_webrtc::WebRTCSessionDescription>("offer")
            .unwrap();
        self.webrtc
            .emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        offer.sdp().as_text().unwrap()
    }

    fn set_answer(&self, sdp: &str) {
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
    }

    fn state(&self) -> gst_webrtc::WebRTCPeerConnectionState {
        self.webrtc.property("connection-state")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (*x as i32 - y as i32).abs() <= 40)
}

async fn stream_and_check_colour(codec: Codec, capture: CaptureMode) {
    gst::init().unwrap();
    let x = Xvfb::start();
    let painter = x.painter();
    let browser = Browser::new();
    let (btx, mut brx) = mpsc::unbounded_channel::<IceCandidate>();
    browser.webrtc.connect("on-ice-candidate", false, move |v| {
        let mline = v[1].get::<u32>().unwrap();
        let candidate = v[2].get::<String>().unwrap();
        let _ = btx.send(IceCandidate {
            candidate,
            sdp_mid: None,
            sdp_m_line_index: Some(mline),
            username_fragment: None,
        });
        None
    });
    let offer = browser.offer().await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let media = MediaSettings {
        min_bitrate_kbps: 300,
        display: x.display.clone(),
        capture,
        framerate: 30,
        bitrate_kbps: 2000,
        show_pointer: false,
    };
    let id = SessionId::random();
    let session = Session::start(id.clone(), &offer, &[], &media, &[codec], tx).unwrap();
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
                AgentToController::Hello { .. } => unreachable!(),
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
