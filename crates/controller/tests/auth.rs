//! Authentication and authorization through `app().oneshot(...)`: viewer tokens on every viewer
//! route (401 without, 403 expired / forged / other VM / other link), the permission reaching the
//! agent, per-VM agent secrets, the admin API, the WebSocket Origin check, session caps, rate
//! limits, and TURN REST credentials for both sides.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::Method;
use axum::http::Request;
use common::*;
use serde_json::{json, Value};
use vdesk_controller::agent_ws::AgentTiming;
use vdesk_controller::routes::{Access, Route, ROUTES};
use vdesk_controller::turn::{credential, TurnRest};
use vdesk_controller::viewer_token::{self, unix_now};
use vdesk_controller::{app, AppState, ControllerSecret};
use vdesk_protocol::{ControllerToAgent, Permission, SessionId, VmId};

fn offer_body(vm: &str) -> Value {
    json!({"vmId": vm, "offer": {"type": "offer", "sdp": OFFER}})
}

/// Creates a session on `demo` with `token`; returns its id and the permission the agent got.
async fn create_with(
    app: &axum::Router,
    agent: &mut FakeAgent,
    token: &str,
) -> (SessionId, Permission) {
    let req = bearer(
        anon_post_json("/api/webrtc/session", &offer_body("demo")),
        token,
    );
    let resp = send(app, req).await;
    assert_eq!(resp.status(), 201);
    let v = body_json(resp).await;
    let id = SessionId::parse(v["sessionId"].as_str().unwrap()).unwrap();
    match agent.recv().await {
        ControllerToAgent::Offer {
            session_id, grant, ..
        } => {
            assert_eq!(session_id, id);
            (id, grant.permission)
        }
        other => panic!("{other:?}"),
    }
}

fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri).body(Body::empty()).unwrap()
}

/// A request for route `r` of the router's table without credentials: `{id}` is `id`, `{side}`
/// is `side`, `{vmId}` is demo, and a POST carries a body fit for the route.
fn request(r: &Route, id: &SessionId, side: &str) -> Request<Body> {
    let uri = r
        .path
        .replace("{id}", id.as_str())
        .replace("{side}", side)
        .replace("{vmId}", "demo");
    let body = if r.method != Method::POST {
        Body::empty()
    } else if r.path.ends_with("/candidate") {
        Body::from(json!({"candidate": cand(1), "from": "browser"}).to_string())
    } else if r.path.ends_with("/offer") {
        Body::from(json!({"type": "offer", "sdp": OFFER}).to_string())
    } else if r.path == "/api/webrtc/session" {
        Body::from(offer_body("demo").to_string())
    } else {
        Body::from("{}")
    };
    Request::builder()
        .method(r.method.clone())
        .uri(uri)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// Every route of session `id` in the router's table (so a new one is included), as requests
/// without credentials; `{side}` is the viewer's (`vm`).
fn session_routes(id: &SessionId) -> Vec<Request<Body>> {
    ROUTES
        .iter()
        .filter(|r| r.path.contains("{id}"))
        .map(|r| request(r, id, "vm"))
        .collect()
}

/// Anything still queued for the agent but pings (the refused requests must not reach it).
fn agent_got(agent: &mut FakeAgent) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(m) = agent.from_server.try_recv() {
        if let axum::extract::ws::Message::Text(t) = m {
            got.push(t.to_string());
        }
    }
    got
}

