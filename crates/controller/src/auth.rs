//! The agents' shared secret: a newtype that never prints itself and compares in constant time,
//! and the `Authorization: Bearer` check of the agent-only HTTP routes. No other auth lives here.

use std::fmt;
use std::str::FromStr;

use axum::http::{header, HeaderMap};

/// The token every agent presents (in its `hello`, or as `Authorization: Bearer` on HTTP).
/// `Debug` and `Display` are redacted so that it can never end up in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(String);

impl AgentToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself, for handing to agents started by tests and scripts.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (the time depends on our length, never on where `given` differs).
    pub fn matches(&self, given: &str) -> bool {
        let (ours, theirs) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = ours.len() ^ theirs.len();
        for (i, b) in ours.iter().enumerate() {
            diff |= usize::from(b ^ theirs.get(i).copied().unwrap_or(0));
        }
        std::hint::black_box(diff) == 0
    }

    /// True when `headers` carry `Authorization: Bearer <this token>`.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .is_some_and(|t| self.matches(t.trim()))
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentToken(<redacted>)")
    }
}

impl FromStr for AgentToken {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn compares_whole_tokens_only() {
        let t = AgentToken::new("0123456789abcdef");
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeF"));
        assert!(!t.matches("0123456789abcde"));
        assert!(!t.matches("0123456789abcdef0"));
        assert!(!t.matches(""));
    }

    #[test]
    fn never_prints_the_secret() {
        let t = AgentToken::new("supersecretvalue");
        assert!(!format!("{t:?}").contains("supersecret"));
    }

    #[test]
    fn reads_bearer_header() {
        let t = AgentToken::new("0123456789abcdef");
        let mut h = HeaderMap::new();
        assert!(!t.authorizes(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(!t.authorizes(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        assert!(t.authorizes(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic 0123456789abcdef"),
        );
        assert!(!t.authorizes(&h));
    }
}
