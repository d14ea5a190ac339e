//! Time-limited TURN credentials (the "TURN REST API" scheme that coturn implements with
//! `use-auth-secret` and `static-auth-secret`): username = "<expiry unix seconds>:<label>",
//! credential = base64(HMAC-SHA1(shared secret, username)). The TURN server checks them without
//! asking us. Pure functions of their inputs; the time is passed in.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use vdesk_protocol::IceServer;

/// TURN server URLs with the secret they share with us, and how long credentials live.
#[derive(Clone)]
pub struct TurnRest {
    pub urls: Vec<String>,
    secret: String,
    pub ttl: Duration,
}

impl TurnRest {
    pub fn new(urls: Vec<String>, secret: impl Into<String>, ttl: Duration) -> Self {
        Self {
            urls,
            secret: secret.into(),
            ttl,
        }
    }

    /// An `RTCIceServer` with credentials for `label` (a VM or session id), valid for `ttl`
    /// from `now` (unix seconds).
    pub fn ice_server(&self, label: &str, now: u64) -> IceServer {
        self.ice_server_until(label, now, None)
    }

    /// Like [`Self::ice_server`], but valid no later than `not_after` (unix seconds; the expiry
    /// of the viewer link they are for): credentials never outlive the link.
    pub fn ice_server_until(&self, label: &str, now: u64, not_after: Option<u64>) -> IceServer {
        let mut expiry = now.saturating_add(self.ttl.as_secs());
        if let Some(limit) = not_after {
            expiry = expiry.min(limit);
        }
        let username = format!("{expiry}:{label}");
        IceServer {
            urls: self.urls.clone(),
            credential: Some(credential(&self.secret, &username)),
            username: Some(username),
        }
    }
}

impl fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// base64(HMAC-SHA1(secret, username)), the password the TURN server expects for `username`.
pub fn credential(secret: &str, username: &str) -> String {
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn known_vector() {
        // `printf '1433895918506:my_username' | openssl dgst -sha1 -binary -hmac my_secret | base64`
        assert_eq!(
            credential("my_secret", "1433895918506:my_username"),
            "gKwSWE2uKuZnhCArog06lwc23/A="
        );
    }

    #[test]
    fn ice_server_names_expiry_and_label() {
        let t = TurnRest::new(
            vec!["turn:192.0.2.1:3478".into()],
            "s3cret",
            Duration::from_secs(3600),
        );
        let s = t.ice_server("demo", 1_000_000);
        assert_eq!(s.urls, ["turn:192.0.2.1:3478"]);
        assert_eq!(s.username.as_deref(), Some("1003600:demo"));
        assert_eq!(
            s.credential.as_deref(),
            Some(credential("s3cret", "1003600:demo").as_str())
        );
        assert!(!format!("{t:?}").contains("s3cret"));
        let s = t.ice_server_until("demo", 1_000_000, Some(1_000_120));
        assert_eq!(
            s.username.as_deref(),
            Some("1000120:demo"),
            "the link's end"
        );
        let s = t.ice_server_until("demo", 1_000_000, Some(9_000_000));
        assert_eq!(
            s.username.as_deref(),
            Some("1003600:demo"),
            "never past the ttl"
        );
    }
}
