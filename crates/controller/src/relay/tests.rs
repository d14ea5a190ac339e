//! Unit tests of the relay state machine: every input in every order, with explicit time.

use std::time::{Duration, Instant};

use vdesk_protocol::{
    AgentToController as A, ControllerToAgent as C, ControllerToViewer as V, ErrorCode,
    IceCandidate, SdpType, SessionDescription, SessionId, Side, VmId,
};

use super::*;
use crate::auth::AgentToken;

pub(super) const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// The challenge every test connection gets (the adapter draws a random one per connection).
pub(super) const NONCE: &str = "7e5751e5c0ffee0123456789abcdef007e5751e5c0ffee0123456789abcdef00";
pub(super) const OFFER: &str =
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
pub(super) const ANSWER: &str =
    "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

pub(super) fn vm(s: &str) -> VmId {
    VmId::new(s).unwrap()
}

pub(super) fn cand(n: u32) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:{n} 1 UDP 2122252543 192.0.2.{n} 5000{n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

pub(super) fn offer() -> SessionDescription {
    SessionDescription {
        kind: SdpType::Offer,
        sdp: OFFER.into(),
    }
}

pub(super) struct Fixture {
    pub(super) relay: Relay,
    pub(super) t0: Instant,
}

impl Fixture {
    pub(super) fn new() -> Self {
        Self::with(|_| {})
    }

    /// A fixture whose relay config is changed by `edit` first.
    pub(super) fn with(edit: impl FnOnce(&mut RelayConfig)) -> Self {
        let mut cfg = RelayConfig {
            agent_auth: AgentToken::new(TOKEN).into(),
            ice_servers: vec![],
            turn: None,
            idle_timeout: Duration::from_secs(30),
            tombstone_ttl: TOMBSTONE_TTL,
            agent_grace: AGENT_GRACE,
            max_sessions_per_vm: 0,
            max_sessions_per_token: 0,
            max_sessions: 1000,
            connect_timeout: Duration::from_secs(3600),
        };
        edit(&mut cfg);
        let relay = Relay::new(cfg, [vm("known")]);
        Self {
            relay,
            t0: Instant::now(),
        }
    }

    pub(super) fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    pub(super) fn out(&mut self) -> Vec<Outbound> {
        self.relay.take_outbound()
    }

    /// Connects agent `conn` for `vm` and checks the welcome.
    pub(super) fn agent(&mut self, conn: u64, vm_id: &str) -> ConnId {
        let conn = ConnId(conn);
        self.relay.agent_connected(conn, NONCE.into());
        self.relay.agent_message(conn, hello(vm_id, TOKEN), self.t0);
        let out = self.out();
        assert!(
            out.contains(&Outbound::ToAgent {
                conn,
                msg: C::Welcome {
                    ice_servers: vec![]
                }
            }),
            "{out:?}"
        );
        conn
    }

    /// Creates a session on `vm_id` and checks that the offer went to `conn`.
    pub(super) fn session(&mut self, conn: ConnId, vm_id: &str) -> SessionId {
        let id = self
            .relay
            .create_session(vm(vm_id), offer(), self.t0)
            .unwrap();
        assert_eq!(
            self.out(),
            vec![Outbound::ToAgent {
                conn,
                msg: C::Offer {
                    session_id: id.clone(),
                    sdp: OFFER.into(),
                    ice_servers: vec![],
                    grant: vdesk_protocol::SessionGrant {
                        permission: vdesk_protocol::Permission::Control,
                        ..Default::default()
                    },
                }
            }]
        );
        id
    }

    pub(super) fn viewer_events(&mut self) -> Vec<(u64, V)> {
        self.out()
            .into_iter()
            .filter_map(|o| match o {
                Outbound::ToViewer { seq, event, .. } => Some((seq, event)),
                _ => None,
            })
            .collect()
    }
}

/// A `hello` proving `token` over [`NONCE`].
pub(super) fn hello(vm_id: &str, token: &str) -> A {
    A::Hello {
        vm_id: vm(vm_id),
        proof: Some(vdesk_protocol::hello_proof(token, NONCE, &vm(vm_id))),
        token: None,
        protocol_version: vdesk_protocol::PROTOCOL_VERSION,
        agent_version: "test".into(),
        info: Default::default(),
    }
}

pub(super) fn ended(code: ErrorCode, reason: &str) -> V {
    V::Ended {
        code,
        reason: reason.into(),
    }
}

#[test]
fn hello_registers_the_vm_and_it_stays_known() {
    let mut f = Fixture::new();
    assert!(!f.relay.vm(&vm("known")).unwrap().online);
    assert!(f.relay.vm(&vm("new")).is_none());
    let conn = f.agent(1, "new");
    assert!(f.relay.vm(&vm("new")).unwrap().online);
    f.relay.agent_disconnected(conn, f.t0);
    let info = f.relay.vm(&vm("new")).unwrap();
    assert!(!info.online, "known but offline after the agent left");
    let names: Vec<String> = f.relay.vms().iter().map(|v| v.vm_id.to_string()).collect();
    assert_eq!(names, ["known", "new"]);
}

#[test]
fn wrong_token_or_version_is_refused_and_closed() {
    let mut f = Fixture::new();
    f.relay.agent_connected(ConnId(1), NONCE.into());
    f.relay
        .agent_message(ConnId(1), hello("known", "wrong-token-wrong-token"), f.t0);
    let out = f.out();
    assert!(
        matches!(
            &out[..],
            [
                Outbound::ToAgent {
                    msg: C::Error {
                        code: ErrorCode::Unauthorized,
                        ..
                    },
                    ..
                },
                Outbound::CloseAgent { conn: ConnId(1) }
            ]
        ),
        "{out:?}"
    );
    assert!(!f.relay.vm(&vm("known")).unwrap().online);
    // Anything after the refusal is ignored.
    f.relay
        .agent_message(ConnId(1), hello("known", TOKEN), f.t0);
    assert!(f.out().is_empty());

    f.relay.agent_connected(ConnId(2), NONCE.into());
    f.relay.agent_message(
        ConnId(2),
        A::Hello {
            vm_id: vm("known"),
            proof: Some(vdesk_protocol::hello_proof(TOKEN, NONCE, &vm("known"))),
            token: None,
            protocol_version: 3,
            agent_version: "x".into(),
            info: Default::default(),
        },
        f.t0,
    );
    let out = f.out();
    assert!(
        matches!(
            &out[..],
            [Outbound::ToAgent { msg: C::Error { code: ErrorCode::BadRequest, message }, .. },
             Outbound::CloseAgent { .. }] if message.contains("protocolVersion")
        ),
        "{out:?}"
    );
}

#[test]
fn a_hello_proves_the_secret_over_this_connections_nonce_only() {
    let mut f = Fixture::new();
    // A protocol 1 agent sends its secret in clear: refused by name, never checked.
    f.relay.agent_connected(ConnId(1), NONCE.into());
    let old = A::Hello {
        vm_id: vm("known"),
        proof: None,
        token: Some(TOKEN.into()),
        protocol_version: 1,
        agent_version: "0.1.0".into(),
        info: Default::default(),
    };
    f.relay.agent_message(ConnId(1), old, f.t0);
    let out = f.out();
    assert!(
        matches!(
            &out[..],
            [Outbound::ToAgent { msg: C::Error { code: ErrorCode::BadRequest, message }, .. },
             Outbound::CloseAgent { .. }] if message.contains("upgrade vdesk-agent")
        ),
        "{out:?}"
    );
    assert!(!f.relay.vm(&vm("known")).unwrap().online);

    // A hello captured on one connection is replayed on another: its nonce differs.
    let captured = hello("known", TOKEN);
    f.relay.agent_connected(ConnId(2), "another-nonce".into());
    f.relay.agent_message(ConnId(2), captured.clone(), f.t0);
    let out = f.out();
    assert!(
        matches!(
            &out[..],
            [
                Outbound::ToAgent {
                    msg: C::Error {
                        code: ErrorCode::Unauthorized,
                        ..
                    },
                    ..
                },
                Outbound::CloseAgent { .. }
            ]
        ),
        "{out:?}"
    );
    assert!(!f.relay.vm(&vm("known")).unwrap().online);
    // The same hello on the connection whose nonce it proves is accepted.
    f.relay.agent_connected(ConnId(3), NONCE.into());
    f.relay.agent_message(ConnId(3), captured, f.t0);
    assert!(f.relay.vm(&vm("known")).unwrap().online);
}

#[test]
fn first_message_must_be_hello_and_later_bad_frames_are_only_refused() {
    let mut f = Fixture::new();
    f.relay.agent_connected(ConnId(1), NONCE.into());
    f.relay.agent_bad_frame(ConnId(1), "not json");
    let out = f.out();
    assert!(
        matches!(out.last(), Some(Outbound::CloseAgent { conn: ConnId(1) })),
        "{out:?}"
    );

    let conn = f.agent(2, "known");
    f.relay.agent_bad_frame(conn, "not json");
    let out = f.out();
    assert!(
        matches!(
            &out[..],
            [Outbound::ToAgent {
                msg: C::Error {
                    code: ErrorCode::BadRequest,
                    ..
                },
                ..
            }]
        ),
        "{out:?}"
    );
    assert!(f.relay.vm(&vm("known")).unwrap().online, "still registered");
    f.relay.agent_message(conn, hello("known", TOKEN), f.t0);
    assert!(matches!(
        &f.out()[..],
        [Outbound::ToAgent {
            msg: C::Error { .. },
            ..
        }]
    ));

    f.relay.agent_connected(ConnId(3), NONCE.into());
    f.relay.agent_hello_timeout(ConnId(3));
    assert!(matches!(
        f.out().last(),
        Some(Outbound::CloseAgent { conn: ConnId(3) })
    ));
    f.relay.agent_hello_timeout(conn);
    assert!(f.out().is_empty(), "a registered agent is not timed out");
}

#[test]
fn session_needs_a_known_online_vm_and_a_valid_offer() {
    let mut f = Fixture::new();
    assert_eq!(
        f.relay.create_session(vm("nope"), offer(), f.t0),
        Err(RelayError::VmNotFound(vm("nope")))
    );
    assert_eq!(
        f.relay.create_session(vm("known"), offer(), f.t0),
        Err(RelayError::AgentOffline)
    );
    f.agent(1, "known");
    let bad = SessionDescription {
        kind: SdpType::Offer,
        sdp: "hello".into(),
    };
    match f.relay.create_session(vm("known"), bad, f.t0) {
        Err(RelayError::Invalid(e)) => assert_eq!(e.field, "offer.sdp"),
        other => panic!("{other:?}"),
    }
    let answer = SessionDescription {
        kind: SdpType::Answer,
        sdp: OFFER.into(),
    };
    match f.relay.create_session(vm("known"), answer, f.t0) {
        Err(RelayError::Invalid(e)) => assert_eq!(e.field, "offer.type"),
        other => panic!("{other:?}"),
    }
    assert!(f.out().is_empty(), "nothing sent for refused sessions");
    assert_eq!(f.relay.session_count(), 0);
}

#[test]
fn answer_then_candidates_reach_the_viewer_in_order() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    assert_eq!(f.relay.offer(&id), Some(&offer()));
    assert_eq!(f.relay.answer(&id, f.t0), Ok(None));
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(1),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::PeerState {
            session_id: id.clone(),
            state: "ice:checking".into(),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: IceCandidate::end_of_candidates(0),
        },
        f.t0,
    );
    assert_eq!(
        f.viewer_events(),
        vec![
            (1, V::Answer { sdp: ANSWER.into() }),
            (2, V::Candidate { candidate: cand(1) }),
            (
                3,
                V::PeerState {
                    state: "ice:checking".into()
                }
            ),
            (
                4,
                V::Candidate {
                    candidate: IceCandidate::end_of_candidates(0)
                }
            ),
        ]
    );
    assert_eq!(f.relay.answer(&id, f.t0).unwrap().unwrap().sdp, ANSWER);
    let polled = f.relay.poll_candidates(&id, Side::Vm, f.t0).unwrap();
    assert_eq!(
        polled.candidates,
        vec![cand(1), IceCandidate::end_of_candidates(0)]
    );
    assert!(polled.complete);
}

