//! A session's stats loop: every `TICK` it asks `webrtcbin` for its stats (`get-stats`), reads
//! the video stream's send counters and the viewer's RTCP receiver report (loss, round-trip time,
//! jitter, NACK/PLI/FIR counts), feeds new reports to the `RateController` and hands the viewer's
//! bitrate target to the shared media (which sets the encoder's bitrate from its viewers' targets), and hands a `SessionStats` to a callback (the session sends it to the controller
//! and the agent's metrics registry). Every `TWCC_TICK` it also feeds the controller the
//! transport-wide congestion control windows that arrived meanwhile: the RTP session (webrtcbin's
//! `rtpbin`, session 0 with max-bundle) computes one per transport-cc feedback from the browser
//! and announces it as its `twcc-stats` property. The rate rule itself is in `rate.rs`; this file
//! is the glue. One thread per session; it ends when its `StatsTask` is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_webrtc as gst_webrtc;
use tracing::{debug, info, warn};
use vdesk_protocol::SessionStats;

use crate::codec::Codec;
use crate::rate::{Decision, LossWindow, RateController, RateLimits, Report, TwccReport};

/// How often stats are read (and the loss rule applied).
pub const TICK: Duration = Duration::from_millis(500);
/// How often transport-cc windows are fed to the rate controller.
pub const TWCC_TICK: Duration = Duration::from_millis(100);
/// Every how many ticks the callback gets a `SessionStats`.
pub const REPORT_EVERY: u32 = 4;

/// A viewer's counters: frames handed to its peer, keyframes it asked for (PLI/FIR).
#[derive(Debug, Default)]
pub struct EncoderCounters {
    pub frames: AtomicU64,
    pub keyframes_forced: AtomicU64,
}

/// The numbers read from one `get-stats` reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub nack_count: u64,
    pub pli_count: u64,
    pub fir_count: u64,
    /// From the viewer's last receiver report, if there was one.
    pub fraction_lost: Option<f64>,
    pub packets_lost: Option<i64>,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
}

fn num(s: &gst::StructureRef, field: &str) -> Option<f64> {
    let v = s.value(field).ok()?;
    v.get::<f64>()
        .ok()
        .or_else(|| v.get::<u64>().ok().map(|x| x as f64))
        .or_else(|| v.get::<i64>().ok().map(|x| x as f64))
        .or_else(|| v.get::<u32>().ok().map(f64::from))
        .or_else(|| v.get::<i32>().ok().map(f64::from))
}

/// Reads the video stream's outbound and remote-inbound stats from a `get-stats` reply. The
/// media stream is the outbound-rtp with the most packets (the RTX stream, if any, has fewer).
pub fn read(reply: &gst::StructureRef) -> Snapshot {
    use gst_webrtc::WebRTCStatsType as T;
    let mut outbound: Option<&gst::StructureRef> = None;
    let mut remotes: Vec<&gst::StructureRef> = Vec::new();
    for (_, value) in reply.iter() {
        let Ok(s) = value.get::<&gst::StructureRef>() else {
            continue;
        };
        match s.get::<T>("type") {
            Ok(T::OutboundRtp) => {
                let packets = num(s, "packets-sent").unwrap_or(0.0);
                if outbound.is_none_or(|o| num(o, "packets-sent").unwrap_or(0.0) < packets) {
                    outbound = Some(s);
                }
            }
            Ok(T::RemoteInboundRtp) => remotes.push(s),
            _ => {}
        }
    }
    let Some(out) = outbound else {
        return Snapshot::default();
    };
    let count = |f: &str| num(out, f).map(|v| v.max(0.0) as u64).unwrap_or(0);
    let mut snap = Snapshot {
        packets_sent: count("packets-sent"),
        bytes_sent: count("bytes-sent"),
        nack_count: count("nack-count"),
        pli_count: count("pli-count"),
        fir_count: count("fir-count"),
        ..Default::default()
    };
    let ssrc = num(out, "ssrc");
    let remote = remotes
        .iter()
        .find(|r| ssrc.is_some() && num(r, "ssrc") == ssrc)
        .or(remotes.first());
    if let Some(r) = remote {
        snap.fraction_lost = num(r, "fraction-lost");
        snap.packets_lost = num(r, "packets-lost").map(|v| v as i64);
        snap.rtt_ms = num(r, "round-trip-time").map(|s| s * 1000.0);
        snap.jitter_ms = num(r, "jitter").map(|s| s * 1000.0);
    }
    snap
}

