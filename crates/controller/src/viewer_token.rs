//! Viewer tokens: short-lived, signed statements "the bearer may view (or control) VM x until
//! time t". Format: `base64url(payload JSON) "." base64url(HMAC-SHA256(controller secret,
//! "vdesk-viewer-v1:" + first part))`, payload `{"vm", "perm", "exp" (unix seconds), "n" (random
//! id), "cb"? (clipboard direction, absent = both), "name"? (the viewer's display name)}`. Tokens
//! minted before `cb` and `name` existed stay valid. Minting and checking only: no HTTP here.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use vdesk_protocol::{ClipboardPolicy, Permission, VmId};

use crate::auth::{ct_eq, hex, ControllerSecret};

/// Longest token looked at; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 512;
/// Longest lifetime a token may be minted with: 30 days.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
const DOMAIN: &[u8] = b"vdesk-viewer-v1:";
/// Longest display name a link may carry, in characters (and at most 4 bytes each).
pub const MAX_NAME_CHARS: usize = 40;

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub vm: VmId,
    pub permission: Permission,
    /// Unix seconds after which the token is refused.
    pub expires: u64,
    /// The token's random id (16 hex digits): sessions are bound to it, limits count by it.
    pub id: String,
    /// Which way the clipboard may travel (`Both` for tokens that do not say).
    pub clipboard: ClipboardPolicy,
    /// The viewer's display name, if the link has one.
    pub name: Option<String>,
}

/// What a link grants besides its VM, permission and expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub clipboard: ClipboardPolicy,
    /// Checked with [`check_name`] by whoever takes it from a person.
    pub name: Option<String>,
}

/// A display name for a link: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control
/// characters. The error says what is wrong, for the flag's or the field's message.
pub fn check_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

