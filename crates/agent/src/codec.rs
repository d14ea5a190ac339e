//! Picks the video codec for a session from the browser's SDP offer: which of our encoders the
//! offer accepts, with the payload type and H.264 profile the browser wrote. Plain text parsing,
//! no GStreamer, so it is unit-tested on real browser offers.
//!
//! AV1 is not one of them: GStreamer 1.22 (Debian 12) has an AV1 encoder (`av1enc`, libaom) but
//! no AV1 RTP payloader (`rtpav1pay` lives in gst-plugins-rs, which Debian 12 does not package),
//! so `--codecs av1` is refused with that reason.

use std::fmt;
use std::str::FromStr;

/// A video codec the agent can encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    Vp8,
    /// VP9 profile 0 (8-bit 4:2:0), the only VP9 profile the agent sends.
    Vp9,
}

impl Codec {
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "h264" => Ok(Codec::H264),
            "vp8" => Ok(Codec::Vp8),
            "vp9" => Ok(Codec::Vp9),
            "av1" => Err(AV1_UNSUPPORTED.to_owned()),
            other => Err(format!(
                "unknown codec {other:?} (expected h264, vp8 or vp9)"
            )),
        }
    }
}

/// Why `av1` is not a codec this agent can send (shown for `--codecs av1`).
pub const AV1_UNSUPPORTED: &str = "AV1 is not supported: GStreamer 1.22 (Debian 12) has an AV1 \
encoder (av1enc) but no AV1 RTP payloader (rtpav1pay is in gst-plugins-rs, not packaged for \
Debian 12); use h264, vp8 or vp9";

/// What the answer will use: the codec, the browser's payload type for it, and (H.264) the
/// `profile-level-id` to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecChoice {
    pub codec: Codec,
    pub payload_type: u8,
    pub profile_level_id: Option<String>,
    /// Index of the offer's video m-line.
    pub mline: u32,
    /// The id the offer gives the playout-delay RTP header extension, if it offers it. With it
    /// the agent tells the browser to play each frame at once (`pipeline::PLAYOUT_DELAY`).
    pub playout_delay_ext: Option<u8>,
    /// The id the offer gives the transport-wide sequence number extension (`TWCC_URI`), if it
    /// offers it. With it the browser sends transport-wide congestion control feedback, which
    /// the rate controller reads (`stats.rs`, `rate.rs`).
    pub twcc_ext: Option<u8>,
}

/// URI of the RTP header extension that asks the receiver for a playout delay (Chrome honours it).
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// URI of the transport-wide sequence number RTP header extension (transport-cc feedback).
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Why no codec could be chosen; shown to the viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    NoVideo,
    NoCommonCodec { offered: Vec<String> },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::NoVideo => f.write_str("the offer has no video m-line"),
            CodecError::NoCommonCodec { offered } => write!(
                f,
                "the offer has no codec this agent can send (offered: {})",
                offered.join(", ")
            ),
        }
    }
}

impl std::error::Error for CodecError {}

struct Format {
    pt: u8,
    name: String,
    fmtp: Vec<(String, String)>,
}