/// The type of the local ICE candidate of the selected pair (`host`, `srflx`, `prflx`,
/// `relay`) in a `get-stats` reply, as webrtcbin 1.22 lays it out: the `transport` stats name
/// their `selected-candidate-pair-id`, that `candidate-pair` its `local-candidate-id`, and that
/// `local-candidate` its `candidate-type`. `None` until a pair is selected, or when a link is
/// missing; anything but the four types is `None` too.
pub fn selected_local_candidate_type(reply: &gst::StructureRef) -> Option<String> {
    use gst_webrtc::WebRTCStatsType as T;
    fn by_id<'a>(reply: &'a gst::StructureRef, id: &str) -> Option<&'a gst::StructureRef> {
        reply.value(id).ok()?.get::<&gst::StructureRef>().ok()
    }
    fn text(s: &gst::StructureRef, field: &str) -> Option<String> {
        s.get::<String>(field).ok()
    }
    let pair = reply.iter().find_map(|(_, value)| {
        let s = value.get::<&gst::StructureRef>().ok()?;
        if s.get::<T>("type").ok()? != T::Transport {
            return None;
        }
        let pair = by_id(reply, &text(s, "selected-candidate-pair-id")?)?;
        (pair.get::<T>("type").ok()? == T::CandidatePair).then_some(pair)
    })?;
    let local = by_id(reply, &text(pair, "local-candidate-id")?)?;
    if local.get::<T>("type").ok()? != T::LocalCandidate {
        return None;
    }
    let kind = text(local, "candidate-type")?;
    matches!(kind.as_str(), "host" | "srflx" | "prflx" | "relay").then_some(kind)
}

/// Reads one `twcc-stats` structure (`RTPTWCCStats`: bitrate-sent and bitrate-recv in bit/s,
/// packets-sent). `None` when a field is missing or the window is empty.
pub fn read_twcc(s: &gst::StructureRef) -> Option<TwccReport> {
    let sent = num(s, "bitrate-sent")?;
    let recv = num(s, "bitrate-recv")?;
    let packets = num(s, "packets-sent")?;
    (packets > 0.0).then(|| TwccReport {
        sent_kbps: sent / 1000.0,
        recv_kbps: recv / 1000.0,
        packets: packets.min(f64::from(u32::MAX)) as u32,
    })
}

/// Transport-cc windows announced by the RTP session, waiting for the stats thread.
type TwccQueue = Arc<std::sync::Mutex<Vec<(Instant, TwccReport)>>>;

/// Connects to the `twcc-stats` notifications of `webrtcbin`'s RTP session 0 (in `rtpbin`, the
/// session pipeline's handle to it), once it exists (after the offer is applied). Returns whether
/// it is connected.
fn watch_twcc(rtpbin: &gst::Element, queue: &TwccQueue) -> bool {
    let Some(session) = rtpbin.emit_by_name::<Option<gst::Element>>("get-session", &[&0u32]) else {
        return false;
    };
    if session.find_property("twcc-stats").is_none() {
        return true; // Nothing to watch; do not look again.
    }
    let queue = queue.clone();
    let last = std::sync::Mutex::new(None::<(f64, f64)>);
    session.connect_notify(Some("twcc-stats"), move |session, _| {
        crate::guard::catch("notify::twcc-stats", (), || {
            let stats = session.property::<Option<gst::Structure>>("twcc-stats");
            if let Some(report) = stats.as_deref().and_then(read_twcc) {
                // When a feedback leaves no complete window (say every recent packet was lost), the
                // session announces its previous window again: that is no new information, and
                // counting it kept an old overuse alive after the link had cleared.
                let rates = Some((report.sent_kbps, report.recv_kbps));
                if std::mem::replace(&mut *last.lock().unwrap_or_else(|p| p.into_inner()), rates)
                    == rates
                {
                    return;
                }
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                // The stats thread drains it every `TWCC_TICK`; bound it anyway.
                if q.len() < 256 {
                    q.push((Instant::now(), report));
                }
            }
        })
    });
    true
}

