//! How long the agent's own stages take per frame, for the agent's `/metrics` and the benchmark's
//! breakdown of glass-to-glass latency: `capture` (from the moment the capture thread decides to
//! take a frame to the frame being in the pipeline: X damage query, `GetImage` copies, push) and
//! `encode` (from the capture element's output to the encoder's output: colour conversion, the
//! queue and the encoder, matched by timestamp). One agent's totals (sum and count, kept in its
//! `context::AgentContext`), which is what a Prometheus summary needs; a rate of sum over a rate
//! of count gives the mean per frame.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

/// A stage of the agent's pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Capture,
    Encode,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Capture, Stage::Encode];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Encode => "encode",
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    count: AtomicU64,
    nanos: AtomicU64,
}

/// Sum and count of each stage's durations.
#[derive(Debug, Default)]
pub struct StageTimes {
    capture: Totals,
    encode: Totals,
}

impl StageTimes {
    fn totals(&self, stage: Stage) -> &Totals {
        match stage {
            Stage::Capture => &self.capture,
            Stage::Encode => &self.encode,
        }
    }

    pub fn record(&self, stage: Stage, took: Duration) {
        let t = self.totals(stage);
        t.count.fetch_add(1, Ordering::Relaxed);
        t.nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (frames, total seconds) of `stage` so far.
    pub fn get(&self, stage: Stage) -> (u64, f64) {
        let t = self.totals(stage);
        (
            t.count.load(Ordering::Relaxed),
            t.nanos.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }

    /// The Prometheus text of a summary `vdesk_agent_stage_seconds` with a `stage` label.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(
            "# HELP vdesk_agent_stage_seconds Time per frame in the agent's stages, all sessions.\n\
             # TYPE vdesk_agent_stage_seconds summary\n",
        );
        for stage in Stage::ALL {
            let (count, secs) = self.get(stage);
            let label = stage.label();
            let _ = writeln!(
                out,
                "vdesk_agent_stage_seconds_sum{{stage=\"{label}\"}} {secs}"
            );
            let _ = writeln!(
                out,
                "vdesk_agent_stage_seconds_count{{stage=\"{label}\"}} {count}"
            );
        }
    }
}

/// Frames seen leaving the capture and not yet leaving the encoder, by timestamp. Bounded: a
/// frame the encoder drops (the leaky queue keeps only the newest) must not pile up.
#[derive(Debug, Default)]
struct InFlight(VecDeque<(gst::ClockTime, Instant)>);

const IN_FLIGHT_MAX: usize = 16;

impl InFlight {
    fn entered(&mut self, pts: gst::ClockTime, at: Instant) {
        if self.0.len() == IN_FLIGHT_MAX {
            self.0.pop_front();
        }
        self.0.push_back((pts, at));
    }

    /// The entry time of `pts`, forgetting it and every older frame (dropped on the way).
    fn left(&mut self, pts: gst::ClockTime) -> Option<Instant> {
        let i = self.0.iter().position(|(p, _)| *p == pts)?;
        let at = self.0.get(i).map(|(_, at)| *at);
        self.0.drain(..=i);
        at
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a probe panicked mid-update: the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Times every frame from `capture`'s src pad to `encoder`'s src pad into `times`. The colour
/// conversion and the queue keep a frame's timestamp, so frames are matched by timestamp up to
/// the encoder's input; encoders may shift output timestamps (x264enc adds an offset so that
/// decode times are never negative), so from there on they are matched in order (these encoders
/// put out exactly one frame per frame in, in order).
pub fn watch_encode(capture: &gst::Element, encoder: &gst::Element, times: Arc<StageTimes>) {
    let (Some(from), Some(enc_in), Some(enc_out)) = (
        capture.static_pad("src"),
        encoder.static_pad("sink"),
        encoder.static_pad("src"),
    ) else {
        return;
    };
    let captured = Arc::new(Mutex::new(InFlight::default()));
    let encoding: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let c = captured.clone();
    from.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        crate::guard::catch("capture timing probe", gst::PadProbeReturn::Ok, || {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                lock(&c).entered(pts, Instant::now());
            }
            gst::PadProbeReturn::Ok
        })
    });
    let e = encoding.clone();
    enc_in.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        crate::guard::catch("encoder-in timing probe", gst::PadProbeReturn::Ok, || {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                if let Some(at) = lock(&captured).left(pts) {
                    let mut fifo = lock(&e);
                    if fifo.len() == IN_FLIGHT_MAX {
                        fifo.pop_front();
                    }
                    fifo.push_back(at);
                }
            }
            gst::PadProbeReturn::Ok
        })
    });
    enc_out.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        crate::guard::catch("encoder-out timing probe", gst::PadProbeReturn::Ok, || {
            if let Some(at) = lock(&encoding).pop_front() {
                times.record(Stage::Encode, at.elapsed());
            }
            gst::PadProbeReturn::Ok
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_counts_per_stage() {
        let t = StageTimes::default();
        t.record(Stage::Capture, Duration::from_millis(2));
        t.record(Stage::Capture, Duration::from_millis(4));
        t.record(Stage::Encode, Duration::from_micros(1500));
        let (n, secs) = t.get(Stage::Capture);
        assert_eq!(n, 2);
        assert!((secs - 0.006).abs() < 1e-9);
        let mut text = String::new();
        t.render(&mut text);
        assert!(text.contains("# TYPE vdesk_agent_stage_seconds summary\n"));
        assert!(text.contains("vdesk_agent_stage_seconds_sum{stage=\"capture\"} 0.006\n"));
        assert!(text.contains("vdesk_agent_stage_seconds_count{stage=\"capture\"} 2\n"));
        assert!(text.contains("vdesk_agent_stage_seconds_sum{stage=\"encode\"} 0.0015\n"));
        assert!(text.contains("vdesk_agent_stage_seconds_count{stage=\"encode\"} 1\n"));
    }

    #[test]
    fn frames_are_matched_by_timestamp_and_dropped_ones_forgotten() {
        let mut f = InFlight::default();
        let t0 = Instant::now();
        let ts = |ms| gst::ClockTime::from_mseconds(ms);
        f.entered(ts(0), t0);
        f.entered(ts(16), t0 + Duration::from_millis(16));
        f.entered(ts(33), t0 + Duration::from_millis(33));
        // Frame 16 was dropped by the leaky queue; 33 comes out: 0 and 16 are gone with it.
        assert_eq!(f.left(ts(0)), Some(t0));
        assert_eq!(f.left(ts(33)), Some(t0 + Duration::from_millis(33)));
        assert_eq!(f.left(ts(16)), None);
        assert!(f.0.is_empty());
        // Unmatched output (a repeated timestamp) changes nothing.
        assert_eq!(f.left(ts(99)), None);
    }

    #[test]
    fn in_flight_is_bounded() {
        let mut f = InFlight::default();
        let t0 = Instant::now();
        for i in 0..100 {
            f.entered(gst::ClockTime::from_mseconds(i), t0);
        }
        assert_eq!(f.0.len(), IN_FLIGHT_MAX);
        assert_eq!(
            f.left(gst::ClockTime::from_mseconds(0)),
            None,
            "oldest forgotten"
        );
    }
}
