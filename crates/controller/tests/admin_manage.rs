//! The operator's levers and views (admin token): revoking a viewer link (its sessions end with
//! `link_revoked`, the link is refused from then on), ending one session (`ended_by_admin`), the
//! VM list with each agent's version, uptime and encoders from its `hello`, and thumbnails asked
//! of the agent, cached, and checked (a hostile agent's are dropped, the controller unharmed).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::Request;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use vdesk_controller::agent_ws::AgentTiming;
use vdesk_controller::viewer_token::unix_now;
use vdesk_controller::{app, AppState};
use vdesk_protocol::{ControllerToAgent, ErrorCode, SessionId};

/// A link minted over the admin API: (token, id, reply).
async fn mint_link(app: &axum::Router, permission: &str, name: &str) -> (String, String, Value) {
    let req = bearer(
        anon_post_json(
            "/api/admin/links",
            &json!({"vmId": "demo", "permission": permission, "ttl": "1h", "name": name}),
        ),
        ADMIN,
    );
    let resp = send(app, req).await;
    assert_eq!(resp.status(), 201);
    let v = body_json(resp).await;
    (
        v["token"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
        v,
    )
}

/// A session of `token` on demo; returns its id (the agent got the offer).
async fn open(app: &axum::Router, agent: &mut FakeAgent, token: &str) -> SessionId {
    let req = bearer(
        anon_post_json(
            "/api/webrtc/session",
            &json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}),
        ),
        token,
    );
    assert_eq!(send(app, req).await.status(), 201);
    match agent.recv().await {
        ControllerToAgent::Offer { session_id, .. } => session_id,
        other => panic!("{other:?}"),
    }
}

fn admin_req(method: &str, uri: &str) -> Request<axum::body::Body> {
    bearer(
        Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap(),
        ADMIN,
    )
}

