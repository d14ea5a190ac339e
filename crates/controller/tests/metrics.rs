//! `GET /metrics` through `app().oneshot(...)`: the Prometheus text format (content type, HELP
//! and TYPE lines, one sample per line, parseable values), the controller's own counters as
//! sessions come and go, and the per-session stats a (fake) agent reports with `sessionStats`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::Request;
use common::*;
use serde_json::json;
use vdesk_controller::app;
use vdesk_protocol::{ControllerToAgent, SessionId};

/// `name{labels}` -> value, checking every line on the way: comments are `# HELP name text` or
/// `# TYPE name gauge|counter` (TYPE right after HELP of the same name), samples are
/// `name{labels} value` with a name that has a TYPE above it.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    let mut last_help: Option<String> = None;
    assert!(text.ends_with('\n'), "the body ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            last_help = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "gauge" | "counter"), "{line}");
            assert_eq!(
                last_help.as_deref(),
                Some(name),
                "TYPE follows HELP: {line}"
            );
            assert!(typed.insert(name.to_owned()), "one TYPE per family: {line}");
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            assert!(typed.contains(name), "sample before its TYPE: {line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
            }
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            assert!(
                samples.insert(series.to_owned(), v).is_none(),
                "duplicate series: {line}"
            );
        }
    }
    samples
}

async fn scrape(app: &axum::Router) -> BTreeMap<String, f64> {
    let resp = send(app, bearer(anon_get("/metrics"), ADMIN)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&body_text(resp).await)
}

#[tokio::test]
async fn metrics_count_agents_sessions_and_relay_and_show_session_stats() {
    let state = state();
    let app = app(state.clone());
    let m = scrape(&app).await;
    assert_eq!(m["vdesk_agents_online"], 0.0);
    assert_eq!(m["vdesk_sessions_open"], 0.0);
    assert_eq!(m["vdesk_sessions_created_total"], 0.0);

    let mut agent = FakeAgent::registered(&state, "demo").await;
    let resp = send(
        &app,
        post_json(
            "/api/webrtc/session",
            &json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}),
        ),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let id = match agent.recv().await {
        ControllerToAgent::Offer { session_id, .. } => session_id,
        other => panic!("{other:?}"),
    };
    let short = &id.as_str()[..8];
    agent.send(json!({"type": "sessionStats", "sessionId": id, "stats": {
        "codec": "H264\"}\n", "bitrateKbps": 1800.5, "targetKbps": 2000, "fps": 29.5,
        "rttMs": 104.0, "fractionLost": 0.03, "packetsLost": 7, "jitterMs": 4.0,
        "packetsSent": 900, "bytesSent": 1000000, "nackCount": 12, "pliCount": 2,
        "firCount": 0, "keyframesForced": 2}}));
    // The fake agent's frames are handled asynchronously: wait for them to land.
    let series =
        format!("vdesk_session_target_kbps{{vm=\"demo\",session=\"{short}\",codec=\"H264\"}}");
    let mut m = scrape(&app).await;
    for _ in 0..100 {
        if m.contains_key(&series) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m = scrape(&app).await;
    }
    assert_eq!(m.get(&series), Some(&2000.0), "{m:#?}");
    let labels = format!("{{vm=\"demo\",session=\"{short}\",codec=\"H264\"}}");
    assert_eq!(m[&format!("vdesk_session_bitrate_kbps{labels}")], 1800.5);
    assert_eq!(m[&format!("vdesk_session_rtt_seconds{labels}")], 0.104);
    assert_eq!(m[&format!("vdesk_session_fraction_lost{labels}")], 0.03);
    assert_eq!(
        m[&format!("vdesk_session_nacks_received_total{labels}")],
        12.0
    );
    assert_eq!(m["vdesk_agents_online"], 1.0);
    assert_eq!(m["vdesk_sessions_open"], 1.0);
    assert_eq!(m["vdesk_sessions_created_total"], 1.0);
    assert!(m["vdesk_relay_messages_total{direction=\"from_agent\"}"] >= 2.0);
    assert!(m["vdesk_relay_messages_total{direction=\"to_agent\"}"] >= 2.0);
    assert!(
        !m.keys().any(|k| k.contains(id.as_str())),
        "the full session id (a capability) never appears"
    );

    let req = Request::delete(format!("/api/webrtc/session/{id}"))
        .body(Body::empty())
        .unwrap();
    let req = bearer(req, &viewer_token("demo"));
    assert_eq!(send(&app, req).await.status(), 204);
    let m = scrape(&app).await;
    assert_eq!(m["vdesk_sessions_open"], 0.0);
    assert_eq!(m["vdesk_sessions_ended_total{reason=\"viewer_left\"}"], 1.0);
    assert!(
        !m.keys().any(|k| k.starts_with("vdesk_session_")),
        "an ended session's stats are gone: {m:#?}"
    );
    let _ = SessionId::parse(id.as_str()).unwrap();
}

#[tokio::test]
async fn stats_for_an_unknown_session_are_refused_not_shown() {
    let state = state();
    let app = app(state.clone());
    let mut agent = FakeAgent::registered(&state, "demo").await;
    let id = "0123456789abcdef0123456789abcdef";
    agent.send(json!({"type": "sessionStats", "sessionId": id, "stats": {
        "codec": "VP8", "bitrateKbps": 1.0, "targetKbps": 1, "fps": 1.0, "packetsSent": 0,
        "bytesSent": 0, "nackCount": 0, "pliCount": 0, "firCount": 0, "keyframesForced": 0}}));
    match agent.recv().await {
        ControllerToAgent::Error { code, .. } => {
            assert_eq!(code, vdesk_protocol::ErrorCode::SessionNotFound)
        }
        other => panic!("{other:?}"),
    }
    let m = scrape(&app).await;
    assert!(!m.keys().any(|k| k.starts_with("vdesk_session_")));
}

#[tokio::test]
async fn metrics_need_the_admin_token() {
    let app = app(state());
    let resp = send(&app, anon_get("/metrics")).await;
    assert_eq!(resp.status(), 401);
    let resp = send(&app, bearer(anon_get("/metrics"), "not-the-admin-token")).await;
    assert_eq!(resp.status(), 403);
    let resp = send(&app, get("/metrics")).await; // a viewer token is not enough
    assert_eq!(resp.status(), 403);
    // Without --admin-token the route is off, as docs/operations.md says.
    let mut config = config();
    config.admin_token = None;
    let off = vdesk_controller::app(vdesk_controller::AppState::new(config));
    let resp = send(&off, bearer(anon_get("/metrics"), ADMIN)).await;
    assert_eq!(resp.status(), 404);
}
