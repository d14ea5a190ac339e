//! A viewer for the agent's integration tests: an in-process browser and its `Session` on a
//! shared `MediaHub`, with the signalling between them relayed in memory. No test lives here.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;
use vdesk_agent::codec::Codec;
use vdesk_agent::control::Room;
use vdesk_agent::input::InputSettings;
use vdesk_agent::media::MediaHub;
use vdesk_agent::session::Session;
use vdesk_protocol::{AgentToController, IceCandidate, SessionGrant, SessionId};

use super::{close, Browser};

/// One viewer: its browser and its session on the shared hub.
pub struct Peer {
    pub name: &'static str,
    pub browser: Option<Browser>,
    pub session: Option<Session>,
    rx: mpsc::UnboundedReceiver<AgentToController>,
    brx: mpsc::UnboundedReceiver<IceCandidate>,
}

impl Peer {
    pub async fn start(name: &'static str, hub: &MediaHub, codecs: &[Codec]) -> Peer {
        Peer::start_with(name, hub, codecs, SessionGrant::default(), None).await
    }

    /// A viewer with `grant`, and remote control when `input` is given.
    pub async fn start_with(
        name: &'static str,
        hub: &MediaHub,
        codecs: &[Codec],
        grant: SessionGrant,
        input: Option<(&InputSettings, &Room)>,
    ) -> Peer {
        let browser = Browser::new();
        let brx = browser.candidates();
        let offer = browser.offer().await;
        let (tx, rx) = mpsc::unbounded_channel();
        let session = Session::start_with_input(
            hub,
            SessionId::random(),
            &offer,
            &[],
            codecs,
            tx,
            grant,
            input,
        )
        .unwrap();
        Peer {
            name,
            browser: Some(browser),
            session: Some(session),
            rx,
            brx,
        }
    }

    /// Relays what both sides said since the last call.
    pub fn pump(&mut self) {
        let (Some(browser), Some(session)) = (&self.browser, &self.session) else {
            return;
        };
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                AgentToController::Answer { sdp, .. } => browser.set_answer(&sdp),
                AgentToController::Candidate { candidate, .. }
                    if !candidate.is_end_of_candidates() =>
                {
                    browser.webrtc.emit_by_name::<()>(
                        "add-ice-candidate",
                        &[&candidate.sdp_m_line_index.unwrap(), &candidate.candidate],
                    );
                }
                AgentToController::SessionEnded { reason, .. } => {
                    panic!("{}: session ended: {reason}", self.name)
                }
                _ => {}
            }
        }
        while let Ok(c) = self.brx.try_recv() {
            session.add_remote_candidate(c);
        }
    }

    pub fn rgb(&self) -> Option<[u8; 3]> {
        self.browser
            .as_ref()
            .and_then(|b| *b.last_rgb.lock().unwrap())
    }

    pub fn frames(&self) -> u32 {
        self.browser
            .as_ref()
            .map_or(0, |b| *b.frames.lock().unwrap())
    }

    /// The size of the frames the browser decodes now.
    pub fn decoded_size(&self) -> Option<(i32, i32)> {
        let bin = self
            .browser
            .as_ref()?
            .webrtc
            .parent()?
            .downcast::<gst::Bin>()
            .ok()?;
        let sink = bin
            .iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.is::<gstreamer_app::AppSink>())?;
        let caps = sink.static_pad("sink")?.current_caps()?;
        let s = caps.structure(0)?;
        Some((s.get("width").ok()?, s.get("height").ok()?))
    }

    pub fn sees(&self, rgb: [u8; 3]) -> bool {
        self.rgb().is_some_and(|c| close(c, rgb))
    }
}

/// Relays for every peer until `done` holds, or fails after `secs` saying `what`.
pub async fn until(
    peers: &mut [&mut Peer],
    secs: u64,
    what: &str,
    done: impl Fn(&[&mut Peer]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        for p in peers.iter_mut() {
            p.pump();
        }
        if done(peers) {
            return;
        }
        let state: Vec<String> = peers
            .iter()
            .map(|p| format!("{}: {} frames, {:?}", p.name, p.frames(), p.rgb()))
            .collect();
        assert!(
            Instant::now() < deadline,
            "{what} within {secs} s: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