impl Format {
    fn param(&self, key: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Chooses the first codec of `preferences` that the offer's first video m-line accepts.
pub fn choose(offer_sdp: &str, preferences: &[Codec]) -> Result<CodecChoice, CodecError> {
    let (mline, formats, extmaps) = video_formats(offer_sdp).ok_or(CodecError::NoVideo)?;
    let ext = |wanted: &str| {
        extmaps
            .iter()
            .find(|(_, uri)| uri == wanted)
            .map(|(id, _)| *id)
    };
    let playout_delay_ext = ext(PLAYOUT_DELAY_URI);
    let twcc_ext = ext(TWCC_URI);
    for &codec in preferences {
        let found = match codec {
            Codec::Vp8 => formats
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case("VP8"))
                .map(|f| (f.pt, None)),
            // Profile 0 only; a format without profile-id is profile 0 (RFC 9628).
            Codec::Vp9 => formats
                .iter()
                .find(|f| {
                    f.name.eq_ignore_ascii_case("VP9")
                        && f.param("profile-id").is_none_or(|p| p.trim() == "0")
                })
                .map(|f| (f.pt, None)),
            Codec::H264 => best_h264(&formats),
        };
        if let Some((payload_type, profile_level_id)) = found {
            return Ok(CodecChoice {
                codec,
                payload_type,
                profile_level_id,
                mline,
                playout_delay_ext,
                twcc_ext,
            });
        }
    }
    let mut offered: Vec<String> = formats.iter().map(|f| f.name.clone()).collect();
    offered.dedup();
    Err(CodecError::NoCommonCodec { offered })
}

/// Puts the offer's `profile-level-id` into the answer's `a=fmtp` line of the chosen H.264
/// payload when webrtcbin left it out (it does when Chrome offers several H.264 profiles): without
/// it the answer would declare Baseline level 1.0 (RFC 6184's default). The stream is
/// constrained baseline, which every offered H.264 profile can decode. Other SDP is unchanged.
pub fn complete_answer(answer: &str, choice: &CodecChoice) -> String {
    let Some(plid) = choice.profile_level_id.as_deref() else {
        return answer.to_owned();
    };
    let prefix = format!("a=fmtp:{} ", choice.payload_type);
    let eol = if answer.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut out: Vec<String> = Vec::new();
    for line in answer.split(eol) {
        if line.starts_with(&prefix) && !line.contains("profile-level-id=") {
            out.push(format!("{line};profile-level-id={plid}"));
        } else {
            out.push(line.to_owned());
        }
    }
    out.join(eol)
}

/// H.264 with packetization-mode=1 that a constrained-baseline stream satisfies: prefer
/// constrained baseline (42e0..), then baseline (4200..), then any other profile (a
/// constrained-baseline stream is a valid main/high stream).
fn best_h264(formats: &[Format]) -> Option<(u8, Option<String>)> {
    let candidates: Vec<&Format> = formats
        .iter()
        .filter(|f| {
            f.name.eq_ignore_ascii_case("H264") && f.param("packetization-mode") == Some("1")
        })
        .collect();
    let rank = |f: &Format| -> u8 {
        match f.param("profile-level-id").map(|p| p.to_ascii_lowercase()) {
            Some(p) if p.starts_with("42e0") => 0,
            Some(p) if p.starts_with("4200") => 1,
            Some(_) => 2,
            None => 3,
        }
    };
    candidates.into_iter().min_by_key(|f| rank(f)).map(|f| {
        let plid = f
            .param("profile-level-id")
            .unwrap_or("42e01f")
            .to_ascii_lowercase();
        (f.pt, Some(plid))
    })
}

/// The formats of the first `m=video` section, in offer order, with their rtpmap and fmtp, and
/// its one-byte header extensions (`a=extmap`, ids 1-14) as (id, uri).
#[allow(clippy::type_complexity)]
fn video_formats(sdp: &str) -> Option<(u32, Vec<Format>, Vec<(u8, String)>)> {
    let mut mline_index: i64 = -1;
    let mut in_video = false;
    let mut found: Option<(u32, Vec<Format>)> = None;
    let mut extmaps = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            if found.is_some() {
                break;
            }
            mline_index += 1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            in_video = fields.first() == Some(&"video");
            if in_video {
                let formats = fields
                    .iter()
                    .skip(3)
                    .filter_map(|pt| pt.parse::<u8>().ok())
                    .map(|pt| Format {
                        pt,
                        name: String::new(),
                        fmtp: Vec::new(),
                    })
                    .collect();
                found = Some((u32::try_from(mline_index).unwrap_or(0), formats));
            }
            continue;
        }
        if !in_video {
            continue;
        }
        let Some((_, formats)) = found.as_mut() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("a=extmap:") {
            if let Some((id, uri)) = rest.split_once(' ') {
                let id = id.split('/').next().unwrap_or("");
                if let Ok(id @ 1..=14) = id.parse::<u8>() {
                    let uri = uri.split_whitespace().next().unwrap_or("");
                    extmaps.push((id, uri.to_owned()));
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, enc)) = parse_pt(rest) {
                if let Some(f) = formats.iter_mut().find(|f| f.pt == pt) {
                    f.name = enc.split('/').next().unwrap_or("").to_owned();
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = parse_pt(rest) {
                if let Some(f) = formats.iter_mut().find(|f| f.pt == pt) {
                    f.fmtp = params
                        .split(';')
                        .filter_map(|kv| kv.trim().split_once('='))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                }
            }
        }
    }
    found.map(|(i, formats)| {
        let formats = formats.into_iter().filter(|f| !f.name.is_empty()).collect();
        (i, formats, extmaps)
    })
}

fn parse_pt(rest: &str) -> Option<(u8, &str)> {
    let (pt, value) = rest.split_once(' ')?;
    Some((pt.parse().ok()?, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a Chromium 156 offer (recvonly video + data channel).
    const CHROME_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:toffset\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n\
a=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:103 rtx/90000\r\n\
a=rtpmap:104 H264/90000\r\n\
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
a=rtpmap:106 H264/90000\r\n\
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:108 H264/90000\r\n\
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:127 H264/90000\r\n\
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n\
a=rtpmap:39 AV1/90000\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
a=mid:1\r\n";

    /// Lines of a Chromium 156 offer from this machine (headless, recvonly video): the m-line and
    /// the VP8, VP9 (all four profiles) and AV1 formats, verbatim.
    const CHROME_156_VP9_AV1: &str = "v=0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 35 36 37 38 102 103 104 107 108 109 114 115 116 117 39 40 41 42 43 44 45 46 47 48 118 119 120 49\r\n\
a=mid:0\r\n\
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:98 VP9/90000\r\n\
a=fmtp:98 profile-id=0\r\n\
a=rtpmap:99 rtx/90000\r\n\
a=fmtp:99 apt=98\r\n\
a=rtpmap:100 VP9/90000\r\n\
a=fmtp:100 profile-id=2\r\n\
a=rtpmap:101 rtx/90000\r\n\
a=fmtp:101 apt=100\r\n\
a=rtpmap:35 VP9/90000\r\n\
a=fmtp:35 profile-id=1\r\n\
a=rtpmap:37 VP9/90000\r\n\
a=fmtp:37 profile-id=3\r\n\
a=rtpmap:45 AV1/90000\r\n\
a=fmtp:45 level-idx=5;profile=0;tier=0\r\n\
a=rtpmap:47 AV1/90000\r\n\
a=fmtp:47 level-idx=5;profile=1;tier=0\r\n";

    #[test]
    fn picks_constrained_baseline_h264_with_packetization_mode_1() {
        let c = choose(CHROME_OFFER, &[Codec::H264, Codec::Vp8]).unwrap();
        assert_eq!(c.codec, Codec::H264);
        assert_eq!(c.payload_type, 106);
        assert_eq!(c.profile_level_id.as_deref(), Some("42e01f"));
        assert_eq!(c.mline, 0);
        assert_eq!(c.playout_delay_ext, Some(6));
        assert_eq!(c.twcc_ext, Some(3));
    }

    #[test]
    fn follows_preference_order() {
        let c = choose(CHROME_OFFER, &[Codec::Vp8, Codec::H264]).unwrap();
        assert_eq!((c.codec, c.payload_type), (Codec::Vp8, 96));
        assert_eq!(c.profile_level_id, None);
    }

    #[test]
    fn refuses_an_offer_without_a_common_codec() {
        let offer = "v=0\r\nm=audio 9 x 111\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 45\r\na=rtpmap:45 AV1/90000\r\n";
        let err = choose(offer, &[Codec::H264, Codec::Vp8]).unwrap_err();
        assert_eq!(
            err,
            CodecError::NoCommonCodec {
                offered: vec!["AV1".into()]
            }
        );
        assert!(err.to_string().contains("AV1"));
        assert_eq!(
            choose("v=0\r\nm=audio 9 x 0\r\n", &[Codec::Vp8]).unwrap_err(),
            CodecError::NoVideo
        );
    }

    #[test]
    fn video_mline_index_counts_earlier_sections() {
        let offer = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 100\r\na=rtpmap:100 VP8/90000\r\n";
        let c = choose(offer, &[Codec::Vp8]).unwrap();
        assert_eq!(c.mline, 1);
        assert_eq!(c.playout_delay_ext, None, "not offered, not used");
        assert_eq!(c.twcc_ext, None);
    }

    #[test]
    fn h264_packetization_mode_0_only_is_not_enough() {
        let offer = "v=0\r\nm=video 9 x 104\r\na=rtpmap:104 H264/90000\r\n\
a=fmtp:104 packetization-mode=0;profile-level-id=42e01f\r\n";
        assert!(choose(offer, &[Codec::H264]).is_err());
    }

    #[test]
    fn the_answer_gets_the_offered_h264_profile() {
        let c = choose(CHROME_OFFER, &[Codec::H264]).unwrap();
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 106 109\r\n\
a=fmtp:106 packetization-mode=1;level-asymmetry-allowed=1\r\na=fmtp:109 apt=106\r\n";
        let done = complete_answer(answer, &c);
        assert!(
            done.contains("a=fmtp:106 packetization-mode=1;level-asymmetry-allowed=1;profile-level-id=42e01f\r\n"),
            "{done}"
        );
        assert!(
            done.contains("a=fmtp:109 apt=106\r\n"),
            "other lines unchanged: {done}"
        );
        assert_eq!(
            complete_answer(&done, &c),
            done,
            "already complete: unchanged"
        );
        let vp8 = choose(CHROME_OFFER, &[Codec::Vp8]).unwrap();
        assert_eq!(complete_answer(answer, &vp8), answer);
    }

    #[test]
    fn codec_names_parse() {
        assert_eq!("H264".parse::<Codec>(), Ok(Codec::H264));
        assert_eq!("vp8".parse::<Codec>(), Ok(Codec::Vp8));
        assert_eq!("VP9".parse::<Codec>(), Ok(Codec::Vp9));
        let av1 = "av1".parse::<Codec>().unwrap_err();
        assert!(av1.contains("rtpav1pay"), "says why: {av1}");
        assert!("h265".parse::<Codec>().unwrap_err().contains("vp9"));
    }

    #[test]
    fn picks_vp9_profile_0_from_a_chromium_offer() {
        let c = choose(CHROME_156_VP9_AV1, &[Codec::Vp9, Codec::Vp8]).unwrap();
        assert_eq!((c.codec, c.payload_type), (Codec::Vp9, 98));
        assert_eq!(c.profile_level_id, None);
        assert_eq!(c.playout_delay_ext, Some(5));
        let c = choose(CHROME_156_VP9_AV1, &[Codec::Vp8, Codec::Vp9]).unwrap();
        assert_eq!((c.codec, c.payload_type), (Codec::Vp8, 96));
    }

    #[test]
    fn vp9_needs_profile_0() {
        // Only 10-bit / 4:4:4 profiles offered: not something vp9enc's I420 stream satisfies.
        let offer = "v=0\r\nm=video 9 x 100 35 96\r\na=rtpmap:100 VP9/90000\r\n\
a=fmtp:100 profile-id=2\r\na=rtpmap:35 VP9/90000\r\na=fmtp:35 profile-id=1\r\n\
a=rtpmap:96 VP8/90000\r\n";
        let c = choose(offer, &[Codec::Vp9, Codec::Vp8]).unwrap();
        assert_eq!(c.codec, Codec::Vp8, "VP9 skipped, next preference used");
        assert!(choose(offer, &[Codec::Vp9]).is_err());
        // Profile 2 listed first, profile 0 later: profile 0's payload type is used.
        let offer = "v=0\r\nm=video 9 x 100 98\r\na=rtpmap:100 VP9/90000\r\n\
a=fmtp:100 profile-id=2\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\n";
        assert_eq!(choose(offer, &[Codec::Vp9]).unwrap().payload_type, 98);
        // No fmtp at all (Firefox-style): profile 0 by default.
        let offer = "v=0\r\nm=video 9 x 121\r\na=rtpmap:121 VP9/90000\r\n";
        assert_eq!(choose(offer, &[Codec::Vp9]).unwrap().payload_type, 121);
    }

    #[test]
    fn an_av1_only_offer_is_refused_by_name() {
        let offer = "v=0\r\nm=video 9 x 45\r\na=rtpmap:45 AV1/90000\r\n\
a=fmtp:45 level-idx=5;profile=0;tier=0\r\n";
        let err = choose(offer, &[Codec::H264, Codec::Vp8, Codec::Vp9]).unwrap_err();
        assert_eq!(
            err,
            CodecError::NoCommonCodec {
                offered: vec!["AV1".into()]
            }
        );
    }
}
