//! When the damage-driven capture may take the next frame: a token bucket that allows
//! `max_fps` frames a second on average, anchored on when each capture *started*, with a little
//! burst so that a frame that comes late does not push every later frame late too. Pure
//! arithmetic with time passed in, so it is unit-tested without a clock or a display.
//!
//! Why not "at least one frame period since the last push": that gap was measured from the end
//! of the previous push, so each frame period also paid for the copy and the push (3-4 ms at
//! 1280x720), and a screen animating at 60 fps was captured at 54-55. And with a bucket that
//! holds exactly one frame, one capture that starts late (a busy machine) makes every later one
//! start as late, until a frame is dropped; the extra half frame of credit lets it catch up.

use std::time::Duration;

/// Most credit the bucket holds, in frames.
pub const BURST: f64 = 1.5;

#[derive(Debug, Clone)]
pub struct Pacer {
    period: Duration,
    idle: Duration,
    /// Credit in frames, as of `at`.
    credit: f64,
    at: Option<Duration>,
    /// When the last frame was taken.
    last: Option<Duration>,
}

impl Pacer {
    /// At most `max_fps` frames a second; a frame at least every `idle` when nothing changes.
    pub fn new(max_fps: u32, idle: Duration) -> Self {
        Self {
            period: Duration::from_secs_f64(1.0 / f64::from(max_fps.max(1))),
            idle,
            credit: 1.0,
            at: None,
            last: None,
        }
    }

    fn credit_at(&self, now: Duration) -> f64 {
        match self.at {
            None => self.credit,
            Some(at) => (self.credit
                + now.saturating_sub(at).as_secs_f64() / self.period.as_secs_f64())
            .min(BURST),
        }
    }

    /// Whether a frame may be taken at `now`.
    pub fn may_take(&self, now: Duration) -> bool {
        self.credit_at(now) >= 1.0 - 1e-9
    }

    /// How long until a frame may be taken (zero if it may now).
    pub fn wait(&self, now: Duration) -> Duration {
        let missing = 1.0 - self.credit_at(now);
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            self.period.mul_f64(missing)
        }
    }

    /// Whether the screen has been still long enough that the last frame should be repeated.
    pub fn idle_due(&self, now: Duration) -> bool {
        self.until_idle(now) == Some(Duration::ZERO)
    }

    /// How long until the idle repeat is due (None before the first frame).
    pub fn until_idle(&self, now: Duration) -> Option<Duration> {
        self.last.map(|last| (last + self.idle).saturating_sub(now))
    }

    /// A frame was taken at `now` (the time its capture started).
    pub fn took(&mut self, now: Duration) {
        self.credit = (self.credit_at(now) - 1.0).max(0.0);
        self.at = Some(now);
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    /// Damage every `period_ms` with `jitter(i)` added; each damage is captured as soon as the
    /// pacer allows and the capture takes `work_ms`. Returns how many damages got a frame of
    /// their own (a frame taken after two damages shows only the second).
    fn simulate(period_ms: f64, jitter: impl Fn(usize) -> f64, work_ms: f64, n: usize) -> usize {
        let mut pacer = Pacer::new(60, Duration::from_secs(1));
        let mut busy_until = 0.0f64;
        let mut own_frames = 0;
        let mut pending: Option<f64> = None;
        let mut next_damage = 0usize;
        let mut t = 0.0f64;
        while next_damage < n || pending.is_some() {
            let damage_at = next_damage as f64 * period_ms + jitter(next_damage);
            if next_damage < n && damage_at <= t {
                if pending.is_none() {
                    own_frames += 1;
                }
                pending = Some(damage_at);
                next_damage += 1;
                continue;
            }
            if pending.is_some() && t >= busy_until && pacer.may_take(ms(t)) {
                pacer.took(ms(t));
                busy_until = t + work_ms;
                pending = None;
            }
            t += 0.1;
        }
        own_frames
    }

    #[test]
    fn a_60_fps_animation_is_captured_at_60_fps_even_when_capturing_takes_time() {
        // Every damage gets its own frame: 4 ms of work per capture does not stretch the period.
        assert_eq!(simulate(1000.0 / 60.0, |_| 0.0, 4.0, 600), 600);
    }

    #[test]
    fn jitter_in_the_damage_does_not_drop_frames() {
        // +-3 ms of jitter around a 60 Hz animation.
        let jitter = |i: usize| [0.0, 3.0, -3.0, 2.0, -1.0, 3.0, -3.0][i % 7];
        assert_eq!(simulate(1000.0 / 60.0, jitter, 4.0, 600), 600);
    }

    #[test]
    fn the_average_rate_never_exceeds_max_fps() {
        // Damage every 5 ms (200 Hz) for 10 s: at most 60 frames a second (plus the burst).
        let mut pacer = Pacer::new(60, Duration::from_secs(1));
        let mut frames = 0;
        let mut t = 0.0;
        while t < 10_000.0 {
            if pacer.may_take(ms(t)) {
                pacer.took(ms(t));
                frames += 1;
            }
            t += 5.0;
        }
        assert!((595..=602).contains(&frames), "{frames} frames in 10 s");
    }

    #[test]
    fn wait_says_when_the_next_frame_is_allowed() {
        let mut pacer = Pacer::new(50, Duration::from_secs(1));
        assert!(pacer.may_take(ms(0.0)));
        assert_eq!(pacer.wait(ms(0.0)), Duration::ZERO);
        pacer.took(ms(0.0));
        assert!(!pacer.may_take(ms(10.0)));
        let w = pacer.wait(ms(10.0));
        assert!((w.as_secs_f64() * 1000.0 - 10.0).abs() < 0.01, "{w:?}");
        assert!(pacer.may_take(ms(20.0)));
    }

    #[test]
    fn the_burst_is_bounded() {
        // After a long pause, at most BURST frames' worth of credit: two frames back to back are
        // allowed once (1.5 credit), a third is not.
        let mut pacer = Pacer::new(60, Duration::from_secs(1));
        pacer.took(ms(0.0));
        assert!(pacer.may_take(ms(5000.0)));
        pacer.took(ms(5000.0));
        assert!(
            !pacer.may_take(ms(5000.0)),
            "only half a frame of credit left"
        );
        assert!(pacer.may_take(ms(5000.0 + 1000.0 / 120.0 + 0.01)));
    }

    #[test]
    fn idle_repeat_follows_the_last_frame() {
        let mut pacer = Pacer::new(60, ms(100.0));
        assert!(
            !pacer.idle_due(ms(1000.0)),
            "nothing to repeat before the first frame"
        );
        assert_eq!(pacer.until_idle(ms(0.0)), None);
        pacer.took(ms(1000.0));
        assert!(!pacer.idle_due(ms(1099.0)));
        assert!(pacer.idle_due(ms(1100.0)));
        assert_eq!(pacer.until_idle(ms(1040.0)), Some(ms(60.0)));
    }
}
