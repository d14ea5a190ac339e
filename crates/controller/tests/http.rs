//! The HTTP API through `app().oneshot(...)`: every route, every error status, and the SSE
//! stream read from the response body. The agent is a `FakeAgent` on channels.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use vdesk_controller::app;
use vdesk_protocol::{ControllerToAgent, ErrorCode, SessionId};

async fn create(app: &axum::Router, vm: &str) -> axum::http::Response<Body> {
    send(
        app,
        post_json(
            "/api/webrtc/session",
            &json!({"vmId": vm, "offer": {"type": "offer", "sdp": OFFER}}),
        ),
    )
    .await
}

/// A session on `demo` with a registered fake agent that has received the offer.
async fn open_session(state: &vdesk_controller::AppState) -> (axum::Router, FakeAgent, SessionId) {
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(state, "demo").await;
    let resp = create(&app, "demo").await;
    assert_eq!(resp.status(), 201);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    let v = body_json(resp).await;
    let id = SessionId::parse(v["sessionId"].as_str().unwrap()).unwrap();
    assert_eq!(v["vmId"], "demo");
    assert_eq!(v["eventsUrl"], format!("/api/webrtc/session/{id}/events"));
    assert_eq!(loc, format!("/api/webrtc/session/{id}"));
    match agent.recv().await {
        ControllerToAgent::Offer {
            session_id,
            sdp,
            ice_servers,
            ..
        } => {
            assert_eq!(session_id, id);
            assert_eq!(sdp, OFFER);
            assert_eq!(ice_servers.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    (app, agent, id)
}

#[tokio::test]
async fn pages_and_assets_have_their_types_and_no_cache() {
    let app = app(state());
    for (uri, ty) in [
        ("/vm/demo", "text/html; charset=utf-8"),
        ("/vm/not-registered.yet", "text/html; charset=utf-8"),
        ("/assets/vdesk.js", "text/javascript; charset=utf-8"),
        ("/assets/viewer.js", "text/javascript; charset=utf-8"),
        ("/assets/viewer.css", "text/css; charset=utf-8"),
        ("/assets/vdesk.d.ts", "text/plain; charset=utf-8"),
        ("/admin", "text/html; charset=utf-8"),
        ("/assets/admin.js", "text/javascript; charset=utf-8"),
        ("/assets/admin.css", "text/css; charset=utf-8"),
    ] {
        let resp = send(&app, get(uri)).await;
        assert_eq!(resp.status(), 200, "{uri}");
        assert_eq!(resp.headers()["content-type"], ty, "{uri}");
        assert_eq!(resp.headers()["cache-control"], "no-cache", "{uri}");
    }
    let page = body_text(send(&app, get("/vm/demo")).await).await;
    assert_eq!(page, vdesk_controller::assets::VIEWER_HTML);
    // The admin page holds no data: it is the same for everyone, and asks for the token itself.
    let page = body_text(send(&app, anon_get("/admin")).await).await;
    assert_eq!(page, vdesk_controller::assets::ADMIN_HTML);

    // The index lists VMs for the admin only.
    let index = send(&app, bearer(anon_get("/"), ADMIN)).await;
    assert_eq!(index.status(), 200);
    let html = body_text(index).await;
    assert!(html.contains("<a href=\"/vm/demo\">demo</a>"), "{html}");
    let html = body_text(send(&app, anon_get("/")).await).await;
    assert!(!html.contains("demo") && html.contains("link"), "{html}");

    let health = send(&app, get("/healthz")).await;
    assert_eq!(health.status(), 200);
    assert_eq!(body_text(health).await, "ok");
}

#[tokio::test]
async fn unknown_routes_bad_ids_and_methods_are_json_errors() {
    let app = app(state());
    let msg = expect_error(send(&app, get("/nope")).await, 404, "not_found").await;
    assert!(msg.contains("/nope"), "{msg}");
    expect_error(
        send(&app, get("/assets/secret.txt")).await,
        404,
        "not_found",
    )
    .await;
    let msg = expect_error(send(&app, get("/vm/..evil")).await, 400, "bad_request").await;
    assert!(msg.starts_with("vmId"), "{msg}");
    let msg = expect_error(
        send(&app, get("/api/webrtc/session/NOTHEX/answer")).await,
        400,
        "bad_request",
    )
    .await;
    assert!(msg.starts_with("sessionId"), "{msg}");
    let req = Request::delete("/api/vms").body(Body::empty()).unwrap();
    expect_error(send(&app, req).await, 405, "bad_request").await;
    let missing = SessionId::random();
    expect_error(
        send(&app, get(&format!("/api/webrtc/session/{missing}/answer"))).await,
        404,
        "session_not_found",
    )
    .await;
    // Not a WebSocket upgrade.
    expect_error(send(&app, get("/api/agent/ws")).await, 400, "bad_request").await;
}

#[tokio::test]
async fn vm_registry_and_ice_config() {
    let state = state();
    let app = app(state.clone());
    let v = body_json(send(&app, bearer(anon_get("/api/vms"), ADMIN)).await).await;
    assert_eq!(v, json!({"vms": [{"vmId": "demo", "online": false}]}));
    let v = body_json(send(&app, get("/api/vms/demo")).await).await;
    assert_eq!(v, json!({"vmId": "demo", "online": false}));
    expect_error(send(&app, get("/api/vms/other")).await, 404, "vm_not_found").await;

    let _agent = FakeAgent::registered(&state, "other").await;
    let v = body_json(send(&app, bearer(anon_get("/api/vms"), ADMIN)).await).await;
    assert_eq!(
        v,
        json!({"vms": [{"vmId": "demo", "online": false}, {"vmId": "other", "online": true}]})
    );

    let v = body_json(send(&app, get("/api/webrtc/config")).await).await;
    assert_eq!(
        v,
        json!({"iceServers": [{"urls": ["stun:192.0.2.1:3478"]}]})
    );
}

#[tokio::test]
async fn creating_a_session_checks_vm_agent_and_body() {
    let app = app(state());
    expect_error(create(&app, "unknown").await, 404, "vm_not_found").await;
    let msg = expect_error(create(&app, "demo").await, 503, "agent_offline").await;
    assert_eq!(msg, "VM agent is offline");

    let cases: &[(&str, &str)] = &[
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        (r#"{"vmId": "demo"}"#, "offer"),
        (
            r#"{"vmId": "a/b", "offer": {"type": "offer", "sdp": "v=0"}}"#,
            "vmId",
        ),
        (
            r#"{"vmId": "demo", "offer": {"type": "pranswer", "sdp": "v=0"}}"#,
            "offer.type",
        ),
        (
            r#"{"vmId": "demo", "offer": {"type": "offer", "sdp": "v=0"}}"#,
            "offer.sdp",
        ),
        (
            r#"{"vmId": "demo", "offer": {"type": "answer", "sdp": "v=0\nm=x"}}"#,
            "offer.type",
        ),
        (
            r#"{"vmId": "demo", "offer": {"type": "offer", "sdp": 5}}"#,
            "offer.sdp",
        ),
    ];
    let state = state();
    let app = vdesk_controller::app(state.clone());
    let _agent = FakeAgent::registered(&state, "demo").await;
    for (body, field) in cases {
        let req = Request::post("/api/webrtc/session")
            .header("content-type", "application/json")
            .body(Body::from(*body))
            .unwrap();
        let req = bearer(req, &viewer_token("demo"));
        let msg = expect_error(send(&app, req).await, 400, "bad_request").await;
        assert!(msg.contains(field), "{body}: {msg}");
    }
    // Content-Type is not required (beacons send text/plain).
    let req = Request::post("/api/webrtc/session")
        .body(Body::from(
            json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}).to_string(),
        ))
        .unwrap();
    let req = bearer(req, &viewer_token("demo"));
    assert_eq!(send(&app, req).await.status(), 201);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let mut config = config();
    config.max_body_bytes = 4096;
    let app = app(vdesk_controller::AppState::new(config));
    let big = json!({"vmId": "demo", "offer": {"type": "offer", "sdp": "v=0\n".repeat(2000)}});
    expect_error(
        send(&app, post_json("/api/webrtc/session", &big)).await,
        413,
        "payload_too_large",
    )
    .await;
    // Also without Content-Length (streamed body).
    let stream = futures_util::stream::iter(
        (0..100).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 100]))),
    );
    let req = Request::post("/api/webrtc/session")
        .body(Body::from_stream(stream))
        .unwrap();
    let req = bearer(req, &viewer_token("demo"));
    expect_error(send(&app, req).await, 413, "payload_too_large").await;
}

