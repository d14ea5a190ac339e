//! One session = one real WebRTC peer (`webrtcbin`) answering one viewer's offer: applies the
//! offer, sends back webrtcbin's own answer, trickles candidates both ways (holding the viewer's
//! until the offer is applied), and reports ICE / DTLS / peer-connection states. Its pipeline
//! starts at an `appsrc` that the shared media part (`media::MediaHub`) fills with the encoded
//! frames of the stream its codec chose, from the moment the peer connection is up (no encoder
//! works for a viewer that has not connected). It never talks to the network itself: everything
//! it has to say goes out as `AgentToController` messages on a channel, and dropping the
//! `Session` frees its pipeline and takes it off the shared stream.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};
use vdesk_protocol::{
    AgentToController, ErrorCode, IceCandidate, IceServer, ResumedSession, SessionGrant, SessionId,
};

use crate::codec::{self, Codec, CodecChoice};
use crate::control::Room;
use crate::ice;
use crate::input::{InputSettings, SessionInput};
use crate::media::{self, MediaHub, Rung, StreamKey, Subscription, Viewer};
use crate::pipeline::{self, PipelineGuard};
use crate::rate::RateLimits;
use crate::stats::{self, StatsSink, StatsTask};

/// Why a session could not start. Sent to the viewer as the `ended` reason.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
    #[error("{0}")]
    Pipeline(#[from] pipeline::PipelineError),
    #[error("the offer is not valid SDP")]
    BadOffer,
    #[error("could not start the pipeline: {0}")]
    Start(String),
    #[error("{0}")]
    Media(#[from] media::MediaError),
}

/// Where the viewer's candidates go: held until the offer has been applied, then added.
#[derive(Debug)]
enum RemoteCandidates {
    Pending(Vec<IceCandidate>),
    Ready,
}

/// The SDP of the session's latest offer and answer, for `resume`.
#[derive(Debug, Default)]
struct Descriptions {
    offer: String,
    answer: Option<String>,
    /// What the answer's fmtp must say that webrtcbin leaves out (see `codec::complete_answer`).
    choice: Option<CodecChoice>,
}

/// A running peer. Drop it to end the session and free its pipeline.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    webrtc: gst::Element,
    remote: Arc<Mutex<RemoteCandidates>>,
    choice: CodecChoice,
    /// Remote control (dropping it releases whatever the viewer held).
    _input: Option<Arc<SessionInput>>,
    grant: SessionGrant,
    sdp: Arc<Mutex<Descriptions>>,
    /// Stats and rate control; stopped before the pipeline.
    _stats: Option<StatsTask>,
    /// Ends the session (`link_expired`) at the grant's `expires_at`, controller or not.
    _expiry: Option<crate::expiry::ExpiryTimer>,
    // Dropped after the signal handlers' owners above.
    _pipeline: PipelineGuard,
    // Last field: off the shared stream once the pipeline has stopped.
    media: Arc<SessionMedia>,
}

/// The session's place in the shared media: its viewer, the stream it takes, and the
/// subscription once the peer is connected.
#[derive(Debug)]
struct SessionMedia {
    hub: MediaHub,
    key: StreamKey,
    viewer: Arc<Viewer>,
    src: gstreamer_app::AppSrc,
    subscription: Mutex<Option<Subscription>>,
    /// The session's audio branch, when the offer wants sound and the agent has it.
    audio: Option<SessionAudio>,
}

/// A session's place on the shared audio (`media::audio`).
#[derive(Debug)]
struct SessionAudio {
    hub: media::audio::AudioHub,
    src: gstreamer_app::AppSrc,
    counters: Arc<media::audio::AudioViewerCounters>,
    subscription: Mutex<Option<media::audio::AudioSubscription>>,
}

