//! The media pipeline of one session, `ximagesrc -> videoconvert -> encoder -> payloader ->
//! webrtcbin`, built element by element (no `parse::launch`, so no string from the network or
//! the command line is ever parsed as pipeline syntax), and `PipelineGuard`, whose `Drop` sets
//! the pipeline to `Null` so a dropped session can never leak an encoder or a socket.

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::codec::{Codec, CodecChoice};

/// Capture and encoding settings shared by every session of the agent.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// X display to capture, e.g. `:0`.
    pub display: String,
    pub framerate: u32,
    pub bitrate_kbps: u32,
    /// Draw the X cursor into the stream.
    pub show_pointer: bool,
}

/// Owns a pipeline; dropping it stops the pipeline and frees everything it holds.
#[derive(Debug)]
pub struct PipelineGuard(gst::Pipeline);

impl PipelineGuard {
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.0
    }
}

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        if let Err(err) = self.0.set_state(gst::State::Null) {
            tracing::warn!(pipeline = %self.0.name(), "could not stop pipeline: {err}");
        }
    }
}

/// Stops (`false`) and restarts (`true`) the capture element of a running pipeline: after a
/// screen size change, `ximagesrc` has to reopen the display to capture the new size, and
/// restarting it alone renegotiates the caps downstream (the encoder reconfigures) without
/// touching the WebRTC connection.
pub fn capture_restarter(
    pipeline: &gst::Pipeline,
) -> Option<std::sync::Arc<dyn Fn(bool) + Send + Sync>> {
    let src = pipeline.by_name("capture")?;
    Some(std::sync::Arc::new(move |run: bool| {
        let r = if run {
            src.sync_state_with_parent().map_err(|e| e.to_string())
        } else {
            src.set_state(gst::State::Null)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if let Err(e) = r {
            let what = if run { "restart" } else { "stop" };
            tracing::warn!("could not {what} the capture: {e}");
        }
    }))
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer element {0:?} is missing: install the plugin that provides it")]
    MissingElement(&'static str),
    #[error("could not link the pipeline: {0}")]
    Link(String),
}

fn make(factory: &'static str, name: Option<&str>) -> Result<gst::Element, PipelineError> {
    let mut builder = gst::ElementFactory::make(factory);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    builder
        .build()
        .map_err(|_| PipelineError::MissingElement(factory))
}

/// Builds the sending pipeline for `choice`. The returned `webrtcbin` is named `webrtc`; its
/// `sink_0` pad is linked to the payloader, so it has one video transceiver before the offer is
/// applied (webrtcbin matches it to the offer's video m-line).
pub fn build(
    name: &str,
    media: &MediaSettings,
    choice: &CodecChoice,
) -> Result<(PipelineGuard, gst::Element), PipelineError> {
    let pipeline = gst::Pipeline::with_name(name);
    let guard = PipelineGuard(pipeline.clone());

    let src = make("ximagesrc", Some("capture"))?;
    src.set_property("display-name", &media.display);
    src.set_property("use-damage", false);
    src.set_property("show-pointer", media.show_pointer);
    let rate = make("capsfilter", None)?;
    rate.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(media.framerate as i32, 1))
            .build(),
    );
    let convert = make("videoconvert", None)?;
    let i420 = make("capsfilter", None)?;
    i420.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .build(),
    );
    // Never queue stale frames in front of the encoder: keep only the newest.
    let queue = make("queue", None)?;
    queue.set_property("max-size-buffers", 1u32);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-time", 0u64);
    queue.set_property_from_str("leaky", "downstream");

    let mut chain = vec![src, rate, convert, i420, queue];
    chain.extend(encoder_chain(media, choice)?);

    let rtp_caps = make("capsfilter", None)?;
    let mut caps = gst::Caps::builder("application/x-rtp")
        .field("media", "video")
        .field("encoding-name", choice.codec.encoding_name())
        .field("payload", i32::from(choice.payload_type))
        .field("clock-rate", 90000i32);
    if choice.codec == Codec::H264 {
        // No profile-level-id here: the payloader derives one from the stream, which would not
        // intersect; webrtcbin answers with the offer's own profile-level-id.
        caps = caps.field("packetization-mode", "1");
    }
    rtp_caps.set_property("caps", caps.build());
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
    Ok((guard, webrtc))
}