#[test]
fn vm_candidates_before_the_answer_are_kept_and_follow_it() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(1),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(2),
        },
        f.t0,
    );
    assert!(f.viewer_events().is_empty(), "held until the answer");
    let early = f.relay.poll_candidates(&id, Side::Vm, f.t0).unwrap();
    assert!(early.candidates.is_empty() && !early.complete);

    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(3),
        },
        f.t0,
    );
    assert_eq!(
        f.viewer_events(),
        vec![
            (1, V::Answer { sdp: ANSWER.into() }),
            (2, V::Candidate { candidate: cand(1) }),
            (3, V::Candidate { candidate: cand(2) }),
            (4, V::Candidate { candidate: cand(3) }),
        ]
    );
    let polled = f.relay.poll_candidates(&id, Side::Vm, f.t0).unwrap();
    assert_eq!(polled.candidates, vec![cand(1), cand(2), cand(3)]);
    assert!(!polled.complete);
}

#[test]
fn browser_candidates_go_to_the_agent_after_its_offer_in_order() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.relay.create_session(vm("known"), offer(), f.t0).unwrap();
    // The viewer's candidates come before the agent has even seen the offer (not delivered yet).
    f.relay
        .post_candidate(&id, Side::Browser, cand(1), f.t0)
        .unwrap();
    f.relay
        .post_candidate(&id, Side::Browser, IceCandidate::end_of_candidates(0), f.t0)
        .unwrap();
    let out = f.out();
    let to_agent: Vec<&C> = out
        .iter()
        .filter_map(|o| match o {
            Outbound::ToAgent { conn: c, msg } if *c == conn => Some(msg),
            _ => None,
        })
        .collect();
    assert!(
        matches!(to_agent[0], C::Offer { .. }),
        "offer first: {to_agent:?}"
    );
    assert_eq!(
        to_agent[1..],
        [
            &C::Candidate {
                session_id: id.clone(),
                candidate: cand(1)
            },
            &C::Candidate {
                session_id: id.clone(),
                candidate: IceCandidate::end_of_candidates(0)
            },
        ]
    );
    // The agent may also poll them over HTTP; and the viewer's log has none of its own.
    let polled = f.relay.poll_candidates(&id, Side::Browser, f.t0).unwrap();
    assert_eq!(polled.candidates.len(), 2);
    assert!(polled.complete);
    assert!(f.viewer_events().is_empty());
}

