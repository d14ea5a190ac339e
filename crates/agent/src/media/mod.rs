//! The media part: one capture and one encoder per stream (codec, quality rung, pointer drawn in
//! or not) for the whole agent, shared by every viewer on that stream, and the fan-out of the
//! encoded frames to each viewer's own pipeline at its own pace. Knows nothing of signalling,
//! sessions or the controller.
//!
//! - The capture pipeline (`source::build_capture`) ends in an `appsink`; each raw frame goes, as
//!   the same buffer, into the `appsrc` of every running encoder pipeline.
//! - Each encoder pipeline (`source::build_encoder`) ends in an `appsink`; each encoded frame is
//!   offered to every subscribed viewer's bounded `ViewerQueue` (`queue.rs`) from the encoder's
//!   streaming thread, which never waits for a viewer.
//! - Each subscription has a thread that moves frames from its queue into the viewer's session
//!   pipeline (`appsrc -> payloader -> webrtcbin`, `pipeline.rs`), restamped to that pipeline's
//!   running time, only while that `appsrc` has room: a viewer whose pipeline does not keep up
//!   fills its own queue, which then drops its backlog and waits for the next keyframe.
//! - Keyframes: a joining viewer, a viewer's PLI/FIR and a queue overflow ask the stream's
//!   `KeyframeGate`, which forces at most one keyframe per stream per `KEYFRAME_WINDOW`.
//! - An encoder runs while it has a subscriber; the capture while it has an encoder.

pub mod audio;
pub mod frames;
pub mod ladder;
pub mod queue;
pub mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{debug, info, warn};

use crate::codec::Codec;
use crate::context::AgentContext;
use crate::encoder::{self, EncoderChoices};
use crate::pipeline::{CaptureMode, MediaSettings, PipelineError, PipelineGuard, MEDIA_QUEUE};
use crate::stats::EncoderCounters;
pub use ladder::Rung;
use ladder::{RungChooser, Thresholds};
use queue::{KeyframeGate, Pushed, ViewerQueue, KEYFRAME_WINDOW, QUEUE_FRAMES};

/// One shared stream: what an encoder makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub codec: Codec,
    pub rung: Rung,
    /// The X pointer drawn into the picture (`--stream-cursor`: for every viewer).
    pub pointer: bool,
}

/// Why a stream could not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    #[error("could not start the {0} pipeline")]
    Start(&'static str),
}

/// What the media part is doing, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// Encoder pipelines running now.
    pub encoders: AtomicU64,
    /// Capture pipelines running now.
    pub captures: AtomicU64,
    /// Encoder pipelines started so far.
    pub encoders_started: AtomicU64,
    /// Keyframes forced so far (joins, PLI/FIR, overflows; after the gate).
    pub keyframes_forced: AtomicU64,
    /// Frames viewers did not get because they were behind or waited for a keyframe.
    pub frames_dropped: AtomicU64,
}

impl MediaCounters {
    pub fn encoders(&self) -> u64 {
        self.encoders.load(Ordering::Relaxed)
    }

    pub fn captures(&self) -> u64 {
        self.captures.load(Ordering::Relaxed)
    }

