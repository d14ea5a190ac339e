//! Signalling messages and ids shared by the vdesk controller, agent and viewer: serde types and
//! their validation, plus the Prometheus text of per-session stats (`metrics`), so both sides
//! expose the same metric names. No I/O, no async, no GStreamer: both sides depend on this crate, and the
//! viewer's JavaScript is checked against the JSON it produces (see `crates/protocol/tests/fixtures.rs` and `web/test/unit.test.mjs`).

pub mod doctor;
mod hello_proof;
mod ids;
mod input;
mod messages;
pub mod metrics;
mod validate;
pub mod wsmedia;

pub use hello_proof::{hello_proof, HELLO_PROOF_CONTEXT};
pub use ids::{SessionId, VmId};
pub use input::*;
pub use messages::*;
pub use validate::{
    ValidationError, MAX_CANDIDATE_LEN, MAX_SDP_LEN, MAX_SDP_MID_LEN, MAX_UFRAG_LEN,
};

/// Protocol version the agent announces in its `hello`; the controller refuses other majors.
/// 2: the controller sends `challenge` first and `hello` carries `proof` instead of the secret.
pub const PROTOCOL_VERSION: u32 = 2;
