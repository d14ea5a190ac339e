//! The agent's proof of its secret in `hello` (protocol 2): an HMAC over the controller's
//! per-connection nonce, so the secret itself never crosses the wire and a captured `hello` is
//! useless on any other connection. Both sides compute it here, so they cannot drift apart.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::VmId;

/// What the MAC covers before the nonce: names the purpose and the version, so the same secret
/// used elsewhere (e.g. as an HTTP bearer token) never yields this value.
pub const HELLO_PROOF_CONTEXT: &str = "vdesk-agent-hello-v1";

/// `hex(HMAC-SHA256(key = secret, "vdesk-agent-hello-v1:" + nonce + ":" + vm_id))`, lowercase.
/// `secret` is the agent secret as the operator gave it (its bytes are the key).
pub fn hello_proof(secret: &str, nonce: &str, vm_id: &VmId) -> String {
    // HMAC takes keys of any length: `new_from_slice` only fails for fixed-size-key MACs.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{HELLO_PROOF_CONTEXT}:{nonce}:{}", vm_id.as_str()).as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac() {
        let vm = VmId::new("demo").expect("valid id");
        // printf 'vdesk-agent-hello-v1:n0nce:demo' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            hello_proof("s3cret", "n0nce", &vm),
            "6b622275dc97eec1e9fdcf670d602aa9f8d71a5d7f3ad35fbe77d478887cd1e8"
        );
    }

    #[test]
    fn binds_secret_nonce_and_vm() {
        let (a, b) = (VmId::new("a").expect("id"), VmId::new("b").expect("id"));
        let p = hello_proof("secret", "n1", &a);
        assert_eq!(p.len(), 64);
        assert_ne!(p, hello_proof("secret", "n2", &a), "another nonce");
        assert_ne!(p, hello_proof("secret", "n1", &b), "another VM");
        assert_ne!(p, hello_proof("secreT", "n1", &a), "another secret");
    }
}
