//! The WebSocket media path (the fallback when WebRTC cannot connect): the messages of the
//! agent's media link (`GET /api/agent/media`) and the binary framing of one encoded video frame,
//! used agent -> controller (with the session id) and controller -> viewer (without it).
//! Pure: no I/O. See docs/protocol.md "WebSocket media".

use serde::{Deserialize, Serialize};

use crate::{SessionGrant, SessionId};

/// What the controller tells the agent on the media link (JSON text frames), after the same
/// `challenge`/`hello`/`welcome` as the signalling link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ControllerToMedia {
    /// A WebSocket viewer arrived: stream to it under `session_id`, with the link's grant.
    WsOpen {
        session_id: SessionId,
        #[serde(flatten)]
        grant: SessionGrant,
    },
    /// The viewer left (or its link expired): stop its stream, release what it held.
    WsClose { session_id: SessionId },
    /// One message from the viewer, as it sent it: a `ViewerToAgent` JSON text, checked by the
    /// agent exactly like a data-channel message.
    WsInput { session_id: SessionId, text: String },
    /// The viewer (or the controller's queue for it) needs a keyframe.
    WsKeyframe { session_id: SessionId },
    /// The viewer's measured throughput, kbit/s (the agent's ladder follows it).
    WsRate { session_id: SessionId, kbps: u32 },
}

/// What the agent tells the controller on the media link (JSON text frames; video frames are
/// binary, see [`Frame`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum MediaToController {
    /// One `AgentToViewer` JSON text for the viewer of `session_id`.
    WsOutput { session_id: SessionId, text: String },
    /// The agent ended this viewer's stream (media failure, link expiry).
    WsEnded {
        session_id: SessionId,
        reason: String,
    },
}

/// Largest JSON text message on the media link or from a WebSocket viewer (a `cursor` image is
/// at most 256x256 RGBA in base64, about 350 KiB).
pub const MAX_WS_TEXT: usize = 512 * 1024;
/// Largest encoded frame carried (a 4K keyframe at a high bitrate stays well under it).
pub const MAX_WS_FRAME: usize = 4 * 1024 * 1024;

/// Frame kind byte: an encoded video frame (the only kind so far).
pub const FRAME_VIDEO: u8 = 1;
/// Flag bit: the frame is a keyframe (decodable alone; H.264 carries SPS/PPS with it).
pub const FLAG_KEYFRAME: u8 = 1;
/// Bytes of the header after the session id: pts and capture time, u64 big-endian each.
const TIMES: usize = 16;

/// The codec of a frame (byte 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsCodec {
    /// H.264 Annex B (byte stream), one access unit per frame.
    H264 = 1,
    Vp8 = 2,
    Vp9 = 3,
}

impl WsCodec {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::H264),
            2 => Some(Self::Vp8),
            3 => Some(Self::Vp9),
            _ => None,
        }
    }
}

/// One encoded video frame, as framed on both hops:
///
/// ```text
/// 0      kind (1 = video)
/// 1      flags (bit 0: keyframe)
/// 2      codec (1 = H.264 Annex B, 2 = VP8, 3 = VP9)
/// 3      n = session id length (0 on the viewer hop; 32 on the agent hop)
/// 4..    session id, n ASCII bytes
/// +0     pts, microseconds, u64 big-endian (the stream's own timeline)
/// +8     capture time, Unix microseconds, u64 big-endian (when the agent took the picture)
/// +16..  the encoded frame
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader<'a> {
    pub keyframe: bool,
    pub codec: WsCodec,
    /// Empty on the viewer hop.
    pub session: &'a str,
    pub pts_us: u64,
    pub capture_us: u64,
}