    pub fn keyframes_forced(&self) -> u64 {
        self.keyframes_forced.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agent's shared media. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct MediaHub(Arc<Hub>);

#[derive(Debug)]
struct Hub {
    settings: MediaSettings,
    /// The agent's encoder choices, metrics and stage times.
    context: Arc<AgentContext>,
    counters: Arc<MediaCounters>,
    state: Mutex<State>,
    epoch: Instant,
    /// The VM's sound, shared the same way (`None`: `--audio off`, or no sound server).
    audio: Option<audio::AudioHub>,
}

#[derive(Debug, Default)]
struct State {
    /// By `pointer`.
    captures: HashMap<bool, CaptureSource>,
    encoders: HashMap<StreamKey, Arc<Fanout>>,
}

/// A running capture pipeline and the encoders it feeds.
#[derive(Debug)]
struct CaptureSource {
    /// `ximagesrc`, which must be restarted after a screen size change (`None`: damage capture,
    /// which follows size changes by itself).
    restartable: Option<gst::Element>,
    targets: Arc<Mutex<Vec<Target>>>,
    // Dropped last: stops the pipeline, then the capture thread.
    _guard: PipelineGuard,
}

/// One encoder pipeline's input, as the capture sees it.
#[derive(Debug, Clone)]
struct Target {
    key: StreamKey,
    input: gst_app::AppSrc,
    /// The low rung's scaler caps, set from each new frame size.
    scale_caps: Option<gst::Element>,
    last_size: Arc<Mutex<Option<(i32, i32)>>>,
}

impl Target {
    fn push(&self, sample: &gst::Sample) {
        let Some(pts) = source::running_time(self.input.upcast_ref()) else {
            return;
        };
        if let (Some(scale), Some(caps)) = (&self.scale_caps, sample.caps()) {
            let size = caps
                .structure(0)
                .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)));
            let mut last = lock(&self.last_size);
            if size.is_some() && *last != size {
                *last = size;
                if let Some((w, h)) = size {
                    let (w, h) = source::low_rung_size(w, h);
                    scale.set_property(
                        "caps",
                        gst::Caps::builder("video/x-raw")
                            .field("width", w)
                            .field("height", h)
                            .build(),
                    );
                }
            }
        }
        if let Some(sample) = source::restamp(sample, pts) {
            // Leaky and non-blocking: an encoder that falls behind loses its oldest raw frame.
            let _ = self.input.push_sample(&sample);
        }
    }
}

impl MediaHub {
    /// The media of the agent whose `context` it is (encoders from `context.encoders`, stage
    /// times into `context`'s), without sound.
    pub fn new(settings: MediaSettings, context: Arc<AgentContext>) -> Self {
        Self::with_audio(settings, context, None)
    }

    /// `new`, with the VM's sound (`audio::from_mode`) for the viewers whose offer wants it.
    pub fn with_audio(
        settings: MediaSettings,
        context: Arc<AgentContext>,
        audio: Option<audio::AudioHub>,
    ) -> Self {
        Self(Arc::new(Hub {
            settings,
            context,
            counters: Arc::default(),
            state: Mutex::default(),
            epoch: Instant::now(),
            audio,
        }))
    }

    /// The shared audio, if the agent sends sound.
    pub fn audio(&self) -> Option<&audio::AudioHub> {
        self.0.audio.as_ref()
    }

    pub fn settings(&self) -> &MediaSettings {
        &self.0.settings
    }

    /// The agent's context (encoder choices, metrics, stage times).
    pub fn context(&self) -> &Arc<AgentContext> {
        &self.0.context
    }

    pub fn counters(&self) -> Arc<MediaCounters> {
        self.0.counters.clone()
    }

    fn thresholds(&self) -> Option<Thresholds> {
        let s = &self.0.settings;
        Thresholds::new(s.min_bitrate_kbps, s.bitrate_kbps)
    }

    /// A new viewer, not yet receiving anything (see `subscribe`).
    pub fn viewer(&self, name: &str) -> Arc<Viewer> {
        Arc::new_cyclic(|me| Viewer {
            name: name.to_owned(),
            me: me.clone(),
            hub: Arc::downgrade(&self.0),
            counters: Arc::default(),
            target_kbps: AtomicU32::new(self.0.settings.bitrate_kbps),
            ceiling_kbps: AtomicU32::new(u32::MAX),
            chooser: Mutex::new(RungChooser::new(self.thresholds())),
            attached: Mutex::new(None),
            on_failure: Mutex::new(None),
        })
    }