#[tokio::test]
async fn every_route_of_the_router_refuses_requests_without_its_credential() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let (id, _) = create_with(&app, &mut agent, &viewer_token("demo")).await;
    let other_link = mint("demo", Permission::Control);
    let mut session_routes = 0;
    for r in ROUTES {
        let what = format!("{} {}", r.method, r.path);
        if r.access == Access::Public {
            assert!(
                r.method == Method::GET
                    // The API contract is public too: it is generated from the source
                    // (docs/security.md).
                    && (["/", "/vm/{vmId}", "/admin", "/healthz", "/api/openapi.json"].contains(&r.path)
                        || r.path.starts_with("/assets/")),
                "{what} is declared public, but only the pages, the viewer's files and the API contract are"
            );
            continue;
        }
        let sides: &[&str] = if r.path.contains("{side}") {
            &["vm", "browser"]
        } else {
            &["-"]
        };
        for side in sides {
            let resp = send(&app, request(r, &id, side)).await;
            if r.access == Access::AgentHello {
                // No upgrade, no socket: the secret is checked in `hello` (tests/agent_ws.rs).
                assert!(
                    ["/api/agent/ws", "/api/agent/media"].contains(&r.path),
                    "{what}"
                );
                assert_eq!(resp.status(), 400, "{what}");
                continue;
            }
            let msg = expect_error(resp, 401, "unauthorized").await;
            assert!(
                msg.contains("token") || msg.contains("secret"),
                "{what}: {msg}"
            );
            if !r.path.contains("{id}") {
                continue;
            }
            assert!(
                matches!(
                    r.access,
                    Access::ViewerSession | Access::ViewerOrAgentSession
                ),
                "{what} names a session: it must check the session's owner"
            );
            session_routes += 1;
            let resp = send(&app, bearer(request(r, &id, side), &other_link)).await;
            let msg = expect_error(resp, 403, "forbidden").await;
            assert!(msg.contains("another viewer link"), "{what}: {msg}");
        }
    }
    assert!(session_routes >= 7, "{session_routes}");
    assert_eq!(agent_got(&mut agent), Vec::<String>::new());
    // The session was not disturbed: its owner still reads it.
    let resp = send(&app, get(&format!("/api/webrtc/session/{id}/answer"))).await;
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn a_new_offer_needs_the_sessions_token_and_is_rate_limited() {
    let mut config = config();
    config.session_rate_limit = 3;
    let state = AppState::new(config);
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let link = mint("demo", Permission::Control);
    let (id, _) = create_with(&app, &mut agent, &link).await;
    agent.send(json!({"type": "answer", "sessionId": id, "sdp": ANSWER}));
    let answer = format!("/api/webrtc/session/{id}/answer");
    while send(&app, bearer(anon_get(&answer), &link)).await.status() != 200 {
        tokio::task::yield_now().await;
    }
    let uri = format!("/api/webrtc/session/{id}/offer");
    let offer = json!({"type": "offer", "sdp": OFFER});
    let resp = send(&app, anon_post_json(&uri, &offer)).await;
    expect_error(resp, 401, "unauthorized").await;
    let resp = send(
        &app,
        bearer(anon_post_json(&uri, &offer), &viewer_token("demo")),
    )
    .await;
    expect_error(resp, 403, "forbidden").await;
    let resp = send(
        &app,
        bearer(
            anon_post_json(&uri, &offer),
            &mint("other", Permission::Control),
        ),
    )
    .await;
    expect_error(resp, 403, "forbidden").await;
    // Neither reached the agent; the session is alive.
    assert_eq!(agent_got(&mut agent), Vec::<String>::new());
    // The owner may, at the session rate (its own bucket: creating the session did not count).
    for _ in 0..3 {
        let resp = send(&app, bearer(anon_post_json(&uri, &offer), &link)).await;
        assert_eq!(resp.status(), 202);
        assert!(matches!(
            agent.recv().await,
            ControllerToAgent::Reoffer { .. }
        ));
    }
    let resp = send(&app, bearer(anon_post_json(&uri, &offer), &link)).await;
    expect_error(resp, 429, "too_many_requests").await;
}

