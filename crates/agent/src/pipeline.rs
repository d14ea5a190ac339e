//! The pipeline of one session, `appsrc (encoded frames from the media part) -> payloader ->
//! webrtcbin`, built element by element (no `parse::launch`, so no string from the network or
//! the command line is ever parsed as pipeline syntax); the settings every pipeline shares; and
//! `PipelineGuard`, whose `Drop` sets a pipeline to `Null` so a dropped session or encoder can
//! never leak an element, a thread or a socket.

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::capture;
use crate::codec::{Codec, CodecChoice, PLAYOUT_DELAY_URI, TWCC_URI};

/// How the screen is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// Frames pushed as soon as X reports damage (see `capture.rs`); the default.
    Damage,
    /// GStreamer's `ximagesrc` at a fixed frame rate (draws the pointer into the picture).
    Ximagesrc,
}

impl std::str::FromStr for CaptureMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "damage" => Ok(CaptureMode::Damage),
            "ximagesrc" => Ok(CaptureMode::Ximagesrc),
            other => Err(format!(
                "unknown capture mode {other:?} (expected damage or ximagesrc)"
            )),
        }
    }
}

/// Capture and encoding settings shared by every session of the agent.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// X display to capture, e.g. `:0`.
    pub display: String,
    pub capture: CaptureMode,
    pub framerate: u32,
    /// Damage capture: frames per second while the screen is still.
    pub still_fps: u32,
    pub bitrate_kbps: u32,
    /// Lowest bitrate the rate controller may set when the network is bad (`rate.rs`).
    pub min_bitrate_kbps: u32,
    /// Draw the X cursor into the stream.
    pub show_pointer: bool,
}

/// Owns a pipeline (and its capture thread, if any); dropping it stops the pipeline, then the
/// thread, and frees everything they hold.
#[derive(Debug)]
pub struct PipelineGuard {
    pipeline: gst::Pipeline,
    // Dropped after `drop()` has stopped the pipeline: its thread sees `Flushing` and ends.
    _capture: Option<capture::Capture>,
}

