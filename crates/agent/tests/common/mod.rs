//! Test helpers shared by the agent's integration tests: an Xvfb server on a free display, and
//! "the browser": a second in-process `webrtcbin` (recvonly video + data channel) that decodes what
//! it receives. No test lives here.
#![allow(clippy::unwrap_used, dead_code)] // test code; each test file uses a part of it

pub mod peers;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use tokio::sync::mpsc;
use vdesk_agent::media::MediaHub;
use vdesk_agent::pipeline::{CaptureMode, MediaSettings};
use vdesk_protocol::IceCandidate;
use vdesk_xpaint::Painter;

/// A test session's media settings on `display`: `capture`, 30 fps (10 when still), `kbps`.
pub fn media(display: &str, capture: CaptureMode, kbps: u32) -> MediaSettings {
    MediaSettings {
        display: display.to_owned(),
        capture,
        framerate: 30,
        still_fps: 10,
        bitrate_kbps: kbps,
        min_bitrate_kbps: 300,
        show_pointer: false,
    }
}

/// The shared media of a test agent with a context of its own (software encoders, its own
/// metrics and stage times), with `media`'s settings.
pub fn hub(display: &str, capture: CaptureMode, kbps: u32) -> MediaHub {
    MediaHub::new(media(display, capture, kbps), Default::default())
}

/// An Xvfb server on a free display number, killed on drop.
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Xvfb {
    /// A 320x240 screen.
    pub fn start() -> Xvfb {
        Xvfb::with_screen("320x240x24")
    }

    /// A screen of `size` (`WxHxDEPTH`).
    pub fn with_screen(size: &str) -> Xvfb {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = 100 + (std::process::id() % 50) * 8;
        loop {
            let n = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert!(n < base + 64, "no free X display number");
            if !display_free(n) {
                continue;
            }
            #[allow(clippy::zombie_processes)] // waited for in Drop
            let child = Command::new("Xvfb")
                // -noreset: an X server resets when its last client leaves, and a client that
                // connects during the reset is refused; the readiness probe below is a client.
                .args([
                    &format!(":{n}"),
                    "-screen",
                    "0",
                    size,
                    "-nolisten",
                    "tcp",
                    "-noreset",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb must be installed (apt-get install xvfb)");
            let display = format!(":{n}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                // The socket appears before the server takes clients: wait for a real
                // connection, so that a test's first X client (ximagesrc, XTEST) never races it.
                if std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && x11rb::connect(Some(&display)).is_ok()
                {
                    return Xvfb { child, display };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("Xvfb {display} did not come up");
        }
    }

    /// A red 64x64 block at the top-left corner, on a dark grey screen.
    pub fn painter(&self) -> Painter {
        Painter::new(&self.display, (0, 0, 64, 64), 0xff0000, Some(0x202020)).unwrap()
    }
}

/// Whether display `n` can be used: no lock file, or a stale one (its process is gone, e.g. an
/// Xvfb that was SIGKILLed), whose files are then removed so that the socket seen afterwards
/// is the new server's.
fn display_free(n: u32) -> bool {
    let lock = format!("/tmp/.X{n}-lock");
    let socket = format!("/tmp/.X11-unix/X{n}");
    match std::fs::read_to_string(&lock) {
        Ok(pid) => {
            let pid = pid.trim();
            if !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
            std::fs::remove_file(&lock).is_ok() && {
                let _ = std::fs::remove_file(&socket);
                true
            }
        }
        // No lock: free unless a socket is there (a server that has not written its lock yet).
        Err(_) => !std::path::Path::new(&socket).exists(),
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM first: Xvfb then removes its lock file and socket (SIGKILL leaves them behind,
        // and stale ones used to run the display numbers out).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The "browser": webrtcbin with a recvonly video transceiver and a data channel, decoding what
/// it receives into RGB frames.
pub struct Browser {
    pipeline: gst::Pipeline,
    pub webrtc: gst::Element,
    pub last_rgb: Arc<Mutex<Option<[u8; 3]>>>,
    pub frames: Arc<Mutex<u32>>,
    /// The `input` data channel, and the text messages the agent sent on it.
    pub channel: gst_webrtc::WebRTCDataChannel,
    pub received: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// The browser's ICE candidates as they are gathered, as a viewer would trickle them.
    pub fn candidates(&self) -> mpsc::UnboundedReceiver<IceCandidate> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.webrtc.connect("on-ice-candidate", false, move |v| {
            let _ = tx.send(IceCandidate {
                candidate: v[2].get::<String>().unwrap(),
                sdp_mid: None,
                sdp_m_line_index: Some(v[1].get::<u32>().unwrap()),
                username_fragment: None,
            });
            None
        });
        rx
    }

    pub fn new() -> Browser {
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
             packetization-mode=(string)1,profile-level-id=(string)42e01f;\
             application/x-rtp,media=video,encoding-name=VP9,payload=98,clock-rate=90000,\
             profile-id=(string)0",
        )
        .unwrap();
        webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
        let channel = webrtc
            .emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
                "create-data-channel",
                &[&"input", &None::<gst::Structure>],
            )
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        channel.connect_on_message_string(move |_, text| {
            if let Some(text) = text {
                r.lock().unwrap().push(text.to_owned());
            }
        });
        let last_rgb = Arc::new(Mutex::new(None));
        let frames = Arc::new(Mutex::new(0));
        // Weak: the closure lives inside the pipeline, a strong reference would keep it alive.
        let (pl, rgb, count) = (pipeline.downgrade(), last_rgb.clone(), frames.clone());
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let decode = gst::ElementFactory::make("decodebin").build().unwrap();
            // Like a browser: wait for a keyframe and ask for one (PLI) when frames cannot be
            // decoded, instead of relying on the very first keyframe arriving.
            let bin = decode.clone().downcast::<gst::Bin>().unwrap();
            bin.connect_deep_element_added(|_, _, el| {
                let depay = el.factory().is_some_and(|f| f.name().ends_with("depay"));
                if depay {
                    el.set_property("request-keyframe", true);
                    el.set_property("wait-for-keyframe", true);
                }
            });
            let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
            let sink = gstreamer_app::AppSink::builder()
                .caps(
                    &gst::Caps::builder("video/x-raw")
                        .field("format", "RGB")
                        .build(),
                )
                .sync(false)
                .build();
            let Some(pl) = pl.upgrade() else { return };
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
            channel,
            received,
        }
    }

    pub async fn offer(&self) -> String {
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

    pub fn set_answer(&self, sdp: &str) {
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
    }

    pub fn state(&self) -> gst_webrtc::WebRTCPeerConnectionState {
        self.webrtc.property("connection-state")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (*x as i32 - y as i32).abs() <= 40)
}