#[test]
fn polls_never_return_a_candidate_twice() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    f.relay
        .post_candidate(&id, Side::Browser, cand(1), f.t0)
        .unwrap();
    f.relay
        .post_candidate(&id, Side::Browser, cand(2), f.t0)
        .unwrap();
    let first = f.relay.poll_candidates(&id, Side::Browser, f.t0).unwrap();
    assert_eq!(first.candidates, vec![cand(1), cand(2)]);
    let again = f.relay.poll_candidates(&id, Side::Browser, f.t0).unwrap();
    assert!(again.candidates.is_empty() && !again.complete);
    f.relay
        .post_candidate(&id, Side::Browser, cand(3), f.t0)
        .unwrap();
    f.relay
        .post_candidate(&id, Side::Browser, IceCandidate::end_of_candidates(0), f.t0)
        .unwrap();
    let third = f.relay.poll_candidates(&id, Side::Browser, f.t0).unwrap();
    assert_eq!(
        third.candidates,
        vec![cand(3), IceCandidate::end_of_candidates(0)]
    );
    assert!(third.complete);
    let last = f.relay.poll_candidates(&id, Side::Browser, f.t0).unwrap();
    assert!(
        last.candidates.is_empty() && last.complete,
        "complete stays true"
    );
    // The VM side has its own cursor (and HTTP-posted VM candidates go the same way).
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.relay
        .post_candidate(&id, Side::Vm, cand(9), f.t0)
        .unwrap();
    assert_eq!(
        f.relay
            .poll_candidates(&id, Side::Vm, f.t0)
            .unwrap()
            .candidates,
        vec![cand(9)]
    );
    assert!(f
        .relay
        .poll_candidates(&id, Side::Vm, f.t0)
        .unwrap()
        .candidates
        .is_empty());
}

