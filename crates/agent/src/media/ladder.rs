//! The quality ladder: which rung of a stream a viewer gets, from that viewer's own bitrate
//! target (its transport-cc + loss controller, `rate.rs`). Pure logic with time passed in,
//! unit-tested without GStreamer.
//!
//! - Down: a viewer on the full rung whose target stays under `down_kbps` (1.5 x the low rung's
//!   budget) for `DOWN_HOLD` moves to the low rung, instead of pulling the full rung's encoder
//!   (which follows the lowest target of its viewers) down for everyone.
//! - Up: a viewer on the low rung whose target stays at or above `up_kbps` (2.5 x the low budget)
//!   for `UP_HOLD` moves back up, but not before it has stayed low for `stay`. The low rung's
//!   stream fits a bad link, so the controller's target grows back there whatever the link can
//!   really carry: going up is a probe. A probe that fails (down again within `FAILED_UP`)
//!   doubles the stay, up to `MAX_STAY`; one that holds resets it to `MIN_STAY`.

use std::time::Duration;

/// A rung of the ladder: the full picture, or a lower one for viewers on a bad link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rung {
    /// Full resolution, the agent's `--bitrate` at most.
    Full,
    /// Half resolution, at most `low_rung_kbps`.
    Low,
}

/// How long a target must stay low before the viewer moves down.
pub const DOWN_HOLD: Duration = Duration::from_millis(500);
/// How long a target must stay high before the viewer moves up.
pub const UP_HOLD: Duration = Duration::from_secs(3);
/// Shortest stay on the low rung.
pub const MIN_STAY: Duration = Duration::from_secs(8);
/// Longest stay on the low rung (after repeated failed probes).
pub const MAX_STAY: Duration = Duration::from_secs(120);
/// Down again within this of going up: the probe failed.
pub const FAILED_UP: Duration = Duration::from_secs(10);

/// The low rung's bitrate budget: a quarter of the full rung's (half the resolution each way),
/// never below the agent's minimum.
pub fn low_rung_kbps(min_kbps: u32, max_kbps: u32) -> u32 {
    (max_kbps / 4).max(min_kbps).min(max_kbps)
}

/// Where a viewer moves down and up, kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub down_kbps: u32,
    pub up_kbps: u32,
}

impl Thresholds {
    /// For a full rung of at most `max_kbps` and a floor of `min_kbps`. `None` when the range
    /// is too narrow for a lower rung to help (its budget would be over a third of the full one's).
    pub fn new(min_kbps: u32, max_kbps: u32) -> Option<Thresholds> {
        let low = low_rung_kbps(min_kbps, max_kbps);
        let down = low.saturating_mul(3) / 2;
        let up = (low.saturating_mul(5) / 2).min(max_kbps);
        (down < up && u64::from(low) * 3 <= u64::from(max_kbps)).then_some(Thresholds {
            down_kbps: down,
            up_kbps: up,
        })
    }
}

/// One viewer's rung.
#[derive(Debug, Clone)]
pub struct RungChooser {
    thresholds: Option<Thresholds>,
    rung: Rung,
    /// Since when the target has been past the threshold that would move the viewer.
    since: Option<Duration>,
    last_up: Option<Duration>,
    last_down: Option<Duration>,
    stay: Duration,
}

impl RungChooser {
    /// A viewer starts on the full rung. Without thresholds it stays there.
    pub fn new(thresholds: Option<Thresholds>) -> Self {
        Self {
            thresholds,
            rung: Rung::Full,
            since: None,
            last_up: None,
            last_down: None,
            stay: MIN_STAY,
        }
    }

    pub fn rung(&self) -> Rung {
        self.rung
    }

    /// How long the viewer stays low at least, after its last move down.
    pub fn stay(&self) -> Duration {
        self.stay
    }

