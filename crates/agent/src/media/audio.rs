//! The VM's sound: one capture of the default sink's monitor (`pulsesrc`) and one Opus encoder
//! for the whole agent, shared by every viewer that wants audio, running only while one does.
//! Each viewer's session pipeline has its own branch `appsrc (Opus) -> rtpopuspay -> webrtcbin`
//! (`add_branch`), answering the audio m-line of the viewer's offer; its `appsrc` is the viewer's
//! bounded queue (`AUDIO_QUEUE` packets, oldest dropped), filled from the encoder's streaming
//! thread, which never waits for anyone. Packets are restamped to the session pipeline's running
//! time, as video frames are, so both streams' RTP timestamps and RTCP sender reports follow the
//! same pipeline clock and the browser can keep lip sync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{info, warn};

use super::source::{live_appsrc, restamp, running_time};
use super::MediaError;
use crate::pipeline::{make, PipelineError, PipelineGuard};

/// `--audio`: whether the agent sends the VM's sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AudioMode {
    /// On when a PulseAudio (or PipeWire-Pulse) server is reachable at start-up.
    Auto,
    /// Always on (a viewer's audio fails alone if there is no server when it starts).
    On,
    /// No sound.
    Off,
}

/// Opus packets a viewer's queue holds before the oldest goes (10 ms each).
pub const AUDIO_QUEUE: u64 = 10;

/// The Opus frame length, in ms (10: low delay; SILK, and so in-band FEC, supports it).
pub const FRAME_MS: u32 = 10;

/// The Opus bitrate, in bit/s.
pub const BITRATE: i32 = 64_000;

/// The PulseAudio source the agent records: the monitor of the default sink (what the VM plays).
pub const DEFAULT_MONITOR: &str = "@DEFAULT_MONITOR@";

/// Checks that a PulseAudio server is reachable (the one `$PULSE_SERVER` or the user's runtime
/// dir names) by opening a `pulsesrc` on the default sink's monitor. `Ok` names the device.
/// For `--audio auto` and the doctor.
pub fn probe_server() -> Result<String, String> {
    gst::init().map_err(|e| format!("GStreamer failed to initialize: {e}"))?;
    let src = gst::ElementFactory::make("pulsesrc")
        .property("device", DEFAULT_MONITOR)
        .build()
        .map_err(|_| {
            "GStreamer element pulsesrc is missing (apt-get install gstreamer1.0-pulseaudio)"
                .to_owned()
        })?;
    let opened = src.set_state(gst::State::Ready);
    let _ = src.set_state(gst::State::Null);
    match opened {
        Ok(_) => Ok(DEFAULT_MONITOR.to_owned()),
        Err(_) => Err("no PulseAudio server is reachable (is pulseaudio or pipewire-pulse running for this user? $PULSE_SERVER?)".to_owned()),
    }
}

/// The agent's audio for `mode`, with one log line saying whether there is sound and why.
pub fn from_mode(mode: AudioMode) -> Option<AudioHub> {
    match mode {
        AudioMode::Off => {
            info!("audio: off (--audio off)");
            None
        }
        AudioMode::On => {
            if let Err(e) = probe_server() {
                warn!("audio: on (--audio on), but {e}: viewers get no sound until one is");
            } else {
                info!("audio: on, from the default sink's monitor");
            }
            Some(AudioHub::default())
        }
        AudioMode::Auto => match probe_server() {
            Ok(device) => {
                info!("audio: on, from {device} (a PulseAudio server is reachable)");
                Some(AudioHub::default())
            }
            Err(e) => {
                info!("audio: off, {e} (--audio on to insist)");
                None
            }
        },
    }
}

/// The Opus payload type of the offer's audio m-line, if the viewer wants to receive audio
/// (`recvonly` or `sendrecv`).
pub fn offered_opus(sdp: &str) -> Option<u8> {
    let mut in_audio = false;
    let mut pt = None;
    let mut receives = true;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                break;
            }
            in_audio = m.starts_with("audio ");
            continue;
        }
        if !in_audio {
            continue;
        }
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let mut parts = rest.splitn(2, ' ');
            let n = parts.next().and_then(|n| n.parse::<u8>().ok());
            let enc = parts.next().unwrap_or("").to_ascii_lowercase();
            if pt.is_none() && enc.starts_with("opus/48000") {
                pt = n.filter(|n| *n >= 96 && *n <= 127);
            }
        } else if matches!(line, "a=sendonly" | "a=inactive") {
            receives = false;
        }
    }
    pt.filter(|_| receives)
}

