//! Thumbnails for the controller's admin page (`thumbnailRequest` -> `thumbnail`): one still of
//! the X screen, scaled to `max_width` pixels wide (at most `MAX_THUMBNAIL_SIDE`), as a JPEG.
//! A one-shot GStreamer pipeline (`ximagesrc num-buffers=1 ! videoconvert ! videoscale ! jpegenc
//! ! appsink`) on a worker thread: no video stream, nothing kept, one at a time (a request while
//! one is being made is dropped). The controller caches what it gets for a few seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use vdesk_protocol::{
    AgentInfo, AgentToController, EncoderInfo, MAX_THUMBNAIL_BYTES, MAX_THUMBNAIL_SIDE,
};

use crate::codec::Codec;

/// A JPEG still: width, height, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Still {
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

/// One still of `display`, `max_width` pixels wide (clamped to 16..=`MAX_THUMBNAIL_SIDE`), the
/// height keeping the screen's aspect. Blocks for the capture (well under a second).
pub fn capture(display: &str, max_width: u32) -> Result<Still, String> {
    gst::init().map_err(|e| format!("GStreamer: {e}"))?;
    let width = max_width.clamp(16, MAX_THUMBNAIL_SIDE);
    let launch = format!(
        "ximagesrc name=src use-damage=false show-pointer=true num-buffers=1 ! videoconvert ! \
         videoscale ! video/x-raw,width={width},pixel-aspect-ratio=1/1 ! jpegenc quality=70 ! \
         appsink name=sink sync=false max-buffers=1"
    );
    let pipeline = gst::parse::launch(&launch)
        .map_err(|e| format!("thumbnail pipeline: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "thumbnail pipeline is not a pipeline".to_owned())?;
    let result = run(&pipeline, display);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(pipeline: &gst::Pipeline, display: &str) -> Result<Still, String> {
    let src = pipeline
        .by_name("src")
        .ok_or_else(|| "no ximagesrc".to_owned())?;
    src.set_property("display-name", display);
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| "no appsink".to_owned())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("starting the thumbnail capture on {display}: {e}"))?;
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(3))
        .ok_or_else(|| format!("no picture from X display {display} within 3 s"))?;
    let caps = sample
        .caps()
        .ok_or_else(|| "JPEG without caps".to_owned())?;
    let s = caps
        .structure(0)
        .ok_or_else(|| "JPEG caps are empty".to_owned())?;
    let dim = |f: &str| {
        s.get::<i32>(f)
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| format!("JPEG caps have no {f}"))
    };
    let (width, height) = (dim("width")?, dim("height")?);
    let buffer = sample
        .buffer()
        .ok_or_else(|| "JPEG sample is empty".to_owned())?;
    let map = buffer
        .map_readable()
        .map_err(|_| "JPEG buffer unreadable".to_owned())?;
    Ok(Still {
        width,
        height,
        jpeg: map.as_slice().to_vec(),
    })
}

/// Whether a capture is under way (one at a time).
static BUSY: AtomicBool = AtomicBool::new(false);

/// Answers a `thumbnailRequest`: captures on a worker thread and sends `thumbnail` on `tx`. A
/// request while another capture runs, or a failure, sends nothing (logged): the controller
/// keeps its last one and asks again later.
pub fn answer(display: String, max_width: u32, tx: mpsc::UnboundedSender<AgentToController>) {
    if BUSY.swap(true, Ordering::AcqRel) {
        debug!("thumbnail request dropped: one is being made");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("thumbnail".into())
        .spawn(move || {
            let made = std::panic::catch_unwind(|| capture(&display, max_width))
                .unwrap_or_else(|_| Err("the thumbnail capture panicked".into()));
            BUSY.store(false, Ordering::Release);
            match made {
                Ok(still) if still.jpeg.len() <= MAX_THUMBNAIL_BYTES => {
                    let _ = tx.send(AgentToController::Thumbnail {
                        width: still.width,
                        height: still.height,
                        jpeg: STANDARD.encode(&still.jpeg),
                    });
                }
                Ok(still) => warn!(
                    bytes = still.jpeg.len(),
                    "thumbnail larger than {MAX_THUMBNAIL_BYTES} bytes: not sent"
                ),
                Err(e) => warn!("thumbnail: {e}"),
            }
        });
    if let Err(e) = spawned {
        BUSY.store(false, Ordering::Release);
        warn!("thumbnail thread: {e}");
    }
}

/// What the `hello` says about this agent: when it started, its encoders, and that it makes
/// thumbnails.
pub fn agent_info(codecs: &[Codec], choices: &crate::encoder::EncoderChoices) -> AgentInfo {
    AgentInfo {
        started_at: Some(started_at_ms()),
        encoders: codecs
            .iter()
            .map(|&codec| {
                let kind = choices.for_codec(codec);
                EncoderInfo {
                    codec: codec.encoding_name().to_owned(),
                    encoder: kind.factory().to_owned(),
                    hardware: kind.is_hardware(),
                }
            })
            .collect(),
        thumbnails: true,
    }
}

/// The process's start time (Unix ms), read once: the first call is at start-up.
pub fn started_at_ms() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_hello_says_when_the_agent_started_and_which_encoders_it_uses() {
        let info = agent_info(
            &[Codec::H264, Codec::Vp8],
            &crate::encoder::EncoderChoices::default(),
        );
        assert!(info.thumbnails);
        assert_eq!(info.started_at, Some(started_at_ms()));
        let names: Vec<_> = info.encoders.iter().map(|e| e.codec.as_str()).collect();
        assert_eq!(names, ["H264", "VP8"]);
        assert!(info.encoders.iter().all(|e| !e.encoder.is_empty()));
    }
}