#[test]
fn bad_candidates_and_answers_are_refused() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    let bad = IceCandidate {
        candidate: "bogus".into(),
        ..cand(1)
    };
    match f
        .relay
        .post_candidate(&id, Side::Browser, bad.clone(), f.t0)
    {
        Err(RelayError::Invalid(e)) => assert_eq!(e.field, "candidate"),
        other => panic!("{other:?}"),
    }
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: bad,
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: "nope".into(),
        },
        f.t0,
    );
    let out = f.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|o| matches!(
        o,
        Outbound::ToAgent {
            msg: C::Error {
                code: ErrorCode::BadRequest,
                ..
            },
            ..
        }
    )));
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    let out = f.out();
    assert!(
        matches!(
            out.last(),
            Some(Outbound::ToAgent {
                msg: C::Error { .. },
                ..
            })
        ),
        "second answer refused: {out:?}"
    );
    // An agent cannot touch a session it does not hold.
    let other = f.agent(2, "other");
    f.relay.agent_message(
        other,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(1),
        },
        f.t0,
    );
    assert!(matches!(
        &f.out()[..],
        [Outbound::ToAgent {
            msg: C::Error {
                code: ErrorCode::SessionNotFound,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn candidates_per_side_are_capped() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    for _ in 0..MAX_CANDIDATES_PER_SIDE {
        f.relay
            .post_candidate(&id, Side::Browser, cand(1), f.t0)
            .unwrap();
    }
    assert_eq!(
        f.relay.post_candidate(&id, Side::Browser, cand(1), f.t0),
        Err(RelayError::TooMany("candidates"))
    );
}

#[test]
fn viewer_leaving_tells_the_agent_and_leaves_a_tombstone() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    f.relay.viewer_left(&id, f.at(1)).unwrap();
    let out = f.out();
    assert!(out.contains(&Outbound::ToAgent {
        conn,
        msg: C::EndSession {
            session_id: id.clone(),
            code: ErrorCode::ViewerLeft,
            reason: "the viewer closed the session".into()
        }
    }));
    assert!(out.contains(&Outbound::ToViewer {
        session: id.clone(),
        seq: 1,
        event: ended(ErrorCode::ViewerLeft, "the viewer closed the session"),
    }));
    let gone = f.relay.answer(&id, f.at(2)).unwrap_err();
    assert_eq!(gone.code(), ErrorCode::ViewerLeft);
    assert!(matches!(gone, RelayError::Ended { .. }));
    assert!(matches!(
        f.relay.viewer_left(&id, f.at(2)),
        Err(RelayError::Ended { .. })
    ));
    // Late messages of the agent for it are ignored quietly.
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(1),
        },
        f.at(2),
    );
    assert!(f.out().is_empty());
    // The tombstone lasts 60 s, then the session is simply unknown.
    f.relay.tick(f.at(60));
    assert!(matches!(
        f.relay.answer(&id, f.at(60)),
        Err(RelayError::Ended { .. })
    ));
    f.relay.tick(f.at(62));
    assert_eq!(
        f.relay.answer(&id, f.at(62)),
        Err(RelayError::SessionNotFound)
    );
}

#[test]
fn agent_ending_a_session_is_relayed_to_the_viewer_only() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    f.relay.agent_message(
        conn,
        A::SessionEnded {
            session_id: id.clone(),
            code: ErrorCode::AgentError,
            reason: "encoder\nfailed".into(),
        },
        f.t0,
    );
    let out = f.out();
    assert_eq!(
        out,
        vec![Outbound::ToViewer {
            session: id.clone(),
            seq: 1,
            event: ended(ErrorCode::AgentError, "encoderfailed")
        }]
    );
}

