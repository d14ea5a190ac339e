//! Fuzz target: any bytes as every JSON message of the protocol, and validation of whatever
//! parses (SDP checks, candidate checks). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdesk_protocol::{AgentToController, CreateSession, PostCandidate, SdpType};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<AgentToController>(data) {
        let _ = serde_json::to_string(&m);
    }
    if let Ok(c) = serde_json::from_slice::<CreateSession>(data) {
        let _ = c.offer.validate(SdpType::Offer);
    }
    if let Ok(p) = serde_json::from_slice::<PostCandidate>(data) {
        let _ = p.candidate.validate();
    }
});
