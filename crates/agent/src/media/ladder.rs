//! The quality ladder: which rung of a stream a viewer gets. Pure logic, unit-tested without
//! GStreamer.

/// A rung of the ladder: the full picture, or a lower one for viewers on a bad link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rung {
    /// Full resolution, the agent's `--bitrate` at most.
    Full,
    /// Half resolution, at most `low_rung_kbps`.
    Low,
}

/// The low rung's bitrate budget: a quarter of the full rung's (half the resolution each way),
/// never below the agent's minimum.
pub fn low_rung_kbps(min_kbps: u32, max_kbps: u32) -> u32 {
    (max_kbps / 4).max(min_kbps).min(max_kbps)
}