#[test]
fn agent_disconnect_ends_its_sessions_after_the_grace() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let other = f.agent(2, "other");
    let a = f.session(conn, "known");
    let b = f.session(conn, "known");
    let c = f.session(other, "other");
    f.relay.agent_disconnected(conn, f.t0);
    assert_eq!(
        f.out(),
        vec![],
        "nobody is told yet: the agent may come back"
    );
    assert_eq!(
        f.relay.answer(&a, f.t0),
        Ok(None),
        "still live during the grace"
    );
    assert_eq!(
        f.relay.create_session(vm("known"), offer(), f.t0),
        Err(RelayError::AgentOffline)
    );
    f.relay.stream_opened(&a, 0, f.t0).unwrap();
    f.relay.stream_opened(&b, 0, f.t0).unwrap();
    f.relay.stream_opened(&c, 0, f.t0).unwrap();
    f.relay.tick(f.t0 + AGENT_GRACE - Duration::from_millis(1));
    assert_eq!(f.out(), vec![]);
    f.relay.tick(f.t0 + AGENT_GRACE);
    let out = f.out();
    assert_eq!(out.len(), 2, "only viewers are told: {out:?}");
    for id in [&a, &b] {
        assert!(out.contains(&Outbound::ToViewer {
            session: id.clone(),
            seq: 1,
            event: ended(ErrorCode::AgentDisconnected, "VM agent disconnected"),
        }));
        assert_eq!(
            f.relay.answer(id, f.t0).unwrap_err().code(),
            ErrorCode::AgentDisconnected
        );
    }
    assert_eq!(f.relay.answer(&c, f.t0), Ok(None), "other VM untouched");
}