    /// Starts sending stream `key` (on the rung the viewer's ladder is on) to `viewer` through
    /// `sink` (a session's `appsrc`), starting the stream's encoder (and the capture) if it is
    /// not running. The first frame the viewer gets is a keyframe, forced now unless one was
    /// forced for this stream within the window. Dropping the subscription stops it (and the
    /// encoder, if it was the last viewer).
    pub fn subscribe(
        &self,
        key: StreamKey,
        viewer: &Arc<Viewer>,
        sink: gst_app::AppSrc,
    ) -> Result<Subscription, MediaError> {
        let counters = viewer.counters.clone();
        self.subscribe_on_thread(
            key,
            viewer,
            format!("fanout-{}", viewer.name),
            "fan-out thread",
            move |inbox| drain(&inbox, &sink, &counters),
        )
    }

    /// Puts a new inbox of `viewer` on stream `key` (on the rung the viewer's ladder is on) and
    /// runs `body` on it in a thread named `thread`: the part every subscription shares.
    fn subscribe_on_thread(
        &self,
        key: StreamKey,
        viewer: &Arc<Viewer>,
        thread: String,
        what: &'static str,
        body: impl FnOnce(Arc<Inbox>) + Send + 'static,
    ) -> Result<Subscription, MediaError> {
        let inbox = Arc::new(Inbox::default());
        {
            let mut attached = lock(&viewer.attached);
            let key = StreamKey {
                rung: lock(&viewer.chooser).rung(),
                ..key
            };
            let fanout = self.attach(key, viewer, &inbox)?;
            *attached = Some(Attached {
                key,
                inbox: inbox.clone(),
                fanout: Arc::downgrade(&fanout),
            });
        }
        let drain = {
            let inbox = inbox.clone();
            std::thread::Builder::new()
                .name(thread)
                .spawn(move || body(inbox))
                .map_err(|_| MediaError::Start(what))?
        };
        Ok(Subscription {
            hub: self.clone(),
            viewer: viewer.clone(),
            inbox,
            drain: Some(drain),
        })
    }

