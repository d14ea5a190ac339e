//! Which encoder element each codec uses (`--encoder auto|software|ELEMENT`): the software one
//! (x264enc, vp8enc, vp9enc) or a hardware H.264 encoder (VA-API, NVENC, V4L2) that was proven to
//! work on this machine by encoding two frames at start-up; how each element is set up for
//! realtime streaming, and how its bitrate is changed while it runs. The choice is made once
//! (`select`, pure logic with the probe injected) and kept in the agent's context
//! (`EncoderChoices`); a hardware encoder that fails in a session is dropped for software
//! (`EncoderChoices::mark_failed`). Builds no session pipeline.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use tracing::{debug, info, warn};

use crate::codec::Codec;

/// Keyframe distance in frames: keyframes are big, so they come when the viewer asks (PLI/FIR)
/// and otherwise only every 10 s at 60 fps.
pub const KEYFRAME_DISTANCE: u32 = 600;

/// How long the start-up probe of one hardware encoder may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `--encoder` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderPref {
    /// A hardware H.264 encoder if one works here, software otherwise (and for VP8/VP9).
    Auto,
    /// Software encoders only.
    Software,
    /// This element for its codec (it must work, or the agent does not start); software for
    /// the other codecs.
    Element(Kind),
}

impl std::str::FromStr for EncoderPref {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(EncoderPref::Auto),
            "software" => Ok(EncoderPref::Software),
            other => Kind::from_factory(other)
                .map(EncoderPref::Element)
                .ok_or_else(|| {
                    let known: Vec<&str> = Kind::ALL.iter().map(|k| k.factory()).collect();
                    format!(
                        "unknown encoder {other:?} (expected auto, software or one of {})",
                        known.join(", ")
                    )
                }),
        }
    }
}

/// Every encoder element the agent knows how to set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    X264,
    Vp8,
    Vp9,
    /// `vah264enc` (gstreamer1.0-plugins-bad's `va` plugin).
    Va,
    /// `vaapih264enc` (gstreamer1.0-vaapi).
    Vaapi,
    /// `nvh264enc` (gstreamer1.0-plugins-bad's `nvcodec` plugin).
    Nvenc,
    /// `v4l2h264enc` (gstreamer1.0-plugins-good; SoC encoders such as the Raspberry Pi's).
    V4l2,
}

