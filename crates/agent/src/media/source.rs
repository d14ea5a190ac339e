//! The shared pipelines of the media part, built element by element: the capture pipeline
//! (`appsrc` fed by `capture.rs`, or `ximagesrc`, into an `appsink` of raw frames) and one
//! encoder pipeline per stream (`appsrc` of raw frames -> [scale] -> convert -> leaky queue ->
//! encoder -> `appsink` of encoded frames). Frames cross from one pipeline to the next as
//! reference-counted buffers (no copy), restamped to the receiving pipeline's running time.

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{Rung, StreamKey};
use crate::capture::{self, CaptureSettings};
use crate::codec::Codec;
use crate::encoder;
use crate::pipeline::{make, CaptureMode, MediaSettings, PipelineError, PipelineGuard};
use crate::stage_timing::StageTimes;

/// The running time of `element`'s pipeline now, if it is playing.
pub(crate) fn running_time(element: &gst::Element) -> Option<gst::ClockTime> {
    if element.current_state() != gst::State::Playing {
        return None;
    }
    let now = element.clock()?.time()?;
    now.checked_sub(element.base_time()?)
}

/// `sample` with its buffer stamped `pts` (and the same caps), for another pipeline.
pub(crate) fn restamp(sample: &gst::Sample, pts: gst::ClockTime) -> Option<gst::Sample> {
    let mut buffer = sample.buffer_owned()?;
    {
        let b = buffer.make_mut();
        b.set_pts(pts);
        b.set_dts(pts);
    }
    let caps = sample.caps_owned();
    let mut builder = gst::Sample::builder().buffer(&buffer);
    if let Some(caps) = &caps {
        builder = builder.caps(caps);
    }
    Some(builder.build())
}

/// A live `appsrc` in time format that never blocks its caller: when its pipeline falls
/// `max_buffers` behind, the oldest waiting buffer goes.
pub(crate) fn live_appsrc(name: &str, max_buffers: u64) -> gst_app::AppSrc {
    let src = gst_app::AppSrc::builder().name(name).build();
    src.set_is_live(true);
    src.set_format(gst::Format::Time);
    src.set_max_buffers(max_buffers);
    src.set_block(false);
    src.set_leaky_type(gst_app::AppLeakyType::Downstream);
    src
}

fn appsink(caps: Option<gst::Caps>) -> gst_app::AppSink {
    let mut builder = gst_app::AppSink::builder()
        .name("out")
        .sync(false)
        .enable_last_sample(false);
    if let Some(caps) = caps {
        builder = builder.caps(&caps);
    }
    builder.build()
}

fn add_and_link(pipeline: &gst::Pipeline, chain: &[gst::Element]) -> Result<(), PipelineError> {
    pipeline
        .add_many(chain)
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    gst::Element::link_many(chain).map_err(|e| PipelineError::Link(e.to_string()))
}

/// The elements of the capture pipeline that the media part talks to.
pub(crate) struct CaptureParts {
    pub guard: PipelineGuard,
    /// `ximagesrc`, which must be restarted after a screen size change (`None`: damage capture).
    pub restartable: Option<gst::Element>,
    /// Raw frames out.
    pub output: gst_app::AppSink,
}