/// Encoder and payloader, tuned for latency: no lookahead, no B-frames, realtime speed.
fn encoder_chain(
    media: &MediaSettings,
    choice: &CodecChoice,
) -> Result<Vec<gst::Element>, PipelineError> {
    let pt = u32::from(choice.payload_type);
    match choice.codec {
        Codec::Vp8 => {
            let enc = make("vp8enc", Some("encoder"))?;
            enc.set_property("deadline", 1i64);
            enc.set_property("cpu-used", 8i32);
            enc.set_property("threads", 2i32);
            enc.set_property("lag-in-frames", 0i32);
            enc.set_property_from_str("end-usage", "cbr");
            enc.set_property("target-bitrate", (media.bitrate_kbps * 1000) as i32);
            enc.set_property("keyframe-max-dist", 600i32);
            enc.set_property_from_str("error-resilient", "partitions");
            enc.set_property("buffer-initial-size", 100i32);
            enc.set_property("buffer-optimal-size", 120i32);
            enc.set_property("buffer-size", 150i32);
            let pay = make("rtpvp8pay", None)?;
            pay.set_property("pt", pt);
            pay.set_property("mtu", 1200u32);
            pay.set_property_from_str("picture-id-mode", "15-bit");
            Ok(vec![enc, pay])
        }
        Codec::H264 => {
            let enc = make("x264enc", Some("encoder"))?;
            enc.set_property_from_str("tune", "zerolatency");
            enc.set_property_from_str("speed-preset", "ultrafast");
            enc.set_property("bitrate", media.bitrate_kbps);
            enc.set_property("key-int-max", 600u32);
            enc.set_property("bframes", 0u32);
            enc.set_property("threads", 2u32);
            let profile = make("capsfilter", None)?;
            profile.set_property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("profile", "constrained-baseline")
                    .build(),
            );
            let parse = make("h264parse", None)?;
            let pay = make("rtph264pay", None)?;
            pay.set_property("pt", pt);
            pay.set_property("mtu", 1200u32);
            pay.set_property("config-interval", -1i32);
            pay.set_property_from_str("aggregate-mode", "zero-latency");
            Ok(vec![enc, profile, parse, pay])
        }
    }
}

/// Initializes GStreamer and checks that every element a session needs is installed, naming the
/// Debian package that brings a missing one.
pub fn check_plugins(codecs: &[Codec]) -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer failed to initialize: {e}"))?;
    let mut needed = vec![
        ("ximagesrc", "gstreamer1.0-x"),
        ("videoconvert", "gstreamer1.0-plugins-base"),
        ("queue", "libgstreamer1.0-0"),
        ("webrtcbin", "gstreamer1.0-plugins-bad"),
        ("nicesrc", "gstreamer1.0-nice"),
        ("dtlssrtpenc", "gstreamer1.0-plugins-bad"),
        ("srtpenc", "gstreamer1.0-plugins-bad"),
        ("rtpbin", "gstreamer1.0-plugins-good"),
    ];
    for codec in codecs {
        match codec {
            Codec::Vp8 => needed.extend([
                ("vp8enc", "gstreamer1.0-plugins-good"),
                ("rtpvp8pay", "gstreamer1.0-plugins-good"),
            ]),
            Codec::H264 => needed.extend([
                ("x264enc", "gstreamer1.0-plugins-ugly"),
                ("h264parse", "gstreamer1.0-plugins-bad"),
                ("rtph264pay", "gstreamer1.0-plugins-good"),
            ]),
        }
    }
    let missing: Vec<String> = needed
        .iter()
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