/// Hardware H.264 encoders, in the order `--encoder auto` tries them.
pub const HARDWARE_H264: [Kind; 4] = [Kind::Va, Kind::Vaapi, Kind::Nvenc, Kind::V4l2];

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::X264,
        Kind::Vp8,
        Kind::Vp9,
        Kind::Va,
        Kind::Vaapi,
        Kind::Nvenc,
        Kind::V4l2,
    ];

    /// The GStreamer element name.
    pub fn factory(self) -> &'static str {
        match self {
            Kind::X264 => "x264enc",
            Kind::Vp8 => "vp8enc",
            Kind::Vp9 => "vp9enc",
            Kind::Va => "vah264enc",
            Kind::Vaapi => "vaapih264enc",
            Kind::Nvenc => "nvh264enc",
            Kind::V4l2 => "v4l2h264enc",
        }
    }

    pub fn from_factory(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.factory() == name)
    }

    pub fn codec(self) -> Codec {
        match self {
            Kind::Vp8 => Codec::Vp8,
            Kind::Vp9 => Codec::Vp9,
            _ => Codec::H264,
        }
    }

    pub fn software(codec: Codec) -> Kind {
        match codec {
            Codec::H264 => Kind::X264,
            Codec::Vp8 => Kind::Vp8,
            Codec::Vp9 => Kind::Vp9,
        }
    }

    pub fn is_hardware(self) -> bool {
        matches!(self, Kind::Va | Kind::Vaapi | Kind::Nvenc | Kind::V4l2)
    }

    /// The realtime settings, as (property, value) in GStreamer's string syntax, bitrate
    /// included: no lookahead, no B-frames, fastest preset, constant bitrate, keyframes every
    /// `KEYFRAME_DISTANCE` frames. Hardware settings that an element version lacks are skipped.
    pub fn settings(self, kbps: u32) -> Vec<(&'static str, String)> {
        let s = |k: &'static str, v: &str| (k, v.to_owned());
        let gop = KEYFRAME_DISTANCE.to_string();
        let mut out = match self {
            Kind::X264 => vec![
                s("tune", "zerolatency"),
                s("speed-preset", "ultrafast"),
                s("key-int-max", &gop),
                s("bframes", "0"),
                s("threads", "2"),
                // A 600 ms VBV (the default) lets one frame burst far past what a capped link
                // drains before its queue overflows.
                s("vbv-buf-capacity", "200"),
            ],
            Kind::Vp8 | Kind::Vp9 => {
                let mut v = vec![
                    s("deadline", "1"),
                    s("cpu-used", "8"),
                    s("lag-in-frames", "0"),
                    s("end-usage", "cbr"),
                    s("keyframe-max-dist", &gop),
                    s("buffer-initial-size", "100"),
                    s("buffer-optimal-size", "120"),
                    s("buffer-size", "150"),
                ];
                if self == Kind::Vp8 {
                    // One thread: libvpx's VP8 worker threads spin while they wait for each
                    // other, and on a busy 2-core VM that cost 4x the CPU of one thread for the
                    // same frames (150 static 720p frames: 4.4 s of CPU with 2 threads, 0.9 s
                    // with 1) and made latency worse.
                    v.push(s("threads", "1"));
                    v.push(s("error-resilient", "partitions"));
                    // Drop frames rather than overshoot the target: at 60 fps the busy test
                    // picture needs more than a 1 Mbit/s cap allows even at the coarsest
                    // quantizer; without dropping, VP8 froze for 2-8 s in every run under that
                    // cap (docs/benchmarks.md).
                    v.push(s("dropframe-threshold", "25"));
                } else {
                    v.push(s("threads", "2"));
                    // Row-based multithreading and 4 tile columns (log2 = 2) so both cores work
                    // on one frame; cyclic-refresh adaptive quantization as in libwebrtc's
                    // realtime VP9.
                    v.extend([
                        s("row-mt", "true"),
                        s("tile-columns", "2"),
                        s("aq-mode", "3"),
                        s("frame-parallel-decoding", "false"),
                    ]);
                }
                v
            }
            Kind::Va => vec![
                s("rate-control", "cbr"),
                s("key-int-max", &gop),
                s("b-frames", "0"),
                s("ref-frames", "1"),
                s("target-usage", "7"),
            ],
            Kind::Vaapi => vec![
                s("rate-control", "cbr"),
                s("keyframe-period", &gop),
                s("max-bframes", "0"),
                s("refs", "1"),
                s("quality-level", "7"),
            ],
            Kind::Nvenc => vec![
                s("preset", "low-latency-hp"),
                s("rc-mode", "cbr"),
                s("gop-size", &gop),
                s("bframes", "0"),
                s("rc-lookahead", "0"),
                s("zerolatency", "true"),
            ],
            Kind::V4l2 => vec![],
        };
        out.push(self.bitrate_setting(kbps));
        out
    }

    /// The one property that sets the bitrate, and its value for `kbps`.
    pub fn bitrate_setting(self, kbps: u32) -> (&'static str, String) {
        match self {
            // kbit/s; x264enc reconfigures itself when it changes while playing.
            Kind::X264 | Kind::Va | Kind::Vaapi | Kind::Nvenc => ("bitrate", kbps.to_string()),
            // bit/s (a gint).
            Kind::Vp8 | Kind::Vp9 => (
                "target-bitrate",
                kbps.saturating_mul(1000).min(i32::MAX as u32).to_string(),
            ),
            // V4L2 has no bitrate property: driver controls, applied when the device opens.
            Kind::V4l2 => (
                "extra-controls",
                format!(
                    "controls,video_bitrate=(int){},video_b_frames=(int)0,\
                     video_gop_size=(int){KEYFRAME_DISTANCE},\
                     h264_i_frame_period=(int){KEYFRAME_DISTANCE}",
                    kbps.saturating_mul(1000).min(i32::MAX as u32)
                ),
            ),
        }
    }

    /// Which API the element uses, for the log.
    pub fn api(self) -> &'static str {
        match self {
            Kind::X264 | Kind::Vp8 | Kind::Vp9 => "software",
            Kind::Va => "hardware, VA-API",
            Kind::Vaapi => "hardware, VA-API (gstreamer-vaapi)",
            Kind::Nvenc => "hardware, NVENC",
            Kind::V4l2 => "hardware, V4L2",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.factory())
    }
}