/// Where a viewer's bitrate target goes (the shared media: `media::Viewer`).
pub trait RateTarget: Send + Sync + 'static {
    fn set_target_kbps(&self, kbps: u32);
}

/// Where the viewer's bitrate target is set, and its codec (for the stats).
#[derive(Clone)]
pub struct EncoderControl {
    pub target: Arc<dyn RateTarget>,
    pub codec: Codec,
}

impl std::fmt::Debug for EncoderControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderControl")
            .field("codec", &self.codec)
            .finish()
    }
}

impl EncoderControl {
    fn set_kbps(&self, kbps: u32) {
        self.target.set_target_kbps(kbps);
    }
}

/// Where a session's stats go.
pub trait StatsSink: Send + 'static {
    /// Every `REPORT_EVERY` ticks.
    fn report(&self, stats: SessionStats);
    /// Once, when the loop has stopped: nothing is reported after this.
    fn ended(&self);
}

/// The running loop; dropping it stops the thread and waits for it (at most a tick plus one
/// `get-stats` reply), so that nothing is reported for a session that is gone.
#[derive(Debug)]
pub struct StatsTask {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StatsTask {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the stats loop of one session.
pub fn start(
    name: String,
    webrtc: gst::Element,
    rtpbin: Option<gst::Element>,
    encoder: Option<EncoderControl>,
    counters: Arc<EncoderCounters>,
    limits: RateLimits,
    sink: impl StatsSink,
) -> StatsTask {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread_name = format!("stats-{name}");
    let spawned = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            run(
                &name,
                &webrtc,
                rtpbin.as_ref(),
                encoder.as_ref(),
                &counters,
                limits,
                &sink,
                &stopped,
            );
            sink.ended();
        });
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(thread = %thread_name, "no stats thread (no rate control, no metrics): {e}");
            None
        }
    };
    StatsTask {
        stop: Some(stop),
        thread,
    }
}

fn get_stats(webrtc: &gst::Element) -> Option<gst::Structure> {
    let (tx, rx) = mpsc::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        crate::guard::catch("get-stats reply", (), || {
            let _ = tx.send(reply.ok().flatten().map(|s| s.to_owned()));
        })
    });
    webrtc.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    rx.recv_timeout(Duration::from_secs(1)).ok().flatten()
}

