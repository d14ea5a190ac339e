//! `GET /api/admin/sessions` (admin token): every live session with its VM, the viewer's name and
//! permission from its link, and the agent's last bitrate, RTT, who holds control and the
//! transport (only ICE candidate types kept); never a token or owner tag.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use vdesk_controller::app;
use vdesk_protocol::{ControllerToAgent, Permission};

async fn sessions(app: &axum::Router) -> Value {
    let resp = send(app, bearer(anon_get("/api/admin/sessions"), ADMIN)).await;
    assert_eq!(resp.status(), 200);
    body_json(resp).await
}

#[tokio::test]
async fn admin_sessions_list_the_live_sessions_with_grant_and_stats() {
    let state = state();
    let app = app(state.clone());
    assert_eq!(sessions(&app).await, json!({"sessions": []}));

    let mut agent = FakeAgent::registered(&state, "demo").await;
    let token = mint("demo", Permission::Control);
    let req = bearer(
        anon_post_json(
            "/api/webrtc/session",
            &json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}),
        ),
        &token,
    );
    assert_eq!(send(&app, req).await.status(), 201);
    let id = match agent.recv().await {
        ControllerToAgent::Offer { session_id, .. } => session_id,
        other => panic!("{other:?}"),
    };
    agent.send(json!({"type": "sessionStats", "sessionId": id, "stats": {
        "codec": "H264", "bitrateKbps": 1800.5, "targetKbps": 2000, "fps": 29.5,
        "rttMs": 104.0, "packetsSent": 900, "bytesSent": 1000000, "nackCount": 0,
        "pliCount": 0, "firCount": 0, "keyframesForced": 0,
        "holdsControl": true, "transport": "relay"}}));
    let mut list = sessions(&app).await;
    for _ in 0..100 {
        if list["sessions"][0]["bitrateKbps"].is_number() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        list = sessions(&app).await;
    }
    let s = &list["sessions"][0];
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(s["sessionId"], id.as_str());
    assert_eq!(s["vmId"], "demo");
    assert_eq!(s["permission"], "control");
    assert_eq!(s["connected"], false, "no peerState connected yet");
    assert_eq!(s["agentAttached"], true);
    assert_eq!(s["codec"], "H264");
    assert_eq!(s["bitrateKbps"], 1800.5);
    assert_eq!(s["rttMs"], 104.0);
    assert_eq!(s["holdsControl"], true);
    assert_eq!(s["transport"], "relay");
    let text = list.to_string();
    assert!(!text.contains(&token) && !text.contains("owner"), "{text}");

    // An older agent says neither; a transport that is not an ICE candidate type is dropped.
    agent.send(json!({"type": "sessionStats", "sessionId": id, "stats": {
        "codec": "H264", "bitrateKbps": 900.0, "targetKbps": 2000, "fps": 29.5,
        "packetsSent": 900, "bytesSent": 1000000, "nackCount": 0,
        "pliCount": 0, "firCount": 0, "keyframesForced": 0}}));
    list = sessions(&app).await;
    for _ in 0..100 {
        if list["sessions"][0]["bitrateKbps"] == 900.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        list = sessions(&app).await;
    }
    assert_eq!(list["sessions"][0]["bitrateKbps"], 900.0, "{list}");
    assert!(list["sessions"][0]["holdsControl"].is_null(), "{list}");
    assert!(list["sessions"][0]["transport"].is_null(), "{list}");
    agent.send(json!({"type": "sessionStats", "sessionId": id, "stats": {
        "codec": "H264", "bitrateKbps": 901.0, "targetKbps": 2000, "fps": 29.5,
        "packetsSent": 900, "bytesSent": 1000000, "nackCount": 0,
        "pliCount": 0, "firCount": 0, "keyframesForced": 0,
        "holdsControl": false, "transport": "<img src=x>"}}));
    for _ in 0..100 {
        if list["sessions"][0]["bitrateKbps"] == 901.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        list = sessions(&app).await;
    }
    assert_eq!(list["sessions"][0]["holdsControl"], false, "{list}");
    assert!(list["sessions"][0]["transport"].is_null(), "{list}");

    // A viewer token is not enough.
    let resp = send(&app, bearer(anon_get("/api/admin/sessions"), &token)).await;
    assert!(matches!(resp.status().as_u16(), 401 | 403));
}
