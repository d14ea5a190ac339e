//! A subscription that hands encoded frames to code instead of a session's `appsrc`: the
//! WebSocket media path (`wsmedia.rs`) takes each frame as bytes and sends it over the agent's
//! media link. Same bounded queue and keyframe gate as every viewer (`queue.rs`): while the
//! consumer has no room the queue fills, then drops its backlog and waits for the next keyframe.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;

use super::{lock, Inbox, MediaError, MediaHub, StreamKey, Subscription, Viewer};

/// One encoded frame for a consumer.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// The frame's timestamp on its encoder's timeline, microseconds.
    pub pts_us: u64,
}

/// What the consumer did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Taken.
    Sent,
    /// No room now: offered again shortly (meanwhile the viewer's queue bounds the backlog).
    Full,
    /// The consumer is gone: the drain thread stops.
    Closed,
}

/// How long the drain waits before offering a frame again to a consumer that had no room.
const FULL_RETRY: Duration = Duration::from_millis(3);

impl MediaHub {
    /// Like `subscribe`, but each frame goes to `deliver` (on the subscription's own thread)
    /// instead of an `appsrc`. `has_room` is asked before a frame is taken off the queue.
    pub fn subscribe_frames(
        &self,
        key: StreamKey,
        viewer: &Arc<Viewer>,
        has_room: impl Fn() -> bool + Send + 'static,
        mut deliver: impl FnMut(EncodedFrame) -> Delivery + Send + 'static,
    ) -> Result<Subscription, MediaError> {
        let counters = viewer.counters.clone();
        self.subscribe_on_thread(
            key,
            viewer,
            format!("wsmedia-{}", viewer.name),
            "ws media thread",
            {
                move |inbox| loop {
                    let Some(sample) = next(&inbox, &has_room) else {
                        return;
                    };
                    let Some(frame) = to_frame(&sample) else {
                        continue;
                    };
                    match deliver(frame) {
                        Delivery::Sent => {
                            counters.frames.fetch_add(1, Ordering::Relaxed);
                        }
                        Delivery::Full => {}
                        Delivery::Closed => return,
                    }
                }
            },
        )
    }
}

/// The next frame once the consumer has room; `None` when the subscription closed.
fn next(inbox: &Inbox, has_room: &dyn Fn() -> bool) -> Option<gst::Sample> {
    let mut queue = lock(&inbox.queue);
    loop {
        if inbox.closed.load(Ordering::SeqCst) {
            return None;
        }
        if !queue.is_empty() && has_room() {
            return queue.pop();
        }
        let wait = if queue.is_empty() {
            Duration::from_millis(100)
        } else {
            FULL_RETRY
        };
        queue = match inbox.ready.wait_timeout(queue, wait) {
            Ok((q, _)) => q,
            Err(p) => p.into_inner().0,
        };
    }
}

fn to_frame(sample: &gst::Sample) -> Option<EncodedFrame> {
    let buffer = sample.buffer()?;
    let map = buffer.map_readable().ok()?;
    Some(EncodedFrame {
        data: map.as_slice().to_vec(),
        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        pts_us: buffer.pts().map(|t| t.useconds()).unwrap_or(0),
    })
}
