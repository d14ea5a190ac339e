//! Fuzz target: the relay state machine fed an agent's frames (the input split on newlines),
//! after a valid hello and a viewer's session, interleaved with viewer calls chosen by the
//! first byte. Must never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vdesk_controller::auth::AgentAuth;
use vdesk_controller::relay::{ConnId, Relay, RelayConfig, TOMBSTONE_TTL};
use vdesk_controller::AgentToken;
use vdesk_protocol::{AgentToController, IceCandidate, SdpType, SessionDescription, Side, VmId};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(vm) = VmId::new("demo") else { return };
    let mut relay = Relay::new(
        RelayConfig {
            agent_auth: AgentAuth::from(AgentToken::new(TOKEN)),
            ice_servers: vec![],
            turn: None,
            idle_timeout: Duration::from_secs(30),
            tombstone_ttl: TOMBSTONE_TTL,
            max_sessions_per_vm: 4,
            max_sessions_per_token: 2,
        },
        [vm.clone()],
    );
    let t0 = Instant::now();
    let conn = ConnId(1);
    relay.agent_connected(conn);
    if mode & 1 == 1 {
        relay.agent_message(
            conn,
            AgentToController::Hello {
                vm_id: vm.clone(),
                token: TOKEN.into(),
                protocol_version: vdesk_protocol::PROTOCOL_VERSION,
                agent_version: "fuzz".into(),
            },
            t0,
        );
    }
    let offer = SessionDescription { kind: SdpType::Offer, sdp: OFFER.into() };
    let session = relay.create_session(vm, offer, t0).ok();
    for (i, line) in rest.split(|b| *b == b'\n').enumerate() {
        let now = t0 + Duration::from_secs(i as u64);
        match serde_json::from_slice::<AgentToController>(line) {
            Ok(msg) => relay.agent_message(conn, msg, now),
            Err(_) => relay.agent_bad_frame(conn, "bad frame"),
        }
        if let Some(id) = &session {
            match (mode >> 1) % 5 {
                0 => {
                    let c = IceCandidate {
                        candidate: String::from_utf8_lossy(line).into_owned(),
                        sdp_mid: Some("0".into()),
                        ..IceCandidate::default()
                    };
                    let _ = relay.post_candidate(id, Side::Browser, c, now);
                }
                1 => {
                    let _ = relay.poll_candidates(id, Side::Vm, now);
                }
                2 => {
                    let _ = relay.stream_opened(id, i as u64, now);
                }
                3 => relay.tick(now + Duration::from_secs(120)),
                _ => {
                    let _ = relay.answer(id, now);
                }
            }
        }
        let _ = relay.take_outbound();
    }
    relay.agent_disconnected(conn, t0 + Duration::from_secs(1000));
    relay.tick(t0 + Duration::from_secs(2000));
    let _ = relay.take_outbound();
});
