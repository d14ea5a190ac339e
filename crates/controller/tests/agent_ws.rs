//! The agent WebSocket adapter (`agent_ws::run`) driven through channels: hello rules, bad
//! frames, pings, silence, replacement. Short timings stand in for 10 s / 15 s / 45 s.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::extract::ws::Message;
use common::*;
use serde_json::json;
use vdesk_controller::agent_ws::AgentTiming;
use vdesk_protocol::{ControllerToAgent, ErrorCode, VmId};

fn fast() -> AgentTiming {
    AgentTiming {
        hello_timeout: Duration::from_millis(50),
        ping_interval: Duration::from_millis(20),
        dead_after: Duration::from_millis(80),
    }
}

fn online(state: &vdesk_controller::AppState, vm: &str) -> bool {
    state
        .relay(|r, _| r.vm(&VmId::new(vm).unwrap()))
        .is_some_and(|v| v.online)
}

async fn expect_error_then_close(agent: &mut FakeAgent, code: ErrorCode) -> String {
    let message = match agent.recv().await {
        ControllerToAgent::Error { code: c, message } => {
            assert_eq!(c, code);
            message
        }
        other => panic!("expected error, got {other:?}"),
    };
    assert!(matches!(agent.frame().await, Message::Close(_)));
    tokio::time::timeout(WAIT, &mut agent.task)
        .await
        .unwrap()
        .unwrap();
    message
}

#[tokio::test]
async fn no_hello_in_time_closes() {
    let state = state();
    let mut agent = FakeAgent::connect(&state, fast());
    let msg = expect_error_then_close(&mut agent, ErrorCode::BadRequest).await;
    assert!(msg.contains("hello"), "{msg}");
}

#[tokio::test]
async fn malformed_first_frame_closes() {
    let state = state();
    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.to_server.send(Message::Text("{nope".into())).unwrap();
    expect_error_then_close(&mut agent, ErrorCode::BadRequest).await;
}

#[tokio::test]
async fn wrong_token_is_refused() {
    let state = state();
    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.hello("demo", "x").await;
    expect_error_then_close(&mut agent, ErrorCode::Unauthorized).await;
    assert!(!online(&state, "demo"));
}

#[tokio::test]
async fn bad_frames_after_hello_are_refused_but_not_fatal() {
    let state = state();
    let mut agent = FakeAgent::registered(&state, "demo").await;
    agent.to_server.send(Message::Text("{nope".into())).unwrap();
    assert!(matches!(
        agent.recv().await,
        ControllerToAgent::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    agent
        .to_server
        .send(Message::Binary(vec![1, 2, 3].into()))
        .unwrap();
    assert!(matches!(
        agent.recv().await,
        ControllerToAgent::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    agent.send(
        json!({"type": "answer", "sessionId": "0123456789abcdef0123456789abcdef", "sdp": ANSWER}),
    );
    assert!(matches!(
        agent.recv().await,
        ControllerToAgent::Error {
            code: ErrorCode::SessionNotFound,
            ..
        }
    ));
    assert!(online(&state, "demo"));
    assert!(!agent.task.is_finished());
}

#[tokio::test]
async fn pings_and_silence() {
    let state = state();
    let mut agent = FakeAgent::connect(&state, fast());
    agent.hello("demo", TOKEN).await;
    assert!(matches!(
        agent.recv().await,
        ControllerToAgent::Welcome { .. }
    ));
    // Pings arrive on the interval; answering keeps the connection alive past `dead_after`.
    for _ in 0..6 {
        let m = tokio::time::timeout(WAIT, agent.from_server.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(m, Message::Ping(_)), "{m:?}");
        agent
            .to_server
            .send(Message::Pong(Default::default()))
            .unwrap();
    }
    assert!(online(&state, "demo"), "alive after 6 pings (> dead_after)");
    // Silence: the connection is dropped and the VM goes offline.
    tokio::time::timeout(WAIT, &mut agent.task)
        .await
        .unwrap()
        .unwrap();
    assert!(!online(&state, "demo"));
}

#[tokio::test]
async fn a_second_agent_replaces_the_first() {
    let state = state();
    let mut first = FakeAgent::registered(&state, "demo").await;
    let _second = FakeAgent::registered(&state, "demo").await;
    let msg = expect_error_then_close(&mut first, ErrorCode::Conflict).await;
    assert!(msg.contains("another agent"), "{msg}");
    assert!(online(&state, "demo"), "the second one holds the VM");
}

#[tokio::test]
async fn closing_the_socket_takes_the_vm_offline() {
    let state = state();
    let agent = FakeAgent::registered(&state, "demo").await;
    assert!(online(&state, "demo"));
    agent.to_server.send(Message::Close(None)).unwrap();
    tokio::time::timeout(WAIT, agent.task)
        .await
        .unwrap()
        .unwrap();
    assert!(!online(&state, "demo"));
}