impl SessionMedia {
    /// Starts the media (once): called when the peer connection is up.
    fn start(&self) -> Result<(), media::MediaError> {
        let mut sub = lock(&self.subscription);
        if sub.is_none() {
            *sub = Some(
                self.hub
                    .subscribe(self.key, &self.viewer, self.src.clone())?,
            );
        }
        drop(sub);
        if let Some(a) = &self.audio {
            let mut sub = lock(&a.subscription);
            if sub.is_none() {
                // No sound is not worth ending the picture for.
                match a.hub.subscribe(a.src.clone(), a.counters.clone()) {
                    Ok(s) => *sub = Some(s),
                    Err(e) => warn!("no audio for this viewer: {e}"),
                }
            }
        }
        Ok(())
    }
}

/// Sends a message for this session, ignoring a closed channel (the agent is shutting down).
#[derive(Clone, Debug)]
struct Outbox {
    id: SessionId,
    tx: UnboundedSender<AgentToController>,
    /// The agent's metrics registry (from its context), which shows this session's stats.
    metrics: crate::metrics::Registry,
}

impl Outbox {
    fn send(&self, msg: AgentToController) {
        let _ = self.tx.send(msg);
    }

    fn state(&self, state: String) {
        self.send(AgentToController::PeerState {
            session_id: self.id.clone(),
            state,
        });
    }

    fn end(&self, code: ErrorCode, reason: impl Into<String>) {
        self.send(AgentToController::SessionEnded {
            session_id: self.id.clone(),
            code,
            reason: reason.into(),
        });
    }
}

/// Where a session's stats go: the controller (`sessionStats`, with whether the viewer holds
/// control, from its input's seat in the room) and the agent's metrics registry.
#[derive(Debug)]
struct StatsOut {
    out: Outbox,
    /// Weak: the session owns its input; a session without input never holds control.
    input: Option<std::sync::Weak<SessionInput>>,
}

impl StatsSink for StatsOut {
    fn report(&self, mut stats: vdesk_protocol::SessionStats) {
        stats.holds_control = Some(
            self.input
                .as_ref()
                .and_then(std::sync::Weak::upgrade)
                .is_some_and(|i| i.holds_control()),
        );
        self.out.metrics.set(&self.out.id, stats.clone());
        self.out.send(AgentToController::SessionStats {
            session_id: self.out.id.clone(),
            stats,
        });
    }

    fn ended(&self) {
        self.out.metrics.remove(&self.out.id);
    }
}

impl Session {
    /// Builds the pipeline on the agent's shared media `hub`, applies `offer_sdp` and starts
    /// answering. The answer and the local candidates arrive on `tx` as they are made. No
    /// remote control (see `start_with_input`).
    pub fn start(
        hub: &MediaHub,
        id: SessionId,
        offer_sdp: &str,
        ice_servers: &[IceServer],
        codecs: &[Codec],
        tx: UnboundedSender<AgentToController>,
    ) -> Result<Session, SessionError> {
        Self::start_with_input(
            hub,
            id,
            offer_sdp,
            ice_servers,
            codecs,
            tx,
            SessionGrant::default(),
            None,
        )
    }