impl PipelineGuard {
    /// Takes ownership of `pipeline` (and of the capture thread that feeds it, if any).
    pub fn new(pipeline: gst::Pipeline, capture: Option<capture::Capture>) -> Self {
        Self {
            pipeline,
            _capture: capture,
        }
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }
}

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        if let Err(err) = self.pipeline.set_state(gst::State::Null) {
            tracing::warn!(pipeline = %self.pipeline.name(), "could not stop pipeline: {err}");
        }
    }
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer element {0:?} is missing: install the plugin that provides it")]
    MissingElement(&'static str),
    #[error("encoder: {0}")]
    Encoder(String),
    #[error("could not link the pipeline: {0}")]
    Link(String),
    #[error("{0}")]
    Capture(#[from] capture::CaptureError),
}

pub(crate) fn make(
    factory: &'static str,
    name: Option<&str>,
) -> Result<gst::Element, PipelineError> {
    let mut builder = gst::ElementFactory::make(factory);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    builder
        .build()
        .map_err(|_| PipelineError::MissingElement(factory))
}

/// A session's pipeline and the elements of it the session talks to, kept when they are built.
#[derive(Debug)]
pub struct SessionPipeline {
    pub guard: PipelineGuard,
    /// The viewer's peer.
    pub webrtc: gst::Element,
    /// Takes the encoded frames of the shared encoder.
    pub src: gstreamer_app::AppSrc,
    /// `webrtcbin`'s own RTP bin (it makes it when it is created), whose session 0 reports the
    /// transport-cc windows (`stats.rs`). `None` if this `webrtcbin` has none.
    pub rtpbin: Option<gst::Element>,
}

/// Builds a session's sending pipeline for `choice`: an `appsrc` named "media" that takes the
/// encoded frames of the shared encoder (`media::MediaHub`), the payloader, and `webrtcbin`
/// (named "webrtc"), whose `sink_0` pad is linked to the payloader, so it has one video
/// transceiver before the offer is applied (webrtcbin matches it to the offer's video m-line).
pub fn build(name: &str, choice: &CodecChoice) -> Result<SessionPipeline, PipelineError> {
    let pipeline = gst::Pipeline::with_name(name);
    let guard = PipelineGuard::new(pipeline.clone(), None);
    // Never blocks the thread that feeds it (media/mod.rs looks at its level before pushing).
    let src = crate::media::source::live_appsrc("media", MEDIA_QUEUE);
    src.set_caps(Some(&crate::media::source::encoded_caps(choice.codec)));
    let mut chain: Vec<gst::Element> = vec![src.clone().upcast(), payloader(choice)?];

    let rtp_caps = make("capsfilter", None)?;
    // The SSRC is fixed here, so that webrtcbin knows it when it writes the answer and can
    // declare the retransmission (RTX) stream that goes with it (`a=ssrc-group:FID`): a browser
    // drops retransmissions on an SSRC it was not told about.
    let ssrc = random_ssrc();
    if let Some(pay) = chain.last() {
        pay.set_property("ssrc", ssrc);
    }
    let mut caps = gst::Caps::builder("application/x-rtp")
        .field("media", "video")
        .field("ssrc", ssrc)
        .field("encoding-name", choice.codec.encoding_name())
        .field("payload", i32::from(choice.payload_type))
        .field("clock-rate", 90000i32);
    if choice.codec == Codec::H264 {
        // No profile-level-id here: the payloader derives one from the stream, which would not
        // intersect; webrtcbin answers with the offer's own profile-level-id.
        caps = caps.field("packetization-mode", "1");
    }
    if let Some(id) = choice.playout_delay_ext {
        // webrtcbin puts the extmap in the answer; the probe below writes the extension.
        caps = caps.field(format!("extmap-{id}").as_str(), PLAYOUT_DELAY_URI);
    }
    if let Some(id) = choice.twcc_ext {
        // Transport-wide sequence numbers: the payloader reserves the extension, the RTP session
        // numbers every packet, and the browser's feedback on them drives the rate (`stats.rs`).
        caps = caps.field(format!("extmap-{id}").as_str(), TWCC_URI);
        if let Some(pay) = chain.last() {
            add_twcc_extension(pay, id)?;
        }
    }
    rtp_caps.set_property("caps", caps.build());
    if let Some(id) = choice.playout_delay_ext {
        add_playout_delay_probe(&rtp_caps, id);
    }
    chain.push(rtp_caps);

    let webrtc = make("webrtcbin", Some("webrtc"))?;
    webrtc.set_property_from_str("bundle-policy", "max-bundle");

    pipeline
        .add_many(&chain)
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    pipeline
        .add(&webrtc)
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    gst::Element::link_many(&chain).map_err(|e| PipelineError::Link(e.to_string()))?;
    let last = chain
        .last()
        .ok_or_else(|| PipelineError::Link("empty chain".into()))?;
    last.link_pads(None, &webrtc, Some("sink_0"))
        .map_err(|e| PipelineError::Link(format!("payloader -> webrtcbin: {e}")))?;
    let rtpbin = rtpbin_of(&webrtc);
    Ok(SessionPipeline {
        guard,
        webrtc,
        src,
        rtpbin,
    })
}

/// The `rtpbin` inside `webrtc` (not ours to build: found once, by its element type).
fn rtpbin_of(webrtc: &gst::Element) -> Option<gst::Element> {
    let rtpbin_type = gst::ElementFactory::find("rtpbin")?
        .load()
        .ok()?
        .element_type();
    webrtc
        .downcast_ref::<gst::Bin>()?
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.type_() == rtpbin_type)
}

/// Encoded frames a session's `appsrc` holds before the media part keeps the next ones back.
pub const MEDIA_QUEUE: u64 = 2;

/// A random SSRC (RFC 3550 wants it random), without a random-number crate: std's hasher is
/// seeded randomly per process, and the time and a counter make each call differ.
pub(crate) fn random_ssrc() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() as u32).max(1)
}