    /// The viewer's target is `kbps` at `now`: `Some(rung)` when it moves.
    pub fn on_target(&mut self, kbps: u32, now: Duration) -> Option<Rung> {
        let t = self.thresholds?;
        let past = match self.rung {
            Rung::Full => kbps < t.down_kbps,
            Rung::Low => kbps >= t.up_kbps,
        };
        if !past {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let held = now.saturating_sub(since);
        match self.rung {
            Rung::Full if held >= DOWN_HOLD => {
                let failed_probe = self
                    .last_up
                    .is_some_and(|up| now.saturating_sub(up) < FAILED_UP);
                self.stay = if failed_probe {
                    (self.stay * 2).min(MAX_STAY)
                } else {
                    MIN_STAY
                };
                self.rung = Rung::Low;
                self.last_down = Some(now);
            }
            Rung::Low
                if held >= UP_HOLD
                    && self
                        .last_down
                        .is_none_or(|down| now.saturating_sub(down) >= self.stay) =>
            {
                self.rung = Rung::Full;
                self.last_up = Some(now);
            }
            _ => return None,
        }
        self.since = None;
        Some(self.rung)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// 4 Mbit/s full rung, 300 kbit/s floor: low rung 1000, down under 1500, up from 2500.
    fn chooser() -> RungChooser {
        RungChooser::new(Thresholds::new(300, 4000))
    }

    #[test]
    fn thresholds_follow_the_low_rungs_budget() {
        assert_eq!(low_rung_kbps(300, 4000), 1000);
        assert_eq!(
            Thresholds::new(300, 4000),
            Some(Thresholds {
                down_kbps: 1500,
                up_kbps: 2500
            })
        );
        assert_eq!(low_rung_kbps(300, 600), 300);
        assert_eq!(Thresholds::new(300, 600), None, "no room for a lower rung");
        assert_eq!(Thresholds::new(300, 300), None);
        let mut single = RungChooser::new(None);
        assert_eq!(single.on_target(10, ms(0)), None);
        assert_eq!(single.on_target(10, ms(60_000)), None);
    }

    #[test]
    fn a_viewer_whose_target_stays_low_moves_down() {
        let mut c = chooser();
        assert_eq!(c.on_target(1200, ms(0)), None, "not yet: one dip");
        assert_eq!(c.on_target(1200, ms(400)), None);
        assert_eq!(c.on_target(1200, ms(500)), Some(Rung::Low));
        assert_eq!(c.rung(), Rung::Low);
    }

    #[test]
    fn a_dip_shorter_than_the_hold_does_not_move_it() {
        let mut c = chooser();
        assert_eq!(c.on_target(1200, ms(0)), None);
        assert_eq!(c.on_target(3000, ms(300)), None);
        assert_eq!(c.on_target(1200, ms(600)), None, "the clock restarted");
        assert_eq!(c.on_target(1200, ms(1000)), None);
        assert_eq!(c.on_target(1200, ms(1100)), Some(Rung::Low));
    }

    #[test]
    fn between_the_thresholds_nothing_moves() {
        let mut c = chooser();
        for t in 0..100 {
            assert_eq!(c.on_target(2000, ms(t * 100)), None);
        }
        c.on_target(1000, ms(20_000));
        c.on_target(1000, ms(20_500));
        assert_eq!(c.rung(), Rung::Low);
        for t in 0..300 {
            assert_eq!(c.on_target(2000, ms(21_000 + t * 100)), None);
        }
        assert_eq!(c.rung(), Rung::Low);
    }

    #[test]
    fn up_again_after_the_stay_and_a_sustained_high_target() {
        let mut c = chooser();
        c.on_target(1000, ms(0));
        assert_eq!(c.on_target(1000, ms(500)), Some(Rung::Low));
        // The target grows back at once (the low stream fits): held 3 s, but the stay is 8 s.
        let mut up_at = None;
        for t in (600..20_000).step_by(100) {
            if c.on_target(4000, ms(t)) == Some(Rung::Full) {
                up_at = Some(t);
                break;
            }
        }
        assert_eq!(up_at, Some(8_500), "after MIN_STAY from the move down");
    }

    #[test]
    fn failed_probes_double_the_stay_and_a_good_one_resets_it() {
        let mut c = chooser();
        let mut now = 0;
        let mut stays = Vec::new();
        for _ in 0..6 {
            // Down, then up as soon as allowed, then down again 2 s later (the link is bad).
            c.on_target(1000, ms(now));
            now += 500;
            assert_eq!(c.on_target(1000, ms(now)), Some(Rung::Low));
            stays.push(c.stay().as_secs());
            loop {
                now += 100;
                if c.on_target(4000, ms(now)) == Some(Rung::Full) {
                    break;
                }
            }
            now += 2_000;
        }
        assert_eq!(stays, vec![8, 16, 32, 64, 120, 120]);
        // This time the full rung holds for a minute: the next move down stays the minimum.
        for t in (now..now + 60_000).step_by(500) {
            assert_eq!(c.on_target(4000, ms(t)), None);
        }
        now += 60_000;
        c.on_target(1000, ms(now));
        assert_eq!(c.on_target(1000, ms(now + 500)), Some(Rung::Low));
        assert_eq!(c.stay(), MIN_STAY);
    }
}