/// Sets `prop` from GStreamer's string syntax if the element has it and the value fits;
/// otherwise says why. Never panics (unlike `set_property`), since hardware elements differ
/// between versions and drivers.
pub fn try_set(element: &gst::Element, prop: &str, value: &str) -> Result<(), String> {
    use gst::prelude::GstValueExt;
    let pspec = element
        .find_property(prop)
        .ok_or_else(|| format!("no property {prop:?}"))?;
    if !pspec.flags().contains(gst::glib::ParamFlags::WRITABLE) {
        return Err(format!("property {prop:?} is read-only"));
    }
    let v = gst::glib::Value::deserialize_with_pspec(value, &pspec)
        .map_err(|_| format!("{prop}={value} is not a valid value"))?;
    element.set_property_from_value(prop, &v);
    Ok(())
}

/// Changes the bitrate of a running encoder made by `make` (the element named "encoder").
pub fn set_bitrate_kbps(encoder: &gst::Element, kbps: u32) {
    let Some(kind) = encoder
        .factory()
        .and_then(|f| Kind::from_factory(f.name().as_str()))
    else {
        return;
    };
    let (prop, value) = kind.bitrate_setting(kbps);
    if let Err(e) = try_set(encoder, prop, &value) {
        warn!("{kind}: cannot set the bitrate: {e}");
    }
}

/// The elements `build` makes, in order, with handles to the ones their users set up or watch.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// Every element, in link order.
    pub elements: Vec<gst::Element>,
    /// The encoder element itself (`kind`'s factory).
    pub encoder: gst::Element,
    pub kind: Kind,
    /// `h264parse` (H.264 only).
    pub parser: Option<gst::Element>,
}

/// The elements that turn I420 frames into the codec's stream for `kind` (`build`'s elements).
pub fn make(kind: Kind, kbps: u32) -> Result<Vec<gst::Element>, String> {
    build(kind, kbps).map(|e| e.elements)
}

/// The elements that turn I420 frames into the codec's stream for `kind`: the encoder (named
/// "encoder" for the logs, set up by `Kind::settings`), and for H.264 a constrained-baseline caps
/// filter and `h264parse`. A hardware encoder gets a `videoconvert` in front (most want NV12).
pub fn build(kind: Kind, kbps: u32) -> Result<Encoding, String> {
    let element = |factory: &str| {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|_| format!("{factory} is not installed"))
    };
    let mut out = Vec::new();
    if kind.is_hardware() {
        out.push(element("videoconvert")?);
    }
    let enc = gst::ElementFactory::make(kind.factory())
        .name("encoder")
        .build()
        .map_err(|_| format!("{kind} is not installed"))?;
    for (prop, value) in kind.settings(kbps) {
        if let Err(e) = try_set(&enc, prop, &value) {
            if kind.is_hardware() {
                debug!("{kind}: setting skipped: {e}");
            } else {
                return Err(format!("{kind}: {e}"));
            }
        }
    }
    for (prop, value) in extra_settings(std::env::var("VDESK_ENCODER_EXTRA").ok().as_deref())? {
        try_set(&enc, &prop, &value).map_err(|e| format!("VDESK_ENCODER_EXTRA: {kind}: {e}"))?;
    }
    out.push(enc.clone());
    let mut parser = None;
    if kind.codec() == Codec::H264 {
        let profile = element("capsfilter")?;
        // Baseline without B-frames is what a constrained-baseline decoder needs; some hardware
        // encoders only name it "baseline".
        let caps = if kind.is_hardware() {
            "video/x-h264,profile=(string){constrained-baseline,baseline}"
        } else {
            "video/x-h264,profile=(string)constrained-baseline"
        };
        let caps = caps
            .parse::<gst::Caps>()
            .map_err(|e| format!("bad caps: {e}"))?;
        profile.set_property("caps", caps);
        let parse = element("h264parse")?;
        out.extend([profile, parse.clone()]);
        parser = Some(parse);
    }
    Ok(Encoding {
        elements: out,
        encoder: enc,
        kind,
        parser,
    })
}

/// Extra encoder properties for measurements (`VDESK_ENCODER_EXTRA`, e.g.
/// `sliced-threads=true,threads=1`), applied after `Kind::settings`: the benchmark compares
/// encoder settings with it (bench/README.md "Where the time goes") without a rebuild. Not a
/// product setting; a property the encoder lacks or a bad value fails the session's encoder with
/// a clear message.
pub fn extra_settings(spec: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    spec.split(',')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!(
                "VDESK_ENCODER_EXTRA: {kv:?} is not PROPERTY=VALUE (comma-separated)"
            )),
        })
        .collect()
}