/// Gives the payloader an `rtphdrexttwcc` extension with the offer's id.
fn add_twcc_extension(pay: &gst::Element, id: u8) -> Result<(), PipelineError> {
    use gstreamer_rtp::prelude::*;
    let ext = make("rtphdrexttwcc", None)?
        .downcast::<gstreamer_rtp::RTPHeaderExtension>()
        .map_err(|_| PipelineError::Link("rtphdrexttwcc is not an RTP header extension".into()))?;
    ext.set_id(u32::from(id));
    pay.emit_by_name::<()>("add-extension", &[&ext]);
    Ok(())
}

/// The playout delay asked of the browser, in units of 10 ms: min 0, max 1 (10 ms).
///
/// min 0 makes Chrome render each frame as soon as it is decoded instead of holding it in its
/// jitter buffer to smooth playback (7-8 ms of jitter buffer gone). A max above 0 also turns on
/// Chrome's low-latency renderer (it sets a "maximum composition delay" of one frame on each
/// frame), which hands a frame to the compositor at the next vsync: with max 0, a frame on a
/// still screen often waited 20-25 ms in the compositor. Measured with `bench/run.sh --only
/// vdesk-h264-720p,vdesk-vp8-720p --samples 30`, max 0 against max 1 in alternating runs (five
/// pairs): H.264 still-screen p50 24-31 ms against 10-21 ms, busy p50 21-34 against 23-29.
pub const PLAYOUT_DELAY: (u16, u16) = (0, 1);

/// The extension's three bytes: 12 bits min, 12 bits max.
fn playout_delay_bytes((min, max): (u16, u16)) -> [u8; 3] {
    [
        (min >> 4) as u8,
        (((min & 0x0f) << 4) as u8) | ((max >> 8) as u8 & 0x0f),
        (max & 0xff) as u8,
    ]
}

/// Writes the playout delay `PLAYOUT_DELAY` into every RTP packet (the webrtc.org playout-delay
/// header extension, one-byte form, id `id`).
fn add_playout_delay_probe(element: &gst::Element, id: u8) {
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    let bytes = playout_delay_bytes(PLAYOUT_DELAY);
    let write = move |buf: &mut gst::BufferRef| {
        if let Ok(mut rtp) = gstreamer_rtp::RTPBuffer::from_buffer_writable(buf) {
            let _ = rtp.add_extension_onebyte_header(id, &bytes);
        }
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            crate::guard::catch("playout-delay probe", gst::PadProbeReturn::Ok, || {
                match &mut info.data {
                    Some(gst::PadProbeData::Buffer(buf)) => write(buf.make_mut()),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        list.make_mut().foreach_mut(|mut buf, _| {
                            write(buf.make_mut());
                            std::ops::ControlFlow::Continue(Some(buf))
                        });
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            })
        },
    );
}

/// The payloader of `choice`, tuned for latency, with the offer's payload type.
fn payloader(choice: &CodecChoice) -> Result<gst::Element, PipelineError> {
    let pay = match choice.codec {
        Codec::Vp8 => {
            let pay = make("rtpvp8pay", None)?;
            pay.set_property_from_str("picture-id-mode", "15-bit");
            pay
        }
        Codec::Vp9 => {
            let pay = make("rtpvp9pay", None)?;
            pay.set_property_from_str("picture-id-mode", "15-bit");
            pay
        }
        Codec::H264 => {
            let pay = make("rtph264pay", None)?;
            pay.set_property("config-interval", -1i32);
            pay.set_property_from_str("aggregate-mode", "zero-latency");
            pay
        }
    };
    pay.set_property("pt", u32::from(choice.payload_type));
    pay.set_property("mtu", 1200u32);
    Ok(pay)
}

/// Initializes GStreamer and checks that every element a session needs is installed, naming the
/// Debian package that brings a missing one.
pub fn check_plugins(codecs: &[Codec]) -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer failed to initialize: {e}"))?;
    let missing: Vec<String> = needed_elements(codecs)
        .into_iter()
        .filter(|(name, _)| gst::ElementFactory::find(name).is_none())
        .map(|(name, pkg)| format!("{name} (apt-get install {pkg})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing GStreamer elements: {}",
            missing.join(", ")
        ))
    }
}