/// The capture pipeline: the screen into an `appsink` of raw BGRx frames. With `pointer` (or
/// `--capture ximagesrc`) it is `ximagesrc`, which draws the X pointer into the picture.
pub(crate) fn build_capture(
    settings: &MediaSettings,
    pointer: bool,
    stage_times: &Arc<StageTimes>,
) -> Result<CaptureParts, PipelineError> {
    let pipeline = gst::Pipeline::with_name(if pointer {
        "capture-pointer"
    } else {
        "capture"
    });
    let ximage = pointer || settings.capture == CaptureMode::Ximagesrc;
    let (mut chain, thread, restartable) = if ximage {
        let src = make("ximagesrc", Some("capture"))?;
        src.set_property("display-name", &settings.display);
        src.set_property("use-damage", false);
        src.set_property("show-pointer", pointer);
        let rate = make("capsfilter", None)?;
        rate.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field(
                    "framerate",
                    gst::Fraction::new(settings.framerate as i32, 1),
                )
                .build(),
        );
        (vec![src.clone(), rate], None, Some(src))
    } else {
        let src = gst_app::AppSrc::builder().name("capture").build();
        let thread = capture::start(
            &settings.display,
            &src,
            CaptureSettings {
                max_fps: settings.framerate,
                idle: std::time::Duration::from_secs_f64(
                    1.0 / f64::from(settings.still_fps.max(1)),
                ),
                stage_times: stage_times.clone(),
            },
        )?;
        (vec![src.upcast()], Some(thread), None)
    };
    let guard = PipelineGuard::new(pipeline.clone(), thread);
    let sink = appsink(None);
    // Raw frames are handed on at once; keep none waiting.
    sink.set_max_buffers(1);
    sink.set_drop(true);
    chain.push(sink.clone().upcast());
    add_and_link(&pipeline, &chain)?;
    Ok(CaptureParts {
        guard,
        restartable,
        output: sink,
    })
}

/// Caps of the encoded stream each codec's pipeline puts out (and a session's `appsrc` takes).
pub(crate) fn encoded_caps(codec: Codec) -> gst::Caps {
    match codec {
        Codec::H264 => gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
        Codec::Vp8 => gst::Caps::new_empty_simple("video/x-vp8"),
        Codec::Vp9 => gst::Caps::new_empty_simple("video/x-vp9"),
    }
}

/// The elements of one encoder pipeline that the media part talks to.
pub(crate) struct EncoderParts {
    pub guard: PipelineGuard,
    /// Raw frames in.
    pub input: gst_app::AppSrc,
    /// Scales the low rung (`None` on the full rung): its caps follow the screen size.
    pub scale_caps: Option<gst::Element>,
    pub encoder: gst::Element,
    /// Which encoder `encoder` is.
    pub kind: encoder::Kind,
    /// Encoded frames out.
    pub output: gst_app::AppSink,
}

/// One stream's encoder pipeline: raw frames in, `key.codec` out, at `kbps`.
pub(crate) fn build_encoder(
    key: StreamKey,
    kind: encoder::Kind,
    kbps: u32,
) -> Result<EncoderParts, PipelineError> {
    let name = format!(
        "encode-{}-{:?}{}",
        key.codec,
        key.rung,
        if key.pointer { "-pointer" } else { "" }
    )
    .to_lowercase();
    let pipeline = gst::Pipeline::with_name(&name);
    let input = live_appsrc("input", 2);
    let mut chain: Vec<gst::Element> = vec![input.clone().upcast()];
    let scale_caps = if key.rung == Rung::Low {
        let scale = make("videoscale", None)?;
        let caps = make("capsfilter", None)?;
        chain.extend([scale, caps.clone()]);
        Some(caps)
    } else {
        None
    };
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
    chain.extend([convert, i420, queue]);
    let encoding = encoder::build(kind, kbps).map_err(PipelineError::Encoder)?;
    if let Some(parse) = &encoding.parser {
        // SPS/PPS with every IDR: a viewer joining at a keyframe can decode it alone.
        parse.set_property("config-interval", -1i32);
    }
    let encoder = encoding.encoder;
    chain.extend(encoding.elements);
    let output = appsink(Some(encoded_caps(key.codec)));
    chain.push(output.clone().upcast());
    let guard = PipelineGuard::new(pipeline.clone(), None);
    add_and_link(&pipeline, &chain)?;
    Ok(EncoderParts {
        guard,
        input,
        scale_caps,
        encoder,
        kind,
        output,
    })
}

/// The low rung's picture size for a `width`×`height` screen: half, rounded to even numbers.
pub fn low_rung_size(width: i32, height: i32) -> (i32, i32) {
    let half = |v: i32| ((v / 2) & !1).max(2);
    (half(width), half(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_rung_is_half_size_and_even() {
        assert_eq!(low_rung_size(1280, 720), (640, 360));
        assert_eq!(low_rung_size(1366, 768), (682, 384));
        assert_eq!(low_rung_size(1002, 601), (500, 300));
        assert_eq!(low_rung_size(1, 1), (2, 2));
    }
}
