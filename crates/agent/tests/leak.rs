//! 100 sessions opened and closed, one after the other, against the agent's `Session` (real
//! webrtcbin, real Xvfb capture, an in-process webrtcbin "browser" that connects and decodes at
//! least one frame each time): afterwards the process has as many file descriptors and threads as
//! before (within a small tolerance for GStreamer's own pools), and its memory has not grown by
//! more than a bound. Each leaked pipeline would hold ICE sockets and streaming threads, so it
//! would show. The numbers are printed (`--nocapture`) for docs/operations.md.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{Browser, Xvfb};
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;
use vdesk_agent::codec::Codec;
use vdesk_agent::pipeline::CaptureMode;
use vdesk_agent::session::Session;
use vdesk_protocol::{AgentToController, SessionId};

const SESSIONS: usize = 100;
const WARM_UP: usize = 3;
/// Extra fds/threads allowed after the run (GStreamer and GLib keep a few pooled).
const TOLERANCE: usize = 4;
/// Largest RSS growth accepted over the 100 sessions.
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn usage() -> Usage {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    Usage {
        fds: count("/proc/self/fd"),
        threads: count("/proc/self/task"),
        rss_kib,
    }
}

/// One viewer: offer, answer, trickle both ways until a frame is decoded; then both sides go.
async fn one_session(display: &str, n: usize) {
    let browser = Browser::new();
    let mut brx = browser.candidates();
    let offer = browser.offer().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let media = common::media(display, CaptureMode::Damage, 500);
    let session = Session::start(SessionId::random(), &offer, &[], &media, &[Codec::Vp8], tx)
        .unwrap_or_else(|e| panic!("session {n}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while *browser.frames.lock().unwrap() == 0 {
        assert!(Instant::now() < deadline, "session {n}: no frame in 30 s");
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                AgentToController::Answer { sdp, .. } => browser.set_answer(&sdp),
                AgentToController::Candidate { candidate, .. } if !candidate.is_end_of_candidates() => {
                    browser.webrtc.emit_by_name::<()>(
                        "add-ice-candidate",
                        &[&candidate.sdp_m_line_index.unwrap(), &candidate.candidate],
                    );
                }
                AgentToController::SessionEnded { reason, .. } => panic!("session {n} ended: {reason}"),
                _ => {}
            },
            Some(c) = brx.recv() => session.add_remote_candidate(c),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    drop(session);
    drop(browser);
}

/// Waits (up to 10 s) for fds and threads to come back within the tolerance of `base`.
async fn settle(base: Usage) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = usage();
        if (now.fds <= base.fds + TOLERANCE && now.threads <= base.threads + TOLERANCE)
            || Instant::now() > deadline
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sessions_leak_no_fds_threads_or_memory() {
    gst::init().unwrap();
    let x = Xvfb::start();
    for n in 0..WARM_UP {
        one_session(&x.display, n).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = usage();
    let t0 = Instant::now();
    let mut peak = before;
    for n in 0..SESSIONS {
        one_session(&x.display, n).await;
        let u = usage();
        peak.fds = peak.fds.max(u.fds);
        peak.threads = peak.threads.max(u.threads);
        peak.rss_kib = peak.rss_kib.max(u.rss_kib);
    }
    let after = settle(before).await;
    println!(
        "{SESSIONS} sessions in {:.1} s: fds {} -> {} (peak {}), threads {} -> {} (peak {}), \
         RSS {} KiB -> {} KiB (peak {} KiB)",
        t0.elapsed().as_secs_f32(),
        before.fds,
        after.fds,
        peak.fds,
        before.threads,
        after.threads,
        peak.threads,
        before.rss_kib,
        after.rss_kib,
        peak.rss_kib
    );
    assert!(
        after.fds <= before.fds + TOLERANCE,
        "file descriptors leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.threads <= before.threads + TOLERANCE,
        "threads leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.rss_kib <= before.rss_kib + MAX_RSS_GROWTH_KIB,
        "memory grew by more than {MAX_RSS_GROWTH_KIB} KiB: {before:?} -> {after:?}"
    );
}
