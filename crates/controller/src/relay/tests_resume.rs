//! Unit tests of session resumption (an agent's link drops and comes back, or the controller
//! restarts and a fresh relay adopts the sessions an agent still streams) and of new offers on a
//! live session (ICE restart). Same fixture as `tests.rs`, explicit time.

use std::time::Duration;

use vdesk_protocol::{
    AgentToController as A, ControllerToAgent as C, ControllerToViewer as V, ErrorCode, Permission,
    ResumedSession, SdpType, SessionDescription, SessionGrant, SessionId,
};

use super::tests::{cand, ended, hello, offer, Fixture, ANSWER, NONCE, OFFER, TOKEN};
use super::*;

const ANSWER2: &str = "v=0\r\no=- 2 3 IN IP4 0.0.0.0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

fn resumed(id: &SessionId, answer: Option<&str>) -> ResumedSession {
    ResumedSession {
        session_id: id.clone(),
        offer: Some(OFFER.into()),
        answer: answer.map(str::to_owned),
        grant: SessionGrant {
            permission: Permission::Control,
            ..SessionGrant::default()
        },
    }
}

/// Connects `conn` for `vm_id` without checking the output.
fn reconnect(f: &mut Fixture, conn: u64, vm_id: &str) -> ConnId {
    let conn = ConnId(conn);
    f.relay.agent_connected(conn, NONCE.into());
    f.relay.agent_message(conn, hello(vm_id, TOKEN), f.t0);
    f.out();
    conn
}

fn answered_session(f: &mut Fixture, conn: ConnId) -> SessionId {
    let id = f.session(conn, "known");
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.out();
    id
}

#[test]
fn an_agent_that_comes_back_resumes_its_sessions_and_gets_what_it_missed() {
    let mut f = Fixture::new();
    let old = f.agent(1, "known");
    let id = answered_session(&mut f, old);
    f.relay.agent_disconnected(old, f.t0);
    // The viewer keeps trickling while the agent is away: kept, not lost.
    f.relay
        .post_candidate(&id, Side::Browser, cand(1), f.t0)
        .unwrap();
    assert_eq!(f.out(), vec![]);

    let new = reconnect(&mut f, 2, "known");
    f.relay.agent_message(
        new,
        A::Resume {
            sessions: vec![resumed(&id, Some(ANSWER))],
        },
        f.at(5),
    );
    assert_eq!(
        f.out(),
        vec![Outbound::ToAgent {
            conn: new,
            msg: C::Candidate {
                session_id: id.clone(),
                candidate: cand(1)
            }
        }],
        "no `ended`, no second answer; the missed candidate follows"
    );
    // Long after the grace it is still live, and talks to the new connection.
    f.relay.stream_opened(&id, 0, f.at(60)).unwrap();
    f.relay.tick(f.at(60));
    f.relay
        .post_candidate(&id, Side::Browser, cand(2), f.at(60))
        .unwrap();
    assert_eq!(
        f.out(),
        vec![Outbound::ToAgent {
            conn: new,
            msg: C::Candidate {
                session_id: id.clone(),
                candidate: cand(2)
            }
        }]
    );
    f.relay.viewer_left(&id, f.at(61)).unwrap();
    assert!(f.out().contains(&Outbound::ToAgent {
        conn: new,
        msg: C::EndSession {
            session_id: id.clone(),
            code: ErrorCode::ViewerLeft,
            reason: "the viewer closed the session".into()
        }
    }));
}

#[test]
fn a_restarted_agent_without_the_sessions_ends_them_at_once() {
    let mut f = Fixture::new();
    let old = f.agent(1, "known");
    answered_session(&mut f, old);
    f.relay.agent_disconnected(old, f.t0);
    let new = reconnect(&mut f, 2, "known");
    f.relay
        .agent_message(new, A::Resume { sessions: vec![] }, f.at(1));
    assert_eq!(
        f.viewer_events(),
        vec![(
            2,
            ended(
                ErrorCode::AgentDisconnected,
                "VM agent disconnected (it restarted without this session)"
            )
        )]
    );
}

#[test]
fn an_agent_may_report_a_session_that_ended_while_it_was_away() {
    let mut f = Fixture::new();
    let old = f.agent(1, "known");
    let id = answered_session(&mut f, old);
    f.relay.agent_disconnected(old, f.t0);
    let new = reconnect(&mut f, 2, "known");
    f.relay.agent_message(
        new,
        A::SessionEnded {
            session_id: id.clone(),
            code: ErrorCode::AgentError,
            reason: "peer connection failed".into(),
        },
        f.t0,
    );
    assert_eq!(
        f.viewer_events(),
        vec![(2, ended(ErrorCode::AgentError, "peer connection failed"))]
    );
}