/// Opens a hardware encoder of a built pipeline (state Ready: where VA-API, NVENC and V4L2
/// elements open their device), so a session finds out before it starts that it must use
/// software. Software encoders are not touched.
pub fn open(encoder: &gst::Element) -> Result<(), String> {
    let hardware = encoder
        .factory()
        .and_then(|f| Kind::from_factory(f.name().as_str()))
        .is_some_and(Kind::is_hardware);
    if !hardware {
        return Ok(());
    }
    encoder
        .set_state(gst::State::Ready)
        .map(|_| ())
        .map_err(|_| format!("{} could not open its device", encoder.name()))
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    NotInstalled,
    Failed(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::NotInstalled => f.write_str("not installed"),
            ProbeError::Failed(why) => f.write_str(why),
        }
    }
}

/// Encodes two test frames with `kind`, set up as a session would set it up: an installed
/// hardware element often fails without its device or driver, which only running it shows.
pub fn probe(kind: Kind) -> Result<(), ProbeError> {
    if gst::ElementFactory::find(kind.factory()).is_none() {
        return Err(ProbeError::NotInstalled);
    }
    let chain = make(kind, 2000).map_err(ProbeError::Failed)?;
    probe_chain(chain, PROBE_TIMEOUT).map_err(ProbeError::Failed)
}

/// `videotestsrc num-buffers=2 ! I420 640x360 ! chain ! fakesink`, run until end of stream, an
/// error or `timeout`; the pipeline is stopped in every case.
pub fn probe_chain(chain: Vec<gst::Element>, timeout: Duration) -> Result<(), String> {
    struct Stop(gst::Pipeline);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.set_state(gst::State::Null);
        }
    }
    let make = |f: &str| {
        gst::ElementFactory::make(f)
            .build()
            .map_err(|_| format!("{f} is not installed"))
    };
    let pipeline = Stop(gst::Pipeline::with_name("encoder-probe"));
    let src = make("videotestsrc")?;
    src.set_property("num-buffers", 2i32);
    let caps = make("capsfilter")?;
    caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", 640i32)
            .field("height", 360i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build(),
    );
    let sink = make("fakesink")?;
    let mut all = vec![src, caps];
    all.extend(chain);
    all.push(sink);
    pipeline.0.add_many(&all).map_err(|e| e.to_string())?;
    gst::Element::link_many(&all).map_err(|e| format!("cannot link: {e}"))?;
    let bus = pipeline.0.bus().ok_or("pipeline without a bus")?;
    let started = pipeline.0.set_state(gst::State::Playing);
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(timeout.as_nanos().min(u64::MAX as u128) as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) if started.is_ok() => Ok(()),
        Some(gst::MessageView::Error(err)) => {
            let debug = err
                .debug()
                .map(|d| format!(" ({})", d.lines().last().unwrap_or("")))
                .unwrap_or_default();
            Err(format!("{}{debug}", err.error()))
        }
        _ if started.is_err() => Err("could not start".into()),
        _ => Err(format!(
            "encoded nothing within {} s",
            timeout.as_secs_f32()
        )),
    }
}

/// The encoder each codec uses, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub codec: Codec,
    pub kind: Kind,
    pub why: String,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.codec {
            Codec::H264 => "H.264",
            other => other.encoding_name(),
        };
        write!(f, "{name} encoder: {} ({})", self.kind, self.why)
    }
}

/// `--encoder ELEMENT` named an encoder that does not work here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--encoder {kind}: it does not work on this machine: {reason}")]
pub struct SelectError {
    pub kind: Kind,
    pub reason: ProbeError,
}

/// Chooses the encoder of each of `codecs`: `hardware` are the candidates `auto` tries in order
/// (for H.264), `probe` tells whether one works (`probe` above, or a stand-in in tests).
pub fn select(
    pref: &EncoderPref,
    codecs: &[Codec],
    hardware: &[Kind],
    probe: &mut dyn FnMut(Kind) -> Result<(), ProbeError>,
) -> Result<Vec<Choice>, SelectError> {
    let mut out = Vec::new();
    for &codec in codecs {
        let software = Kind::software(codec);
        let choice = match pref {
            EncoderPref::Software => Choice {
                codec,
                kind: software,
                why: "software; --encoder software".into(),
            },
            EncoderPref::Element(kind) if kind.codec() == codec => {
                if kind.is_hardware() {
                    probe(*kind).map_err(|reason| SelectError {
                        kind: *kind,
                        reason,
                    })?;
                }
                Choice {
                    codec,
                    kind: *kind,
                    why: format!("{}; --encoder {kind}", kind.api()),
                }
            }
            EncoderPref::Element(_) => Choice {
                codec,
                kind: software,
                why: "software; --encoder names an encoder of another codec".into(),
            },
            EncoderPref::Auto => auto(codec, hardware, probe),
        };
        out.push(choice);
    }
    Ok(out)
}