/// Adds the audio branch to a session's pipeline: `appsrc (Opus) -> rtpopuspay (payload type
/// `pt`) -> capsfilter -> webrtcbin` on a new sink pad, whose transceiver sends only. Returns the
/// `appsrc` the shared encoder fills (see `AudioHub::subscribe`).
pub fn add_branch(
    pipeline: &gst::Pipeline,
    webrtc: &gst::Element,
    pt: u8,
) -> Result<gst_app::AppSrc, PipelineError> {
    let src = live_appsrc("audio", AUDIO_QUEUE);
    // No caps of its own: the encoder's (in each sample) are the full ones rtpopuspay needs.
    let pay = make("rtpopuspay", None)?;
    pay.set_property("pt", u32::from(pt));
    // A fixed SSRC, as for video: webrtcbin declares it in the answer.
    let ssrc = crate::pipeline::random_ssrc();
    pay.set_property("ssrc", ssrc);
    let rtp = gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("ssrc", ssrc)
        .field("encoding-name", "OPUS")
        .field("payload", i32::from(pt))
        .field("clock-rate", 48000i32)
        .build();
    let filter = make("capsfilter", None)?;
    filter.set_property("caps", &rtp);
    let chain = [src.clone().upcast(), pay, filter.clone()];
    pipeline
        .add_many(&chain)
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    gst::Element::link_many(&chain).map_err(|e| PipelineError::Link(e.to_string()))?;
    // With the caps: webrtcbin then knows the transceiver's kind and codec before the offer is
    // applied, and matches it to the offer's audio m-line. By name: the video pad was requested
    // as `sink_0`, which does not advance webrtcbin's own counter, so an unnamed request would
    // get a second `sink_0` that webrtcbin cannot add ("not unique"): a pad outside the element,
    // never activated, on which every push returns FLUSHING and the appsrc stops for good.
    let name = free_sink_pad_name(webrtc);
    let sink = webrtc
        .pad_template("sink_%u")
        .and_then(|t| webrtc.request_pad(&t, Some(&name), Some(&rtp)))
        .ok_or_else(|| PipelineError::Link("webrtcbin gave no audio pad".into()))?;
    if sink.parent().as_ref() != Some(webrtc.upcast_ref::<gst::Object>()) {
        return Err(PipelineError::Link(format!(
            "webrtcbin did not add its audio pad {}",
            sink.name()
        )));
    }
    filter
        .static_pad("src")
        .ok_or_else(|| PipelineError::Link("capsfilter has no src pad".into()))?
        .link(&sink)
        .map_err(|e| PipelineError::Link(format!("opus payloader -> webrtcbin: {e}")))?;
    if let Some(t) = sink.property::<Option<gstreamer_webrtc::WebRTCRTPTransceiver>>("transceiver")
    {
        t.set_direction(gstreamer_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
        t.set_property("codec-preferences", &rtp);
    }
    Ok(src)
}

/// The first `sink_N` name webrtcbin has no pad for.
fn free_sink_pad_name(webrtc: &gst::Element) -> String {
    let taken: Vec<String> = webrtc
        .sink_pads()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    (0..)
        .map(|n| format!("sink_{n}"))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| "sink_1".to_owned())
}

/// The audio counters of one viewer, for `/metrics`.
#[derive(Debug, Default)]
pub struct AudioViewerCounters {
    /// Opus packets handed to the viewer's pipeline.
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Packets the viewer's full queue dropped (its pipeline did not keep up).
    pub dropped: AtomicU64,
}

/// The agent's audio as a whole.
#[derive(Debug, Default)]
pub struct AudioCounters {
    /// Capture + encoder pipelines running now (0 or 1).
    pub running: AtomicU64,
    /// Times the capture + encoder started.
    pub started: AtomicU64,
    /// Opus packets encoded.
    pub packets: AtomicU64,
}

/// The agent's shared audio. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AudioHub(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<Option<Running>>,
    next_id: AtomicU64,
    counters: Arc<AudioCounters>,
}

#[derive(Debug)]
struct Running {
    listeners: Arc<Mutex<HashMap<u64, Listener>>>,
    _guard: PipelineGuard,
}