/// Every element a session with one of `codecs` may create, with the Debian package that
/// brings it: what `check_plugins` looks for and `warm_up` loads.
fn needed_elements(codecs: &[Codec]) -> Vec<(&'static str, &'static str)> {
    let mut needed = vec![
        ("ximagesrc", "gstreamer1.0-x"),
        ("appsrc", "gstreamer1.0-plugins-base"),
        ("appsink", "gstreamer1.0-plugins-base"),
        ("videoconvert", "gstreamer1.0-plugins-base"),
        ("videoscale", "gstreamer1.0-plugins-base"),
        ("queue", "libgstreamer1.0-0"),
        ("webrtcbin", "gstreamer1.0-plugins-bad"),
        ("nicesrc", "gstreamer1.0-nice"),
        ("dtlsdec", "gstreamer1.0-plugins-bad"),
        ("dtlssrtpenc", "gstreamer1.0-plugins-bad"),
        ("srtpenc", "gstreamer1.0-plugins-bad"),
        ("rtpbin", "gstreamer1.0-plugins-good"),
        ("rtphdrexttwcc", "gstreamer1.0-plugins-good"),
    ];
    for codec in codecs {
        match codec {
            Codec::Vp8 => needed.extend([
                ("vp8enc", "gstreamer1.0-plugins-good"),
                ("rtpvp8pay", "gstreamer1.0-plugins-good"),
            ]),
            Codec::Vp9 => needed.extend([
                ("vp9enc", "gstreamer1.0-plugins-good"),
                ("rtpvp9pay", "gstreamer1.0-plugins-good"),
            ]),
            Codec::H264 => needed.extend([
                ("x264enc", "gstreamer1.0-plugins-ugly"),
                ("h264parse", "gstreamer1.0-plugins-bad"),
                ("rtph264pay", "gstreamer1.0-plugins-good"),
            ]),
        }
    }
    needed
}

/// Pays the one-time costs at start-up instead of on the first viewer's clock: loads every
/// plugin a session uses, and makes GStreamer generate (and cache for the process) the DTLS
/// certificate that every `webrtcbin` then shares (creating a `dtlsdec` does it), which alone
/// takes hundreds of milliseconds. Returns how long it took.
pub fn warm_up(codecs: &[Codec]) -> std::time::Duration {
    let start = std::time::Instant::now();
    for (name, _) in needed_elements(codecs) {
        // Created and dropped at once: only the side effects (plugin loaded, certificate
        // cached) are wanted. A missing element was already reported by `check_plugins`.
        let _ = gst::ElementFactory::make(name).build();
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_pipeline_keeps_handles_to_its_elements() {
        gst::init().unwrap();
        let choice = CodecChoice {
            codec: Codec::Vp8,
            payload_type: 96,
            profile_level_id: None,
            mline: 0,
            playout_delay_ext: None,
            twcc_ext: Some(3),
        };
        let p = build("handles", &choice).unwrap();
        let bin = p.guard.pipeline();
        assert_eq!(p.webrtc.parent().as_ref(), Some(bin.upcast_ref()));
        assert_eq!(p.src.parent().as_ref(), Some(bin.upcast_ref()));
        // webrtcbin makes its RTP bin when it is created: the stats loop needs no lookup later.
        let rtpbin = p.rtpbin.expect("webrtcbin's rtpbin");
        assert_eq!(rtpbin.parent().as_ref(), Some(p.webrtc.upcast_ref()));
        assert_eq!(rtpbin.factory().unwrap().name(), "rtpbin");
    }

    #[test]
    fn playout_delay_is_packed_as_two_12_bit_fields() {
        assert_eq!(playout_delay_bytes((0, 0)), [0, 0, 0]);
        assert_eq!(playout_delay_bytes((0, 1)), [0, 0, 1]);
        // min 0x123, max 0x456 -> 12 34 56
        assert_eq!(playout_delay_bytes((0x123, 0x456)), [0x12, 0x34, 0x56]);
        assert_eq!(playout_delay_bytes((0xfff, 0xfff)), [0xff, 0xff, 0xff]);
    }
}