#[test]
fn a_new_controller_adopts_the_sessions_an_agent_still_streams() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = SessionId::random();
    f.relay.agent_message(
        conn,
        A::Resume {
            sessions: vec![resumed(&id, Some(ANSWER))],
        },
        f.t0,
    );
    assert_eq!(f.out(), vec![]);
    assert_eq!(f.relay.session_count(), 1);
    let answer = f.relay.answer(&id, f.t0).unwrap().unwrap();
    assert_eq!(answer.sdp, ANSWER);
    // The viewer's event stream comes back (with the old controller's Last-Event-ID).
    assert!(f.relay.stream_opened(&id, 17, f.t0).unwrap().is_empty());
    f.relay.agent_message(
        conn,
        A::PeerState {
            session_id: id.clone(),
            state: "ice:connected".into(),
        },
        f.t0,
    );
    assert_eq!(
        f.viewer_events(),
        vec![(
            1,
            V::PeerState {
                state: "ice:connected".into()
            }
        )]
    );
    // Adopted, it behaves like any session: the viewer leaving tells the agent.
    f.relay.viewer_left(&id, f.t0).unwrap();
    assert!(f.out().iter().any(
        |o| matches!(o, Outbound::ToAgent { conn: c, msg: C::EndSession { .. } } if *c == conn)
    ));
}

#[test]
fn an_adopted_session_nobody_comes_back_for_times_out() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = SessionId::random();
    f.relay.agent_message(
        conn,
        A::Resume {
            sessions: vec![resumed(&id, Some(ANSWER))],
        },
        f.t0,
    );
    f.relay.tick(f.at(30));
    assert!(f.out().contains(&Outbound::ToAgent {
        conn,
        msg: C::EndSession {
            session_id: id,
            code: ErrorCode::IdleTimeout,
            reason: "the viewer was idle for 30 s".into()
        }
    }));
}

#[test]
fn resuming_an_ended_or_malformed_session_is_refused_to_the_agent() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let gone = answered_session(&mut f, conn);
    f.relay.viewer_left(&gone, f.t0).unwrap();
    f.out();
    let bad = SessionId::random();
    f.relay.agent_message(
        conn,
        A::Resume {
            sessions: vec![
                resumed(&gone, Some(ANSWER)),
                ResumedSession {
                    session_id: bad.clone(),
                    offer: Some("not sdp".into()),
                    answer: None,
                    grant: SessionGrant::default(),
                },
            ],
        },
        f.t0,
    );
    let out = f.out();
    assert!(out.contains(&Outbound::ToAgent {
        conn,
        msg: C::EndSession {
            session_id: gone,
            code: ErrorCode::ViewerLeft,
            reason: "the viewer closed the session".into()
        }
    }));
    assert!(out.iter().any(|o| matches!(o,
        Outbound::ToAgent { msg: C::EndSession { session_id, code: ErrorCode::BadRequest, .. }, .. } if *session_id == bad)));
    assert_eq!(f.relay.session_count(), 0);
}

#[test]
fn resume_is_bounded() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let many = (0..=MAX_RESUMED_SESSIONS)
        .map(|_| resumed(&SessionId::random(), None))
        .collect();
    f.relay
        .agent_message(conn, A::Resume { sessions: many }, f.t0);
    assert!(matches!(
        f.out().as_slice(),
        [Outbound::ToAgent {
            msg: C::Error {
                code: ErrorCode::BadRequest,
                ..
            },
            ..
        }]
    ));
    assert_eq!(f.relay.session_count(), 0);
}

#[test]
fn a_new_offer_goes_to_the_agent_and_its_answer_to_the_viewer() {
    let mut f = Fixture::new();
    let conn = f.agent(1, "known");
    let id = f.session(conn, "known");
    let reoffer = SessionDescription {
        kind: SdpType::Offer,
        sdp: OFFER.replace("1 1", "1 2"),
    };
    assert_eq!(
        f.relay
            .reoffer(&id, reoffer.clone(), f.t0)
            .unwrap_err()
            .code(),
        ErrorCode::Conflict,
        "not before the first answer"
    );
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    f.out();
    f.relay.reoffer(&id, reoffer.clone(), f.t0).unwrap();
    assert_eq!(
        f.out(),
        vec![Outbound::ToAgent {
            conn,
            msg: C::Reoffer {
                session_id: id.clone(),
                sdp: reoffer.sdp.clone()
            }
        }]
    );
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER2.into(),
        },
        f.t0,
    );
    assert_eq!(
        f.viewer_events(),
        vec![(
            2,
            V::Answer {
                sdp: ANSWER2.into()
            }
        )]
    );
    assert_eq!(f.relay.answer(&id, f.t0).unwrap().unwrap().sdp, ANSWER2);
    // A third answer without a new offer is refused, as before.
    f.relay.agent_message(
        conn,
        A::Answer {
            session_id: id.clone(),
            sdp: ANSWER.into(),
        },
        f.t0,
    );
    assert!(matches!(
        f.out().as_slice(),
        [Outbound::ToAgent {
            msg: C::Error {
                code: ErrorCode::BadRequest,
                ..
            },
            ..
        }]
    ));
    // Malformed offers and agents that are away are refused with the right codes.
    let bad = SessionDescription {
        kind: SdpType::Answer,
        sdp: OFFER.into(),
    };
    assert_eq!(
        f.relay.reoffer(&id, bad, f.t0).unwrap_err().code(),
        ErrorCode::BadRequest
    );
    f.relay.agent_disconnected(conn, f.t0);
    assert_eq!(
        f.relay.reoffer(&id, offer(), f.t0),
        Err(RelayError::AgentOffline)
    );
    f.relay.tick(f.t0 + AGENT_GRACE + Duration::from_secs(1));
    assert_eq!(
        f.relay.reoffer(&id, offer(), f.t0).unwrap_err().code(),
        ErrorCode::AgentDisconnected
    );
}