#[tokio::test]
async fn answer_candidates_and_polls() {
    let state = state();
    let (app, mut agent, id) = open_session(&state).await;
    let base = format!("/api/webrtc/session/{id}");

    let resp = send(&app, get(&format!("{base}/answer"))).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(body_json(resp).await, json!({"status": "pending"}));

    // The agent's candidate before its answer is held back from the viewer's poll.
    agent.send(json!({"type": "candidate", "sessionId": id, "candidate": cand(1)}));
    agent.send(json!({"type": "answer", "sessionId": id, "sdp": ANSWER}));
    agent.send(json!({"type": "candidate", "sessionId": id, "candidate": eoc()}));
    let answer = loop {
        let resp = send(&app, get(&format!("{base}/answer"))).await;
        if resp.status() == 200 {
            break body_json(resp).await;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(answer, json!({"type": "answer", "sdp": ANSWER}));

    let poll_vm = || send(&app, get(&format!("{base}/candidates/vm")));
    let v = body_json(poll_vm().await).await;
    assert_eq!(v, json!({"candidates": [cand(1), eoc()], "complete": true}));
    let v = body_json(poll_vm().await).await;
    assert_eq!(
        v,
        json!({"candidates": [], "complete": true}),
        "never twice"
    );

    // Browser candidates reach the agent, end-of-candidates as null too.
    for body in [
        json!({"candidate": cand(2), "from": "browser"}),
        json!({"candidate": null, "from": "browser"}),
    ] {
        let resp = send(&app, post_json(&format!("{base}/candidate"), &body)).await;
        assert_eq!(resp.status(), 204);
    }
    match agent.recv().await {
        ControllerToAgent::Candidate {
            session_id,
            candidate,
        } => {
            assert_eq!(session_id, id);
            assert_eq!(serde_json::to_value(&candidate).unwrap(), cand(2));
        }
        other => panic!("{other:?}"),
    }
    match agent.recv().await {
        ControllerToAgent::Candidate { candidate, .. } => assert!(candidate.is_end_of_candidates()),
        other => panic!("{other:?}"),
    }

    // Bad candidates name the field.
    for (body, field) in [
        (
            json!({"candidate": {"candidate": "bogus", "sdpMid": "0"}, "from": "browser"}),
            "candidate",
        ),
        (json!({"candidate": cand(1), "from": "nobody"}), "from"),
        (
            json!({"candidate": {"candidate": "candidate:1 1 UDP 1 192.0.2.1 1 typ host"}, "from": "browser"}),
            "sdpMid",
        ),
        (
            json!({"candidate": {"candidate": 7}, "from": "browser"}),
            "candidate.candidate",
        ),
    ] {
        let msg = expect_error(
            send(&app, post_json(&format!("{base}/candidate"), &body)).await,
            400,
            "bad_request",
        )
        .await;
        assert!(msg.contains(field), "{body}: {msg}");
    }
    expect_error(
        send(&app, get(&format!("{base}/candidates/nobody"))).await,
        400,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn agent_http_routes_need_the_token() {
    let state = state();
    let (app, _agent, id) = open_session(&state).await;
    let base = format!("/api/webrtc/session/{id}");
    let vm_cand = json!({"candidate": cand(5), "from": "vm"});

    expect_error(
        send(&app, post_json(&format!("{base}/candidate"), &vm_cand)).await,
        401,
        "unauthorized",
    )
    .await;
    let mut wrong = post_json(&format!("{base}/candidate"), &vm_cand);
    wrong.headers_mut().insert(
        "authorization",
        "Bearer 0123456789abcdef0123456789abcdeX".parse().unwrap(),
    );
    expect_error(send(&app, wrong).await, 401, "unauthorized").await;
    expect_error(
        send(&app, get(&format!("{base}/candidates/browser"))).await,
        401,
        "unauthorized",
    )
    .await;

    let resp = send(
        &app,
        with_token(post_json(&format!("{base}/candidate"), &vm_cand)),
    )
    .await;
    assert_eq!(resp.status(), 204);
    send(
        &app,
        post_json(
            &format!("{base}/candidate"),
            &json!({"candidate": cand(6), "from": "browser"}),
        ),
    )
    .await;
    let v =
        body_json(send(&app, with_token(get(&format!("{base}/candidates/browser")))).await).await;
    assert_eq!(v, json!({"candidates": [cand(6)], "complete": false}));
}

#[tokio::test]
async fn delete_ends_the_session_and_leaves_a_410_tombstone() {
    let state = state();
    let (app, mut agent, id) = open_session(&state).await;
    let base = format!("/api/webrtc/session/{id}");
    let req = bearer(
        bearer(
            Request::delete(&base).body(Body::empty()).unwrap(),
            &viewer_token("demo"),
        ),
        &viewer_token("demo"),
    );
    assert_eq!(send(&app, req).await.status(), 204);
    match agent.recv().await {
        ControllerToAgent::EndSession {
            session_id, code, ..
        } => {
            assert_eq!(session_id, id);
            assert_eq!(code, ErrorCode::ViewerLeft);
        }
        other => panic!("{other:?}"),
    }
    for req in [
        get(&format!("{base}/answer")),
        get(&format!("{base}/events")),
        get(&format!("{base}/candidates/vm")),
        post_json(
            &format!("{base}/candidate"),
            &json!({"candidate": cand(1), "from": "browser"}),
        ),
        bearer(
            Request::delete(&base).body(Body::empty()).unwrap(),
            &viewer_token("demo"),
        ),
    ] {
        let msg = expect_error(send(&app, req).await, 410, "viewer_left").await;
        assert_eq!(msg, "the viewer closed the session");
    }
}

/// Reads SSE frames from `body` until `n` events have arrived (or the body ends).
async fn read_events(body: &mut Body, n: usize) -> Vec<(u64, String, Value)> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let Some(frame) = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("SSE stalled")
        else {
            break;
        };
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some(ev) = parse_event(&block) {
                events.push(ev);
            }
        }
    }
    events
}

fn parse_event(block: &str) -> Option<(u64, String, Value)> {
    let (mut id, mut name, mut data) = (None, None, None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            name = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = serde_json::from_str(v).ok();
        }
    }
    Some((id?, name?, data?))
}