#[allow(clippy::too_many_arguments)]
fn run(
    name: &str,
    webrtc: &gst::Element,
    rtpbin: Option<&gst::Element>,
    encoder: Option<&EncoderControl>,
    counters: &EncoderCounters,
    limits: RateLimits,
    sink: &dyn StatsSink,
    stopped: &mpsc::Receiver<()>,
) {
    let start = Instant::now();
    let mut rate = RateController::new(limits);
    let mut applied = rate.target_kbps();
    let mut last: Option<(Instant, Snapshot, u64)> = None;
    let mut window = LossWindow::default();
    let mut loss: Option<f64> = None;
    let mut ticks = 0u32;
    let mut logged = false;
    let codec = encoder.map(|e| e.codec.to_string()).unwrap_or_default();
    let twcc: TwccQueue = Arc::default();
    let mut twcc_watched = false;
    let mut fast_ticks = 0u32;
    let per_tick = (TICK.as_millis() / TWCC_TICK.as_millis()).max(1) as u32;
    let apply = |applied: &mut u32, target: u32, decision: Decision, why: &str| {
        if target == *applied {
            return;
        }
        if let Some(enc) = encoder {
            enc.set_kbps(target);
        }
        if matches!(decision, Decision::DecreaseLoss | Decision::DecreaseDelay)
            || target == limits.max_kbps
        {
            info!(session = %name, ?decision, "encoder bitrate {applied} -> {target} kbit/s ({why})");
        } else {
            debug!(session = %name, ?decision, "encoder bitrate {applied} -> {target} kbit/s ({why})");
        }
        *applied = target;
    };
    loop {
        match stopped.recv_timeout(TWCC_TICK) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if !twcc_watched {
            twcc_watched = rtpbin.is_none_or(|r| watch_twcc(r, &twcc));
        }
        let windows = std::mem::take(&mut *twcc.lock().unwrap_or_else(|p| p.into_inner()));
        for (at, w) in windows {
            let decision = rate.on_twcc(w, at.saturating_duration_since(start));
            if decision != Decision::Hold {
                debug!(session = %name, ?decision, sent_kbps = w.sent_kbps, recv_kbps = w.recv_kbps, packets = w.packets, "transport-cc window");
            }
            let why = format!(
                "transport-cc: sent {:.0} kbit/s, received {:.0} kbit/s",
                w.sent_kbps, w.recv_kbps
            );
            apply(&mut applied, rate.target_kbps(), decision, &why);
        }
        fast_ticks += 1;
        if !fast_ticks.is_multiple_of(per_tick) {
            continue;
        }
        // The target again, changed or not: the quality ladder's holds run on its clock.
        if let Some(enc) = encoder {
            enc.set_kbps(applied);
        }
        let Some(reply) = get_stats(webrtc) else {
            continue;
        };
        if !logged {
            debug!(session = %name, "webrtcbin stats: {reply}");
            logged = true;
        }
        let now = Instant::now();
        let snap = read(&reply);
        let frames = counters.frames.load(Ordering::Relaxed);
        let complete = snap
            .packets_lost
            .and_then(|lost| window.push(now - start, snap.packets_sent, snap.bytes_sent, lost));
        if let Some(w) = complete {
            loss = Some(w.loss);
            let decision = rate.on_report(
                Report {
                    fraction_lost: w.loss,
                    rtt_ms: snap.rtt_ms,
                    sent_kbps: Some(w.sent_kbps),
                },
                now - start,
            );
            let why = format!(
                "receiver reports: loss {:.3}, sent {:.0} kbit/s, RTT {:?} ms",
                w.loss, w.sent_kbps, snap.rtt_ms
            );
            apply(&mut applied, rate.target_kbps(), decision, &why);
        }
        let (bitrate_kbps, fps) = match &last {
            Some((t, prev, prev_frames)) => {
                let secs = now.duration_since(*t).as_secs_f64().max(1e-3);
                (
                    snap.bytes_sent.saturating_sub(prev.bytes_sent) as f64 * 8.0 / 1000.0 / secs,
                    frames.saturating_sub(*prev_frames) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        ticks += 1;
        if last.is_none() {
            last = Some((now, snap, frames));
            continue;
        }
        if ticks.is_multiple_of(REPORT_EVERY) {
            sink.report(SessionStats {
                codec: codec.clone(),
                bitrate_kbps: (bitrate_kbps * 10.0).round() / 10.0,
                target_kbps: applied,
                fps: (fps * 10.0).round() / 10.0,
                rtt_ms: snap.rtt_ms,
                fraction_lost: loss,
                packets_lost: snap.packets_lost,
                jitter_ms: snap.jitter_ms,
                packets_sent: snap.packets_sent,
                bytes_sent: snap.bytes_sent,
                nack_count: snap.nack_count,
                pli_count: snap.pli_count,
                fir_count: snap.fir_count,
                keyframes_forced: counters.keyframes_forced.load(Ordering::Relaxed),
                // The sink knows whether the viewer holds control.
                holds_control: None,
                transport: selected_local_candidate_type(&reply),
            });
            // Rates are averaged over the whole reporting period.
            last = Some((now, snap, frames));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A `get-stats` reply laid out as webrtcbin 1.22 does (gstwebrtcstats.c): transport ->
    /// selected candidate pair -> local candidate, plus an outbound stream to skip over.
    fn reply_with_pair(local_type: &str, with_pair_ids: bool) -> gst::Structure {
        use gst_webrtc::WebRTCStatsType as T;
        let local = gst::Structure::builder("ice-candidate-local_0_10.0.0.5_50000")
            .field("type", T::LocalCandidate)
            .field("address", "10.0.0.5")
            .field("port", 50000u32)
            .field("candidate-type", local_type)
            .build();
        let remote = gst::Structure::builder("ice-candidate-remote_0_10.0.0.9_40000")
            .field("type", T::RemoteCandidate)
            .field("candidate-type", "host")
            .build();
        let mut pair = gst::Structure::builder("ice-candidate-pair_transport0")
            .field("type", T::CandidatePair)
            .build();
        if with_pair_ids {
            pair.set("local-candidate-id", "ice-candidate-local_0_10.0.0.5_50000");
            pair.set(
                "remote-candidate-id",
                "ice-candidate-remote_0_10.0.0.9_40000",
            );
        }
        let transport = gst::Structure::builder("transport-stats_dtls0")
            .field("type", T::Transport)
            .field(
                "selected-candidate-pair-id",
                "ice-candidate-pair_transport0",
            )
            .build();
        let outbound = gst::Structure::builder("rtp-outbound-stream-stats_1")
            .field("type", T::OutboundRtp)
            .field("packets-sent", 10u64)
            .build();
        gst::Structure::builder("application/x-webrtc-stats")
            .field("rtp-outbound-stream-stats_1", outbound)
            .field("transport-stats_dtls0", transport)
            .field("ice-candidate-pair_transport0", pair)
            .field("ice-candidate-local_0_10.0.0.5_50000", local)
            .field("ice-candidate-remote_0_10.0.0.9_40000", remote)
            .build()
    }

    #[test]
    fn reads_the_local_candidate_type_of_the_selected_pair() {
        gst::init().unwrap();
        for kind in ["host", "srflx", "prflx", "relay"] {
            assert_eq!(
                selected_local_candidate_type(&reply_with_pair(kind, true)).as_deref(),
                Some(kind)
            );
        }
        // No pair selected yet: webrtcbin leaves the candidate ids out.
        assert_eq!(
            selected_local_candidate_type(&reply_with_pair("host", false)),
            None
        );
        // Not one of the four types.
        assert_eq!(
            selected_local_candidate_type(&reply_with_pair("<b>bogus</b>", true)),
            None
        );
        // A reply without transport stats (before negotiation).
        let empty = gst::Structure::builder("application/x-webrtc-stats").build();
        assert_eq!(selected_local_candidate_type(&empty), None);
    }

    #[test]
    fn reads_the_rtp_sessions_twcc_stats() {
        gst::init().unwrap();
        // As rtpsession 1.22 builds it (rtpstats.c, rtp_twcc_stats_get_stats_structure).
        let s = gst::Structure::builder("RTPTWCCStats")
            .field("bitrate-sent", 3_000_000u32)
            .field("bitrate-recv", 2_000_000u32)
            .field("packets-sent", 120u32)
            .field("packets-recv", 110u32)
            .field("packet-loss-pct", 8.3f64)
            .field("avg-delta-of-delta", 1_000_000i64)
            .build();
        assert_eq!(
            read_twcc(&s),
            Some(TwccReport {
                sent_kbps: 3000.0,
                recv_kbps: 2000.0,
                packets: 120,
            })
        );
        let empty = gst::Structure::builder("RTPTWCCStats")
            .field("bitrate-sent", 0u32)
            .field("bitrate-recv", 0u32)
            .field("packets-sent", 0u32)
            .build();
        assert_eq!(read_twcc(&empty), None, "no packets, no window");
        let partial = gst::Structure::builder("RTPTWCCStats")
            .field("bitrate-sent", 1u32)
            .build();
        assert_eq!(read_twcc(&partial), None);
    }
}