#[tokio::test]
async fn no_token_is_401_on_every_viewer_route() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let (id, _) = create_with(&app, &mut agent, &viewer_token("demo")).await;
    let mut reqs = vec![
        anon_get("/api/vms/demo"),
        anon_get("/api/webrtc/config"),
        anon_post_json("/api/webrtc/session", &offer_body("demo")),
    ];
    reqs.extend(session_routes(&id));
    for req in reqs {
        let what = format!("{} {}", req.method(), req.uri());
        let msg = expect_error(send(&app, req).await, 401, "unauthorized").await;
        assert!(msg.contains("token"), "{what}: {msg}");
    }
    // The session was not disturbed: its owner still reads it.
    let resp = send(&app, get(&format!("/api/webrtc/session/{id}/answer"))).await;
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn expired_forged_or_other_vm_tokens_are_403() {
    let state = state();
    let app = app(state.clone());
    let _agent = FakeAgent::registered(&state, "demo").await;
    let secret = ControllerSecret::new(SECRET);
    let demo = VmId::new("demo").unwrap();
    let expired = viewer_token::mint(&secret, &demo, Permission::Control, unix_now() - 1);
    let forged = viewer_token::mint(
        &ControllerSecret::new("some-other-controller-secret"),
        &demo,
        Permission::Control,
        unix_now() + 60,
    );
    let other_vm = mint("other", Permission::Control);
    for (token, expect) in [
        (expired.as_str(), "expired"),
        (forged.as_str(), "signature"),
        ("garbage", "malformed"),
        (other_vm.as_str(), "another VM"),
    ] {
        for req in [
            anon_get("/api/vms/demo"),
            anon_post_json("/api/webrtc/session", &offer_body("demo")),
        ] {
            let what = format!("{} {}", req.method(), req.uri());
            let msg = expect_error(send(&app, bearer(req, token)).await, 403, "forbidden").await;
            assert!(msg.contains(expect), "{what}: {msg}");
            assert!(!msg.contains(token), "the message never echoes the token");
        }
    }
    // The same in the query string (as the viewer's EventSource sends it).
    let resp = send(&app, anon_get(&format!("/api/vms/demo?token={expired}"))).await;
    expect_error(resp, 403, "forbidden").await;
    let resp = send(
        &app,
        anon_get(&format!("/api/vms/demo?token={}", viewer_token("demo"))),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_session_is_only_for_the_token_that_created_it() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let (id, _) = create_with(&app, &mut agent, &viewer_token("demo")).await;
    let same_vm_other_link = mint("demo", Permission::Control);
    let other_vm = mint("other", Permission::Control);
    for (token, expect) in [
        (same_vm_other_link.as_str(), "another viewer link"),
        (other_vm.as_str(), "another VM"),
    ] {
        for req in session_routes(&id) {
            let what = format!("{} {}", req.method(), req.uri());
            let msg = expect_error(send(&app, bearer(req, token)).await, 403, "forbidden").await;
            assert!(msg.contains(expect), "{what}: {msg}");
        }
    }
    // The agent got no candidate and no end from the refused requests; the session is intact.
    let base = format!("/api/webrtc/session/{id}");
    let resp = send(
        &app,
        post_json(
            &format!("{base}/candidate"),
            &json!({"candidate": cand(7), "from": "browser"}),
        ),
    )
    .await;
    assert_eq!(resp.status(), 204);
    match agent.recv().await {
        ControllerToAgent::Candidate { candidate, .. } => {
            assert!(candidate.candidate.starts_with("candidate:7 "))
        }
        other => panic!("expected the owner's candidate first, got {other:?}"),
    }
    // The token goes in the query too (EventSource).
    let resp = send(
        &app,
        anon_get(&format!("{base}/events?token={}", viewer_token("demo"))),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_agent_gets_the_permission_of_the_token() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let (_, p) = create_with(&app, &mut agent, &mint("demo", Permission::View)).await;
    assert_eq!(p, Permission::View);
    let (_, p) = create_with(&app, &mut agent, &mint("demo", Permission::Control)).await;
    assert_eq!(p, Permission::Control);
}

#[tokio::test]
async fn an_agent_secret_registers_its_own_vm_only() {
    let mut config = config();
    config.agent_token = None; // per-VM secrets only
    let state = AppState::new(config);
    let secret = ControllerSecret::new(SECRET);
    let a_secret = secret.agent_secret(&VmId::new("a").unwrap());

    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.hello("b", &a_secret).await;
    match agent.recv().await {
        ControllerToAgent::Error { code, .. } => {
            assert_eq!(code, vdesk_protocol::ErrorCode::Unauthorized)
        }
        other => panic!("{other:?}"),
    }
    // The shared token is off here.
    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.hello("a", TOKEN).await;
    assert!(matches!(
        agent.recv().await,
        ControllerToAgent::Error { .. }
    ));

    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.hello("a", &a_secret).await;
    assert!(matches!(
        agent.recv().await,
        ControllerToAgent::Welcome { .. }
    ));
    assert_eq!(
        state.relay(|r, _| r.vm(&VmId::new("b").unwrap())),
        None,
        "b was never registered"
    );
}

#[tokio::test]
async fn agent_http_routes_need_the_secret_of_the_sessions_vm() {
    let mut config = config();
    config.agent_token = None;
    let state = AppState::new(config);
    let app = app(state.clone());
    let secret = ControllerSecret::new(SECRET);
    let demo_secret = secret.agent_secret(&VmId::new("demo").unwrap());
    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.hello("demo", &demo_secret).await;
    assert!(matches!(
        agent.recv().await,
        ControllerToAgent::Welcome { .. }
    ));
    let (id, _) = create_with(&app, &mut agent, &viewer_token("demo")).await;
    let base = format!("/api/webrtc/session/{id}");
    let body = json!({"candidate": cand(3), "from": "vm"});
    let other_secret = secret.agent_secret(&VmId::new("other").unwrap());
    for token in [
        None,
        Some(other_secret.as_str()),
        Some(viewer_token("demo").as_str()),
    ] {
        let mut req = anon_post_json(&format!("{base}/candidate"), &body);
        if let Some(t) = token {
            req = bearer(req, t);
        }
        expect_error(send(&app, req).await, 401, "unauthorized").await;
    }
    let req = bearer(
        anon_post_json(&format!("{base}/candidate"), &body),
        &demo_secret,
    );
    assert_eq!(send(&app, req).await.status(), 204);
    let req = bearer(
        anon_get(&format!("{base}/candidates/browser")),
        &demo_secret,
    );
    assert_eq!(send(&app, req).await.status(), 200);
}

#[tokio::test]
async fn admin_api_mints_links_that_work() {
    let state = state();
    let app = app(state.clone());
    let body = json!({"vmId": "demo", "permission": "control", "ttl": "15m"});
    let req = anon_post_json("/api/admin/links", &body);
    expect_error(send(&app, req).await, 401, "unauthorized").await;
    let req = bearer(
        anon_post_json("/api/admin/links", &body),
        "wrong-admin-token-000",
    );
    expect_error(send(&app, req).await, 403, "forbidden").await;
    // A viewer token is not an admin token.
    let req = bearer(
        anon_post_json("/api/admin/links", &body),
        &viewer_token("demo"),
    );
    expect_error(send(&app, req).await, 403, "forbidden").await;
    let req = bearer(anon_get("/api/vms"), &viewer_token("demo"));
    expect_error(send(&app, req).await, 403, "forbidden").await;

    let mut req = bearer(anon_post_json("/api/admin/links", &body), ADMIN);
    req.headers_mut()
        .insert("host", "vdesk.test:8443".parse().unwrap());
    let resp = send(&app, req).await;
    assert_eq!(resp.status(), 201);
    let v = body_json(resp).await;
    let token = v["token"].as_str().unwrap();
    assert_eq!(
        v["url"],
        format!("http://vdesk.test:8443/vm/demo?token={token}")
    );
    assert_eq!(v["permission"], "control");
    let exp = v["expiresAt"].as_u64().unwrap();
    assert!(
        (unix_now() + 890..=unix_now() + 900).contains(&exp),
        "{exp}"
    );
    let resp = send(&app, bearer(anon_get("/api/vms/demo"), token)).await;
    assert_eq!(resp.status(), 200);

    for bad in [
        json!({"vmId": "demo", "ttl": "31d"}),
        json!({"vmId": "demo", "ttl": 0}),
        json!({"vmId": "a/b"}),
        json!({"vmId": "demo", "permission": "root"}),
        json!({"vmId": "demo", "extra": 1}),
    ] {
        let req = bearer(anon_post_json("/api/admin/links", &bad), ADMIN);
        expect_error(send(&app, req).await, 400, "bad_request").await;
    }

    // Without --admin-token the admin API is off.
    let mut config = config();
    config.admin_token = None;
    let app = vdesk_controller::app(AppState::new(config));
    let req = bearer(anon_post_json("/api/admin/links", &body), ADMIN);
    let msg = expect_error(send(&app, req).await, 404, "not_found").await;
    assert!(msg.contains("--admin-token"), "{msg}");
}

#[tokio::test]
async fn websocket_upgrades_from_another_origin_are_refused() {
    let app = app(state());
    let ws = |origin: Option<&str>| {
        let mut b = Request::get("/api/agent/ws")
            .header("host", "127.0.0.1:8080")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(Body::empty()).unwrap()
    };
    let msg = expect_error(
        send(&app, ws(Some("https://evil.example"))).await,
        403,
        "forbidden",
    )
    .await;
    assert!(msg.contains("Origin"), "{msg}");
    // Same origin, or none (agents): not refused for the origin. (oneshot cannot upgrade, so
    // axum answers that the connection is not upgradable, which is not a 403.)
    for origin in [Some("http://127.0.0.1:8080"), None] {
        assert_ne!(send(&app, ws(origin)).await.status(), 403, "{origin:?}");
    }
}

#[tokio::test]
async fn session_caps_refuse_with_429_and_disturb_nothing() {
    let mut config = config();
    config.max_sessions_per_vm = 3;
    config.max_sessions_per_token = 2;
    let state = AppState::new(config);
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let link = mint("demo", Permission::View);
    let (first, _) = create_with(&app, &mut agent, &link).await;
    create_with(&app, &mut agent, &link).await;
    let req = bearer(
        anon_post_json("/api/webrtc/session", &offer_body("demo")),
        &link,
    );
    let msg = expect_error(send(&app, req).await, 429, "too_many_requests").await;
    assert!(msg.contains("--max-sessions-per-token"), "{msg}");
    create_with(&app, &mut agent, &mint("demo", Permission::View)).await;
    let req = bearer(
        anon_post_json("/api/webrtc/session", &offer_body("demo")),
        &mint("demo", Permission::View),
    );
    let msg = expect_error(send(&app, req).await, 429, "too_many_requests").await;
    assert!(msg.contains("--max-sessions-per-vm"), "{msg}");
    assert_eq!(state.relay(|r, _| r.session_count()), 3);
    // Ending one makes room again.
    let resp = send(
        &app,
        bearer(delete(&format!("/api/webrtc/session/{first}")), &link),
    )
    .await;
    assert_eq!(resp.status(), 204);
    assert!(
        matches!(agent.recv().await, ControllerToAgent::EndSession { session_id, .. } if session_id == first)
    );
    create_with(&app, &mut agent, &link).await;
}

#[tokio::test]
async fn rate_limits_give_429_with_retry_after() {
    let mut config = config();
    config.session_rate_limit = 2;
    config.candidate_rate_limit = 3;
    let state = AppState::new(config);
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let link = mint("demo", Permission::View);
    let (id, _) = create_with(&app, &mut agent, &link).await;
    create_with(&app, &mut agent, &link).await;
    let req = bearer(
        anon_post_json("/api/webrtc/session", &offer_body("demo")),
        &link,
    );
    let resp = send(&app, req).await;
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    expect_error(resp, 429, "too_many_requests").await;
    // Another link is not limited by this one.
    create_with(&app, &mut agent, &mint("demo", Permission::View)).await;

    let post = |n| {
        bearer(
            anon_post_json(
                &format!("/api/webrtc/session/{id}/candidate"),
                &json!({"candidate": cand(n), "from": "browser"}),
            ),
            &link,
        )
    };
    for n in 1..=3 {
        assert_eq!(send(&app, post(n)).await.status(), 204);
    }
    expect_error(send(&app, post(4)).await, 429, "too_many_requests").await;
}

#[tokio::test]
async fn turn_rest_credentials_for_viewer_and_agent() {
    let mut config = config();
    config.turn = Some(TurnRest::new(
        vec!["turn:192.0.2.9:3478".into()],
        "turn-shared-secret",
        std::time::Duration::from_secs(600),
    ));
    let state = AppState::new(config);
    let app = app(state.clone());
    let check = |server: &Value, label: &str| {
        let user = server["username"].as_str().unwrap();
        let (exp, rest) = user.split_once(':').unwrap();
        assert_eq!(rest, label);
        let exp: u64 = exp.parse().unwrap();
        assert!(
            (unix_now() + 590..=unix_now() + 600).contains(&exp),
            "{exp}"
        );
        assert_eq!(
            server["credential"].as_str().unwrap(),
            credential("turn-shared-secret", user)
        );
        assert_eq!(server["urls"], json!(["turn:192.0.2.9:3478"]));
    };
    let v = body_json(send(&app, get("/api/webrtc/config")).await).await;
    let servers = v["iceServers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{v}");
    check(&servers[1], "demo");

    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.hello("demo", TOKEN).await;
    match agent.recv().await {
        ControllerToAgent::Welcome { ice_servers } => {
            check(&serde_json::to_value(&ice_servers[1]).unwrap(), "demo")
        }
        other => panic!("{other:?}"),
    }
    let resp = send(&app, post_json("/api/webrtc/session", &offer_body("demo"))).await;
    let id = body_json(resp).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    match agent.recv().await {
        ControllerToAgent::Offer { ice_servers, .. } => {
            check(&serde_json::to_value(&ice_servers[1]).unwrap(), &id)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rate_limits_count_per_client_ip_too() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    let mut config = config();
    config.session_rate_limit = 2;
    config.trust_forwarded_for = true;
    let state = AppState::new(config);
    let app = app(state.clone());
    let _agent = FakeAgent::registered(&state, "demo").await;
    // Each request with a new link, from `peer` (and maybe through a proxy saying `forwarded`).
    let create = |peer: &str, forwarded: Option<&str>| {
        let mut req = bearer(
            anon_post_json("/api/webrtc/session", &offer_body("demo")),
            &mint("demo", Permission::View),
        );
        let addr: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        if let Some(f) = forwarded {
            req.headers_mut()
                .insert("x-forwarded-for", f.parse().unwrap());
        }
        req
    };
    for _ in 0..2 {
        assert_eq!(
            send(&app, create("192.0.2.1:1000", None)).await.status(),
            201
        );
    }
    let resp = send(&app, create("192.0.2.1:1001", None)).await;
    expect_error(resp, 429, "too_many_requests").await;
    assert_eq!(
        send(&app, create("192.0.2.2:1000", None)).await.status(),
        201
    );
    // Behind a trusted proxy the last X-Forwarded-For entry is the client.
    let proxy = "127.0.0.1:5000";
    for _ in 0..2 {
        let resp = send(&app, create(proxy, Some("203.0.113.9, 198.51.100.7"))).await;
        assert_eq!(resp.status(), 201);
    }
    let resp = send(&app, create(proxy, Some("203.0.113.9, 198.51.100.7"))).await;
    expect_error(resp, 429, "too_many_requests").await;
    let resp = send(&app, create(proxy, Some("198.51.100.8"))).await;
    assert_eq!(resp.status(), 201);
}

/// After a controller restart the sessions an agent still streams are adopted with the owner tag
/// they were offered with: the link that created one can use it again, another link of the same
/// VM (even a view link) cannot, and a session adopted without a tag belongs to nobody.
#[tokio::test]
async fn ownership_survives_a_controller_restart() {
    let before = state();
    let app = app(before.clone());
    let mut agent = FakeAgent::registered(&before, "demo").await;
    let link = mint("demo", Permission::Control);
    let resp = send(
        &app,
        bearer(
            anon_post_json("/api/webrtc/session", &offer_body("demo")),
            &link,
        ),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let created = body_json(resp).await;
    assert_eq!(created["grant"]["permission"], "control");
    assert!(
        created["grant"].get("owner").is_none(),
        "the viewer is not told the tag"
    );
    let (id, grant) = match agent.recv().await {
        ControllerToAgent::Offer {
            session_id, grant, ..
        } => (session_id, grant),
        other => panic!("{other:?}"),
    };
    let tag = grant.owner.clone().expect("the offer carries an owner tag");
    let claims = viewer_token::verify(&ControllerSecret::new(SECRET), &link, unix_now()).unwrap();
    let token_id = claims.id;
    assert_eq!(
        grant.expires_at,
        Some(claims.expires * 1000),
        "the link's expiry, ms"
    );
    assert_eq!(created["grant"]["expiresAt"], claims.expires * 1000);
    assert_eq!(tag.len(), 32);
    assert!(!tag.contains(&token_id) && !link.contains(&tag), "{tag}");
    drop(agent);

    // A new controller process (same secret, empty state); the agent comes back and resumes.
    let after = state();
    let app = vdesk_controller::app(after.clone());
    let agent = FakeAgent::registered(&after, "demo").await;
    let untagged = SessionId::random();
    let resume = |id: &SessionId, grant: vdesk_protocol::SessionGrant| {
        serde_json::to_value(vdesk_protocol::ResumedSession {
            session_id: id.clone(),
            offer: Some(OFFER.into()),
            answer: Some(ANSWER.into()),
            grant,
        })
        .unwrap()
    };
    agent.send(json!({"type": "resume", "sessions": [
        resume(&id, grant.clone()),
        resume(&untagged, vdesk_protocol::SessionGrant { permission: Permission::Control, ..Default::default() }),
    ]}));
    let until = std::time::Instant::now() + WAIT;
    while after.relay(|r, _| r.session_count()) < 2 {
        assert!(std::time::Instant::now() < until, "not adopted");
        tokio::task::yield_now().await;
    }
    let answer = |id: &SessionId, token: &str| {
        bearer(anon_get(&format!("/api/webrtc/session/{id}/answer")), token)
    };
    assert_eq!(send(&app, answer(&id, &link)).await.status(), 200);
    for other in [
        mint("demo", Permission::View),
        mint("demo", Permission::Control),
    ] {
        let msg = expect_error(send(&app, answer(&id, &other)).await, 403, "forbidden").await;
        assert!(msg.contains("another viewer link"), "{msg}");
        let req = bearer(delete(&format!("/api/webrtc/session/{id}")), &other);
        expect_error(send(&app, req).await, 403, "forbidden").await;
    }
    let msg = expect_error(send(&app, answer(&untagged, &link)).await, 403, "forbidden").await;
    assert!(msg.contains("no viewer link"), "{msg}");
    assert_eq!(
        after.relay(|r, _| r.session_count()),
        2,
        "nothing was ended"
    );
}

/// TURN credentials handed to a viewer (`/api/webrtc/config`) or made for its session (the
/// offer) end no later than its link, and never later than `--turn-ttl`; `/api/webrtc/config`
/// is rate limited per link and client like session creation.
#[tokio::test]
async fn turn_credentials_end_with_the_link_and_the_config_route_is_rate_limited() {
    let mut config = config();
    config.session_rate_limit = 3;
    config.turn = Some(TurnRest::new(
        vec!["turn:192.0.2.9:3478".into()],
        "turn-shared-secret",
        std::time::Duration::from_secs(86_400),
    ));
    let state = AppState::new(config);
    let app = app(state.clone());
    let mut agent = FakeAgent::connect(&state, AgentTiming::default());
    agent.hello("demo", TOKEN).await;
    let expiry = |server: &Value| -> u64 {
        let user = server["username"].as_str().unwrap();
        user.split_once(':').unwrap().0.parse().unwrap()
    };
    match agent.recv().await {
        ControllerToAgent::Welcome { ice_servers } => {
            let e = expiry(&serde_json::to_value(&ice_servers[1]).unwrap());
            assert!(e >= unix_now() + 86_000, "the agent's own: the whole ttl");
        }
        other => panic!("{other:?}"),
    }
    let link_end = unix_now() + 120;
    let link = viewer_token::mint(
        &ControllerSecret::new(SECRET),
        &VmId::new("demo").unwrap(),
        Permission::View,
        link_end,
    );
    let v = body_json(send(&app, bearer(anon_get("/api/webrtc/config"), &link)).await).await;
    assert_eq!(expiry(&v["iceServers"][1]), link_end, "{v}");
    let req = bearer(
        anon_post_json("/api/webrtc/session", &offer_body("demo")),
        &link,
    );
    assert_eq!(send(&app, req).await.status(), 201);
    match agent.recv().await {
        ControllerToAgent::Offer { ice_servers, .. } => {
            let e = expiry(&serde_json::to_value(&ice_servers[1]).unwrap());
            assert_eq!(e, link_end);
        }
        other => panic!("{other:?}"),
    }
    // A long link gets the ttl, not more.
    let v = body_json(send(&app, get("/api/webrtc/config")).await).await;
    assert!(expiry(&v["iceServers"][1]) <= unix_now() + 86_400);
    // Three a minute per link (one of them above): the fourth is refused.
    for _ in 0..2 {
        let resp = send(&app, bearer(anon_get("/api/webrtc/config"), &link)).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = send(&app, bearer(anon_get("/api/webrtc/config"), &link)).await;
    expect_error(resp, 429, "too_many_requests").await;
}

/// A link's clipboard direction and display name (admin API or `mint-link`) reach the agent in
/// the offer's grant and the viewer in `SessionCreated.grant` (without the owner tag); bad names
/// are 400; admin links can be minted.
#[tokio::test]
async fn clipboard_and_name_of_a_link_reach_the_agent_and_the_viewer() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let mint_req = |body: Value| bearer(anon_post_json("/api/admin/links", &body), ADMIN);
    let resp = send(
        &app,
        mint_req(
            json!({"vmId": "demo", "permission": "admin", "clipboard": "from-vm",
                        "name": "  Ada Lovelace "}),
        ),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let link = body_json(resp).await;
    assert_eq!(link["clipboard"], "from-vm");
    assert_eq!(link["name"], "Ada Lovelace");
    assert_eq!(link["permission"], "admin");
    let token = link["token"].as_str().unwrap();
    let resp = send(
        &app,
        bearer(
            anon_post_json("/api/webrtc/session", &offer_body("demo")),
            token,
        ),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let created = body_json(resp).await;
    let told = &created["grant"];
    assert_eq!(told["permission"], "admin");
    assert_eq!(told["clipboard"], "from-vm");
    assert_eq!(told["name"], "Ada Lovelace");
    assert!(told["expiresAt"].as_u64().unwrap() > unix_now() * 1000);
    assert!(told.get("owner").is_none(), "{told}");
    match agent.recv().await {
        ControllerToAgent::Offer { grant, .. } => {
            assert_eq!(grant.permission, Permission::Admin);
            assert_eq!(grant.clipboard, vdesk_protocol::ClipboardPolicy::FromVm);
            assert_eq!(grant.name.as_deref(), Some("Ada Lovelace"));
            assert!(grant.owner.is_some());
        }
        other => panic!("{other:?}"),
    }
    // Defaults: both directions, no name.
    let (_, _) = create_with(&app, &mut agent, &viewer_token("demo")).await;
    for bad in [
        json!({"vmId": "demo", "name": "x".repeat(41)}),
        json!({"vmId": "demo", "name": "a\nb"}),
        json!({"vmId": "demo", "clipboard": "sideways"}),
    ] {
        let msg = expect_error(send(&app, mint_req(bad.clone())).await, 400, "bad_request").await;
        assert!(
            msg.contains("name") || msg.contains("clipboard"),
            "{bad}: {msg}"
        );
    }
}