#[tokio::test]
async fn events_replay_resume_and_close_after_ended() {
    let state = state();
    let (app, agent, id) = open_session(&state).await;
    let events_url = format!("/api/webrtc/session/{id}/events");
    agent.send(json!({"type": "answer", "sessionId": id, "sdp": ANSWER}));
    agent.send(json!({"type": "candidate", "sessionId": id, "candidate": cand(1)}));

    let resp = send(&app, get(&events_url)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let mut body = resp.into_body();
    let first = read_events(&mut body, 2).await;
    assert_eq!(
        first[0],
        (1, "answer".into(), json!({"type": "answer", "sdp": ANSWER}))
    );
    assert_eq!(
        first[1],
        (
            2,
            "candidate".into(),
            json!({"type": "candidate", "candidate": cand(1)})
        )
    );

    // Live: pushed as soon as the agent sends it.
    agent.send(json!({"type": "peerState", "sessionId": id, "state": "ice:connected"}));
    let live = read_events(&mut body, 1).await;
    assert_eq!(
        live[0],
        (
            3,
            "peerState".into(),
            json!({"type": "peerState", "state": "ice:connected"})
        )
    );

    // A second stream resumes after Last-Event-ID.
    let mut req = get(&events_url);
    req.headers_mut()
        .insert("last-event-id", "2".parse().unwrap());
    let mut second = send(&app, req).await.into_body();
    let resumed = read_events(&mut second, 1).await;
    assert_eq!(resumed[0].0, 3);
    let mut bad = get(&events_url);
    bad.headers_mut()
        .insert("last-event-id", "x".parse().unwrap());
    let msg = expect_error(send(&app, bad).await, 400, "bad_request").await;
    assert!(msg.contains("Last-Event-ID"), "{msg}");

    // The agent ends the session: `ended`, then both streams close.
    agent.send(json!({"type": "sessionEnded", "sessionId": id, "code": "agent_error", "reason": "encoder failed"}));
    for body in [&mut body, &mut second] {
        let ended = read_events(body, 1).await;
        assert_eq!(ended[0].1, "ended");
        assert_eq!(
            ended[0].2,
            json!({"type": "ended", "code": "agent_error", "reason": "encoder failed"})
        );
        let rest = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("stream must close");
        assert!(rest.is_none(), "nothing after ended");
    }
}

/// Each text field of a candidate has a cap (`candidate` 512 bytes, `sdpMid` 64,
/// `usernameFragment` 256) and each side of a session a budget of 64 KiB of candidate text: 400
/// naming the field.
#[tokio::test]
async fn candidate_fields_are_capped_and_a_session_has_a_byte_budget() {
    let state = state();
    let (app, _agent, id) = open_session(&state).await;
    let uri = format!("/api/webrtc/session/{id}/candidate");
    let line = "candidate:1 1 UDP 2122252543 192.0.2.1 50000 typ host";
    for (candidate, field) in [
        (
            json!({"candidate": line, "sdpMid": "0", "usernameFragment": "u".repeat(120 * 1024)}),
            "usernameFragment",
        ),
        (
            json!({"candidate": line, "sdpMid": "0", "usernameFragment": "a b"}),
            "usernameFragment",
        ),
        (
            json!({"candidate": line, "sdpMid": "m".repeat(65)}),
            "sdpMid",
        ),
        (
            json!({"candidate": format!("{line} {}", "x".repeat(500)), "sdpMid": "0"}),
            "candidate",
        ),
    ] {
        let body = json!({"candidate": candidate, "from": "browser"});
        let msg = expect_error(send(&app, post_json(&uri, &body)).await, 400, "bad_request").await;
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
    // Fields at their caps pass, until the session's budget is spent.
    let big = json!({"candidate": format!("{line} {}", "x".repeat(400)), "sdpMid": "0",
                     "sdpMLineIndex": 0, "usernameFragment": "u".repeat(256)});
    let size = 455 + 1 + 256;
    let fit = vdesk_controller::relay::MAX_CANDIDATE_BYTES_PER_SIDE / size;
    for n in 0..fit {
        let resp = send(
            &app,
            post_json(&uri, &json!({"candidate": big, "from": "browser"})),
        )
        .await;
        assert_eq!(resp.status(), 204, "candidate {n}");
    }
    let msg = expect_error(
        send(
            &app,
            post_json(&uri, &json!({"candidate": big, "from": "browser"})),
        )
        .await,
        400,
        "bad_request",
    )
    .await;
    assert!(
        msg.starts_with("candidate") && msg.contains("65536 bytes"),
        "{msg}"
    );
}

/// `Referrer-Policy: no-referrer` on every response: every route of the router's table (as a
/// stranger and as the session's viewer), errors and the fallbacks.
#[tokio::test]
async fn every_response_says_no_referrer() {
    let state = state();
    let (app, _agent, id) = open_session(&state).await;
    let mut reqs = vec![
        anon_get("/no/such/route"),
        Request::put("/api/vms").body(Body::empty()).unwrap(),
    ];
    for r in vdesk_controller::routes::ROUTES {
        let uri = r
            .path
            .replace("{id}", id.as_str())
            .replace("{side}", "vm")
            .replace("{vmId}", "demo");
        for authorized in [false, true] {
            let req = Request::builder()
                .method(r.method.clone())
                .uri(&uri)
                .body(Body::from("{}"))
                .unwrap();
            reqs.push(if authorized {
                bearer(req, &viewer_token("demo"))
            } else {
                req
            });
        }
    }
    for req in reqs {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = send(&app, req).await;
        assert_eq!(
            resp.headers()
                .get("referrer-policy")
                .map(|v| v.to_str().unwrap()),
            Some("no-referrer"),
            "{what} ({})",
            resp.status()
        );
    }
}
