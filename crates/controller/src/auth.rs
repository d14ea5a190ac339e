//! Agent authentication: the controller secret and the per-VM agent secrets derived from it
//! (HMAC-SHA256(secret, "agent:" + vmId), hex), the older shared agent token, the constant-time
//! comparison they all use and the `Authorization: Bearer` header. Secrets here never print
//! themselves. Viewer tokens are in `viewer_token.rs`.

use std::fmt;
use std::str::FromStr;

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use vdesk_protocol::VmId;

/// Constant-time equality: the time depends on `ours`' length only, never on where they differ.
pub fn ct_eq(ours: &[u8], theirs: &[u8]) -> bool {
    let mut diff = ours.len() ^ theirs.len();
    for (i, b) in ours.iter().enumerate() {
        diff |= usize::from(b ^ theirs.get(i).copied().unwrap_or(0));
    }
    std::hint::black_box(diff) == 0
}

/// The value of `Authorization: Bearer <value>`, if the header is there in that form.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The controller's one secret (`--secret`): agent secrets are derived from it and viewer tokens
/// are signed with it. `Debug` is redacted.
#[derive(Clone)]
pub struct ControllerSecret(String);

impl ControllerSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// 32 random bytes, hex: for tests and embedders that do not care which secret it is.
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(hex(&bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// HMAC-SHA256 of `msg` under this secret.
    pub fn sign(&self, msg: &[u8]) -> [u8; 32] {
        // A HMAC key may have any length; `new_from_slice` cannot fail for HMAC.
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.0.as_bytes()) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    /// The secret agent `vm` presents: HMAC-SHA256(secret, "agent:" + vmId) as 64 hex digits.
    /// Knowing one VM's secret tells nothing about another's, nor about the controller secret.
    pub fn agent_secret(&self, vm: &VmId) -> String {
        hex(&self.sign(format!("agent:{}", vm.as_str()).as_bytes()))
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Documented by the hmac crate: HMAC accepts keys of any size.
    panic!("HMAC rejected a key, which it never does")
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for ControllerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControllerSecret(<redacted>)")
    }
}

impl FromStr for ControllerSecret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Who may register as an agent: the holder of VM `x`'s derived secret may register as `x` only;
/// the holder of the shared `--agent-token` (if one is configured) may register as any VM.
#[derive(Debug, Clone)]
pub struct AgentAuth {
    pub secret: Option<ControllerSecret>,
    pub shared: Option<AgentToken>,
}

impl AgentAuth {
    /// True when `given` is VM `vm`'s agent secret (or the shared token). Constant time.
    pub fn accepts(&self, vm: &VmId, given: &str) -> bool {
        let per_vm = self
            .secret
            .as_ref()
            .is_some_and(|s| ct_eq(s.agent_secret(vm).as_bytes(), given.as_bytes()));
        let shared = self.shared.as_ref().is_some_and(|t| t.matches(given));
        per_vm | shared
    }

    /// True when `proof` is [`vdesk_protocol::hello_proof`] over `nonce` and `vm` of VM `vm`'s
    /// agent secret (or of the shared token). Constant time; an empty nonce never verifies.
    pub fn accepts_proof(&self, vm: &VmId, nonce: &str, proof: &str) -> bool {
        if nonce.is_empty() {
            return false;
        }
        let per_vm = self.secret.as_ref().is_some_and(|s| {
            let expected = vdesk_protocol::hello_proof(&s.agent_secret(vm), nonce, vm);
            ct_eq(expected.as_bytes(), proof.as_bytes())
        });
        let shared = self.shared.as_ref().is_some_and(|t| {
            let expected = vdesk_protocol::hello_proof(t.expose(), nonce, vm);
            ct_eq(expected.as_bytes(), proof.as_bytes())
        });
        per_vm | shared
    }

    /// True when `headers` carry `Authorization: Bearer <VM vm's agent secret>`.
    pub fn authorizes(&self, vm: &VmId, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.accepts(vm, t))
    }
}

impl From<AgentToken> for AgentAuth {
    fn from(t: AgentToken) -> Self {
        Self {
            secret: None,
            shared: Some(t),
        }
    }
}

/// The shared agent token (`--agent-token`): its holder proves it in `hello` (see
/// [`AgentAuth::accepts_proof`]) or presents it as `Authorization: Bearer` on HTTP.
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
        ct_eq(self.0.as_bytes(), given.as_bytes())
    }

    /// True when `headers` carry `Authorization: Bearer <this token>`.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.matches(t))
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

    #[test]
    fn agent_secrets_are_per_vm() {
        let secret = ControllerSecret::new("controller-secret-0123456789");
        let (a, b) = (VmId::new("a").unwrap(), VmId::new("b").unwrap());
        let sa = secret.agent_secret(&a);
        assert_eq!(sa.len(), 64);
        assert_ne!(sa, secret.agent_secret(&b));
        // Independent check: `printf agent:a | openssl dgst -sha256 -hmac controller-secret-0123456789`
        assert_eq!(
            sa,
            "7e64c1e941b4b2ac41d54e2883090b30cc9037852dcc0b75893579e0c6a96fa5"
        );
        let auth = AgentAuth {
            secret: Some(secret),
            shared: None,
        };
        assert!(auth.accepts(&a, &sa));
        assert!(!auth.accepts(&b, &sa), "a's secret must not register b");
        assert!(!auth.accepts(&a, ""));
        assert!(!format!("{auth:?}").contains("controller-secret"));
    }

    #[test]
    fn hello_proofs_bind_the_nonce_and_the_vm() {
        let secret = ControllerSecret::new("controller-secret-0123456789");
        let (a, b) = (VmId::new("a").unwrap(), VmId::new("b").unwrap());
        let auth = AgentAuth {
            secret: Some(secret.clone()),
            shared: Some(AgentToken::new("shared-token-0123456789")),
        };
        let proof = vdesk_protocol::hello_proof(&secret.agent_secret(&a), "n1", &a);
        assert!(auth.accepts_proof(&a, "n1", &proof));
        assert!(
            !auth.accepts_proof(&a, "n2", &proof),
            "replayed on another nonce"
        );
        assert!(!auth.accepts_proof(&b, "n1", &proof), "another VM");
        assert!(!auth.accepts_proof(&a, "", &proof));
        // The secret in clear is not a proof.
        assert!(!auth.accepts_proof(&a, "n1", &secret.agent_secret(&a)));
        let shared = vdesk_protocol::hello_proof("shared-token-0123456789", "n1", &b);
        assert!(auth.accepts_proof(&b, "n1", &shared));
    }

    #[test]
    fn shared_token_still_works_for_any_vm() {
        let auth = AgentAuth::from(AgentToken::new("0123456789abcdef"));
        assert!(auth.accepts(&VmId::new("x").unwrap(), "0123456789abcdef"));
        assert!(!auth.accepts(&VmId::new("x").unwrap(), "0123456789abcdeF"));
    }
}
