//! Property tests of hostile input, bounded so that they run in every `cargo test`: arbitrary
//! bytes, arbitrary JSON and mangled versions of valid bodies into every HTTP route (with and
//! without valid tokens), and arbitrary frames from an agent into the relay. Whatever arrives:
//! no panic, no 5xx, and the controller still serves a valid session afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use serde_json::{json, Map, Value};
use vdesk_controller::agent_ws::AgentTiming;
use vdesk_controller::{app, AppState};
use vdesk_protocol::{ControllerToAgent, SessionId};

/// Cases per property: enough to find shallow panics, small enough for every `cargo test`.
const CASES: u32 = 1000;

fn runner() -> TestRunner {
    TestRunner::new(PropConfig {
        cases: CASES,
        failure_persistence: None,
        ..PropConfig::default()
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from(OFFER)),
        Just(Value::from("demo")),
        Just(Value::from("candidate:1 1 UDP 1 192.0.2.1 5000 typ host")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("vmId".to_owned()),
                        Just("offer".to_owned()),
                        Just("type".to_owned()),
                        Just("sdp".to_owned()),
                        Just("candidate".to_owned()),
                        Just("from".to_owned()),
                        Just("sdpMid".to_owned()),
                        Just("sdpMLineIndex".to_owned()),
                        Just("sessionId".to_owned()),
                        Just("permission".to_owned()),
                        Just("ttl".to_owned()),
                        ".{0,10}".prop_map(|s: String| s),
                    ],
                    inner,
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body: raw bytes, arbitrary JSON, or a valid body with one field replaced.
fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        (arb_json(), 0..6usize).prop_map(|(v, which)| {
            let mut base = json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER},
                                  "candidate": {"candidate": "", "sdpMLineIndex": 0},
                                  "from": "browser"});
            match which {
                0 => base["vmId"] = v,
                1 => base["offer"] = v,
                2 => base["offer"]["sdp"] = v,
                3 => base["candidate"] = v,
                4 => base["candidate"]["candidate"] = v,
                _ => base["from"] = v,
            }
            base.to_string().into_bytes()
        }),
    ]
}

fn arb_auth() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {}", viewer_token("demo")))),
        Just(Some(format!("Bearer {ADMIN}"))),
        Just(Some(format!("Bearer {TOKEN}"))),
        "[ -~]{0,80}".prop_map(Some),
        "[A-Za-z0-9_.-]{0,120}".prop_map(|t| Some(format!("Bearer {t}"))),
    ]
}

fn hostile_state() -> AppState {
    let mut c = config();
    c.session_rate_limit = 0;
    c.candidate_rate_limit = 0;
    c.max_sessions_per_token = 0;
    c.max_sessions_per_vm = 0;
    AppState::new(c)
}

#[test]
fn http_routes_never_panic_or_5xx() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = hostile_state();
    let app = app(state.clone());
    let (_agent, live) = rt.block_on(async {
        let agent = FakeAgent::registered(&state, "demo").await;
        let resp = send(
            &app,
            post_json(
                "/api/webrtc/session",
                &json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}),
            ),
        )
        .await;
        let id = body_json(resp).await["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        (agent, id)
    });
    let random_id = SessionId::random().to_string();
    let strategy = (
        0..9usize,
        arb_body(),
        arb_auth(),
        "[ -~]{0,30}",
        prop::bool::ANY,
    );
    runner()
        .run(&strategy, |(route, body, auth, segment, use_live)| {
            let id = if use_live { &live } else { &random_id };
            let seg = urlencode(&segment);
            let (method, uri) = match route {
                0 => ("POST", "/api/webrtc/session".to_owned()),
                1 => ("POST", format!("/api/webrtc/session/{id}/candidate")),
                2 => (
                    "GET",
                    format!("/api/webrtc/session/{id}/answer?token={seg}"),
                ),
                3 => ("GET", format!("/api/webrtc/session/{id}/candidates/{seg}")),
                4 => ("DELETE", format!("/api/webrtc/session/{seg}")),
                5 => ("POST", "/api/admin/links".to_owned()),
                6 => ("GET", format!("/api/vms/{seg}")),
                7 => ("GET", format!("/api/webrtc/config?token={seg}")),
                _ => ("GET", format!("/vm/{seg}")),
            };
            let Ok(mut req) = Request::builder()
                .method(method)
                .uri(&uri)
                .body(Body::from(body))
            else {
                return Ok(()); // not a URI hyper would ever hand us
            };
            if let Some(a) = &auth {
                if let Ok(v) = a.parse() {
                    req.headers_mut().insert("authorization", v);
                }
            }
            let status = rt.block_on(send(&app, req)).status();
            prop_assert!(
                status.as_u16() < 500,
                "{method} {uri} auth={auth:?}: {status}"
            );
            Ok(())
        })
        .unwrap();
    // Still serving: the live session answers its owner, and a new session can be made.
    rt.block_on(async {
        let resp = send(&app, get(&format!("/api/webrtc/session/{live}/answer"))).await;
        assert!(
            matches!(resp.status().as_u16(), 202 | 410),
            "{}",
            resp.status()
        );
        let resp = send(
            &app,
            post_json(
                "/api/webrtc/session",
                &json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}),
            ),
        )
        .await;
        assert_eq!(resp.status(), 201);
    });
}

#[test]
fn agent_frames_never_panic_and_leave_other_agents_alone() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = hostile_state();
    let app = app(state.clone());
    // A well-behaved agent on VM "good" with a session, next to the hostile one.
    let (mut good, good_session) = rt.block_on(async {
        let mut good = FakeAgent::registered(&state, "good").await;
        let resp = send(
            &app,
            bearer(
                anon_post_json(
                    "/api/webrtc/session",
                    &json!({"vmId": "good", "offer": {"type": "offer", "sdp": OFFER}}),
                ),
                &viewer_token("good"),
            ),
        )
        .await;
        assert_eq!(resp.status(), 201);
        let ControllerToAgent::Offer { session_id, .. } = good.recv().await else {
            panic!("no offer")
        };
        (good, session_id)
    });
    let strategy = (
        prop::bool::ANY,
        prop::collection::vec(
            prop_oneof![
                arb_json().prop_map(|v| v.to_string()),
                ".{0,200}".prop_map(|s: String| s),
                arb_json().prop_map(|v| {
                    let mut m = json!({"type": "candidate", "sessionId": "00000000000000000000000000000000"});
                    m["candidate"] = v;
                    m.to_string()
                }),
            ],
            1..8,
        ),
    );
    runner()
        .run(&strategy, |(say_hello, frames)| {
            rt.block_on(async {
                let mut agent = FakeAgent::connect(&state, AgentTiming::default());
                if say_hello {
                    agent.hello("demo", TOKEN).await;
                }
                for f in &frames {
                    let _ = agent
                        .to_server
                        .send(axum::extract::ws::Message::Text(f.clone().into()));
                }
                drop(agent.to_server);
                tokio::time::timeout(WAIT, agent.task)
                    .await
                    .expect("the agent task ends when its socket closes")
                    .expect("the agent task did not panic");
            });
            Ok(())
        })
        .unwrap();
    // The good agent's session is untouched and still relays.
    rt.block_on(async {
        let resp = send(
            &app,
            bearer(
                anon_post_json(
                    &format!("/api/webrtc/session/{good_session}/candidate"),
                    &json!({"candidate": cand(1), "from": "browser"}),
                ),
                &viewer_token("good"),
            ),
        )
        .await;
        assert_eq!(resp.status(), 204);
        assert!(matches!(
            good.recv().await,
            ControllerToAgent::Candidate { .. }
        ));
    });
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