fn auto(
    codec: Codec,
    hardware: &[Kind],
    probe: &mut dyn FnMut(Kind) -> Result<(), ProbeError>,
) -> Choice {
    let software = Kind::software(codec);
    let candidates: Vec<Kind> = hardware
        .iter()
        .copied()
        .filter(|k| k.codec() == codec)
        .collect();
    if candidates.is_empty() {
        return Choice {
            codec,
            kind: software,
            why: format!("software; no hardware {} encoder is tried", codec),
        };
    }
    let mut failed = Vec::new();
    let mut missing = Vec::new();
    for kind in candidates {
        match probe(kind) {
            Ok(()) => {
                return Choice {
                    codec,
                    kind,
                    why: format!("{}; encoded test frames at start-up", kind.api()),
                }
            }
            Err(ProbeError::NotInstalled) => missing.push(kind.factory()),
            Err(ProbeError::Failed(why)) => failed.push(format!("{kind}: {why}")),
        }
    }
    let mut why = String::from("software; no hardware encoder works here");
    if !failed.is_empty() {
        why.push_str(&format!(": {}", failed.join("; ")));
    }
    if !missing.is_empty() {
        let sep = if failed.is_empty() { ": " } else { "; " };
        why.push_str(&format!("{sep}not installed: {}", missing.join(", ")));
    }
    Choice {
        codec,
        kind: software,
        why,
    }
}

/// The encoder each codec uses in one agent (`context::AgentContext`): the start-up choice, then
/// software for a codec whose hardware encoder failed in a session.
#[derive(Debug, Default)]
pub struct EncoderChoices(Mutex<Vec<Choice>>);

