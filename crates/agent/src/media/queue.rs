//! The two pure rules of the fan-out, with time passed in, unit-tested without GStreamer:
//! `ViewerQueue`, one viewer's bounded backlog of encoded frames (a viewer that falls behind
//! loses its backlog and waits for the next keyframe; it never grows, never blocks the encoder),
//! and `KeyframeGate`, which turns any number of keyframe requests (joins, PLI/FIR, overflows)
//! into at most one forced keyframe per encoder per `KEYFRAME_WINDOW`.

use std::collections::VecDeque;
use std::time::Duration;

/// Encoded frames a viewer may have waiting; beyond it the viewer has fallen behind.
pub const QUEUE_FRAMES: usize = 8;

/// Shortest time between two keyframes forced on one encoder.
pub const KEYFRAME_WINDOW: Duration = Duration::from_millis(300);

/// What became of a frame offered to a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Not a keyframe, and the viewer waits for one (it joined, or fell behind).
    Skipped,
    /// The viewer was `QUEUE_FRAMES` behind: its backlog and this frame are gone, and it waits
    /// for a keyframe (ask the encoder for one).
    Overflow,
}

/// One viewer's frames between the encoder and its peer. A new queue waits for a keyframe: a
/// decoder cannot start on anything else.
#[derive(Debug)]
pub struct ViewerQueue<T> {
    frames: VecDeque<T>,
    capacity: usize,
    waiting_for_keyframe: bool,
    dropped: u64,
}

impl<T> ViewerQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            capacity: capacity.max(1),
            waiting_for_keyframe: true,
            dropped: 0,
        }
    }

    /// Offers the encoder's next frame.
    pub fn push(&mut self, frame: T, keyframe: bool) -> Pushed {
        if keyframe {
            // Everything before a keyframe is stale for a decoder that gets the keyframe.
            self.dropped += self.frames.len() as u64;
            self.frames.clear();
            self.waiting_for_keyframe = false;
        } else if self.waiting_for_keyframe {
            self.dropped += 1;
            return Pushed::Skipped;
        }
        if self.frames.len() >= self.capacity {
            self.dropped += self.frames.len() as u64 + 1;
            self.frames.clear();
            self.waiting_for_keyframe = true;
            return Pushed::Overflow;
        }
        self.frames.push_back(frame);
        Pushed::Queued
    }

    /// The next frame for the peer.
    pub fn pop(&mut self) -> Option<T> {
        self.frames.pop_front()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Frames this viewer never got.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Counts frames dropped elsewhere (a queue replaced by a new one).
    pub fn add_dropped(&mut self, n: u64) {
        self.dropped += n;
    }
}

/// At most one forced keyframe per encoder per `window`, whoever asks and however often. A
/// request inside the window is remembered and served when the window ends (checked at each
/// frame the encoder puts out), unless a keyframe comes out first.
#[derive(Debug, Clone)]
pub struct KeyframeGate {
    window: Duration,
    last_forced: Option<Duration>,
    pending: bool,
}

impl KeyframeGate {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last_forced: None,
            pending: false,
        }
    }

    fn may_force(&self, now: Duration) -> bool {
        self.last_forced
            .is_none_or(|t| now.saturating_sub(t) >= self.window)
    }

    /// A keyframe is wanted at `now`; `true`: force one now.
    pub fn request(&mut self, now: Duration) -> bool {
        if self.may_force(now) {
            self.last_forced = Some(now);
            self.pending = false;
            true
        } else {
            self.pending = true;
            false
        }
    }

    /// The encoder put out a frame at `now`; `true`: force a keyframe now (a request waited for
    /// the window to end).
    pub fn on_frame(&mut self, now: Duration, keyframe: bool) -> bool {
        if keyframe {
            // Whatever was asked for before this keyframe came out is served by it.
            self.pending = false;
            return false;
        }
        if self.pending && self.may_force(now) {
            self.last_forced = Some(now);
            self.pending = false;
            return true;
        }
        false
    }

    pub fn pending(&self) -> bool {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_new_viewer_starts_at_a_keyframe() {
        let mut q = ViewerQueue::new(4);
        assert!(q.waiting_for_keyframe());
        assert_eq!(q.push(1, false), Pushed::Skipped);
        assert_eq!(q.push(2, false), Pushed::Skipped);
        assert_eq!(q.push(3, true), Pushed::Queued);
        assert_eq!(q.push(4, false), Pushed::Queued);
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(3), Some(4), None));
        assert_eq!(q.dropped(), 2);
    }

    #[test]
    fn a_viewer_that_falls_behind_loses_its_backlog_and_waits_for_a_keyframe() {
        let mut q = ViewerQueue::new(3);
        q.push(0, true);
        q.push(1, false);
        q.push(2, false);
        // Nobody pops: the fourth frame finds three waiting.
        assert_eq!(q.push(3, false), Pushed::Overflow);
        assert!(q.is_empty(), "the backlog is dropped, not sent late");
        assert!(q.waiting_for_keyframe());
        assert_eq!(q.push(4, false), Pushed::Skipped);
        assert_eq!(q.push(5, true), Pushed::Queued);
        assert_eq!(q.pop(), Some(5));
        assert_eq!(q.dropped(), 5);
    }

    #[test]
    fn the_queue_never_grows_past_its_capacity() {
        let mut q = ViewerQueue::new(QUEUE_FRAMES);
        for i in 0..10_000u32 {
            q.push(i, i % 50 == 0);
            assert!(q.len() <= QUEUE_FRAMES);
        }
    }

    #[test]
    fn a_keyframe_makes_older_frames_stale() {
        let mut q = ViewerQueue::new(8);
        q.push(0, true);
        q.push(1, false);
        q.push(2, true);
        assert_eq!((q.pop(), q.pop()), (Some(2), None));
    }

    #[test]
    fn many_requests_force_one_keyframe_per_window() {
        let mut g = KeyframeGate::new(KEYFRAME_WINDOW);
        // Ten viewers join within 50 ms: one forced keyframe.
        let forced = (0..10).filter(|i| g.request(ms(i * 5))).count();
        assert_eq!(forced, 1);
        assert!(g.pending());
        // The keyframe comes out: every waiting request is served by it.
        assert!(!g.on_frame(ms(60), true));
        assert!(!g.pending());
        assert!(!g.on_frame(ms(400), false), "nothing left to force");
    }

    #[test]
    fn a_request_inside_the_window_is_served_when_it_ends() {
        let mut g = KeyframeGate::new(KEYFRAME_WINDOW);
        assert!(g.request(ms(0)));
        assert!(!g.on_frame(ms(20), true));
        // A PLI 100 ms later (after that keyframe came out): too soon to force again.
        assert!(!g.request(ms(100)));
        assert!(!g.on_frame(ms(200), false));
        assert!(g.on_frame(ms(300), false), "forced once the window is over");
        assert!(!g.on_frame(ms(316), false));
        // A viewer hammering PLI gets at most one keyframe per window.
        let mut forced = 0;
        for t in (400..3400).step_by(10) {
            if g.request(ms(t)) || g.on_frame(ms(t), false) {
                forced += 1;
            }
        }
        assert!((9..=10).contains(&forced), "{forced} keyframes in 3 s");
    }
}