#[derive(Debug, Clone)]
struct Listener {
    src: gst_app::AppSrc,
    counters: Arc<AudioViewerCounters>,
}

impl Listener {
    fn push(&self, sample: &gst::Sample) {
        let Some(pts) = running_time(self.src.upcast_ref()) else {
            return;
        };
        let Some(sample) = restamp(sample, pts) else {
            return;
        };
        let size = sample.buffer().map_or(0, |b| b.size() as u64);
        if self.src.current_level_buffers() >= AUDIO_QUEUE {
            // The appsrc drops its oldest packet to take this one.
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if self.src.push_sample(&sample).is_ok() {
            self.counters.packets.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(size, Ordering::Relaxed);
        }
    }
}

/// A viewer's place on the shared audio; dropping it takes the viewer off (and stops the
/// capture and encoder with the last one).
#[derive(Debug)]
pub struct AudioSubscription {
    hub: AudioHub,
    id: u64,
}

impl Drop for AudioSubscription {
    fn drop(&mut self) {
        self.hub.detach(self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AudioHub {
    pub fn counters(&self) -> Arc<AudioCounters> {
        self.0.counters.clone()
    }

    /// Whether the capture and encoder run now.
    pub fn running(&self) -> bool {
        lock(&self.0.state).is_some()
    }

    /// Starts sending the VM's sound into `sink` (a session's audio `appsrc`), starting the
    /// capture and encoder if no other viewer had.
    pub fn subscribe(
        &self,
        sink: gst_app::AppSrc,
        counters: Arc<AudioViewerCounters>,
    ) -> Result<AudioSubscription, MediaError> {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.0.state);
        if state.is_none() {
            *state = Some(self.start()?);
        }
        if let Some(running) = state.as_ref() {
            lock(&running.listeners).insert(
                id,
                Listener {
                    src: sink,
                    counters,
                },
            );
        }
        Ok(AudioSubscription {
            hub: self.clone(),
            id,
        })
    }

    fn detach(&self, id: u64) {
        let stopped = {
            let mut state = lock(&self.0.state);
            let empty = state.as_ref().is_some_and(|r| {
                let mut l = lock(&r.listeners);
                l.remove(&id);
                l.is_empty()
            });
            if empty {
                state.take()
            } else {
                None
            }
        };
        if let Some(running) = stopped {
            drop(running);
            self.0.counters.running.store(0, Ordering::Relaxed);
            info!("audio capture stopped (no viewer wants it)");
        }
    }

    /// `pulsesrc (default sink's monitor) -> convert -> resample -> 48 kHz stereo -> opusenc ->
    /// appsink`.
    fn start(&self) -> Result<Running, MediaError> {
        let pipeline = gst::Pipeline::with_name("audio");
        let guard = PipelineGuard::new(pipeline.clone(), None);
        let src = make("pulsesrc", Some("capture"))?;
        src.set_property("device", DEFAULT_MONITOR);
        src.set_property("client-name", "vdesk-agent");
        // Small ring buffer: 10 ms segments, 40 ms in all.
        src.set_property("buffer-time", 40_000i64);
        src.set_property("latency-time", 10_000i64);
        let convert = make("audioconvert", None)?;
        let resample = make("audioresample", None)?;
        let raw = make("capsfilter", None)?;
        raw.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("rate", 48000i32)
                .field("channels", 2i32)
                .build(),
        );
        let enc = make("opusenc", Some("encoder"))?;
        enc.set_property_from_str("frame-size", &FRAME_MS.to_string());
        // Voice: lets Opus use SILK/hybrid, without which in-band FEC does nothing
        // (restricted-lowdelay is CELT only).
        enc.set_property_from_str("audio-type", "voice");
        enc.set_property("inband-fec", true);
        enc.set_property("packet-loss-percentage", 10i32);
        enc.set_property("bitrate", BITRATE);
        let sink = gst_app::AppSink::builder()
            .name("out")
            .sync(false)
            .enable_last_sample(false)
            .build();
        let chain = [
            src,
            convert,
            resample,
            raw,
            enc,
            sink.clone().upcast::<gst::Element>(),
        ];
        pipeline
            .add_many(chain.iter())
            .map_err(|e| PipelineError::Link(e.to_string()))?;
        gst::Element::link_many(chain.iter()).map_err(|e| PipelineError::Link(e.to_string()))?;
        let listeners: Arc<Mutex<HashMap<u64, Listener>>> = Arc::default();
        let l = listeners.clone();
        let counters = self.0.counters.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    crate::guard::catch("audio encoder output", Err(gst::FlowError::Error), || {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                        counters.packets.fetch_add(1, Ordering::Relaxed);
                        // Cloned out of the lock: a push never runs under it.
                        let targets: Vec<Listener> = lock(&l).values().cloned().collect();
                        for t in &targets {
                            t.push(&sample);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                })
                .build(),
        );
        if let Some(bus) = pipeline.bus() {
            bus.set_sync_handler(move |_, msg| {
                crate::guard::catch("audio bus", gst::BusSyncReply::Drop, || {
                    if let gst::MessageView::Error(err) = msg.view() {
                        // The viewers keep their picture; their sound stops.
                        warn!("audio capture failed: {} ({:?})", err.error(), err.debug());
                    }
                    gst::BusSyncReply::Drop
                })
            });
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| MediaError::Start("audio capture (is a PulseAudio server running?)"))?;
        self.0.counters.running.store(1, Ordering::Relaxed);
        self.0.counters.started.fetch_add(1, Ordering::Relaxed);
        info!(
            frame_ms = FRAME_MS,
            kbps = BITRATE / 1000,
            "audio capture started (Opus, in-band FEC)"
        );
        Ok(Running {
            listeners,
            _guard: guard,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=recvonly\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:1\r\na=recvonly\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:63 red/48000/2\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn the_audio_branch_links_into_a_pad_of_webrtcbins_own_next_to_the_video_one() {
        gst::init().expect("GStreamer initializes");
        let choice = crate::codec::CodecChoice {
            codec: crate::codec::Codec::Vp8,
            payload_type: 96,
            profile_level_id: None,
            mline: 0,
            playout_delay_ext: None,
            twcc_ext: None,
        };
        let crate::pipeline::SessionPipeline { guard, webrtc, .. } =
            crate::pipeline::build("audio-branch-test", &choice).expect("session pipeline");
        let src = add_branch(guard.pipeline(), &webrtc, 111).expect("audio branch");
        // An unnamed request used to give a second `sink_0` that webrtcbin could not add: the
        // branch was linked to a pad outside the element and never flowed.
        let names: Vec<String> = webrtc
            .sink_pads()
            .iter()
            .map(|p| p.name().to_string())
            .collect();
        assert_eq!(names, ["sink_0", "sink_1"]);
        let audio_pad = webrtc.static_pad("sink_1").expect("sink_1");
        let upstream = audio_pad.peer().expect("sink_1 is linked");
        let filter = upstream.parent_element().expect("capsfilter");
        let pay = filter
            .static_pad("sink")
            .and_then(|p| p.peer())
            .and_then(|p| p.parent_element())
            .expect("payloader");
        assert_eq!(
            pay.factory().map(|f| f.name().to_string()).as_deref(),
            Some("rtpopuspay")
        );
        let first = pay
            .static_pad("sink")
            .and_then(|p| p.peer())
            .and_then(|p| p.parent_element())
            .expect("appsrc");
        assert_eq!(&first, src.upcast_ref::<gst::Element>());
    }

    #[test]
    fn the_offers_opus_payload_type_is_found_on_its_audio_line() {
        assert_eq!(offered_opus(CHROME_OFFER), Some(111));
    }

    #[test]
    fn no_audio_line_or_no_wish_to_receive_means_no_audio() {
        let video_only = CHROME_OFFER.split("m=audio").next().unwrap();
        assert_eq!(offered_opus(video_only), None);
        assert_eq!(
            offered_opus(
                &CHROME_OFFER.replace("a=recvonly\r\na=rtpmap:111", "a=sendonly\r\na=rtpmap:111")
            ),
            None
        );
        assert_eq!(
            offered_opus(&CHROME_OFFER.replace("opus/48000/2", "PCMU/8000")),
            None
        );
        // A video line's rtpmap never counts.
        assert_eq!(
            offered_opus("m=video 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n"),
            None
        );
        // Malformed numbers are ignored, not trusted.
        assert_eq!(
            offered_opus(
                "m=audio 9 X 1\r\na=rtpmap:999 opus/48000/2\r\na=rtpmap:5 opus/48000/2\r\n"
            ),
            None
        );
    }
}