#[test]
fn new_agent_for_the_same_vm_replaces_the_old_one() {
    let mut f = Fixture::new();
    let old = f.agent(1, "known");
    let id = f.session(old, "known");
    f.relay.agent_connected(ConnId(2), NONCE.into());
    f.relay
        .agent_message(ConnId(2), hello("known", TOKEN), f.t0);
    let out = f.out();
    assert!(out.contains(&Outbound::ToAgent {
        conn: old,
        msg: C::Error {
            code: ErrorCode::Conflict,
            message: "another agent connected for this VM".into()
        }
    }));
    assert!(out.contains(&Outbound::CloseAgent { conn: old }));
    assert!(out.contains(&Outbound::ToAgent {
        conn: ConnId(2),
        msg: C::Welcome {
            ice_servers: vec![]
        }
    }));
    assert!(
        !out.iter().any(|o| matches!(o, Outbound::ToViewer { .. })),
        "the session waits for the new connection to resume it: {out:?}"
    );
    // The old connection's late messages and its disconnect change nothing.
    f.relay.agent_message(
        old,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.relay.agent_disconnected(old, f.t0);
    assert!(f.out().is_empty());
    assert!(f.relay.vm(&vm("known")).unwrap().online);
    // The new connection does not have the session: it ends now.
    f.relay
        .agent_message(ConnId(2), A::Resume { sessions: vec![] }, f.t0);
    assert!(f.out().iter().any(|o| matches!(o,
        Outbound::ToViewer { session, event: V::Ended { code: ErrorCode::AgentDisconnected, .. }, .. } if *session == id)));
    let id2 = f.session(ConnId(2), "known");
    assert_ne!(id, id2);
}

#[test]
fn idle_sessions_time_out_but_not_while_a_stream_is_open() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let idle = f.session(conn, "known");
    let watched = f.session(conn, "known");
    let polled = f.session(conn, "known");
    assert!(f
        .relay
        .stream_opened(&watched, 0, f.at(1))
        .unwrap()
        .is_empty());
    f.relay.tick(f.at(29));
    assert!(f.out().is_empty());
    f.relay.answer(&polled, f.at(20)).unwrap(); // a request counts as activity
    f.relay.tick(f.at(30));
    let out = f.out();
    assert_eq!(
        out,
        vec![
            Outbound::ToViewer {
                session: idle.clone(),
                seq: 1,
                event: ended(ErrorCode::IdleTimeout, "the viewer was idle for 30 s")
            },
            Outbound::ToAgent {
                conn,
                msg: C::EndSession {
                    session_id: idle.clone(),
                    code: ErrorCode::IdleTimeout,
                    reason: "the viewer was idle for 30 s".into()
                }
            },
        ]
    );
    f.relay.tick(f.at(49));
    assert!(f.out().is_empty());
    f.relay.tick(f.at(50));
    assert_eq!(
        f.out().len(),
        2,
        "polled session ends 30 s after its last request"
    );
    f.relay.tick(f.at(500));
    assert!(f.out().is_empty(), "an open stream keeps the session alive");
    f.relay.stream_closed(&watched, f.at(500));
    f.relay.tick(f.at(529));
    assert!(f.out().is_empty());
    f.relay.tick(f.at(530));
    assert_eq!(f.out().len(), 2);
    assert_eq!(f.relay.session_count(), 0);
}

#[test]
fn streams_replay_the_log_after_last_event_id() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(1),
        },
        f.t0,
    );
    f.relay.agent_message(
        conn,
        A::Candidate {
            session_id: id.clone(),
            candidate: cand(2),
        },
        f.t0,
    );
    let all = f.relay.stream_opened(&id, 0, f.t0).unwrap();
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[0].1, V::Answer { sdp: ANSWER.into() });
    let rest = f.relay.stream_opened(&id, 2, f.t0).unwrap();
    assert_eq!(rest, vec![(3, V::Candidate { candidate: cand(2) })]);
    assert!(f.relay.stream_opened(&id, 99, f.t0).unwrap().is_empty());
    // Polling is independent of the streams.
    assert_eq!(
        f.relay
            .poll_candidates(&id, Side::Vm, f.t0)
            .unwrap()
            .candidates
            .len(),
        2
    );
}

