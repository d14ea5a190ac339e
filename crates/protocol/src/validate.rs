//! Validation of what arrives from the network: SDP and ICE candidate strings. Cheap, structural
//! checks that turn garbage into a clear 400 before it reaches a peer; the peers parse the rest.

use std::fmt;

/// Largest SDP we accept. A browser offer with video, audio and a data channel is ~5 KiB.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Largest candidate line we accept (RFC 8839 lines are well under 256 bytes, an mDNS host name
/// and the usual extensions included).
pub const MAX_CANDIDATE_LEN: usize = 512;
/// Largest `sdpMid` (a media id token; browsers use "0", "1", "video"...).
pub const MAX_SDP_MID_LEN: usize = 64;
/// Largest `usernameFragment` (RFC 8445 allows ice-ufrag up to 256 characters).
pub const MAX_UFRAG_LEN: usize = 256;

/// What is wrong with a field of a message, in words fit for an API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub field: &'static str,
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for ValidationError {}

/// Checks that `sdp` looks like a session description: starts with `v=0`, has at least one
/// `m=` line, fits in [`MAX_SDP_LEN`], has no NUL or other control bytes but CR/LF/TAB.
pub fn check_sdp(sdp: &str) -> Result<(), ValidationError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(ValidationError::new(
            "sdp",
            format!("is longer than {MAX_SDP_LEN} bytes"),
        ));
    }
    if !sdp.starts_with("v=0") {
        return Err(ValidationError::new("sdp", "must start with \"v=0\""));
    }
    if sdp
        .bytes()
        .any(|b| b.is_ascii_control() && !matches!(b, b'\r' | b'\n' | b'\t'))
    {
        return Err(ValidationError::new("sdp", "contains control characters"));
    }
    if !sdp.lines().any(|l| l.starts_with("m=")) {
        return Err(ValidationError::new("sdp", "has no media (m=) section"));
    }
    Ok(())
}

/// Checks a candidate line: empty (end of candidates) or `candidate:...` on one line.
pub fn check_candidate_line(line: &str) -> Result<(), ValidationError> {
    if line.len() > MAX_CANDIDATE_LEN {
        return Err(ValidationError::new(
            "candidate",
            format!("is longer than {MAX_CANDIDATE_LEN} bytes"),
        ));
    }
    if line.is_empty() {
        return Ok(());
    }
    let body = line.strip_prefix("a=").unwrap_or(line);
    if !body.starts_with("candidate:") {
        return Err(ValidationError::new(
            "candidate",
            "must start with \"candidate:\" (or be empty for end-of-candidates)",
        ));
    }
    if line.bytes().any(|b| b.is_ascii_control()) {
        return Err(ValidationError::new(
            "candidate",
            "must be a single line without control characters",
        ));
    }
    if body.split_ascii_whitespace().count() < 8 {
        return Err(ValidationError::new(
            "candidate",
            "has fewer than the 8 fields of RFC 8839",
        ));
    }
    Ok(())
}

/// Checks an optional short token field of a candidate (`sdpMid`, `usernameFragment`): at most
/// `max` bytes of printable ASCII without spaces. The error names the field.
pub fn check_candidate_token(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<(), ValidationError> {
    let Some(v) = value else { return Ok(()) };
    if v.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is longer than {max} bytes"),
        ));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::new(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_checks() {
        assert!(
            check_sdp("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
                .is_ok()
        );
        assert_eq!(check_sdp("hello").unwrap_err().field, "sdp");
        assert!(check_sdp("v=0\r\n").is_err(), "no m= line");
        assert!(check_sdp("v=0\r\nm=video\0").is_err());
        assert!(check_sdp(&format!("v=0\nm=x\n{}", "a".repeat(MAX_SDP_LEN))).is_err());
    }

    #[test]
    fn candidate_checks() {
        let good = "candidate:1 1 UDP 2122252543 192.0.2.1 50000 typ host";
        assert!(check_candidate_line(good).is_ok());
        assert!(check_candidate_line(&format!("a={good}")).is_ok());
        assert!(check_candidate_line("").is_ok());
        assert!(check_candidate_line("candidate:1 1 UDP").is_err());
        assert!(check_candidate_line("bogus").is_err());
        assert!(check_candidate_line(&format!("{good}\r\na=evil")).is_err());
        let long = format!("{good} {}", "x".repeat(MAX_CANDIDATE_LEN));
        assert_eq!(check_candidate_line(&long).unwrap_err().field, "candidate");
    }

    #[test]
    fn candidate_token_checks() {
        assert!(check_candidate_token("sdpMid", None, 64).is_ok());
        assert!(check_candidate_token("sdpMid", Some("0"), 64).is_ok());
        assert!(check_candidate_token("usernameFragment", Some("a+/Z9"), 256).is_ok());
        let e = check_candidate_token("usernameFragment", Some(&"u".repeat(257)), 256).unwrap_err();
        assert_eq!(e.field, "usernameFragment");
        assert!(check_candidate_token("sdpMid", Some("a b"), 64).is_err());
        assert!(check_candidate_token("sdpMid", Some("a\nb"), 64).is_err());
    }
}
