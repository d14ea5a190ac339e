//! A WebSocket viewer's frame queue on the controller (pure): bounded, and when it overflows
//! (the viewer's socket does not drain it: TCP back-pressure from a slow network or a slow
//! browser) it drops its whole backlog and takes nothing until the next keyframe, so a viewer
//! that falls behind skips ahead instead of drifting further behind.

use std::collections::VecDeque;

/// Frames a viewer may have waiting (about a quarter of a second at 30 fps).
pub const VIEWER_QUEUE_FRAMES: usize = 8;

/// What `push` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Not taken: waiting for a keyframe.
    Skipped,
    /// The queue was full: backlog dropped, waiting for a keyframe (ask the agent for one).
    Overflow,
}

/// Bounded queue of frames that drops to the next keyframe.
#[derive(Debug)]
pub struct FrameQueue<T> {
    frames: VecDeque<T>,
    capacity: usize,
    waiting_for_key: bool,
    dropped: u64,
}

impl<T> FrameQueue<T> {
    /// A new queue waits for a keyframe: a viewer starts decoding at one.
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            waiting_for_key: true,
            dropped: 0,
        }
    }

    pub fn push(&mut self, frame: T, keyframe: bool) -> Push {
        if keyframe {
            self.waiting_for_key = false;
        }
        if self.waiting_for_key {
            self.dropped += 1;
            return Push::Skipped;
        }
        if self.frames.len() >= self.capacity {
            self.dropped += self.frames.len() as u64 + 1;
            self.frames.clear();
            self.waiting_for_key = true;
            return Push::Overflow;
        }
        self.frames.push_back(frame);
        Push::Queued
    }

    pub fn pop(&mut self) -> Option<T> {
        self.frames.pop_front()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames this viewer did not get.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_a_keyframe_and_skips_to_the_next_one_when_full() {
        let mut q = FrameQueue::new(2);
        assert_eq!(q.push(1, false), Push::Skipped);
        assert_eq!(q.push(2, true), Push::Queued);
        assert_eq!(q.push(3, false), Push::Queued);
        assert_eq!(q.push(4, false), Push::Overflow);
        assert!(q.is_empty());
        assert_eq!(q.push(5, false), Push::Skipped);
        assert_eq!(q.push(6, true), Push::Queued);
        assert_eq!(q.pop(), Some(6));
        assert_eq!(q.dropped(), 5);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut q = FrameQueue::new(VIEWER_QUEUE_FRAMES);
        for i in 0..10_000u32 {
            q.push(i, i % 50 == 0);
            assert!(q.len() <= VIEWER_QUEUE_FRAMES);
        }
    }
}