#[test]
fn peer_states_are_checked() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    f.relay.agent_message(
        conn,
        A::PeerState {
            session_id: id.clone(),
            state: "x".repeat(65),
        },
        f.t0,
    );
    assert!(matches!(
        &f.out()[..],
        [Outbound::ToAgent {
            msg: C::Error { .. },
            ..
        }]
    ));
}

#[test]
fn shutdown_tells_both_sides_and_refuses_newcomers() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    f.relay.agent_connected(ConnId(7), NONCE.into()); // not registered yet
    f.relay.shutdown(f.t0);
    let out = f.out();
    assert!(out.contains(&Outbound::ToViewer {
        session: id.clone(),
        seq: 1,
        event: ended(ErrorCode::ShuttingDown, "the controller is shutting down")
    }));
    assert!(out.iter().any(|o| matches!(
        o,
        Outbound::ToAgent {
            msg: C::EndSession {
                code: ErrorCode::ShuttingDown,
                ..
            },
            ..
        }
    )));
    assert!(out.contains(&Outbound::CloseAgent { conn }));
    assert!(out.contains(&Outbound::CloseAgent { conn: ConnId(7) }));
    assert_eq!(
        f.relay.create_session(vm("known"), offer(), f.t0),
        Err(RelayError::ShuttingDown)
    );
    f.relay.agent_connected(ConnId(8), NONCE.into());
    f.relay
        .agent_message(ConnId(8), hello("known", TOKEN), f.t0);
    assert!(matches!(
        &f.out()[..],
        [
            Outbound::ToAgent {
                msg: C::Error {
                    code: ErrorCode::ShuttingDown,
                    ..
                },
                ..
            },
            Outbound::CloseAgent { .. }
        ]
    ));
}

/// A `check` (`vdesk-agent doctor`) proving `token` over [`NONCE`].
fn check(vm_id: &str, token: &str) -> A {
    A::Check {
        vm_id: vm(vm_id),
        proof: vdesk_protocol::hello_proof(token, NONCE, &vm(vm_id)),
        protocol_version: vdesk_protocol::PROTOCOL_VERSION,
        agent_version: "doctor".into(),
    }
}

#[test]
fn a_check_answers_and_closes_without_touching_the_running_agent() {
    let mut f = Fixture::new();
    let running = f.agent(1, "known");
    // The doctor, with the right secret, for the VM whose agent is running.
    f.relay.agent_connected(ConnId(2), NONCE.into());
    f.relay
        .agent_message(ConnId(2), check("known", TOKEN), f.t0);
    let out = f.out();
    assert!(
        matches!(
            &out[..],
            [Outbound::ToAgent { conn: ConnId(2), msg: C::Checked { now_ms, .. } },
             Outbound::CloseAgent { conn: ConnId(2) }] if *now_ms > 1_600_000_000_000
        ),
        "{out:?}"
    );
    assert!(
        f.relay.vm(&vm("known")).unwrap().online,
        "the running agent stays"
    );
    f.relay.agent_disconnected(ConnId(2), f.t0);
    assert!(f.relay.vm(&vm("known")).unwrap().online);
    // A check for an unknown VM registers nothing either.
    f.relay.agent_connected(ConnId(3), NONCE.into());
    f.relay
        .agent_message(ConnId(3), check("fresh", TOKEN), f.t0);
    let _ = f.out();
    assert!(f.relay.vm(&vm("fresh")).is_none());
    // A wrong secret: unauthorized and closed, as for a hello.
    f.relay.agent_connected(ConnId(4), NONCE.into());
    f.relay
        .agent_message(ConnId(4), check("known", "wrong-token-wrong-token"), f.t0);
    let out = f.out();
    assert!(
        matches!(
            &out[..],
            [
                Outbound::ToAgent {
                    msg: C::Error {
                        code: ErrorCode::Unauthorized,
                        ..
                    },
                    ..
                },
                Outbound::CloseAgent { conn: ConnId(4) }
            ]
        ),
        "{out:?}"
    );
    // After registering, a check on the same connection is refused, not acted on.
    f.relay.agent_message(running, check("known", TOKEN), f.t0);
    assert!(f.relay.vm(&vm("known")).unwrap().online);
}