/// Why a binary frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Short,
    Kind(u8),
    Codec(u8),
    Session,
    TooLarge,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short => write!(f, "frame shorter than its header"),
            Self::Kind(k) => write!(f, "unknown frame kind {k}"),
            Self::Codec(c) => write!(f, "unknown codec {c}"),
            Self::Session => write!(f, "session id is not ASCII"),
            Self::TooLarge => write!(f, "frame larger than {MAX_WS_FRAME} bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

impl FrameHeader<'_> {
    /// The header's size in bytes.
    pub fn len(&self) -> usize {
        4 + self.session.len() + TIMES
    }

    /// Never empty (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Header followed by `payload`. A session id over 255 bytes is cut (ids are 32).
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let session = &self.session.as_bytes()[..self.session.len().min(255)];
        let mut out = Vec::with_capacity(4 + session.len() + TIMES + payload.len());
        out.push(FRAME_VIDEO);
        out.push(if self.keyframe { FLAG_KEYFRAME } else { 0 });
        out.push(self.codec as u8);
        out.push(session.len() as u8);
        out.extend_from_slice(session);
        out.extend_from_slice(&self.pts_us.to_be_bytes());
        out.extend_from_slice(&self.capture_us.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// Reads a frame: its header and where the payload starts. Never panics on any input.
pub fn parse_frame(bytes: &[u8]) -> Result<(FrameHeader<'_>, usize), FrameError> {
    if bytes.len() > MAX_WS_FRAME + 4 + 255 + TIMES {
        return Err(FrameError::TooLarge);
    }
    let [kind, flags, codec, n, rest @ ..] = bytes else {
        return Err(FrameError::Short);
    };
    if *kind != FRAME_VIDEO {
        return Err(FrameError::Kind(*kind));
    }
    let codec = WsCodec::from_byte(*codec).ok_or(FrameError::Codec(*codec))?;
    let n = usize::from(*n);
    if rest.len() < n + TIMES {
        return Err(FrameError::Short);
    }
    let session = std::str::from_utf8(&rest[..n])
        .ok()
        .filter(|s| s.is_ascii())
        .ok_or(FrameError::Session)?;
    let mut pts = [0u8; 8];
    pts.copy_from_slice(&rest[n..n + 8]);
    let mut cap = [0u8; 8];
    cap.copy_from_slice(&rest[n + 8..n + TIMES]);
    Ok((
        FrameHeader {
            keyframe: flags & FLAG_KEYFRAME != 0,
            codec,
            session,
            pts_us: u64::from_be_bytes(pts),
            capture_us: u64::from_be_bytes(cap),
        },
        4 + n + TIMES,
    ))
}

/// The same frame for the viewer hop: the header without the session id, then the payload.
pub fn strip_session(bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
    let (header, start) = parse_frame(bytes)?;
    let viewer = FrameHeader {
        session: "",
        ..header
    };
    Ok(viewer.encode(&bytes[start..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_lose_the_session_for_the_viewer() {
        let h = FrameHeader {
            keyframe: true,
            codec: WsCodec::H264,
            session: "0123456789abcdef0123456789abcdef",
            pts_us: 42,
            capture_us: 1_700_000_000_000_000,
        };
        let bytes = h.encode(b"\0\0\0\x01\x67");
        let (back, start) = parse_frame(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(&bytes[start..], b"\0\0\0\x01\x67");
        let viewer = strip_session(&bytes).unwrap();
        let (v, start) = parse_frame(&viewer).unwrap();
        assert_eq!(v.session, "");
        assert_eq!(
            (v.pts_us, v.capture_us, v.keyframe),
            (42, h.capture_us, true)
        );
        assert_eq!(&viewer[start..], b"\0\0\0\x01\x67");
    }

    #[test]
    fn malformed_frames_are_refused_not_panicked_on() {
        assert_eq!(parse_frame(&[]), Err(FrameError::Short));
        assert_eq!(parse_frame(&[1, 0, 1]), Err(FrameError::Short));
        assert_eq!(parse_frame(&[2, 0, 1, 0]), Err(FrameError::Kind(2)));
        assert_eq!(parse_frame(&[1, 0, 9, 0]), Err(FrameError::Codec(9)));
        assert_eq!(parse_frame(&[1, 0, 1, 200, 0]), Err(FrameError::Short));
        let mut bad = vec![1, 0, 1, 2, 0xff, 0xfe];
        bad.extend([0; 16]);
        assert_eq!(parse_frame(&bad), Err(FrameError::Session));
        // Every prefix of a good frame parses or fails cleanly.
        let good = FrameHeader {
            keyframe: false,
            codec: WsCodec::Vp8,
            session: "ab",
            pts_us: 1,
            capture_us: 2,
        }
        .encode(&[9; 10]);
        for i in 0..good.len() {
            let _ = parse_frame(&good[..i]);
        }
    }

    #[test]
    fn media_link_messages_are_camel_case_with_the_grant_flattened() {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let open = ControllerToMedia::WsOpen {
            session_id: id.clone(),
            grant: SessionGrant::default(),
        };
        let text = serde_json::to_string(&open).unwrap();
        assert!(text.contains("\"type\":\"wsOpen\""), "{text}");
        assert!(text.contains("\"sessionId\""), "{text}");
        assert!(text.contains("\"permission\":\"view\""), "{text}");
        assert_eq!(
            serde_json::from_str::<ControllerToMedia>(&text).unwrap(),
            open
        );
        let out = MediaToController::WsOutput {
            session_id: id,
            text: "{}".into(),
        };
        let text = serde_json::to_string(&out).unwrap();
        assert_eq!(
            serde_json::from_str::<MediaToController>(&text).unwrap(),
            out
        );
    }
}