impl EncoderChoices {
    /// Makes `choices` the encoders every later stream uses, and logs one line per codec.
    pub fn new(choices: Vec<Choice>) -> Self {
        for c in &choices {
            info!("{c}");
        }
        Self(Mutex::new(choices))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Choice>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The encoder streams of `codec` use now: the choice made, software if there is none.
    pub fn for_codec(&self, codec: Codec) -> Kind {
        self.lock()
            .iter()
            .find(|c| c.codec == codec)
            .map(|c| c.kind)
            .unwrap_or(Kind::software(codec))
    }

    /// The choice for `codec`, if one was made.
    pub fn choice(&self, codec: Codec) -> Option<Choice> {
        self.lock().iter().find(|c| c.codec == codec).cloned()
    }

    /// A hardware encoder failed in a session: this and every later stream of its codec use
    /// software. Logs once.
    pub fn mark_failed(&self, kind: Kind, reason: &str) {
        if !kind.is_hardware() {
            return;
        }
        let codec = kind.codec();
        let mut choices = self.lock();
        let software = Kind::software(codec);
        let new = Choice {
            codec,
            kind: software,
            why: format!("software; {kind} failed in a session: {reason}"),
        };
        match choices.iter_mut().find(|c| c.codec == codec) {
            Some(c) if c.kind == kind => {
                warn!("{new}");
                *c = new;
            }
            Some(_) => {}
            None => {
                warn!("{new}");
                choices.push(new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn probe_table<'a>(
        table: &'static [(Kind, Result<(), &'static str>)],
        log: &'a mut Vec<Kind>,
    ) -> impl FnMut(Kind) -> Result<(), ProbeError> + 'a {
        move |k| {
            log.push(k);
            match table.iter().find(|(t, _)| *t == k) {
                None => Err(ProbeError::NotInstalled),
                Some((_, Ok(()))) => Ok(()),
                Some((_, Err(e))) => Err(ProbeError::Failed((*e).into())),
            }
        }
    }

    #[test]
    fn auto_takes_the_first_hardware_encoder_that_works() {
        let mut tried = Vec::new();
        let table = &[
            (Kind::Vaapi, Err("no VA display")),
            (Kind::Nvenc, Ok(())),
            (Kind::V4l2, Ok(())),
        ];
        let mut probe = probe_table(table, &mut tried);
        let c = select(
            &EncoderPref::Auto,
            &[Codec::H264, Codec::Vp8],
            &HARDWARE_H264,
            &mut probe,
        )
        .unwrap();
        assert_eq!(c[0].kind, Kind::Nvenc);
        assert!(c[0].why.contains("NVENC"), "{}", c[0]);
        assert_eq!(c[1].kind, Kind::Vp8, "no hardware VP8 candidate");
        drop(probe);
        assert_eq!(
            tried,
            vec![Kind::Va, Kind::Vaapi, Kind::Nvenc],
            "in order, stops at the first that works; VP8 probes nothing"
        );
    }

    #[test]
    fn auto_falls_back_to_software_and_says_why() {
        let mut tried = Vec::new();
        let table = &[(Kind::Va, Err("no VA display"))];
        let mut probe = probe_table(table, &mut tried);
        let c = select(
            &EncoderPref::Auto,
            &[Codec::H264],
            &HARDWARE_H264,
            &mut probe,
        )
        .unwrap();
        assert_eq!(c[0].kind, Kind::X264);
        assert_eq!(
            c[0].to_string(),
            "H.264 encoder: x264enc (software; no hardware encoder works here: \
             vah264enc: no VA display; not installed: vaapih264enc, nvh264enc, v4l2h264enc)"
        );
        let mut none = |_| Err(ProbeError::NotInstalled);
        let c = select(
            &EncoderPref::Auto,
            &[Codec::H264],
            &HARDWARE_H264,
            &mut none,
        )
        .unwrap();
        assert!(
            c[0].why.ends_with(
                "works here: not installed: vah264enc, vaapih264enc, nvh264enc, v4l2h264enc"
            ),
            "{}",
            c[0].why
        );
    }

    #[test]
    fn software_probes_nothing() {
        let mut probe = |k: Kind| -> Result<(), ProbeError> { panic!("probed {k}") };
        let c = select(
            &EncoderPref::Software,
            &[Codec::H264, Codec::Vp9],
            &HARDWARE_H264,
            &mut probe,
        )
        .unwrap();
        assert_eq!((c[0].kind, c[1].kind), (Kind::X264, Kind::Vp9));
    }

    #[test]
    fn a_named_encoder_must_work() {
        let mut broken = |_| Err(ProbeError::Failed("no CUDA device".into()));
        let err = select(
            &EncoderPref::Element(Kind::Nvenc),
            &[Codec::Vp8, Codec::H264],
            &HARDWARE_H264,
            &mut broken,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--encoder nvh264enc: it does not work on this machine: no CUDA device"
        );
        let mut works = |k| {
            assert_eq!(k, Kind::Nvenc, "only the named one is probed");
            Ok(())
        };
        let c = select(
            &EncoderPref::Element(Kind::Nvenc),
            &[Codec::Vp8, Codec::H264],
            &HARDWARE_H264,
            &mut works,
        )
        .unwrap();
        assert_eq!((c[0].kind, c[1].kind), (Kind::Vp8, Kind::Nvenc));
    }

    #[test]
    fn extra_encoder_settings_parse_and_refuse_garbage() {
        assert_eq!(extra_settings(None), Ok(vec![]));
        assert_eq!(extra_settings(Some(" ")), Ok(vec![]));
        assert_eq!(
            extra_settings(Some("sliced-threads=true, threads = 1")),
            Ok(vec![
                ("sliced-threads".to_owned(), "true".to_owned()),
                ("threads".to_owned(), "1".to_owned())
            ])
        );
        let err = extra_settings(Some("threads")).unwrap_err();
        assert!(err.contains("PROPERTY=VALUE"), "{err}");
        assert!(extra_settings(Some("=1")).is_err());
        // The values the benchmark uses exist on the real x264enc.
        gst::init().unwrap();
        let chain = make(Kind::X264, 1500).unwrap();
        let enc = chain.iter().find(|e| e.name() == "encoder").unwrap();
        for spec in [
            "sliced-threads=true",
            "intra-refresh=true",
            "threads=1",
            "speed-preset=superfast",
        ] {
            for (k, v) in extra_settings(Some(spec)).unwrap() {
                try_set(enc, &k, &v).unwrap();
            }
        }
        assert!(try_set(enc, "no-such-property", "1").is_err());
    }

    #[test]
    fn encoder_names_parse() {
        assert_eq!("auto".parse(), Ok(EncoderPref::Auto));
        assert_eq!("software".parse(), Ok(EncoderPref::Software));
        assert_eq!("vah264enc".parse(), Ok(EncoderPref::Element(Kind::Va)));
        let err = "openh264enc".parse::<EncoderPref>().unwrap_err();
        assert!(err.contains("nvh264enc"), "{err}");
    }

    #[test]
    fn every_encoder_has_realtime_settings_and_a_bitrate() {
        for kind in Kind::ALL {
            let s = kind.settings(3000);
            let has = |p: &str| s.iter().any(|(k, _)| *k == p);
            let (rate, value) = kind.bitrate_setting(3000);
            assert!(has(rate), "{kind}");
            assert!(value.contains("3000"), "{kind}: {value}");
            let no_b = ["bframes", "b-frames", "max-bframes", "lag-in-frames"]
                .iter()
                .any(|p| has(p))
                || value.contains("video_b_frames=(int)0");
            assert!(no_b, "{kind}: no B-frames / lag setting");
            let gop = s
                .iter()
                .any(|(_, v)| v.contains(&KEYFRAME_DISTANCE.to_string()));
            assert!(gop, "{kind}: keyframe distance");
        }
    }

    /// The software encoders are installed here: every setting must exist and parse.
    #[test]
    fn software_settings_apply_to_the_real_elements() {
        gst::init().unwrap();
        for kind in [Kind::X264, Kind::Vp8, Kind::Vp9] {
            let chain = make(kind, 1500).unwrap();
            let enc = chain.iter().find(|e| e.name() == "encoder").unwrap();
            for (prop, value) in kind.settings(1500) {
                try_set(enc, prop, &value).unwrap();
            }
            set_bitrate_kbps(enc, 700);
            let (prop, want) = kind.bitrate_setting(700);
            let got = enc.property_value(prop);
            let got = got
                .get::<u32>()
                .map(|v| v.to_string())
                .or_else(|_| got.get::<i32>().map(|v| v.to_string()))
                .unwrap();
            assert_eq!(got, want, "{kind}");
        }
        let enc = make(Kind::X264, 1000).unwrap().remove(0);
        assert!(try_set(&enc, "no-such-thing", "1").is_err());
        assert!(try_set(&enc, "bitrate", "lots").is_err());
    }

    #[test]
    fn the_probe_runs_a_real_pipeline() {
        gst::init().unwrap();
        assert_eq!(probe(Kind::X264), Ok(()));
        assert_eq!(probe(Kind::Vp9), Ok(()));
        if gst::ElementFactory::find("nvh264enc").is_none() {
            assert_eq!(probe(Kind::Nvenc), Err(ProbeError::NotInstalled));
        }
        // A chain that fails once frames flow (here: caps that cannot be negotiated, as a
        // hardware encoder without its device fails) gives GStreamer's reason.
        let enc = make(Kind::X264, 1000).unwrap().remove(0);
        let caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                "video/x-h264,width=(int)1920".parse::<gst::Caps>().unwrap(),
            )
            .build()
            .unwrap();
        let err = probe_chain(vec![enc, caps], PROBE_TIMEOUT).unwrap_err();
        assert!(!err.is_empty() && !err.contains("within"), "{err}");
    }

    #[test]
    fn a_failed_hardware_encoder_gives_way_to_software() {
        let choices = EncoderChoices::new(vec![Choice {
            codec: Codec::H264,
            kind: Kind::Va,
            why: "test".into(),
        }]);
        assert_eq!(choices.for_codec(Codec::H264), Kind::Va);
        assert_eq!(
            choices.for_codec(Codec::Vp9),
            Kind::Vp9,
            "no choice made: software"
        );
        choices.mark_failed(Kind::X264, "ignored: software never fails over");
        assert_eq!(choices.for_codec(Codec::H264), Kind::Va);
        choices.mark_failed(Kind::Va, "no VA display");
        assert_eq!(choices.for_codec(Codec::H264), Kind::X264);
        assert!(choices
            .choice(Codec::H264)
            .unwrap()
            .why
            .contains("vah264enc failed in a session"));
        assert_eq!(
            EncoderChoices::default().for_codec(Codec::H264),
            Kind::X264,
            "another agent's choices are its own"
        );
    }
}