    /// Puts `inbox` on stream `key` (starting its encoder if needed) and asks for a keyframe.
    /// Lock order: the viewer's `attached`, then the hub's state, then a fan-out's viewers.
    fn attach(
        &self,
        key: StreamKey,
        viewer: &Arc<Viewer>,
        inbox: &Arc<Inbox>,
    ) -> Result<Arc<Fanout>, MediaError> {
        let fanout = {
            let mut state = lock(&self.0.state);
            let fanout = match state.encoders.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = self.start_encoder(&mut state, key)?;
                    state.encoders.insert(key, f.clone());
                    f
                }
            };
            lock(&fanout.viewers).push((viewer.clone(), inbox.clone()));
            fanout
        };
        info!(viewer = %viewer.name, codec = %key.codec, rung = ?key.rung, "viewer joins the stream");
        fanout.retarget();
        fanout.request_keyframe();
        Ok(fanout)
    }

    /// Builds and starts the encoder of `key`, and the capture if needed. The hub's lock is
    /// held: nothing that runs in a streaming thread takes it.
    fn start_encoder(&self, state: &mut State, key: StreamKey) -> Result<Arc<Fanout>, MediaError> {
        let settings = &self.0.settings;
        let kbps = match key.rung {
            Rung::Full => settings.bitrate_kbps,
            Rung::Low => ladder::low_rung_kbps(settings.min_bitrate_kbps, settings.bitrate_kbps),
        };
        let parts = build_encoder_with_fallback(&self.0.context.encoders, key, kbps)?;
        let fanout = Arc::new(Fanout {
            key,
            viewers: Mutex::default(),
            gate: Mutex::new(KeyframeGate::new(KEYFRAME_WINDOW)),
            encoder: parts.encoder.clone(),
            kind: parts.kind,
            context: self.0.context.clone(),
            epoch: self.0.epoch,
            counters: self.0.counters.clone(),
            applied_kbps: AtomicU32::new(kbps),
            limits: match (key.rung, self.thresholds()) {
                // A viewer under the down threshold is about to leave the full rung: it does not
                // pull the others' encoder below it meanwhile.
                (Rung::Full, Some(t)) => {
                    (settings.min_bitrate_kbps.max(t.down_kbps).min(kbps), kbps)
                }
                (Rung::Full, None) => (settings.min_bitrate_kbps.min(kbps), kbps),
                (Rung::Low, _) => (settings.min_bitrate_kbps.min(kbps), kbps),
            },
            pipeline: Mutex::new(Some(parts.guard)),
        });
        let weak = Arc::downgrade(&fanout);
        parts.output.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    crate::guard::catch("encoder output", Err(gst::FlowError::Error), || {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                        if let Some(f) = weak.upgrade() {
                            f.on_sample(&sample);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                })
                .build(),
        );
        crate::stage_timing::watch_encode(
            parts.input.upcast_ref(),
            &parts.encoder,
            self.0.context.stage_times().clone(),
        );
        fanout.watch_bus();
        let started = fanout
            .with_pipeline(|p| p.set_state(gst::State::Playing).is_ok())
            .unwrap_or(false);
        if !started {
            fanout.stop();
            return Err(MediaError::Start("encoder"));
        }
        self.0.counters.encoders.fetch_add(1, Ordering::Relaxed);
        self.0
            .counters
            .encoders_started
            .fetch_add(1, Ordering::Relaxed);
        let target = Target {
            key,
            input: parts.input,
            scale_caps: parts.scale_caps,
            last_size: Arc::default(),
        };
        if let Some(capture) = state.captures.get(&key.pointer) {
            lock(&capture.targets).push(target);
        } else {
            match self.start_capture(key.pointer, target) {
                Ok(c) => {
                    state.captures.insert(key.pointer, c);
                }
                Err(e) => {
                    fanout.stop();
                    return Err(e);
                }
            }
        }
        info!(codec = %key.codec, rung = ?key.rung, pointer = key.pointer, kbps, "encoder started");
        Ok(fanout)
    }

    fn start_capture(&self, pointer: bool, first: Target) -> Result<CaptureSource, MediaError> {
        let source::CaptureParts {
            guard,
            restartable,
            output: sink,
        } = source::build_capture(&self.0.settings, pointer, self.0.context.stage_times())?;
        let targets = Arc::new(Mutex::new(vec![first]));
        let t = targets.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    crate::guard::catch("capture output", Err(gst::FlowError::Error), || {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                        for target in lock(&t).iter() {
                            target.push(&sample);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                })
                .build(),
        );
        let hub = Arc::downgrade(&self.0);
        if let Some(bus) = guard.pipeline().bus() {
            bus.set_sync_handler(move |_, msg| {
                crate::guard::catch("capture bus", gst::BusSyncReply::Drop, || {
                    if let gst::MessageView::Error(err) = msg.view() {
                        warn!("capture failed: {} ({:?})", err.error(), err.debug());
                        if let Some(hub) = hub.upgrade() {
                            MediaHub(hub).fail_capture(
                                pointer,
                                &format!("screen capture failed: {}", err.error()),
                            );
                        }
                    }
                    gst::BusSyncReply::Drop
                })
            });
        }
        guard
            .pipeline()
            .set_state(gst::State::Playing)
            .map_err(|_| MediaError::Start("capture"))?;
        self.0.counters.captures.fetch_add(1, Ordering::Relaxed);
        info!(pointer, "capture started");
        Ok(CaptureSource {
            _guard: guard,
            restartable,
            targets,
        })
    }

    /// Every viewer of a stream fed by the failed capture is told (their sessions end).
    fn fail_capture(&self, pointer: bool, reason: &str) {
        let fanouts: Vec<Arc<Fanout>> = lock(&self.0.state)
            .encoders
            .values()
            .filter(|f| f.key.pointer == pointer)
            .cloned()
            .collect();
        for f in fanouts {
            f.fail(reason);
        }
    }

    /// Takes `inbox` off stream `key`; stops the encoder if it has no viewer left, and the
    /// capture if it has no encoder left. Pipelines stop outside the hub's lock.
    fn detach(&self, key: StreamKey, inbox: &Arc<Inbox>) {
        let mut stopped_encoder = None;
        let mut stopped_capture = None;
        let remaining = {
            let mut state = lock(&self.0.state);
            let Some(fanout) = state.encoders.get(&key).cloned() else {
                return;
            };
            let left = {
                let mut viewers = lock(&fanout.viewers);
                viewers.retain(|(_, i)| !Arc::ptr_eq(i, inbox));
                viewers.len()
            };
            if left == 0 {
                state.encoders.remove(&key);
                if let Some(capture) = state.captures.get(&key.pointer) {
                    let empty = {
                        let mut targets = lock(&capture.targets);
                        targets.retain(|t| t.key != key);
                        targets.is_empty()
                    };
                    if empty {
                        stopped_capture = state.captures.remove(&key.pointer);
                    }
                }
                stopped_encoder = Some(fanout);
                None
            } else {
                Some(fanout)
            }
        };
        if let Some(f) = remaining {
            f.retarget();
        }
        if let Some(f) = stopped_encoder {
            info!(codec = %key.codec, rung = ?key.rung, "last viewer left: encoder stopped");
            f.stop();
            self.0.counters.encoders.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(c) = stopped_capture {
            info!(pointer = key.pointer, "no encoder left: capture stopped");
            drop(c);
            self.0.counters.captures.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Stops (`false`) and restarts (`true`) every running `ximagesrc` capture around a screen
    /// size change (it must reopen the display to see the new size; damage capture follows by
    /// itself). `None` if this agent never captures with `ximagesrc`.
    pub fn capture_restarter(&self) -> Option<Arc<dyn Fn(bool) + Send + Sync>> {
        let s = &self.0.settings;
        if !s.show_pointer && s.capture != CaptureMode::Ximagesrc {
            return None;
        }
        let hub = Arc::downgrade(&self.0);
        Some(Arc::new(move |run: bool| {
            let Some(hub) = hub.upgrade() else { return };
            let sources: Vec<gst::Element> = lock(&hub.state)
                .captures
                .values()
                .filter_map(|c| c.restartable.clone())
                .collect();
            for src in sources {
                let r = if run {
                    src.sync_state_with_parent().map_err(|e| e.to_string())
                } else {
                    src.set_state(gst::State::Null)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = r {
                    warn!(
                        "could not {} the capture: {e}",
                        if run { "restart" } else { "stop" }
                    );
                }
            }
        }))
    }
}

/// Builds the encoder pipeline of `key`. When its hardware encoder cannot be made, linked or
/// opened, the codec switches to software for this and every later stream, and it is built again.
fn build_encoder_with_fallback(
    choices: &EncoderChoices,
    key: StreamKey,
    kbps: u32,
) -> Result<source::EncoderParts, MediaError> {
    let kind = choices.for_codec(key.codec);
    let failure = match source::build_encoder(key, kind, kbps) {
        Ok(parts) => match encoder::open(&parts.encoder) {
            Ok(()) => return Ok(parts),
            Err(reason) => reason,
        },
        Err(e) if kind.is_hardware() => e.to_string(),
        Err(e) => return Err(e.into()),
    };
    choices.mark_failed(kind, &failure);
    Ok(source::build_encoder(
        key,
        choices.for_codec(key.codec),
        kbps,
    )?)
}

/// One viewer across its subscriptions: its counters, its bitrate target and rung, the stream
/// it is on, how to tell its session that the media failed.
pub struct Viewer {
    name: String,
    me: Weak<Viewer>,
    hub: Weak<Hub>,
    pub counters: Arc<EncoderCounters>,
    target_kbps: AtomicU32,
    /// A ceiling on the target (`u32::MAX`: none), e.g. set by a test as a bad link would.
    ceiling_kbps: AtomicU32,
    chooser: Mutex<RungChooser>,
    attached: Mutex<Option<Attached>>,
    #[allow(clippy::type_complexity)]
    on_failure: Mutex<Option<Box<dyn Fn(&str) + Send + Sync>>>,
}

/// The stream a subscribed viewer is on.
#[derive(Debug)]
struct Attached {
    key: StreamKey,
    inbox: Arc<Inbox>,
    fanout: Weak<Fanout>,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer").field("name", &self.name).finish()
    }
}

impl Viewer {
    /// Called (once per failure, from a GStreamer thread) when the viewer's stream fails.
    pub fn on_failure(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        *lock(&self.on_failure) = Some(Box::new(f));
    }

    fn fanout(&self) -> Option<Arc<Fanout>> {
        lock(&self.attached)
            .as_ref()
            .and_then(|a| a.fanout.upgrade())
    }

    /// The stream the viewer is on (`None` before it subscribed).
    pub fn stream(&self) -> Option<StreamKey> {
        lock(&self.attached).as_ref().map(|a| a.key)
    }

    /// The viewer asked for a keyframe (PLI/FIR).
    pub fn request_keyframe(&self) {
        self.counters
            .keyframes_forced
            .fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.fanout() {
            f.request_keyframe();
        }
    }

    /// The viewer's own bitrate target (its congestion controller's): the viewer's rung follows
    /// it (`ladder.rs`), and so does its encoder's bitrate.
    pub fn set_target_kbps(&self, kbps: u32) {
        let kbps = kbps.min(self.ceiling_kbps.load(Ordering::Relaxed));
        self.target_kbps.store(kbps, Ordering::Relaxed);
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let moved = lock(&self.chooser).on_target(kbps, hub.epoch.elapsed());
        match moved {
            Some(rung) => self.move_to(&MediaHub(hub), rung),
            None => {
                if let Some(f) = self.fanout() {
                    f.retarget();
                }
            }
        }
    }

    /// Moves a subscribed viewer to `rung` of its stream: off the old encoder, its queue emptied
    /// and waiting for a keyframe, onto the new one (started if needed; it forces a keyframe).
    fn move_to(&self, hub: &MediaHub, rung: Rung) {
        let Some(me) = self.me.upgrade() else { return };
        let mut attached = lock(&self.attached);
        let Some(current) = attached.as_mut() else {
            return; // Not subscribed yet: it will subscribe on the rung chosen.
        };
        if current.key.rung == rung {
            return;
        }
        let key = StreamKey {
            rung,
            ..current.key
        };
        info!(viewer = %self.name, from = ?current.key.rung, to = ?rung, kbps = self.target_kbps(), "viewer changes rung");
        hub.detach(current.key, &current.inbox);
        current.inbox.restart();
        current.key = key;
        match hub.attach(key, &me, &current.inbox) {
            Ok(f) => current.fanout = Arc::downgrade(&f),
            Err(e) => {
                current.fanout = Weak::new();
                drop(attached);
                self.fail(&format!("the media could not change rung: {e}"));
            }
        }
    }

    pub fn target_kbps(&self) -> u32 {
        self.target_kbps.load(Ordering::Relaxed)
    }

    /// Keeps the viewer's target at or under `kbps` from now on, whatever its congestion
    /// controller says (`u32::MAX`: no ceiling).
    pub fn set_ceiling_kbps(&self, kbps: u32) {
        self.ceiling_kbps.store(kbps, Ordering::Relaxed);
        self.set_target_kbps(self.target_kbps().min(kbps));
    }

    fn fail(&self, reason: &str) {
        if let Some(f) = &*lock(&self.on_failure) {
            f(reason);
        }
    }
}

impl crate::stats::RateTarget for Viewer {
    fn set_target_kbps(&self, kbps: u32) {
        Viewer::set_target_kbps(self, kbps);
    }
}

/// One subscription's frames, between the encoder's thread and the viewer's drain thread.
#[derive(Debug)]
struct Inbox {
    queue: Mutex<ViewerQueue<gst::Sample>>,
    ready: Condvar,
    closed: AtomicBool,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            queue: Mutex::new(ViewerQueue::new(QUEUE_FRAMES)),
            ready: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }
}

impl Inbox {
    fn push(&self, sample: &gst::Sample, keyframe: bool) -> Pushed {
        let pushed = lock(&self.queue).push(sample.clone(), keyframe);
        if pushed == Pushed::Queued {
            self.ready.notify_one();
        }
        pushed
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ready.notify_all();
    }

    /// Empties the queue; the next frame taken is a keyframe (the viewer changed streams).
    fn restart(&self) {
        let mut queue = lock(&self.queue);
        let dropped = queue.dropped();
        *queue = ViewerQueue::new(QUEUE_FRAMES);
        queue.add_dropped(dropped);
    }
}

/// How long the drain thread waits before looking again at a session `appsrc` that had no room.
const NO_ROOM_RETRY: Duration = Duration::from_millis(3);

/// Moves frames from `inbox` into the session's `appsrc` while it has room, until closed.
fn drain(inbox: &Inbox, sink: &gst_app::AppSrc, counters: &EncoderCounters) {
    loop {
        let sample = {
            let mut queue = lock(&inbox.queue);
            loop {
                if inbox.closed.load(Ordering::SeqCst) {
                    return;
                }
                let room = sink.current_level_buffers() < MEDIA_QUEUE;
                if room && !queue.is_empty() {
                    if let Some(pts) = source::running_time(sink.upcast_ref()) {
                        break queue.pop().and_then(|s| source::restamp(&s, pts));
                    }
                }
                let wait = if queue.is_empty() {
                    Duration::from_millis(100)
                } else {
                    // Frames wait for room (or for the pipeline to play): the queue bounds them.
                    NO_ROOM_RETRY
                };
                queue = match inbox.ready.wait_timeout(queue, wait) {
                    Ok((q, _)) => q,
                    Err(p) => p.into_inner().0,
                };
            }
        };
        let Some(sample) = sample else { continue };
        match sink.push_sample(&sample) {
            Ok(_) => {
                counters.frames.fetch_add(1, Ordering::Relaxed);
            }
            Err(gst::FlowError::Flushing) => {}
            Err(e) => {
                debug!("session appsrc refused a frame: {e:?}");
                return;
            }
        }
    }
}

/// A viewer on a stream. Dropping it takes the viewer off (after its session pipeline stopped,
/// or while it runs: the drain thread never blocks).
#[derive(Debug)]
pub struct Subscription {
    hub: MediaHub,
    viewer: Arc<Viewer>,
    inbox: Arc<Inbox>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Subscription {
    /// The stream the viewer is on now.
    pub fn key(&self) -> Option<StreamKey> {
        self.viewer.stream()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inbox.close();
        if let Some(t) = self.drain.take() {
            let _ = t.join();
        }
        let attached = lock(&self.viewer.attached).take();
        let dropped = lock(&self.inbox.queue).dropped();
        self.hub
            .0
            .counters
            .frames_dropped
            .fetch_add(dropped, Ordering::Relaxed);
        if let Some(a) = attached {
            self.hub.detach(a.key, &a.inbox);
        }
        debug!(viewer = %self.viewer.name, dropped, "viewer left the stream");
    }
}

/// One running encoder and its viewers.
#[derive(Debug)]
struct Fanout {
    key: StreamKey,
    viewers: Mutex<Vec<(Arc<Viewer>, Arc<Inbox>)>>,
    gate: Mutex<KeyframeGate>,
    encoder: gst::Element,
    /// Which encoder `encoder` is.
    kind: encoder::Kind,
    /// Where a failed hardware encoder is marked (`encoders`).
    context: Arc<AgentContext>,
    epoch: Instant,
    counters: Arc<MediaCounters>,
    applied_kbps: AtomicU32,
    /// The encoder's bitrate range on this rung, kbit/s.
    limits: (u32, u32),
    pipeline: Mutex<Option<PipelineGuard>>,
}

impl Fanout {
    fn with_pipeline<T>(&self, f: impl FnOnce(&gst::Pipeline) -> T) -> Option<T> {
        lock(&self.pipeline).as_ref().map(|g| f(g.pipeline()))
    }

    /// Stops the encoder pipeline (and frees it).
    fn stop(&self) {
        let guard = lock(&self.pipeline).take();
        drop(guard);
    }

    /// One encoded frame from the encoder's streaming thread: to every viewer's queue.
    fn on_sample(&self, sample: &gst::Sample) {
        let keyframe = sample
            .buffer()
            .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
        let mut overflow = false;
        for (viewer, inbox) in lock(&self.viewers).iter() {
            if inbox.push(sample, keyframe) == Pushed::Overflow {
                debug!(viewer = %viewer.name, "viewer fell behind: backlog dropped, waiting for a keyframe");
                overflow = true;
            }
        }
        let now = self.epoch.elapsed();
        let force = {
            let mut gate = lock(&self.gate);
            if overflow {
                gate.request(now)
            } else {
                gate.on_frame(now, keyframe)
            }
        };
        if force {
            self.force_keyframe();
        }
    }

    fn request_keyframe(&self) {
        let force = lock(&self.gate).request(self.epoch.elapsed());
        if force {
            self.force_keyframe();
        }
    }

    fn force_keyframe(&self) {
        let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        let sent = self
            .encoder
            .static_pad("src")
            .is_some_and(|pad| pad.send_event(event));
        if sent {
            self.counters
                .keyframes_forced
                .fetch_add(1, Ordering::Relaxed);
        } else {
            debug!(codec = %self.key.codec, "could not ask the encoder for a keyframe");
        }
    }

    /// The encoder's bitrate follows the slowest viewer on it, within the rung's range.
    fn retarget(&self) {
        let (min, max) = self.limits;
        let lowest = lock(&self.viewers)
            .iter()
            .map(|(v, _)| v.target_kbps())
            .min()
            .unwrap_or(max);
        let kbps = lowest.clamp(min, max);
        if self.applied_kbps.swap(kbps, Ordering::Relaxed) != kbps {
            debug!(codec = %self.key.codec, rung = ?self.key.rung, kbps, "encoder bitrate");
            encoder::set_bitrate_kbps(&self.encoder, kbps);
        }
    }

    fn fail(&self, reason: &str) {
        let viewers: Vec<Arc<Viewer>> =
            lock(&self.viewers).iter().map(|(v, _)| v.clone()).collect();
        for v in viewers {
            v.fail(reason);
        }
    }

    /// Encoder errors end the sessions of this stream (and only those); a hardware encoder that
    /// fails while running gives way to software for later streams.
    fn watch_bus(self: &Arc<Self>) {
        let Some(bus) = self.with_pipeline(|p| p.bus()).flatten() else {
            return;
        };
        let me = Arc::downgrade(self);
        let context = self.context.clone();
        // Weak: the handler lives in the encoder's own pipeline.
        let (encoder, kind) = (self.encoder.downgrade(), self.kind);
        bus.set_sync_handler(move |_, msg| {
            crate::guard::catch("encoder bus", gst::BusSyncReply::Drop, || {
                if let gst::MessageView::Error(err) = msg.view() {
                    let src = err
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    warn!(
                        "encoder pipeline error from {src}: {} ({:?})",
                        err.error(),
                        err.debug()
                    );
                    // The encoder itself failed (its handle, not a name, says so).
                    let from_encoder = encoder
                        .upgrade()
                        .is_some_and(|e| err.src() == Some(e.upcast_ref::<gst::Object>()));
                    if from_encoder {
                        context.encoders.mark_failed(kind, &err.error().to_string());
                    }
                    if let Some(me) = me.upgrade() {
                        me.fail(&format!("media pipeline failed: {}", err.error()));
                    }
                }
                gst::BusSyncReply::Drop
            })
        });
    }
}