fn ended_with(state: &AppState, id: &SessionId) -> Option<ErrorCode> {
    match state.relay(|r, now| r.answer(id, now)) {
        Err(vdesk_controller::relay::RelayError::Ended { code, .. }) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn revoking_a_link_ends_its_sessions_and_refuses_it_from_then_on() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let (revoked, link_id, minted) = mint_link(&app, "control", "Ada").await;
    assert_eq!(link_id.len(), 16);
    assert!(minted["qrSvg"].as_str().unwrap().contains("<svg"));
    let (kept, _, _) = mint_link(&app, "view", "Bob").await;
    let a = open(&app, &mut agent, &revoked).await;
    let b = open(&app, &mut agent, &kept).await;
    // The admin's session list names the link, so the page can revoke it.
    let list = body_json(send(&app, admin_req("GET", "/api/admin/sessions")).await).await;
    let row = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sessionId"] == a.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["linkId"], link_id.as_str());

    let resp = send(
        &app,
        admin_req("POST", &format!("/api/admin/links/{link_id}/revoke")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v = body_json(resp).await;
    assert_eq!(v["sessionsEnded"], 1, "{v}");
    assert_eq!(v["linkId"], link_id.as_str());
    // Kept as long as the link could be valid: until its expiry, not longer.
    assert_eq!(v["refusedUntil"], minted["expiresAt"], "{v}");

    // The agent ends the session (told in a code every agent knows), the viewer is told why.
    match agent.recv().await {
        ControllerToAgent::EndSession {
            session_id, code, ..
        } => {
            assert_eq!(session_id, a);
            assert_eq!(code, ErrorCode::Forbidden);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ended_with(&state, &a), Some(ErrorCode::LinkRevoked));
    // The link is refused from then on, with a code the viewer shows in words.
    let req = bearer(
        anon_post_json(
            "/api/webrtc/session",
            &json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}),
        ),
        &revoked,
    );
    let msg = expect_error(send(&app, req).await, 403, "link_revoked").await;
    assert!(msg.contains("revoked"), "{msg}");
    let req = bearer(anon_get("/api/webrtc/config"), &revoked);
    expect_error(send(&app, req).await, 403, "link_revoked").await;
    // The other link and its session are untouched.
    let req = bearer(anon_get(&format!("/api/webrtc/session/{b}/answer")), &kept);
    assert_eq!(send(&app, req).await.status(), 202);
    assert_eq!(state.relay(|r, _| r.session_count()), 1);

    // A link with no session here is refused all the same, for at most a link's lifetime.
    let resp = send(
        &app,
        admin_req("POST", "/api/admin/links/0123456789abcdef/revoke"),
    )
    .await;
    let v = body_json(resp).await;
    assert_eq!(v["sessionsEnded"], 0);
    let until = v["refusedUntil"].as_u64().unwrap();
    assert!(until <= unix_now() + 30 * 24 * 3600 && until > unix_now() + 29 * 24 * 3600);
    // Not a link id: 400; a viewer token is not the admin's.
    let resp = send(&app, admin_req("POST", "/api/admin/links/XYZ/revoke")).await;
    expect_error(resp, 400, "bad_request").await;
    let req = bearer(
        Request::post(format!("/api/admin/links/{link_id}/revoke"))
            .body(axum::body::Body::empty())
            .unwrap(),
        &kept,
    );
    expect_error(send(&app, req).await, 403, "forbidden").await;
}

#[tokio::test]
async fn revocations_are_forgotten_when_the_link_would_have_expired() {
    let state = state();
    // A link that expired is refused anyway: seeing it (signed) shortens its entry to its expiry.
    let (n, until) = state.revoke_link("00000000000000aa").unwrap();
    assert_eq!(n, 0);
    assert!(until > unix_now());
    assert!(state.relay(|r, _| r.is_revoked("00000000000000aa", unix_now() - 1)));
    assert_eq!(state.relay(|r, _| r.revoked_count()), 1);
    state.relay(|r, now| r.tick(now));
    assert_eq!(
        state.relay(|r, _| r.revoked_count()),
        0,
        "gone with the link's expiry"
    );
}

#[tokio::test]
async fn the_admin_ends_one_session() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let (t1, _, _) = mint_link(&app, "control", "Ada").await;
    let (t2, _, _) = mint_link(&app, "view", "Bob").await;
    let a = open(&app, &mut agent, &t1).await;
    let b = open(&app, &mut agent, &t2).await;
    let resp = send(
        &app,
        admin_req("DELETE", &format!("/api/admin/sessions/{a}")),
    )
    .await;
    assert_eq!(resp.status(), 204);
    match agent.recv().await {
        ControllerToAgent::EndSession {
            session_id, code, ..
        } => {
            assert_eq!(session_id, a);
            assert_eq!(code, ErrorCode::ViewerLeft);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ended_with(&state, &a), Some(ErrorCode::EndedByAdmin));
    // The viewer's next request says so; its link still works for a new session.
    let req = bearer(anon_get(&format!("/api/webrtc/session/{a}/answer")), &t1);
    expect_error(send(&app, req).await, 410, "ended_by_admin").await;
    let resp = send(
        &app,
        admin_req("DELETE", &format!("/api/admin/sessions/{a}")),
    )
    .await;
    expect_error(resp, 410, "ended_by_admin").await;
    let resp = send(
        &app,
        admin_req("DELETE", &format!("/api/admin/sessions/{}", "0".repeat(32))),
    )
    .await;
    expect_error(resp, 404, "session_not_found").await;
    let resp = send(&app, admin_req("DELETE", "/api/admin/sessions/nope")).await;
    expect_error(resp, 400, "bad_request").await;
    // Only the admin token: the session's own viewer token is not enough.
    let req = bearer(
        Request::delete(format!("/api/admin/sessions/{b}"))
            .body(axum::body::Body::empty())
            .unwrap(),
        &t2,
    );
    expect_error(send(&app, req).await, 403, "forbidden").await;
    assert_eq!(state.relay(|r, _| r.session_count()), 1, "b is untouched");
}

/// An agent whose `hello` carries the optional fields (start time, encoders, thumbnails).
async fn modern_agent(state: &AppState, vm: &str, started_at: u64) -> FakeAgent {
    let mut a = FakeAgent::connect(state, AgentTiming::default());
    let nonce = a.nonce().await;
    let mut hello = hello_json(vm, TOKEN, &nonce);
    hello["agentVersion"] = json!("9.8.7");
    hello["startedAt"] = json!(started_at);
    hello["encoders"] = json!([{"codec": "H264", "encoder": "x264enc", "hardware": false},
                               {"codec": "VP8", "encoder": "vp8enc"}]);
    hello["thumbnails"] = json!(true);
    a.send(hello);
    assert!(matches!(a.recv().await, ControllerToAgent::Welcome { .. }));
    a
}

#[tokio::test]
async fn admin_vms_show_each_agents_version_uptime_and_encoders() {
    let state = state();
    let app = app(state.clone());
    let started = vdesk_controller::viewer_token::unix_now_ms() - 90_000;
    let agent = modern_agent(&state, "demo", started).await;
    // An agent from before these fields: online, version, nothing else.
    let _old = FakeAgent::registered(&state, "old").await;
    let v = body_json(send(&app, admin_req("GET", "/api/admin/vms")).await).await;
    let vms = v["vms"].as_array().unwrap();
    let demo = vms.iter().find(|m| m["vmId"] == "demo").unwrap();
    assert_eq!(demo["online"], true);
    assert_eq!(demo["agentVersion"], "9.8.7");
    assert_eq!(demo["startedAt"], started);
    let up = demo["uptimeSecs"].as_u64().unwrap();
    assert!((90..100).contains(&up), "{up}");
    assert_eq!(demo["encoders"][0]["encoder"], "x264enc");
    assert_eq!(demo["encoders"][1]["codec"], "VP8");
    assert_eq!(demo["thumbnails"], true);
    let old = vms.iter().find(|m| m["vmId"] == "old").unwrap();
    assert_eq!(old["agentVersion"], "test");
    assert!(
        old.get("uptimeSecs").is_none() && old["thumbnails"] == false,
        "{old}"
    );
    // Offline: still listed, with the version it last had, and no uptime.
    drop(agent);
    let mut offline = false;
    for _ in 0..100 {
        let v = body_json(send(&app, admin_req("GET", "/api/admin/vms")).await).await;
        let demo = v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["vmId"] == "demo")
            .unwrap()
            .clone();
        if demo["online"] == false {
            assert_eq!(demo["agentVersion"], "9.8.7");
            assert!(demo.get("uptimeSecs").is_none());
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(offline);
    let resp = send(
        &app,
        bearer(anon_get("/api/admin/vms"), &viewer_token("demo")),
    )
    .await;
    expect_error(resp, 403, "forbidden").await;
}

fn tiny_jpeg() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0];
    j.extend(std::iter::repeat_n(7u8, 500));
    j.extend([0xFF, 0xD9]);
    j
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn thumbnails_are_asked_of_the_agent_and_cached() {
    let state = state();
    let app = app(state.clone());
    let mut agent = modern_agent(&state, "demo", 1).await;
    let app2 = app.clone();
    let get = tokio::spawn(async move {
        send(&app2, admin_req("GET", "/api/admin/vms/demo/thumbnail")).await
    });
    match agent.recv().await {
        ControllerToAgent::ThumbnailRequest { max_width } => assert_eq!(max_width, 320),
        other => panic!("{other:?}"),
    }
    agent
        .send(json!({"type": "thumbnail", "width": 320, "height": 180, "jpeg": b64(&tiny_jpeg())}));
    let resp = get.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.as_ref(), tiny_jpeg().as_slice());
    // A second look within a few seconds is the cached one: the agent is not asked again.
    let t = Instant::now();
    let resp = send(&app, admin_req("GET", "/api/admin/vms/demo/thumbnail")).await;
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(agent.from_server.try_recv().is_err(), "no second request");
    // Unknown VM, an agent without thumbnails, and a viewer token.
    let resp = send(&app, admin_req("GET", "/api/admin/vms/nope/thumbnail")).await;
    expect_error(resp, 404, "vm_not_found").await;
    let _old = FakeAgent::registered(&state, "old").await;
    let resp = send(&app, admin_req("GET", "/api/admin/vms/old/thumbnail")).await;
    let msg = expect_error(resp, 404, "not_found").await;
    assert!(msg.contains("no thumbnails"), "{msg}");
    let resp = send(
        &app,
        bearer(
            anon_get("/api/admin/vms/demo/thumbnail"),
            &viewer_token("demo"),
        ),
    )
    .await;
    expect_error(resp, 403, "forbidden").await;
}

#[tokio::test]
async fn a_hostile_agents_thumbnails_are_dropped_and_hurt_nothing() {
    let state = state();
    let app = app(state.clone());
    let mut agent = modern_agent(&state, "demo", 1).await;
    let (token, _, _) = mint_link(&app, "control", "Ada").await;
    let session = open(&app, &mut agent, &token).await;
    // Unasked: dropped, not even an error back.
    agent
        .send(json!({"type": "thumbnail", "width": 320, "height": 180, "jpeg": b64(&tiny_jpeg())}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let huge = b64(&vec![0xFFu8; 2 * vdesk_protocol::MAX_THUMBNAIL_BYTES]);
    let bad: Vec<Value> = vec![
        json!({"type": "thumbnail", "width": 320, "height": 180, "jpeg": huge}),
        json!({"type": "thumbnail", "width": 320, "height": 180, "jpeg": b64(b"<html><script>alert(1)</script>")}),
        json!({"type": "thumbnail", "width": 320, "height": 180, "jpeg": "%%% not base64 %%%"}),
        json!({"type": "thumbnail", "width": 100000, "height": 180, "jpeg": b64(&tiny_jpeg())}),
        json!({"type": "thumbnail", "width": 0, "height": 0, "jpeg": ""}),
        json!({"type": "thumbnail", "width": -1, "height": "x", "jpeg": 5}),
    ];
    for msg in bad {
        let app2 = app.clone();
        let get = tokio::spawn(async move {
            send(&app2, admin_req("GET", "/api/admin/vms/demo/thumbnail")).await
        });
        // Each GET asks once (the last answer was refused, so nothing is cached).
        loop {
            match agent.recv().await {
                ControllerToAgent::ThumbnailRequest { .. } => break,
                ControllerToAgent::Error { .. } => continue,
                other => panic!("{other:?}"),
            }
        }
        agent.send(msg);
        let resp = get.await.unwrap();
        expect_error(resp, 404, "not_found").await;
        tokio::time::sleep(THUMBNAIL_RETRY_PAUSE).await;
    }
    // The agent's session and link are as they were.
    let req = bearer(
        anon_get(&format!("/api/webrtc/session/{session}/answer")),
        &token,
    );
    assert_eq!(send(&app, req).await.status(), 202);
    assert!(
        !agent.task.is_finished(),
        "the agent's connection is still served"
    );
    // And a good one is taken after all that.
    let app2 = app.clone();
    let get = tokio::spawn(async move {
        send(&app2, admin_req("GET", "/api/admin/vms/demo/thumbnail")).await
    });
    loop {
        if let ControllerToAgent::ThumbnailRequest { .. } = agent.recv().await {
            break;
        }
    }
    agent
        .send(json!({"type": "thumbnail", "width": 320, "height": 180, "jpeg": b64(&tiny_jpeg())}));
    assert_eq!(get.await.unwrap().status(), 200);
}

/// The thumbnail route asks again only after `THUMBNAIL_RETRY` (3 s); the route's own wait is
/// as long, so the next GET asks anew.
const THUMBNAIL_RETRY_PAUSE: Duration = Duration::from_millis(10);