    /// `start` on the agent's shared media `hub`, plus remote control through the viewer's data
    /// channels when `input` is given (with the agent's room: one viewer in control at a time):
    /// with `Permission::Control` the viewer's input goes into X; view-only input is dropped.
    /// Either way the viewer draws the cursor from the agent's messages and shares the stream
    /// that leaves it out (`--stream-cursor` draws it in for all). The permission is remembered
    /// (reported again on `resume`).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_input(
        hub: &MediaHub,
        id: SessionId,
        offer_sdp: &str,
        ice_servers: &[IceServer],
        codecs: &[Codec],
        tx: UnboundedSender<AgentToController>,
        grant: SessionGrant,
        input: Option<(&InputSettings, &Room)>,
    ) -> Result<Session, SessionError> {
        let settings = hub.settings();
        // Every viewer shares the stream without the cursor (a view-only viewer gets the cursor
        // image and position as messages), unless the operator wants it drawn in for all.
        let pointer = settings.show_pointer;
        let choice = codec::choose(offer_sdp, codecs)?;
        let offer = gst_sdp::SDPMessage::parse_buffer(offer_sdp.as_bytes())
            .map_err(|_| SessionError::BadOffer)?;
        let short = &id.as_str()[..8];
        let pipeline::SessionPipeline {
            guard,
            webrtc,
            src,
            rtpbin,
        } = pipeline::build(&format!("session-{short}"), &choice)?;
        let audio = match (hub.audio(), media::audio::offered_opus(offer_sdp)) {
            (Some(audio), Some(pt)) => Some(SessionAudio {
                hub: audio.clone(),
                src: media::audio::add_branch(guard.pipeline(), &webrtc, pt)?,
                counters: hub.context().metrics.audio_counters(&id),
                subscription: Mutex::new(None),
            }),
            _ => None,
        };
        let input = input.map(|(s, room)| {
            SessionInput::start(id.clone(), &grant, s, hub.capture_restarter(), room)
        });
        info!(session = %id, codec = %choice.codec, pt = choice.payload_type,
              profile = choice.profile_level_id.as_deref().unwrap_or("-"), "codec chosen");

        let ice = ice::to_webrtcbin(ice_servers);
        for skipped in &ice.skipped {
            warn!(session = %id, "ICE server not used: {skipped}");
        }
        if let Some(stun) = &ice.stun {
            webrtc.set_property("stun-server", stun);
        }
        for turn in &ice.turn {
            if !webrtc.emit_by_name::<bool>("add-turn-server", &[turn]) {
                warn!(session = %id, "webrtcbin refused a TURN server");
            }
        }

        let out = Outbox {
            id: id.clone(),
            tx,
            metrics: hub.context().metrics.clone(),
        };
        let viewer = hub.viewer(short);
        {
            let out = out.clone();
            viewer.on_failure(move |reason| out.end(ErrorCode::AgentError, reason));
        }
        watch_keyframe_requests(&src, &viewer);
        let media = Arc::new(SessionMedia {
            hub: hub.clone(),
            key: StreamKey {
                codec: choice.codec,
                rung: Rung::Full,
                pointer,
            },
            viewer: viewer.clone(),
            src,
            subscription: Mutex::new(None),
            audio,
        });
        let remote = Arc::new(Mutex::new(RemoteCandidates::Pending(Vec::new())));
        let sdp = Arc::new(Mutex::new(Descriptions {
            offer: offer_sdp.to_owned(),
            answer: None,
            choice: Some(choice.clone()),
        }));
        connect_signals(&webrtc, &out, input.clone(), Arc::downgrade(&media));
        watch_bus(guard.pipeline(), &out);

        // The payloader's transceiver only sends; the viewer's offer is recvonly. NACK on:
        // webrtcbin then answers the offer's rtx payload and `nack` feedback and retransmits
        // lost packets from a short history (RFC 4588), instead of waiting for a keyframe.
        if let Some(t) = webrtc
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32])
        {
            t.set_direction(gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
            t.set_property("do-nack", true);
        }
        guard
            .pipeline()
            .set_state(gst::State::Playing)
            .map_err(|e| SessionError::Start(e.to_string()))?;

        apply_offer(&webrtc, offer, &out, &remote, &sdp);

        let stats = stats::start(
            short.to_owned(),
            webrtc.clone(),
            rtpbin,
            Some(stats::EncoderControl {
                target: viewer.clone(),
                codec: choice.codec,
            }),
            viewer.counters.clone(),
            RateLimits {
                min_kbps: settings.min_bitrate_kbps,
                max_kbps: settings.bitrate_kbps,
            },
            StatsOut {
                out: out.clone(),
                input: input.as_ref().map(Arc::downgrade),
            },
        );

        let expiry = {
            let out = out.clone();
            crate::expiry::ExpiryTimer::start(short, grant.expires_at, move || {
                info!(session = %out.id, "the viewer's link has expired: ending the session");
                out.end(ErrorCode::LinkExpired, "the viewer's link has expired");
            })
        };

        Ok(Session {
            id,
            webrtc,
            remote,
            choice,
            _input: input,
            grant,
            sdp,
            _stats: Some(stats),
            _expiry: expiry,
            _pipeline: guard,
            media,
        })
    }

    /// What `resume` says about this session.
    pub fn resume_info(&self) -> ResumedSession {
        let sdp = lock(&self.sdp);
        ResumedSession {
            session_id: self.id.clone(),
            offer: Some(sdp.offer.clone()),
            answer: sdp.answer.clone(),
            grant: self.grant.clone(),
        }
    }

    pub fn id(&self) -> &SessionId {
        &self.id
    }

    pub fn codec(&self) -> Codec {
        self.choice.codec
    }

    /// The stream this session takes, once its peer is connected (`None` before).
    pub fn stream(&self) -> Option<StreamKey> {
        lock(&self.media.subscription)
            .as_ref()
            .and_then(|s| s.key())
    }

    /// Keeps this viewer's bitrate target at or under `kbps`, as a link that carries no more
    /// would make its congestion controller do: its rung of the quality ladder and its
    /// encoder's bitrate follow.
    pub fn cap_target_kbps(&self, kbps: u32) {
        self.media.viewer.set_ceiling_kbps(kbps);
    }

    /// Frames handed to this viewer's peer so far.
    pub fn frames_sent(&self) -> u64 {
        self.media
            .viewer
            .counters
            .frames
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds one of the viewer's candidates, or holds it until the offer has been applied.
    pub fn add_remote_candidate(&self, candidate: IceCandidate) {
        let mut remote = lock(&self.remote);
        match &mut *remote {
            RemoteCandidates::Pending(queue) => queue.push(candidate),
            RemoteCandidates::Ready => add_candidate(&self.webrtc, &candidate),
        }
    }
}