#[derive(Serialize, Deserialize)]
struct Payload {
    vm: VmId,
    perm: Permission,
    exp: u64,
    n: String,
    #[serde(default, skip_serializing_if = "is_both")]
    cb: ClipboardPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

fn is_both(c: &ClipboardPolicy) -> bool {
    *c == ClipboardPolicy::Both
}

/// Why a token was refused. The messages are safe to show: they never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the viewer token is malformed")]
    Malformed,
    #[error("the viewer token's signature is not valid (was it minted by another controller?)")]
    BadSignature,
    #[error("the viewer token expired; ask for a new link")]
    Expired,
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A new token for `vm` with `permission`, valid until `expires` (unix seconds).
pub fn mint(secret: &ControllerSecret, vm: &VmId, permission: Permission, expires: u64) -> String {
    mint_with(secret, vm, permission, expires, &Extras::default())
}

/// [`mint`] with a clipboard direction and a display name.
pub fn mint_with(
    secret: &ControllerSecret,
    vm: &VmId,
    permission: Permission,
    expires: u64,
    extras: &Extras,
) -> String {
    let n: [u8; 8] = rand::random();
    let payload = Payload {
        vm: vm.clone(),
        perm: permission,
        exp: expires,
        n: hex(&n),
        cb: extras.clipboard,
        name: extras.name.clone(),
    };
    // Serializing a struct of strings and numbers cannot fail.
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(json);
    let sig = URL_SAFE_NO_PAD.encode(signature(secret, &body));
    format!("{body}.{sig}")
}

fn signature(secret: &ControllerSecret, body: &str) -> [u8; 32] {
    let mut msg = Vec::with_capacity(DOMAIN.len() + body.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(body.as_bytes());
    secret.sign(&msg)
}

/// Checks `token`'s signature (in constant time) and expiry at `now` (unix seconds).
pub fn verify(secret: &ControllerSecret, token: &str, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    if !ct_eq(&signature(secret, body), &sig) {
        return Err(TokenError::BadSignature);
    }
    // Signed by us: the payload is ours, but parse it defensively all the same.
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let p: Payload = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if now >= p.exp {
        return Err(TokenError::Expired);
    }
    Ok(Claims {
        vm: p.vm,
        permission: p.perm,
        expires: p.exp,
        id: p.n,
        clipboard: p.cb,
        name: p.name,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn secret() -> ControllerSecret {
        ControllerSecret::new("test-secret-0123456789abcdef")
    }

    #[test]
    fn round_trip() {
        let vm = VmId::new("demo").unwrap();
        let t = mint(&secret(), &vm, Permission::Control, 1_000);
        let c = verify(&secret(), &t, 999).unwrap();
        assert_eq!(c.vm, vm);
        assert_eq!(c.permission, Permission::Control);
        assert_eq!(c.expires, 1_000);
        assert_eq!(c.id.len(), 16);
        let t2 = mint(&secret(), &vm, Permission::View, 1_000);
        assert_ne!(
            verify(&secret(), &t2, 0).unwrap().id,
            c.id,
            "ids are random"
        );
        assert_eq!(
            verify(&secret(), &t2, 0).unwrap().permission,
            Permission::View
        );
    }

    #[test]
    fn clipboard_and_name_travel_and_old_tokens_stay_valid() {
        let vm = VmId::new("v".repeat(VmId::MAX_LEN)).unwrap();
        // The longest name of 4-byte characters still makes a token we accept.
        let name = check_name(&"\u{1F600}".repeat(MAX_NAME_CHARS)).unwrap();
        let extras = Extras {
            clipboard: ClipboardPolicy::FromVm,
            name: Some(name.clone()),
        };
        let t = mint_with(&secret(), &vm, Permission::Admin, 1_000, &extras);
        assert!(t.len() <= MAX_TOKEN_LEN, "{}", t.len());
        let c = verify(&secret(), &t, 0).unwrap();
        assert_eq!(c.clipboard, ClipboardPolicy::FromVm);
        assert_eq!(c.name.as_deref(), Some(name.as_str()));
        assert_eq!(c.permission, Permission::Admin);
        // A token of the old format (no cb, no name) means both directions and no name.
        let body = URL_SAFE_NO_PAD
            .encode(br#"{"vm":"demo","perm":"control","exp":1000,"n":"0123456789abcdef"}"#);
        let sig = URL_SAFE_NO_PAD.encode(signature(&secret(), &body));
        let c = verify(&secret(), &format!("{body}.{sig}"), 0).unwrap();
        assert_eq!(c.clipboard, ClipboardPolicy::Both);
        assert_eq!(c.name, None);
        for bad in ["", "  ", "a\nb", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_name("  Ada  ").unwrap(), "Ada");
    }

    #[test]
    fn expired_is_refused() {
        let t = mint(
            &secret(),
            &VmId::new("demo").unwrap(),
            Permission::View,
            1_000,
        );
        assert_eq!(verify(&secret(), &t, 1_000), Err(TokenError::Expired));
        assert_eq!(verify(&secret(), &t, 5_000), Err(TokenError::Expired));
    }

    #[test]
    fn other_secret_or_tampering_is_refused() {
        let t = mint(
            &secret(),
            &VmId::new("demo").unwrap(),
            Permission::View,
            1_000,
        );
        let other = ControllerSecret::new("another-secret-0123456789abc");
        assert_eq!(verify(&other, &t, 0), Err(TokenError::BadSignature));
        // Upgrade to control by editing the payload: the signature no longer matches.
        let (body, sig) = t.split_once('.').unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(json.replace("\"view\"", "\"control\""));
        assert_eq!(
            verify(&secret(), &format!("{forged}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            ".",
            "abc",
            "a.b.c",
            "!!!.???",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(verify(&secret(), bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_never_echo_the_token() {
        let t = mint(&secret(), &VmId::new("demo").unwrap(), Permission::View, 1);
        for e in [
            verify(&secret(), &t, 10).unwrap_err(),
            verify(&secret(), &format!("{t}x"), 0).unwrap_err(),
        ] {
            assert!(!e.to_string().contains(&t[..10]), "{e}");
        }
    }
}