/// The viewer's keyframe requests (PLI/FIR, turned into force-key-unit events by the RTP
/// session) reach the session's `appsrc`: they go to the shared encoder through its gate.
fn watch_keyframe_requests(src: &gstreamer_app::AppSrc, viewer: &Arc<Viewer>) {
    let Some(pad) = src.static_pad("src") else {
        return;
    };
    let viewer = Arc::downgrade(viewer);
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        crate::guard::catch("keyframe request probe", gst::PadProbeReturn::Ok, || {
            let is_key_request = match &info.data {
                Some(gst::PadProbeData::Event(ev)) => ev
                    .structure()
                    .is_some_and(|s| s.name() == "GstForceKeyUnit"),
                _ => false,
            };
            if is_key_request {
                debug!("keyframe requested by the viewer");
                if let Some(v) = viewer.upgrade() {
                    v.request_keyframe();
                }
            }
            gst::PadProbeReturn::Ok
        })
    });
}

/// Sets `offer` as the remote description, then answers it.
fn apply_offer(
    webrtc: &gst::Element,
    offer: gst_sdp::SDPMessage,
    out: &Outbox,
    remote: &Arc<Mutex<RemoteCandidates>>,
    sdp: &Arc<Mutex<Descriptions>>,
) {
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    let promise = {
        let webrtc = webrtc.clone();
        let out = out.clone();
        let remote = remote.clone();
        let sdp = sdp.clone();
        gst::Promise::with_change_func(move |reply| {
            let failed = crate::guard::panicked("set-remote-description reply", || {
                if let Err(reason) = check_reply("set-remote-description", reply) {
                    out.end(ErrorCode::AgentError, reason);
                    return;
                }
                flush_pending(&webrtc, &remote);
                create_answer(&webrtc, &out, &sdp);
            });
            if failed {
                out.end(
                    ErrorCode::AgentError,
                    "internal error in the agent (logged): session ended",
                );
            }
        })
    };
    webrtc.emit_by_name::<()>("set-remote-description", &[&offer, &promise]);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn flush_pending(webrtc: &gst::Element, remote: &Mutex<RemoteCandidates>) {
    let mut remote = lock(remote);
    if let RemoteCandidates::Pending(queue) =
        std::mem::replace(&mut *remote, RemoteCandidates::Ready)
    {
        for c in queue {
            add_candidate(webrtc, &c);
        }
    }
}

fn add_candidate(webrtc: &gst::Element, c: &IceCandidate) {
    if c.is_end_of_candidates() {
        // webrtcbin 1.22 has no end-of-candidates call; ICE simply stops waiting for more.
        debug!("viewer finished gathering candidates");
        return;
    }
    let line = c.candidate.strip_prefix("a=").unwrap_or(&c.candidate);
    let mline = c.sdp_m_line_index.unwrap_or(0);
    webrtc.emit_by_name::<()>("add-ice-candidate", &[&mline, &line]);
}

/// `Ok` if a promise resolved with a reply that is not an error.
fn check_reply(
    what: &str,
    reply: Result<Option<&gst::StructureRef>, gst::PromiseError>,
) -> Result<(), String> {
    match reply {
        Ok(Some(s)) => match s.get::<glib::Error>("error") {
            Ok(err) => Err(format!("{what} failed: {}", err.message())),
            Err(_) => Ok(()),
        },
        Ok(None) => Ok(()),
        Err(e) => Err(format!("{what} failed: {e:?}")),
    }
}

fn create_answer(webrtc: &gst::Element, out: &Outbox, descriptions: &Arc<Mutex<Descriptions>>) {
    let promise = {
        let webrtc = webrtc.clone();
        let out = out.clone();
        let descriptions = descriptions.clone();
        gst::Promise::with_change_func(move |reply| {
            let failed = crate::guard::panicked("create-answer reply", || {
                let answer = match reply {
                    Ok(Some(s)) => s.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok(),
                    _ => None,
                };
                let Some(answer) = answer else {
                    out.end(
                        ErrorCode::AgentError,
                        "webrtcbin could not create an answer",
                    );
                    return;
                };
                webrtc
                    .emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
                let sdp = match answer.sdp().as_text() {
                    Ok(sdp) => match &lock(&descriptions).choice {
                        Some(choice) => codec::complete_answer(&sdp, choice),
                        None => sdp,
                    },
                    Err(e) => {
                        out.end(
                            ErrorCode::AgentError,
                            format!("answer SDP not printable: {e}"),
                        );
                        return;
                    }
                };
                info!(session = %out.id, "answer created");
                debug!(session = %out.id, %sdp, "answer SDP");
                lock(&descriptions).answer = Some(sdp.clone());
                watch_dtls(&webrtc, out.clone());
                out.send(AgentToController::Answer {
                    session_id: out.id.clone(),
                    sdp,
                });
            });
            if failed {
                out.end(
                    ErrorCode::AgentError,
                    "internal error in the agent (logged): session ended",
                );
            }
        })
    };
    webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
}

fn connect_signals(
    webrtc: &gst::Element,
    out: &Outbox,
    input: Option<Arc<SessionInput>>,
    media: std::sync::Weak<SessionMedia>,
) {
    let o = out.clone();
    webrtc.connect("on-ice-candidate", false, move |values| {
        crate::guard::catch("on-ice-candidate", None, || {
            let mline = values.get(1).and_then(|v| v.get::<u32>().ok()).unwrap_or(0);
            if let Some(candidate) = values.get(2).and_then(|v| v.get::<String>().ok()) {
                debug!(session = %o.id, mline, %candidate, "local candidate");
                o.send(AgentToController::Candidate {
                    session_id: o.id.clone(),
                    candidate: IceCandidate {
                        candidate,
                        sdp_mid: None,
                        sdp_m_line_index: Some(mline),
                        username_fragment: None,
                    },
                });
            }
            None
        })
    });

    let o = out.clone();
    webrtc.connect_notify(Some("ice-gathering-state"), move |w, _| {
        crate::guard::catch("notify::ice-gathering-state", (), || {
            let state = w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
            debug!(session = %o.id, ?state, "ICE gathering state");
            if state == gst_webrtc::WebRTCICEGatheringState::Complete {
                o.send(AgentToController::Candidate {
                    session_id: o.id.clone(),
                    candidate: IceCandidate::end_of_candidates(0),
                });
            }
        })
    });

    let o = out.clone();
    webrtc.connect_notify(Some("ice-connection-state"), move |w, _| {
        crate::guard::catch("notify::ice-connection-state", (), || {
            let state = w.property::<gst_webrtc::WebRTCICEConnectionState>("ice-connection-state");
            let name = enum_nick(&state);
            info!(session = %o.id, "ICE connection state: {name}");
            o.state(format!("ice:{name}"));
        })
    });

    let o = out.clone();
    webrtc.connect_notify(Some("connection-state"), move |w, _| {
        crate::guard::catch("notify::connection-state", (), || {
            use gst_webrtc::WebRTCPeerConnectionState as S;
            let state = w.property::<S>("connection-state");
            let name = enum_nick(&state);
            info!(session = %o.id, "peer connection state: {name}");
            o.state(format!("peer:{name}"));
            if state == S::Connected {
                // Media starts now, with a keyframe (the shared stream forces one for a joiner).
                if let Some(media) = media.upgrade() {
                    if let Err(e) = media.start() {
                        o.end(
                            ErrorCode::AgentError,
                            format!("the media could not start: {e}"),
                        );
                    }
                }
            }
            if state == S::Failed {
                o.end(
                    ErrorCode::AgentError,
                    "peer connection failed (ICE or DTLS could not complete)",
                );
            }
        })
    });

    let o = out.clone();
    webrtc.connect("on-data-channel", false, move |values| {
 crate::guard::catch("on-data-channel", None, || {
        if let Some(ch) = values
            .get(1)
            .and_then(|v| v.get::<gst_webrtc::WebRTCDataChannel>().ok())
        {
            info!(session = %o.id, label = ch.label().as_deref().unwrap_or(""), "data channel opened by viewer");
            if let Some(input) = &input {
                input.attach(&ch);
            }
        }
        None
    })
});
}

/// Logs the DTLS transport's state ("DTLS handshake complete" once it is).
fn watch_dtls(webrtc: &gst::Element, out: Outbox) {
    let transport = webrtc
        .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32])
        .and_then(|t| t.sender())
        .and_then(|s| s.transport());
    let Some(transport) = transport else {
        warn!(session = %out.id, "no DTLS transport to watch");
        return;
    };
    transport.connect_state_notify(move |t| {
        crate::guard::catch("dtls notify::state", (), || {
            use gst_webrtc::WebRTCDTLSTransportState as S;
            let state = t.state();
            match state {
                S::Connected => info!(session = %out.id, "DTLS handshake complete"),
                S::Connecting => info!(session = %out.id, "DTLS handshake initiated"),
                S::Failed => warn!(session = %out.id, "DTLS handshake failed"),
                _ => debug!(session = %out.id, ?state, "DTLS state"),
            }
            out.state(format!("dtls:{}", enum_nick(&state)));
        })
    });
}

/// Pipeline errors end the session (and only this session).
fn watch_bus(pipeline: &gst::Pipeline, out: &Outbox) {
    let Some(bus) = pipeline.bus() else { return };
    let out = out.clone();
    bus.set_sync_handler(move |_, msg| {
 crate::guard::catch("bus sync handler", gst::BusSyncReply::Drop, || {
        match msg.view() {
            gst::MessageView::Error(err) => {
                let src = err
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_default();
                warn!(session = %out.id, "pipeline error from {src}: {} ({:?})", err.error(), err.debug());
                out.end(
                    ErrorCode::AgentError,
                    format!("media pipeline failed: {}", err.error()),
                );
            }
            gst::MessageView::Warning(w) => {
                debug!(session = %out.id, "pipeline warning: {}", w.error());
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    })
});
}

fn enum_nick<T: glib::value::ToValue>(v: &T) -> String {
    let value = v.to_value();
    glib::EnumValue::from_value(&value)
        .map(|(_, e)| e.nick().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
